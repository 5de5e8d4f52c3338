//! Mounts from `/proc/self/mounts` and `statvfs` → `disk_space.<mountpoint>`.
//!
//! The mountpoints are paths as this process sees them (hence `self`), which is what
//! `statvfs` needs; in a container they are the container's mounts.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{MAX_DEVICES, ProcFile, lines};
use crate::frame::Frame;

/// `fill_rate` and `hours_to_full` come last: they are not there every tick.
const DIMS: [&str; 5] = ["used_pct", "avail", "used", "fill_rate", "hours_to_full"];

/// `fill_rate` is the change of `used_pct` over the last [`FILL_WINDOW`], from a sample
/// kept every [`FILL_STEP`]: a disk's level moves by whole files written and deleted, and
/// a rate between consecutive ticks would be all noise. Half an hour is long enough to
/// see through a log rotation and short enough to catch a runaway log before the night is
/// over.
const FILL_STEP: Duration = Duration::from_secs(60);
const FILL_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Samples kept: one per step over the window, and the one that starts it.
const FILL_SLOTS: usize = 31;
/// No rate over less than this: the first minutes after start (or after a mount appears)
/// would give a rate from one file written.
const FILL_MIN_SPAN: Duration = Duration::from_secs(5 * 60);

const GIB: f64 = (1u64 << 30) as f64;

/// Filesystems with no disk space of their own: kernel interfaces, memory, read-only
/// images, and the initramfs that old kernels list as `rootfs` next to the real `/`.
const PSEUDO: [&str; 24] = [
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "squashfs",
    "nsfs",
    "autofs",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "devpts",
    "binfmt_misc",
    "ramfs",
    "efivarfs",
    "rootfs",
    "rpc_pipefs",
    "selinuxfs",
    "fuse",
];

/// Network filesystems are skipped too: `statvfs` on one whose server is gone blocks,
/// possibly forever (hard NFS mounts), and would stall every tick of the agent.
const NETWORK: [&str; 8] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "afs",
];

fn is_skipped(fstype: &str) -> bool {
    fstype.starts_with("cgroup")
        || fstype.starts_with("fuse.")
        || PSEUDO.contains(&fstype)
        || NETWORK.contains(&fstype)
}

/// A mount seen in a previous read: its path for `statvfs` and its chart, kept so that
/// neither is allocated again while it stays mounted.
struct Mount {
    /// Decoded, as it appears in the chart.
    mountpoint: String,
    /// As listed (escaped), for deduplication.
    device: String,
    path: CString,
    chart: Arc<str>,
    fill: FillRate,
    seen: bool,
}

/// `used_pct` once a [`FILL_STEP`] over the last [`FILL_WINDOW`], in a fixed ring so that
/// it costs nothing per tick.
struct FillRate {
    samples: [Option<(Instant, f64)>; FILL_SLOTS],
    /// Where the next sample goes; the oldest kept is there too once the ring is full.
    next: usize,
}

impl FillRate {
    fn new() -> Self {
        Self {
            samples: [None; FILL_SLOTS],
            next: 0,
        }
    }

    /// Records `used_pct` at `now` (if a step has passed) and returns the fill rate in
    /// percentage points per hour: the change since the oldest sample of the window. `None`
    /// until that sample is [`FILL_MIN_SPAN`] old.
    fn update(&mut self, now: Instant, used_pct: f64) -> Option<f64> {
        let newest = self
            .samples
            .get((self.next + FILL_SLOTS - 1) % FILL_SLOTS)
            .copied()
            .flatten();
        let due = newest.is_none_or(|(at, _)| {
            now.checked_duration_since(at)
                .is_none_or(|d| d >= FILL_STEP)
        });
        if due && let Some(slot) = self.samples.get_mut(self.next) {
            *slot = Some((now, used_pct));
            self.next = (self.next + 1) % FILL_SLOTS;
        }
        let (at, then) = self
            .samples
            .iter()
            .flatten()
            .filter(|(at, _)| {
                now.checked_duration_since(*at)
                    .is_some_and(|d| d <= FILL_WINDOW + FILL_STEP)
            })
            .min_by_key(|(at, _)| *at)
            .copied()?;
        let span = now.checked_duration_since(at)?;
        if span < FILL_MIN_SPAN {
            return None;
        }
        Some((used_pct - then) * 3600.0 / span.as_secs_f64())
    }
}

/// Hours until `used_pct` reaches 100 at `fill_rate`; `None` when the disk is not filling,
/// so that the dimension is absent then rather than infinite (a frame has no missing
/// values: a dimension is there or not).
fn hours_to_full(used_pct: f64, fill_rate: f64) -> Option<f64> {
    (fill_rate > 0.0).then(|| (100.0 - used_pct).max(0.0) / fill_rate)
}

pub(super) struct DiskSpace {
    file: ProcFile,
    mounts: Vec<Mount>,
    /// Scratch for decoding each line's mountpoint.
    decoded: String,
    dims: [Arc<str>; 5],
    warned_full: bool,
    warned_statvfs: bool,
}

impl DiskSpace {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            file: ProcFile::new(path),
            mounts: Vec::new(),
            decoded: String::new(),
            dims: DIMS.map(Arc::from),
            warned_full: false,
            warned_statvfs: false,
        }
    }

    pub(super) fn sample(&mut self, now: Instant, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.file.read(buf) {
            return;
        }
        for m in &mut self.mounts {
            m.seen = false;
        }
        for line in lines(buf) {
            let mut fields = line.split_whitespace();
            let (Some(device), Some(mountpoint), Some(fstype)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if is_skipped(fstype) {
                continue;
            }
            decode_into(mountpoint, &mut self.decoded);
            // One chart per filesystem: bind mounts and container volumes list the same
            // device again under other paths, with the same space. A path mounted over
            // twice is one mount as far as statvfs can tell.
            let duplicate = self
                .mounts
                .iter()
                .any(|m| m.seen && (m.device == device || m.mountpoint == self.decoded));
            if duplicate {
                continue;
            }
            let Some(i) = self.find_or_add(device) else {
                continue;
            };
            let Some(m) = self.mounts.get_mut(i) else {
                continue;
            };
            m.seen = true;
            if m.device != device {
                // Another filesystem at the same path: the old one's level says nothing
                // about how fast this one fills.
                m.device.clear();
                m.device.push_str(device);
                m.fill = FillRate::new();
            }
            match statvfs(&m.path) {
                Ok(Some(space)) => {
                    let used_pct = space.used_pct();
                    let fill_rate = m.fill.update(now, used_pct);
                    let values = [
                        Some(used_pct),
                        Some(space.avail as f64 / GIB),
                        Some(space.used as f64 / GIB),
                        fill_rate,
                        fill_rate.and_then(|r| hours_to_full(used_pct, r)),
                    ];
                    for (dim, v) in self.dims.iter().zip(values) {
                        if let Some(v) = v {
                            frame.push(&m.chart, dim, v);
                        }
                    }
                }
                // No blocks at all: a pseudo filesystem missing from our list.
                Ok(None) => {}
                Err(error) => {
                    if !self.warned_statvfs {
                        self.warned_statvfs = true;
                        tracing::warn!(
                            mountpoint = %m.mountpoint,
                            %error,
                            "cannot statvfs a mount; skipping it (warned once for all mounts)"
                        );
                    }
                }
            }
        }
        self.mounts.retain(|m| m.seen);
    }

    /// The index of the mount at `self.decoded`, added if new; `None` when it cannot be
    /// (cap reached, NUL in the path).
    fn find_or_add(&mut self, device: &str) -> Option<usize> {
        if let Some(i) = self
            .mounts
            .iter()
            .position(|m| m.mountpoint == self.decoded)
        {
            return Some(i);
        }
        if self.mounts.len() >= MAX_DEVICES {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    limit = MAX_DEVICES,
                    ignored = %self.decoded,
                    "too many mounts; ignoring the extra ones (warned once)"
                );
            }
            return None;
        }
        let path = CString::new(self.decoded.as_bytes()).ok()?;
        let mut chart = String::with_capacity("disk_space.".len() + self.decoded.len());
        chart.push_str("disk_space.");
        chart.push_str(&self.decoded);
        self.mounts.push(Mount {
            mountpoint: self.decoded.clone(),
            device: device.to_owned(),
            path,
            chart: Arc::from(chart),
            fill: FillRate::new(),
            seen: false,
        });
        Some(self.mounts.len() - 1)
    }
}

/// The kernel writes space, tab, newline and backslash in mount paths as a backslash and
/// three octal digits (`/mnt/my\040disk`). Anything else after a backslash is kept as is.
fn decode_into(raw: &str, out: &mut String) {
    out.clear();
    let mut rest = raw;
    while let Some((head, tail)) = rest.split_once('\\') {
        out.push_str(head);
        let byte = tail
            .get(..3)
            .filter(|digits| digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|digits| u8::from_str_radix(digits, 8).ok())
            .filter(u8::is_ascii);
        match (byte, tail.get(3..)) {
            (Some(byte), Some(after)) => {
                out.push(char::from(byte));
                rest = after;
            }
            _ => {
                out.push('\\');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
}

/// Space of one filesystem, in bytes.
struct Space {
    used: u64,
    avail: u64,
}

impl Space {
    /// As `df` computes Use%: of the space available to ordinary users, so a disk whose
    /// root reserve is all that is left shows 100 %.
    fn used_pct(&self) -> f64 {
        let usable = self.used as f64 + self.avail as f64;
        if usable > 0.0 {
            self.used as f64 * 100.0 / usable
        } else {
            0.0
        }
    }
}

/// `Ok(None)` for a filesystem without blocks.
fn statvfs(path: &CStr) -> io::Result<Option<Space>> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` points to writable memory of the right
    // type, which statvfs fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (frsize, bsize, blocks, bfree, bavail) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bsize),
        u64::from(st.f_blocks),
        u64::from(st.f_bfree),
        u64::from(st.f_bavail),
    );
    if blocks == 0 {
        return Ok(None);
    }
    let unit = if frsize > 0 { frsize } else { bsize };
    Ok(Some(Space {
        used: blocks.saturating_sub(bfree).saturating_mul(unit),
        avail: bavail.saturating_mul(unit),
    }))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, charts, tick};
    use super::{FillRate, decode_into, hours_to_full};

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_fill_rate_is_the_change_over_the_last_half_hour() {
        let mut fill = FillRate::new();
        let t0 = Instant::now();
        // Ticks every 10 s, the disk filling 0.1 points a minute (6 an hour).
        let mut last = None;
        for s in (0..=45 * 60u64).step_by(10) {
            let rate = fill.update(t0 + Duration::from_secs(s), 50.0 + s as f64 / 600.0);
            if s < 5 * 60 {
                assert_eq!(rate, None, "at {s} s: too soon");
            } else {
                let rate = rate.expect("a rate after 5 minutes");
                assert!((rate - 6.0).abs() < 1e-9, "at {s} s: {rate}");
            }
            last = rate;
        }
        assert!(last.is_some());
        // A burst 45 minutes ago has left the window; one 10 minutes ago has not.
        let mut fill = FillRate::new();
        let at = |m: u32| t0 + MINUTE * m;
        fill.update(at(0), 10.0);
        for m in 1..=45 {
            fill.update(at(m), 40.0);
        }
        assert_eq!(fill.update(at(46), 40.0), Some(0.0));
        for m in 47..=80 {
            fill.update(at(m), if m < 70 { 40.0 } else { 45.0 });
        }
        let rate = fill.update(at(81), 45.0).expect("rate");
        assert!(
            (rate - 10.0).abs() < 0.5,
            "5 points in about half an hour: {rate}"
        );
    }

    #[test]
    fn hours_to_full_only_while_filling() {
        assert_eq!(hours_to_full(50.0, 10.0), Some(5.0));
        assert_eq!(hours_to_full(100.0, 10.0), Some(0.0));
        assert_eq!(hours_to_full(50.0, 0.0), None);
        assert_eq!(hours_to_full(50.0, -3.0), None);
    }

    #[test]
    fn fill_rate_appears_after_five_minutes() {
        let dir = ProcDir::new();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mountpoint");
        let data = data.to_str().expect("utf-8 temp path");
        dir.write(
            "self/mounts",
            &format!(
                "/dev/vda1 {data} ext4 rw 0 0
"
            ),
        );
        let chart = format!("disk_space.{data}");
        let mut sampler = dir.sampler();
        let t0 = Instant::now();
        for m in 0..5 {
            let frame = tick(&mut sampler, t0 + MINUTE * m);
            assert_eq!(frame.get(&chart, "fill_rate"), None);
            assert!(frame.get(&chart, "used_pct").is_some());
        }
        let frame = tick(&mut sampler, t0 + MINUTE * 5);
        let rate = frame.get(&chart, "fill_rate").expect("fill_rate");
        assert!(rate.is_finite(), "{rate}");
        match frame.get(&chart, "hours_to_full") {
            Some(h) => assert!(rate > 0.0 && h.is_finite() && h >= 0.0, "{h}"),
            None => assert!(rate <= 0.0),
        }
    }

    fn decoded(raw: &str) -> String {
        let mut out = String::new();
        decode_into(raw, &mut out);
        out
    }

    #[test]
    fn escaped_mount_paths_are_decoded() {
        assert_eq!(decoded("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(decoded("/a\\011b\\012c\\134d"), "/a\tb\nc\\d");
        assert_eq!(decoded("/plain"), "/plain");
        assert_eq!(decoded("/odd\\"), "/odd\\");
        assert_eq!(decoded("/odd\\04"), "/odd\\04");
        assert_eq!(decoded("/odd\\777x"), "/odd\\777x");
        assert_eq!(decoded("/é\\040ü"), "/é ü");
    }

    #[test]
    fn disk_space_is_read_with_statvfs() {
        let dir = ProcDir::new();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mountpoint");
        let data = data.to_str().expect("utf-8 temp path");
        dir.write(
            "self/mounts",
            &format!(
                "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
                 /dev/vda1 {data} ext4 rw,relatime,discard 0 0\n"
            ),
        );
        let frame = tick(&mut dir.sampler(), Instant::now());
        let chart = format!("disk_space.{data}");
        assert_eq!(charts(&frame), [chart.as_str()]);
        let used_pct = frame.get(&chart, "used_pct").expect("used_pct");
        let used = frame.get(&chart, "used").expect("used");
        let avail = frame.get(&chart, "avail").expect("avail");
        assert!((0.0..=100.0).contains(&used_pct), "{used_pct}");
        assert!(used >= 0.0 && avail >= 0.0);
        if used + avail > 0.0 {
            assert!((used_pct - used * 100.0 / (used + avail)).abs() < 1e-6);
        }
    }

    #[test]
    fn pseudo_and_network_filesystems_are_skipped() {
        let dir = ProcDir::new();
        let p = dir.path().to_str().expect("utf-8 temp path");
        let mut mounts = String::new();
        for (i, fstype) in [
            "proc",
            "sysfs",
            "tmpfs",
            "devtmpfs",
            "cgroup",
            "cgroup2",
            "squashfs",
            "nsfs",
            "autofs",
            "mqueue",
            "debugfs",
            "tracefs",
            "securityfs",
            "pstore",
            "bpf",
            "configfs",
            "fusectl",
            "hugetlbfs",
            "devpts",
            "binfmt_misc",
            "ramfs",
            "efivarfs",
            "fuse.sshfs",
            "fuse.lxcfs",
            "nfs4",
            "cifs",
        ]
        .iter()
        .enumerate()
        {
            writeln!(mounts, "dev{i} {p} {fstype} rw 0 0").expect("write");
        }
        writeln!(mounts, "overlay {p} overlay rw,lowerdir=/a,upperdir=/b 0 0").expect("write");
        dir.write("self/mounts", &mounts);
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(
            charts(&frame),
            [format!("disk_space.{p}").as_str()],
            "only overlay"
        );
    }

    #[test]
    fn a_device_mounted_twice_is_counted_once() {
        let dir = ProcDir::new();
        for sub in ["a", "b", "c", "with space"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mountpoint");
        }
        let p = dir.path().to_str().expect("utf-8 temp path");
        dir.write(
            "self/mounts",
            &format!(
                "/dev/sda1 {p}/a ext4 rw 0 0\n\
                 /dev/sda1 {p}/b ext4 rw 0 0\n\
                 /dev/sdb1 {p}/with\\040space xfs rw 0 0\n\
                 /dev/sdc1 {p}/with\\040space xfs rw 0 0\n\
                 /dev/sdd1 {p}/c btrfs rw 0 0\n"
            ),
        );
        let mut sampler = dir.sampler();
        let frame = tick(&mut sampler, Instant::now());
        let a = format!("disk_space.{p}/a");
        let c = format!("disk_space.{p}/c");
        let spaced = format!("disk_space.{p}/with space");
        assert_eq!(charts(&frame), [a.as_str(), c.as_str(), spaced.as_str()]);
        // Unmounting one stops its chart; the rest stay as they were.
        dir.write("self/mounts", &format!("/dev/sdd1 {p}/c btrfs rw 0 0\n"));
        let frame = tick(&mut sampler, Instant::now());
        assert_eq!(charts(&frame), [c.as_str()]);
    }

    #[test]
    fn a_missing_mountpoint_gives_nothing() {
        let dir = ProcDir::new();
        dir.write(
            "self/mounts",
            "/dev/sda1 /no/such/mountpoint/for/lookout ext4 rw 0 0\n",
        );
        let mut sampler = dir.sampler();
        assert!(tick(&mut sampler, Instant::now()).samples.is_empty());
        assert!(tick(&mut sampler, Instant::now()).samples.is_empty());
    }

    #[test]
    fn mounts_beyond_the_cap_are_ignored() {
        let dir = ProcDir::new();
        let p = dir.path().to_str().expect("utf-8 temp path");
        let mut mounts = String::new();
        for i in 0..70 {
            std::fs::create_dir(dir.path().join(format!("m{i}"))).expect("mountpoint");
            writeln!(mounts, "/dev/sd{i} {p}/m{i} ext4 rw 0 0").expect("write");
        }
        dir.write("self/mounts", &mounts);
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(charts(&frame).len(), 64);
    }
}
