//! The agent's durable outbox: a segment file's bytes, read back after a crash. An input
//! whose first byte is odd is a list of frame bodies (one length byte, then the body),
//! framed here with their right length and CRC so the fuzzer reaches the record decoder;
//! otherwise the input is the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_agent::link::outbox::parse_segment;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut out = Vec::new();
        while let Some((&len, tail)) = rest.split_first() {
            let body = &tail[..usize::from(len).min(tail.len())];
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            out.extend_from_slice(body);
            rest = &tail[body.len()..];
        }
        out
    };
    let (records, good) = parse_segment(&bytes);
    assert!(good as usize <= bytes.len());
    assert!(records.len() <= bytes.len() / 8);
});
