//! The `replay` command: a CSV streamed through one model, as fast as the machine goes.
//!
//! Input is `timestamp,value` (NAB's format) or `timestamp,<col>,<col>...`, all value
//! columns forming one model's dimensions. Output is `timestamp,score,alarm`, one row
//! per input row: `score` empty while the model is learning (or the row's value was not a
//! finite number), `alarm` 1 on the row where an alarm is raised (the notification a user
//! would get), 0 elsewhere. Fits run inline, so the result is the same on every run and
//! machine.

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Instant;

use crate::Error;
use crate::alarm::{Hysteresis, Transition};
use crate::config::Detector;
use crate::scorer::Model;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub scored: u64,
    /// Alarms raised.
    pub alarms: u64,
    pub fits: u64,
}

/// Replays `input` into `output` with `detector`. Progress goes to stderr only when it is
/// a terminal.
pub fn replay_files(input: &Path, output: &Path, detector: &Detector) -> Result<Summary, Error> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let file = std::fs::File::open(input).map_err(io_err(input))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let out = std::fs::File::create(output).map_err(io_err(output))?;
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::new(total));
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let summary = replay(
        BufReader::with_capacity(1 << 16, file),
        &mut w,
        detector,
        &input.display().to_string(),
        progress,
    )?;
    w.flush().map_err(io_err(output))?;
    Ok(summary)
}

/// The streaming core, generic over reader and writer so tests and benches need no files.
pub fn replay<R: Read, W: Write>(
    input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    mut progress: Option<Progress>,
) -> Result<Summary, Error> {
    let csv_err = |line: u64, message: String| Error::Csv {
        path: origin.to_owned(),
        line,
        message,
    };
    let write_err = |e: std::io::Error| csv_err(0, format!("writing output: {e}"));
    let mut input = input;
    let mut line = Vec::with_capacity(256);
    let mut values: Vec<f64> = Vec::new();
    let mut model: Option<Model> = None;
    let mut ws = None;
    let mut alarm = Hysteresis::new(detector.alarm);
    let mut summary = Summary::default();
    let mut line_no: u64 = 0;
    let mut bytes: u64 = 0;
    let mut width: Option<usize> = None;
    out.write_all(b"timestamp,score,alarm\n")
        .map_err(write_err)?;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| csv_err(line_no + 1, format!("reading: {e}")))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        line_no += 1;
        let text = std::str::from_utf8(&line).map_err(|_| csv_err(line_no, "not UTF-8".into()))?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let (ts, rest) = text.split_once(',').ok_or_else(|| {
            csv_err(
                line_no,
                format!("expected timestamp,value[,value...], got {text:?}"),
            )
        })?;
        values.clear();
        let mut parsed_all = true;
        for field in rest.split(',') {
            match field.trim().parse::<f64>() {
                Ok(v) => values.push(v),
                Err(_) => {
                    parsed_all = false;
                    break;
                }
            }
        }
        if !parsed_all {
            if width.is_none() && summary.rows == 0 {
                // The header: it names the columns; its width is the model's.
                width = Some(rest.split(',').count());
                continue;
            }
            return Err(csv_err(
                line_no,
                format!("value is not a number in {text:?}"),
            ));
        }
        let expected = *width.get_or_insert(values.len());
        if values.len() != expected {
            return Err(csv_err(
                line_no,
                format!(
                    "{} value columns where the header/first row has {expected}",
                    values.len()
                ),
            ));
        }
        let m = model.get_or_insert_with(|| Model::new(detector.params, expected));
        let ws = ws.get_or_insert_with(|| m.workspace());
        summary.rows += 1;
        let mut score = None;
        let mut fired = false;
        if let Ok(train_due) = m.ingest(&values) {
            if train_due {
                m.fit_now(ws);
                summary.fits += 1;
            }
            score = m.score();
        }
        if let Some(s) = score {
            fired = matches!(
                alarm.update(summary.rows as i64, s),
                Some(Transition::Fired { .. })
            );
            summary.scored += 1;
        }
        summary.alarms += u64::from(fired);
        out.write_all(ts.as_bytes()).map_err(write_err)?;
        out.write_all(b",").map_err(write_err)?;
        if let Some(s) = score {
            write!(out, "{s}").map_err(write_err)?;
        }
        out.write_all(if fired { b",1\n" } else { b",0\n" })
            .map_err(write_err)?;
        if let Some(p) = progress.as_mut() {
            p.update(summary.rows, bytes);
        }
    }
    if let Some(p) = progress.as_mut() {
        p.finish(summary.rows);
    }
    Ok(summary)
}

/// Rows/s and ETA on stderr, redrawn at most 4 times a second.
pub struct Progress {
    total_bytes: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Self {
        let now = Instant::now();
        Self {
            total_bytes,
            started: now,
            last: now,
        }
    }

    fn update(&mut self, rows: u64, bytes: u64) {
        if !rows.is_multiple_of(4096) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last).as_millis() < 250 {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
        let rate = rows as f64 / secs;
        let eta = if bytes > 0 && self.total_bytes > bytes {
            secs * (self.total_bytes - bytes) as f64 / bytes as f64
        } else {
            0.0
        };
        eprint!("\r{rows} rows, {rate:.0} rows/s, ETA {eta:.0}s   ");
    }

    fn finish(&mut self, rows: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "\r{rows} rows in {secs:.2}s ({:.0} rows/s)        ",
            rows as f64 / secs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DetectorRaw, Source};

    fn detector(overrides: &[&str]) -> Detector {
        let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let raw = Source::empty().parse(&sets).unwrap();
        Source::empty()
            .resolve_detector("detector", &raw.detector.or_builtin())
            .unwrap()
    }

    fn run(csv: &str, d: &Detector) -> Result<(String, Summary), Error> {
        let mut out = Vec::new();
        let s = replay(BufReader::new(csv.as_bytes()), &mut out, d, "in.csv", None)?;
        Ok((String::from_utf8(out).unwrap(), s))
    }

    #[test]
    fn one_output_row_per_input_row_with_empty_scores_while_learning() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..300 {
            csv.push_str(&format!("t{i},{}\n", (i as f64 * 0.2).sin() * 10.0));
        }
        let d = detector(&[
            "detector.train_data_size=100",
            "detector.train_every_n=50",
            "detector.min_train_points=100",
        ]);
        let (out, s) = run(&csv, &d).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,score,alarm");
        assert_eq!(lines.len(), 301);
        assert_eq!(s.rows, 300);
        assert_eq!(lines[1], "t0,,0");
        assert_eq!(lines[100], "t99,,0");
        assert!(
            lines[101].starts_with("t100,") && lines[101].len() > "t100,,0".len(),
            "{}",
            lines[101]
        );
        assert_eq!(s.scored, 200);
        assert_eq!(s.fits, 4, "fits at steps 100, 150, 200 and 250");
    }

    #[test]
    fn several_value_columns_form_one_model() {
        let mut csv = String::from("timestamp,user,system\n");
        for i in 0..200 {
            csv.push_str(&format!("{i},{},{}\n", i % 7, i % 3));
        }
        let d = detector(&[
            "detector.train_data_size=50",
            "detector.train_every_n=50",
            "detector.min_train_points=50",
        ]);
        let (_, s) = run(&csv, &d).unwrap();
        assert_eq!(s.scored, 150);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let d = detector(&[]);
        let err = run("timestamp,value\n1,2\n2,abc\n", &d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.csv:3"), "{err}");
        let err = run("timestamp,value\n1,2\n2,3,4\n", &d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.csv:3"), "{err}");
        let err = run("just-one-field\n", &d).unwrap_err().to_string();
        assert!(err.contains("in.csv:1"), "{err}");
    }

    #[test]
    fn headerless_input_is_accepted() {
        let d = detector(&[]);
        let (out, s) = run("1,2\n2,3\n", &d).unwrap();
        assert_eq!(s.rows, 2);
        assert_eq!(out.lines().count(), 3);
    }

    #[test]
    fn builtin_default_is_used_without_config() {
        let d = detector(&[]);
        let expected = Source::empty()
            .resolve_detector("detector", &DetectorRaw::builtin())
            .unwrap();
        assert_eq!(d, expected);
    }
}
