//! Events on `<prefix>/ingest/<device>`: an array, one object per line, or objects
//! concatenated, each read to an event or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_agent::rules::{Defaults, events};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let defaults = Defaults {
        device: Some("shop-1"),
        time: Some(1_796_601_600_000),
    };
    for e in events("lookout/ingest/shop-1", &text, defaults).take(100_000) {
        let _ = e;
    }
});
