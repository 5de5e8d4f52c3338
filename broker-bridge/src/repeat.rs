//! `repeat_interval`: an alarm that stays firing is sent again after the route's interval,
//! until it resolves, so a forgotten problem does not go quiet. Bounded: at most
//! `capacity` alarms are tracked; beyond that, new ones are not repeated (and counted).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::notify::Notification;

#[derive(Debug)]
struct Entry {
    /// The route that sent it: a repeat falls silent while that route is muted.
    route: usize,
    due: Instant,
    every: Duration,
    n: Notification,
}

#[derive(Debug)]
pub struct Repeats {
    entries: HashMap<(usize, String), Entry>,
    capacity: usize,
}

impl Repeats {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Starts (or restarts) repeating alarm `id` to `target`; false when full.
    pub fn firing(
        &mut self,
        route: usize,
        target: usize,
        id: &str,
        every: Duration,
        n: Notification,
        now: Instant,
    ) -> bool {
        let key = (target, id.to_owned());
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                route,
                due: now + every,
                every,
                n,
            },
        );
        true
    }

    /// Stops repeating alarm `id` to every target.
    pub fn resolved(&mut self, id: &str) {
        self.entries.retain(|(_, i), _| i != id);
    }

    /// Notifications due now as (route, target, notification), rescheduled for their
    /// next interval.
    pub fn due(&mut self, now: Instant) -> Vec<(usize, usize, Notification)> {
        let mut out = Vec::new();
        for ((target, _), e) in self.entries.iter_mut() {
            if e.due <= now {
                e.due = now + e.every;
                out.push((e.route, *target, e.n.clone()));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Notification {
        Notification {
            target: "t".into(),
            topic: "x".into(),
            title: "t".into(),
            body: "b".into(),
            fields: serde_json::json!({}),
            raw: vec![],
        }
    }

    #[test]
    fn repeats_every_interval_until_resolved() {
        let t0 = Instant::now();
        let mut r = Repeats::new(10);
        assert!(r.firing(0, 0, "a", Duration::from_secs(60), n(), t0));
        assert!(r.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(r.due(t0 + Duration::from_secs(60)).len(), 1);
        assert!(
            r.due(t0 + Duration::from_secs(61)).is_empty(),
            "rescheduled"
        );
        assert_eq!(r.due(t0 + Duration::from_secs(121)).len(), 1);
        r.resolved("a");
        assert!(r.due(t0 + Duration::from_secs(1000)).is_empty());
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut r = Repeats::new(2);
        assert!(r.firing(0, 0, "a", Duration::from_secs(1), n(), t0));
        assert!(r.firing(0, 0, "b", Duration::from_secs(1), n(), t0));
        assert!(!r.firing(0, 0, "c", Duration::from_secs(1), n(), t0));
        assert!(
            r.firing(0, 0, "a", Duration::from_secs(1), n(), t0),
            "an existing one may be updated"
        );
        assert_eq!(r.len(), 2);
    }
}
