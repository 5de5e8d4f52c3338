//! The agent's own health, published on `<prefix>/<host>/agent/stats`: is it keeping up
//! (tick lag, skipped ticks), is it getting its data out (published, dropped, outbox,
//! reconnects), are its models useful yet (learning/ready), and what it costs (RSS).
//!
//! Tick lags are kept in a fixed ring of the last [`LAGS`] ticks for the median; the
//! maximum is since the last report. Nothing here grows with uptime.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Ticks whose lag the median is taken over.
const LAGS: usize = 128;

#[derive(Debug)]
pub struct Health {
    started: Instant,
    period: Duration,
    last_scheduled: Option<tokio::time::Instant>,
    /// The last [`LAGS`] ticks' lags, the oldest overwritten.
    lags_ms: heapless::HistoryBuf<f32, LAGS>,
    lag_max_ms: f32,
    pub ticks: u64,
    pub skipped: u64,
}

/// The JSON of `agent/stats`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub ts: i64,
    pub host: &'a str,
    pub version: &'static str,
    pub uptime_s: u64,
    /// How often this report comes (`agent.stats_interval`), so a watcher (the bridge's
    /// dead-man alarm) knows when a missing one means silence.
    pub stats_interval_s: u64,
    pub rss_bytes: Option<u64>,
    pub ticks: u64,
    pub ticks_skipped: u64,
    pub tick_lag_ms: Lag,
    pub published: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub inbox_dropped: u64,
    /// Connections ended by an incoming message over the packet limit (link/client.rs).
    pub oversize: u64,
    /// QoS 1 publishes the broker refused with an MQTT 5 reason code (link/client.rs).
    pub refused: u64,
    /// The MQTT version the link speaks: `"5"` or `"3.1.1"` (`[mqtt] protocol`).
    pub protocol: &'static str,
    pub outbox: OutboxReport,
    /// Scores and metrics kept while the broker was away (`[buffer]`); absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferReport>,
    pub models: ModelsReport,
    pub commands: CommandsReport,
    /// Device models (`crate::devices`); absent when none is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<DevicesReport>,
    /// `[[upstream]]` forwarders (on the first host's report); absent when none is set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<crate::upstream::UpstreamReport>,
}

#[derive(Debug, Serialize)]
pub struct Lag {
    pub p50: f32,
    pub max: f32,
}

#[derive(Debug, Default, Serialize)]
pub struct BufferReport {
    /// Kept, not yet sent.
    pub records: u64,
    pub bytes: u64,
    /// Kept since start.
    pub kept: u64,
    /// Merged into per-minute aggregates, and lost to the bounds.
    pub downsampled: u64,
    pub dropped: u64,
    pub write_errors: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct OutboxReport {
    pub pending: usize,
    pub bytes: u64,
    pub dropped: u64,
    pub write_errors: u64,
    pub recovered: usize,
}

/// Device models since start: instances now, created and evicted, readings taken, and
/// readings dropped by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DevicesReport {
    pub instances: usize,
    /// Bytes the instances' decision states hold now (bounded by `max_instances`).
    pub heap_bytes: usize,
    pub created: u64,
    pub evicted: u64,
    pub readings: u64,
    /// Intervals in which a metric had no reading: not scored.
    pub gaps: u64,
    /// Readings for no device model (another device or metric): the rules may want them.
    pub unmatched: u64,
    pub dropped: DevicesDropped,
}

/// Readings dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DevicesDropped {
    /// Not a number, not JSON, not UTF-8, too large, no metric.
    pub bad: u64,
    /// Time more than 10 s ahead of the agent's clock.
    pub future: u64,
    /// Time in an interval already scored.
    pub late: u64,
    /// Over the device's `max_rate`.
    pub rate: u64,
}

/// Operators' commands to this host (`cmd/relearn`) since start: obeyed, and refused (a
/// missing or wrong token, bad JSON, an unknown model, retained).
#[derive(Debug, Default, Serialize)]
pub struct CommandsReport {
    pub accepted: u64,
    pub refused: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ModelsReport {
    pub learning: usize,
    pub ready: usize,
    /// Ticks refused because a value was outside the model's limits, since start.
    pub invalid_values: u64,
}

impl Health {
    pub fn new(period: Duration) -> Self {
        Self {
            started: Instant::now(),
            period,
            last_scheduled: None,
            lags_ms: heapless::HistoryBuf::new(),
            lag_max_ms: 0.0,
            ticks: 0,
            skipped: 0,
        }
    }

    /// A tick that was due at `scheduled` starts now. Ticks the interval skipped because
    /// the loop was late are counted.
    pub fn tick(&mut self, scheduled: tokio::time::Instant) {
        self.tick_at(scheduled, tokio::time::Instant::now());
    }

    fn tick_at(&mut self, scheduled: tokio::time::Instant, now: tokio::time::Instant) {
        self.ticks += 1;
        if let Some(prev) = self.last_scheduled {
            let gap = scheduled.saturating_duration_since(prev).as_secs_f64();
            let periods = (gap / self.period.as_secs_f64().max(1e-9)).round() as u64;
            self.skipped += periods.saturating_sub(1);
        }
        self.last_scheduled = Some(scheduled);
        let lag = now.saturating_duration_since(scheduled).as_secs_f32() * 1000.0;
        self.lags_ms.write(lag);
        self.lag_max_ms = self.lag_max_ms.max(lag);
    }

    /// Median of the recent lags and the maximum since the last call.
    pub fn take_lag(&mut self) -> Lag {
        let kept = self.lags_ms.as_slice();
        let mut copy = [0.0; LAGS];
        let recent = &mut copy[..kept.len()];
        recent.copy_from_slice(kept);
        let p50 = if recent.is_empty() {
            0.0
        } else {
            let mid = recent.len() / 2;
            *recent.select_nth_unstable_by(mid, f32::total_cmp).1
        };
        let max = std::mem::take(&mut self.lag_max_ms);
        Lag { p50, max }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Resident set size (`VmRSS` of `/proc/self/status`), `None` where there is none.
pub fn rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_median_and_max_and_skipped_ticks() {
        let period = Duration::from_millis(100);
        let mut h = Health::new(period);
        let t0 = tokio::time::Instant::now();
        for (i, lag_ms) in [1u64, 2, 3, 50, 2].into_iter().enumerate() {
            let s = t0 + period * i as u32;
            h.tick_at(s, s + Duration::from_millis(lag_ms));
        }
        // The loop was late: the interval skipped two ticks.
        let s = t0 + period * 7;
        h.tick_at(s, s + Duration::from_millis(2));
        assert_eq!((h.ticks, h.skipped), (6, 2));
        let lag = h.take_lag();
        assert!(
            (lag.p50 - 2.0).abs() < 0.01 && (lag.max - 50.0).abs() < 0.01,
            "{lag:?}"
        );
        assert_eq!(h.take_lag().max, 0.0, "the maximum is per report");
    }

    #[test]
    fn rss_is_read_from_proc() {
        let rss = rss_bytes().unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
