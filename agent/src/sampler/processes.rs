//! `/proc/stat`'s `procs_running` and `procs_blocked`, and a scan of `/proc/<pid>/stat` →
//! `system.processes`: `running`, `blocked`, `total` and `zombies`. A fork bomb, a leak of
//! processes or of zombies (a parent that never reaps) grows these long before memory or
//! the PID limit runs out.
//!
//! The scan costs a walk of `/proc` (one `getdents` pass, and an allocation per entry
//! from `std::fs::read_dir`) and an open, a 64-byte read and a close of `/proc/<pid>/stat`
//! per process: 8-20 µs a process as measured on a 2-core VM (0.6-2 ms a scan of 85-95
//! processes), so 3-6 ms of CPU on a host with 300. Once a second that would be by far
//! the largest cost of the agent's tick, so it runs every [`SCAN_EVERY`] and the ticks in
//! between repeat its counts (models need a value every tick); `running` and `blocked` are
//! read every tick. At most [`MAX_STAT_READS`] stat files are read per scan, so a host
//! with tens of thousands of processes cannot make a scan long; `total` still counts them
//! all.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lines, not_offered};
use crate::frame::Frame;

/// How often `/proc` is scanned for `total` and `zombies`.
const SCAN_EVERY: Duration = Duration::from_secs(10);

/// Stat files read per scan for `zombies`.
const MAX_STAT_READS: usize = 4096;

const DIMS: [&str; 4] = ["running", "blocked", "total", "zombies"];

pub(super) struct Processes {
    root: PathBuf,
    /// `<root>/<pid>/stat`, built in place for each process.
    scratch: PathBuf,
    /// False once `root` could not be listed: the scan's dims are left out for good.
    scan_on: bool,
    last_scan: Option<Instant>,
    /// `total` and `zombies` from the last scan.
    counts: Option<[u64; 2]>,
    chart: Arc<str>,
    dims: [Arc<str>; 4],
}

impl Processes {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            scratch: root.clone(),
            root,
            scan_on: true,
            last_scan: None,
            counts: None,
            chart: Arc::from("system.processes"),
            dims: DIMS.map(Arc::from),
        }
    }

    /// `stat` is this tick's `/proc/stat` when it could be read.
    pub(super) fn sample(&mut self, now: Instant, stat: Option<&[u8]>, frame: &mut Frame) {
        if let Some(stat) = stat {
            let [running, blocked, ..] = &self.dims;
            for line in lines(stat) {
                let mut fields = line.split_whitespace();
                let dim = match fields.next() {
                    Some("procs_running") => running,
                    Some("procs_blocked") => blocked,
                    _ => continue,
                };
                if let Some(n) = fields.next().and_then(|v| v.parse::<u64>().ok()) {
                    frame.push(&self.chart, dim, n as f64);
                }
            }
        }
        let due = self.last_scan.is_none_or(|at| {
            now.checked_duration_since(at)
                .is_none_or(|d| d >= SCAN_EVERY)
        });
        if self.scan_on && due {
            let first = self.last_scan.is_none();
            self.last_scan = Some(now);
            self.counts = self.scan(first);
        }
        let [.., total, zombies] = &self.dims;
        if let Some([t, z]) = self.counts {
            frame.push(&self.chart, total, t as f64);
            frame.push(&self.chart, zombies, z as f64);
        }
    }

    /// `[total, zombies]`; `None`, and the scan off, when `/proc` cannot be listed or lists
    /// no process at the first scan: a procfs always shows at least the agent itself, so
    /// that is no procfs (or not one we can use).
    fn scan(&mut self, first: bool) -> Option<[u64; 2]> {
        let counts = std::fs::read_dir(&self.root)
            .ok()
            .map(|entries| self.count(entries))
            .filter(|[total, _]| *total > 0 || !first);
        if counts.is_none() && first {
            self.scan_on = false;
            not_offered("processes", &self.root);
        }
        counts
    }

    fn count(&mut self, entries: std::fs::ReadDir) -> [u64; 2] {
        let (mut total, mut zombies, mut reads) = (0u64, 0u64, 0usize);
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.is_empty() || !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            total += 1;
            if reads >= MAX_STAT_READS {
                continue;
            }
            reads += 1;
            self.scratch.push(&name);
            self.scratch.push("stat");
            if is_zombie(&self.scratch) {
                zombies += 1;
            }
            self.scratch.pop();
            self.scratch.pop();
        }
        [total, zombies]
    }
}

/// `4242 (name) Z 1 ...`: the state follows the last `)`, since the name may hold spaces
/// and parentheses. The name is at most 15 bytes, so 64 bytes always reach the state. A
/// process that exited since the listing has no file, and is not a zombie.
fn is_zombie(stat: &std::path::Path) -> bool {
    let mut head = [0u8; 64];
    let Ok(n) = File::open(stat).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    let head = head.get(..n).unwrap_or_default();
    let Some(close) = head.iter().rposition(|&b| b == b')') else {
        return false;
    };
    head.get(close + 1..)
        .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()))
        == Some(&b'Z')
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, tick};

    const STAT: &str = "cpu  1 2 3 4 5 6 7 8 0 0\nctxt 6185032\nbtime 1700000000\n\
                        processes 4242\nprocs_running 3\nprocs_blocked 1\n";

    #[test]
    fn process_counts_and_zombies() {
        let dir = ProcDir::new();
        dir.write("stat", STAT);
        dir.write("1/stat", "1 (systemd) S 0 1 1 0 -1 4194560 ...\n");
        dir.write("42/stat", "42 (a) Z (b)) Z 1 42 42 0 -1\n");
        dir.write("43/stat", "43 (worker) R 1 43 43 0 -1\n");
        dir.write("44/stat", "44 (defunct) Z 1 44 44 0 -1\n");
        // Exited between the listing and the read; and not a process.
        std::fs::create_dir(dir.path().join("45")).expect("pid dir");
        dir.write("self/stat", "99 (x) Z 1\n");
        dir.write("4x/stat", "4 (y) Z 1\n");
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let frame = tick(&mut sampler, now);
        let p = |dim| frame.get("system.processes", dim);
        assert_eq!(p("running"), Some(3.0));
        assert_eq!(p("blocked"), Some(1.0));
        assert_eq!(p("total"), Some(5.0));
        assert_eq!(p("zombies"), Some(2.0));

        // Between scans the counts are repeated; the next scan sees the change.
        std::fs::remove_dir_all(dir.path().join("44")).expect("reap");
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("system.processes", "zombies"), Some(2.0));
        let frame = tick(&mut sampler, now + Duration::from_secs(11));
        assert_eq!(frame.get("system.processes", "zombies"), Some(1.0));
        assert_eq!(frame.get("system.processes", "total"), Some(4.0));
    }

    #[test]
    fn malformed_stat_lines_are_skipped() {
        let dir = ProcDir::new();
        dir.write("stat", "procs_running\nprocs_running x\nprocs_blocked -1\n");
        dir.write("7/stat", "7 no parenthesis Z\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.processes", "running"), None);
        assert_eq!(frame.get("system.processes", "blocked"), None);
        assert_eq!(frame.get("system.processes", "total"), Some(1.0));
        assert_eq!(frame.get("system.processes", "zombies"), Some(0.0));
    }

    #[test]
    fn a_missing_proc_gives_no_process_counts() {
        let dir = ProcDir::new();
        let gone = dir.path().join("gone");
        let mut sampler = super::super::HostSampler::new(&gone, gone.join("sys"));
        let now = Instant::now();
        for s in [0, 1, 20] {
            assert!(
                tick(&mut sampler, now + Duration::from_secs(s))
                    .samples
                    .is_empty()
            );
        }
    }
}
