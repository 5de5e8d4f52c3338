use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

const START: i64 = 1_700_000_000_000;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn dur(s: &str) -> HumanDuration {
    s.parse().unwrap()
}

fn params(every: &str, first_after: &str) -> SimParams {
    SimParams {
        anomaly_every: dur(every),
        first_anomaly_after: dur(first_after),
        ..SimParams::default()
    }
}

fn quiet(p: &SimParams) -> SimParams {
    SimParams {
        anomaly_every: dur("0s"),
        ..p.clone()
    }
}

/// Runs host `index` for `span` of simulated time; returns one row of values per tick and
/// the truth records.
fn run(
    index: usize,
    p: &SimParams,
    interval: i64,
    span: i64,
) -> (Vec<[f64; N_METRICS]>, Vec<SimTruth>) {
    run_host(SimHost::new(index, p, START, interval), interval, span)
}

/// [`run`] for a host as given.
fn run_host(mut host: SimHost, interval: i64, span: i64) -> (Vec<[f64; N_METRICS]>, Vec<SimTruth>) {
    let mut frame = Frame::with_capacity(N_METRICS);
    let mut truth = Vec::new();
    let mut rows = Vec::new();
    let mut ts = START;
    while ts < START + span {
        frame.clear(ts);
        host.tick(ts, &mut frame, &mut truth);
        assert_eq!(frame.samples.len(), N_METRICS);
        let mut row = [0.0; N_METRICS];
        for (i, dim) in DIMS.iter().enumerate() {
            row[i] = frame.get(CHART, dim).unwrap();
        }
        rows.push(row);
        ts += interval;
    }
    (rows, truth)
}

/// The host without its jobs and bursts: the rest of its normal behaviour and its
/// anomalies unchanged.
fn without_events(mut host: SimHost) -> SimHost {
    host.baseline = host.baseline.without_events();
    host
}

/// Weight 1 for `kinds`, 0 for the others, set by name in a `[simulate.kind_weights]` table.
fn only(kinds: &[Kind]) -> KindWeights {
    let table: String = Kind::ALL
        .iter()
        .map(|k| format!("{} = {}\n", k.as_str(), u8::from(kinds.contains(k))))
        .collect();
    toml::from_str(&table).unwrap()
}

fn kind_of(t: &SimTruth) -> Kind {
    *Kind::ALL.iter().find(|k| k.as_str() == t.kind).unwrap()
}

fn metric_index(t: &SimTruth) -> usize {
    DIMS.iter().position(|d| *d == t.metric).unwrap()
}

fn tick_of(ts: i64, interval: i64) -> usize {
    ((ts - START) / interval) as usize
}

/// What the scorer sees: first differences, averaged over 3 ticks.
fn smoothed_diffs(rows: &[[f64; N_METRICS]], m: usize) -> Vec<f64> {
    let d: Vec<f64> = rows.windows(2).map(|w| w[1][m] - w[0][m]).collect();
    let mut out = vec![0.0; rows.len()];
    for t in 3..rows.len() {
        out[t] = (d[t - 1] + d[t - 2] + d[t - 3]) / 3.0;
    }
    out
}

#[test]
fn the_same_seed_gives_identical_series() {
    let p = params("10m", "5m");
    let a = run(3, &p, SECOND, 6 * HOUR);
    let b = run(3, &p, SECOND, 6 * HOUR);
    assert!(!a.1.is_empty());
    assert_eq!(a, b);
}

#[test]
fn different_hosts_and_seeds_give_different_series() {
    let p = params("10m", "5m");
    let one = run(1, &p, SECOND, HOUR);
    let two = run(2, &p, SECOND, HOUR);
    let other_seed = run(
        1,
        &SimParams {
            seed: 2,
            ..p.clone()
        },
        SECOND,
        HOUR,
    );
    for m in 0..N_METRICS {
        let differ = |x: &Vec<[f64; N_METRICS]>| x.iter().zip(&one.0).any(|(a, b)| a[m] != b[m]);
        assert!(differ(&two.0), "{} equal on sim-1 and sim-2", DIMS[m]);
        assert!(differ(&other_seed.0), "{} equal for seeds 1 and 2", DIMS[m]);
    }
    assert_ne!(one.1, two.1);
    let mean_cpu =
        |rows: &[[f64; N_METRICS]]| rows.iter().map(|r| r[0]).sum::<f64>() / rows.len() as f64;
    assert!((mean_cpu(&one.0) - mean_cpu(&two.0)).abs() > 0.1);
}

#[test]
fn values_stay_in_range_over_48_simulated_hours() {
    let p = params("20m", "10m");
    for index in [1, 2, 3] {
        let (rows, truth) = run(index, &p, SECOND, 2 * DAY);
        assert!(truth.len() > 50, "only {} injections", truth.len());
        for row in &rows {
            assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
            for v in &row[..3] {
                assert!((0.0..=100.0).contains(v), "{row:?}");
            }
            assert!(row[3] >= 0.0 && row[4] >= 0.0, "{row:?}");
        }
    }
}

#[test]
fn normal_behaviour_looks_like_an_ecs_host() {
    let p = quiet(&SimParams::default());
    for index in [1, 2, 3, 4] {
        let (rows, truth) = run(index, &p, SECOND, 2 * DAY);
        assert!(truth.is_empty());
        let col = |m: usize| rows.iter().map(|r| r[m]).collect::<Vec<f64>>();
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let (cpu, mem, disk, err, load) = (col(0), col(1), col(2), col(3), col(4));

        assert!(
            (20.0..=45.0).contains(&mean(&cpu)),
            "cpu mean {}",
            mean(&cpu)
        );
        // A daily cycle: hourly means swing by 20 points or more.
        let hourly: Vec<f64> = cpu.chunks(3600).map(mean).collect();
        let swing = hourly.iter().cloned().fold(f64::MIN, f64::max)
            - hourly.iter().cloned().fold(f64::MAX, f64::min);
        assert!((15.0..=45.0).contains(&swing), "daily swing {swing}");
        // Noise is autocorrelated, not white.
        let dev: Vec<f64> = cpu.windows(61).map(|w| w[30] - mean(w)).collect();
        let r1 = dev.windows(2).map(|w| w[0] * w[1]).sum::<f64>()
            / dev.iter().map(|x| x * x).sum::<f64>();
        assert!(r1 > 0.6, "lag-1 autocorrelation {r1}");

        // Load follows cpu / 25.
        let ratio = mean(&load) / mean(&cpu);
        assert!((0.035..=0.045).contains(&ratio), "load/cpu {ratio}");

        assert!(
            (35.0..=75.0).contains(&mean(&mem)),
            "mem mean {}",
            mean(&mem)
        );
        let rise = mean(&disk[disk.len() - 3600..]) - mean(&disk[..3600]);
        assert!((0.4..=1.5).contains(&rise), "disk rose {rise} in 2 days");

        assert!(mean(&err) < 0.05, "net_err mean {}", mean(&err));
        let blips = err.iter().filter(|&&e| e > 0.1).count();
        assert!(blips > 0, "no blips");
        assert!(err.iter().all(|&e| e < 1.5), "net_err blip too large");
    }
}

#[test]
fn the_first_anomaly_is_not_before_first_anomaly_after() {
    let p = SimParams::default();
    let warm_up = 40 * MINUTE;
    for index in 1..=20 {
        let mut host = SimHost::new(index, &p, START, SECOND);
        let mut frame = Frame::with_capacity(N_METRICS);
        let mut truth = Vec::new();
        let mut ts = START;
        while truth.is_empty() && ts < START + DAY {
            frame.clear(ts);
            host.tick(ts, &mut frame, &mut truth);
            ts += SECOND;
        }
        assert_eq!(truth.len(), 1, "sim-{index} had no anomaly in a day");
        assert!(truth[0].start >= START + warm_up, "{:?}", truth[0]);
    }
}

#[test]
fn injections_over_three_days_match_anomaly_every_and_cover_every_kind() {
    let p = SimParams::default();
    let (_, truth) = run(1, &p, SECOND, 3 * DAY);
    let expected = (3 * DAY - 40 * MINUTE) as f64 / (45 * MINUTE) as f64;
    let n = truth.len() as f64;
    assert!(
        n > expected / 2.0 && n < expected * 2.0,
        "{n} injections, expected about {expected:.0}"
    );
    let kinds: BTreeSet<&str> = truth.iter().map(|t| t.kind.as_str()).collect();
    let all: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, all);
    let metrics: BTreeSet<&str> = truth.iter().map(|t| t.metric.as_str()).collect();
    assert_eq!(metrics, DIMS.into_iter().collect());
    assert!(truth.iter().all(|t| t.host == "sim-1"));
}

#[test]
fn anomalies_change_only_the_injected_metric_on_the_injected_ticks() {
    let p = params("10m", "10m");
    for index in [1, 2] {
        let (rows, truth) = run(index, &p, SECOND, DAY);
        let (clean, none) = run(index, &quiet(&p), SECOND, DAY);
        assert!(none.is_empty());
        assert!(truth.len() > 50);
        let mut affected = vec![None; rows.len()];
        for t in &truth {
            for slot in
                &mut affected[tick_of(t.start, SECOND)..=tick_of(t.end, SECOND).min(rows.len() - 1)]
            {
                assert!(slot.is_none(), "overlapping injections");
                *slot = Some(t);
            }
        }
        for (i, (row, clean_row)) in rows.iter().zip(&clean).enumerate() {
            match affected[i] {
                None => assert_eq!(row, clean_row, "tick {i} differs outside injections"),
                Some(t) => {
                    let m = metric_index(t);
                    for other in (0..N_METRICS).filter(|&o| o != m) {
                        assert_eq!(
                            row[other], clean_row[other],
                            "{} changed by {t:?}",
                            DIMS[other]
                        );
                    }
                    if t.kind == "stuck" {
                        let s = tick_of(t.start, SECOND);
                        assert_eq!(row[m], rows[s - 1][m], "{t:?} not frozen at tick {i}");
                    } else {
                        assert_ne!(row[m], clean_row[m], "{t:?} left tick {i} untouched");
                    }
                }
            }
        }
        // A stuck metric differs from what it would have been.
        for t in truth.iter().filter(|t| t.kind == "stuck") {
            let (s, e, m) = (
                tick_of(t.start, SECOND),
                tick_of(t.end, SECOND),
                metric_index(t),
            );
            assert!((s..=e).any(|i| rows[i][m] != clean[i][m]), "{t:?}");
        }
    }
}

#[test]
fn truth_records_are_consistent_with_the_planned_duration() {
    for interval in [SECOND, 10 * SECOND] {
        let p = params("15m", "10m");
        let d = 3 * MINUTE;
        let (_, truth) = run(5, &p, interval, 3 * DAY);
        assert!(truth.len() > 100);
        for t in &truth {
            assert!(t.start < t.end, "{t:?}");
            assert_eq!((t.end - t.start) % interval, 0, "{t:?}");
            let span = t.end - t.start + interval;
            let (lo, hi) = kind_of(t).duration_factor();
            let (lo, hi) = ((d as f64 * lo) as i64, (d as f64 * hi) as i64);
            assert!(
                span >= lo - interval && span <= hi + interval,
                "{t:?} lasts {span} ms"
            );
        }
        for w in truth.windows(2) {
            assert!(
                w[1].start >= w[0].end + d,
                "{:?} too soon after {:?}",
                w[1],
                w[0]
            );
        }
    }
}

#[test]
fn anomaly_every_zero_or_zero_weights_disable_injection() {
    let off = params("0s", "0s");
    assert!(run(1, &off, 10 * SECOND, 3 * DAY).1.is_empty());
    let no_kinds = SimParams {
        kind_weights: only(&[]),
        ..params("5m", "0s")
    };
    assert!(run(1, &no_kinds, 10 * SECOND, DAY).1.is_empty());
    for kind in Kind::ALL {
        let one_kind = SimParams {
            kind_weights: only(&[kind]),
            ..params("5m", "0s")
        };
        let (_, truth) = run(1, &one_kind, 10 * SECOND, DAY);
        assert!(truth.len() > 20, "{} injections of {kind:?}", truth.len());
        assert!(truth.iter().all(|t| t.kind == kind.as_str()));
    }
}

#[test]
fn spikes_level_shifts_drops_and_dropouts_stand_out_from_the_noise_at_onset() {
    let p = params("10m", "10m");
    for index in [1, 2, 3] {
        // Without the jobs and bursts, whose edges are as sharp as a level shift's by design.
        let host = |p: &SimParams| without_events(SimHost::new(index, p, START, SECOND));
        let (rows, truth) = run_host(host(&p), SECOND, DAY);
        let (clean, _) = run_host(host(&quiet(&p)), SECOND, DAY);
        for m in 0..N_METRICS {
            // The scorer's threshold: the largest smoothed difference of the noise.
            let threshold = smoothed_diffs(&clean, m)
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            let seen = smoothed_diffs(&rows, m);
            for t in truth.iter().filter(|t| {
                metric_index(t) == m
                    && ["spike", "level_shift", "drop", "dropout"].contains(&t.kind.as_str())
            }) {
                let s = tick_of(t.start, SECOND);
                let onset = seen[s..s + 3].iter().fold(0.0f64, |a, v| a.max(v.abs()));
                assert!(
                    onset > 1.5 * threshold,
                    "{t:?}: onset {onset:.3} vs noise max {threshold:.3}"
                );
            }
        }
    }
}

/// Swings of `xs` between above `mid + band` and below `mid - band` (each change counts).
fn swings(xs: &[f64], mid: f64, band: f64) -> usize {
    let mut side = 0;
    let mut n = 0;
    for &x in xs {
        let now = if x > mid + band {
            1
        } else if x < mid - band {
            -1
        } else {
            side
        };
        if side != 0 && now != side {
            n += 1;
        }
        side = now;
    }
    n
}

#[test]
fn climbs_oscillations_and_dropouts_show_on_their_metric_within_their_window() {
    let p = SimParams {
        kind_weights: only(&[Kind::Climb, Kind::Oscillation, Kind::Dropout]),
        ..params("10m", "10m")
    };
    let mut seen = BTreeSet::new();
    for index in [1, 2, 3] {
        let (rows, truth) = run(index, &p, SECOND, DAY);
        let (clean, _) = run(index, &quiet(&p), SECOND, DAY);
        for t in truth.iter().filter(|t| tick_of(t.end, SECOND) < rows.len()) {
            let (s, e, m) = (
                tick_of(t.start, SECOND),
                tick_of(t.end, SECOND),
                metric_index(t),
            );
            let got: Vec<f64> = rows[s..=e].iter().map(|r| r[m]).collect();
            let normal: Vec<f64> = clean[s..=e].iter().map(|r| r[m]).collect();
            let diff: Vec<f64> = got.iter().zip(&normal).map(|(g, n)| g - n).collect();
            let n = got.len();
            match kind_of(t) {
                Kind::Climb => {
                    assert!(diff.iter().all(|&d| d > 0.0), "{t:?} below normal");
                    // Rises steadily: a fifth of the way in, less than half way up.
                    let most = diff.iter().cloned().fold(0.0, f64::max);
                    assert!(diff[n / 5] < 0.5 * most, "{t:?}: {diff:?}");
                    let tail = &got[n * 4 / 5..];
                    let tail_mean = tail.iter().sum::<f64>() / tail.len() as f64;
                    if DIMS[m] == "system_load1" {
                        assert!(tail.iter().all(|&v| v > 5.0), "{t:?}: {tail:?}");
                    } else {
                        assert!(tail_mean > 93.0, "{t:?} tops out at {tail_mean}");
                    }
                }
                Kind::Oscillation => {
                    let hi = diff.iter().cloned().fold(f64::MIN, f64::max);
                    let lo = diff.iter().cloned().fold(f64::MAX, f64::min);
                    let least = [10.0, 4.0, 3.0, 1.0, 0.3][m];
                    assert!(hi - lo > 2.0 * least, "{t:?} swings {lo}..{hi}");
                    // Periodic: down and up again at least once, 10..60 s a period.
                    let c = swings(&diff, (hi + lo) / 2.0, (hi - lo) / 4.0);
                    assert!(c >= 2, "{t:?}: {c} swings in {n} s");
                    assert!(c <= 2 * n / 8, "{t:?}: {c} swings in {n} s");
                }
                Kind::Dropout => {
                    assert!(got.iter().all(|&v| v == 0.0), "{t:?}: {got:?}");
                    assert!(normal.iter().all(|&v| v > 0.0));
                }
                k => panic!("{k:?} injected"),
            }
            seen.insert(t.kind.clone());
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn params_parse_with_defaults_and_reject_unknown_keys() {
    let p: SimParams = toml::from_str("").unwrap();
    assert_eq!(p, SimParams::default());
    assert_eq!(p.anomaly_every.0, Duration::from_secs(45 * 60));
    assert_eq!(p.first_anomaly_after.0, Duration::from_secs(40 * 60));
    assert_eq!(p.anomaly_duration.0, Duration::from_secs(3 * 60));
    assert_eq!((p.hosts, p.speed, p.seed), (0, 1.0, 1));
    assert!(p.validate().is_ok());

    let p: SimParams =
        toml::from_str("seed = 7\nanomaly_every = \"0s\"\n[kind_weights]\nstuck = 0.0\n").unwrap();
    assert_eq!(p.seed, 7);
    assert_eq!(p.anomaly_every.0, Duration::ZERO);
    assert_eq!(p.kind_weights.stuck, 0.0);
    assert_eq!(p.kind_weights.spike, 1.0);

    // Every kind has a weight under its own name.
    let w: KindWeights = toml::from_str(
        "spike = 0.1\nlevel_shift = 0.2\ndrop = 0.3\nstuck = 0.4\nclimb = 0.5\n\
         oscillation = 0.6\ndropout = 0.7\n",
    )
    .unwrap();
    let got: Vec<f64> = Kind::ALL.iter().map(|k| k.weight(&w)).collect();
    assert_eq!(got, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
    assert!(
        Kind::ALL
            .iter()
            .all(|k| k.weight(&KindWeights::default()) == 1.0)
    );

    assert!(toml::from_str::<SimParams>("sead = 7").is_err());
    assert!(toml::from_str::<SimParams>("[kind_weights]\nspikes = 1.0").is_err());
    let bad = SimParams {
        speed: 0.0,
        ..SimParams::default()
    };
    assert!(bad.validate().is_err());
    for kind in Kind::ALL {
        let mut table = toml::Table::new();
        table.insert(kind.as_str().to_owned(), toml::Value::Float(-1.0));
        let bad = SimParams {
            kind_weights: table.try_into().unwrap(),
            ..SimParams::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains(kind.as_str()), "{err}");
    }
}

#[test]
fn hosts_are_named_by_index_with_unique_ips() {
    let p = SimParams::default();
    let host = SimHost::new(1, &p, START, SECOND);
    assert_eq!(host.name(), "sim-1");
    assert_eq!(
        host.labels().get("ip").map(String::as_str),
        Some("10.0.0.1")
    );
    assert_eq!(ip_of(254), "10.0.0.254");
    assert_eq!(ip_of(255), "10.0.1.1");
    let ips: BTreeSet<String> = (1..=100_000).map(ip_of).collect();
    assert_eq!(ips.len(), 100_000);
    assert!(
        ips.iter()
            .all(|ip| !ip.ends_with(".0") && !ip.ends_with(".255"))
    );
}

type Rows = Vec<[f64; N_METRICS]>;

/// The normal values of host `index` (seed 1) every `interval` for `span`: with its jobs
/// and bursts, and without them (the same noise, cycles and drift).
fn normal_pair(index: usize, interval: i64, span: i64) -> (Rows, Rows) {
    let make = || SimHost::new(index, &quiet(&SimParams::default()), START, interval).baseline;
    let (mut with, mut without) = (make(), make().without_events());
    let ticks = (span / interval) as usize;
    let ts = |i: usize| START + i as i64 * interval;
    let a = (0..ticks).map(|i| with.step(ts(i))).collect();
    let b = (0..ticks).map(|i| without.step(ts(i))).collect();
    (a, b)
}

/// What the jobs and bursts add to metric `m`, tick by tick.
fn added(pair: &(Rows, Rows), m: usize) -> Vec<f64> {
    pair.0
        .iter()
        .zip(&pair.1)
        .map(|(a, b)| a[m] - b[m])
        .collect()
}

/// Runs of consecutive ticks where `on` holds, as (first tick, number of ticks).
fn runs(xs: &[f64], on: impl Fn(f64) -> bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        if !on(x) {
            continue;
        }
        match out.last_mut() {
            Some((first, len)) if *first + *len == i => *len += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn the_backup_recurs_every_night_at_the_hosts_own_time_and_nowhere_else() {
    let interval = 10 * SECOND;
    let ts = |i: usize| START + i as i64 * interval;
    let mut first_starts = BTreeSet::new();
    for index in 1..=8 {
        let pair = normal_pair(index, interval, 7 * DAY);
        let (cpu, disk, load) = (added(&pair, 0), added(&pair, 2), added(&pair, 4));
        let backups: Vec<(usize, usize)> = runs(&cpu, |c| c >= 5.0)
            .into_iter()
            .filter(|&(_, len)| len as i64 * interval >= 10 * MINUTE)
            .collect();
        // From Tuesday 22:13 UTC: seven nights.
        assert_eq!(backups.len(), 7, "sim-{index}: {backups:?}");
        let mut starts = Vec::new();
        for &(first, len) in &backups {
            let (start, span) = (ts(first).rem_euclid(DAY), len as i64 * interval);
            assert!(
                start >= HOUR && start + span <= 4 * HOUR + interval,
                "sim-{index}: backup from {} min after midnight for {} min",
                start / MINUTE,
                span / MINUTE
            );
            // 20..40 min ± 10 %, less the ramps below +5.
            assert!((17 * MINUTE..=45 * MINUTE).contains(&span), "{span} ms");
            // Load goes up with it.
            let up = mean(&load[first + len / 2..first + len]);
            assert!(up > 0.3, "sim-{index}: load +{up} during the backup");
            starts.push(start);
        }
        let spread = starts.iter().max().unwrap() - starts.iter().min().unwrap();
        assert!(spread <= 5 * MINUTE, "sim-{index}: starts {starts:?}");
        first_starts.insert(starts[0] / MINUTE);

        // Nothing else lasts: cron jobs and bursts are over within minutes.
        let in_backup = |i: usize| backups.iter().any(|&(f, l)| (f..f + l).contains(&i));
        for (first, len) in runs(&cpu, |c| c >= 1.0) {
            if !in_backup(first + len / 2) {
                assert!(len as i64 * interval <= 3 * MINUTE, "sim-{index}");
            }
        }
        // The archive: on disk during the backup, shipped and deleted by 04:10.
        for (i, d) in disk.iter().enumerate() {
            let hour = ts(i).rem_euclid(DAY) as f64 / HOUR as f64;
            if !(1.0..4.2).contains(&hour) {
                assert!(d.abs() < 1e-9, "sim-{index}: disk +{d} at {hour:.2} h");
            }
        }
        for &(first, len) in &backups {
            let most = disk[first..first + len + 30]
                .iter()
                .cloned()
                .fold(0.0, f64::max);
            assert!((0.25..=1.7).contains(&most), "sim-{index}: disk +{most}");
        }
    }
    assert!(first_starts.len() >= 5, "backups at {first_starts:?}");
}

/// A run of added cpu: first tick, ticks, the most cpu added.
type CpuRun = (usize, usize, f64);

/// The cron runs and the bursts of host `index` over `days` at 1 s: runs of added cpu
/// outside the backup, the cron runs being those at the most common minute.
fn cron_and_bursts(index: usize, days: i64) -> (Vec<CpuRun>, Vec<CpuRun>) {
    let pair = normal_pair(index, SECOND, days * DAY);
    let cpu = added(&pair, 0);
    let ts = |i: usize| START + i as i64 * SECOND;
    let found: Vec<CpuRun> = runs(&cpu, |c| c >= 1.0)
        .into_iter()
        .filter(|&(first, _)| {
            !(55 * MINUTE..4 * HOUR + 15 * MINUTE).contains(&ts(first).rem_euclid(DAY))
        })
        .map(|(first, len)| {
            let most = cpu[first..first + len].iter().cloned().fold(0.0, f64::max);
            (first, len, most)
        })
        .collect();
    let minute = |i: usize| ts(i).rem_euclid(HOUR) / MINUTE;
    let mut count = [0; 60];
    for &(first, len, _) in &found {
        if len >= 20 {
            count[minute(first) as usize] += 1;
        }
    }
    let cron_minute = (0..60).max_by_key(|&m| count[m]).unwrap() as i64;
    // Cron runs: those running 4..20 s after the cron minute (whatever bursts they
    // merged with); the others are bursts.
    let is_cron = |&(first, len, _): &CpuRun| {
        let (from, to) = (ts(first), ts(first + len - 1));
        [from, to].iter().any(|t| {
            let at = t.div_euclid(HOUR) * HOUR + cron_minute * MINUTE;
            from <= at + 20 * SECOND && to >= at + 4 * SECOND
        })
    };
    found.into_iter().partition(is_cron)
}

#[test]
fn the_cron_job_runs_every_hour_at_the_hosts_minute_for_30_to_90_s() {
    let days = 3;
    for index in 1..=3 {
        let (cron, _) = cron_and_bursts(index, days);
        // Every hour but the first, partial one and those of 00:55..04:15, which
        // cron_and_bursts leaves out (3 or 4 a night).
        let hours = (days * 24) as usize;
        assert!(
            cron.len() >= hours - 1 - 4 * days as usize && cron.len() <= hours,
            "sim-{index}: {} runs",
            cron.len()
        );
        let hours: BTreeSet<i64> = cron
            .iter()
            .map(|&(first, _, _)| (START + first as i64 * SECOND) / HOUR)
            .collect();
        assert_eq!(hours.len(), cron.len(), "sim-{index}: twice in an hour");
        let usual = cron
            .iter()
            .filter(|&&(_, len, most)| (22..=112).contains(&len) && (4.0..=18.0).contains(&most))
            .count();
        assert!(usual * 10 >= cron.len() * 9, "sim-{index}: {cron:?}");
    }
}

#[test]
fn bursts_are_short_moderate_and_a_few_a_day() {
    let days = 3;
    let mut total = 0;
    for index in 1..=3 {
        let (_, bursts) = cron_and_bursts(index, days);
        for &(first, len, most) in &bursts {
            assert!(len <= 41, "sim-{index}: a burst of {len} s at tick {first}");
            assert!(most <= 25.0 + 1e-9, "sim-{index}: a burst of +{most}");
        }
        assert!(
            bursts.len() <= 10 * days as usize,
            "sim-{index}: {bursts:?}"
        );
        total += bursts.len();
    }
    // 2..6 a day per host, some hidden in a cron run or the backup.
    assert!(total >= 3 * days as usize, "{total} bursts");
}

#[test]
fn normal_work_never_comes_near_an_anomaly() {
    for index in 1..=8 {
        let pair = normal_pair(index, 10 * SECOND, 7 * DAY);
        let most = |m: usize| added(&pair, m).iter().cloned().fold(f64::MIN, f64::max);
        // Below a spike (+35 cpu, +15 disk) and a level shift's least (+1.5 load).
        assert!(most(0) <= 25.0 + 1e-9, "sim-{index}: cpu +{}", most(0));
        assert!(most(0) >= 15.0, "sim-{index}: cpu +{}", most(0));
        assert!(most(2) < 2.0, "sim-{index}: disk +{}", most(2));
        assert!(most(4) < 1.5, "sim-{index}: load +{}", most(4));
        for m in [1, 3] {
            assert!(added(&pair, m).iter().all(|&d| d == 0.0), "{}", DIMS[m]);
        }
    }
}

#[test]
fn the_jobs_keep_their_times_at_any_interval() {
    let fine = normal_pair(4, SECOND, 2 * DAY);
    let coarse = normal_pair(4, 10 * SECOND, 2 * DAY);
    let (fine, coarse) = (added(&fine, 0), added(&coarse, 0));
    assert!(coarse.iter().any(|&c| c > 5.0));
    for (i, c) in coarse.iter().enumerate() {
        assert!(
            (fine[10 * i] - c).abs() < 1e-9,
            "tick {i}: {} vs {c}",
            fine[10 * i]
        );
    }
}

#[test]
fn weekends_are_quieter_than_weekdays() {
    // The ramps are smooth and lie in the small hours of Saturday and Monday.
    let monday = 4 * DAY; // 1970-01-05
    assert_eq!(baseline::weekend(monday + 2 * DAY + 12 * HOUR), 0.0);
    assert_eq!(baseline::weekend(monday + 5 * DAY + 4 * HOUR), 1.0);
    assert_eq!(baseline::weekend(monday + 6 * DAY + 23 * HOUR), 1.0);
    assert_eq!(baseline::weekend(monday + 7 * DAY + 4 * HOUR), 0.0);
    let mut prev = baseline::weekend(monday);
    for minute in 1..7 * 24 * 60 {
        let w = baseline::weekend(monday + minute * MINUTE);
        assert!((w - prev).abs() < 0.01, "minute {minute}");
        prev = w;
    }

    let interval = 10 * SECOND;
    let mut fleet = 0.0;
    for index in 1..=8 {
        let (rows, _) = normal_pair(index, interval, 7 * DAY);
        // Whole days from Tuesday 22:13 UTC: Wednesday to Friday, then Saturday and Sunday.
        let day = |d: i64| {
            let first = ((START.div_euclid(DAY) + d) * DAY - START) / interval;
            &rows[first as usize..(first + DAY / interval) as usize]
        };
        let col = |days: &[i64], m: usize| -> Vec<f64> {
            days.iter()
                .flat_map(|&d| day(d).iter().map(move |r| r[m]))
                .collect()
        };
        // 10:00..18:00 UTC, when the daily cycle is high.
        let daytime = |days: &[i64]| -> Vec<f64> {
            let hour = (HOUR / interval) as usize;
            days.iter()
                .flat_map(|&d| day(d)[10 * hour..18 * hour].iter().map(|r| r[0]))
                .collect()
        };
        let (week, weekend) = ([1, 2, 3], [4, 5]);
        let (cpu_wk, cpu_we) = (mean(&col(&week, 0)), mean(&col(&weekend, 0)));
        assert!(
            cpu_we < cpu_wk - 2.0,
            "sim-{index}: cpu {cpu_wk} on weekdays, {cpu_we} at weekends"
        );
        fleet += (cpu_wk - cpu_we) / 8.0;
        let (day_wk, day_we) = (mean(&daytime(&week)), mean(&daytime(&weekend)));
        assert!(
            day_we < day_wk - 4.0,
            "sim-{index}: cpu by day {day_wk} on weekdays, {day_we} at weekends"
        );
        let (load_wk, load_we) = (mean(&col(&week, 4)), mean(&col(&weekend, 4)));
        assert!(
            load_we < load_wk - 0.08,
            "sim-{index}: load {load_wk}, {load_we}"
        );
        let (err_wk, err_we) = (mean(&col(&week, 3)), mean(&col(&weekend, 3)));
        assert!(
            err_we < 0.85 * err_wk,
            "sim-{index}: net_err {err_wk}, {err_we}"
        );
        // Still a daily cycle on Sunday.
        let hourly: Vec<f64> = day(5)
            .chunks((HOUR / interval) as usize)
            .map(|h| mean(&h.iter().map(|r| r[0]).collect::<Vec<_>>()))
            .collect();
        let swing = hourly.iter().cloned().fold(f64::MIN, f64::max)
            - hourly.iter().cloned().fold(f64::MAX, f64::min);
        assert!(swing > 3.0, "sim-{index}: Sunday swings {swing}");
    }
    assert!(fleet > 5.0, "weekends {fleet} cpu points lower");
}

#[test]
fn values_stay_in_range_and_plausible_over_seven_simulated_days() {
    let p = SimParams::default();
    let interval = 10 * SECOND;
    for index in 1..=8 {
        let (rows, truth) = run(index, &p, interval, 7 * DAY);
        assert!(truth.len() > 100, "sim-{index}: {} injections", truth.len());
        for row in &rows {
            assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
            assert!(
                row[..3].iter().all(|v| (0.0..=100.0).contains(v)),
                "{row:?}"
            );
            assert!(row[3] >= 0.0 && row[4] >= 0.0, "{row:?}");
        }
        // Normal behaviour alone: a busy but healthy host.
        let (normal, _) = normal_pair(index, interval, 7 * DAY);
        for row in &normal {
            assert!((1.5..=90.0).contains(&row[0]), "sim-{index}: {row:?}");
            assert!((25.0..=85.0).contains(&row[1]), "sim-{index}: {row:?}");
            assert!((15.0..=75.0).contains(&row[2]), "sim-{index}: {row:?}");
            assert!(row[3] < 1.5 && row[4] < 5.0, "sim-{index}: {row:?}");
        }
    }
}
