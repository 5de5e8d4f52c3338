//! `/proc/loadavg` → `system.load`: the kernel's 1, 5 and 15 minute load averages.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ProcFile, lines};
use crate::frame::Frame;

const DIMS: [&str; 3] = ["load1", "load5", "load15"];

pub(super) struct Load {
    file: ProcFile,
    chart: Arc<str>,
    dims: [Arc<str>; 3],
}

impl Load {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            file: ProcFile::new(path),
            chart: Arc::from("system.load"),
            dims: DIMS.map(Arc::from),
        }
    }

    pub(super) fn sample(&mut self, buf: &mut Vec<u8>, frame: &mut Frame) {
        if !self.file.read(buf) {
            return;
        }
        let Some(loads) = lines(buf).next().and_then(parse) else {
            return;
        };
        for (dim, load) in self.dims.iter().zip(loads) {
            frame.push(&self.chart, dim, load);
        }
    }
}

/// All three or none: a chart with a missing dimension would shift the model's inputs.
/// `f64::from_str` accepts `NaN` and `inf`, which a load never is.
fn parse(line: &str) -> Option<[f64; 3]> {
    let mut fields = line.split_whitespace();
    let mut loads = [0.0; 3];
    for load in &mut loads {
        *load = fields
            .next()?
            .parse::<f64>()
            .ok()
            .filter(|l| l.is_finite() && *l >= 0.0)?;
    }
    Some(loads)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::fixture::{ProcDir, tick};

    #[test]
    fn load_averages_are_reported_from_the_first_tick() {
        let dir = ProcDir::new();
        dir.write("loadavg", "1.43 1.02 0.48 1/84 13387\n");
        let frame = tick(&mut dir.sampler(), Instant::now());
        assert_eq!(frame.get("system.load", "load1"), Some(1.43));
        assert_eq!(frame.get("system.load", "load5"), Some(1.02));
        assert_eq!(frame.get("system.load", "load15"), Some(0.48));
    }

    #[test]
    fn a_truncated_or_invalid_loadavg_gives_nothing() {
        for contents in ["1.43 1.02\n", "1.43 NaN 0.48 1/84 1\n", "-1 0 0 1/1 1\n"] {
            let dir = ProcDir::new();
            dir.write("loadavg", contents);
            let frame = tick(&mut dir.sampler(), Instant::now());
            assert!(frame.samples.is_empty(), "{contents:?}");
        }
    }
}
