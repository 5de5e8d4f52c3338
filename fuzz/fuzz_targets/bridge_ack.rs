//! Acknowledgement requests on `<prefix>/bridge/ack`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::ack;

fuzz_target!(|data: &[u8]| {
    let _ = ack::parse(data, 1_796_601_600_000);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ack::parse_until(text, 1_796_601_600_000);
        let _ = ack::parse_rfc3339(text);
    }
});
