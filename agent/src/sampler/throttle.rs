//! `/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq` and the Raspberry Pi firmware's
//! `/sys/devices/platform/soc/soc:firmware/get_throttled` → `system.throttle`. A CPU that
//! is throttled (heat, a weak power supply) makes every workload look slower: without
//! these the anomaly shows up in `system.cpu` with no cause attached.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{MAX_DEVICES, Probe, first_word, not_offered, numbered_entries, read_quiet};
use crate::frame::Frame;

/// `freq_mhz` (present with cpufreq), then the firmware's current-state bits 0, 1 and 2
/// (present on a Pi).
const DIMS: [&str; 4] = ["freq_mhz", "under_voltage", "freq_capped", "throttled"];

pub(super) struct Throttle {
    cpus: PathBuf,
    firmware: PathBuf,
    probe: Probe,
    /// One `scaling_cur_freq` per CPU, at most [`MAX_DEVICES`]: the average over the
    /// first 64 CPUs of a larger machine is as good a signal and bounds the tick's reads.
    freqs: Vec<PathBuf>,
    has_firmware: bool,
    chart: Arc<str>,
    dims: [Arc<str>; 4],
}

impl Throttle {
    pub(super) fn new(sys_root: &Path) -> Self {
        Self {
            cpus: sys_root.join("devices/system/cpu"),
            firmware: sys_root.join("devices/platform/soc/soc:firmware/get_throttled"),
            probe: Probe::Unknown,
            freqs: Vec::new(),
            has_firmware: false,
            chart: Arc::from("system.throttle"),
            dims: DIMS.map(Arc::from),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) {
        if self.probe == Probe::Unknown {
            self.discover();
        }
        if self.probe == Probe::Off {
            return;
        }
        let [freq_mhz, flags @ ..] = &self.dims;
        if let Some(mhz) = self.average_mhz(buf) {
            frame.push(&self.chart, freq_mhz, mhz);
        }
        if self.has_firmware
            && read_quiet(&self.firmware, buf)
            && let Some(bits) = first_word(buf).and_then(parse_throttled)
        {
            for (bit, dim) in flags.iter().enumerate() {
                frame.push(&self.chart, dim, f64::from((bits >> bit) & 1));
            }
        }
    }

    /// The mean of the CPUs that could be read; an offline CPU has no cpufreq to read.
    fn average_mhz(&self, buf: &mut Vec<u8>) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0u32);
        for path in &self.freqs {
            if !read_quiet(path, buf) {
                continue;
            }
            if let Some(khz) = first_word(buf).and_then(|w| w.parse::<u64>().ok()) {
                sum += khz as f64 / 1000.0;
                n += 1;
            }
        }
        (n > 0).then(|| sum / f64::from(n))
    }

    /// cpufreq is absent in most VMs and containers; the firmware file exists only on a
    /// Pi. Neither turns the source off.
    fn discover(&mut self) {
        self.freqs = numbered_entries(&self.cpus, "cpu", MAX_DEVICES)
            .into_iter()
            .map(|(_, cpu)| cpu.join("cpufreq/scaling_cur_freq"))
            .filter(|path| path.is_file())
            .collect();
        self.has_firmware = self.firmware.is_file();
        self.probe = if self.freqs.is_empty() && !self.has_firmware {
            not_offered("throttle", &self.cpus);
            Probe::Off
        } else {
            Probe::On
        };
    }
}

/// The firmware's flags in hex, as `50005`, `0x50005` or vcgencmd's `throttled=0x50005`.
/// Bits 0-3 are the current state (under-voltage, ARM frequency capped, throttled, soft
/// temperature limit); bits 16-19 say the same happened since boot, which is history, not
/// this tick.
fn parse_throttled(word: &str) -> Option<u32> {
    let hex = word.strip_prefix("throttled=").unwrap_or(word);
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixture::{ProcDir, charts, tick};
    use super::parse_throttled;

    const FIRMWARE: &str = "sysfs/devices/platform/soc/soc:firmware/get_throttled";

    #[test]
    fn the_firmware_flags_parse_in_every_spelling() {
        assert_eq!(parse_throttled("50005"), Some(0x50005));
        assert_eq!(parse_throttled("0x50005"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("0xZZ"), None);
        assert_eq!(parse_throttled(""), None);
    }

    #[test]
    fn frequency_is_averaged_and_the_pi_flags_are_split() {
        let dir = ProcDir::new();
        let cpu = "sysfs/devices/system/cpu";
        dir.write(&format!("{cpu}/cpu0/cpufreq/scaling_cur_freq"), "1500000\n");
        dir.write(&format!("{cpu}/cpu1/cpufreq/scaling_cur_freq"), "600000\n");
        dir.write(&format!("{cpu}/cpu2/cpufreq/scaling_cur_freq"), "fast\n");
        dir.write(&format!("{cpu}/cpu3/online"), "0\n");
        dir.write(&format!("{cpu}/cpufreq/policy0/scaling_cur_freq"), "1\n");
        dir.write(&format!("{cpu}/cpuidle/current_driver"), "none\n");
        dir.write(FIRMWARE, "50005\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        let t = |dim| frame.get("system.throttle", dim);
        assert_eq!(t("freq_mhz"), Some(1050.0));
        assert_eq!(t("under_voltage"), Some(1.0));
        assert_eq!(t("freq_capped"), Some(0.0));
        assert_eq!(t("throttled"), Some(1.0));
        assert_eq!(frame.samples.len(), 4);
    }

    #[test]
    fn cpufreq_alone_or_bad_flags_give_only_the_frequency() {
        let dir = ProcDir::new();
        dir.write(
            "sysfs/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "2400000\n",
        );
        dir.write(FIRMWARE, "not hex\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.throttle", "freq_mhz"), Some(2400.0));
        assert_eq!(frame.samples.len(), 1);
    }

    #[test]
    fn a_host_without_cpufreq_or_firmware_gives_no_throttle_chart() {
        let dir = ProcDir::new();
        dir.write("sysfs/devices/system/cpu/cpu0/online", "1\n");
        let mut sampler = dir.sampler();
        assert!(!charts(&tick(&mut sampler, Instant::now())).contains(&"system.throttle"));
        dir.write(FIRMWARE, "0\n");
        assert!(!charts(&tick(&mut sampler, Instant::now())).contains(&"system.throttle"));
    }
}
