use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use lookout_shared::payload::{Alarm, AlarmState};

use super::*;
use crate::decide::Detector;
use crate::replay::{Replayed, replay_observed};
use crate::scorer::fit::Inline;

#[test]
fn metrics_json_groups_dims_by_chart_and_parses() {
    let mut f = Frame::with_capacity(4);
    f.clear(42);
    let (cpu, load): (Arc<str>, Arc<str>) = ("system.cpu".into(), "system.load".into());
    f.push(&cpu, &"user".into(), 1.5);
    f.push(&cpu, &"system".into(), 0.5);
    f.push(&load, &"load1".into(), f64::NAN);
    let v: lookout_shared::payload::Metrics = serde_json::from_slice(&metrics_json("h\"1", &f))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                String::from_utf8_lossy(&metrics_json("h\"1", &f))
            )
        });
    assert_eq!(v.ts, 42);
    assert_eq!(v.host, "h\"1");
    assert_eq!(v.metrics["system.cpu"]["user"], Some(1.5));
    assert_eq!(v.metrics["system.cpu"].len(), 2);
    let raw: serde_json::Value = serde_json::from_slice(&metrics_json("h", &f)).unwrap();
    assert!(raw["metrics"]["system.load"]["load1"].is_null());
}

/// An alarm change as both paths report it.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    ts: i64,
    started_at: i64,
    state: AlarmState,
    severity: u8,
}

/// The same DEV series, row by row, through `replay` and through the live tick loop (one
/// host, one model, frames built from the rows, fits inline as replay runs them): the
/// alarms must be the same, change for change. There is one decision path, so this holds
/// by construction; the test keeps it that way.
#[test]
fn replay_and_the_live_tick_loop_raise_identical_alarms_on_a_dev_series() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/ec2_cpu_utilization_24ae8d.input.csv");
    let text = std::fs::read_to_string(&input).unwrap();
    // A detector that alarms several times on this series, so that the comparison has
    // something to compare: the default's threshold, less suppression.
    let mut config = crate::decide::DetectorConfig::default();
    config.alarm.suppress = 0;
    config.alarm.threshold = 1.0;
    config.train.window = crate::scorer::config::Span::Ticks(400);
    config.train.every = crate::scorer::config::Span::Ticks(100);
    let detector: Detector = config
        .resolve_at(std::time::Duration::from_secs(1))
        .unwrap();

    let mut replayed = Vec::new();
    let mut rows = Vec::new();
    let mut sink = Vec::new();
    let mut scores = Vec::new();
    replay_observed(
        BufReader::new(text.as_bytes()),
        &mut sink,
        &detector,
        "dev.csv",
        None,
        false,
        &mut |r: &Replayed| {
            rows.push((r.ts_ms, r.values[0]));
            scores.push(r.score());
            if let crate::decide::Decision::Scored(s) = r.decision
                && let Some(t) = s.transition
            {
                let (started_at, severity, state) = match t {
                    crate::alarm::Transition::Fired {
                        started_at,
                        severity,
                        ..
                    }
                    | crate::alarm::Transition::Changed {
                        started_at,
                        severity,
                        ..
                    } => (started_at, severity, AlarmState::Firing),
                    crate::alarm::Transition::Resolved {
                        started_at,
                        severity,
                        ..
                    } => (started_at, severity, AlarmState::Resolved),
                };
                replayed.push(Change {
                    ts: r.ts_ms,
                    started_at,
                    state,
                    severity,
                });
            }
        },
    )
    .unwrap();

    let spec = ModelSpec {
        name: "value".into(),
        metrics: vec![("nab".into(), "value".into())],
        detector: detector.clone(),
    };
    let mut host = Host::new(
        "lookout",
        "dev",
        &Labels::new(),
        std::slice::from_ref(&spec),
        &crate::decide::host::HostConfig::default(),
        detector.alarm,
    );
    let mut fitter = Inline::new(1, 1, 1);
    let (chart, dim): (Arc<str>, Arc<str>) = ("nab".into(), "value".into());
    let mut frame = Frame::with_capacity(1);
    let mut out = Vec::new();
    let mut live = Vec::new();
    let mut live_scores = Vec::new();
    for &(ts, v) in &rows {
        frame.clear(ts);
        frame.push(&chart, &dim, v);
        host.tick(0, &frame, &[], &mut fitter, &mut out);
        for o in out.drain(..) {
            match o {
                Out::Alarm { topic, payload } => {
                    assert_eq!(topic, "lookout/dev/alarms/value");
                    let a: Alarm = serde_json::from_slice(&payload).unwrap();
                    assert_eq!(a.id, Alarm::episode_id("dev", "value", a.started_at));
                    live.push(Change {
                        ts: a.ts,
                        started_at: a.started_at,
                        state: a.state,
                        severity: a.severity,
                    });
                }
                Out::Score { topic, payload } if topic.contains("/scores/") => {
                    let s: lookout_shared::payload::Score =
                        serde_json::from_slice(&payload).unwrap();
                    live_scores.push(s.score);
                }
                _ => {}
            }
        }
    }
    assert_eq!(live, replayed);
    assert!(
        replayed
            .iter()
            .filter(|c| c.state == AlarmState::Firing)
            .count()
            >= 3,
        "the series must alarm for the comparison to mean something: {replayed:?}"
    );
    // Every score is the same (to JSON's round trip, which serde_json does not promise
    // to the last bit).
    assert_eq!(live_scores.len(), scores.len());
    for (i, (a, b)) in live_scores.iter().zip(&scores).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "row {i}: {a} {b}"
            ),
            (a, b) => assert_eq!(a, b, "row {i}"),
        }
    }
}

/// The relearn command's part of the tick loop: a firing alarm of the named model resolves
/// at once with reason `relearned`, published like any alarm change; `*` names every model;
/// a name the host has no model of is refused with the names it has.
#[test]
fn relearn_resolves_the_named_models_firing_alarm_with_reason_relearned() {
    let mut config = crate::decide::DetectorConfig {
        diffs: false,
        ..Default::default()
    };
    config.alarm.settle = 0;
    config.alarm.settle_for = lookout_shared::duration::HumanDuration::from_secs(0);
    config.alarm.suppress = 0;
    config.train.window = crate::scorer::config::Span::Ticks(200);
    config.train.min_points = crate::scorer::config::Span::Ticks(200);
    config.train.every = crate::scorer::config::Span::Ticks(100_000);
    let detector: Detector = config
        .resolve_at(std::time::Duration::from_secs(1))
        .unwrap();
    let spec = ModelSpec {
        name: "value".into(),
        metrics: vec![("c".into(), "v".into())],
        detector: detector.clone(),
    };
    let mut host = Host::new(
        "lookout",
        "h",
        &Labels::new(),
        std::slice::from_ref(&spec),
        &crate::decide::host::HostConfig::default(),
        detector.alarm,
    );
    let mut fitter = Inline::new(1, 1, 1);
    let (chart, dim): (Arc<str>, Arc<str>) = ("c".into(), "v".into());
    let mut frame = Frame::with_capacity(1);
    let mut out = Vec::new();
    let mut rng = lookout_shared::rng::Rng::from_seed(7);
    let mut firing_at = None;
    for t in 0..2000i64 {
        let ts = 1_000_000 + t * 1000;
        // Noise around 10, then a level shift far past it that lasts.
        let level = if t < 300 { 10.0 } else { 60.0 };
        frame.clear(ts);
        frame.push(&chart, &dim, level + rng.normal());
        host.tick(0, &frame, &[], &mut fitter, &mut out);
        let fired = out.drain(..).any(|o| {
            matches!(&o, Out::Alarm { payload, .. }
                if serde_json::from_slice::<Alarm>(payload).unwrap().state == AlarmState::Firing)
        });
        if fired {
            firing_at = Some(ts);
            break;
        }
    }
    let ts = firing_at.expect("the level shift fires an alarm") + 1000;
    assert_eq!(
        host.relearn("nope", ts, &mut out),
        Err(vec!["value".to_owned()])
    );
    assert!(out.is_empty());
    let (models, resolved) = host.relearn("value", ts, &mut out).unwrap();
    assert_eq!(
        (models, resolved),
        (vec!["value".into()], vec!["value".into()])
    );
    let [Out::Alarm { topic, payload }] = out.as_slice() else {
        panic!("one alarm change: {out:?}");
    };
    assert_eq!(topic, "lookout/h/alarms/value");
    let a: Alarm = serde_json::from_slice(payload).unwrap();
    assert_eq!(a.state, AlarmState::Resolved);
    assert_eq!(
        a.labels.get("reason").map(String::as_str),
        Some("relearned")
    );
    assert!(a.summary.contains("relearned"), "{}", a.summary);
    out.clear();
    // Nothing firing any more: every model relearns, none resolves.
    let (models, resolved) = host.relearn("*", ts + 1000, &mut out).unwrap();
    assert_eq!(models, vec!["value".to_owned()]);
    assert!(resolved.is_empty() && out.is_empty());
}

/// Which dimension, on the wire: a cpu model's `system` jumps; its anomalous scores and
/// its firing alarm name `system` with an explain line, and its normal scores carry no
/// attribution at all (they stay the size they were).
#[test]
fn anomalous_scores_and_alarms_name_the_dimension_and_normal_scores_stay_small() {
    let mut config = crate::decide::DetectorConfig::default();
    config.alarm.settle = 0;
    config.alarm.settle_for = lookout_shared::duration::HumanDuration::from_secs(0);
    config.alarm.suppress = 0;
    // Context novelty alarms on what it has barely seen; this test is about the jump.
    config.context.levels = 0;
    config.train.window = crate::scorer::config::Span::Ticks(200);
    config.train.min_points = crate::scorer::config::Span::Ticks(200);
    config.train.every = crate::scorer::config::Span::Ticks(100_000);
    let detector: Detector = config
        .resolve_at(std::time::Duration::from_secs(1))
        .unwrap();
    let spec = ModelSpec {
        name: "cpu".into(),
        metrics: vec![
            ("system.cpu".into(), "user".into()),
            ("system.cpu".into(), "system".into()),
        ],
        detector: detector.clone(),
    };
    let mut host = Host::new(
        "lookout",
        "h",
        &Labels::new(),
        std::slice::from_ref(&spec),
        &crate::decide::host::HostConfig::default(),
        detector.alarm,
    );
    let mut fitter = Inline::new(1, 1, 1);
    let (chart, user, system): (Arc<str>, Arc<str>, Arc<str>) =
        ("system.cpu".into(), "user".into(), "system".into());
    let mut frame = Frame::with_capacity(2);
    let mut out = Vec::new();
    let mut rng = lookout_shared::rng::Rng::from_seed(3);
    let (mut normal, mut anomalous, mut fired) = (0, 0, None);
    for t in 0..400i64 {
        frame.clear(t * 1000);
        frame.push(&chart, &user, 20.0 + rng.normal());
        let jump = if t >= 300 { 35.0 } else { 0.0 };
        frame.push(&chart, &system, 4.0 + 0.5 * rng.normal() + jump);
        host.tick(0, &frame, &[], &mut fitter, &mut out);
        for o in out.drain(..) {
            match o {
                Out::Score { topic, payload } if topic.ends_with("/scores/cpu") => {
                    let raw: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                    if raw["anomalous"] == true {
                        anomalous += 1;
                        if t >= 300 {
                            assert_eq!(raw["dimensions"][0]["name"], "system", "{raw}");
                            assert!(raw["explain"].as_str().unwrap().starts_with("system at"));
                        }
                    } else {
                        normal += 1;
                        assert!(raw.get("dimensions").is_none() && raw.get("explain").is_none());
                    }
                }
                Out::Alarm { payload, .. } => {
                    let a: Alarm = serde_json::from_slice(&payload).unwrap();
                    if a.state == AlarmState::Firing && a.started_at >= 300_000 {
                        fired.get_or_insert(a);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        normal > 50 && anomalous > 10,
        "{normal} normal, {anomalous} anomalous"
    );
    let a = fired.expect("the jump fires");
    assert_eq!(a.dimensions[0].name, "system", "{a:?}");
    assert!(a.explain.unwrap().contains("of the cpu anomaly"));
}
