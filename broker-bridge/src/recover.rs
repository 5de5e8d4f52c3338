//! Restart recovery: what a previous run queued and did not finish.
//!
//! The notification log ([`crate::dedup`]) is opened first, before anything connects, so a
//! second bridge on the same `bridge.state_dir` stops at its lock. Its unfinished
//! notifications are then settled against the targets that can tell whether they were
//! written (a file's length: the one in flight at a crash is not written twice), and the
//! rest are queued again ahead of anything new, in their original order.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Error;
use crate::config::Settings;
use crate::dedup::{NotificationLog, Recovered};
use crate::deliver::Queued;
use crate::notify::Notifier;
use crate::stats::Stats;

/// The notification log as the previous run left it.
pub struct Recovery {
    pub log: Arc<NotificationLog>,
    /// Queued and not finished, in their original order.
    unfinished: Vec<Recovered>,
    /// Each target's output position recorded with its last finished notification.
    positions: HashMap<String, u64>,
}

impl Recovery {
    /// Opens (and locks) the notification log under `bridge.state_dir`, or keeps one in
    /// memory without it.
    pub fn open(settings: &Settings) -> Result<Self, Error> {
        let Some(dir) = &settings.state_dir else {
            tracing::info!("bridge.state_dir is empty: dedup keys and queues are in memory only");
            return Ok(Self {
                log: Arc::new(NotificationLog::memory(settings.dedup_capacity)),
                unfinished: Vec::new(),
                positions: HashMap::new(),
            });
        };
        let (log, unfinished, loaded) =
            NotificationLog::open(dir, settings.dedup_capacity, settings.state_sync)?;
        if loaded.bad_lines > 0 || loaded.torn_tail > 0 {
            tracing::warn!(
                path = %dir.join(crate::dedup::LOG_FILE).display(),
                bad_lines = loaded.bad_lines,
                first_bad_line = loaded.first_bad_line,
                torn_tail_bytes = loaded.torn_tail,
                "notification log damaged; bad records skipped (their alarms may be notified again)"
            );
        }
        tracing::info!(
            state_dir = %dir.display(),
            records = loaded.records,
            keys = loaded.keys,
            unfinished = unfinished.len(),
            "notification log loaded"
        );
        Ok(Self {
            log: Arc::new(log),
            unfinished,
            positions: loaded.positions,
        })
    }

    /// For targets that tell their output's position (a file's length): if it grew past
    /// the position recorded with the last finished notification, the one in flight when
    /// the last run died (the target's oldest unfinished one) was written: not again.
    /// Records every such target's position now. Call before the workers start.
    pub fn settle_in_flight(&mut self, names: &[String], notifiers: &[Box<dyn Notifier>]) {
        for (name, n) in names.iter().zip(notifiers) {
            let Some(now) = n.position() else { continue };
            if let Some(&last) = self.positions.get(name)
                && now > last
                && let Some(i) = self.unfinished.iter().position(|r| r.n.target == *name)
            {
                let r = self.unfinished.remove(i);
                tracing::info!(target_name = %name, topic = %r.n.topic, "the notification in flight when the bridge stopped was written; not sending it again");
                self.log.done(r.seq, Some((name, now)));
            }
            self.log.set_position(name, now);
        }
    }

    /// Queues what is still unfinished, before anything new, in its order; a notification
    /// for a target no longer configured is dropped (and marked done).
    pub async fn requeue(self, names: &[String], stats: &Stats, queues: &[mpsc::Sender<Queued>]) {
        for r in self.unfinished {
            match names.iter().position(|name| *name == r.n.target) {
                Some(t) => {
                    stats.replayed.inc();
                    stats.targets[t].queued.inc();
                    let _ = queues[t]
                        .send(Queued {
                            seq: Some(r.seq),
                            n: r.n,
                        })
                        .await;
                }
                None => {
                    tracing::warn!(target_name = %r.n.target, topic = %r.n.topic, "queued notification for a target no longer configured dropped");
                    self.log.done(r.seq, None);
                }
            }
        }
    }
}
