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
/// dead-letter file; returns their queues, in the same order.
pub fn start(
    names: &[String],
    notifiers: Vec<Box<dyn Notifier>>,
    settings: &DeliverySettings,
    stats: &Arc<Stats>,
    log: &Arc<NotificationLog>,
) -> (Vec<mpsc::Sender<Queued>>, Workers) {
    let dead = Arc::new(DeadLetter::new(settings.dead_letter.clone()));
    let (queues, tasks) = names
        .iter()
        .zip(notifiers)
        .enumerate()
        .map(|(idx, (name, n))| {
            spawn(
                idx,
                name.clone(),
                n,
                settings.clone(),
                Arc::clone(stats),
                Arc::clone(&dead),
                Arc::clone(log),
            )
        })
        .unzip();
    (queues, Workers(tasks))
}

/// Starts the worker of target `idx`; returns its queue.
fn spawn(
    idx: usize,
    name: String,
    notifier: Box<dyn Notifier>,
    settings: DeliverySettings,
    stats: Arc<Stats>,
    dead: Arc<DeadLetter>,
    log: Arc<NotificationLog>,
) -> (mpsc::Sender<Queued>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Queued>(settings.queue);
    let worker = Worker {
        backoff: Backoff::new(settings.backoff_min, settings.backoff_max, &name),
        idx,
        name,
        notifier,
        settings,
        stats,
        dead,
        log,
        failures: RateLimited::new(Duration::from_secs(10)),
    };
    (tx, tokio::spawn(worker.run(rx)))
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
}

impl Worker {
    /// Delivers the queue's notifications one at a time, in order, until the queue is
    /// closed and empty; each is marked done in the log as soon as it is finished.
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(Queued { seq, n }) = rx.recv().await {
            self.deliver(n).await;
            if let Some(seq) = seq {
                let position = self.notifier.position();
                self.log
                    .done(seq, position.map(|p| (self.name.as_str(), p)));
            }
        }
    }

    /// Sends `n`, retrying what is worth retrying, and dead-letters it when that fails.
    async fn deliver(&mut self, n: Notification) {
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
                    return;
                }
                Err(e) => e,
            };
            let retry = matches!(err, SendError::Retry(_)) && attempt <= settings.retries;
            self.failures.hit(|suppressed| {
                tracing::warn!(target_name = %n.target, kind = self.notifier.kind(), attempt, retry, error = %err, suppressed, "delivery failed");
            });
            if !retry {
                ts.failed.inc();
                ts.dead_lettered.inc();
                self.dead.write(&n, attempt, &err.to_string()).await;
                return;
            }
            ts.retried.inc();
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
    }
}
