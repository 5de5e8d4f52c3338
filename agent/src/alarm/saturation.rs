//! Saturation metrics (seed `003`): memory, threads, connections — things with a hard
//! limit. Falling below normal is never an alarm for them. Rising above normal becomes an
//! alarm only when it looks like the limit is being approached:
//!
//! - level 3 when the value is above `pct` of the limit and it rose at least
//!   `rises_near_limit` times within `window`;
//! - otherwise level 3 for more than `rises_level3` rises within `window`, level 2 for
//!   more than `rises_level2`;
//! - otherwise no alarm: an unusual but steady value far from the limit is not saturation.
//!
//! A rise is a step (`step`, 30 s) whose mean value is above the previous step's. The
//! seed counts rises of per-minute data; counted per 1 s tick, noise near a limit would be
//! dozens of rises a minute. The step still open counts as a rise while its mean so far
//! is above the last one, so a climb is seen as it happens. Only the last few rise times
//! are kept (enough to count past `rises_level3`), so the state is fixed in size.

/// Rise times kept: more than any count the rules ask about.
const KEPT: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SaturationParams {
    pub limit: f64,
    /// Share of the limit, 0–1 (the seed's 70 %: 0.7).
    pub pct: f64,
    pub window_ms: i64,
    /// Length of a step; 0 makes every tick a step.
    pub step_ms: i64,
    pub rises_near_limit: u32,
    pub rises_level2: u32,
    pub rises_level3: u32,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Saturation {
    params: SaturationParams,
    /// The mean of the last closed step.
    prev: Option<f64>,
    /// The open step (its index, `ts / step_ms`), and the sum and count of its values.
    step: Option<i64>,
    sum: f64,
    n: u32,
    /// Times of the last [`KEPT`] rises; the oldest is overwritten.
    rises: heapless::HistoryBuf<i64, KEPT>,
    /// When the open step was last seen rising (for counting it while it is open).
    open_at: i64,
}

impl Saturation {
    pub fn new(params: SaturationParams) -> Self {
        Self {
            params,
            prev: None,
            step: None,
            sum: 0.0,
            n: 0,
            rises: heapless::HistoryBuf::new(),
            open_at: 0,
        }
    }

    /// The same rise memory under today's `params`.
    pub fn adopt(self, params: SaturationParams) -> Self {
        Self { params, ..self }
    }

    /// Records the tick's value; call on every tick, anomalous or not.
    pub fn observe(&mut self, ts: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let step = ts.div_euclid(self.params.step_ms.max(1));
        if self.step != Some(step) {
            if self.open_rising() {
                self.rises.write(self.open_at);
            }
            if self.n > 0 {
                self.prev = Some(self.sum / f64::from(self.n));
            }
            self.step = Some(step);
            self.sum = 0.0;
            self.n = 0;
        }
        self.sum += value;
        self.n += 1;
        self.open_at = ts;
    }

    /// Whether the open step's mean so far is above the last closed step's.
    fn open_rising(&self) -> bool {
        self.n > 0 && self.prev.is_some_and(|p| self.sum / f64::from(self.n) > p)
    }

    fn rises_within(&self, now: i64) -> u32 {
        let since = now - self.params.window_ms;
        let closed = self
            .rises
            .oldest_ordered()
            .rev()
            .take_while(|&&t| t > since)
            .count() as u32;
        closed + u32::from(self.open_rising() && self.open_at > since)
    }

    /// The level of an anomaly the model flagged above normal at `now` with `value`, or
    /// `None` when saturation logic says it is not one.
    pub fn level(&self, now: i64, value: f64) -> Option<u8> {
        let p = &self.params;
        let rises = self.rises_within(now);
        let near_limit = value > p.pct * p.limit && rises >= p.rises_near_limit;
        if near_limit || rises > p.rises_level3 {
            Some(3)
        } else if rises > p.rises_level2 {
            Some(2)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat() -> Saturation {
        Saturation::new(SaturationParams {
            limit: 100.0,
            pct: 0.7,
            window_ms: 300_000,
            step_ms: 0,
            rises_near_limit: 2,
            rises_level2: 3,
            rises_level3: 5,
        })
    }

    /// Feeds values one per 10 s from t = 0; returns the time of the last.
    fn feed(s: &mut Saturation, values: &[f64]) -> i64 {
        let mut t = 0;
        for (i, v) in values.iter().enumerate() {
            t = i as i64 * 10_000;
            s.observe(t, *v);
        }
        t
    }

    #[test]
    fn near_the_limit_two_rises_are_level_3() {
        let mut s = sat();
        let t = feed(&mut s, &[60.0, 65.0, 71.0]);
        assert_eq!(s.level(t, 71.0), Some(3));
    }

    #[test]
    fn near_the_limit_one_rise_is_not_enough() {
        let mut s = sat();
        let t = feed(&mut s, &[71.0, 71.0, 75.0]);
        assert_eq!(s.level(t, 75.0), None);
    }

    #[test]
    fn far_from_the_limit_the_count_of_rises_decides() {
        let mut s = sat();
        let t = feed(&mut s, &[10.0, 11.0, 12.0, 13.0]);
        assert_eq!(s.level(t, 13.0), None, "3 rises: not more than 3");
        let mut s = sat();
        let t = feed(&mut s, &[10.0, 11.0, 12.0, 13.0, 14.0]);
        assert_eq!(s.level(t, 14.0), Some(2), "4 rises: level 2");
        let mut s = sat();
        let t = feed(&mut s, &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]);
        assert_eq!(s.level(t, 16.0), Some(3), "6 rises: level 3");
    }

    #[test]
    fn rises_older_than_the_window_do_not_count() {
        let mut s = sat();
        for (i, v) in [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
            .iter()
            .enumerate()
        {
            s.observe(i as i64 * 10_000, *v);
        }
        // Ten minutes later, flat since: no rise within 5 min.
        s.observe(660_000, 16.0);
        assert_eq!(s.level(660_000, 16.0), None);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut s = sat();
        s.observe(0, 1.0);
        s.observe(1, f64::NAN);
        s.observe(2, 2.0);
        assert_eq!(s.rises_within(2), 1);
    }

    /// At 1 s, a value that wobbles near the limit rises on half the ticks; counted per
    /// 30 s step it does not rise at all, and a real climb still does.
    #[test]
    fn noise_counts_per_step_not_per_tick() {
        let mut s = Saturation::new(SaturationParams {
            step_ms: 30_000,
            ..sat().params
        });
        let mut t = 0;
        for i in 0..300 {
            t = i * 1000;
            s.observe(t, 80.0 + (i % 2) as f64);
        }
        assert_eq!(s.rises_within(t), 0);
        assert_eq!(
            s.level(t, 81.0),
            None,
            "noise near the limit is not saturation"
        );
        for i in 300..400 {
            t = i * 1000;
            s.observe(t, 81.0 + (i - 300) as f64 * 0.1 + (i % 2) as f64);
        }
        assert!(s.rises_within(t) >= 2, "{}", s.rises_within(t));
        assert_eq!(s.level(t, 91.0), Some(3), "a climb near the limit is");
    }
}
