//! The `replay` command: a CSV streamed through one model, as fast as the machine goes.
//!
//! Input is `timestamp,value` (NAB's format) or `timestamp,<col>,<col>...`, all value
//! columns forming one model's dimensions, except those `--ignore-columns` names (labels);
//! `--delimiter` reads `;`-separated files ([`input`]). Output is
//! `timestamp,score,alarm,firing,severity`, comma-separated, one row per input row:
//! `score` empty while the model is learning (or the row's value was not a finite number),
//! `alarm` 1 on the row where an alarm is raised (the notification a user would get), 0
//! elsewhere; `firing` 1 while the model's alarm is firing after the row (the per-row
//! state to score against labels), 0 elsewhere; `severity` the severity the firing alarm
//! last announced (1–4), 0 when none is firing. Fits run inline, so the result is the same
//! on every run and machine. The plot draws every firing row in red.
//!
//! Without `--plot` the replay streams in fixed memory. With it, each row is also kept as a
//! [`Row`] (a plot needs the whole series to scale its axes) and drawn once the input ends.
//!
//! Layout:
//! - this file: the streaming core and the `--plot` request.
//! - [`input`]: reading the CSV: delimiter, header, ignored columns.
//! - [`plot`]: drawing the collected rows as an SVG.
//! - [`windows`]: labelled anomaly windows from NAB's `combined_windows.json`.
//! - [`timestamp`]: the hand-written timestamp parser behind the plot's time axis.

pub mod input;
pub mod interval;
pub mod plot;
pub mod timestamp;
pub mod windows;

use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Error;
use crate::alarm::Transition;
use crate::decide::{Decider, Decision, Detector, Scored};
use crate::scorer::fit::Inline;
pub use input::Format;
use input::{Line, LineReader};
use timestamp::Timestamp;
use windows::Window;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub scored: u64,
    /// Alarms raised.
    pub alarms: u64,
    /// Rows after which an alarm was firing (the output's `firing` column).
    pub alarm_rows: u64,
    /// Rows outside the detector's `down_limit`/`upper_limit`: not scored.
    pub invalid: u64,
    /// Malformed rows passed over with `--skip-bad-rows`.
    pub skipped: u64,
    pub fits: u64,
}

/// One replayed row as `--plot` draws it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// The row's timestamp, `None` when it is neither a date-time nor a number.
    pub ts: Option<Timestamp>,
    /// The first value column (not finite if the input said so; such rows are not drawn).
    pub value: f64,
    /// `None` while the model is learning or when the row could not be scored.
    pub score: Option<f64>,
    /// The alarm threshold in force at this row. One value for the whole replay today
    /// (`detector.alarm.threshold`); kept per row so that a threshold that moves can be
    /// drawn without changing the plot.
    pub threshold: Option<f64>,
    /// The alarm was firing after this row (the output's `firing` column).
    pub alarm: bool,
}

/// What `--plot` asks for, resolved before the replay starts so that a bad windows file
/// fails before any work is done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlotSpec {
    /// Where the SVG goes.
    pub path: PathBuf,
    /// Labelled anomaly windows to shade (empty: none).
    pub windows: Vec<Window>,
}

/// Replays `input`, read as `format` says, into `output` with `detector`, then draws the
/// plot if `plot` asks for one. Progress goes to stderr only when it is a terminal.
pub fn replay_files(
    input: &Path,
    output: &Path,
    detector: &Detector,
    plot: Option<&PlotSpec>,
    format: &Format,
) -> Result<Summary, Error> {
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
    // Created now so that an unwritable plot path fails before the replay, not after.
    let plot_file = plot
        .map(|p| std::fs::File::create(&p.path).map_err(io_err(&p.path)))
        .transpose()?;
    let mut w = BufWriter::with_capacity(1 << 16, out);
    // Plotting needs the whole series; without --plot nothing is kept.
    let mut rows = plot.map(|_| Vec::new());
    let summary = replay_rows(
        BufReader::with_capacity(1 << 16, file),
        &mut w,
        detector,
        &input.display().to_string(),
        format,
        progress,
        rows.as_mut(),
    )?;
    w.flush().map_err(io_err(output))?;
    if let (Some(spec), Some(mut file), Some(rows)) = (plot, plot_file, rows) {
        let title = input.file_name().map_or_else(
            || input.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let svg = plot::svg(&rows, &title, &spec.windows).map_err(|e| {
            io_err(&spec.path)(std::io::Error::other(format!("drawing the plot: {e}")))
        })?;
        file.write_all(svg.as_bytes()).map_err(io_err(&spec.path))?;
    }
    Ok(summary)
}

/// The streaming core, generic over reader and writer so tests and benches need no files.
/// Runs in fixed memory; see [`replay_collecting`] to keep the rows for a plot.
pub fn replay<R: Read, W: Write>(
    input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    progress: Option<Progress>,
) -> Result<Summary, Error> {
    replay_collecting(input, out, detector, origin, progress, None, false)
}

/// [`replay`], also pushing one [`Row`] per input row onto `rows` when it is given (the
/// vector grows with the input: only `--plot` passes one). With `skip_bad_rows` a
/// malformed row is counted, logged (the first 10) and written as `timestamp,,0,F,S`
/// (the alarm's state unchanged) when it has a timestamp, instead of ending the replay.
pub fn replay_collecting<R: Read, W: Write>(
    input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    progress: Option<Progress>,
    rows: Option<&mut Vec<Row>>,
    skip_bad_rows: bool,
) -> Result<Summary, Error> {
    let format = Format {
        skip_bad_rows,
        ..Format::default()
    };
    replay_rows(input, out, detector, origin, &format, progress, rows)
}

/// [`replay_collecting`] with the input read as `format` says.
pub fn replay_rows<R: Read, W: Write>(
    input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    format: &Format,
    progress: Option<Progress>,
    mut rows: Option<&mut Vec<Row>>,
) -> Result<Summary, Error> {
    let threshold = detector.alarm.threshold;
    replay_read(
        input,
        out,
        detector,
        origin,
        format,
        progress,
        &mut |r: &Replayed| {
            if let Some(rows) = rows.as_deref_mut() {
                rows.push(Row {
                    ts: timestamp::parse(r.ts),
                    value: r.values[0],
                    score: r.score(),
                    threshold: Some(threshold),
                    alarm: r.firing(),
                });
            }
        },
    )
}

/// One replayed row, as [`replay_observed`] shows it to its observer.
#[derive(Debug)]
pub struct Replayed<'a> {
    /// The timestamp field as written.
    pub ts: &'a str,
    /// The row's time in Unix ms: its own when it is a date, else one second per row.
    pub ts_ms: i64,
    pub values: &'a [f64],
    pub decision: Decision,
    /// The model's alarm after this row.
    pub alarm: RowAlarm,
}

/// A model's alarm after a row, as the output's `firing` and `severity` columns show it.
/// A row that does not reach the alarm (learning, not a number, outside the limits,
/// skipped as malformed) leaves it as the row before left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowAlarm {
    pub firing: bool,
    /// The severity the firing alarm last announced (`Fired`, then each `Changed`); 0
    /// when none is firing.
    pub severity: u8,
}

impl RowAlarm {
    /// The state after `decision`.
    pub fn follow(&mut self, decision: &Decision) {
        let Decision::Scored(s) = decision else {
            return;
        };
        if let Some(Transition::Fired { severity, .. } | Transition::Changed { severity, .. }) =
            s.transition
        {
            self.severity = severity;
        }
        self.firing = s.firing;
        if !s.firing {
            self.severity = 0;
        }
    }
}

impl Replayed<'_> {
    pub fn score(&self) -> Option<f64> {
        match self.decision {
            Decision::Scored(s) => Some(s.score),
            _ => None,
        }
    }

    /// An alarm was firing after this row (the output's `firing` column, the plot's red
    /// rows).
    pub fn firing(&self) -> bool {
        self.alarm.firing
    }

    /// The firing alarm's severity (the output's `severity` column), 0 when none fires.
    pub fn severity(&self) -> u8 {
        self.alarm.severity
    }

    /// An alarm was raised at this row (the output's `alarm` column).
    pub fn fired(&self) -> bool {
        matches!(
            self.decision,
            Decision::Scored(Scored {
                transition: Some(Transition::Fired { .. }),
                ..
            })
        )
    }
}

/// The streaming core on a comma-separated input: see [`replay_read`].
pub fn replay_observed<R: Read, W: Write>(
    input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    progress: Option<Progress>,
    skip_bad_rows: bool,
    observe: &mut dyn FnMut(&Replayed),
) -> Result<Summary, Error> {
    let format = Format {
        skip_bad_rows,
        ..Format::default()
    };
    replay_read(input, out, detector, origin, &format, progress, observe)
}

/// The streaming core: each row, read as `format` says, through the decision path
/// ([`Decider`]) with fits run inline, one output row per input row, and each replayed
/// row shown to `observe`. A header that does not fit `format` (an ignored column it
/// lacks) is [`Error::Config`], naming the input and the column.
pub fn replay_read<R: Read, W: Write>(
    mut input: BufReader<R>,
    out: &mut W,
    detector: &Detector,
    origin: &str,
    format: &Format,
    mut progress: Option<Progress>,
    observe: &mut dyn FnMut(&Replayed),
) -> Result<Summary, Error> {
    let csv_err = |line: u64, message: String| Error::Csv {
        path: origin.to_owned(),
        line,
        message,
    };
    let write_err = |e: std::io::Error| csv_err(0, format!("writing output: {e}"));
    let mut reader = LineReader::new(format);
    let mut decider: Option<(Decider, Inline)> = None;
    let mut summary = Summary::default();
    let mut alarm = RowAlarm::default();
    out.write_all(HEADER).map_err(write_err)?;
    loop {
        let line = match reader.next(&mut input) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(csv_err(reader.line_no + 1, format!("reading: {e}"))),
        };
        let (ts, values) = match line {
            Line::Skip => continue,
            Line::Row { ts, values } => (ts, values),
            Line::Unfit(message) => {
                return Err(Error::Config {
                    path: origin.to_owned(),
                    message,
                });
            }
            Line::Bad { line, ts, message } => {
                if !format.skip_bad_rows {
                    return Err(csv_err(line, message));
                }
                summary.skipped += 1;
                if summary.skipped <= 10 {
                    tracing::warn!(
                        file = origin,
                        line,
                        "{message}; row skipped (--skip-bad-rows)"
                    );
                }
                if let Some(ts) = ts {
                    let (firing, severity) = (u8::from(alarm.firing), alarm.severity);
                    writeln!(out, "{ts},,0,{firing},{severity}").map_err(write_err)?;
                }
                continue;
            }
        };
        let (d, fitter) = decider.get_or_insert_with(|| {
            // A replay writes no alarm payloads, so it keeps no picture's window.
            let quiet = Detector {
                picture_points: 0,
                ..detector.clone()
            };
            let d = Decider::new(&quiet, values.len());
            let fitter = Inline::for_model(d.model());
            (d, fitter)
        });
        summary.rows += 1;
        let ts_ms = match timestamp::parse(ts) {
            Some(Timestamp::Civil(secs)) => (secs * 1000.0) as i64,
            _ => summary.rows as i64 * 1000,
        };
        let (decision, fitted) = d.step(ts_ms, values, (0, 0), fitter);
        alarm.follow(&decision);
        let r = Replayed {
            ts,
            ts_ms,
            values,
            decision,
            alarm,
        };
        summary.count(&r, fitted);
        observe(&r);
        write_row(out, &r).map_err(write_err)?;
        if let Some(p) = progress.as_mut() {
            p.update(summary.rows, reader.bytes);
        }
    }
    if let Some(p) = progress.as_mut() {
        p.finish(summary.rows);
    }
    Ok(summary)
}

impl Summary {
    fn count(&mut self, r: &Replayed, fitted: bool) {
        self.fits += u64::from(fitted);
        self.invalid += u64::from(r.decision == Decision::Invalid);
        self.scored += u64::from(r.score().is_some());
        self.alarms += u64::from(r.fired());
        self.alarm_rows += u64::from(r.firing());
    }
}

/// The output's header. The first three columns are NAB's (`timestamp,score,alarm`);
/// readers that take columns by name or position keep working.
pub const HEADER: &[u8] = b"timestamp,score,alarm,firing,severity\n";

/// `timestamp,score,alarm,firing,severity`.
fn write_row<W: Write>(out: &mut W, r: &Replayed) -> std::io::Result<()> {
    out.write_all(r.ts.as_bytes())?;
    out.write_all(b",")?;
    if let Some(s) = r.score() {
        write!(out, "{s}")?;
    }
    out.write_all(if r.fired() { b",1," } else { b",0," })?;
    match (r.firing(), r.severity()) {
        (false, _) => out.write_all(b"0,0\n"),
        (true, s) => writeln!(out, "1,{s}"),
    }
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
    use lookout_shared::config::Source;

    fn detector(overrides: &[&str]) -> Detector {
        let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let source = Source::empty();
        crate::config::parse(&source, &sets)
            .unwrap()
            .detector()
            .unwrap()
            .resolve_at(std::time::Duration::from_secs(1))
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
            "detector.train.window=100",
            "detector.train.every=50",
            "detector.train.min_points=100",
        ]);
        let (out, s) = run(&csv, &d).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,score,alarm,firing,severity");
        assert_eq!(lines.len(), 301);
        assert_eq!(s.rows, 300);
        assert_eq!(lines[1], "t0,,0,0,0");
        assert_eq!(lines[100], "t99,,0,0,0");
        assert!(
            lines[101].starts_with("t100,") && lines[101].len() > "t100,,0,0,0".len(),
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
            "detector.train.window=50",
            "detector.train.every=50",
            "detector.train.min_points=50",
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
    fn values_outside_the_limits_are_counted_and_not_scored() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..300 {
            let v = if i == 250 { 150.0 } else { (i % 7) as f64 };
            csv.push_str(&format!("t{i},{v}\n"));
        }
        let d = detector(&[
            "detector.train.window=100",
            "detector.train.min_points=100",
            "detector.down_limit=0",
            "detector.upper_limit=100",
        ]);
        let (out, s) = run(&csv, &d).unwrap();
        assert_eq!(s.invalid, 1);
        assert_eq!(
            out.lines().nth(251),
            Some("t250,,0,0,0"),
            "no score for the bad row"
        );
        assert!(out.lines().nth(252).unwrap().len() > "t251,,0,0,0".len());
    }

    #[test]
    fn skip_bad_rows_keeps_going_and_keeps_one_output_row_per_timestamped_row() {
        let d = detector(&[]);
        let input = "timestamp,value\n1,2\n2,abc\n3,4,5\nnocomma\n4,5\n";
        let mut out = Vec::new();
        let s = replay_collecting(
            BufReader::new(input.as_bytes()),
            &mut out,
            &d,
            "in.csv",
            None,
            None,
            true,
        )
        .unwrap();
        assert_eq!((s.rows, s.skipped), (2, 3));
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "timestamp,score,alarm,firing,severity",
                "1,,0,0,0",
                "2,,0,0,0",
                "3,,0,0,0",
                "4,,0,0,0"
            ]
        );
    }

    #[test]
    fn headerless_input_is_accepted() {
        let d = detector(&[]);
        let (out, s) = run("1,2\n2,3\n", &d).unwrap();
        assert_eq!(s.rows, 2);
        assert_eq!(out.lines().count(), 3);
    }

    /// 600 five-minute rows from 2014-02-14 00:00 UTC: a slow wave, then a jump to a new
    /// level at row 450 that the detector below alarms on.
    fn nab_like() -> String {
        let start = timestamp::parse_civil("2014-02-14 00:00:00").unwrap();
        let mut csv = String::from("timestamp,value\n");
        for i in 0..600 {
            let ts = timestamp::format_civil(start + i as f64 * 300.0, true);
            let v = (i as f64 * 0.2).sin() * 5.0 + if i >= 450 { 60.0 } else { 20.0 };
            csv.push_str(&format!("{ts}:00,{v}\n"));
        }
        csv
    }

    fn alarming_detector() -> Detector {
        detector(&[
            "detector.train.window=200",
            "detector.train.every=100",
            "detector.alarm.threshold=1.5",
            "detector.alarm.settle=0",
            "detector.alarm.settle_for=0s",
        ])
    }

    #[test]
    fn collecting_rows_changes_nothing_in_the_output() {
        let d = alarming_detector();
        let csv = nab_like();
        let (plain, s) = run(&csv, &d).unwrap();
        let mut out = Vec::new();
        let mut rows = Vec::new();
        let s2 = replay_collecting(
            BufReader::new(csv.as_bytes()),
            &mut out,
            &d,
            "in.csv",
            None,
            Some(&mut rows),
            false,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), plain);
        assert_eq!(s, s2);
        assert!(s.alarm_rows > 0, "the jump must alarm: {s:?}");
        assert_eq!(rows.len() as u64, s.rows);
        assert_eq!(rows.iter().filter(|r| r.alarm).count() as u64, s.alarm_rows);
        assert_eq!(
            rows.iter().filter(|r| r.score.is_some()).count() as u64,
            s.scored
        );
        assert!(rows.iter().all(|r| r.threshold == Some(1.5)));
        // Rows mirror the output: an alarm is raised on a row where one is firing, the
        // first value column, the parsed time.
        let raised = plain
            .lines()
            .skip(1)
            .filter(|l| l.split(',').nth(2) == Some("1"))
            .count() as u64;
        assert!(raised > 0 && raised == s.alarms && raised <= s.alarm_rows);
        for (row, line) in rows.iter().zip(plain.lines().skip(1)) {
            assert_eq!(row.alarm, line.split(',').nth(3) == Some("1"), "{line}");
        }
        assert_eq!(rows[0].value, 20.0);
        assert_eq!(
            rows[1].ts,
            Some(Timestamp::Civil(
                timestamp::parse_civil("2014-02-14 00:05:00").unwrap()
            ))
        );
    }

    #[test]
    fn replay_files_with_plot_writes_csv_and_svg_with_alarms_and_windows() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ec2_cpu_utilization_test.csv");
        std::fs::write(&input, nab_like()).unwrap();
        let labels = dir.path().join("combined_windows.json");
        std::fs::write(
            &labels,
            r#"{"realAWSCloudwatch/ec2_cpu_utilization_test.csv":
                [["2014-02-15 12:00:00.000000", "2014-02-15 18:00:00.000000"]]}"#,
        )
        .unwrap();
        let spec = PlotSpec {
            path: dir.path().join("plot.svg"),
            windows: windows::for_input(&labels, &input).unwrap(),
        };
        assert_eq!(spec.windows.len(), 1);
        let output = dir.path().join("out.csv");
        let s = replay_files(
            &input,
            &output,
            &alarming_detector(),
            Some(&spec),
            &Format::default(),
        )
        .unwrap();

        let csv = std::fs::read_to_string(&output).unwrap();
        assert_eq!(csv.lines().count() as u64, s.rows + 1);
        let svg = std::fs::read_to_string(&spec.path).unwrap();
        assert!(svg.contains(">\nec2_cpu_utilization_test.csv\n<"), "title");
        let alarm_dots = svg
            .lines()
            .filter(|l| l.starts_with("<circle") && l.contains(r##"fill="#FF0000""##))
            .filter(|l| l.contains(r#"r="2""#))
            .count() as u64;
        assert!(s.alarm_rows > 0);
        assert_eq!(alarm_dots, s.alarm_rows, "one red dot per alarm row");
        assert_eq!(
            svg.matches(r##"fill="#FF8C00""##).count(),
            3,
            "2 panels + legend"
        );
    }

    #[test]
    fn an_unwritable_plot_path_fails_before_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "timestamp,value\n1,2\n").unwrap();
        let output = dir.path().join("out.csv");
        let spec = PlotSpec {
            path: dir.path().join("no/such/dir/plot.svg"),
            windows: Vec::new(),
        };
        let err = replay_files(
            &input,
            &output,
            &detector(&[]),
            Some(&spec),
            &Format::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("plot.svg"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "",
            "no rows replayed"
        );
    }

    /// The output's rows as (alarm, firing, severity), header checked.
    fn states(out: &str) -> Vec<(bool, bool, u8)> {
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("timestamp,score,alarm,firing,severity"));
        lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), 5, "{l}");
                (f[2] == "1", f[3] == "1", f[4].parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn firing_and_severity_hold_on_every_row_of_an_alarm_and_only_there() {
        let (out, s) = run(&nab_like(), &alarming_detector()).unwrap();
        let rows = states(&out);
        let firing = rows.iter().filter(|r| r.1).count() as u64;
        assert_eq!(firing, s.alarm_rows);
        assert!(
            firing > s.alarms,
            "an alarm fires for more than its first row: {s:?}"
        );
        for (i, &(raised, firing, severity)) in rows.iter().enumerate() {
            assert_eq!(
                firing,
                (1..=4).contains(&severity),
                "row {i}: severity {severity}"
            );
            if raised {
                assert!(firing, "row {i}: raised, so firing after it");
                assert!(
                    i == 0 || !rows[i - 1].1,
                    "row {i}: raised after a firing row"
                );
            }
        }
        // Each firing run starts where an alarm is raised.
        for (i, w) in rows.windows(2).enumerate() {
            if !w[0].1 && w[1].1 {
                assert!(w[1].0, "row {}: firing without being raised", i + 1);
            }
        }
    }

    #[test]
    fn severity_follows_fired_and_changed() {
        let mut a = RowAlarm::default();
        let scored = |firing, transition| {
            Decision::Scored(Scored {
                score: 3.0,
                level: Some(1),
                firing,
                young: false,
                transition,
                severity: 0,
            })
        };
        a.follow(&scored(
            true,
            Some(Transition::Fired {
                started_at: 0,
                score: 3.0,
                severity: 1,
            }),
        ));
        assert_eq!(
            a,
            RowAlarm {
                firing: true,
                severity: 1
            }
        );
        a.follow(&scored(true, None));
        a.follow(&Decision::Invalid);
        assert_eq!(a.severity, 1, "an unscored row leaves the alarm as it was");
        a.follow(&scored(
            true,
            Some(Transition::Changed {
                started_at: 0,
                score: 3.0,
                severity: 3,
            }),
        ));
        assert_eq!(
            a,
            RowAlarm {
                firing: true,
                severity: 3
            }
        );
        a.follow(&scored(
            false,
            Some(Transition::Resolved {
                started_at: 0,
                score: 0.5,
                severity: 3,
            }),
        ));
        assert_eq!(a, RowAlarm::default());
    }

    #[test]
    fn a_semicolon_file_with_label_columns_replays_like_the_plain_one() {
        let plain = nab_like();
        let mut labelled = String::from("datetime;value;label;note\n");
        for (i, line) in plain.lines().skip(1).enumerate() {
            let (ts, v) = line.split_once(',').unwrap();
            let label = u8::from(i >= 450);
            labelled.push_str(&format!("{ts};{v};{label};n{i}\n"));
        }
        let format = Format {
            delimiter: ';',
            ignore: vec!["label".into(), "note".into()],
            skip_bad_rows: false,
        };
        let d = alarming_detector();
        let mut out = Vec::new();
        let s = replay_rows(
            BufReader::new(labelled.as_bytes()),
            &mut out,
            &d,
            "rig.csv",
            &format,
            None,
            None,
        )
        .unwrap();
        let (expected, s2) = run(&plain, &d).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(s, s2);
    }

    #[test]
    fn an_ignored_column_the_input_lacks_is_a_config_error_naming_file_and_column() {
        let format = Format {
            ignore: vec!["anomaly".into()],
            ..Format::default()
        };
        let mut out = Vec::new();
        let err = replay_rows(
            BufReader::new("ts,a,label\n1,2,0\n".as_bytes()),
            &mut out,
            &detector(&[]),
            "rig.csv",
            &format,
            None,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("rig.csv: --ignore-columns anomaly: no such column"),
            "{msg}"
        );
    }

    #[test]
    fn builtin_default_is_used_without_config() {
        assert_eq!(detector(&[]), Detector::default());
    }
}
