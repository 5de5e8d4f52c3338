use std::collections::BTreeMap;

use lookout_shared::payload::{Alarm, AlarmState, Score};

use super::*;
use crate::alarm::Direction;
use crate::decide::{Detector, DetectorConfig};
use crate::scorer::config::Span;
use crate::scorer::fit::Inline;
use crate::scorer::testing::noise;

/// 2026-12-07 00:00 UTC: readings are timed on arrival, so the clock is the test's.
const T0: i64 = 1_796_601_600_000;

/// A detector that learns in 100 ticks and alarms at once, as a device model would after
/// its first day; direction down, as for a business volume.
fn small(direction: Direction) -> Detector {
    let mut c = DetectorConfig::default();
    c.train.window = Span::Ticks(100);
    c.train.every = Span::Ticks(50);
    c.train.min_points = Span::Ticks(100);
    c.alarm.suppress = 0;
    c.alarm.settle = 0;
    c.alarm.settle_for = lookout_shared::duration::HumanDuration::from_secs(0);
    c.alarm.young_for = lookout_shared::duration::HumanDuration::from_secs(0);
    c.alarm.direction = direction;
    c.context.levels = 0;
    c.resolve_at(Duration::from_secs(1)).unwrap()
}

fn spec(name: &str, metrics: &[(&str, Aggregate)], max_instances: usize) -> DeviceSpec {
    DeviceSpec {
        name: name.into(),
        device: "shop-*".into(),
        topic: None,
        metrics: metrics.iter().map(|(m, a)| ((*m).to_owned(), *a)).collect(),
        max_instances,
        max_rate: config::DEFAULT_MAX_RATE,
        detector: small(Direction::Down),
    }
}

fn devices(specs: Vec<DeviceSpec>, snapshots: Option<PathBuf>) -> Devices {
    Devices::new(DevicesParams {
        prefix: "lookout".into(),
        host: "edge-1".into(),
        labels: Labels::new(),
        interval: Duration::from_secs(1),
        specs,
        snapshots,
    })
}

/// What came out, read back.
#[derive(Default)]
struct Seen {
    scores: BTreeMap<String, Vec<Score>>,
    alarms: Vec<(String, Alarm)>,
}

impl Seen {
    fn take(&mut self, out: &mut Vec<Out>) {
        for o in out.drain(..) {
            match o {
                Out::Score { topic, payload } => {
                    let s: Score = serde_json::from_slice(&payload).unwrap();
                    self.scores.entry(topic).or_default().push(s);
                }
                Out::Alarm { topic, payload } => {
                    self.alarms
                        .push((topic, serde_json::from_slice(&payload).unwrap()));
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn fired(&self, topic: &str) -> usize {
        self.alarms
            .iter()
            .filter(|(t, a)| t == topic && a.state == AlarmState::Firing)
            .count()
    }
}

/// Sends `per_second` readings of `metric` for each device every second from `from` to
/// `to` (s), `value(device index, second)` each, and ticks the models after each second.
#[allow(clippy::too_many_arguments)]
fn feed(
    d: &mut Devices,
    fit: &mut Inline,
    seen: &mut Seen,
    shops: &[&str],
    metric: &str,
    per_second: usize,
    secs: std::ops::Range<i64>,
    value: impl Fn(usize, i64) -> f64,
) {
    let mut out = Vec::new();
    for s in secs {
        for (di, shop) in shops.iter().enumerate() {
            for k in 0..per_second {
                let now = T0 + s * 1000 + 100 + k as i64 * 10;
                let payload = format!("{{\"metric\": \"{metric}\", \"value\": {}}}", value(di, s));
                d.on_message(
                    &format!("lookout/ingest/{shop}"),
                    payload.as_bytes(),
                    now,
                    fit,
                    &mut out,
                );
            }
        }
        d.tick(T0 + s * 1000 + 900, fit, &mut out);
        seen.take(&mut out);
    }
}

fn requests(di: usize, s: i64) -> f64 {
    50.0 + 5.0 * noise(s as u64, di as u64)
}

#[test]
fn each_device_gets_its_own_model_and_a_drop_alarms_only_the_device_that_dropped() {
    let mut d = devices(
        vec![spec("requests", &[("requests", Aggregate::Sum)], 8)],
        None,
    );
    let mut fit = Inline::new(200, 8, 8);
    let mut seen = Seen::default();
    let shops = ["shop-1", "shop-2"];
    // Two readings a second each: the model sees their sum, about 100.
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &shops,
        "requests",
        2,
        0..400,
        requests,
    );
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &shops,
        "requests",
        2,
        400..460,
        |di, s| {
            if di == 1 { 5.0 } else { requests(di, s) }
        },
    );
    let r = d.report();
    assert_eq!((r.instances, r.created, r.evicted), (2, 2, 0));
    assert_eq!(r.readings, 2 * 2 * 460);
    let one = &seen.scores["lookout/edge-1/scores/requests/shop-1"];
    assert_eq!(one.last().unwrap().device.as_deref(), Some("shop-1"));
    assert_eq!(one.last().unwrap().model, "requests");
    assert!(one.len() >= 455, "one score per interval: {}", one.len());
    assert!(
        seen.fired("lookout/edge-1/alarms/requests/shop-2") >= 1,
        "{:?}",
        seen.alarms
    );
    assert_eq!(
        seen.fired("lookout/edge-1/alarms/requests/shop-1"),
        0,
        "{:?}",
        seen.alarms
    );
    let (_, a) = &seen.alarms[0];
    assert_eq!(a.source, "requests");
    assert_eq!(a.labels["device"], "shop-2");
    assert!(a.id.starts_with("edge-1:requests/shop-2:"), "{}", a.id);
    assert!(a.summary.contains("on shop-2"), "{}", a.summary);
    // A rise on shop-1 is fine for a business volume (direction down).
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &shops[..1],
        "requests",
        2,
        460..520,
        |_, _| 400.0,
    );
    assert_eq!(
        seen.fired("lookout/edge-1/alarms/requests/shop-1"),
        0,
        "{:?}",
        seen.alarms
    );
}

#[test]
fn an_interval_without_a_reading_is_a_gap_not_a_zero() {
    let mut d = devices(
        vec![spec("requests", &[("requests", Aggregate::Sum)], 8)],
        None,
    );
    let mut fit = Inline::new(200, 8, 8);
    let mut seen = Seen::default();
    // Readings every other second only.
    let mut out = Vec::new();
    for s in 0..200i64 {
        if s % 2 == 0 {
            let p = format!(
                "{{\"metric\": \"requests\", \"value\": {}}}",
                requests(0, s)
            );
            d.on_message(
                "lookout/ingest/shop-1",
                p.as_bytes(),
                T0 + s * 1000 + 100,
                &mut fit,
                &mut out,
            );
        }
        d.tick(T0 + s * 1000 + 900, &mut fit, &mut out);
    }
    seen.take(&mut out);
    let scores = &seen.scores["lookout/edge-1/scores/requests/shop-1"];
    // 100 intervals had a reading (the last one may still be open): no zeros in between.
    assert!((99..=100).contains(&scores.len()), "{}", scores.len());
    assert!(scores.windows(2).all(|w| w[1].ts - w[0].ts == 2000));
    assert_eq!(
        d.report().gaps,
        0,
        "an interval nobody opened is no gap to count"
    );
}

#[test]
fn a_model_of_two_metrics_skips_an_interval_where_one_is_missing() {
    let s = spec(
        "pump",
        &[("flow", Aggregate::Mean), ("pressure", Aggregate::Last)],
        4,
    );
    let mut d = devices(vec![s], None);
    let mut fit = Inline::new(200, 8, 8);
    let mut out = Vec::new();
    let ingest = "lookout/ingest/shop-9";
    d.on_message(
        ingest,
        br#"{"metric": "flow", "value": 31.5}"#,
        T0 + 100,
        &mut fit,
        &mut out,
    );
    d.on_message(
        ingest,
        br#"{"metric": "pressure", "value": 0.7}"#,
        T0 + 200,
        &mut fit,
        &mut out,
    );
    d.on_message(
        ingest,
        br#"{"metric": "flow", "value": 32.5}"#,
        T0 + 1100,
        &mut fit,
        &mut out,
    );
    d.tick(T0 + 3000, &mut fit, &mut out);
    let r = d.report();
    assert_eq!((r.readings, r.gaps), (3, 1));
    // The first interval was complete: the model took it (learning, so a null score).
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn beyond_max_instances_the_least_recently_seen_device_is_evicted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = devices(
        vec![spec("requests", &[("requests", Aggregate::Sum)], 2)],
        Some(dir.path().to_path_buf()),
    );
    let mut fit = Inline::new(200, 8, 8);
    let mut seen = Seen::default();
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &["shop-1", "shop-2"],
        "requests",
        1,
        0..150,
        requests,
    );
    // shop-2 again, then a third device: shop-1 was seen least recently.
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &["shop-2"],
        "requests",
        1,
        150..152,
        requests,
    );
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &["shop-3"],
        "requests",
        1,
        152..160,
        requests,
    );
    let r = d.report();
    assert_eq!((r.instances, r.created, r.evicted), (2, 3, 1));
    let evicted = d.take_evicted();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].1, "shop-1");
    for (store, name, bytes) in evicted {
        store.save(&name, &bytes).unwrap();
    }
    assert!(
        dir.path()
            .join("edge-1/devices/requests/shop-1.snap")
            .exists()
    );
    // shop-1 comes back: it takes its model back and scores at once, without relearning.
    let mut out = Vec::new();
    d.on_message(
        "lookout/ingest/shop-1",
        b"{\"metric\": \"requests\", \"value\": 50}",
        T0 + 170_100,
        &mut fit,
        &mut out,
    );
    d.tick(T0 + 172_000, &mut fit, &mut out);
    seen.take(&mut out);
    let back = seen.scores["lookout/edge-1/scores/requests/shop-1"]
        .last()
        .unwrap();
    assert_eq!(back.ts, T0 + 170_000);
    assert!(back.score.is_some(), "restored, not learning: {back:?}");
    assert_eq!(d.report().evicted, 2, "shop-2 made room for it");
}

#[test]
fn bad_readings_are_dropped_by_reason_and_good_devices_keep_scoring() {
    let mut d = devices(
        vec![spec("requests", &[("requests", Aggregate::Sum)], 8)],
        None,
    );
    let mut fit = Inline::new(200, 8, 8);
    let mut seen = Seen::default();
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &["shop-1"],
        "requests",
        1,
        0..120,
        requests,
    );
    let before = seen.scores["lookout/edge-1/scores/requests/shop-1"].len();
    let now = T0 + 120_500;
    let mut out = Vec::new();
    let huge = vec![b'7'; 10 * 1024 * 1024];
    let bad: [&[u8]; 8] = [
        b"\"many\"",
        b"NaN",
        b"{\"metric\": \"requests\", \"value\": \"many\"}",
        b"{\"metric\": \"requests\", \"value\": 1e999}",
        b"\xff\xfe",
        b"",
        b"{\"metric\": \"requests\"",
        &huge,
    ];
    for p in bad {
        d.on_message("lookout/ingest/shop-2", p, now, &mut fit, &mut out);
    }
    // A year ahead, a day behind.
    let t = |ms: i64| format!("{{\"metric\": \"requests\", \"value\": 1, \"time\": {ms}}}");
    d.on_message(
        "lookout/ingest/shop-2",
        t(now + 365 * 86_400_000).as_bytes(),
        now,
        &mut fit,
        &mut out,
    );
    d.on_message(
        "lookout/ingest/shop-2",
        t(now - 86_400_000).as_bytes(),
        now,
        &mut fit,
        &mut out,
    );
    // A huge number is a number: taken, and the model's limits decide.
    d.on_message(
        "lookout/ingest/shop-3",
        b"{\"metric\": \"requests\", \"value\": 1e300}",
        now,
        &mut fit,
        &mut out,
    );
    // A flood from one device: 20 a second by default.
    for _ in 0..100 {
        d.on_message(
            "lookout/ingest/shop-4",
            b"{\"metric\": \"requests\", \"value\": 3}",
            now,
            &mut fit,
            &mut out,
        );
    }
    let r = d.report();
    assert_eq!(r.dropped.bad, 8, "{r:?}");
    assert_eq!((r.dropped.future, r.dropped.late), (1, 1), "{r:?}");
    assert_eq!(r.dropped.rate, 80, "{r:?}");
    seen.take(&mut out);
    feed(
        &mut d,
        &mut fit,
        &mut seen,
        &["shop-1"],
        "requests",
        1,
        121..140,
        requests,
    );
    let after = seen.scores["lookout/edge-1/scores/requests/shop-1"].len();
    assert!(
        after >= before + 18,
        "shop-1 kept scoring: {before} -> {after}"
    );
    // Devices outside the glob and metrics the model does not have are only counted.
    d.on_message(
        "lookout/ingest/plant-1",
        b"{\"metric\": \"requests\", \"value\": 3}",
        now,
        &mut fit,
        &mut out,
    );
    d.on_message(
        "lookout/ingest/shop-1",
        b"{\"metric\": \"temp\", \"value\": 3}",
        now,
        &mut fit,
        &mut out,
    );
    assert_eq!(d.report().unmatched, 2);
}

#[test]
fn a_topic_model_takes_bare_numbers_and_names_the_device_by_its_plus_level() {
    let mut s = spec("temp", &[("temp", Aggregate::Mean)], 8);
    s.topic = Some("plant/+/temperature".into());
    s.device = "*".into();
    let mut d = devices(vec![s], None);
    assert_eq!(d.filters(), ["plant/+/temperature"]);
    let mut fit = Inline::new(200, 8, 8);
    let mut out = Vec::new();
    d.on_message(
        "plant/pump-1/temperature",
        b"26.5",
        T0 + 100,
        &mut fit,
        &mut out,
    );
    d.on_message(
        "plant/pump-1/temperature",
        b" 27.5\n",
        T0 + 600,
        &mut fit,
        &mut out,
    );
    d.on_message(
        "plant/pump-2/temperature",
        br#"{"metric": "temp", "value": 79}"#,
        T0 + 700,
        &mut fit,
        &mut out,
    );
    d.on_message("plant/pump-2/flow", b"3", T0 + 700, &mut fit, &mut out);
    d.on_message(
        "lookout/ingest/pump-3",
        b"{\"metric\": \"temp\", \"value\": 1}",
        T0 + 700,
        &mut fit,
        &mut out,
    );
    d.tick(T0 + 2000, &mut fit, &mut out);
    let topics: Vec<&str> = out.iter().map(Out::topic).collect();
    assert_eq!(
        topics,
        [
            "lookout/edge-1/scores/temp/pump-1",
            "lookout/edge-1/scores/temp/pump-2"
        ]
    );
    assert_eq!(d.report().readings, 3);
}

#[test]
fn snapshot_file_names_keep_devices_apart_and_inside_their_directory() {
    assert_eq!(file_name("shop-1"), "shop-1");
    assert_eq!(file_name("../etc"), "%2E%2E%2Fetc");
    assert_ne!(file_name("a b"), file_name("a_b"));
    assert_ne!(file_name("a/b"), file_name("a_b"));
}
