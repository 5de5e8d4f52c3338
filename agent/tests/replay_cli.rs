//! `lookout-agent replay` on labelled data, through the real binary: a `;`-separated
//! recording with a label column, per-row `firing` and `severity`, and bad arguments that
//! exit 2 naming what is at fault.

use std::path::Path;
use std::process::{Command, Output};

/// 900 rows at 1 s of two sensors in different units, `;`-separated, with a `label`
/// column that is 1 from row 600 on, where the voltage jumps.
fn recording(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from("datetime;voltage;vibration;label\n");
    for i in 0..900 {
        let (m, s) = (i / 60, i % 60);
        let wave = (i as f64 * 0.3).sin();
        let volts = if i >= 600 { 250.0 } else { 230.0 } + wave;
        let vib = 0.03 + 0.002 * wave;
        let label = u8::from(i >= 600);
        csv.push_str(&format!(
            "2026-03-02 08:{m:02}:{s:02};{volts:.3};{vib:.4};{label}\n"
        ));
    }
    let path = dir.join("rig.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn replay(input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookout-agent"))
        .arg("replay")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args([
            "--set",
            "detector.train.min_points=300",
            "--set",
            "detector.alarm.settle=0",
            "--set",
            "detector.alarm.settle_for=0s",
        ])
        .args(extra)
        .env("LOOKOUT_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_semicolon_recording_with_a_label_column_replays_with_firing_and_severity_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = recording(dir.path());
    let output = dir.path().join("out.csv");
    let out = replay(
        &input,
        &output,
        &["--delimiter", ";", "--ignore-columns", "label"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,score,alarm,firing,severity"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 900, "one row per input row");
    assert_eq!(rows[0][0], "2026-03-02 08:00:00");
    assert!(rows.iter().all(|r| r.len() == 5));
    let firing = |i: usize| rows[i][3] == "1";
    assert!(
        (0..600).all(|i| !firing(i)),
        "no alarm before the jump (the label column is not a dimension)"
    );
    let first = (600..900).find(|&i| firing(i)).expect("the jump alarms");
    assert!(first < 620, "fired at row {first}");
    assert_eq!(rows[first][2], "1", "raised on the first firing row");
    for r in &rows {
        let severity: u8 = r[4].parse().unwrap();
        assert_eq!(r[3] == "1", (1..=4).contains(&severity), "{r:?}");
    }
}

#[test]
fn a_semicolon_file_read_with_commas_fails_suggesting_the_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let input = recording(dir.path());
    let output = dir.path().join("out.csv");
    // Without --delimiter: no comma on the header, and the error suggests the delimiter.
    let out = replay(&input, &output, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rig.csv:1") && err.contains("--delimiter ';'"),
        "{err}"
    );
}

#[test]
fn bad_replay_arguments_exit_2_naming_the_column_or_the_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let input = recording(dir.path());
    let output = dir.path().join("out.csv");

    let out = replay(
        &input,
        &output,
        &["--delimiter", ";", "--ignore-columns", "anomaly"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rig.csv")
            && err.contains("--ignore-columns anomaly: no such column")
            && err.contains("datetime, voltage, vibration, label"),
        "{err}"
    );

    for bad in [";;", ".", "7"] {
        let out = replay(&input, &output, &["--delimiter", bad]);
        assert_eq!(out.status.code(), Some(2), "--delimiter {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--delimiter"), "{err}");
    }

    let out = replay(
        &input,
        &output,
        &[
            "--delimiter",
            ";",
            "--ignore-columns",
            "voltage,vibration,label",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no value column is left"));
}
