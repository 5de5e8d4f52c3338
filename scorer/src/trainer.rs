//! Fits models on a dedicated thread so that a slow fit never delays a tick.
//!
//! Jobs go in and come back over bounded channels. A model lends its buffers with the
//! job and gets them back with the result, so the thread allocates nothing per fit.
//!
//! The training data travels in a staging buffer from a pool of `capacity` owned here,
//! not in a buffer of each model's: the pool costs the same with 1 model or 100. A model
//! due for a fit when the pool is empty (every buffer queued or fitting) stays pending
//! and tries again at its next tick, by when a fit of a few milliseconds has returned its
//! buffer.
//!
//! When fits cannot keep up (a slow device, many models, a fast replay), buffers go to
//! waiting models in turn, and a model that has never fitted goes before the refits:
//! otherwise the models ticked first take every returned buffer for their refits and the
//! last model of the last host never learns at all.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use super::model::FitWorkspace;
use super::model::TrainJob;

/// Which model a job belongs to: (host index, model index).
pub type ModelKey = (usize, usize);

pub struct Trainer {
    jobs: Option<SyncSender<(ModelKey, TrainJob)>>,
    results: Receiver<(ModelKey, TrainJob)>,
    handle: Option<JoinHandle<()>>,
    /// Staging buffers not lent to a fit.
    pool: Vec<Box<[f32]>>,
    /// Models due for a fit that found no buffer, in the order they get one: never-fitted
    /// models first, then by arrival. Each model is in it at most once.
    waiting: VecDeque<Waiting>,
    /// Refusals since the head of `waiting` last asked; more than a full round of the
    /// others means it no longer does (its fit was dropped), and it loses its place.
    head_skips: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    key: ModelKey,
    first_fit: bool,
}

impl Trainer {
    /// `capacity` staging buffers of `staging_len` values (the largest model's
    /// [`ModelParams::ring_len`](super::ModelParams::ring_len)); `max_rows` × `max_width`
    /// × `max_k` sizes the one workspace for the largest model.
    pub fn spawn(
        capacity: usize,
        staging_len: usize,
        max_rows: usize,
        max_width: usize,
        max_k: usize,
    ) -> std::io::Result<Self> {
        let (job_tx, job_rx) = sync_channel::<(ModelKey, TrainJob)>(capacity.max(1));
        let (res_tx, res_rx) = sync_channel(capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("lookout-trainer".into())
            .spawn(move || {
                let mut ws = FitWorkspace::new(max_rows, max_width, max_k);
                for (key, mut job) in job_rx {
                    let started = std::time::Instant::now();
                    job.run(&mut ws);
                    tracing::debug!(
                        host = key.0,
                        model = key.1,
                        rows = job.rows(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "model fitted"
                    );
                    if res_tx.send((key, job)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(job_tx),
            results: res_rx,
            handle: Some(handle),
            pool: (0..capacity.max(1))
                .map(|_| vec![0.0; staging_len].into_boxed_slice())
                .collect(),
            waiting: VecDeque::new(),
            head_skips: 0,
        })
    }

    /// A staging buffer for `key`'s due fit if it is its turn: buffers are free and no
    /// other model waits before it. Otherwise `key` joins the queue (once) and gets
    /// `None`; it asks again at its next tick.
    pub fn staging_for(&mut self, key: ModelKey, first_fit: bool) -> Option<Box<[f32]>> {
        if self.waiting.is_empty() {
            return self.pool.pop().or_else(|| {
                self.waiting.push_back(Waiting { key, first_fit });
                None
            });
        }
        if !self.waiting.iter().any(|w| w.key == key) {
            // Never-fitted models go after the other never-fitted ones, before refits.
            let at = if first_fit {
                self.waiting
                    .iter()
                    .position(|w| !w.first_fit)
                    .unwrap_or(self.waiting.len())
            } else {
                self.waiting.len()
            };
            self.waiting.insert(at, Waiting { key, first_fit });
        }
        if self.waiting.front().is_some_and(|w| w.key == key) {
            self.head_skips = 0;
        }
        if self.pool.is_empty() {
            return None;
        }
        if self.waiting.front().is_some_and(|w| w.key != key) {
            self.head_skips += 1;
            if self.head_skips <= self.waiting.len() {
                return None;
            }
            self.waiting.pop_front();
        }
        self.head_skips = 0;
        if self.waiting.front().is_some_and(|w| w.key == key) {
            self.waiting.pop_front();
            return self.pool.pop();
        }
        None
    }

    /// A free staging buffer, or `None` while all are lent out.
    pub fn staging(&mut self) -> Option<Box<[f32]>> {
        self.pool.pop()
    }

    /// Takes a staging buffer back (from [`Model::install`](super::Model::install) or a
    /// training set that was not taken).
    pub fn recycle(&mut self, buffer: Box<[f32]>) {
        self.pool.push(buffer);
    }

    /// Staging buffers not lent out, for tests.
    pub fn free_buffers(&self) -> usize {
        self.pool.len()
    }

    /// Queues a fit; a full queue hands the job back so the model keeps its buffers.
    // The job travels by value on purpose: boxing it would allocate on every fit.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, key: ModelKey, job: TrainJob) -> Result<(), TrainJob> {
        match self.jobs.as_ref() {
            Some(tx) => tx.try_send((key, job)).map_err(|e| match e {
                TrySendError::Full((_, j)) | TrySendError::Disconnected((_, j)) => j,
            }),
            None => Err(job),
        }
    }

    /// A finished fit, if any, without waiting.
    pub fn try_result(&self) -> Option<(ModelKey, TrainJob)> {
        self.results.try_recv().ok()
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.jobs.take();
        // Unblock a trainer waiting to hand back a result, then wait for it.
        while self.results.try_recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, ModelParams};

    #[test]
    fn fits_off_thread_and_returns_the_buffers() {
        let p = ModelParams {
            train_data_size: 100,
            train_every_n: 100,
            min_train_points: 100,
            n_init: 3,
            max_iter: 100,
            ..ModelParams::notebook()
        };
        let mut m = Model::new(p, 1);
        for i in 0..101 {
            m.ingest(&[(i as f64 * 0.5).sin()]).unwrap();
        }
        let mut trainer = Trainer::spawn(1, p.ring_len(1), 100, 4, 2).unwrap();
        let buf = trainer.staging().unwrap();
        assert!(trainer.staging().is_none(), "one buffer, lent out");
        let job = m.take_training_set(buf).unwrap();
        assert!(m.is_training());
        trainer.submit((0, 0), job).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (key, job) = loop {
            if let Some(r) = trainer.try_result() {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "no fit within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(key, (0, 0));
        trainer.recycle(m.install(job));
        assert_eq!(trainer.free_buffers(), 1);
        assert!(m.is_trained() && !m.is_training());
        assert!(m.score().is_some());
    }

    /// Two models due at once and one staging buffer: the second stays pending and fits
    /// once the first has handed the buffer back, without waiting for its next schedule.
    #[test]
    fn a_model_due_while_the_pool_is_empty_fits_at_a_later_tick() {
        let p = ModelParams {
            train_data_size: 100,
            train_every_n: 1000,
            min_train_points: 100,
            n_init: 1,
            ..ModelParams::notebook()
        };
        let mut models = [Model::new(p, 1), Model::new(p, 1)];
        let mut trainer = Trainer::spawn(1, p.ring_len(1), 100, 4, 2).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut fits_started = [None, None];
        for step in 0..10_000u64 {
            while let Some(((_, m), job)) = trainer.try_result() {
                let buffer = models[m].install(job);
                trainer.recycle(buffer);
            }
            for (i, m) in models.iter_mut().enumerate() {
                if m.ingest(&[(step as f64 * 0.5).sin()]).unwrap()
                    && let Some(buffer) = trainer.staging()
                {
                    match m.take_training_set(buffer) {
                        Ok(job) => {
                            fits_started[i].get_or_insert(step);
                            trainer.submit((0, i), job).unwrap();
                        }
                        Err(buffer) => trainer.recycle(buffer),
                    }
                }
            }
            if models.iter().all(Model::is_trained) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no fits within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let [Some(a), Some(b)] = fits_started else {
            panic!("both models fit: {fits_started:?}");
        };
        assert_eq!(a, 100, "the first fit starts when due");
        assert!(
            b > a && b < 1000,
            "the second waits for the buffer, not its next schedule: {b}"
        );
        assert_eq!(trainer.free_buffers(), 1);
    }

    /// One buffer, and models ticked in the same order every round: the buffer goes to
    /// the model that never fitted before the refits of the models ticked first, then to
    /// the others in turn; a model that stopped asking loses its place after one round.
    #[test]
    fn buffers_go_to_never_fitted_models_first_then_in_turn() {
        let mut t = Trainer::spawn(1, 4, 1, 1, 1).unwrap();
        let buf = t.staging_for((0, 0), false).expect("free and nobody waits");
        assert!(t.staging_for((0, 1), false).is_none());
        assert!(t.staging_for((1, 0), true).is_none());
        t.recycle(buf);
        assert!(
            t.staging_for((0, 1), false).is_none(),
            "(1, 0) never fitted: first"
        );
        let buf = t.staging_for((1, 0), true).expect("its turn");
        t.recycle(buf);
        let buf = t.staging_for((0, 1), false).expect("then the refit");
        t.recycle(buf);
        assert!(t.staging_for((0, 0), false).is_some(), "nobody waits");

        // (0, 2) queues, then never asks again: after a round of refusals it is dropped.
        let mut t = Trainer::spawn(1, 4, 1, 1, 1).unwrap();
        let buf = t.staging().unwrap();
        assert!(t.staging_for((0, 2), false).is_none());
        t.recycle(buf);
        assert!(t.staging_for((0, 0), false).is_none());
        assert!(t.staging_for((0, 0), false).is_none());
        assert!(
            t.staging_for((0, 0), false).is_some(),
            "(0, 2) gave up its place"
        );
    }
}
