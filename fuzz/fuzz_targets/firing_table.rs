//! The bridge's table of firing alarms (`alarms.v1.log`): read at start.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::firing::Firing;

#[path = "lines.rs"]
mod lines;

fuzz_target!(|data: &[u8]| {
    let mut table = Firing::memory(100);
    let _ = table
        .read(lines::log_bytes(data).as_slice())
        .expect("reading a slice cannot fail");
    assert!(table.len() <= 100);
});
