//! The `simulate` command: a simulated fleet run offline, as fast as the machine goes,
//! through the same tick loop as `run --simulate` ([`crate::tick::Host`], so the same
//! decision path as a device), with fits inline so that a run gives the same result on
//! every machine. It writes every injected anomaly and every alarm change as one JSON line:
//!
//! ```text
//! {"truth":{"host":"sim-1","metric":"cpu_util","kind":"spike","start":…,"end":…}}
//! {"alarm":{"id":…,"host":"sim-1","source":"cpu_util","state":"firing","severity":2,…}}
//! ```
//!
//! which is what `bench/fleet/run.sh` scores: false alarms per host-day by severity,
//! recall of injected anomalies and detection delay, severity changes per alarm.

use std::io::Write;
use std::time::Instant;

use lookout_shared::payload::SimTruth;

use crate::Error;
use crate::config::Settings;
use crate::frame::Frame;
use crate::out::Out;
use crate::scorer::fit::Inline;
use crate::simulate::SimHost;
use crate::tick::Host;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Plan {
    pub hosts: usize,
    /// Simulated time, from `start_ms`.
    pub duration_ms: i64,
    pub start_ms: i64,
}

/// Counts of a finished run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub ticks: u64,
    pub truths: u64,
    pub alarm_changes: u64,
}

/// One line of the output.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Line<'a> {
    Truth(&'a SimTruth),
    Alarm(&'a serde_json::value::RawValue),
}

/// Runs the fleet of `plan` with the simulated hosts' models of `settings` and writes the
/// lines to `out`. Hosts are split over the machine's cores; each host's lines come out
/// in time order, hosts one after the other.
pub fn simulate(settings: &Settings, plan: &Plan, out: &mut dyn Write) -> Result<Summary, Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, plan.hosts.max(1));
    let started = Instant::now();
    let indices: Vec<usize> = (1..=plan.hosts).collect();
    let chunks: Vec<&[usize]> = indices
        .chunks(plan.hosts.div_ceil(threads).max(1))
        .collect();
    let results: Vec<Result<(Vec<u8>, Summary), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| s.spawn(|| run_hosts(settings, plan, chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Config {
                        path: "simulate".into(),
                        message: "a simulation thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut total = Summary::default();
    for r in results {
        let (bytes, s) = r?;
        out.write_all(&bytes).map_err(|source| Error::Io {
            path: "(output)".into(),
            source,
        })?;
        total.ticks += s.ticks;
        total.truths += s.truths;
        total.alarm_changes += s.alarm_changes;
    }
    tracing::info!(
        hosts = plan.hosts,
        ticks = total.ticks,
        truths = total.truths,
        alarm_changes = total.alarm_changes,
        secs = started.elapsed().as_secs_f64(),
        "simulation finished"
    );
    Ok(total)
}

/// The hosts `indices`, one after the other, into one buffer of lines.
fn run_hosts(
    settings: &Settings,
    plan: &Plan,
    indices: &[usize],
) -> Result<(Vec<u8>, Summary), Error> {
    let interval_ms = settings.interval.as_millis().max(1) as i64;
    let ticks = (plan.duration_ms / interval_ms).max(0);
    let mut buf = Vec::new();
    let mut summary = Summary::default();
    let mut frame = Frame::with_capacity(16);
    let mut truth = Vec::new();
    let mut outs = Vec::new();
    for &index in indices {
        let mut sim = SimHost::new(index, &settings.simulate, plan.start_ms, interval_ms);
        let mut labels = settings.labels.clone();
        labels.extend(sim.labels().iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut host = Host::new(
            &settings.mqtt.prefix,
            sim.name(),
            &labels,
            &settings.sim_models,
            &settings.host_judge,
            settings.host_alarm,
        );
        let mut fitter = Inline::new(1, 1, 1);
        for t in 0..ticks {
            let ts = plan.start_ms + t * interval_ms;
            frame.clear(ts);
            truth.clear();
            sim.tick(ts, &mut frame, &mut truth);
            host.tick(index - 1, &frame, &truth, &mut fitter, &mut outs);
            summary.ticks += 1;
            for o in outs.drain(..) {
                let line = match &o {
                    Out::Truth { .. } => None,
                    Out::Alarm { payload, .. } => {
                        summary.alarm_changes += 1;
                        Some(payload)
                    }
                    _ => None,
                };
                if let Some(payload) = line {
                    let raw = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|s| serde_json::value::RawValue::from_string(s.to_owned()).ok());
                    if let Some(raw) = raw {
                        serde_json::to_writer(&mut buf, &Line::Alarm(&raw)).ok();
                        buf.push(b'\n');
                    }
                }
            }
            for t in &truth {
                summary.truths += 1;
                serde_json::to_writer(&mut buf, &Line::Truth(t)).ok();
                buf.push(b'\n');
            }
        }
    }
    Ok((buf, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_shared::config::Source;

    #[test]
    fn a_simulated_day_writes_truths_and_alarms_and_is_the_same_every_time() {
        // A small detector: this test is about the command, not the detector.
        let text = "[detector.train]\nwindow = 200\nevery = 200\nensemble = 2\nn_init = 2\n\
                    [simulate]\nseed = 7\nanomaly_every = \"20m\"\nfirst_anomaly_after = \"30m\"\n\
                    [sim_models.cpu_util]\nmetrics = { \"sim\" = [\"cpu_util\"] }\n\
                    [sim_models.mem_util]\nmetrics = { \"sim\" = [\"mem_util\"] }\n";
        let settings = crate::config::load(&Source::builtin("t.toml", text), &[]).unwrap();
        let plan = Plan {
            hosts: 2,
            duration_ms: 3 * 3_600_000,
            start_ms: 1_767_571_200_000,
        };
        let mut a = Vec::new();
        let s = simulate(&settings, &plan, &mut a).unwrap();
        assert_eq!(s.ticks, 2 * 3 * 3600);
        assert!(s.truths >= 4 && s.alarm_changes > 0, "{s:?}");
        let text = String::from_utf8(a.clone()).unwrap();
        let truths = text
            .lines()
            .filter(|l| l.starts_with("{\"truth\":"))
            .count();
        let alarms = text
            .lines()
            .filter(|l| l.starts_with("{\"alarm\":"))
            .count();
        assert_eq!(truths as u64, s.truths);
        assert_eq!(alarms as u64, s.alarm_changes);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.get("truth").or(v.get("alarm")).is_some(), "{l}");
        }
        let mut b = Vec::new();
        simulate(&settings, &plan, &mut b).unwrap();
        assert_eq!(a, b, "deterministic");
    }
}

#[cfg(test)]
mod quiet {
    use super::*;
    use lookout_shared::config::Source;

    /// Issue 17: a fresh agent with the shipped config, on normal data, raises no learned-
    /// model alarm in its first hour (two simulated hosts, their five models each).
    #[test]
    fn a_fresh_agent_on_normal_data_is_quiet_for_its_first_hour() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let source = Source::read(&path).unwrap();
        let settings = crate::config::load(&source, &["simulate.anomaly_every=0s".into()]).unwrap();
        let plan = Plan {
            hosts: 2,
            duration_ms: 3_600_000,
            start_ms: 1_767_571_200_000,
        };
        let mut out = Vec::new();
        let s = simulate(&settings, &plan, &mut out).unwrap();
        assert_eq!(s.alarm_changes, 0, "{}", String::from_utf8_lossy(&out));
    }
}
