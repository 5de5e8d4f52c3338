//! The bridge's own health: counters bumped where things happen, published as JSON on
//! `<prefix>/bridge/<id>/stats`. Each count that matters for a log line goes through one
//! call that bumps the counter and logs (rate-limited), so logs and stats never disagree.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// For values kept elsewhere and copied in before the stats are published.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

#[derive(Debug, Default, Serialize)]
pub struct TargetStats {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub queued: Counter,
    pub delivered: Counter,
    pub retried: Counter,
    pub failed: Counter,
    pub dead_lettered: Counter,
    /// Handed to the target's fallback while it was failing.
    pub fallback: Counter,
}

/// Messages a route dropped for its limits (`[[routes]]` `max_payload`,
/// `max_topic_length`, `rate_limit`).
#[derive(Debug, Default, Serialize)]
pub struct RouteStats {
    /// The route's topic filter, naming it.
    pub topic: String,
    pub too_large: Counter,
    pub topic_too_long: Counter,
    pub rate_limited: Counter,
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub received: Counter,
    pub invalid: Counter,
    pub routed: Counter,
    pub unrouted: Counter,
    pub deduplicated: Counter,
    pub resolved_skipped: Counter,
    /// Resolved notices not sent because their target was never sent the firing.
    pub orphan_resolved: Counter,
    /// Retained states replayed to a bridge of a `share_group` on subscribing: another
    /// bridge of the group had them live (`source::Incoming::Replayed`).
    pub replayed_skipped: Counter,
    pub template_errors: Counter,
    pub silenced: Counter,
    pub inhibited: Counter,
    /// Messages a route did not send because it was muted (`mute`, `active`).
    pub muted: Counter,
    /// Muted alarms not held for the window's end because the table was full.
    pub mute_full: Counter,
    pub repeated: Counter,
    /// Alarms not repeated because the repeat table was full.
    pub repeat_full: Counter,
    /// Batches sent by grouping routes.
    pub grouped: Counter,
    /// Notifications not grouped because the group table or a batch was full.
    pub group_full: Counter,
    /// Notifications found queued but unfinished in the notification log at start and
    /// queued again.
    pub replayed: Counter,
    /// Writes to the notification log that failed (disk full, I/O errors).
    pub state_errors: Counter,
    /// Acknowledgements taken (`<prefix>/bridge/ack`).
    pub acknowledged: Counter,
    /// Acknowledgements refused: bad JSON, unknown or resolved alarm ids.
    pub ack_rejected: Counter,
    /// Acknowledgements whose `until` passed while their alarm was still firing.
    pub ack_expired: Counter,
    /// Firing alarms not tracked (no acknowledgement, no escalation): the table was full.
    pub firing_full: Counter,
    /// Escalation steps sent (once per alarm and step, whatever its number of targets).
    pub escalated: Counter,
    /// Pictures of alarms drawn for targets, and windows skipped (`crate::picture`).
    pub pictures: PictureStats,
    pub targets: Vec<TargetStats>,
    pub routes: Vec<RouteStats>,
}

/// Alarm pictures: drawn (once per send attempt that carries one) and not drawn, by reason.
#[derive(Debug, Default, Serialize)]
pub struct PictureStats {
    pub rendered: Counter,
    /// `window` not of the documented shape.
    pub skipped_malformed: Counter,
    /// Its arrays' lengths differ.
    pub skipped_inconsistent: Counter,
    /// Fewer than 2 ticks, or no finite value.
    pub skipped_empty: Counter,
    /// Drawing or encoding failed, or the PNG was over 100 KiB.
    pub skipped_failed: Counter,
}

impl PictureStats {
    /// Copies the picture counts in (they are kept by `crate::picture`, whose callers,
    /// the plugins, have no stats).
    pub fn copy_from(&self, c: &crate::picture::Counts) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rendered.set(c.rendered.load(Relaxed));
        self.skipped_malformed.set(c.malformed.load(Relaxed));
        self.skipped_inconsistent.set(c.inconsistent.load(Relaxed));
        self.skipped_empty.set(c.empty.load(Relaxed));
        self.skipped_failed.set(c.failed.load(Relaxed));
    }
}

/// Logs at most one line per `every` for a kind of event, saying how many were not logged.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Calls `log(suppressed_since_last)` when it is time to log again.
    pub fn hit(&self, log: impl FnOnce(u64)) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < self.every => st.1 += 1,
            _ => {
                let suppressed = st.1;
                *st = (Some(now), 0);
                drop(st);
                log(suppressed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_logs_once_per_period_and_counts_the_rest() {
        let r = RateLimited::new(Duration::from_secs(3600));
        let mut logged = Vec::new();
        for _ in 0..5 {
            r.hit(|n| logged.push(n));
        }
        assert_eq!(logged, vec![0]);
        assert_eq!(r.state.lock().unwrap().1, 4);
    }

    #[test]
    fn stats_serialise_as_plain_numbers() {
        let s = Stats::default();
        s.received.inc();
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["received"], 1);
    }
}
