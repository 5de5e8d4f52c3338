use std::sync::Arc;

use super::*;
use crate::rules::Limits;
use serde_json::Value;

const SEED_RULES: &str = include_str!("../../../../configs/examples/rules.json");
const SEED_EVENTS: &str = include_str!("../../../../configs/examples/events.json");

/// 2018-04-30T14:50:38Z: just after the seed's last event.
const SEED_NOW: i64 = 1_525_099_838_000;
/// 2018-04-30T14:51:00Z: the end of the seed events' window.
const SEED_WINDOW_END: i64 = 1_525_099_860_000;

fn rule(id: &str, device: &str, op: &str, value: f64, window: &str) -> String {
    format!(
        r#"{{"ruleId": "{id}", "deviceId": "{device}", "metricName": "temp", "alertName": "{id} alert",
            "operator": "{op}", "value": {value}, "window": "{window}"}}"#
    )
}

fn doc(rules: &[String]) -> String {
    format!("[{}]", rules.join(","))
}

fn live_with(initial: &str, file: Option<PathBuf>, host_metrics: bool) -> Live {
    Live::new(LiveParams {
        prefix: "lookout".into(),
        host: "box".into(),
        labels: Labels::from([("site".to_owned(), "plant-3".to_owned())]),
        rules: RulesSettings {
            file,
            initial: RuleSet::parse("test", initial).unwrap(),
            limits: Limits::default(),
        },
        ingest: true,
        host_metrics,
    })
}

/// The published states, payloads as JSON (`Value::Null` for an empty payload).
fn states(out: &[Out]) -> Vec<(String, Value)> {
    out.iter()
        .filter_map(|o| match o {
            Out::State { topic, payload } | Out::Alarm { topic, payload } if payload.is_empty() => {
                Some((topic.clone(), Value::Null))
            }
            Out::State { topic, payload } | Out::Alarm { topic, payload } => {
                Some((topic.clone(), serde_json::from_slice(payload).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn alarms(out: &[Out]) -> Vec<(String, Value)> {
    states(out)
        .into_iter()
        .filter(|(t, _)| t.contains("/alarms/"))
        .collect()
}

fn temp(live: &mut Live, device: &str, value: f64, now: i64, out: &mut Vec<Out>) {
    let topic = format!("lookout/ingest/{device}");
    let payload = format!(r#"{{"metric": "temp", "value": {value}}}"#);
    live.on_message(&topic, payload.as_bytes(), now, out);
}

#[test]
fn a_rules_severity_grades_its_alarms() {
    let rules = SEED_RULES.replacen("\"value\": 90", "\"value\": 90, \"severity\": 4", 1);
    assert_ne!(rules, SEED_RULES);
    let mut live = live_with(&rules, None, false);
    let mut out = Vec::new();
    live.on_message(
        "lookout/ingest/978648",
        SEED_EVENTS.as_bytes(),
        SEED_NOW,
        &mut out,
    );
    live.tick(SEED_WINDOW_END, Instant::now(), &mut out);
    let got = alarms(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["severity"], 4);
}

#[test]
fn the_seeds_events_on_ingest_fire_one_alarm_for_n024_with_its_statistics() {
    let mut live = live_with(SEED_RULES, None, false);
    let mut out = Vec::new();
    live.on_message(
        "lookout/ingest/978648",
        SEED_EVENTS.as_bytes(),
        SEED_NOW,
        &mut out,
    );
    assert!(out.is_empty(), "nothing before the window closes: {out:?}");
    assert_eq!(live.stats().accepted, 3);
    live.tick(SEED_WINDOW_END, Instant::now(), &mut out);
    let got = alarms(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    let (topic, a) = &got[0];
    assert_eq!(topic, "lookout/box/alarms/rule/1234/978648/dim2=N024");
    assert_eq!(
        a["id"],
        format!("box:rule/1234/978648/dim2=N024:{SEED_WINDOW_END}")
    );
    assert_eq!(a["host"], "box");
    assert_eq!(a["source"], "rule/1234");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["severity"], crate::rules::document::DEFAULT_SEVERITY);
    assert_eq!(
        (a["ts"].as_i64(), a["started_at"].as_i64()),
        (Some(SEED_WINDOW_END), Some(SEED_WINDOW_END))
    );
    assert_eq!(
        (a["score"].as_f64(), a["threshold"].as_f64()),
        (Some(96.5), Some(90.0))
    );
    let l = &a["labels"];
    for (k, v) in [
        ("avg", "96.5"),
        ("min", "95"),
        ("max", "98"),
        ("count", "2"),
        ("dim2", "N024"),
        ("deviceid", "978648"),
        ("ruleid", "1234"),
        ("metric", "CPU"),
        ("alert", "hot node AVG CPU over 90"),
        ("operator", "AVGGREATEROREQUAL"),
        ("window", "1m"),
        ("site", "plant-3"),
    ] {
        assert_eq!(l[k], v, "label {k}: {a}");
    }
    assert!(l.get("dim0").is_none(), "only included dims: {a}");
    assert_eq!(
        a["summary"],
        "hot node AVG CPU over 90: CPU avg 96.5 >= 90 on 978648 (dim2=N024)"
    );

    // The next window has no N024 event: the alarm resolves, same id, same topic.
    out.clear();
    live.tick(SEED_WINDOW_END + 60_000, Instant::now(), &mut out);
    let got = alarms(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    let (t, r) = &got[0];
    assert_eq!(t, topic);
    assert_eq!(r["state"], "resolved");
    assert_eq!(r["id"], a["id"]);
    assert_eq!(r["labels"]["cause"], "no_data");
    assert_eq!(
        r["score"].as_f64(),
        Some(96.5),
        "no data: the score that fired it"
    );
    assert_eq!(r["ts"].as_i64(), Some(SEED_WINDOW_END + 60_000));
}

#[test]
fn the_device_comes_from_the_event_else_from_the_topic() {
    let rules = doc(&[rule("r", "*", "COUNTGREATEROREQUAL", 1.0, "1s")]);
    let mut live = live_with(&rules, None, false);
    let mut out = Vec::new();
    live.on_message(
        "lookout/ingest/from-topic/extra/levels",
        br#"{"metric": "temp", "value": 1, "time": 100}
            {"metric": "temp", "value": 1, "time": 200, "deviceId": "from-event"}"#,
        500,
        &mut out,
    );
    live.tick(1_000, Instant::now(), &mut out);
    let topics: BTreeSet<String> = alarms(&out).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        BTreeSet::from([
            "lookout/box/alarms/rule/r/from-event".to_owned(),
            "lookout/box/alarms/rule/r/from-topic".to_owned()
        ])
    );
    // No device anywhere: a bad event.
    live.on_message(
        "lookout/ingest",
        br#"{"metric": "temp", "value": 1}"#,
        1_100,
        &mut out,
    );
    assert_eq!(live.stats().bad, 1);
}

#[test]
fn bad_events_are_counted_and_skipped_and_future_times_clamped() {
    let rules = doc(&[rule("r", "*", "AVGGREATEROREQUAL", 0.0, "1s")]);
    let mut live = live_with(&rules, None, false);
    let mut out = Vec::new();
    for payload in [
        &b"not json"[..],
        b"",
        b"\xff\xfe",
        br#"{"metric": "temp"}"#,
        br#"{"metric": "temp", "value": "hot"}"#,
        br#"[1, 2]"#,
        br#"{"metric": "temp", "value": 1, "time": -9223372036854775808}"#,
    ] {
        live.on_message("lookout/ingest/s1", payload, 10_000, &mut out);
    }
    let big = vec![b' '; MAX_INGEST_BYTES + 1];
    live.on_message("lookout/ingest/s1", &big, 10_000, &mut out);
    assert_eq!(live.stats().bad, 9, "{:?}", live.stats());
    assert_eq!(live.stats().accepted, 0);

    // An event an hour ahead is taken at now + the tolerance, so it does not close the
    // window that holds now.
    live.on_message(
        "lookout/ingest/s1",
        br#"{"metric": "temp", "value": 5, "time": 3610000}"#,
        10_000,
        &mut out,
    );
    assert_eq!(live.clamped(), 1);
    assert_eq!(live.stats().accepted, 1);
    assert_eq!(live.engine.watermark(), Some(11_000));
    assert!(out.is_empty());
}

#[test]
fn host_documents_win_over_the_fleets_which_win_over_the_file() {
    let file_doc = doc(&[rule("file", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    let mut live = live_with(&file_doc, None, false);
    // Pretend the initial document came from a file.
    live.slots[Origin::File as usize].doc = Some(live.current.clone());
    live.in_force = Some(Origin::File);
    let mut out = Vec::new();
    let fire = |live: &mut Live, t: i64, out: &mut Vec<Out>| {
        temp(live, "s1", 60.0, t, out);
        live.tick(t + 1_000, Instant::now(), out);
    };
    fire(&mut live, 1_000, &mut out);
    assert_eq!(alarms(&out)[0].0, "lookout/box/alarms/rule/file/s1");

    out.clear();
    let fleet = doc(&[rule("fleet", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    live.on_message("lookout/rules", fleet.as_bytes(), 2_100, &mut out);
    let got = alarms(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "lookout/box/alarms/rule/file/s1");
    assert_eq!(got[0].1["state"], "resolved");
    assert_eq!(got[0].1["labels"]["cause"], "rule_removed");

    let host = doc(&[rule("host", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    live.on_message("lookout/box/rules", host.as_bytes(), 2_200, &mut out);
    // A fleet document now changes nothing in force: the host's wins.
    out.clear();
    let fleet2 = doc(&[rule("fleet2", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    live.on_message("lookout/rules", fleet2.as_bytes(), 2_300, &mut out);
    // An added rule starts with the next whole window.
    fire(&mut live, 3_000, &mut out);
    fire(&mut live, 4_000, &mut out);
    let fired: Vec<String> = alarms(&out)
        .into_iter()
        .filter(|(_, a)| a["state"] == "firing")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(fired, ["lookout/box/alarms/rule/host/s1"]);

    // Empty retained message: the host's document is gone, the fleet's applies.
    out.clear();
    live.on_message("lookout/box/rules", b"", 5_100, &mut out);
    fire(&mut live, 6_000, &mut out);
    fire(&mut live, 7_000, &mut out);
    let got = alarms(&out);
    assert!(
        got.iter()
            .any(|(t, a)| t.ends_with("rule/host/s1") && a["labels"]["cause"] == "rule_removed"),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(t, a)| t.ends_with("rule/fleet2/s1") && a["state"] == "firing"),
        "{got:?}"
    );
    // And without the fleet's, the file's.
    out.clear();
    live.on_message("lookout/rules", b"", 8_100, &mut out);
    fire(&mut live, 9_000, &mut out);
    fire(&mut live, 10_000, &mut out);
    assert!(
        alarms(&out)
            .iter()
            .any(|(t, a)| t.ends_with("rule/file/s1") && a["state"] == "firing"),
        "{out:?}"
    );
}

#[test]
fn an_invalid_document_is_rejected_on_the_error_topic_and_the_old_rules_stay() {
    let mut live = live_with("[]", None, false);
    let mut out = Vec::new();
    live.start(&mut out);
    assert_eq!(
        states(&out),
        [("lookout/box/rules/error".to_owned(), Value::Null)]
    );
    assert_eq!(
        out[1],
        Out::Forget {
            topic: "lookout/box/rules/error".into()
        },
        "the clear at start is sent once, not after every reconnect"
    );

    out.clear();
    let good = doc(&[rule("hot", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    live.on_message("lookout/box/rules", good.as_bytes(), 1_000, &mut out);
    assert!(out.is_empty(), "no error to clear, none shown: {out:?}");

    let bad = r#"[{"ruleId": "hot", "deviceId": "*", "metricName": "temp", "alertName": "a",
                  "operator": "AVGMORE", "value": 1}]"#;
    live.on_message("lookout/box/rules", bad.as_bytes(), 1_100, &mut out);
    let got = states(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    let (topic, e) = &got[0];
    assert_eq!(topic, "lookout/box/rules/error");
    assert_eq!(e["origin"], "lookout/box/rules");
    assert_eq!(e["host"], "box");
    assert_eq!(e["ts"], 1_100);
    assert_eq!(e["in_force"], "lookout/box/rules");
    assert_eq!(e["rules"], 1);
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.starts_with("lookout/box/rules: rules[0] (ruleId \"hot\"): operator: \"AVGMORE\""),
        "{msg}"
    );

    // The old rule still fires.
    out.clear();
    temp(&mut live, "s1", 60.0, 2_000, &mut out);
    live.tick(3_000, Instant::now(), &mut out);
    assert_eq!(alarms(&out)[0].0, "lookout/box/alarms/rule/hot/s1");

    // The same bad document again (a redelivery after a reconnect) changes nothing.
    out.clear();
    live.on_message("lookout/box/rules", bad.as_bytes(), 3_100, &mut out);
    assert!(out.is_empty(), "{out:?}");

    // A bad fleet document shows too; fixing the host's leaves the fleet's error shown;
    // fixing that empties the topic.
    live.on_message("lookout/rules", b"{", 3_200, &mut out);
    assert_eq!(states(&out)[0].1["origin"], "lookout/rules");
    out.clear();
    live.on_message("lookout/box/rules", good.as_bytes(), 3_300, &mut out);
    assert!(
        out.is_empty(),
        "the fleet's error is still the latest: {out:?}"
    );
    live.on_message("lookout/rules", b"[]", 3_400, &mut out);
    assert_eq!(
        states(&out),
        [("lookout/box/rules/error".to_owned(), Value::Null)]
    );
}

#[test]
fn the_rules_file_is_polled_and_replaced_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.json");
    let v1 = doc(&[rule("hot", "*", "AVGGREATEROREQUAL", 50.0, "1s")]);
    std::fs::write(&path, &v1).unwrap();
    let mut live = live_with(&v1, Some(path.clone()), false);
    let mut out = Vec::new();
    let t0 = Instant::now();
    live.tick(500, t0, &mut out);
    assert!(out.is_empty());

    temp(&mut live, "s1", 60.0, 1_000, &mut out);
    // Same operator, new value (and a longer file): takes effect when the window closes.
    let v2 = doc(&[
        rule("hot", "*", "AVGGREATEROREQUAL", 70.0, "1s"),
        rule("cold", "*", "AVGEQUALORLESS", 10.0, "1s"),
    ]);
    std::fs::write(&path, &v2).unwrap();
    live.tick(1_500, t0 + Duration::from_millis(500), &mut out);
    assert_eq!(live.current.len(), 1, "not looked at again within a second");
    live.tick(1_600, t0 + FILE_POLL, &mut out);
    assert_eq!(live.current.len(), 2);
    live.tick(2_000, t0 + FILE_POLL, &mut out);
    assert!(alarms(&out).is_empty(), "60 < 70: {out:?}");

    // Invalid: rejected, error shown with the file as origin, old rules stay.
    std::fs::write(&path, "[{\"ruleId\": 1}]").unwrap();
    live.tick(2_100, t0 + 2 * FILE_POLL, &mut out);
    let got = states(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["origin"], path.display().to_string());
    assert!(
        got[0].1["error"]
            .as_str()
            .unwrap()
            .contains("rules[0] (ruleId 1)")
    );
    assert_eq!(live.current.len(), 2);

    // Gone: also an error for that source, the rules stay.
    out.clear();
    std::fs::remove_file(&path).unwrap();
    live.tick(2_200, t0 + 3 * FILE_POLL, &mut out);
    assert!(
        states(&out)[0].1["error"]
            .as_str()
            .unwrap()
            .contains("rules.json")
    );
    assert_eq!(live.current.len(), 2);

    // Valid again: the error topic empties.
    out.clear();
    std::fs::write(&path, &v1).unwrap();
    live.tick(2_300, t0 + 4 * FILE_POLL, &mut out);
    assert_eq!(
        states(&out),
        [("lookout/box/rules/error".to_owned(), Value::Null)]
    );
    assert_eq!(live.current.len(), 1);
}

#[test]
fn the_hosts_own_samples_feed_only_the_metrics_its_rules_ask_for() {
    let rules = r#"[{"ruleId": "ram", "deviceId": "box", "metricName": "system.ram.used_pct", "alertName": "ram",
             "operator": "MINGREATEROREQUAL", "value": 90, "window": "1s"},
           {"ruleId": "other", "deviceId": "elsewhere", "metricName": "system.cpu.user", "alertName": "x",
             "operator": "MINGREATEROREQUAL", "value": 0, "window": "1s"}]"#;
    let mut live = live_with(rules, None, true);
    assert_eq!(
        live.wanted,
        BTreeSet::from(["system.ram.used_pct".to_owned()])
    );
    let (ram, used, cpu, user): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) = (
        "system.ram".into(),
        "used_pct".into(),
        "system.cpu".into(),
        "user".into(),
    );
    let mut frame = Frame::with_capacity(4);
    let mut out = Vec::new();
    for (ts, v) in [(1_000, 95.0), (1_500, f64::NAN), (1_600, 92.0)] {
        frame.clear(ts);
        frame.push(&ram, &used, v);
        frame.push(&cpu, &user, 3.0);
        live.on_samples(&frame, &mut out);
    }
    assert_eq!(live.stats().accepted, 2, "NaN skipped, cpu not asked for");
    assert_eq!(live.stats().unmatched, 0);
    live.tick(2_000, Instant::now(), &mut out);
    let got = alarms(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "lookout/box/alarms/rule/ram/box");
    assert_eq!(got[0].1["labels"]["min"], "92");

    // Simulated hosts do not feed their samples.
    let mut sim = live_with(rules, None, false);
    sim.on_samples(&frame, &mut out);
    assert_eq!(sim.stats().accepted, 0);
}

#[test]
fn resolved_states_beyond_the_kept_number_are_no_longer_re_sent() {
    let rules = doc(&[rule("r", "*", "COUNTGREATEROREQUAL", 1.0, "1s")]);
    let mut live = live_with(&rules, None, false);
    let mut out = Vec::new();
    let n = RESOLVED_KEPT + 10;
    for i in 0..n as i64 {
        temp(&mut live, &format!("d{i}"), 1.0, i * 1_000 + 10, &mut out);
    }
    live.tick(n as i64 * 1_000 + 5_000, Instant::now(), &mut out);
    let forgotten: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Out::Forget { topic } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(forgotten.len(), 10, "{forgotten:?}");
    assert_eq!(forgotten[0], "lookout/box/alarms/rule/r/d0");
    let fired = alarms(&out)
        .iter()
        .filter(|(_, a)| a["state"] == "firing")
        .count();
    assert_eq!(fired, n);
}
