//! The host sampler: Linux metrics read from `/proc` and `/sys` every tick, one file per
//! source.
//!
//! Layout:
//! - `cpu`: `/proc/stat` → `system.cpu`.
//! - `processes`: `/proc/stat` (the read `cpu` made) and a scan of `/proc/<pid>` →
//!   `system.processes`.
//! - `load`: `/proc/loadavg` → `system.load`.
//! - `memory`: `/proc/meminfo` → `system.ram`, `system.swap`.
//! - `fds`: `/proc/sys/fs/file-nr` → `system.fds`.
//! - `pressure`: `/proc/pressure/{cpu,memory,io}` → `system.pressure`.
//! - `diskstats`: `/proc/diskstats` → `disk.<dev>`, `system.io`.
//! - `diskspace`: `/proc/self/mounts` and `statvfs` → `disk_space.<mountpoint>`.
//! - `net`: `/proc/net/dev` → `net.<iface>`, `system.net`, and through `net_errors` the
//!   host's error and drop rates, `system.net_errors`.
//! - `thermal`: `/sys/class/thermal` and `/sys/class/hwmon` → `system.thermal`.
//! - `throttle`: `/sys/devices/system/cpu/cpu*/cpufreq` and the Raspberry Pi firmware's
//!   `get_throttled` → `system.throttle`.
//! - `counter`: what `diskstats` and `net` share: per-device counters read into rates,
//!   and the host totals of those rates.
//!
//! Rules every source follows, because the agent runs unattended on hosts we do not control
//! (containers, old kernels, odd devices): a file that cannot be read is warned about once
//! and skipped; a malformed line is skipped; a counter that goes backwards gives no rate
//! that tick; per-device state is bounded; after the first tick a tick allocates nothing
//! unless a device, interface or mount appears. The optional sources (`processes`' scan,
//! `fds`, `pressure`, `thermal`, `throttle`) read what many hosts do not offer at all (no
//! sensors in a VM, no PSI on an old kernel): when it is absent at the first tick the
//! source turns itself off with one info line, since that is no fault to warn about.

mod counter;
mod cpu;
mod diskspace;
mod diskstats;
mod fds;
mod load;
mod memory;
mod net;
mod net_errors;
mod pressure;
mod processes;
mod thermal;
mod throttle;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::frame::Frame;

/// Per-source cap on devices, interfaces and mounts: a host that creates them without end
/// (container veths, hot-plugged disks) must not grow the agent's memory or the model's input.
const MAX_DEVICES: usize = 64;

/// Reads the host's metrics from `/proc` into frames.
pub struct HostSampler {
    /// One buffer shared by all sources: files are read one after the other, and reusing it
    /// keeps the tick free of allocations.
    buf: Vec<u8>,
    cpu: cpu::Cpu,
    processes: processes::Processes,
    load: load::Load,
    memory: memory::Memory,
    fds: fds::Fds,
    pressure: pressure::Pressure,
    diskstats: diskstats::DiskStats,
    diskspace: diskspace::DiskSpace,
    net: net::Net,
    thermal: thermal::Thermal,
    throttle: throttle::Throttle,
}

impl HostSampler {
    /// The real host's: `/proc` and `/sys`.
    pub fn host() -> Self {
        Self::new("/proc", "/sys")
    }

    /// `proc_root` and `sys_root` are normally "/proc" and "/sys"; tests point them at a
    /// fixture directory.
    pub fn new(proc_root: impl Into<PathBuf>, sys_root: impl Into<PathBuf>) -> Self {
        let root = proc_root.into();
        let sys = sys_root.into();
        Self {
            buf: Vec::with_capacity(16 * 1024),
            cpu: cpu::Cpu::new(root.join("stat")),
            processes: processes::Processes::new(root.clone()),
            load: load::Load::new(root.join("loadavg")),
            memory: memory::Memory::new(root.join("meminfo")),
            fds: fds::Fds::new(root.join("sys/fs/file-nr")),
            pressure: pressure::Pressure::new(root.join("pressure")),
            diskstats: diskstats::DiskStats::new(root.join("diskstats")),
            diskspace: diskspace::DiskSpace::new(root.join("self").join("mounts")),
            net: net::Net::new(root.join("net").join("dev")),
            thermal: thermal::Thermal::new(&sys),
            throttle: throttle::Throttle::new(&sys),
        }
    }

    /// Appends this tick's samples to `frame` (does not clear it). `now` is a monotonic
    /// instant used for rates; the first call cannot compute rates and emits only gauges.
    pub fn sample(&mut self, now: Instant, frame: &mut Frame) {
        // `processes` reads its two lines of /proc/stat from cpu's read rather than read
        // the file again.
        let stat = self.cpu.sample(&mut self.buf, frame);
        let stat = stat.then_some(self.buf.as_slice());
        self.processes.sample(now, stat, frame);
        self.load.sample(&mut self.buf, frame);
        self.memory.sample(&mut self.buf, frame);
        self.fds.sample(&mut self.buf, frame);
        self.pressure.sample(now, &mut self.buf, frame);
        self.diskstats.sample(now, &mut self.buf, frame);
        self.diskspace.sample(now, &mut self.buf, frame);
        self.net.sample(now, &mut self.buf, frame);
        self.thermal.sample(&mut self.buf, frame);
        self.throttle.sample(&mut self.buf, frame);
    }
}

/// A `/proc` file that may be missing (containers, old kernels, permissions). It is tried
/// again every tick, since it may appear later, but warned about only once: a warning per
/// tick would drown the log.
struct ProcFile {
    path: PathBuf,
    warned: bool,
}

impl ProcFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            warned: false,
        }
    }

    /// Reads the whole file into `buf`; false when it cannot be read. Bytes, not a
    /// `String`, because a single non-UTF-8 name (a mount path, an interface) would
    /// otherwise make the whole file unreadable; `lines` drops just that line.
    fn read(&mut self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        match File::open(&self.path).and_then(|mut f| f.read_to_end(buf)) {
            Ok(_) => true,
            Err(error) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        path = %self.path.display(),
                        %error,
                        "cannot read host metrics source; skipping it (warned once)"
                    );
                }
                false
            }
        }
    }
}

/// Charts of optional sources (thermal zones, CPU throttling, pressure stall information):
/// hosts without them are ordinary, so a model waiting for one says so at info level.
pub const OPTIONAL_CHARTS: [&str; 3] = ["system.thermal", "system.throttle", "system.pressure"];

/// Whether an optional source's files are there, decided at its first tick: a host without
/// thermal zones or PSI will not grow them, so one that is not there is turned off for good
/// instead of being looked for (and logged about) every tick.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    Unknown,
    On,
    Off,
}

/// The one line an optional source logs when it turns itself off: info, not a warning,
/// because a Pi without hwmon or a container without PSI is not something to fix.
fn not_offered(source: &'static str, path: &Path) {
    tracing::info!(
        source,
        path = %path.display(),
        "host metrics source not offered on this host; turned off"
    );
}

/// A file of an optional source: read until its first tick shows it absent, then never
/// again. A read that fails after it has worked (a sensor that answers EIO, a CPU taken
/// offline) skips that tick without a log: it is a state of the hardware, not of the agent.
struct OptionalFile {
    source: &'static str,
    path: PathBuf,
    probe: Probe,
}

impl OptionalFile {
    fn new(source: &'static str, path: PathBuf) -> Self {
        Self {
            source,
            path,
            probe: Probe::Unknown,
        }
    }

    /// Reads the whole file into `buf`; false when it cannot be read or is turned off.
    fn read(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.probe == Probe::Off {
            return false;
        }
        let ok = read_quiet(&self.path, buf);
        if self.probe == Probe::Unknown {
            self.probe = if ok { Probe::On } else { Probe::Off };
            if !ok {
                not_offered(self.source, &self.path);
            }
        }
        ok
    }
}

/// Reads a whole file into `buf` without logging: for the files of optional sources, whose
/// absence their caller reports once.
fn read_quiet(path: &Path, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .is_ok()
}

/// The first whitespace-separated word of a one-value file (`/sys` attributes end in a
/// newline), or `None` when it is empty or not UTF-8.
fn first_word(buf: &[u8]) -> Option<&str> {
    lines(buf).next()?.split_whitespace().next()
}

/// `N` of a directory entry named `<prefix>N` (`thermal_zone3`, `cpu12`), or `None` for
/// any other name (`cpufreq`, `cpuidle`, `thermal_zone`).
fn numbered(name: &std::ffi::OsStr, prefix: &str) -> Option<u32> {
    let digits = name.to_str()?.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The entries of `dir` named `<prefix>N`, sorted by `N` so that dimensions come out in
/// the kernel's order (`cpu2` before `cpu10`); at most `limit`. Empty when `dir` cannot be
/// read. Only called when a source starts, so the allocations do not recur.
fn numbered_entries(dir: &Path, prefix: &str, limit: usize) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((numbered(&e.file_name(), prefix)?, e.path())))
        .collect();
    found.sort_unstable_by_key(|(n, _)| *n);
    found.truncate(limit);
    found
}

/// A dimension name from what a driver calls its sensor (`Package id 0`, `cpu-thermal`):
/// lower case, with everything but letters, digits, `_` and `-` made `_`, so that a name
/// cannot carry a `.` (rules address `chart.dim`) or anything a JSON consumer would trip on.
fn sanitise(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The UTF-8 lines of a file; any other line is malformed for every source we read.
fn lines(buf: &[u8]) -> impl Iterator<Item = &str> {
    buf.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
}

/// Seconds from `prev` to `now`, or `None` when there is no previous read or no time has
/// passed: both make rates meaningless, and the second would divide by zero.
fn elapsed_secs(prev: Option<Instant>, now: Instant) -> Option<f64> {
    let secs = now.checked_duration_since(prev?)?.as_secs_f64();
    (secs > 0.0).then_some(secs)
}

/// Per-second rate of a monotonic counter. A counter that went backwards was reset or
/// wrapped (device re-created, 32-bit kernel counter); its true delta is unknowable, so
/// the tick gets no rate rather than a huge or negative one.
fn rate(prev: u64, cur: u64, secs: f64) -> Option<f64> {
    if !(secs > 0.0 && secs.is_finite()) {
        return None;
    }
    cur.checked_sub(prev).map(|delta| delta as f64 / secs)
}

/// Counters kept per device (or interface) from one read to the next, bounded by
/// [`MAX_DEVICES`]. Each device keeps its own chart name so that it is allocated once, when
/// the device first appears, and forgets it when the device goes away.
struct Devices<C> {
    /// Chart prefix, e.g. `net.`; the chart is the prefix followed by the device name.
    prefix: &'static str,
    /// What the devices are, for the one warning when there are too many.
    kind: &'static str,
    entries: Vec<Device<C>>,
    warned_full: bool,
}

struct Device<C> {
    chart: Arc<str>,
    prev: C,
    seen: bool,
}

impl<C: Copy> Devices<C> {
    fn new(prefix: &'static str, kind: &'static str) -> Self {
        Self {
            prefix,
            kind,
            entries: Vec::new(),
            warned_full: false,
        }
    }

    /// Starts a read: devices not updated before `end` have disappeared.
    fn begin(&mut self) {
        for e in &mut self.entries {
            e.seen = false;
        }
    }

    /// Stores `cur` for device `name` and returns its chart with the counters of the
    /// previous read (`None` for a device new in this read). Returns `None` for a device
    /// to ignore: a line repeated within one read, or a device beyond the cap.
    fn update(&mut self, name: &str, cur: C) -> Option<(&Arc<str>, Option<C>)> {
        let prefix_len = self.prefix.len();
        let found = self
            .entries
            .iter()
            .position(|e| e.chart.get(prefix_len..) == Some(name));
        if let Some(i) = found {
            let e = self.entries.get_mut(i)?;
            if e.seen {
                return None;
            }
            e.seen = true;
            let prev = std::mem::replace(&mut e.prev, cur);
            return Some((&e.chart, Some(prev)));
        }
        if self.entries.len() >= MAX_DEVICES {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    kind = self.kind,
                    limit = MAX_DEVICES,
                    ignored = name,
                    "too many devices; ignoring the extra ones (warned once)"
                );
            }
            return None;
        }
        let mut chart = String::with_capacity(prefix_len + name.len());
        chart.push_str(self.prefix);
        chart.push_str(name);
        self.entries.push(Device {
            chart: Arc::from(chart),
            prev: cur,
            seen: true,
        });
        self.entries.last().map(|e| (&e.chart, None))
    }

    /// Ends a read: forgets devices that were not in it.
    fn end(&mut self) {
        self.entries.retain(|e| e.seen);
    }
}

/// Fixture `/proc` trees for the sources' tests.
#[cfg(test)]
mod fixture {
    use std::path::Path;
    use std::time::Instant;

    use super::HostSampler;
    use crate::frame::Frame;

    pub(super) struct ProcDir {
        dir: tempfile::TempDir,
    }

    impl ProcDir {
        pub(super) fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        pub(super) fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `contents` to `rel` under the fixture root, creating folders.
        pub(super) fn write(&self, rel: &str, contents: &str) {
            let path = self.dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("fixture folder");
            }
            std::fs::write(path, contents).expect("fixture file");
        }

        /// A sampler with `/proc` at the fixture's root and `/sys` at its `sysfs` folder
        /// (not `sys`, which is `/proc/sys`).
        pub(super) fn sampler(&self) -> HostSampler {
            HostSampler::new(self.dir.path(), self.dir.path().join("sysfs"))
        }
    }

    pub(super) fn tick(sampler: &mut HostSampler, at: Instant) -> Frame {
        let mut frame = Frame::default();
        sampler.sample(at, &mut frame);
        frame
    }

    /// The distinct charts of a frame, sorted, to assert what is (not) emitted.
    pub(super) fn charts(frame: &Frame) -> Vec<&str> {
        let mut charts: Vec<&str> = frame.samples.iter().map(|s| &*s.chart).collect();
        charts.sort_unstable();
        charts.dedup();
        charts
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::fixture::{ProcDir, charts, tick};
    use super::*;

    #[test]
    fn rate_is_none_when_the_counter_goes_backwards() {
        assert_eq!(rate(100, 350, 2.0), Some(125.0));
        assert_eq!(rate(350, 100, 2.0), None);
        assert_eq!(rate(100, 350, 0.0), None);
    }

    #[test]
    fn no_elapsed_time_means_no_rates() {
        let now = Instant::now();
        assert_eq!(elapsed_secs(None, now), None);
        assert_eq!(elapsed_secs(Some(now), now), None);
        assert_eq!(
            elapsed_secs(Some(now + Duration::from_secs(1)), now),
            None,
            "time going backwards"
        );
        assert_eq!(
            elapsed_secs(Some(now), now + Duration::from_millis(500)),
            Some(0.5)
        );
    }

    #[test]
    fn a_missing_proc_tree_gives_no_samples_and_does_not_panic() {
        let dir = ProcDir::new();
        let gone = dir.path().join("does-not-exist");
        let mut sampler = HostSampler::new(&gone, gone.join("sys"));
        let now = Instant::now();
        assert!(tick(&mut sampler, now).samples.is_empty());
        assert!(
            tick(&mut sampler, now + Duration::from_secs(1))
                .samples
                .is_empty()
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unreadable_source_is_warned_about_once() {
        let dir = ProcDir::new();
        dir.write("loadavg", "0.50 0.40 0.30 1/100 4242\n");
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut sampler = dir.sampler();
            let now = Instant::now();
            for s in 0..3 {
                tick(&mut sampler, now + Duration::from_secs(s));
            }
        });
        let log = String::from_utf8(log.0.lock().expect("log buffer").clone()).expect("utf-8");
        // Five sources are missing (stat, meminfo, diskstats, self/mounts, net/dev).
        assert_eq!(
            log.matches("cannot read host metrics source").count(),
            5,
            "{log}"
        );
        assert_eq!(log.matches("/stat").count(), 1, "{log}");
    }

    /// The info lines of `f`, run under a subscriber that captures them.
    fn logged(f: impl FnOnce()) -> String {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(log.0.lock().expect("log buffer").clone()).expect("utf-8")
    }

    #[test]
    fn each_optional_source_absent_logs_one_info_line_and_nothing_else() {
        let dir = ProcDir::new();
        let log = logged(|| {
            let mut sampler = dir.sampler();
            let now = Instant::now();
            for s in 0..30 {
                tick(&mut sampler, now + Duration::from_secs(s));
            }
        });
        let off = |source: &str| {
            log.lines()
                .filter(|l| {
                    l.contains("not offered") && l.contains(&format!("source=\"{source}\""))
                })
                .count()
        };
        // The fixture's /proc has no process folders: no procfs, so no scan.
        for source in ["processes", "fds", "pressure", "thermal", "throttle"] {
            assert_eq!(off(source), 1, "{source}: {log}");
        }
        assert_eq!(log.matches(" INFO ").count(), 5, "{log}");
        // /proc itself missing.
        let gone = dir.path().join("gone");
        let log = logged(|| {
            let mut sampler = HostSampler::new(&gone, gone.join("sys"));
            for _ in 0..3 {
                tick(&mut sampler, Instant::now());
            }
        });
        assert_eq!(log.matches("source=\"processes\"").count(), 1, "{log}");
    }

    #[test]
    fn garbage_in_every_source_does_not_panic() {
        let garbage = [
            "",
            "\n\n\n",
            "cpu\ncpu x y z\ncpu 1 2\ncpu 18446744073709551615 18446744073709551615 18446744073709551615 18446744073709551615 18446744073709551615\n",
            "MemTotal: kB\nMemTotal: 0 kB\nMemAvailable: 99999999999999999999 kB\n:::\n",
            "nan inf -1\n1e400 2 3\n",
            "   8 0 sda 1 2\n 8 0 sda -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n8 0 sda 18446744073709551615 0 18446744073709551615 0 18446744073709551615 0 18446744073709551615 0 0 18446744073709551615 0\n",
            "eth0:\neth0: 1 2 3\n: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\neth0: 18446744073709551615 1 1 1 1 1 1 1 18446744073709551615 1 1 1 1 1 1 1\n",
            "/dev/sda\n/dev/sda /\\ ext4\n/dev/sdb /\\777 ext4 rw 0 0\n/dev/sdc \\040\\0 ext4 rw 0 0\nnone /nonexistent/path xfs rw 0 0\n",
        ];
        let files = [
            "stat",
            "meminfo",
            "loadavg",
            "diskstats",
            "self/mounts",
            "net/dev",
            "sys/fs/file-nr",
            "pressure/cpu",
            "pressure/memory",
            "pressure/io",
            "1/stat",
            "sysfs/class/thermal/thermal_zone0/temp",
            "sysfs/class/thermal/thermal_zone0/type",
            "sysfs/class/hwmon/hwmon0/name",
            "sysfs/class/hwmon/hwmon0/temp1_input",
            "sysfs/class/hwmon/hwmon0/temp1_label",
            "sysfs/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "sysfs/devices/platform/soc/soc:firmware/get_throttled",
        ];
        let now = Instant::now();
        for (round, g) in garbage.iter().enumerate() {
            let dir = ProcDir::new();
            for f in files {
                dir.write(f, g);
            }
            let mut sampler = dir.sampler();
            tick(&mut sampler, now);
            // A later tick with other garbage: counters jump around or vanish.
            for f in files {
                dir.write(f, garbage[(round + 1) % garbage.len()]);
            }
            let frame = tick(&mut sampler, now + Duration::from_secs(1));
            assert!(frame.samples.iter().all(|s| s.value.is_finite()));
        }
        // Binary noise, including invalid UTF-8.
        let dir = ProcDir::new();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
            std::fs::write(path, &noise).expect("noise");
        }
        let mut sampler = dir.sampler();
        tick(&mut sampler, now);
        tick(&mut sampler, now + Duration::from_secs(1));
    }

    #[test]
    fn the_real_proc_gives_cpu_load_and_ram_on_the_second_tick() {
        if !std::path::Path::new("/proc/stat").exists() {
            return; // not Linux
        }
        let mut sampler = HostSampler::host();
        let first = tick(&mut sampler, Instant::now());
        assert_eq!(
            first.get("system.cpu", "user"),
            None,
            "no rates on the first tick"
        );
        // CPU time advances in 10 ms jiffies: give it some.
        std::thread::sleep(Duration::from_millis(300));
        let frame = tick(&mut sampler, Instant::now());

        let user = frame.get("system.cpu", "user").expect("system.cpu user");
        assert!((0.0..=100.0).contains(&user), "user {user}");
        let cpu_total: f64 = frame
            .samples
            .iter()
            .filter(|s| &*s.chart == "system.cpu")
            .map(|s| s.value)
            .sum();
        assert!((cpu_total - 100.0).abs() < 1e-6, "cpu sums to {cpu_total}");
        let load1 = frame
            .get("system.load", "load1")
            .expect("system.load load1");
        assert!((0.0..10_000.0).contains(&load1), "load1 {load1}");
        let ram = frame
            .get("system.ram", "used_pct")
            .expect("system.ram used_pct");
        assert!(ram > 0.0 && ram <= 100.0, "ram used_pct {ram}");
        for chart in charts(&frame) {
            assert_ne!(chart, "net.lo", "loopback is not emitted");
        }
    }
}
