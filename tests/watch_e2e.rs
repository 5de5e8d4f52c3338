//! End-to-end: `lookout-agent watch --once` against simulated hosts on mosquitto, read as a
//! script would read it (docs/watch.md).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HOSTS: [&str; 3] = ["sim-1", "sim-2", "sim-3"];

/// Simulated hosts that alarm within seconds and stay alarmed ([`LEVEL_SHIFTS_ONLY`]).
fn sim_args(port: u16) -> Vec<String> {
    sim_run_args(port, HOSTS.len(), 60, LEVEL_SHIFTS_ONLY)
}

/// Runs `lookout-agent watch ARGS` to its end (at most 30 s); exit code, stdout, stderr.
fn run_watch(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(agent_bin())
        .arg("watch")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start lookout-agent watch");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// [`run_watch`] off the test's runtime, whose threads keep the subscriber reading.
async fn watch(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_watch(&args)
    })
    .await
    .unwrap()
}

/// The two tables of a snapshot, each row split on whitespace (the last column, scores or
/// summary, spread over the remaining fields).
fn tables(out: &str) -> (Vec<Vec<&str>>, Vec<Vec<&str>>) {
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let mut parts = lines.split(|l| l.is_empty());
    let mut table = |header: &str| -> Vec<Vec<&str>> {
        let t = parts
            .next()
            .unwrap_or_else(|| panic!("no table {header}:\n{out}"));
        let words: Vec<&str> = t[0].split_whitespace().collect();
        assert_eq!(words.join(" "), header, "header of a table:\n{out}");
        t[1..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect()
    };
    let hosts = table("HOST STATUS SEEN ALARMS SCORES");
    let alarms = table("HOST SOURCE SEV AGE SUMMARY");
    (hosts, alarms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_lists_every_simulated_host_online_and_the_firing_alarm() {
    let dir = scratch("watch-e2e");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/status",
            "lookout/+/alarms/#",
            "lookout/+/sim/truth",
        ],
    )
    .await;
    let args = sim_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    for host in HOSTS {
        sub.wait_for(&format!("{host} online"), Duration::from_secs(20), |m| {
            m.topic == format!("lookout/{host}/status") && m.text() == "online"
        })
        .await;
    }
    let url = format!("mqtt://127.0.0.1:{port}");

    // An alarm of an injected anomaly (the ground truth on sim/truth), still firing when
    // the snapshot is taken: alarms a fresh model raises on its own resolve within ticks.
    // Level shifts outlast the snapshot by far; should one resolve in between all the
    // same, the next such alarm is tried.
    let mut seen_ids = Vec::new();
    let mut tried = 0;
    let (out, id) = loop {
        assert!(
            tried < 3,
            "alarms {seen_ids:?} all resolved during the snapshot"
        );
        let m = sub
            .wait_for("a firing alarm", Duration::from_secs(30), |m| {
                m.topic.contains("/alarms/")
                    && !m.payload.is_empty()
                    && m.json()["state"] == "firing"
                    && !seen_ids.contains(&m.json()["id"])
            })
            .await;
        let a = m.json();
        seen_ids.push(a["id"].clone());
        let injected = sub
            .seen
            .iter()
            .filter(|t| t.topic.ends_with("/sim/truth"))
            .map(Msg::json)
            .any(|t| {
                t["host"] == a["host"]
                    && t["metric"] == a["source"]
                    && a["started_at"].as_i64() >= t["start"].as_i64()
            });
        if !injected {
            continue;
        }
        tried += 1;
        let id = a["id"].clone();
        let (code, out, err) = watch(&["--once", "--url", &url, "--wait", "2s"]).await;
        assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
        sub.drain();
        let resolved = sub
            .seen
            .iter()
            .filter(|m| m.topic.contains("/alarms/") && !m.payload.is_empty())
            .any(|m| m.json()["id"] == id && m.json()["state"] == "resolved");
        if !resolved {
            break (out, id);
        }
    };
    assert!(
        !out.contains('\x1b'),
        "no escapes when stdout is a pipe:\n{out}"
    );
    assert!(
        out.starts_with(&format!(
            "# lookout watch {url} prefix lookout: 3 hosts, 3 online"
        )),
        "{out}"
    );
    let (hosts, alarms) = tables(&out);
    let names: Vec<&str> = hosts.iter().map(|r| r[0]).collect();
    assert_eq!(names, HOSTS, "every simulated host, in order:\n{out}");
    for row in &hosts {
        assert_eq!(row[1], "online", "{out}");
        // Scores of all five models, live.
        let scores = &row[4..];
        assert_eq!(scores.len(), 5, "{out}");
        assert!(scores.iter().all(|s| s.contains('=')), "{out}");
    }

    // The alarm as its messages say it, at some level it reached while firing.
    let fired: Vec<serde_json::Value> = sub
        .seen
        .iter()
        .filter(|m| !m.payload.is_empty() && m.topic.contains("/alarms/"))
        .map(Msg::json)
        .filter(|a| a["id"] == id && a["state"] == "firing")
        .collect();
    let (host, source) = (
        fired[0]["host"].as_str().unwrap(),
        fired[0]["source"].as_str().unwrap(),
    );
    let row = alarms
        .iter()
        .find(|r| r[0] == host && r[1] == source)
        .unwrap_or_else(|| panic!("alarm {id} of {host} ({source}) not listed:\n{out}"));
    assert!(
        fired
            .iter()
            .any(|a| a["severity"].as_u64().map(|s| s.to_string()).as_deref() == Some(row[2])),
        "severity {} is one the alarm had ({fired:?}):\n{out}",
        row[2]
    );
    assert!(
        row[3].ends_with(['s', 'm', 'h', 'd']),
        "an age: {}\n{out}",
        row[3]
    );
    assert!(row[4..].join(" ").contains(source), "the summary:\n{out}");
    let firing_on_host = alarms.iter().filter(|r| r[0] == host).count().to_string();
    let host_row = hosts.iter().find(|r| r[0] == host).unwrap();
    assert_eq!(
        host_row[3], firing_on_host,
        "ALARMS counts the host's firing alarms:\n{out}"
    );

    // One host only.
    let (code, out, err) =
        watch(&["--once", "--url", &url, "--wait", "1s", "--filter", "sim-1"]).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.starts_with(&format!(
            "# lookout watch {url} prefix lookout filter sim-1: 1 hosts, 1 online"
        )),
        "{out}"
    );
    let (hosts, alarms) = tables(&out);
    assert_eq!(hosts.len(), 1, "{out}");
    assert_eq!(&hosts[0][..2], ["sim-1", "online"], "{out}");
    assert!(alarms.iter().all(|r| r[0] == "sim-1"), "{out}");
    drop(agent);
}

#[test]
fn watch_once_exits_1_naming_the_url_when_no_broker_answers_and_2_on_bad_arguments() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let (code, out, err) = run_watch(&["--once", "--url", &url]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&format!("cannot connect to {url}")), "{err}");
    assert!(out.is_empty(), "no snapshot without a connection: {out}");

    for bad in [
        &["--once", "--filter", "sim-["][..],
        &["--once", "--url", "http://broker"],
        &["--once", "--wait", "soon"],
        &["--once", "--prefix", "a/+"],
    ] {
        let (code, _, err) = run_watch(bad);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
    }
}
