//! The agent's durable outbox: a segment file's bytes, read back after a crash. An input
//! whose first byte is odd is a list of frame bodies (one length byte, then the body),
//! framed here with their right length and CRC so the fuzzer reaches the record decoder;
//! otherwise the input is the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "framed.rs"]
mod framed;
use lookout_agent::link::outbox::parse_segment;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = framed::file(mode, rest);
    let (records, good) = parse_segment(&bytes);
    assert!(good as usize <= bytes.len());
    assert!(records.len() <= bytes.len() / 8);
});
