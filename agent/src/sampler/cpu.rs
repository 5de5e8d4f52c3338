//! `/proc/stat` → `system.cpu`: the share of all CPUs' time spent in each mode.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ProcFile, lines};
use crate::frame::Frame;

/// In the order of the aggregate `cpu` line's columns.
const DIMS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

pub(super) struct Cpu {
    file: ProcFile,
    /// Jiffies per mode at the previous read, guest time already taken out of user/nice.
    prev: Option<[u64; 10]>,
    chart: Arc<str>,
    dims: [Arc<str>; 10],
}

impl Cpu {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            file: ProcFile::new(path),
            prev: None,
            chart: Arc::from("system.cpu"),
            dims: DIMS.map(Arc::from),
        }
    }

    /// Needs no clock: the jiffies of all modes add up to the elapsed CPU time, which is
    /// the denominator, so the percentages do not depend on tick jitter or on USER_HZ.
    /// True when `buf` holds this tick's `/proc/stat`, for `processes` to read on.
    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) -> bool {
        if !self.file.read(buf) {
            return false;
        }
        self.push(buf, frame);
        true
    }

    fn push(&mut self, buf: &[u8], frame: &mut Frame) {
        let Some(cur) = parse(buf) else {
            return;
        };
        let Some(prev) = self.prev.replace(cur) else {
            return;
        };
        // A mode going backwards (proc(5) warns that iowait can) gives no percentages this
        // tick: the modes share one denominator, so one bad delta would skew them all.
        let Some(delta) = deltas(&prev, &cur) else {
            return;
        };
        let total: f64 = delta.iter().map(|&d| d as f64).sum();
        if total <= 0.0 {
            return;
        }
        for (dim, d) in self.dims.iter().zip(delta) {
            frame.push(&self.chart, dim, d as f64 * 100.0 / total);
        }
    }
}

/// The aggregate `cpu` line. Kernels before 2.6.11 lack the later columns, which count as
/// zero. The kernel adds guest time to `user` and guest_nice time to `nice` as well as to
/// their own columns; like Netdata, we take it out of `user` and `nice` so that the ten
/// modes are disjoint and add up to 100 %.
fn parse(buf: &[u8]) -> Option<[u64; 10]> {
    let line = lines(buf).find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let mut jiffies = [0u64; 10];
    let mut columns = 0;
    for (slot, field) in jiffies.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = field.parse().ok()?;
        columns += 1;
    }
    if columns < 4 {
        return None;
    }
    let [user, nice, .., guest, guest_nice] = &mut jiffies;
    *user = user.saturating_sub(*guest);
    *nice = nice.saturating_sub(*guest_nice);
    Some(jiffies)
}

fn deltas(prev: &[u64; 10], cur: &[u64; 10]) -> Option<[u64; 10]> {
    let mut delta = [0u64; 10];
    for ((d, c), p) in delta.iter_mut().zip(cur).zip(prev) {
        *d = c.checked_sub(*p)?;
    }
    Some(delta)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, charts, tick};

    /// `/proc/stat` as on a 2-CPU VM, with the aggregate line set by the test.
    fn stat(cpu: &str) -> String {
        format!(
            "cpu  {cpu}\n\
             cpu0 17240 0 2694 18247 175 0 20 75 0 0\n\
             cpu1 17643 0 2942 17480 266 0 43 72 0 0\n\
             intr 2553466 0 9 0 0 0 0 0 0 0 0 0 0 0 0\n\
             ctxt 6185032\n\
             btime 1700000000\n\
             processes 13387\n\
             procs_running 1\n\
             procs_blocked 0\n\
             softirq 666944 0 2785 39 62 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn cpu_percentages_come_from_deltas() {
        let dir = ProcDir::new();
        dir.write("stat", &stat("34884 10 5636 35727 441 0 64 147 0 0"));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let first = tick(&mut sampler, now);
        assert_eq!(first.get("system.cpu", "user"), None, "no deltas yet");

        // 400 jiffies pass: user +100, nice +20, system +40, idle +200, iowait +16,
        // irq +4, softirq +8, steal +12.
        dir.write("stat", &stat("34984 30 5676 35927 457 4 72 159 0 0"));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        let pct = |dim| frame.get("system.cpu", dim);
        assert_eq!(pct("user"), Some(25.0));
        assert_eq!(pct("nice"), Some(5.0));
        assert_eq!(pct("system"), Some(10.0));
        assert_eq!(pct("idle"), Some(50.0));
        assert_eq!(pct("iowait"), Some(4.0));
        assert_eq!(pct("irq"), Some(1.0));
        assert_eq!(pct("softirq"), Some(2.0));
        assert_eq!(pct("steal"), Some(3.0));
        assert_eq!(pct("guest"), Some(0.0));
        assert_eq!(pct("guest_nice"), Some(0.0));
        let cpu = frame.samples.iter().filter(|s| &*s.chart == "system.cpu");
        assert_eq!(cpu.count(), 10);
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let dir = ProcDir::new();
        dir.write("stat", &stat("1000 100 100 1000 0 0 0 0 500 50"));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        // user +100 of which guest +60; nice +20 of which guest_nice +20; idle +80.
        dir.write("stat", &stat("1100 120 100 1080 0 0 0 0 560 70"));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        // Disjoint modes: user 40, nice 0, idle 80, guest 60, guest_nice 20 → 200.
        assert_eq!(frame.get("system.cpu", "user"), Some(20.0));
        assert_eq!(frame.get("system.cpu", "nice"), Some(0.0));
        assert_eq!(frame.get("system.cpu", "idle"), Some(40.0));
        assert_eq!(frame.get("system.cpu", "guest"), Some(30.0));
        assert_eq!(frame.get("system.cpu", "guest_nice"), Some(10.0));
    }

    #[test]
    fn old_kernels_without_steal_and_guest_columns_still_work() {
        let dir = ProcDir::new();
        dir.write("stat", "cpu 100 0 100 800\n");
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write("stat", "cpu 150 0 150 900\n");
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("system.cpu", "user"), Some(25.0));
        assert_eq!(frame.get("system.cpu", "idle"), Some(50.0));
        assert_eq!(frame.get("system.cpu", "steal"), Some(0.0));
    }

    #[test]
    fn a_cpu_counter_going_backwards_gives_no_percentages() {
        let dir = ProcDir::new();
        dir.write("stat", &stat("34884 0 5636 35727 441 0 64 147 0 0"));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        // iowait decreases, as proc(5) says it may.
        dir.write("stat", &stat("34984 0 5676 35927 440 0 72 159 0 0"));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert!(!charts(&frame).contains(&"system.cpu"));
        // The next tick is measured from the reading that went backwards.
        dir.write("stat", &stat("35084 0 5676 36027 440 0 72 159 0 0"));
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        assert_eq!(frame.get("system.cpu", "user"), Some(50.0));
    }

    #[test]
    fn no_cpu_time_passing_gives_no_percentages() {
        let dir = ProcDir::new();
        dir.write("stat", &stat("34884 0 5636 35727 441 0 64 147 0 0"));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert!(!charts(&frame).contains(&"system.cpu"));
    }
}
