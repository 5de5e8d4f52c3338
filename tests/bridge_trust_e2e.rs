//! End-to-end: what an on-call person relies on beyond delivery, against a real mosquitto
//! and the real bridge binary: decommissioning a host, the heartbeat, the broker-lost
//! notice.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{Reply, TestServer};
use common::*;
use serde_json::Value;

/// Waits until the file target's lines satisfy `done`; panics after `timeout`.
async fn wait_lines(
    path: &std::path::Path,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(&lines(path)) {
        assert!(Instant::now() < deadline, "{what}; file: {:?}", lines(path));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(lines: &[Value], source: &str, state: &str) -> usize {
    lines
        .iter()
        .filter(|a| a["source"] == source && a["state"] == state)
        .count()
}

fn config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    config_with(dir, port, extra, "")
}

/// The bridge's config: `extra` in `[bridge]`, `tail` (more tables) at the end.
fn config_with(dir: &std::path::Path, port: u16, extra: &str, tail: &str) -> std::path::PathBuf {
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "e2e"
stats_interval = "1s"
state_dir = "{state}"
{extra}

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topics = ["lookout/+/alarms/#"]

[delivery]
dead_letter = "{dead}"

[targets.alarms_file]
type = "file"
path = "{out}"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["alarms_file"]
{tail}
"#,
            state = dir.join("state").display(),
            dead = dir.join("dead.jsonl").display(),
            out = dir.join("alarms.log").display(),
        ),
    )
    .unwrap();
    cfg
}

/// The retained topics the broker holds under `filters`, seen by a fresh subscriber.
async fn retained(port: u16, filters: &[&str]) -> BTreeSet<String> {
    let mut sub = Subscriber::connect(port, filters).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sub.drain();
    sub.seen
        .iter()
        .filter(|m| m.retain && !m.payload.is_empty())
        .map(|m| m.topic.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_clears_every_retained_topic_of_the_host_and_only_those() {
    let dir = scratch("bridge-decommission");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let alarm = r#"{"id": "old-1:cpu:1", "host": "old-1", "source": "cpu", "state": "firing", "severity": 3}"#;
    let keep = [
        ("lookout/old-10/status", "online"),
        ("lookout/keep-1/status", "offline"),
        ("homeassistant/sensor/lookout_keep-1/cpu/config", "{}"),
    ];
    let gone = [
        ("lookout/old-1/status", "offline"),
        ("lookout/old-1/alarms/cpu", alarm),
        ("lookout/old-1/alarms/rule/r1/dev", alarm),
        ("lookout/old-1/agent/stats", "{\"ts\": 1}"),
        ("lookout/old-1/rules", "{\"rules\": []}"),
        ("homeassistant/sensor/lookout_old-1/cpu/config", "{}"),
    ];
    let all = keep.iter().chain(&gone);
    publish(
        port,
        all.map(|(t, p)| (t.to_string(), p.to_string(), true))
            .collect(),
    )
    .await;
    let filters = ["lookout/#", "homeassistant/#"];
    assert_eq!(
        retained(port, &filters).await.len(),
        keep.len() + gone.len()
    );

    let cfg = config(dir.path(), port, "");
    let out = Command::new(bridge_bin())
        .args(["decommission", "old-1", "--config", cfg.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (t, _) in &gone {
        assert!(stdout.contains(&format!("cleared {t}\n")), "{t}: {stdout}");
    }
    assert!(
        stdout.contains("old-1: 6 retained topics cleared"),
        "{stdout}"
    );

    let left = retained(port, &filters).await;
    let want: BTreeSet<String> = keep.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(left, want);

    // A name that is not one topic level is refused as a usage error.
    let out = Command::new(bridge_bin())
        .args(["decommission", "a/#", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_pings_while_connected_and_stops_when_the_broker_is_gone() {
    let dir = scratch("bridge-heartbeat");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());
    let server = TestServer::start(vec![Reply::text(200, "OK")]).await;
    let tail = format!(
        "[heartbeat]\nurl = \"{}\"\nevery = \"1s\"\n",
        server.url("/ping/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    );
    let cfg = config_with(dir.path(), port, "", &tail);
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    while server.requests().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", server.requests());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in server.requests() {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/ping/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
    }

    broker.kill();
    bridge
        .wait_log("MQTT connection lost", Duration::from_secs(10))
        .await;
    // A ping already on its way may still land; none after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_loss = server.requests().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        server.requests().len(),
        at_loss,
        "no heartbeat without the broker"
    );
    assert!(
        !bridge.log_text().contains("0f1e2d3c"),
        "the ping URL's token never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_lost_notice_reaches_a_file_target_once_and_its_return_too() {
    let dir = scratch("bridge-broker-lost");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = config(
        dir.path(),
        port,
        "broker_lost_after = \"1s\"\nbroker_lost_targets = [\"alarms_file\"]",
    );
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(lines(&out).is_empty(), "connected: nothing to say");

    broker.kill();
    wait_lines(
        &out,
        "the broker-lost notice",
        Duration::from_secs(20),
        |l| has(l, "broker_lost", "firing") == 1,
    )
    .await;
    let lost = lines(&out)[0].clone();
    assert_eq!(lost["host"], "e2e", "names the bridge");

    let _broker = mosquitto(port, dir.path());
    wait_lines(
        &out,
        "the broker-back notice",
        Duration::from_secs(40),
        |l| has(l, "broker_lost", "resolved") == 1,
    )
    .await;
    let all = lines(&out);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["id"], lost["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_goes_silent_raises_its_silent_alarm_and_resolves_it_when_back() {
    let dir = scratch("bridge-silent");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = config(dir.path(), port, "");
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;

    // The agent's stats say they come every second: silent after 3 s.
    let stats = r#"{"ts": 1, "host": "quiet-1", "stats_interval_s": 1}"#;
    publish(
        port,
        vec![("lookout/quiet-1/agent/stats".into(), stats.into(), true)],
    )
    .await;
    wait_lines(&out, "the silent alarm", Duration::from_secs(15), |l| {
        has(l, "silent", "firing") == 1
    })
    .await;
    publish(
        port,
        vec![("lookout/quiet-1/agent/stats".into(), stats.into(), true)],
    )
    .await;
    wait_lines(&out, "its resolve", Duration::from_secs(15), |l| {
        has(l, "silent", "resolved") == 1
    })
    .await;
    let all = lines(&out);
    assert_eq!(all[0]["host"], "quiet-1");
    assert_eq!(all[0]["id"], all[1]["id"]);
}
