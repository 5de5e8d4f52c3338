//! The buffer of scores and metrics kept during an outage (`link::ring`, `[buffer]` and
//! `[[upstream]]`): whatever bytes a damaged segment file holds, opened as a ring after a
//! crash, read, appended to, downsampled and acknowledged. An input whose first byte is
//! odd is a list of frame bodies (one length byte, then the body), framed here with their
//! right length and CRC so the fuzzer reaches the entry decoder; otherwise the input is
//! the file. Its second byte picks whether the file is a downsampled (`.min`) segment.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[path = "framed.rs"]
mod framed;
use lookout_agent::link::ring::{Ring, RingSettings, merge_minute};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&kind, rest)) = rest.split_first() else {
        return;
    };
    let bytes = framed::file(mode, rest);
    let dir = std::env::temp_dir().join(format!("lookout-fuzz-ring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let name = if kind & 1 == 0 {
        "00000000000000000001.seg"
    } else {
        "00000000000000000001.min.seg"
    };
    std::fs::write(dir.join(name), &bytes).unwrap();
    // A small ring, so that a push downsamples or drops what was read.
    let settings = RingSettings {
        dir: dir.clone(),
        max_bytes: 64 * 1024,
        max_age: Duration::from_secs(3600),
        segment_bytes: 16 * 1024,
    };
    let Ok(mut ring) = Ring::open(settings) else {
        return;
    };
    let got = ring.peek(10_000);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids out of order");
    let payloads: Vec<&[u8]> = got.iter().map(|e| e.payload.as_slice()).collect();
    let _ = merge_minute(&payloads);
    for i in 0..200 {
        ring.push("lookout/h/scores/m", br#"{"ts":1,"score":0.5,"anomalous":false}"#, i * 1000);
    }
    let after = ring.peek(10_000);
    assert!(after.windows(2).all(|w| w[0].id < w[1].id), "ids out of order after pushes");
    if let Some(e) = after.get(after.len() / 2) {
        ring.ack(e.id);
    }
    assert!(ring.stats().bytes <= 64 * 1024 + 16 * 1024);
    drop(ring);
    let _ = std::fs::remove_dir_all(&dir);
});
