//! The work a normal host does besides serving: a nightly backup, an hourly cron job and
//! short bursts. None of it is an anomaly, none of it has a truth record; a good detector
//! learns the jobs (they recur) and shrugs off the bursts (they are small and short).
//!
//! Each host draws its schedule once: the backup's time of night, length and weight, the
//! cron job's minute, length and weight, and how often it bursts. Each run of a job varies
//! a little from the previous one (minutes for the backup, seconds for cron), drawn from a
//! random stream keyed by its day or hour; bursts come from a stream of their own, one draw
//! per burst. So the schedule is a function of simulated time: the same at any sampling
//! interval, and independent of the noise and of the anomaly schedule.

use lookout_shared::rng::Rng;

const SECOND_MS: f64 = 1_000.0;
const MINUTE_MS: f64 = 60_000.0;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The most cpu points the jobs and bursts add together, however they overlap: normal
/// work never comes near a spike (+35..50 points).
pub(super) const MAX_CPU: f64 = 25.0;

/// Random streams within a host's event key.
const BACKUP_STREAM: u64 = 1;
const CRON_STREAM: u64 = 2;
const BURST_STREAM: u64 = 3;

/// What the jobs and bursts add to a host's normal values at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Extra {
    /// cpu points, at most [`MAX_CPU`].
    pub cpu: f64,
    /// Load beyond what the cpu drives: tasks waiting on I/O (`load1` counts them).
    pub load: f64,
    /// disk points: the backup's archive, written locally, then shipped and deleted.
    pub disk: f64,
}

/// One run of a job or burst: `len` ms from `start`, `cpu` points at full strength.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: i64,
    len: i64,
    cpu: f64,
}

impl Run {
    /// From 0 at the start up to 1 over `edge_ms`, 1, and down to 0 over `edge_ms` before
    /// the end; 0 outside the run.
    fn envelope(&self, ts: i64, edge_ms: f64) -> f64 {
        let (t, len) = ((ts - self.start) as f64, self.len as f64);
        if t < 0.0 || t >= len {
            return 0.0;
        }
        let edge = edge_ms.min(len / 2.0).max(1.0);
        (t / edge).min((len - t) / edge).min(1.0)
    }

    /// How far `ts` is through the run, 0..1 (0 before, 1 after).
    fn progress(&self, ts: i64) -> f64 {
        ((ts - self.start) as f64 / self.len.max(1) as f64).clamp(0.0, 1.0)
    }
}

/// The nightly backup of one host: its usual start and shape.
#[derive(Clone, Debug)]
struct Backup {
    /// ms after midnight UTC.
    start: i64,
    len: f64,
    cpu: f64,
    io_load: f64,
    disk: f64,
    /// How long shipping and deleting the archive takes after the end.
    cleanup: f64,
}

/// One night's backup.
#[derive(Clone, Copy, Debug)]
struct Night {
    day: i64,
    run: Run,
    io_load: f64,
    disk: f64,
}

/// The hourly cron job of one host.
#[derive(Clone, Debug)]
struct Cron {
    /// ms after the full hour.
    offset: i64,
    len: f64,
    cpu: f64,
}

/// A host's jobs and bursts.
#[derive(Clone, Debug)]
pub(super) struct Events {
    /// Keys the per-night and per-hour streams.
    key: u64,
    backup: Backup,
    cron: Cron,
    /// The night and the hour last asked for, kept so each is drawn once.
    night: Option<Night>,
    hour: Option<(i64, Run)>,
    burst_rng: Rng,
    burst_gap_ms: f64,
    /// The current or next burst.
    burst: Run,
    enabled: bool,
}

impl Events {
    /// Draws the host's schedule from `rng`; the first burst comes after `start_ts`.
    pub(super) fn new(rng: &mut Rng, start_ts: i64) -> Self {
        let key = rng.next_u64();
        let len = rng.range(20.0, 40.0) * MINUTE_MS;
        // Over by 04:00, jitter and a longer night included.
        let latest = 4.0 * 60.0 * MINUTE_MS - 1.1 * len - 2.0 * MINUTE_MS;
        let backup = Backup {
            start: rng.range(62.0 * MINUTE_MS, latest) as i64,
            len,
            cpu: rng.range(10.0, 20.0),
            io_load: rng.range(0.2, 0.5),
            disk: rng.range(0.3, 1.5),
            cleanup: rng.range(3.0, 6.0) * MINUTE_MS,
        };
        let cron = Cron {
            // Done before the next hour's run starts, however long it takes.
            offset: (rng.below(58) as f64 * MINUTE_MS) as i64,
            len: rng.range(30.0, 90.0) * SECOND_MS,
            cpu: rng.range(5.0, 15.0),
        };
        let burst_gap_ms = DAY_MS as f64 / rng.range(2.0, 6.0);
        let mut burst_rng = Rng::new(key, 0, BURST_STREAM);
        let burst = next_burst(&mut burst_rng, start_ts, burst_gap_ms);
        Self {
            key,
            backup,
            cron,
            night: None,
            hour: None,
            burst_rng,
            burst_gap_ms,
            burst,
            enabled: true,
        }
    }

    /// No jobs, no bursts: the rest of the normal behaviour, unchanged.
    #[cfg(test)]
    pub(super) fn disable(&mut self) {
        self.enabled = false;
    }

    /// What the jobs and bursts add at `ts`; call with increasing `ts`.
    pub(super) fn step(&mut self, ts: i64) -> Extra {
        if !self.enabled {
            return Extra::default();
        }
        let night = self.night(ts.div_euclid(DAY_MS));
        let backup = night.run.envelope(ts, 30.0 * SECOND_MS);
        let written = night.run.progress(ts);
        let shipped = (ts - night.run.start - night.run.len) as f64 / self.backup.cleanup;
        let cron = self.hour(ts.div_euclid(HOUR_MS));
        while ts >= self.burst.start + self.burst.len {
            let end = self.burst.start + self.burst.len;
            self.burst = next_burst(&mut self.burst_rng, end, self.burst_gap_ms);
        }
        let cpu = night.run.cpu * backup
            + cron.cpu * cron.envelope(ts, 2.0 * SECOND_MS)
            + self.burst.cpu * self.burst.envelope(ts, 2.0 * SECOND_MS);
        Extra {
            cpu: cpu.min(MAX_CPU),
            load: night.io_load * backup,
            disk: night.disk * written * (1.0 - shipped.clamp(0.0, 1.0)),
        }
    }

    /// The backup of `day` (days since the Unix epoch): the host's usual time ± 2 min,
    /// its usual length, cpu and archive ± 10 %.
    fn night(&mut self, day: i64) -> Night {
        if let Some(night) = self.night
            && night.day == day
        {
            return night;
        }
        let b = &self.backup;
        let mut rng = Rng::new(self.key, day as usize, BACKUP_STREAM);
        let jitter = rng.range(-2.0, 2.0) * MINUTE_MS;
        let night = Night {
            day,
            run: Run {
                start: day * DAY_MS + b.start + jitter as i64,
                len: (b.len * rng.range(0.9, 1.1)) as i64,
                cpu: b.cpu * rng.range(0.9, 1.1),
            },
            io_load: b.io_load * rng.range(0.9, 1.1),
            disk: b.disk * rng.range(0.9, 1.1),
        };
        self.night = Some(night);
        night
    }

    /// The cron run of `hour` (hours since the Unix epoch): the host's minute, 0..3 s of
    /// start-up delay, its usual length and cpu ± 20 %.
    fn hour(&mut self, hour: i64) -> Run {
        if let Some((h, run)) = self.hour
            && h == hour
        {
            return run;
        }
        let c = &self.cron;
        let mut rng = Rng::new(self.key, hour as usize, CRON_STREAM);
        let run = Run {
            start: hour * HOUR_MS + c.offset + (rng.range(0.0, 3.0) * SECOND_MS) as i64,
            len: (c.len * rng.range(0.8, 1.2)) as i64,
            cpu: c.cpu * rng.range(0.8, 1.2),
        };
        self.hour = Some((hour, run));
        run
    }
}

/// The burst after `from`: an exponential gap (bursts are a Poisson process), 5..40 s,
/// +8..25 cpu points.
fn next_burst(rng: &mut Rng, from: i64, gap_ms: f64) -> Run {
    Run {
        start: from + rng.exponential(gap_ms) as i64,
        len: (rng.range(5.0, 40.0) * SECOND_MS) as i64,
        cpu: rng.range(8.0, 25.0),
    }
}
