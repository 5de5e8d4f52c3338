//! The notification log: which `(target, alarm id, state)` have been delivered (or are on
//! their way), so redeliveries, QoS 1 duplicates and retained messages sent again after a
//! reconnect notify nobody twice. Bounded: the oldest keys are forgotten first.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct Dedup {
    seen: HashSet<(usize, String, String)>,
    order: VecDeque<(usize, String, String)>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `(target, id, state)` is offered; false for a duplicate.
    pub fn first(&mut self, target: usize, id: &str, state: &str) -> bool {
        let key = (target, id.to_owned(), state.to_owned());
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_id_and_state_passes_once() {
        let mut d = Dedup::new(10);
        assert!(d.first(0, "a", "firing"));
        assert!(!d.first(0, "a", "firing"));
        assert!(d.first(1, "a", "firing"), "another target");
        assert!(d.first(0, "a", "resolved"), "another state");
    }

    #[test]
    fn memory_is_bounded_and_oldest_keys_go_first() {
        let mut d = Dedup::new(3);
        for i in 0..10 {
            d.first(0, &i.to_string(), "firing");
        }
        assert_eq!(d.len(), 3);
        assert!(d.first(0, "0", "firing"), "forgotten");
        assert!(!d.first(0, "9", "firing"), "remembered");
    }
}
