//! The `record` command: this host's metrics, sampled as `run` samples them, written as a
//! CSV (`ts,<chart>|<dim>,...`, Unix ms), so that a real host's behaviour (a day of
//! normal work, a stress test at noted times) can be replayed through the same models
//! offline (`lookout-agent simulate --recording`), as often as a change needs measuring.
//!
//! The columns are the metrics present at the second tick (rates exist from then on);
//! a metric missing later is an empty field, one appearing later is not recorded.
//!
//! [`playback`] reads such a file back through the real host's models (`[models]`), in
//! the same tick loop as `run` and `simulate`, with fits inline.

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
    let mut sampler = HostSampler::host();
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

/// Plays the recording at `input` through `settings`' `[models]` (fits inline, so a
/// playback gives the same result every time) and writes every alarm change as a JSON
/// line `{"alarm": …}`, as `simulate` does. Returns the rows played. A row that does not
/// parse is counted and skipped, like a bad sample.
pub fn playback(
    settings: &crate::config::Settings,
    input: &Path,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    use std::io::BufRead;
    use std::sync::Arc;
    let io = |source| Error::Io {
        path: input.to_owned(),
        source,
    };
    let file = std::fs::File::open(input).map_err(io)?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines.next().transpose().map_err(io)?.unwrap_or_default();
    let columns: Vec<(Arc<str>, Arc<str>)> = header
        .split(',')
        .skip(1)
        .map(|c| {
            let (chart, dim) = c.rsplit_once('|').unwrap_or((c, ""));
            (Arc::from(chart), Arc::from(dim))
        })
        .collect();
    let mut host = crate::tick::Host::new(
        &settings.mqtt.prefix,
        &settings.host,
        &settings.labels,
        &settings.models,
        &settings.host_judge,
        settings.host_alarm,
    );
    let mut fitter = crate::scorer::fit::Inline::new(1, 1, 1);
    let mut frame = Frame::with_capacity(columns.len());
    let mut outs = Vec::new();
    let (mut rows, mut bad) = (0u64, 0u64);
    let write_err = |source| Error::Io {
        path: "(output)".into(),
        source,
    };
    for line in lines {
        let line = line.map_err(io)?;
        let mut fields = line.split(',');
        let Some(ts) = fields.next().and_then(|t| t.parse::<i64>().ok()) else {
            bad += 1;
            continue;
        };
        frame.clear(ts);
        for ((chart, dim), field) in columns.iter().zip(fields) {
            if let Ok(v) = field.parse::<f64>() {
                frame.push(chart, dim, v);
            }
        }
        host.tick(0, &frame, &[], &mut fitter, &mut outs);
        rows += 1;
        for o in outs.drain(..) {
            if let crate::out::Out::Alarm { payload, .. } = o {
                out.write_all(b"{\"alarm\":").map_err(write_err)?;
                out.write_all(&payload).map_err(write_err)?;
                out.write_all(b"}\n").map_err(write_err)?;
            }
        }
    }
    if bad > 0 {
        tracing::warn!(bad, input = %input.display(), "rows without a timestamp skipped");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording of a steady host with one column stepping up after two hours: the
    /// playback alarms on that model, after the step, and only there.
    #[test]
    fn a_recording_plays_back_through_the_hosts_models() {
        let dir = std::env::temp_dir().join(format!("lookout-playback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("host.csv");
        let mut csv = String::from("ts,system.load|load1,system.ram|used_pct\n");
        let start = 1_767_571_200_000i64;
        let step_at = 2 * 3600;
        for t in 0..(3 * 3600) {
            let wiggle = ((t * 7919) % 17) as f64 * 0.01;
            let load = if t >= step_at { 6.0 } else { 0.5 } + wiggle;
            csv.push_str(&format!("{},{load},{}\n", start + t * 1000, 40.0 + wiggle));
        }
        std::fs::write(&input, csv).unwrap();
        let toml = "[models.load]\nmetrics = { \"system.load\" = [\"load1\"] }\n\
                    [models.memory]\nmetrics = { \"system.ram\" = [\"used_pct\"] }\n\
                    alarm = { kind = \"saturation\" }\nsaturation = { limit = 100.0 }\n";
        let source = lookout_shared::config::Source::builtin("test", toml);
        let settings = crate::config::load(&source, &[]).unwrap();
        let mut out = Vec::new();
        assert_eq!(playback(&settings, &input, &mut out).unwrap(), 3 * 3600);
        let alarms: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alarm"].clone())
            .collect();
        let firing: Vec<&serde_json::Value> =
            alarms.iter().filter(|a| a["state"] == "firing").collect();
        assert!(!firing.is_empty(), "the step alarms");
        for a in &firing {
            assert_eq!(a["source"], "load", "{a}");
            assert!(
                a["started_at"].as_i64().unwrap() >= start + step_at * 1000,
                "{a}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
