//! Shared by the segment targets: an input whose first byte is odd is a list of frame
//! bodies (one length byte, then the body), framed here with their right length and CRC
//! (`[len u32 LE][crc32 u32 LE][body]`) so the fuzzer reaches the record decoder behind
//! the checksum; otherwise the rest of the input is the file as it is.

pub fn file(mode: u8, mut rest: &[u8]) -> Vec<u8> {
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let body = &tail[..usize::from(len).min(tail.len())];
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        rest = &tail[body.len()..];
    }
    out
}
