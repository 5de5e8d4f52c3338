//! Readings on the ingest topics, as device models take them: `Devices::on_message` with a
//! small definition (two metrics, at most 8 instances). The first byte picks the device
//! (topic) and the arrival time step; the rest is the payload. Each input is fed as a
//! stream of messages separated by 0xFF, with a tick after each, so intervals close and
//! are scored.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_agent::decide::DetectorConfig;
use lookout_agent::devices::bucket::Aggregate;
use lookout_agent::devices::config::DeviceSpec;
use lookout_agent::devices::{Devices, DevicesParams};
use lookout_agent::scorer::config::Span;
use lookout_agent::scorer::fit::Inline;
use std::time::Duration;

const T0: i64 = 1_796_601_600_000;

fn devices() -> Devices {
    let mut c = DetectorConfig::default();
    c.train.window = Span::Ticks(20);
    c.train.every = Span::Ticks(10);
    c.train.min_points = Span::Ticks(20);
    c.alarm.suppress = 0;
    c.alarm.settle = 0;
    let detector = c
        .resolve_at(Duration::from_secs(1))
        .expect("detector resolves");
    let spec = DeviceSpec {
        name: "shop".into(),
        device: "shop-*".into(),
        topic: None,
        metrics: vec![
            ("orders".into(), Aggregate::Count),
            ("temp".into(), Aggregate::Mean),
        ],
        max_instances: 8,
        max_rate: 1000.0,
        detector,
    };
    Devices::new(DevicesParams {
        prefix: "lookout".into(),
        host: "edge-1".into(),
        labels: Default::default(),
        interval: Duration::from_secs(1),
        specs: vec![spec],
        snapshots: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut d = devices();
    let mut fit = Inline::new(64, 8, 8);
    let mut out = Vec::new();
    let mut now = T0;
    for msg in data.split(|b| *b == 0xFF).take(200) {
        let Some((&pick, payload)) = msg.split_first() else {
            continue;
        };
        let topic = format!("lookout/ingest/shop-{}", pick % 16);
        now += i64::from(pick >> 4) * 250;
        d.on_message(&topic, payload, now, &mut fit, &mut out);
        d.tick(now, &mut fit, &mut out);
        out.clear();
    }
});
