//! Delivery: one bounded queue and one worker per target, so a slow or failing target
//! never delays the others. The worker retries what is worth retrying with exponential
//! backoff and jitter, bounds every attempt with a timeout, and writes what still failed
//! to the dead-letter file. When a notification is finished either way, the worker says
//! so to the notification log at once, so a restart does not send it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use lookout_shared::time::Backoff;

use crate::config::DeliverySettings;
use crate::dedup::NotificationLog;
use crate::fallback::{Fallback, Handover};
use crate::notify::{Notification, Notifier, SendError};
use crate::stats::{RateLimited, Stats};

/// Appends failed notifications as JSON lines; shared by all workers.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl DeadLetter {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    async fn write(&self, n: &Notification, attempts: u32, error: &str) {
        let line = json!({
            "ts": lookout_shared::time::now_ms(),
            "target": n.target,
            "topic": n.topic,
            "title": n.title,
            "body": n.body,
            "fields": n.fields,
            "attempts": attempts,
            "error": error,
        });
        let _guard = self.lock.lock().await;
        let res = async {
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            f.write_all(format!("{line}\n").as_bytes()).await?;
            f.flush().await
        }
        .await;
        if let Err(e) = res {
            tracing::error!(path = %self.path.display(), error = %e, target = %n.target, "cannot write the dead-letter file; notification lost");
        }
    }
}

/// A notification in a target's queue, with its sequence number in the notification log
/// (`None` when the log is in memory only).
#[derive(Debug)]
pub struct Queued {
    pub seq: Option<u64>,
    pub n: Notification,
}

/// The targets' workers, running.
pub struct Workers(Vec<JoinHandle<()>>);

impl Workers {
    /// Waits until every worker has finished its queue (drop the queues' senders first),
    /// for at most `grace`; false when the grace time ran out first.
    pub async fn drain(self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            for w in self.0 {
                let _ = w.await;
            }
        })
        .await
        .is_ok()
    }
}

/// Starts one worker per target (`names` and `notifiers` in index order), sharing one
/// dead-letter file, each with its target's fallback (`fallbacks`, in index order, their
/// outages kept in `state_dir`); returns their queues, in the same order.
pub fn start(
    names: &[String],
    notifiers: Vec<Box<dyn Notifier>>,
    settings: &DeliverySettings,
    stats: &Arc<Stats>,
    log: &Arc<NotificationLog>,
    fallbacks: &[Option<Fallback>],
    state_dir: Option<&std::path::Path>,
) -> (Vec<mpsc::Sender<Queued>>, Workers) {
    let dead = Arc::new(DeadLetter::new(settings.dead_letter.clone()));
    let (queues, receivers): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|_| mpsc::channel::<Queued>(settings.queue))
        .unzip();
    let tasks = names
        .iter()
        .zip(notifiers)
        .zip(receivers)
        .enumerate()
        .map(|(idx, ((name, notifier), rx))| {
            let fallback = fallbacks.get(idx).cloned().flatten().map(|f| {
                let to = names[f.target].clone();
                let h = Handover::new(f.target, to, f.after, queues[f.target].clone());
                match state_dir {
                    Some(dir) => h.durable(dir, name),
                    None => h,
                }
            });
            let worker = Worker {
                backoff: Backoff::new(settings.backoff_min, settings.backoff_max, name),
                idx,
                name: name.clone(),
                notifier,
                settings: settings.clone(),
                stats: Arc::clone(stats),
                dead: Arc::clone(&dead),
                log: Arc::clone(log),
                failures: RateLimited::new(Duration::from_secs(10)),
                fallback,
            };
            tokio::spawn(worker.run(rx))
        })
        .collect();
    (queues, Workers(tasks))
}

/// One target's worker: what it needs to deliver, retry and dead-letter.
struct Worker {
    idx: usize,
    name: String,
    notifier: Box<dyn Notifier>,
    settings: DeliverySettings,
    stats: Arc<Stats>,
    dead: Arc<DeadLetter>,
    log: Arc<NotificationLog>,
    failures: RateLimited,
    backoff: Backoff,
    /// The target's `fallback`, with its outage clock.
    fallback: Option<Handover>,
}

impl Worker {
    /// Delivers the queue's notifications one at a time, in order, until the queue is
    /// closed and empty; each is marked done in the log as soon as it is finished.
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(Queued { seq, n }) = rx.recv().await {
            if let Some(n) = self.deliver(n).await {
                self.hand_over(seq, n).await;
                continue;
            }
            if let Some(seq) = seq {
                let position = self.notifier.position();
                self.log
                    .done(seq, position.map(|p| (self.name.as_str(), p)));
            }
        }
    }

    /// Sends `n`, retrying what is worth retrying, and dead-letters it when that fails.
    /// Returns it instead when it goes to the fallback target: this target has been
    /// failing for longer than `fallback_after` (then it gets one attempt, no retries).
    async fn deliver(&mut self, n: Notification) -> Option<Notification> {
        let ts = &self.stats.targets[self.idx];
        let settings = &self.settings;
        self.backoff.reset();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match tokio::time::timeout(settings.timeout, self.notifier.send(&n)).await
            {
                Ok(r) => r,
                Err(_) => Err(SendError::Retry(format!(
                    "no answer within {:?}",
                    settings.timeout
                ))),
            };
            let err = match result {
                Ok(()) => {
                    ts.delivered.inc();
                    tracing::debug!(target_name = %n.target, topic = %n.topic, attempt, "delivered");
                    if self.fallback.as_mut().is_some_and(Handover::delivered) {
                        tracing::info!(target_name = %self.name, "target delivers again; its fallback is no longer used");
                    }
                    return None;
                }
                Err(e) => e,
            };
            let handover = self.fallback.as_mut().is_some_and(|h| {
                h.failed();
                h.active()
            });
            let retry =
                !handover && matches!(err, SendError::Retry(_)) && attempt <= settings.retries;
            self.failures.hit(|suppressed| {
                tracing::warn!(target_name = %n.target, kind = self.notifier.kind(), attempt, retry, handover, error = %err, suppressed, "delivery failed");
            });
            if handover {
                return Some(n);
            }
            if !retry {
                ts.failed.inc();
                ts.dead_lettered.inc();
                self.dead.write(&n, attempt, &err.to_string()).await;
                return None;
            }
            ts.retried.inc();
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
    }

    /// Queues `n` (notification `seq` of this target) for the fallback target, marked,
    /// replacing it in the notification log in one record.
    async fn hand_over(&mut self, seq: Option<u64>, n: Notification) {
        let Some(h) = &self.fallback else { return };
        let marked = h.mark(n, &self.name);
        let new_seq = self.log.moved(seq, &marked);
        self.stats.targets[self.idx].fallback.inc();
        self.stats.targets[h.target].queued.inc();
        if h.queue
            .send(Queued {
                seq: new_seq,
                n: marked,
            })
            .await
            .is_err()
        {
            tracing::error!(target_name = %h.name, "fallback target's worker stopped");
        }
    }
}
