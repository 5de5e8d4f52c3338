//! Time both binaries compute with: the wall clock, civil dates, and retry backoff.
//!
//! Civil dates are proleptic Gregorian in UTC, from Howard Hinnant's `days_from_civil`
//! algorithm: exact for any year, no tables, no time-zone database (a device may have
//! none). Rules' event times, replay's time axis, the bridge's templates and silences all
//! read and write dates through these few functions, so they agree to the day.

use std::time::Duration;

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// ±25 % jitter for backoff delays, so that a fleet does not retry in lockstep after a
/// broker or a webhook comes back. A tiny xorshift seeded from the caller and the clock;
/// not for anything secret.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Self((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t) | 1)
    }

    /// A seed from a name (a host, a target).
    pub fn from_name(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
        }
        Self::new(h)
    }

    pub fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let f = 0.75 + (self.0 % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }
}

/// Milliseconds per day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date. `month` is 1–12; `day` is not
/// checked against the month (see [`days_in_month`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1–12) of `year`; 0 for a month that does not exist.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        _ => 0,
    }
}

/// A UTC instant split into its civil parts, for formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Civil {
    /// The parts of Unix milliseconds `ms` (any sign).
    pub fn from_ms(ms: i64) -> Self {
        let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
        let in_day = ms.rem_euclid(MS_PER_DAY);
        let secs = (in_day / 1000) as u32;
        Self {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
            millis: (in_day % 1000) as u32,
        }
    }

    /// Unix milliseconds of these parts (no range checks: callers validate first).
    pub fn to_ms(&self) -> i64 {
        let secs = days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        secs * 1000 + i64::from(self.millis)
    }
}

/// Exponential backoff with jitter between retries: `min`, doubling up to `max`, each
/// delay jittered ±25 % so that a fleet does not retry in lockstep. One type for every
/// retry loop (MQTT reconnects of the agent, the bridge and its MQTT target; deliveries),
/// because a loop that forgets the cap or the jitter is how a broker gets stampeded.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// `max` below `min` is taken as `min`. `name` seeds the jitter (a host, a target).
    pub fn new(min: Duration, max: Duration, name: &str) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
            jitter: Jitter::from_name(name),
        }
    }

    /// The delay to wait now (jittered); the one after it is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        self.jitter.apply(d)
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        // `date -u -d 2018-04-30T14:50:00Z +%s` = 1525099800
        let c = Civil {
            year: 2018,
            month: 4,
            day: 30,
            hour: 14,
            minute: 50,
            second: 0,
            millis: 0,
        };
        assert_eq!(c.to_ms(), 1_525_099_800_000);
        assert_eq!(Civil::from_ms(1_525_099_800_123).millis, 123);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=days_in_month(y, m)).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2023, 13), 0);
        let before_epoch = Civil::from_ms(-1);
        assert_eq!(
            (before_epoch.year, before_epoch.hour, before_epoch.millis),
            (1969, 23, 999)
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350), "t");
        let within = |d: Duration, base: u64| d >= ms(base * 3 / 4) && d <= ms(base * 5 / 4);
        assert!(within(b.next_delay(), 100));
        assert!(within(b.next_delay(), 200));
        assert!(within(b.next_delay(), 350));
        assert!(within(b.next_delay(), 350));
        b.reset();
        assert!(within(b.next_delay(), 100));
        let mut inverted = Backoff::new(ms(100), ms(10), "t");
        assert!(within(inverted.next_delay(), 100));
        assert!(within(inverted.next_delay(), 100));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut j = Jitter::from_name("h");
        for _ in 0..1000 {
            let d = j.apply(Duration::from_millis(1000));
            assert!(
                d >= Duration::from_millis(750) && d <= Duration::from_millis(1250),
                "{d:?}"
            );
        }
    }
}
