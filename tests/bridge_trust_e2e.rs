//! End-to-end: what an on-call person relies on beyond delivery, against a real mosquitto
//! and the real bridge binary: decommissioning a host, the heartbeat, the broker-lost
//! notice.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

fn config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
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
