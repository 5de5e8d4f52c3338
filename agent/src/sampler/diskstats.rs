//! `/proc/diskstats` → `disk.<dev>` per whole block device and `system.io` for the host.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use super::counter::CounterFile;
use super::{Devices, lines, rate};
use crate::frame::Frame;

/// `read_bytes` and `write_bytes` come first: `system.io` reuses them.
const DIMS: [&str; 5] = ["read_bytes", "write_bytes", "reads", "writes", "busy_pct"];

/// diskstats counts in 512-byte sectors whatever the device's real sector size.
const SECTOR_BYTES: f64 = 512.0;

/// Virtual devices that are not disks: their I/O is counted again on the real device (or
/// is memory).
const SKIPPED_PREFIXES: [&str; 3] = ["loop", "ram", "zram"];

#[derive(Clone, Copy, Default)]
struct Counters {
    reads: u64,
    read_sectors: u64,
    writes: u64,
    write_sectors: u64,
    /// Milliseconds with I/O in flight.
    io_ticks: u64,
}

impl Counters {
    fn all_zero(&self) -> bool {
        self.reads == 0
            && self.read_sectors == 0
            && self.writes == 0
            && self.write_sectors == 0
            && self.io_ticks == 0
    }

    /// Per-second rates since `prev`, in [`DIMS`] order.
    fn rates(prev: Self, cur: Self, secs: f64) -> [Option<f64>; 5] {
        let read_bytes = rate(prev.read_sectors, cur.read_sectors, secs).map(|s| s * SECTOR_BYTES);
        let write_bytes =
            rate(prev.write_sectors, cur.write_sectors, secs).map(|s| s * SECTOR_BYTES);
        // Busy milliseconds per elapsed second, as a percentage of that second. Merged
        // and in-flight accounting can overshoot a little, hence the cap.
        let busy_pct = rate(prev.io_ticks, cur.io_ticks, secs).map(|ms| (ms / 10.0).min(100.0));
        [
            read_bytes,
            write_bytes,
            rate(prev.reads, cur.reads, secs),
            rate(prev.writes, cur.writes, secs),
            busy_pct,
        ]
    }
}

/// A device line of the current read. Its name is a range into `DiskStats::names` so that
/// the rows can be kept across ticks without borrowing the read buffer.
struct Row {
    name: Range<usize>,
    counters: Counters,
}

pub(super) struct DiskStats {
    disks: CounterFile<Counters, 5>,
    /// Scratch for this read's rows and their names, reused every tick.
    rows: Vec<Row>,
    names: String,
}

impl DiskStats {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            disks: CounterFile::new(
                path,
                Devices::new("disk.", "block devices"),
                "system.io",
                DIMS,
            ),
            rows: Vec::new(),
            names: String::new(),
        }
    }

    pub(super) fn sample(&mut self, now: Instant, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.disks.begin(now, buf) {
            return;
        }
        // All rows first: whether `sda1` is a partition to skip depends on whether `sda`
        // is listed, wherever its line is.
        self.rows.clear();
        self.names.clear();
        for (name, counters) in lines(buf).filter_map(parse) {
            if SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let start = self.names.len();
            self.names.push_str(name);
            self.rows.push(Row {
                name: start..self.names.len(),
                counters,
            });
        }

        for row in &self.rows {
            let Some(name) = self.names.get(row.name.clone()) else {
                continue;
            };
            let partition = self.rows.iter().any(|disk| {
                self.names
                    .get(disk.name.clone())
                    .is_some_and(|disk| is_partition_of(name, disk))
            });
            // A partition's I/O is counted again on its disk; a device that has done
            // nothing since boot (empty card reader, unused dm target) is noise.
            if partition || row.counters.all_zero() {
                continue;
            }
            self.disks
                .device(frame, name, row.counters, Counters::rates);
        }
        self.disks.end(frame);
    }
}

/// ` 254 0 vda 28356 4021 2553466 27591 5111 30785 6185032 47031 0 8692 77470 ...`: major,
/// minor, name, then reads completed, reads merged, sectors read, ms reading, writes
/// completed, writes merged, sectors written, ms writing, I/Os in flight, ms doing I/O.
/// Kernels add discard and flush columns at the end, which we do not need. Columns we do
/// not use are not parsed, so a value some kernel prints oddly (in-flight has been seen
/// negative) does not cost the whole line.
fn parse(line: &str) -> Option<(&str, Counters)> {
    let mut f = line.split_whitespace();
    let (_major, _minor, name) = (f.next()?, f.next()?, f.next()?);
    let reads = num(&mut f)?;
    f.next()?;
    let read_sectors = num(&mut f)?;
    f.next()?;
    let writes = num(&mut f)?;
    f.next()?;
    let write_sectors = num(&mut f)?;
    f.next()?;
    f.next()?;
    let io_ticks = num(&mut f)?;
    Some((
        name,
        Counters {
            reads,
            read_sectors,
            writes,
            write_sectors,
            io_ticks,
        },
    ))
}

fn num(fields: &mut std::str::SplitWhitespace<'_>) -> Option<u64> {
    fields.next()?.parse().ok()
}

/// The kernel names a partition after its disk, with a `p` in between when the disk's
/// name ends in a digit: `sda` → `sda1`, `nvme0n1` → `nvme0n1p1`, `mmcblk0` → `mmcblk0p2`.
/// Checking the `p` keeps `nvme0n10` from passing for a partition of `nvme0n1`.
fn is_partition_of(part: &str, disk: &str) -> bool {
    let Some(rest) = part.strip_prefix(disk) else {
        return false;
    };
    let number = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(number) => number,
            None => return false,
        }
    } else {
        rest
    };
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, charts, tick};
    use super::is_partition_of;

    /// A diskstats line (kernel 5.5+ layout, 20 columns) with the counters we read.
    fn line(name: &str, reads: u64, rsect: u64, writes: u64, wsect: u64, io_ms: u64) -> String {
        format!(
            " 259       0 {name} {reads} 4021 {rsect} 27591 {writes} 30785 {wsect} 47031 0 {io_ms} 77470 6054 69 666944 2785 39 62\n"
        )
    }

    #[test]
    fn partitions_are_recognised_by_name() {
        assert!(is_partition_of("sda1", "sda"));
        assert!(is_partition_of("nvme0n1p12", "nvme0n1"));
        assert!(is_partition_of("mmcblk0p2", "mmcblk0"));
        assert!(!is_partition_of("sdaa", "sda"));
        assert!(!is_partition_of("nvme0n10", "nvme0n1"));
        assert!(!is_partition_of("sda", "sda"));
        assert!(!is_partition_of("dm-1", "dm-0"));
    }

    #[test]
    fn disk_rates_come_from_counter_deltas() {
        let dir = ProcDir::new();
        dir.write(
            "diskstats",
            &(line("nvme0n1", 28356, 2553466, 5111, 6185032, 8692)
                + &line("nvme0n1p1", 28000, 2500000, 5000, 6100000, 8000)
                + &line("sdb", 100, 800, 10, 80, 50)),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let first = tick(&mut sampler, now);
        assert!(first.samples.is_empty(), "no rates on the first tick");

        // Two seconds later: nvme0n1 read 4096 sectors in 200 reads, wrote 1024 sectors in
        // 50 writes and was busy 500 ms; sdb read 100 sectors.
        dir.write(
            "diskstats",
            &(line("nvme0n1", 28556, 2557562, 5161, 6186056, 9192)
                + &line("nvme0n1p1", 28200, 2504096, 5050, 6101024, 8500)
                + &line("sdb", 101, 900, 10, 80, 52)),
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        let nvme = |dim| frame.get("disk.nvme0n1", dim);
        assert_eq!(nvme("read_bytes"), Some(4096.0 * 512.0 / 2.0));
        assert_eq!(nvme("write_bytes"), Some(1024.0 * 512.0 / 2.0));
        assert_eq!(nvme("reads"), Some(100.0));
        assert_eq!(nvme("writes"), Some(25.0));
        assert_eq!(nvme("busy_pct"), Some(25.0));
        assert_eq!(frame.get("disk.sdb", "read_bytes"), Some(25_600.0));
        assert_eq!(frame.get("disk.sdb", "busy_pct"), Some(0.1));
        assert_eq!(
            frame.get("system.io", "read_bytes"),
            Some(4096.0 * 256.0 + 25_600.0)
        );
        assert_eq!(frame.get("system.io", "write_bytes"), Some(1024.0 * 256.0));
        assert_eq!(charts(&frame), ["disk.nvme0n1", "disk.sdb", "system.io"]);
    }

    #[test]
    fn partitions_virtual_and_idle_devices_are_skipped() {
        let dir = ProcDir::new();
        let rows = [
            line("sda", 10, 10, 10, 10, 10),
            line("sda1", 5, 5, 5, 5, 5),
            line("sda2", 5, 5, 5, 5, 5),
            line("loop0", 10, 10, 0, 0, 10),
            line("ram0", 10, 10, 10, 10, 10),
            line("zram0", 10, 10, 10, 10, 10),
            line("sr0", 0, 0, 0, 0, 0),
            line("dm-0", 10, 10, 10, 10, 10),
            // A partition whose disk is not listed stays.
            line("xvdb1", 10, 10, 10, 10, 10),
        ];
        dir.write("diskstats", &rows.concat());
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(
            charts(&frame),
            ["disk.dm-0", "disk.sda", "disk.xvdb1", "system.io"]
        );
    }

    #[test]
    fn old_kernels_with_fourteen_columns_are_read() {
        let dir = ProcDir::new();
        dir.write(
            "diskstats",
            "   8       0 sda 100 0 800 10 10 0 80 10 0 20 20\n",
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write(
            "diskstats",
            "   8       0 sda 110 0 1800 10 10 0 80 10 0 1220 20\n",
        );
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("disk.sda", "read_bytes"), Some(512_000.0));
        assert_eq!(frame.get("disk.sda", "reads"), Some(10.0));
        assert_eq!(frame.get("disk.sda", "busy_pct"), Some(100.0), "capped");
    }

    #[test]
    fn a_disk_counter_going_backwards_gives_no_rate_and_no_host_total() {
        let dir = ProcDir::new();
        dir.write("diskstats", &line("sda", 1000, 8000, 100, 800, 500));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        // The read counters wrapped; the write counters did not.
        dir.write("diskstats", &line("sda", 10, 80, 110, 1824, 600));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(frame.get("disk.sda", "read_bytes"), None);
        assert_eq!(frame.get("disk.sda", "reads"), None);
        assert_eq!(frame.get("disk.sda", "write_bytes"), Some(524_288.0));
        assert_eq!(frame.get("disk.sda", "busy_pct"), Some(10.0));
        assert_eq!(frame.get("system.io", "read_bytes"), None);
        assert_eq!(frame.get("system.io", "write_bytes"), Some(524_288.0));
    }

    #[test]
    fn no_elapsed_time_gives_no_disk_rates() {
        let dir = ProcDir::new();
        dir.write("diskstats", &line("sda", 1000, 8000, 100, 800, 500));
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write("diskstats", &line("sda", 2000, 9000, 100, 800, 500));
        assert!(tick(&mut sampler, now).samples.is_empty());
    }

    #[test]
    fn a_vanished_disk_stops_being_emitted() {
        let dir = ProcDir::new();
        dir.write(
            "diskstats",
            &(line("sda", 1, 1, 1, 1, 1) + &line("sdb", 1, 1, 1, 1, 1)),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write("diskstats", &line("sda", 2, 2, 2, 2, 2));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(charts(&frame), ["disk.sda", "system.io"]);
    }

    #[test]
    fn disks_beyond_the_cap_are_ignored() {
        let dir = ProcDir::new();
        let mut rows = String::new();
        for i in 0..80 {
            rows.push_str(&line(&format!("dm-{i}"), 1, 1, 1, 1, 1));
        }
        dir.write("diskstats", &rows);
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert_eq!(charts(&frame).len(), 64 + 1, "64 disks and system.io");
    }
}
