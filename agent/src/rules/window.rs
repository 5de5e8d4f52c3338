//! One rule's open tumbling window: the running avg/min/max/count of each group, grouped
//! like the seed's `GROUP BY deviceId, ruleId, metric, alert, dim0..dim4`. The rule fixes
//! ruleId, metric and alert, so within a rule a group is the device and the included dims.
//!
//! Windows are aligned to the Unix epoch (`[k·len, (k+1)·len)`), as ASA's tumbling windows
//! are, so every agent of a fleet cuts the same minutes. A window holds at most `cap`
//! groups: events of further groups are refused and counted by the caller, because a
//! dimension with a value per event (a request id, a timestamp) would otherwise grow the
//! window without bound on a device with little memory.

use std::collections::BTreeMap;

use super::document::{DIMS, Rule, Stat};
use super::event::Event;

/// The statistics of one group in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregate {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Aggregate {
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// The statistic an operator compares with its rule's value.
    pub fn stat(&self, stat: Stat) -> f64 {
        match stat {
            Stat::Avg => self.avg(),
            Stat::Min => self.min,
            Stat::Max => self.max,
            Stat::Count => self.count as f64,
        }
    }
}

/// A group within one rule: the event's device and the values of the dimensions the rule
/// includes (`None` for the others, and for included ones the event lacks, as ASA's NULL).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub device: String,
    pub dims: [Option<String>; DIMS],
}

impl GroupKey {
    pub fn of(rule: &Rule, event: &Event) -> Self {
        Self {
            device: event.device.clone(),
            dims: std::array::from_fn(|i| {
                if rule.include_dim[i] {
                    event.dims[i].clone()
                } else {
                    None
                }
            }),
        }
    }
}

/// The window an event was refused by because it already holds `cap` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverCap;

#[derive(Clone, Debug)]
pub struct Window {
    start: i64,
    len: i64,
    cap: usize,
    groups: BTreeMap<GroupKey, Aggregate>,
}

impl Window {
    pub fn new(start: i64, len: i64, cap: usize) -> Self {
        Self {
            start,
            len,
            cap,
            groups: BTreeMap::new(),
        }
    }

    /// Start of the window of length `len` that holds `ts`.
    pub fn aligned(ts: i64, len: i64) -> i64 {
        // Saturating: near i64::MIN the window's start is not representable.
        ts.saturating_sub(ts.rem_euclid(len))
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    /// The first instant after the window: an event at exactly this time belongs to the
    /// next one.
    pub fn end(&self) -> i64 {
        self.start.saturating_add(self.len)
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn add(&mut self, key: GroupKey, value: f64) -> Result<(), OverCap> {
        if let Some(agg) = self.groups.get_mut(&key) {
            agg.add(value);
            return Ok(());
        }
        if self.groups.len() >= self.cap {
            return Err(OverCap);
        }
        self.groups.insert(key, Aggregate::of(value));
        Ok(())
    }

    /// Closes this window: returns its groups in key order and starts an empty one at
    /// `next_start`.
    pub fn roll(&mut self, next_start: i64) -> BTreeMap<GroupKey, Aggregate> {
        self.start = next_start;
        std::mem::take(&mut self.groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str) -> GroupKey {
        GroupKey {
            device: device.into(),
            dims: Default::default(),
        }
    }

    #[test]
    fn aggregates_the_seeds_two_hot_readings() {
        let mut a = Aggregate::of(98.0);
        a.add(95.0);
        assert_eq!((a.count, a.min, a.max, a.avg()), (2, 95.0, 98.0, 96.5));
        assert_eq!(a.stat(Stat::Avg), 96.5);
        assert_eq!(a.stat(Stat::Min), 95.0);
        assert_eq!(a.stat(Stat::Max), 98.0);
        assert_eq!(a.stat(Stat::Count), 2.0);
    }

    #[test]
    fn windows_align_to_the_epoch_also_before_it() {
        assert_eq!(Window::aligned(0, 60_000), 0);
        assert_eq!(Window::aligned(59_999, 60_000), 0);
        assert_eq!(Window::aligned(60_000, 60_000), 60_000);
        assert_eq!(Window::aligned(-1, 60_000), -60_000);
        let w = Window::new(60_000, 60_000, 4);
        assert_eq!((w.start(), w.end()), (60_000, 120_000));
    }

    #[test]
    fn refuses_new_groups_beyond_the_cap_but_still_feeds_known_ones() {
        let mut w = Window::new(0, 60_000, 2);
        assert_eq!(w.add(key("a"), 1.0), Ok(()));
        assert_eq!(w.add(key("b"), 2.0), Ok(()));
        assert_eq!(w.add(key("c"), 3.0), Err(OverCap));
        assert_eq!(w.add(key("a"), 5.0), Ok(()));
        assert_eq!(w.groups(), 2);
        let groups = w.roll(60_000);
        assert_eq!(groups[&key("a")].count, 2);
        assert_eq!(groups[&key("a")].max, 5.0);
        assert!(!groups.contains_key(&key("c")));
        assert_eq!((w.start(), w.groups()), (60_000, 0));
        assert_eq!(w.add(key("c"), 3.0), Ok(()), "the next window starts empty");
    }
}
