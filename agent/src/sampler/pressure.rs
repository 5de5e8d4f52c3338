//! `/proc/pressure/{cpu,memory,io}` → `system.pressure`: pressure stall information (PSI,
//! Linux 4.20+), the share of time tasks waited for a resource. Utilisation says how busy
//! a resource is; pressure says whether anyone suffered for it, which is the anomaly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{OptionalFile, Probe, elapsed_secs, lines, not_offered, rate};
use crate::frame::Frame;

const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// Per resource, in the order of [`Kind`]: `<res>_some`, `<res>_some_total`, `<res>_full`,
/// `<res>_full_total`.
const SUFFIXES: [&str; 4] = ["_some", "_some_total", "_full", "_full_total"];

/// One resource's file and what its previous read left.
struct Resource {
    file: OptionalFile,
    dims: [Arc<str>; 4],
    /// `total` of the `some` and `full` lines at the previous read; `None` when the line
    /// was not in it, so that a rate is only ever taken between consecutive reads.
    prev: [Option<u64>; 2],
}

pub(super) struct Pressure {
    dir: PathBuf,
    probe: Probe,
    resources: [Resource; 3],
    prev_at: Option<Instant>,
    chart: Arc<str>,
}

impl Pressure {
    pub(super) fn new(dir: PathBuf) -> Self {
        let resources = RESOURCES.map(|res| Resource {
            file: OptionalFile::new("pressure", dir.join(res)),
            dims: SUFFIXES.map(|suffix| Arc::from(format!("{res}{suffix}"))),
            prev: [None; 2],
        });
        Self {
            dir,
            probe: Probe::Unknown,
            resources,
            prev_at: None,
            chart: Arc::from("system.pressure"),
        }
    }

    pub(super) fn sample(&mut self, now: Instant, buf: &mut Vec<u8>, frame: &mut Frame) {
        if self.probe == Probe::Off {
            return;
        }
        if self.probe == Probe::Unknown {
            self.probe = probe(&self.dir);
            if self.probe == Probe::Off {
                return;
            }
        }
        let secs = elapsed_secs(self.prev_at, now);
        self.prev_at = Some(now);
        for r in &mut self.resources {
            let mut cur = [None; 2];
            if r.file.read(buf) {
                for (kind, line) in lines(buf).filter_map(parse) {
                    let i = kind as usize;
                    let (Some(dim), Some(slot)) = (r.dims.get(2 * i), cur.get_mut(i)) else {
                        continue;
                    };
                    frame.push(&self.chart, dim, line.avg10);
                    *slot = Some(line.total);
                }
            }
            push_rates(&self.chart, &r.dims, r.prev, cur, secs, frame);
            r.prev = cur;
        }
    }
}

/// The whole source is off, with its one info line, when the kernel has no PSI (before
/// 4.20, built without it, or booted with `psi=0`: then the folder is not there). A file
/// missing from a folder that is there (no kernel does that today) turns off only that
/// resource, with its own line from [`OptionalFile`].
fn probe(dir: &Path) -> Probe {
    if dir.is_dir() {
        Probe::On
    } else {
        not_offered("pressure", dir);
        Probe::Off
    }
}

/// The `*_total` dims: the microseconds stalled since the previous read as a percentage
/// of the wall time between the reads. Like `avg10` but over exactly one tick, so a short
/// stall shows at full height at once instead of smeared over ten seconds.
fn push_rates(
    chart: &Arc<str>,
    dims: &[Arc<str>; 4],
    prev: [Option<u64>; 2],
    cur: [Option<u64>; 2],
    secs: Option<f64>,
    frame: &mut Frame,
) {
    let Some(secs) = secs else {
        return;
    };
    for (i, (p, c)) in prev.into_iter().zip(cur).enumerate() {
        let (Some(p), Some(c), Some(dim)) = (p, c, dims.get(2 * i + 1)) else {
            continue;
        };
        // The kernel's clock and ours disagree by a little jitter each tick; a stall
        // cannot really exceed the wall time.
        if let Some(us_per_sec) = rate(p, c, secs) {
            frame.push(chart, dim, (us_per_sec / 10_000.0).min(100.0));
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Some = 0,
    Full = 1,
}

struct Line {
    avg10: f64,
    total: u64,
}

/// `some avg10=0.12 avg60=0.05 avg300=0.01 total=123456`, the same with `full`. The
/// averages are percentages; `total` counts microseconds. Fields are found by name, not
/// place, so a kernel that adds one does not break the line.
fn parse(line: &str) -> Option<(Kind, Line)> {
    let mut fields = line.split_whitespace();
    let kind = match fields.next()? {
        "some" => Kind::Some,
        "full" => Kind::Full,
        _ => return None,
    };
    let (mut avg10, mut total) = (None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("avg10", v)) => {
                avg10 = v.parse::<f64>().ok().filter(|a| (0.0..=100.0).contains(a));
            }
            Some(("total", v)) => total = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    Some((
        kind,
        Line {
            avg10: avg10?,
            total: total?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::fixture::{ProcDir, charts, tick};

    fn psi(some: (f64, u64), full: Option<(f64, u64)>) -> String {
        let mut s = format!(
            "some avg10={:.2} avg60=0.00 avg300=0.00 total={}\n",
            some.0, some.1
        );
        if let Some((avg, total)) = full {
            s.push_str(&format!(
                "full avg10={avg:.2} avg60=0.00 avg300=0.00 total={total}\n"
            ));
        }
        s
    }

    #[test]
    fn pressure_averages_and_total_rates() {
        let dir = ProcDir::new();
        // An older kernel: cpu has no `full` line.
        dir.write("pressure/cpu", &psi((1.5, 1_000_000), None));
        dir.write("pressure/memory", &psi((0.25, 0), Some((0.1, 0))));
        dir.write(
            "pressure/io",
            &psi((3.0, 5_000_000), Some((2.0, 2_000_000))),
        );
        let mut sampler = dir.sampler();
        let now = Instant::now();
        let first = tick(&mut sampler, now);
        let p = |dim| first.get("system.pressure", dim);
        assert_eq!(p("cpu_some"), Some(1.5));
        assert_eq!(p("cpu_full"), None);
        assert_eq!(p("memory_full"), Some(0.1));
        assert_eq!(p("io_some"), Some(3.0));
        assert_eq!(p("io_some_total"), None, "no rates on the first tick");

        dir.write("pressure/cpu", &psi((1.5, 1_200_000), None));
        dir.write("pressure/memory", &psi((0.25, 0), Some((0.1, 0))));
        // io's `some` total went backwards (no rate); `full` stalled 0.5 s in 2 s.
        dir.write("pressure/io", &psi((3.0, 10), Some((2.0, 3_000_000))));
        let frame = tick(&mut sampler, now + Duration::from_secs(2));
        let p = |dim| frame.get("system.pressure", dim);
        assert_eq!(p("cpu_some_total"), Some(10.0));
        assert_eq!(p("cpu_full_total"), None);
        assert_eq!(p("memory_some_total"), Some(0.0));
        assert_eq!(p("io_some_total"), None);
        assert_eq!(p("io_full_total"), Some(50.0));
        assert_eq!(charts(&frame), ["system.pressure"]);
    }

    #[test]
    fn malformed_pressure_lines_are_skipped() {
        let dir = ProcDir::new();
        dir.write(
            "pressure/cpu",
            "some avg10=abc avg60=0.00 avg300=0.00 total=1\n\
             some\n\
             full avg10=250.0 total=5\n\
             none avg10=1.00 total=5\n\
             full avg10=0.50 avg60=0.00 avg300=0.00 total=-3\n",
        );
        dir.write("pressure/memory", "\u{0}\u{1}garbage");
        dir.write("pressure/io", &psi((0.75, 9), None));
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.samples.len(), 1, "{:?}", frame.samples);
        assert_eq!(frame.get("system.pressure", "io_some"), Some(0.75));
    }

    #[test]
    fn a_kernel_without_psi_gives_no_pressure_chart() {
        let dir = ProcDir::new();
        let mut sampler = dir.sampler();
        let now = Instant::now();
        tick(&mut sampler, now);
        dir.write("pressure/cpu", &psi((1.0, 1), None));
        let frame = tick(&mut sampler, now + Duration::from_secs(1));
        assert!(!charts(&frame).contains(&"system.pressure"), "turned off");
    }
}
