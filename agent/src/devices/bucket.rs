//! Irregular readings into a model's interval. A device publishes when it likes (every
//! 200 ms, every 10 s, in bursts); a model takes one vector per interval. Each metric says
//! how the readings of one interval become its value, and an interval in which a metric
//! had no reading at all is a gap: the model does not step, rather than seeing a zero it
//! never measured.

use serde::{Deserialize, Serialize};

/// How the readings of one interval combine into the model's value (`aggregate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// The latest reading (by arrival): a gauge sampled faster than the model looks.
    Last,
    /// The mean: a noisy gauge (temperature, vibration).
    #[default]
    Mean,
    /// The sum: counts a device reports in pieces (requests, litres).
    Sum,
    /// How many readings came, whatever their values: events such as orders or errors.
    Count,
    Min,
    Max,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Last => "last",
            Aggregate::Mean => "mean",
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
        }
    }
}

/// One metric's readings within the open interval: five numbers, whatever the rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Acc {
    n: u32,
    last: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    pub fn add(&mut self, value: f64) {
        if self.n == 0 {
            self.min = value;
            self.max = value;
            self.sum = 0.0;
        }
        self.n = self.n.saturating_add(1);
        self.last = value;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The interval's value; `None` when no reading came (a gap).
    pub fn value(&self, how: Aggregate) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match how {
            Aggregate::Last => self.last,
            Aggregate::Mean => self.sum / f64::from(self.n),
            Aggregate::Sum => self.sum,
            Aggregate::Count => f64::from(self.n),
            Aggregate::Min => self.min,
            Aggregate::Max => self.max,
        })
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_aggregate_reads_the_interval_as_documented() {
        let mut a = Acc::default();
        assert_eq!(
            a.value(Aggregate::Sum),
            None,
            "no reading is a gap, not a zero"
        );
        for v in [3.0, 1.0, 8.0, 4.0] {
            a.add(v);
        }
        assert_eq!(a.value(Aggregate::Last), Some(4.0));
        assert_eq!(a.value(Aggregate::Mean), Some(4.0));
        assert_eq!(a.value(Aggregate::Sum), Some(16.0));
        assert_eq!(a.value(Aggregate::Count), Some(4.0));
        assert_eq!(a.value(Aggregate::Min), Some(1.0));
        assert_eq!(a.value(Aggregate::Max), Some(8.0));
        a.clear();
        assert!(a.is_empty());
        a.add(-2.0);
        assert_eq!(a.value(Aggregate::Min), Some(-2.0));
        assert_eq!(a.value(Aggregate::Max), Some(-2.0));
        assert_eq!(a.value(Aggregate::Sum), Some(-2.0));
    }
}
