//! No orphan resolves: a resolved notice goes to a target only if that target was sent
//! the alarm's firing. A resolve for an alarm the target never heard of (the bridge
//! started after the alarm fired, the firing was silenced, muted, or inhibited, or a route
//! condition kept it away) says "something you never saw is over", which only confuses.
//!
//! The fact "target T was sent the firing of alarm A" is one more key in the notification
//! log ([`crate::dedup`]): remembered when the firing is queued for the target and written
//! to disk with it (the `Q` record's keys, then `K` records at compaction), so it survives
//! a restart, `kill -9` included, exactly as the dedup keys do, and shares their capacity
//! (`bridge.dedup_capacity`).

use std::time::Duration;

use crate::dedup::{Key, NotificationLog};
use crate::stats::{RateLimited, Stats};

/// The key that says `target` was sent a firing state of alarm `id` (any severity).
pub fn fired_key(target: &str, id: &str) -> Key {
    crate::dedup::key(target, id, "sent:firing")
}

/// Whether the resolved notice of alarm `id` may go to `target`: the one place that
/// decides. (Acknowledgements, when they exist, add "or the firing was acknowledged".)
pub fn resolve_allowed(log: &NotificationLog, target: &str, id: &str) -> bool {
    log.contains(fired_key(target, id)) || fired_before_upgrade(log, target, id)
}

/// A log written before this key existed knows the firing only by its dedup keys
/// (`firing`, or `firing:<severity>` for the agent's levels 1-4): an alarm that fired
/// before an upgrade still gets its resolve.
fn fired_before_upgrade(log: &NotificationLog, target: &str, id: &str) -> bool {
    ["firing", "firing:1", "firing:2", "firing:3", "firing:4"]
        .iter()
        .any(|state| log.contains(crate::dedup::key(target, id, state)))
}

/// A resolve held back because its target never got the firing: counted in
/// `orphan_resolved`, logged at most once per 10 s.
#[derive(Debug)]
pub struct Orphans {
    log: RateLimited,
}

impl Default for Orphans {
    fn default() -> Self {
        Self {
            log: RateLimited::new(Duration::from_secs(10)),
        }
    }
}

impl Orphans {
    pub fn emit(&self, stats: &Stats, target: &str, id: &str) {
        stats.orphan_resolved.inc();
        self.log.hit(|suppressed| {
            tracing::info!(
                target_name = target,
                id,
                suppressed,
                "resolved notice not sent: the target was never sent the firing"
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolve_is_allowed_only_for_the_target_that_was_sent_the_firing() {
        let log = NotificationLog::memory(100);
        assert!(!resolve_allowed(&log, "a", "h:cpu:1"));
        log.first(fired_key("a", "h:cpu:1"));
        assert!(resolve_allowed(&log, "a", "h:cpu:1"));
        assert!(!resolve_allowed(&log, "b", "h:cpu:1"), "another target");
        assert!(!resolve_allowed(&log, "a", "h:cpu:2"), "another alarm");
        log.first(crate::dedup::key("a", "h:cpu:2", "firing:3"));
        assert!(resolve_allowed(&log, "a", "h:cpu:2"), "a log from before");
    }
}
