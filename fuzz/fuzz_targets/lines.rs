//! Shared by the two line-log targets: checksummed lines `<crc32 hex> <body>\n`.
//! Random bytes rarely carry a right checksum, so an input whose first byte is odd has
//! its lines checksummed here first, and the fuzzer reaches the record parsers.

/// The log to read: the input as is (first byte even) or its lines checksummed.
pub fn log_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::with_capacity(rest.len() + rest.len() / 4);
    for line in rest.split(|b| *b == b'\n') {
        out.extend_from_slice(format!("{:08x} ", crc32fast::hash(line)).as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    if mode & 2 != 0 {
        // A torn tail: the last line without its newline.
        out.pop();
    }
    out
}
