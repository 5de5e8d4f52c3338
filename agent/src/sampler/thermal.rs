//! `/sys/class/thermal/thermal_zone*/temp` and `/sys/class/hwmon/hwmon*/temp*_input` →
//! `system.thermal`, in °C: one dimension per sensor and `max`, the hottest. Edge devices
//! die of heat (a fan stops, an enclosure sits in the sun) long before any other metric
//! shows it, and a thermal throttle looks like a CPU anomaly without them.
//!
//! Sensor names differ from host to host, so a shipped model can only use `max`; the named
//! dimensions are for people and for per-host models. Sensors are found at the first tick
//! (drivers load at boot): one that appears later (a module loaded by hand) is read after
//! a restart of the agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{MAX_DEVICES, Probe, first_word, not_offered, numbered_entries, read_quiet, sanitise};
use crate::frame::Frame;

/// Readings outside this range are not temperatures but what a driver reports for a
/// sensor that is not connected or failed (-273 °C, 255 °C and the like).
const PLAUSIBLE_C: std::ops::RangeInclusive<f64> = -100.0..=300.0;

/// One temperature file and its dimension.
struct Sensor {
    path: PathBuf,
    dim: Arc<str>,
}

pub(super) struct Thermal {
    zones: PathBuf,
    hwmon: PathBuf,
    probe: Probe,
    sensors: Vec<Sensor>,
    chart: Arc<str>,
    max: Arc<str>,
}

impl Thermal {
    pub(super) fn new(sys_root: &Path) -> Self {
        Self {
            zones: sys_root.join("class/thermal"),
            hwmon: sys_root.join("class/hwmon"),
            probe: Probe::Unknown,
            sensors: Vec::new(),
            chart: Arc::from("system.thermal"),
            max: Arc::from("max"),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) {
        if self.probe == Probe::Unknown {
            self.discover(buf);
        }
        if self.probe == Probe::Off {
            return;
        }
        let mut max: Option<f64> = None;
        for s in &self.sensors {
            // A sensor that cannot be read now (hwmon answers EIO or ENODATA for an input
            // with nothing attached) is left out of this tick, quietly.
            if !read_quiet(&s.path, buf) {
                continue;
            }
            let Some(celsius) = first_word(buf)
                .and_then(|w| w.parse::<i64>().ok())
                .map(|milli| milli as f64 / 1000.0)
                .filter(|c| PLAUSIBLE_C.contains(c))
            else {
                continue;
            };
            frame.push(&self.chart, &s.dim, celsius);
            max = Some(max.map_or(celsius, |m: f64| m.max(celsius)));
        }
        if let Some(max) = max {
            frame.push(&self.chart, &self.max, max);
        }
    }

    /// Finds the sensors, thermal zones first, at most [`MAX_DEVICES`] of them; none turns
    /// the source off.
    fn discover(&mut self, buf: &mut Vec<u8>) {
        let mut names: Vec<String> = vec!["max".into()];
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        for (n, zone) in numbered_entries(&self.zones, "thermal_zone", MAX_DEVICES) {
            let name = read_name(&zone.join("type"), buf).unwrap_or_else(|| format!("zone{n}"));
            found.push((zone.join("temp"), name));
        }
        for (n, chip) in numbered_entries(&self.hwmon, "hwmon", MAX_DEVICES) {
            let chip_name =
                read_name(&chip.join("name"), buf).unwrap_or_else(|| format!("hwmon{n}"));
            for (k, input) in temp_inputs(&chip) {
                let label = chip.join(format!("temp{k}_label"));
                let label = read_name(&label, buf).unwrap_or_else(|| format!("temp{k}"));
                found.push((input, format!("{chip_name}_{label}")));
            }
        }
        if found.len() > MAX_DEVICES {
            tracing::info!(
                sensors = found.len(),
                limit = MAX_DEVICES,
                "more temperature sensors than the limit; reading the first ones"
            );
            found.truncate(MAX_DEVICES);
        }
        for (path, name) in found {
            let dim = unique(name, &names);
            names.push(dim.clone());
            self.sensors.push(Sensor {
                path,
                dim: Arc::from(dim),
            });
        }
        self.probe = if self.sensors.is_empty() {
            not_offered("thermal", &self.zones);
            Probe::Off
        } else {
            Probe::On
        };
    }
}

/// A chip's `temp<K>_input` files, by `K`.
fn temp_inputs(chip: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(chip) else {
        return Vec::new();
    };
    let mut inputs: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let k = name
                .to_str()?
                .strip_prefix("temp")?
                .strip_suffix("_input")?;
            let k = k
                .parse()
                .ok()
                .filter(|_| k.bytes().all(|b| b.is_ascii_digit()))?;
            Some((k, e.path()))
        })
        .collect();
    inputs.sort_unstable_by_key(|(k, _)| *k);
    inputs.truncate(MAX_DEVICES);
    inputs
}

/// A zone's `type`, a chip's `name` or a sensor's label, sanitised; `None` when absent or
/// blank.
fn read_name(path: &Path, buf: &mut Vec<u8>) -> Option<String> {
    if !read_quiet(path, buf) {
        return None;
    }
    let raw = std::str::from_utf8(buf).ok()?.lines().next()?;
    let name = sanitise(raw);
    (!name.is_empty()).then_some(name)
}

/// `name`, or `name_2`, `name_3`... when taken: two zones of the same type (`acpitz`) or
/// two chips of the same driver (`coretemp` per socket) are common.
fn unique(name: String, taken: &[String]) -> String {
    if !taken.contains(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name}_{i}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixture::{ProcDir, charts, tick};

    #[test]
    fn zones_and_hwmon_sensors_in_celsius_with_the_hottest_as_max() {
        let dir = ProcDir::new();
        dir.write("sysfs/class/thermal/thermal_zone0/type", "acpitz\n");
        dir.write("sysfs/class/thermal/thermal_zone0/temp", "27800\n");
        dir.write("sysfs/class/thermal/thermal_zone1/type", "x86_pkg_temp\n");
        dir.write("sysfs/class/thermal/thermal_zone1/temp", "51000\n");
        // Same type again, and a zone without a type.
        dir.write("sysfs/class/thermal/thermal_zone2/type", "acpitz\n");
        dir.write("sysfs/class/thermal/thermal_zone2/temp", "30000\n");
        dir.write("sysfs/class/thermal/thermal_zone10/temp", "-5500\n");
        dir.write("sysfs/class/thermal/cooling_device0/type", "Processor\n");
        dir.write("sysfs/class/hwmon/hwmon1/name", "coretemp\n");
        dir.write("sysfs/class/hwmon/hwmon1/temp1_label", "Package id 0\n");
        dir.write("sysfs/class/hwmon/hwmon1/temp1_input", "62000\n");
        dir.write("sysfs/class/hwmon/hwmon1/temp2_input", "58500\n");
        dir.write("sysfs/class/hwmon/hwmon1/temp2_max", "100000\n");
        dir.write("sysfs/class/hwmon/hwmon3/temp1_input", "40000\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        let t = |dim| frame.get("system.thermal", dim);
        assert_eq!(t("acpitz"), Some(27.8));
        assert_eq!(t("x86_pkg_temp"), Some(51.0));
        assert_eq!(t("acpitz_2"), Some(30.0));
        assert_eq!(t("zone10"), Some(-5.5));
        assert_eq!(t("coretemp_package_id_0"), Some(62.0));
        assert_eq!(t("coretemp_temp2"), Some(58.5));
        assert_eq!(t("hwmon3_temp1"), Some(40.0));
        assert_eq!(t("max"), Some(62.0));
        assert_eq!(frame.samples.len(), 8);
    }

    #[test]
    fn unreadable_and_implausible_readings_are_skipped() {
        let dir = ProcDir::new();
        dir.write("sysfs/class/thermal/thermal_zone0/temp", "45000\n");
        dir.write("sysfs/class/thermal/thermal_zone1/temp", "hot\n");
        dir.write("sysfs/class/thermal/thermal_zone2/temp", "-273150\n");
        dir.write("sysfs/class/thermal/thermal_zone3/temp", "");
        dir.write(
            "sysfs/class/thermal/thermal_zone4/temp",
            "99999999999999999999999\n",
        );
        // A zone folder whose temp is missing (read fails): skipped every tick.
        dir.write("sysfs/class/thermal/thermal_zone5/type", "max\n");
        let mut sampler = dir.sampler();
        for _ in 0..2 {
            let frame = tick(&mut sampler, Instant::now());
            assert_eq!(frame.get("system.thermal", "zone0"), Some(45.0));
            assert_eq!(frame.get("system.thermal", "max"), Some(45.0));
            assert_eq!(frame.samples.len(), 2, "{:?}", frame.samples);
        }
    }

    #[test]
    fn a_host_without_sensors_gives_no_thermal_chart() {
        let dir = ProcDir::new();
        dir.write("sysfs/class/thermal/cooling_device0/type", "Processor\n");
        let mut sampler = dir.sampler();
        assert!(!charts(&tick(&mut sampler, Instant::now())).contains(&"system.thermal"));
        // Turned off at the first tick: a zone appearing later is not looked for.
        dir.write("sysfs/class/thermal/thermal_zone0/temp", "45000\n");
        assert!(!charts(&tick(&mut sampler, Instant::now())).contains(&"system.thermal"));
    }

    #[test]
    fn sensors_beyond_the_cap_are_ignored() {
        let dir = ProcDir::new();
        for i in 0..80 {
            dir.write(
                &format!("sysfs/class/thermal/thermal_zone{i}/temp"),
                &format!("{}\n", 20_000 + i * 100),
            );
        }
        dir.write("sysfs/class/hwmon/hwmon0/temp1_input", "90000\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.samples.len(), 64 + 1, "64 sensors and max");
        assert!(frame.get("system.thermal", "zone63").is_some());
        assert!(frame.get("system.thermal", "hwmon0_temp1").is_none());
    }
}
