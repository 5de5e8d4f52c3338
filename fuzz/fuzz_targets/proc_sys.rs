//! The `/proc` and `/sys` parsers, through `HostSampler` pointed at a scratch directory:
//! the input is split at 0xFF bytes into the files below, in order, and sampled twice
//! (the second sample computes rates against the first).
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lookout_agent::frame::Frame;
use lookout_agent::sampler::HostSampler;

const FILES: &[&str] = &[
    "proc/stat",
    "proc/loadavg",
    "proc/meminfo",
    "proc/sys/fs/file-nr",
    "proc/pressure/cpu",
    "proc/pressure/memory",
    "proc/pressure/io",
    "proc/diskstats",
    "proc/self/mounts",
    "proc/net/dev",
    "sys/class/thermal/thermal_zone0/type",
    "sys/class/thermal/thermal_zone0/temp",
    "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
    "sys/devices/platform/soc/soc:firmware/get_throttled",
];

/// One scratch directory per fuzzing process.
fn root() -> &'static PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let r = std::env::temp_dir().join(format!("lookout-fuzz-proc-{}", std::process::id()));
        for f in FILES {
            let p = r.join(f);
            std::fs::create_dir_all(p.parent().expect("has a parent")).expect("scratch dir");
        }
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let mut chunks = data.split(|b| *b == 0xFF);
    for f in FILES {
        let text = chunks.next().unwrap_or_default();
        std::fs::write(root.join(f), text).expect("scratch file");
    }
    let mut sampler = HostSampler::new(root.join("proc"), root.join("sys"));
    let t0 = Instant::now();
    let mut frame = Frame::default();
    sampler.sample(t0, &mut frame);
    // The same files a second later: rates from counters that may go backwards or wrap.
    let mut frame = Frame::default();
    sampler.sample(t0 + Duration::from_secs(1), &mut frame);
});
