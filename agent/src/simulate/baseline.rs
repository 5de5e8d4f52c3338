//! The normal behaviour of one simulated host, without anomalies.
//!
//! Modelled on an ECS host sampled every second:
//! - `cpu_util`: a per-host nightly floor plus daytime activity following a daily cycle,
//!   both lower at weekends; a slow bounded random walk; AR(1) noise (correlated from one
//!   second to the next, like real CPU readings); and the host's jobs and bursts
//!   ([`super::events`]: nightly backup, hourly cron, a few short bursts a day);
//! - `system_load1`: follows `cpu_util / 25`, plus the backup's I/O wait, through a
//!   one-minute moving average, plus noise;
//! - `mem_util`: per-host level with slow drift, a faint daily cycle, a small GC-like
//!   sawtooth (a slow rise, then a sudden release) and small noise;
//! - `disk_util`: fills slowly (a fraction of a percent a day) with tiny noise; the nightly
//!   backup's archive adds a little, until it is shipped and deleted;
//! - `net_err_util`: near zero, with rare tiny blips (1-5 s) that are *not* anomalies;
//!   both lower at weekends.
//!
//! Every rate is expressed in simulated seconds, so the series look alike whatever the
//! sampling interval. Calendar effects use the simulated UTC time of `ts`.

use super::events::Events;
use super::{Metric, N_METRICS};
use lookout_shared::rng::Rng;

const DAY_MS: i64 = 86_400_000;
const DAY_S: f64 = 86_400.0;
const HOUR_S: f64 = 3_600.0;

/// How far `ts` is into the weekend, 0..1: 0 from Monday 04:00 to Friday midnight, 1 from
/// Saturday 04:00 to Sunday midnight, smooth ramps in the small hours between, when hosts
/// idle anyway.
pub(super) fn weekend(ts: i64) -> f64 {
    let day = ts.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday; 0 is Monday.
    let weekday = (day + 3).rem_euclid(7);
    let x = (ts.rem_euclid(DAY_MS) as f64 / (4.0 * HOUR_S * 1000.0)).min(1.0);
    let ramp = x * x * (3.0 - 2.0 * x);
    match weekday {
        5 => ramp,
        6 => 1.0,
        0 => 1.0 - ramp,
        _ => 0.0,
    }
}

/// A GC-like sawtooth: rises by `height` over `period_ms`, then drops back at once.
#[derive(Clone, Debug)]
struct Sawtooth {
    height: f64,
    period_ms: f64,
    phase: f64,
}

impl Sawtooth {
    /// Centred on zero.
    fn at(&self, ts: i64) -> f64 {
        let x = (ts as f64 / self.period_ms + self.phase).fract();
        self.height * (x - 0.5)
    }
}

/// Zero-mean AR(1) noise with a stationary standard deviation and a correlation time.
#[derive(Clone, Debug)]
struct Ar1 {
    phi: f64,
    innovation_sd: f64,
    x: f64,
}

impl Ar1 {
    fn new(sd: f64, tau_s: f64, dt_s: f64, rng: &mut Rng) -> Self {
        let phi = (-dt_s / tau_s).exp();
        Self {
            phi,
            innovation_sd: sd * (1.0 - phi * phi).sqrt(),
            x: sd * rng.normal(),
        }
    }

    fn step(&mut self, rng: &mut Rng) -> f64 {
        self.x = self.phi * self.x + self.innovation_sd * rng.normal();
        self.x
    }
}

/// A random walk reflected into `[-bound, bound]`: drift that wanders but never runs away.
#[derive(Clone, Debug)]
struct Drift {
    step_sd: f64,
    bound: f64,
    x: f64,
}

impl Drift {
    /// `per_hour` is the typical distance walked in one simulated hour.
    fn new(per_hour: f64, bound: f64, dt_s: f64, rng: &mut Rng) -> Self {
        Self {
            step_sd: per_hour * (dt_s / HOUR_S).sqrt(),
            bound,
            x: rng.range(-bound, bound) * 0.5,
        }
    }

    fn step(&mut self, rng: &mut Rng) -> f64 {
        let b = self.bound;
        self.x += self.step_sd * rng.normal();
        if self.x > b {
            self.x = 2.0 * b - self.x;
        }
        if self.x < -b {
            self.x = -2.0 * b - self.x;
        }
        self.x = self.x.clamp(-b, b);
        self.x
    }
}

#[derive(Clone, Debug)]
pub(super) struct Baseline {
    rng: Rng,
    start_ts: i64,
    /// Simulated seconds per tick.
    dt_s: f64,
    /// Time of day (ms after midnight UTC) when the daily cycle peaks.
    peak_ms: i64,

    cpu_mean: f64,
    cpu_amplitude: f64,
    /// At full weekend, the nightly floor and the daytime activity shrink by these
    /// fractions.
    weekend_floor: f64,
    weekend_activity: f64,
    cpu_drift: Drift,
    cpu_noise: Ar1,

    /// One-minute moving average of `cpu / 25`; `None` until the first tick.
    load_avg: Option<f64>,
    load_alpha: f64,
    load_noise: Ar1,

    mem_mean: f64,
    mem_amplitude: f64,
    mem_drift: Drift,
    mem_sawtooth: Sawtooth,
    mem_noise: Ar1,

    disk_start: f64,
    disk_per_ms: f64,
    disk_noise: Ar1,

    err_mean: f64,
    blip_probability: f64,
    /// Ticks the current blip lasts still.
    blip_left: u32,
    blip_size: f64,

    events: Events,
}

impl Baseline {
    pub(super) fn new(mut rng: Rng, start_ts: i64, interval_ms: i64) -> Self {
        let dt_s = interval_ms as f64 / 1000.0;
        let r = &mut rng;
        let peak_ms = (r.range(12.0, 17.0) * HOUR_S * 1000.0) as i64;

        let cpu_mean = r.range(28.0, 42.0);
        // Keep the nightly trough near 18 % or more, so that a drop to ~0 stays visible.
        let cpu_amplitude = r.range(10.0, 15.0).min(cpu_mean - 18.0);
        let weekend_floor = r.range(0.05, 0.15);
        let weekend_activity = r.range(0.35, 0.6);
        let cpu_drift = Drift::new(1.5, 4.0, dt_s, r);
        let cpu_noise = Ar1::new(2.0, 15.0, dt_s, r);

        let load_alpha = 1.0 - (-dt_s / 60.0).exp();
        let load_noise = Ar1::new(0.08, 15.0, dt_s, r);

        let mem_mean = r.range(45.0, 65.0);
        let mem_amplitude = r.range(1.0, 3.0);
        let mem_drift = Drift::new(1.0, 5.0, dt_s, r);
        let mem_sawtooth = Sawtooth {
            height: r.range(0.5, 1.5),
            period_ms: r.range(5.0, 20.0) * 60_000.0,
            phase: r.uniform(),
        };
        let mem_noise = Ar1::new(0.3, 5.0, dt_s, r);

        let disk_start = r.range(20.0, 60.0);
        let disk_per_ms = r.range(0.3, 0.7) / (DAY_S * 1000.0);
        let disk_noise = Ar1::new(0.03, 3.0, dt_s, r);

        let err_mean = r.range(0.01, 0.03);
        // About one blip per 20 simulated minutes.
        let blip_probability = (dt_s / 1200.0).min(1.0);
        let events = Events::new(r, start_ts);

        Self {
            rng,
            start_ts,
            dt_s,
            peak_ms,
            cpu_mean,
            cpu_amplitude,
            weekend_floor,
            weekend_activity,
            cpu_drift,
            cpu_noise,
            load_avg: None,
            load_alpha,
            load_noise,
            mem_mean,
            mem_amplitude,
            mem_drift,
            mem_sawtooth,
            mem_noise,
            disk_start,
            disk_per_ms,
            disk_noise,
            err_mean,
            blip_probability,
            blip_left: 0,
            blip_size: 0.0,
            events,
        }
    }

    /// No jobs, no bursts: the rest of the normal behaviour, unchanged.
    #[cfg(test)]
    pub(super) fn without_events(mut self) -> Self {
        self.events.disable();
        self
    }

    /// The values at `ts`, one per [`Metric`]; call once per tick with increasing `ts`.
    pub(super) fn step(&mut self, ts: i64) -> [f64; N_METRICS] {
        let extra = self.events.step(ts);
        let rng = &mut self.rng;
        let phase = (ts - self.peak_ms).rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        let cycle = (std::f64::consts::TAU * phase).cos();
        let weekend = weekend(ts);

        // The floor the host idles at by night, and the activity on top by day.
        let floor = (self.cpu_mean - self.cpu_amplitude) * (1.0 - weekend * self.weekend_floor);
        let activity = self.cpu_amplitude * (1.0 + cycle) * (1.0 - weekend * self.weekend_activity);
        let cpu =
            (floor + activity + self.cpu_drift.step(rng) + self.cpu_noise.step(rng) + extra.cpu)
                .clamp(0.0, 100.0);

        let target = cpu / 25.0 + extra.load;
        let avg = match self.load_avg {
            Some(avg) => avg + self.load_alpha * (target - avg),
            None => target,
        };
        self.load_avg = Some(avg);
        let load = (avg + self.load_noise.step(rng)).max(0.0);

        let mem = (self.mem_mean
            + self.mem_amplitude * cycle
            + self.mem_drift.step(rng)
            + self.mem_sawtooth.at(ts)
            + self.mem_noise.step(rng))
        .clamp(0.0, 100.0);

        let elapsed_ms = (ts - self.start_ts).max(0) as f64;
        let disk_level = (self.disk_start + self.disk_per_ms * elapsed_ms).min(95.0);
        let disk = (disk_level + extra.disk + self.disk_noise.step(rng)).clamp(0.0, 100.0);

        let quiet = 1.0 - 0.4 * weekend;
        if self.blip_left == 0 && rng.uniform() < self.blip_probability * quiet {
            let seconds = 1 + rng.next_u64() % 5;
            self.blip_left = (seconds as f64 / self.dt_s).ceil().max(1.0) as u32;
            self.blip_size = rng.range(0.1, 0.5);
        }
        let blip = if self.blip_left > 0 {
            self.blip_left -= 1;
            self.blip_size
        } else {
            0.0
        };
        let err = rng.exponential(self.err_mean * quiet) + blip;

        let mut values = [0.0; N_METRICS];
        values[Metric::Cpu as usize] = cpu;
        values[Metric::Mem as usize] = mem;
        values[Metric::Disk as usize] = disk;
        values[Metric::NetErr as usize] = err;
        values[Metric::Load as usize] = load;
        values
    }
}
