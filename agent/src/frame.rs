//! One tick's worth of samples: the hand-off between the samplers (or the simulator)
//! and the models.
//!
//! Names are `Arc<str>` so a source can keep its chart names (`net.eth0`) and hand out
//! cheap clones every tick: after the first tick a frame is refilled in place and
//! allocates nothing.

use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Netdata-style chart, e.g. `system.cpu`, `net.eth0`, `disk_space./`.
    pub chart: Arc<str>,
    /// Dimension of the chart, e.g. `user`, `received`.
    pub dim: Arc<str>,
    pub value: f64,
}

/// The samples of one host at one instant.
#[derive(Debug, Default)]
pub struct Frame {
    /// Unix milliseconds of the tick (simulated time when simulating).
    pub ts: i64,
    pub samples: Vec<Sample>,
}

impl Frame {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ts: 0,
            samples: Vec::with_capacity(n),
        }
    }

    pub fn clear(&mut self, ts: i64) {
        self.ts = ts;
        self.samples.clear();
    }

    pub fn push(&mut self, chart: &Arc<str>, dim: &Arc<str>, value: f64) {
        self.samples.push(Sample {
            chart: Arc::clone(chart),
            dim: Arc::clone(dim),
            value,
        });
    }

    /// Linear scan: a host has at most a few hundred samples and models look up a handful
    /// once per tick, which costs less than maintaining an index.
    pub fn get(&self, chart: &str, dim: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| &*s.chart == chart && &*s.dim == dim)
            .map(|s| s.value)
    }
}
