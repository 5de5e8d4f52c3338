//! Fits models on a dedicated thread so that a slow fit never delays a tick.
//!
//! Jobs go in and come back over bounded channels. A model lends its buffers with the
//! job and gets them back with the result, so the thread allocates nothing per fit. When
//! the queue is full the job is handed back at once and the model simply tries again at
//! its next scheduled fit.

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
}

impl Trainer {
    /// `max_rows` × `max_width` × `max_k` sizes the one workspace for the largest model.
    pub fn spawn(
        capacity: usize,
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
        })
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
    use crate::scorer::{Model, ModelParams};

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
        let trainer = Trainer::spawn(2, 100, 4, 2).unwrap();
        let job = m.take_training_set().unwrap();
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
        m.install(job);
        assert!(m.is_trained() && !m.is_training());
        assert!(m.score().is_some());
    }
}
