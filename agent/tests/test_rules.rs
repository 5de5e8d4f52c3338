//! `lookout-agent test-rules` as a user runs it: the real binary on the committed example
//! (seed 002's rule and events) and on broken files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name)
}

fn test_rules(rules: &Path, events: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout-agent"))
        .arg("test-rules")
        .arg("--rules")
        .arg(rules)
        .arg("--events")
        .arg(events)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lookout-agent");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("lookout-agent runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The seed's output event, with the window's real end (the seed's own output shows an
/// unrelated time) and `count` at the end.
const SEED_OUTPUT: &str = concat!(
    r#"{"time":"2018-04-30T14:51:00.000Z","deviceid":"978648","ruleid":1234,"metric":"CPU","#,
    r#""alert":"hot node AVG CPU over 90","avg":96.5,"min":95.0,"max":98.0,"#,
    r#""dim0":null,"dim1":null,"dim2":"N024","dim3":null,"dim4":null,"count":2}"#,
    "\n"
);

#[test]
fn the_seeds_example_prints_exactly_one_alarm_for_n024() {
    let out = test_rules(&example("rules.json"), &example("events.json"), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), SEED_OUTPUT);
    assert!(
        text(&out.stderr).contains("3 events: 3 accepted"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn events_can_come_on_standard_input() {
    let events = std::fs::read_to_string(example("events.json")).unwrap();
    let out = test_rules(&example("rules.json"), Path::new("-"), Some(&events));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), SEED_OUTPUT);
}

#[test]
fn a_bad_rules_file_exits_2_naming_the_file_the_rule_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let good = std::fs::read_to_string(example("rules.json")).unwrap();
    std::fs::write(&rules, good.replace("AVGGREATEROREQUAL", "AVGOVER")).unwrap();
    let out = test_rules(&rules, &example("events.json"), None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "", "no output from a rejected document");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: rules[0] (ruleId 1234): operator: \"AVGOVER\" is not an operator",
            rules.display()
        )),
        "{err}"
    );

    let missing = dir.path().join("nope.json");
    let out = test_rules(&missing, &example("events.json"), None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unreadable rules file is a bad one"
    );
    assert!(
        text(&out.stderr).contains("nope.json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unreadable_events_file_is_a_failed_run_and_bad_events_are_only_counted() {
    let dir = tempfile::tempdir().unwrap();
    let out = test_rules(&example("rules.json"), &dir.path().join("none.json"), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("none.json"),
        "{}",
        text(&out.stderr)
    );

    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        "{\"metric\": \"CPU\", \"value\": \"hot\"}\nnot json\n",
    )
    .unwrap();
    let out = test_rules(&example("rules.json"), &events, None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(
        err.contains("line 1: value: expected a finite number, got \"hot\""),
        "{err}"
    );
    assert!(err.contains("line 2: not JSON"), "{err}");
    assert!(err.contains("2 bad"), "{err}");
}
