//! The `record` command: this host's metrics, sampled as `run` samples them, written as a
//! CSV (`ts,<chart>|<dim>,...`, Unix ms), so that a real host's behaviour (a day of
//! normal work, a stress test at noted times) can be replayed through the same models
//! offline (`lookout-agent simulate --recording`), as often as a change needs measuring.
//!
//! The columns are the metrics present at the second tick (rates exist from then on);
//! a metric missing later is an empty field, one appearing later is not recorded.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;
use crate::frame::Frame;
use crate::sampler::HostSampler;

/// Samples `/proc` every `interval` for `duration` (or until SIGINT/SIGTERM) into `out`.
pub async fn record(out: &Path, interval: Duration, duration: Duration) -> Result<u64, Error> {
    let io = |source| Error::Io {
        path: out.to_owned(),
        source,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let mut sampler = HostSampler::new("/proc");
    let mut frame = Frame::with_capacity(256);
    let mut columns: Option<Vec<(String, String)>> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = std::pin::pin!(lookout_shared::signal::shutdown());
    let started = Instant::now();
    let mut rows = 0u64;
    let mut first = true;
    let mut line = String::new();
    while started.elapsed() < duration {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break,
        }
        frame.clear(lookout_shared::time::now_ms());
        sampler.sample(Instant::now(), &mut frame);
        let cols = match &columns {
            Some(c) => c,
            // The first tick has no rates yet: the columns come from the second.
            None if std::mem::take(&mut first) => continue,
            None => {
                let c: Vec<(String, String)> = frame
                    .samples
                    .iter()
                    .map(|s| (s.chart.to_string(), s.dim.to_string()))
                    .collect();
                let header: Vec<String> = c.iter().map(|(ch, d)| format!("{ch}|{d}")).collect();
                writeln!(w, "ts,{}", header.join(",")).map_err(io)?;
                columns.insert(c)
            }
        };
        line.clear();
        line.push_str(&frame.ts.to_string());
        for (chart, dim) in cols {
            line.push(',');
            if let Some(v) = frame.get(chart, dim).filter(|v| v.is_finite()) {
                line.push_str(&v.to_string());
            }
        }
        writeln!(w, "{line}").map_err(io)?;
        rows += 1;
        if rows.is_multiple_of(60) {
            w.flush().map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    Ok(rows)
}
