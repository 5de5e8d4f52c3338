//! The bridge's notification log (`notifications.v1.log`): read and replayed at start.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::dedup::replay_bytes;

#[path = "lines.rs"]
mod lines;

fuzz_target!(|data: &[u8]| {
    let _ = replay_bytes(&lines::log_bytes(data), 1000);
});
