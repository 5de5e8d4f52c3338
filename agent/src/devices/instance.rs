//! One device's instance of a device model: its interval being filled, its rate limit,
//! and the decision path every model runs ([`Decider`]).

use super::bucket::{Acc, Aggregate};
use crate::decide::Decider;

/// A reading for another interval than the open one.
#[derive(Debug)]
pub struct Late;

#[derive(Debug)]
pub struct Instance {
    pub device: String,
    /// Unique over the agent's run: the trainer hands a fit back by it, and an evicted
    /// instance's slot may be someone else's by then.
    pub uid: usize,
    pub decider: Decider,
    /// The order of the last reading taken, for evicting the least recently seen.
    pub last_seen: u64,
    pub score_topic: String,
    pub alarm_name: String,
    /// One per metric, in the model's order.
    accs: Vec<Acc>,
    pub values: Vec<f64>,
    /// The open interval's index (time / interval); `None` between intervals.
    open: Option<i64>,
    /// Token bucket for the device's rate limit: tokens left, and when last refilled.
    tokens: f64,
    refilled_at: i64,
}

impl Instance {
    pub fn new(
        device: &str,
        uid: usize,
        decider: Decider,
        score_topic: String,
        alarm_name: String,
        rate: f64,
        now: i64,
    ) -> Self {
        let n = decider.model().n_dims();
        Self {
            device: device.to_owned(),
            uid,
            decider,
            last_seen: 0,
            score_topic,
            alarm_name,
            accs: vec![Acc::default(); n],
            values: vec![0.0; n],
            open: None,
            tokens: burst(rate),
            refilled_at: now,
        }
    }

    /// Takes one reading's worth from the rate limit: `rate` per second, a second's worth
    /// at once.
    pub fn admit(&mut self, now: i64, rate: f64) -> bool {
        let elapsed = (now - self.refilled_at).max(0) as f64 / 1000.0;
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst(rate));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The interval being filled, if any.
    pub fn open(&self) -> Option<i64> {
        self.open
    }

    /// Adds a reading of metric `mi` to interval `bucket`, which the caller has checked is
    /// the open one or a later one after closing the open one ([`Instance::close`]).
    pub fn put(&mut self, bucket: i64, mi: usize, value: f64) -> Result<(), Late> {
        match self.open {
            Some(open) if open != bucket => return Err(Late),
            Some(_) => {}
            None => self.open = Some(bucket),
        }
        if let Some(acc) = self.accs.get_mut(mi) {
            acc.add(value);
        }
        Ok(())
    }

    /// Closes the open interval: its index, and whether every metric had a reading (the
    /// values are then in [`Instance::values`]); a metric without one makes the interval
    /// a gap.
    pub fn close(&mut self, aggregates: &[Aggregate]) -> Option<(i64, bool)> {
        let bucket = self.open.take()?;
        let mut complete = true;
        for ((acc, v), how) in self.accs.iter_mut().zip(&mut self.values).zip(aggregates) {
            match acc.value(*how) {
                Some(x) => *v = x,
                None => complete = false,
            }
            acc.clear();
        }
        Some((bucket, complete))
    }
}

fn burst(rate: f64) -> f64 {
    rate.max(1.0)
}
