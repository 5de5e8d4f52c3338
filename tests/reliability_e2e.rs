//! Reliability end to end: no alarm raised by the agent is lost across a broker outage,
//! nor across a `kill -9` of the agent during the outage. Real processes: the agent with
//! simulated hosts, mosquitto (persistent, like a production broker), and the bridge with
//! a file target as the receiving end, which deduplicates.
//!
//! What counts as "raised" is the agent's own log (one `alarm firing`/`alarm resolved`
//! line per state it published); what counts as "arrived" is the bridge's file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const OUTAGE: Duration = Duration::from_secs(30);

fn bridge_config(dir: &Path, port: u16, out: &Path) -> std::path::PathBuf {
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "reliability"
state_dir = "{state}"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topics = ["lookout/+/alarms/#"]

[targets.file]
type = "file"
path = "{out}"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["file"]
"#,
            out = out.display(),
            state = dir.join("bridge-state").display()
        ),
    )
    .unwrap();
    cfg
}

/// (id, state) of every alarm state the agent logged, in log order.
fn raised(log: &str) -> Vec<(String, String)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        let rest = &line[at..];
        let v = rest.split_whitespace().next()?;
        Some(v.trim_matches('"').to_owned())
    };
    log.lines()
        .filter(|l| l.contains("alarm firing") || l.contains("alarm resolved"))
        .filter_map(|l| {
            let state = if l.contains("alarm firing") {
                "firing"
            } else {
                "resolved"
            };
            Some((
                format!(
                    "{}:{}:{}",
                    field(l, "host")?,
                    field(l, "alarm")?,
                    field(l, "started_at")?
                ),
                state.to_owned(),
            ))
        })
        .collect()
}

fn arrived(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn agent_args(port: u16) -> Vec<String> {
    sim_run_args(port, 2, 300, &["mqtt.reconnect_max=2s"])
}

/// Waits until every (id, state) in `want` is in the bridge's file; then checks that none
/// is there twice and that each alarm's states are in order.
async fn all_arrive(want: &[(String, String)], out: &Path, within: Duration, logs: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got: BTreeSet<(String, String)> = arrived(out)
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap_or_default().to_owned(),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} alarm states never arrived: {missing:?}\n{logs}",
            missing.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lines = arrived(out);
    let mut seen: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &lines {
        let id = a["id"].as_str().unwrap_or_default().to_owned();
        let state = a["state"].as_str().unwrap_or_default().to_owned();
        *seen
            .entry((
                id.clone(),
                state.clone(),
                a["severity"].as_i64().unwrap_or(0),
            ))
            .or_default() += 1;
        order.entry(id).or_default().push(state);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice after dedup: {twice:?}");
    for (id, states) in order {
        let first_resolved = states.iter().position(|s| s == "resolved");
        let last_firing = states.iter().rposition(|s| s == "firing");
        if let (Some(r), Some(f)) = (first_resolved, last_firing) {
            assert!(f < r, "{id}: resolved before firing: {states:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_raised_during_a_broker_outage_arrive_after_it_once_each_in_order() {
    let dir = scratch("rel-outage");
    let port = free_port();
    let mut broker = mosquitto_persistent(port, dir.path());
    let out = dir.path().join("alarms.jsonl");
    let cfg = bridge_config(dir.path(), port, &out);
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    let args = agent_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());

    // Let the models learn and some alarms flow, then take the broker away.
    let deadline = Instant::now() + Duration::from_secs(90);
    while raised(&agent.log_text()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alarm before the outage:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = raised(&agent.log_text()).len();
    assert_eq!(broker.terminate(Duration::from_secs(10)), Some(0));
    tokio::time::sleep(OUTAGE).await;
    let during = raised(&agent.log_text()).len() - before;
    let _broker = mosquitto_persistent(port, dir.path());

    let want = raised(&agent.log_text());
    assert!(
        during > 0,
        "no alarm was raised during the outage; nothing tested"
    );
    all_arrive(
        &want,
        &out,
        Duration::from_secs(60),
        &format!(
            "agent:\n{}\nbridge:\n{}",
            agent.log_text(),
            bridge.log_text()
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_from_before_a_kill_9_during_an_outage_arrive_after_the_restart() {
    let dir = scratch("rel-kill");
    let port = free_port();
    let mut broker = mosquitto_persistent(port, dir.path());
    let out = dir.path().join("alarms.jsonl");
    let cfg = bridge_config(dir.path(), port, &out);
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    let args = agent_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = agent(&args, dir.path());
    let deadline = Instant::now() + Duration::from_secs(90);
    while raised(&first.log_text()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alarm before the outage:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(broker.terminate(Duration::from_secs(10)), Some(0));
    // Alarms pile up in the outbox while the broker is away; then the agent dies hard.
    let before = raised(&first.log_text()).len();
    let deadline = Instant::now() + OUTAGE;
    while raised(&first.log_text()).len() == before {
        assert!(
            Instant::now() < deadline,
            "no alarm during the outage:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill();
    let want = raised(&first.log_text());
    let _broker = mosquitto_persistent(port, dir.path());
    // Same outbox directory (the test's scratch dir), same host names: the new agent
    // finds the old one's unacknowledged states and sends them.
    let second = agent(&args, dir.path());
    all_arrive(
        &want,
        &out,
        Duration::from_secs(60),
        &format!(
            "second agent:\n{}\nbridge:\n{}",
            second.log_text(),
            bridge.log_text()
        ),
    )
    .await;
    assert!(
        second.log_text().contains("will be sent"),
        "the restart reports what it recovered:\n{}",
        second.log_text()
    );
}

/// What systemd's `Type=notify` units (packaging/*.service) rely on: each binary sends
/// `READY=1` to `$NOTIFY_SOCKET` once it runs, without waiting for the broker (here there
/// is none: a device whose broker is down must still start), and `STOPPING=1` on SIGTERM
/// before it exits 0. Without READY=1 systemd would fail the start after 90 s.
#[test]
fn both_binaries_notify_systemd_ready_then_stopping_without_a_broker() {
    use std::os::unix::net::UnixDatagram;

    let dir = scratch("rel-notify");
    let port = free_port(); // nothing listens there
    let out = dir.path().join("alarms.jsonl");
    let cfg = bridge_config(dir.path(), port, &out);
    let agent_args = agent_args(port);
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let bridge_args = ["run", "--config", cfg.to_str().unwrap()];

    for (name, args) in [("agent", &agent_args[..]), ("bridge", &bridge_args[..])] {
        let sock_path = dir.path().join(format!("{name}-notify.sock"));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let env = [("NOTIFY_SOCKET", sock_path.to_str().unwrap())];
        let mut proc = if name == "agent" {
            agent_with_env(args, dir.path(), &env)
        } else {
            bridge_with_env(args, dir.path(), &env)
        };
        let recv = |what: &str, proc: &Proc| -> String {
            let mut buf = [0u8; 512];
            match sock.recv(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) => panic!("{name}: no {what} in 30 s ({e}):\n{}", proc.log_text()),
            }
        };
        let first = recv("READY=1", &proc);
        assert!(
            first.lines().any(|l| l == "READY=1"),
            "{name}: first notification {first:?}, want READY=1"
        );
        let code = proc.terminate(Duration::from_secs(15));
        let last = recv("STOPPING=1", &proc);
        assert!(
            last.lines().any(|l| l == "STOPPING=1"),
            "{name}: notification after SIGTERM {last:?}, want STOPPING=1"
        );
        assert_eq!(
            code,
            Some(0),
            "{name} exit after SIGTERM:\n{}",
            proc.log_text()
        );
    }
}
