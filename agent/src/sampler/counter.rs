//! What `diskstats` and `net` share: a file of per-device monotonic counters, read once a
//! tick into per-second rates under each device's chart, and the host-wide sums of the
//! first two rates (bytes read and written, received and sent). `net_errors` sums others
//! with [`add_to_total`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{Devices, ProcFile, elapsed_secs};
use crate::frame::Frame;

/// One source's counters across ticks: `C` is one device's counters, `N` its dims. A tick
/// is [`begin`](Self::begin), [`device`](Self::device) for each device line, then
/// [`end`](Self::end).
pub(super) struct CounterFile<C, const N: usize> {
    file: ProcFile,
    prev_at: Option<Instant>,
    devices: Devices<C>,
    /// The host's chart (`system.io`, `system.net`).
    host: Arc<str>,
    /// A device's dims; the host's are the first two.
    dims: [Arc<str>; N],
    /// This tick's seconds since the previous read (`None`: no rates this tick).
    secs: Option<f64>,
    /// This tick's host sums of the first two dims so far.
    totals: [Option<f64>; 2],
}

impl<C: Copy, const N: usize> CounterFile<C, N> {
    pub(super) fn new(path: PathBuf, devices: Devices<C>, host: &str, dims: [&str; N]) -> Self {
        Self {
            file: ProcFile::new(path),
            prev_at: None,
            devices,
            host: Arc::from(host),
            dims: dims.map(Arc::from),
            secs: None,
            totals: [None; 2],
        }
    }

    /// Reads the file into `buf` for this tick; false when it cannot be read, and then
    /// this source has nothing this tick.
    pub(super) fn begin(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if !self.file.read(buf) {
            return false;
        }
        self.secs = elapsed_secs(self.prev_at, now);
        self.prev_at = Some(now);
        self.totals = [Some(0.0); 2];
        self.devices.begin();
        true
    }

    /// Device `name` read `cur`: `rates(prev, cur, secs)` gives its per-second values in
    /// dims order, which are pushed under its chart and added to the host's sums. They are
    /// returned too, for sums of other dims (`system.net_errors`); `None` for a device
    /// without rates this tick (new, ignored, or the first tick).
    pub(super) fn device(
        &mut self,
        frame: &mut Frame,
        name: &str,
        cur: C,
        rates: impl FnOnce(C, C, f64) -> [Option<f64>; N],
    ) -> Option<[Option<f64>; N]> {
        let (chart, prev) = self.devices.update(name, cur)?;
        // A new device has no rates yet and is left out of this tick's totals.
        let (Some(secs), Some(prev)) = (self.secs, prev) else {
            return None;
        };
        let values = rates(prev, cur, secs);
        for (dim, v) in self.dims.iter().zip(values) {
            if let Some(v) = v {
                frame.push(chart, dim, v);
            }
        }
        for (total, v) in self.totals.iter_mut().zip(values) {
            add_to_total(total, v);
        }
        Some(values)
    }

    /// Whether this tick has rates (false on the first read).
    pub(super) fn has_rates(&self) -> bool {
        self.secs.is_some()
    }

    /// Ends the tick: forgets the devices that were not in this read, and pushes the host
    /// sums that every device contributed a rate to.
    pub(super) fn end(&mut self, frame: &mut Frame) {
        self.devices.end();
        if self.secs.is_none() {
            return;
        }
        for (dim, total) in self.dims.iter().zip(self.totals) {
            if let Some(t) = total {
                frame.push(&self.host, dim, t);
            }
        }
    }
}

/// Adds one device's rate to a host total. A device without a rate (counter reset) spoils
/// the total for the tick: a sum missing one device would look like a sudden drop.
pub(super) fn add_to_total(total: &mut Option<f64>, rate: Option<f64>) {
    *total = total.zip(rate).map(|(sum, r)| sum + r);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::fixture::charts;
    use super::super::{Devices, rate};
    use super::*;

    fn rates(prev: [u64; 3], cur: [u64; 3], secs: f64) -> [Option<f64>; 3] {
        std::array::from_fn(|i| rate(prev[i], cur[i], secs))
    }

    #[test]
    fn host_totals_need_a_rate_from_every_device_but_new_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("counters");
        std::fs::write(&path, "").expect("counter file");
        let mut counters = CounterFile::new(
            path,
            Devices::new("dev.", "devices"),
            "system.dev",
            ["in", "out", "errors"],
        );
        let now = Instant::now();
        let mut tick = |secs: u64, devices: &[(&str, [u64; 3])]| {
            let mut frame = Frame::default();
            let mut buf = Vec::new();
            assert!(counters.begin(now + Duration::from_secs(secs), &mut buf));
            for (name, cur) in devices {
                counters.device(&mut frame, name, *cur, rates);
            }
            counters.end(&mut frame);
            frame
        };

        assert!(
            tick(0, &[("a", [0, 0, 0])]).samples.is_empty(),
            "no rates yet"
        );
        let frame = tick(2, &[("a", [100, 50, 4])]);
        assert_eq!(frame.get("dev.a", "errors"), Some(2.0));
        assert_eq!(frame.get("system.dev", "in"), Some(50.0));
        assert_eq!(frame.get("system.dev", "out"), Some(25.0));
        assert_eq!(frame.get("system.dev", "errors"), None, "two host dims");

        // a's `in` counter was reset, and b is new.
        let frame = tick(3, &[("a", [10, 60, 4]), ("b", [500, 500, 0])]);
        assert_eq!(frame.get("dev.a", "in"), None);
        assert_eq!(frame.get("system.dev", "in"), None, "spoilt by a");
        assert_eq!(frame.get("system.dev", "out"), Some(10.0), "b left out");
        assert_eq!(charts(&frame), ["dev.a", "system.dev"]);
    }
}
