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

/// Starts the worker of target `idx`; returns its queue.
pub fn spawn(
    idx: usize,
    name: String,
    notifier: Box<dyn Notifier>,
    settings: DeliverySettings,
    stats: Arc<Stats>,
    dead: Arc<DeadLetter>,
    log: Arc<NotificationLog>,
) -> (mpsc::Sender<Queued>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Queued>(settings.queue);
    let task = tokio::spawn(async move {
        let failures = RateLimited::new(Duration::from_secs(10));
        let mut jitter = lookout_shared::time::Jitter::new(idx as u64);
        while let Some(Queued { seq, n }) = rx.recv().await {
            deliver(
                idx,
                notifier.as_ref(),
                &settings,
                &stats,
                &dead,
                &failures,
                &mut jitter,
                n,
            )
            .await;
            if let Some(seq) = seq {
                let position = notifier.position();
                log.done(seq, position.map(|p| (name.as_str(), p)));
            }
        }
    });
    (tx, task)
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    idx: usize,
    notifier: &dyn Notifier,
    settings: &DeliverySettings,
    stats: &Stats,
    dead: &DeadLetter,
    failures: &RateLimited,
    jitter: &mut lookout_shared::time::Jitter,
    n: Notification,
) {
    let ts = &stats.targets[idx];
    let mut delay = settings.backoff_min;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = match tokio::time::timeout(settings.timeout, notifier.send(&n)).await {
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
        failures.hit(|suppressed| {
            tracing::warn!(target_name = %n.target, kind = notifier.kind(), attempt, retry, error = %err, suppressed, "delivery failed");
        });
        if !retry {
            ts.failed.inc();
            ts.dead_lettered.inc();
            dead.write(&n, attempt, &err.to_string()).await;
            return;
        }
        ts.retried.inc();
        tokio::time::sleep(jitter.apply(delay)).await;
        delay = (delay * 2).min(settings.backoff_max);
    }
}
