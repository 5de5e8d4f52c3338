//! `system.net_errors`: the host's network error and drop rates, summed over the
//! interfaces `net` reads from `/proc/net/dev` (each interface has them in `net.<iface>`
//! already). A cable going bad or a full receive ring shows here first, as a rate that is
//! normally flat at zero, which a model of `system.net`'s byte rates would not notice.

use std::sync::Arc;

use super::counter::add_to_total;
use crate::frame::Frame;

/// In the order `net` hands them over.
pub(super) const DIMS: [&str; 4] = ["rx_errors", "tx_errors", "rx_drops", "tx_drops"];

pub(super) struct NetErrors {
    chart: Arc<str>,
    dims: [Arc<str>; 4],
    /// This tick's sums so far; `None` once an interface had no rate for that dim.
    totals: [Option<f64>; 4],
}

impl NetErrors {
    pub(super) fn new() -> Self {
        Self {
            chart: Arc::from("system.net_errors"),
            dims: DIMS.map(Arc::from),
            totals: [None; 4],
        }
    }

    pub(super) fn begin(&mut self) {
        self.totals = [Some(0.0); 4];
    }

    /// One interface's rates this tick. As in `system.net`, an interface whose counter went
    /// backwards spoils that dim's sum for the tick (a sum missing one interface would look
    /// like a sudden drop), and an interface new this tick is left out.
    pub(super) fn add(&mut self, rates: [Option<f64>; 4]) {
        for (total, r) in self.totals.iter_mut().zip(rates) {
            add_to_total(total, r);
        }
    }

    /// Pushes the sums; `rates` is false on a tick without rates (the first).
    pub(super) fn end(&mut self, rates: bool, frame: &mut Frame) {
        if !rates {
            return;
        }
        for (dim, total) in self.dims.iter().zip(self.totals) {
            if let Some(t) = total {
                frame.push(&self.chart, dim, t);
            }
        }
    }
}
