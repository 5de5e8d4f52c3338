//! `/proc/meminfo` → `system.ram` and `system.swap`, in MiB and percent.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ProcFile, lines};
use crate::frame::Frame;

const RAM_DIMS: [&str; 6] = ["used_pct", "used", "available", "free", "cached", "buffers"];
const SWAP_DIMS: [&str; 3] = ["used_pct", "used", "free"];

pub(super) struct Memory {
    file: ProcFile,
    ram: Arc<str>,
    ram_dims: [Arc<str>; 6],
    swap: Arc<str>,
    swap_dims: [Arc<str>; 3],
}

/// The fields we use, in kB as the kernel reports them; `None` when absent.
#[derive(Default)]
struct MemInfo {
    mem_total: Option<u64>,
    mem_free: Option<u64>,
    mem_available: Option<u64>,
    buffers: Option<u64>,
    cached: Option<u64>,
    s_reclaimable: Option<u64>,
    swap_total: Option<u64>,
    swap_free: Option<u64>,
}

impl Memory {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            file: ProcFile::new(path),
            ram: Arc::from("system.ram"),
            ram_dims: RAM_DIMS.map(Arc::from),
            swap: Arc::from("system.swap"),
            swap_dims: SWAP_DIMS.map(Arc::from),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.file.read(buf) {
            return;
        }
        let m = parse(buf);
        if let Some(ram) = ram(&m) {
            for (dim, v) in self.ram_dims.iter().zip(ram) {
                frame.push(&self.ram, dim, v);
            }
        }
        if let Some(swap) = swap(&m) {
            for (dim, v) in self.swap_dims.iter().zip(swap) {
                frame.push(&self.swap, dim, v);
            }
        }
    }
}

fn parse(buf: &[u8]) -> MemInfo {
    let mut m = MemInfo::default();
    for line in lines(buf) {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut m.mem_total,
            "MemFree" => &mut m.mem_free,
            "MemAvailable" => &mut m.mem_available,
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SReclaimable" => &mut m.s_reclaimable,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            _ => continue,
        };
        *slot = Some(kb);
    }
    m
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// `used_pct, used, available, free, cached, buffers`. "Used" is what cannot be reclaimed
/// (total minus MemAvailable), not total minus free: page cache is not pressure. Kernels
/// before 3.14 have no MemAvailable; free + buffers + cached + reclaimable slab is the
/// estimate `free` used then.
fn ram(m: &MemInfo) -> Option<[f64; 6]> {
    let total = m.mem_total.filter(|&t| t > 0)?;
    let free = m.mem_free?;
    let buffers = m.buffers.unwrap_or(0);
    let cached = m
        .cached
        .unwrap_or(0)
        .saturating_add(m.s_reclaimable.unwrap_or(0));
    let available = m
        .mem_available
        .unwrap_or_else(|| free.saturating_add(buffers).saturating_add(cached))
        .min(total);
    let used = total - available;
    Some([
        used as f64 * 100.0 / total as f64,
        mib(used),
        mib(available),
        mib(free),
        mib(cached),
        mib(buffers),
    ])
}

/// `used_pct, used, free`; a host without swap reports 0 % used rather than nothing, so
/// that turning swap on later does not change the model's inputs.
fn swap(m: &MemInfo) -> Option<[f64; 3]> {
    let total = m.swap_total?;
    let free = m.swap_free?.min(total);
    let used = total - free;
    let used_pct = if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    };
    Some([used_pct, mib(used), mib(free)])
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixture::{ProcDir, tick};

    /// In the spirit of a real 8 GiB box; sizes chosen so the MiB come out round.
    const MEMINFO: &str = "\
MemTotal:        8388608 kB
MemFree:         1048576 kB
MemAvailable:    6291456 kB
Buffers:          102400 kB
Cached:          3145728 kB
SwapCached:            0 kB
Active:          2097152 kB
Inactive:        3145728 kB
Unevictable:       10728 kB
Mlocked:            9084 kB
SwapTotal:       2097152 kB
SwapFree:        1572864 kB
Dirty:               288 kB
Writeback:             0 kB
AnonPages:       1953792 kB
Mapped:           310256 kB
Shmem:              8952 kB
KReclaimable:     262144 kB
Slab:             393216 kB
SReclaimable:     262144 kB
SUnreclaim:       131072 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
";

    #[test]
    fn ram_and_swap_come_from_meminfo() {
        let dir = ProcDir::new();
        dir.write("meminfo", MEMINFO);
        let frame = tick(&mut dir.sampler(), Instant::now());
        let ram = |dim| frame.get("system.ram", dim);
        assert_eq!(ram("used_pct"), Some(25.0));
        assert_eq!(ram("used"), Some(2048.0));
        assert_eq!(ram("available"), Some(6144.0));
        assert_eq!(ram("free"), Some(1024.0));
        assert_eq!(ram("cached"), Some(3328.0));
        assert_eq!(ram("buffers"), Some(100.0));
        let swap = |dim| frame.get("system.swap", dim);
        assert_eq!(swap("used_pct"), Some(25.0));
        assert_eq!(swap("used"), Some(512.0));
        assert_eq!(swap("free"), Some(1536.0));
        assert_eq!(frame.samples.len(), 9);
    }

    #[test]
    fn a_host_without_swap_reports_zero_percent_used() {
        let dir = ProcDir::new();
        dir.write(
            "meminfo",
            &MEMINFO
                .replace("SwapTotal:       2097152", "SwapTotal:             0")
                .replace("SwapFree:        1572864", "SwapFree:              0"),
        );
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.swap", "used_pct"), Some(0.0));
        assert_eq!(frame.get("system.swap", "used"), Some(0.0));
    }

    #[test]
    fn kernels_without_mem_available_get_an_estimate() {
        let dir = ProcDir::new();
        dir.write(
            "meminfo",
            &MEMINFO.replace("MemAvailable:    6291456 kB\n", ""),
        );
        let frame = tick(&mut dir.sampler(), Instant::now());
        // free 1024 + buffers 100 + cached 3072 + reclaimable 256 MiB.
        assert_eq!(frame.get("system.ram", "available"), Some(4452.0));
    }

    #[test]
    fn zero_mem_total_gives_no_ram_chart() {
        let dir = ProcDir::new();
        dir.write(
            "meminfo",
            &MEMINFO.replace("MemTotal:        8388608", "MemTotal:              0"),
        );
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.ram", "used_pct"), None);
        assert_eq!(frame.get("system.swap", "used_pct"), Some(25.0));
    }
}
