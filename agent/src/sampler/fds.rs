//! `/proc/sys/fs/file-nr` → `system.fds`: the host's open file handles against its limit.
//! A host that runs out fails in ways that look like anything but that (accept errors,
//! daemons that cannot open their logs), so the approach to the limit is worth a chart.

use std::path::PathBuf;
use std::sync::Arc;

use super::{OptionalFile, lines};
use crate::frame::Frame;

const DIMS: [&str; 3] = ["allocated", "max", "used_pct"];

pub(super) struct Fds {
    file: OptionalFile,
    chart: Arc<str>,
    dims: [Arc<str>; 3],
}

impl Fds {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            file: OptionalFile::new("fds", path),
            chart: Arc::from("system.fds"),
            dims: DIMS.map(Arc::from),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.file.read(buf) {
            return;
        }
        let Some(values) = lines(buf).next().and_then(parse) else {
            return;
        };
        for (dim, v) in self.dims.iter().zip(values) {
            frame.push(&self.chart, dim, v);
        }
    }
}

/// `3104\t0\t9223372036854775807`: handles allocated, allocated but unused (always 0 since
/// Linux 2.6; older kernels freed lazily), and the limit `fs.file-max`. `allocated, max,
/// used_pct`, where used is allocated minus unused. A limit of 0 is no limit we can read.
fn parse(line: &str) -> Option<[f64; 3]> {
    let mut fields = line.split_whitespace();
    let mut v = [0u64; 3];
    for slot in &mut v {
        *slot = fields.next()?.parse().ok()?;
    }
    let [allocated, unused, max] = v;
    if max == 0 {
        return None;
    }
    let used = allocated.saturating_sub(unused);
    Some([
        allocated as f64,
        max as f64,
        used as f64 * 100.0 / max as f64,
    ])
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixture::{ProcDir, charts, tick};

    #[test]
    fn file_handles_come_from_file_nr() {
        let dir = ProcDir::new();
        dir.write("sys/fs/file-nr", "2048\t48\t100000\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.fds", "allocated"), Some(2048.0));
        assert_eq!(frame.get("system.fds", "max"), Some(100_000.0));
        assert_eq!(frame.get("system.fds", "used_pct"), Some(2.0));
    }

    #[test]
    fn malformed_file_nr_gives_nothing() {
        for bad in ["", "12 0\n", "a b c\n", "10 0 0\n", "-1 0 100\n"] {
            let dir = ProcDir::new();
            dir.write("sys/fs/file-nr", bad);
            let frame = tick(&mut dir.sampler(), Instant::now());
            assert!(!charts(&frame).contains(&"system.fds"), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_file_nr_turns_the_source_off() {
        let dir = ProcDir::new();
        let mut sampler = dir.sampler();
        tick(&mut sampler, Instant::now());
        // Appearing later does not bring it back: the source was turned off for good.
        dir.write("sys/fs/file-nr", "2048\t0\t100000\n");
        let frame = tick(&mut sampler, Instant::now());
        assert!(!charts(&frame).contains(&"system.fds"));
    }
}
