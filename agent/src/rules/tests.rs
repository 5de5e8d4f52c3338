//! The evaluator end to end: documents, events and windows together.

use std::sync::Arc;

use super::document::DIMS;
use super::engine::{Cause, Change, Engine, Limits, Output};
use super::offline::test_rules;
use super::{Event, RuleSet};

/// 2018-04-30T14:50:00Z, the minute of the seed's events; a multiple of 60 s.
const T0: i64 = 1_525_099_800_000;
const MIN: i64 = 60_000;

const EXAMPLE_RULES: &str = include_str!("../../../configs/examples/rules.json");
const EXAMPLE_EVENTS: &str = include_str!("../../../configs/examples/events.json");

/// A rule on metric `m` of every device, with `extra` JSON fields appended.
fn rule(id: i64, operator: &str, value: f64, extra: &str) -> String {
    format!(
        r#"{{"ruleId": {id}, "deviceId": "*", "metricName": "m", "alertName": "a{id}",
            "operator": "{operator}", "value": {value}{extra}}}"#
    )
}

fn rules(rules: &[String]) -> RuleSet {
    RuleSet::parse("test", format!("[{}]", rules.join(","))).unwrap()
}

fn engine(rule_docs: &[String]) -> Engine {
    Engine::new(rules(rule_docs), Limits::default())
}

fn ev(time: i64, device: &str, value: f64) -> Event {
    Event {
        time,
        device: device.into(),
        metric: "m".into(),
        value,
        dims: Default::default(),
        filters: Default::default(),
    }
}

fn with_dims(mut e: Event, dims: [Option<&str>; DIMS]) -> Event {
    e.dims = dims.map(|d| d.map(str::to_owned));
    e
}

fn with_filters(mut e: Event, filters: [Option<&str>; DIMS]) -> Event {
    e.filters = filters.map(|d| d.map(str::to_owned));
    e
}

/// Pushes all events, then finishes; returns every output.
fn run(engine: &mut Engine, events: &[Event]) -> Vec<Output> {
    let mut outputs = Vec::new();
    for e in events {
        outputs.extend(engine.push(e).outputs);
    }
    outputs.extend(engine.finish().outputs);
    outputs
}

fn summary(o: &Output) -> (i64, &str, u64, f64, f64, f64) {
    (
        o.time,
        o.device.as_str(),
        o.aggregate.count,
        o.aggregate.avg(),
        o.aggregate.min,
        o.aggregate.max,
    )
}

#[test]
fn the_seeds_example_gives_one_output_for_n024_only() {
    let set = RuleSet::parse("configs/examples/rules.json", EXAMPLE_RULES).unwrap();
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let s = test_rules(
        set,
        "configs/examples/events.json",
        EXAMPLE_EVENTS,
        Limits::default(),
        &mut out,
        &mut notes,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            r#"{"time":"2018-04-30T14:51:00.000Z","deviceid":"978648","ruleid":1234,"metric":"CPU","#,
            r#""alert":"hot node AVG CPU over 90","avg":96.5,"min":95.0,"max":98.0,"#,
            r#""dim0":null,"dim1":null,"dim2":"N024","dim3":null,"dim4":null,"count":2}"#,
            "\n"
        )
    );
    assert_eq!(
        (s.events, s.outputs, s.stats.accepted, s.stats.bad),
        (3, 1, 3, 0)
    );
    let notes = String::from_utf8(notes).unwrap();
    assert_eq!(
        notes,
        "test-rules: 3 events: 3 accepted, 0 matched no rule, 0 late, 0 over the group cap, 0 bad; 1 output events\n"
    );
}

#[test]
fn every_operator_decides_on_both_sides_of_its_value_and_equality_matches() {
    // One window of 10, 20, 30: avg 20, min 10, max 30, count 3.
    let cases: [(&str, f64, bool); 24] = [
        ("AVGGREATEROREQUAL", 20.0, true),
        ("AVGGREATEROREQUAL", 19.5, true),
        ("AVGGREATEROREQUAL", 20.5, false),
        ("AVGEQUALORLESS", 20.0, true),
        ("AVGEQUALORLESS", 20.5, true),
        ("AVGEQUALORLESS", 19.5, false),
        ("MINGREATEROREQUAL", 10.0, true),
        ("MINGREATEROREQUAL", 9.5, true),
        ("MINGREATEROREQUAL", 10.5, false),
        ("MINEQUALORLESS", 10.0, true),
        ("MINEQUALORLESS", 10.5, true),
        ("MINEQUALORLESS", 9.5, false),
        ("MAXGREATEROREQUAL", 30.0, true),
        ("MAXGREATEROREQUAL", 29.5, true),
        ("MAXGREATEROREQUAL", 30.5, false),
        ("MAXEQUALORLESS", 30.0, true),
        ("MAXEQUALORLESS", 30.5, true),
        ("MAXEQUALORLESS", 29.5, false),
        ("COUNTGREATEROREQUAL", 3.0, true),
        ("COUNTGREATEROREQUAL", 2.0, true),
        ("COUNTGREATEROREQUAL", 4.0, false),
        ("COUNTEQUALORLESS", 3.0, true),
        ("COUNTEQUALORLESS", 4.0, true),
        ("COUNTEQUALORLESS", 2.0, false),
    ];
    for (op, value, fires) in cases {
        let mut e = engine(&[rule(1, op, value, "")]);
        let outputs = run(
            &mut e,
            &[
                ev(T0, "d", 10.0),
                ev(T0 + 1, "d", 20.0),
                ev(T0 + 2, "d", 30.0),
            ],
        );
        if fires {
            assert_eq!(outputs.len(), 1, "{op} {value}");
            assert_eq!(
                summary(&outputs[0]),
                (T0 + MIN, "d", 3, 20.0, 10.0, 30.0),
                "{op} {value}"
            );
        } else {
            assert!(outputs.is_empty(), "{op} {value}: {outputs:?}");
        }
    }
}

#[test]
fn globs_select_devices_and_each_device_is_its_own_group() {
    let doc = rule(1, "MAXGREATEROREQUAL", 50.0, "").replace("\"*\"", "\"edge-?\"");
    let mut e = engine(&[doc]);
    let outputs = run(
        &mut e,
        &[
            ev(T0, "edge-1", 60.0),
            ev(T0 + 1, "edge-2", 70.0),
            ev(T0 + 2, "edge-1", 40.0),
            ev(T0 + 3, "edge-10", 99.0),
            ev(T0 + 4, "core-1", 99.0),
        ],
    );
    let got: Vec<_> = outputs.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (T0 + MIN, "edge-1", 2, 50.0, 40.0, 60.0),
            (T0 + MIN, "edge-2", 1, 70.0, 70.0, 70.0)
        ]
    );
    assert_eq!((e.stats().accepted, e.stats().unmatched), (3, 2));
}

#[test]
fn filters_pass_only_events_with_that_filter_value() {
    let doc = rule(
        1,
        "COUNTGREATEROREQUAL",
        1.0,
        r#", "filter": {"0": "", "2": "C1"}"#,
    );
    let mut e = engine(&[doc]);
    let c1 = [Some("A1"), None, Some("C1"), None, None];
    let c2 = [Some("A1"), None, Some("C2"), None, None];
    let c1_padded = [None, None, Some("C1 "), None, None];
    let outputs = run(
        &mut e,
        &[
            with_filters(ev(T0, "d", 1.0), c1),
            with_filters(ev(T0 + 1, "d", 2.0), c2),
            with_filters(ev(T0 + 2, "d", 3.0), c1_padded),
            ev(T0 + 3, "d", 4.0),
            with_filters(ev(T0 + 4, "d", 5.0), c1),
        ],
    );
    assert_eq!(outputs.len(), 1);
    assert_eq!(summary(&outputs[0]), (T0 + MIN, "d", 2, 3.0, 1.0, 5.0));
    assert_eq!(e.stats().unmatched, 3, "C2, \"C1 \" and no filter at all");
}

#[test]
fn included_dims_split_groups_and_the_others_are_null() {
    let doc = rule(
        1,
        "COUNTGREATEROREQUAL",
        1.0,
        r#", "includeDim": {"0": "FALSE", "2": "TRUE", "4": true}"#,
    );
    let mut e = engine(&[doc]);
    let outputs = run(
        &mut e,
        &[
            with_dims(
                ev(T0, "d", 98.0),
                [Some("N1"), None, Some("N024"), None, None],
            ),
            with_dims(
                ev(T0 + 1, "d", 95.0),
                [Some("N2"), None, Some("N024"), None, None],
            ),
            with_dims(
                ev(T0 + 2, "d", 80.0),
                [Some("N3"), None, Some("N014"), None, Some("x")],
            ),
        ],
    );
    let got: Vec<_> = outputs
        .iter()
        .map(|o| (o.dims.clone(), o.aggregate.count, o.aggregate.avg()))
        .collect();
    assert_eq!(
        got,
        [
            (
                [None, None, Some("N014".into()), None, Some("x".into())],
                1,
                80.0
            ),
            ([None, None, Some("N024".into()), None, None], 2, 96.5),
        ],
        "dim0 differs between the N024 events but is not included, so they are one group"
    );
    let line = outputs[1].to_json_line();
    assert!(
        line.contains(r#""dim0":null,"dim1":null,"dim2":"N024","dim3":null,"dim4":null"#),
        "{line}"
    );
}

#[test]
fn string_rule_ids_stay_strings_in_outputs() {
    let doc =
        rule(1, "COUNTGREATEROREQUAL", 1.0, "").replace("\"ruleId\": 1", "\"ruleId\": \"cpu-hot\"");
    let mut e = engine(&[doc]);
    let outputs = run(&mut e, &[ev(T0 + 1_500, "edge-1", 42.0)]);
    assert_eq!(
        outputs[0].to_json_line(),
        concat!(
            r#"{"time":"2018-04-30T14:51:00.000Z","deviceid":"edge-1","ruleid":"cpu-hot","metric":"m","#,
            r#""alert":"a1","avg":42.0,"min":42.0,"max":42.0,"#,
            r#""dim0":null,"dim1":null,"dim2":null,"dim3":null,"dim4":null,"count":1}"#
        )
    );
}

#[test]
fn an_event_at_a_windows_end_belongs_to_the_next_window() {
    let mut e = engine(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    let first = e.push(&ev(T0 + MIN - 1, "d", 1.0));
    assert!(first.is_empty());
    let closed = e.push(&ev(T0 + MIN, "d", 2.0));
    assert_eq!(
        closed.outputs.iter().map(summary).collect::<Vec<_>>(),
        [(T0 + MIN, "d", 1, 1.0, 1.0, 1.0)],
        "the event at the end closed the first window without joining it"
    );
    let last = e.finish();
    assert_eq!(
        last.outputs.iter().map(summary).collect::<Vec<_>>(),
        [(T0 + 2 * MIN, "d", 1, 2.0, 2.0, 2.0)]
    );
}

#[test]
fn windows_follow_the_rules_length_and_align_to_the_epoch() {
    let mut e = engine(&[rule(1, "COUNTGREATEROREQUAL", 1.0, r#", "window": "5m""#)]);
    // T0 is 14:50, a multiple of 5 minutes too: 14:50 to 14:55 is one window.
    let outputs = run(
        &mut e,
        &[
            ev(T0, "d", 1.0),
            ev(T0 + 4 * MIN, "d", 3.0),
            ev(T0 + 5 * MIN, "d", 7.0),
        ],
    );
    let got: Vec<_> = outputs.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (T0 + 5 * MIN, "d", 2, 2.0, 1.0, 3.0),
            (T0 + 10 * MIN, "d", 1, 7.0, 7.0, 7.0)
        ]
    );
}

#[test]
fn out_of_order_events_within_the_open_window_count_but_late_ones_are_skipped() {
    let mut e = engine(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    let mut outputs = Vec::new();
    for event in [
        ev(T0 + 30_000, "d", 1.0),
        ev(T0 + 10_000, "d", 2.0),
        ev(T0 + MIN + 1_000, "d", 4.0),
        ev(T0 + 59_000, "d", 100.0),
    ] {
        outputs.extend(e.push(&event).outputs);
    }
    outputs.extend(e.finish().outputs);
    let got: Vec<_> = outputs.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            (T0 + MIN, "d", 2, 1.5, 1.0, 2.0),
            (T0 + 2 * MIN, "d", 1, 4.0, 4.0, 4.0)
        ]
    );
    assert_eq!((e.stats().accepted, e.stats().late), (3, 1));
}

#[test]
fn the_group_cap_drops_new_groups_and_counts_them() {
    let set = rules(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    let mut e = Engine::new(
        set,
        Limits {
            groups_per_window: 2,
        },
    );
    let outputs = run(
        &mut e,
        &[
            ev(T0, "a", 1.0),
            ev(T0 + 1, "b", 1.0),
            ev(T0 + 2, "c", 1.0),
            ev(T0 + 3, "a", 3.0),
            ev(T0 + 4, "d", 1.0),
            ev(T0 + MIN, "c", 5.0),
        ],
    );
    let got: Vec<_> = outputs
        .iter()
        .map(|o| (o.time, o.device.as_str(), o.aggregate.count))
        .collect();
    assert_eq!(
        got,
        [
            (T0 + MIN, "a", 2),
            (T0 + MIN, "b", 1),
            (T0 + 2 * MIN, "c", 1)
        ],
        "c and d were dropped in the first window; c fits in the next"
    );
    assert_eq!((e.stats().accepted, e.stats().over_cap), (4, 2));
}

#[test]
fn consecutive_matching_windows_are_one_episode_resolved_by_the_first_that_does_not_match() {
    let mut e = engine(&[rule(7, "AVGGREATEROREQUAL", 90.0, "")]);
    let mut changes = Vec::new();
    for (t, v) in [(0, 95.0), (MIN, 92.0), (2 * MIN, 50.0), (3 * MIN, 91.0)] {
        changes.extend(e.push(&ev(T0 + t, "d", v)).changes);
    }
    changes.extend(e.finish().changes);
    let got: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Fired {
                started_at,
                output,
                key,
                ..
            } => {
                format!(
                    "fired {} {} avg {}",
                    key.rule,
                    started_at - T0,
                    output.aggregate.avg()
                )
            }
            Change::Resolved {
                started_at,
                at,
                aggregate,
                cause,
                ..
            } => format!(
                "resolved {} at {} {:?} avg {:?}",
                started_at - T0,
                at - T0,
                cause,
                aggregate.map(|a| a.avg())
            ),
        })
        .collect();
    assert_eq!(
        got,
        [
            format!("fired 7 {MIN} avg 95"),
            format!(
                "resolved {MIN} at {} NoLongerMatches avg Some(50.0)",
                3 * MIN
            ),
            format!("fired 7 {} avg 91", 4 * MIN),
        ]
    );
    assert_eq!(e.firing().count(), 1);
}

#[test]
fn a_silent_device_resolves_at_the_first_empty_window_even_when_windows_are_skipped() {
    let mut e = engine(&[rule(1, "MAXGREATEROREQUAL", 90.0, "")]);
    e.push(&ev(T0, "quiet", 95.0));
    e.push(&ev(T0 + 1, "loud", 95.0));
    let closed = e.push(&ev(T0 + MIN, "loud", 99.0));
    assert_eq!(closed.changes.len(), 2, "both fire");
    // Ten minutes of nothing, then the wall clock closes the windows.
    let closed = e.close_until(T0 + 11 * MIN);
    let got: Vec<_> = closed
        .changes
        .iter()
        .map(|c| match c {
            Change::Resolved {
                key,
                at,
                cause,
                aggregate,
                ..
            } => (
                key.group.device.clone(),
                *at - T0,
                *cause,
                aggregate.is_some(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("quiet".to_owned(), 2 * MIN, Cause::NoData, false),
            ("loud".to_owned(), 3 * MIN, Cause::NoData, false),
        ],
        "quiet had no event in 14:51-14:52; loud's 14:51 window matched, 14:52-14:53 was empty"
    );
    assert_eq!(closed.outputs.len(), 1, "loud's second window");
    assert_eq!(e.firing().count(), 0);
}

#[test]
fn close_until_closes_on_the_clock_and_never_goes_back() {
    let mut e = engine(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    e.push(&ev(T0 + 5_000, "d", 1.0));
    assert!(e.close_until(T0 + MIN - 1).is_empty());
    assert_eq!(e.close_until(T0 + MIN).outputs.len(), 1);
    assert!(e.close_until(T0).is_empty());
    assert_eq!(e.watermark(), Some(T0 + MIN));
    e.push(&ev(T0 + 1_000, "d", 1.0));
    assert_eq!(e.stats().late, 1);
}

#[test]
fn bad_values_are_counted_not_aggregated() {
    let mut e = engine(&[rule(1, "MAXGREATEROREQUAL", 0.0, "")]);
    let outputs = run(
        &mut e,
        &[
            ev(T0, "d", f64::NAN),
            ev(T0 + 1, "d", f64::INFINITY),
            ev(T0 + 2, "d", 1.0),
        ],
    );
    assert_eq!(outputs.len(), 1);
    assert_eq!(summary(&outputs[0]), (T0 + MIN, "d", 1, 1.0, 1.0, 1.0));
    assert_eq!((e.stats().bad, e.stats().accepted), (2, 1));
}

#[test]
fn replace_keeps_open_windows_and_episodes_of_rules_that_still_select_the_same() {
    let mut e = engine(&[rule(1, "AVGGREATEROREQUAL", 90.0, "")]);
    e.push(&ev(T0, "d", 95.0));
    let fired = e.push(&ev(T0 + MIN, "d", 97.0)).changes;
    assert!(matches!(&fired[..], [Change::Fired { started_at, .. }] if *started_at == T0 + MIN));
    // Mid-window, a new version raises the alert's name and lowers its value.
    let doc = rule(1, "AVGGREATEROREQUAL", 80.0, "").replace("\"a1\"", "\"renamed\"");
    let changes = e.replace(rules(&[doc]));
    assert!(changes.is_empty(), "{changes:?}");
    e.push(&ev(T0 + MIN + 30_000, "d", 85.0));
    let closed = e.finish();
    assert!(
        closed.changes.is_empty(),
        "the episode goes on: {:?}",
        closed.changes
    );
    let [o] = &closed.outputs[..] else {
        panic!("{:?}", closed.outputs)
    };
    assert_eq!(o.alert, "renamed");
    assert_eq!(
        (o.aggregate.count, o.aggregate.avg()),
        (2, 91.0),
        "the window opened before the replacement kept its first event"
    );
    let (_, _, started_at) = e.firing().next().unwrap();
    assert_eq!(started_at, T0 + MIN);
}

#[test]
fn replace_resolves_removed_and_changed_rules_and_drops_their_windows() {
    let mut e = engine(&[
        rule(1, "AVGGREATEROREQUAL", 90.0, ""),
        rule(2, "AVGGREATEROREQUAL", 90.0, ""),
        rule(3, "AVGGREATEROREQUAL", 90.0, ""),
    ]);
    e.push(&ev(T0, "d", 95.0));
    assert_eq!(e.push(&ev(T0 + MIN, "d", 95.0)).changes.len(), 3);
    e.push(&ev(T0 + MIN + 10_000, "d", 99.0));
    let changed = rule(2, "AVGGREATEROREQUAL", 90.0, r#", "window": "2m""#);
    let changes = e.replace(rules(&[rule(3, "AVGGREATEROREQUAL", 90.0, ""), changed]));
    let got: Vec<_> = changes
        .iter()
        .map(|c| match c {
            Change::Resolved {
                rule,
                at,
                cause,
                started_at,
                ..
            } => (rule.id.to_string(), *at - T0, *cause, *started_at - T0),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2".to_owned(), MIN + 10_000, Cause::RuleChanged, MIN),
            ("1".to_owned(), MIN + 10_000, Cause::RuleRemoved, MIN),
        ]
    );
    let ids: Vec<String> = e.rules().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["3", "2"], "the new document's order");
    let closed = e.close_until(T0 + 2 * MIN);
    let got: Vec<_> = closed
        .outputs
        .iter()
        .map(|o| (o.rule_id.to_string(), o.aggregate.count))
        .collect();
    assert_eq!(
        got,
        [("3".to_owned(), 2)],
        "only the kept rule reports the window opened before the replacement"
    );
}

#[test]
fn an_added_rule_starts_with_the_next_whole_window() {
    let mut e = engine(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    e.push(&ev(T0 + 30_000, "d", 1.0));
    let changes = e.replace(rules(&[
        rule(1, "COUNTGREATEROREQUAL", 1.0, ""),
        rule(2, "COUNTEQUALORLESS", 5.0, ""),
    ]));
    assert!(changes.is_empty());
    let outputs = run(
        &mut e,
        &[ev(T0 + 40_000, "d", 2.0), ev(T0 + MIN + 5_000, "d", 3.0)],
    );
    let got: Vec<_> = outputs
        .iter()
        .map(|o| (o.rule_id.to_string(), o.time - T0, o.aggregate.count))
        .collect();
    assert_eq!(
        got,
        [
            ("1".to_owned(), MIN, 2),
            ("1".to_owned(), 2 * MIN, 1),
            ("2".to_owned(), 2 * MIN, 1),
        ],
        "rule 2 never saw the partial window 14:50-14:51"
    );
    assert_eq!(
        e.stats().late,
        0,
        "an event before a new rule's start is not late"
    );
}

#[test]
fn rules_are_shared_with_the_set_they_came_from() {
    let set = rules(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    let e = Engine::new(set.clone(), Limits::default());
    assert!(Arc::ptr_eq(e.rules().next().unwrap(), &set.rules()[0]));
}

#[test]
fn test_rules_notes_bad_and_late_events_and_still_prints_outputs() {
    let rules_doc = rules(&[rule(1, "COUNTGREATEROREQUAL", 1.0, "")]);
    let text = concat!(
        "{\"metric\": \"m\", \"value\": 1, \"deviceId\": \"d\", \"time\": \"2018-04-30T14:50:10Z\"}\n",
        "{\"metric\": \"m\", \"value\": \"high\", \"deviceId\": \"d\", \"time\": 1}\n",
        "{\"metric\": \"m\", \"value\": 2, \"deviceId\": \"d\", \"time\": \"2018-04-30T14:51:10Z\"}\n",
        "{\"metric\": \"m\", \"value\": 3, \"deviceId\": \"d\", \"time\": \"2018-04-30T14:50:20Z\"}\n",
        "{\"metric\": \"other\", \"value\": 3, \"deviceId\": \"d\", \"time\": \"2018-04-30T14:51:20Z\"}\n",
    );
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let s = test_rules(
        rules_doc,
        "ev.json",
        text,
        Limits::default(),
        &mut out,
        &mut notes,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let times: Vec<&str> = out.lines().map(|l| &l[9..33]).collect();
    assert_eq!(
        times,
        ["2018-04-30T14:51:00.000Z", "2018-04-30T14:52:00.000Z"]
    );
    assert_eq!(
        String::from_utf8(notes).unwrap(),
        concat!(
            "bad event: ev.json, line 2: value: expected a finite number, got \"high\"\n",
            "late event: ev.json, line 4: its window had already closed when it came (events are taken in file order)\n",
            "test-rules: 5 events: 2 accepted, 1 matched no rule, 1 late, 0 over the group cap, 1 bad; 2 output events\n",
        )
    );
    assert_eq!(s.outputs, 2);
}
