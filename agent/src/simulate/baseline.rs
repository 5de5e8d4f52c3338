//! The normal behaviour of one simulated host, without anomalies.
//!
//! Modelled on an ECS host sampled every second:
//! - `cpu_util`: per-host mean plus a daily cycle, a slow bounded random walk and AR(1)
//!   noise (correlated from one second to the next, like real CPU readings);
//! - `system_load1`: follows `cpu_util / 25` through a one-minute moving average, plus noise;
//! - `mem_util`: per-host level with slow drift, a faint daily cycle and small noise;
//! - `disk_util`: fills slowly (a fraction of a percent a day) with tiny noise;
//! - `net_err_util`: near zero, with rare tiny blips that are *not* anomalies.
//!
//! Every rate is expressed in simulated seconds, so the series look alike whatever the
//! sampling interval.

use super::{Metric, N_METRICS};
use lookout_shared::rng::Rng;

const DAY_MS: i64 = 86_400_000;
const DAY_S: f64 = 86_400.0;
const HOUR_S: f64 = 3_600.0;

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
    /// Time of day (ms after midnight UTC) when the daily cycle peaks.
    peak_ms: i64,

    cpu_mean: f64,
    cpu_amplitude: f64,
    cpu_drift: Drift,
    cpu_noise: Ar1,

    /// One-minute moving average of `cpu / 25`; `None` until the first tick.
    load_avg: Option<f64>,
    load_alpha: f64,
    load_noise: Ar1,

    mem_mean: f64,
    mem_amplitude: f64,
    mem_drift: Drift,
    mem_noise: Ar1,

    disk_start: f64,
    disk_per_ms: f64,
    disk_noise: Ar1,

    err_mean: f64,
    blip_probability: f64,
    blip_left: u32,
    blip_size: f64,
}

impl Baseline {
    pub(super) fn new(mut rng: Rng, start_ts: i64, interval_ms: i64) -> Self {
        let dt_s = interval_ms as f64 / 1000.0;
        let r = &mut rng;
        let peak_ms = (r.range(12.0, 17.0) * HOUR_S * 1000.0) as i64;

        let cpu_mean = r.range(28.0, 42.0);
        // Keep the nightly trough near 18 % or more, so that a drop to ~0 stays visible.
        let cpu_amplitude = r.range(10.0, 15.0).min(cpu_mean - 18.0);
        let cpu_drift = Drift::new(1.5, 4.0, dt_s, r);
        let cpu_noise = Ar1::new(2.0, 15.0, dt_s, r);

        let load_alpha = 1.0 - (-dt_s / 60.0).exp();
        let load_noise = Ar1::new(0.08, 15.0, dt_s, r);

        let mem_mean = r.range(45.0, 65.0);
        let mem_amplitude = r.range(1.0, 3.0);
        let mem_drift = Drift::new(1.0, 5.0, dt_s, r);
        let mem_noise = Ar1::new(0.3, 5.0, dt_s, r);

        let disk_start = r.range(20.0, 60.0);
        let disk_per_ms = r.range(0.3, 0.7) / (DAY_S * 1000.0);
        let disk_noise = Ar1::new(0.03, 3.0, dt_s, r);

        let err_mean = r.range(0.01, 0.03);
        // About one blip per 20 simulated minutes.
        let blip_probability = (dt_s / 1200.0).min(1.0);

        Self {
            rng,
            start_ts,
            peak_ms,
            cpu_mean,
            cpu_amplitude,
            cpu_drift,
            cpu_noise,
            load_avg: None,
            load_alpha,
            load_noise,
            mem_mean,
            mem_amplitude,
            mem_drift,
            mem_noise,
            disk_start,
            disk_per_ms,
            disk_noise,
            err_mean,
            blip_probability,
            blip_left: 0,
            blip_size: 0.0,
        }
    }

    /// The values at `ts`, one per [`Metric`]; call once per tick with increasing `ts`.
    pub(super) fn step(&mut self, ts: i64) -> [f64; N_METRICS] {
        let rng = &mut self.rng;
        let phase = (ts - self.peak_ms).rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        let cycle = (std::f64::consts::TAU * phase).cos();

        let cpu = (self.cpu_mean
            + self.cpu_amplitude * cycle
            + self.cpu_drift.step(rng)
            + self.cpu_noise.step(rng))
        .clamp(0.0, 100.0);

        let target = cpu / 25.0;
        let avg = match self.load_avg {
            Some(avg) => avg + self.load_alpha * (target - avg),
            None => target,
        };
        self.load_avg = Some(avg);
        let load = (avg + self.load_noise.step(rng)).max(0.0);

        let mem = (self.mem_mean
            + self.mem_amplitude * cycle
            + self.mem_drift.step(rng)
            + self.mem_noise.step(rng))
        .clamp(0.0, 100.0);

        let elapsed_ms = (ts - self.start_ts).max(0) as f64;
        let disk_level = (self.disk_start + self.disk_per_ms * elapsed_ms).min(95.0);
        let disk = (disk_level + self.disk_noise.step(rng)).clamp(0.0, 100.0);

        if self.blip_left == 0 && rng.uniform() < self.blip_probability {
            self.blip_left = 1 + (rng.next_u64() % 5) as u32;
            self.blip_size = rng.range(0.1, 0.5);
        }
        let blip = if self.blip_left > 0 {
            self.blip_left -= 1;
            self.blip_size
        } else {
            0.0
        };
        let err = rng.exponential(self.err_mean) + blip;

        let mut values = [0.0; N_METRICS];
        values[Metric::Cpu as usize] = cpu;
        values[Metric::Mem as usize] = mem;
        values[Metric::Disk as usize] = disk;
        values[Metric::NetErr as usize] = err;
        values[Metric::Load as usize] = load;
        values
    }
}
