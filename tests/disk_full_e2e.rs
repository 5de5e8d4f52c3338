//! Disk full end to end (issue 19, item 3): the agent's outbox and model snapshots and the
//! bridge's `state_dir` on a 2 MiB tmpfs, filled to the last byte while simulated hosts
//! keep alarming. Real processes: the agent, mosquitto, the bridge with a file target on
//! another filesystem (the test's scratch directory).
//!
//! Mounting needs root (CI runs as root); where the mount fails the test says why and
//! returns, as the only skip, because a test that cannot fill a disk proves nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Appends to `path` until the filesystem refuses (ENOSPC); returns the bytes added.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0x5a; 4096];
    let mut added = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => return added,
            Ok(n) => added += n as u64,
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => return added,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

fn bridge_config(dir: &Path, port: u16, state: &Path, out: &Path) -> PathBuf {
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "diskfull"
state_dir = "{state}"
stats_interval = "1s"

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
            state = state.display()
        ),
    )
    .unwrap();
    cfg
}

/// (host:alarm:started_at, state) of every alarm state the agent logged, in log order.
fn raised(log: &str) -> Vec<(String, String)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        let v = line[at..].split_whitespace().next()?;
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

fn arrived_states(path: &Path) -> BTreeSet<(String, String)> {
    arrived(path)
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_owned(),
                a["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until every state in `want` is in the file target.
async fn all_arrive(want: &[(String, String)], out: &Path, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = arrived_states(out);
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} alarm states never arrived: {missing:?}",
            missing.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The latest `agent/stats` of every host, and the bridge's latest stats.
fn latest_stats(sub: &mut Subscriber) -> (BTreeMap<String, Value>, Option<Value>) {
    sub.drain();
    let mut agents = BTreeMap::new();
    let mut bridge = None;
    for m in &sub.seen {
        if m.payload.is_empty() {
            continue;
        }
        if m.topic.ends_with("/agent/stats") {
            let s = m.json();
            agents.insert(s["host"].as_str().unwrap_or_default().to_owned(), s);
        } else if m.topic.ends_with("/stats") && m.topic.contains("/bridge/") {
            bridge = Some(m.json());
        }
    }
    (agents, bridge)
}

fn outbox_write_errors(agents: &BTreeMap<String, Value>) -> u64 {
    agents
        .values()
        .map(|s| s["outbox"]["write_errors"].as_u64().unwrap_or(0))
        .sum()
}

/// Fills the state filesystem while alarms flow, then frees it: nothing crashes, alarms
/// keep arriving live, the loss is counted (`outbox.write_errors`, `state_errors`) and
/// logged at most once a minute, writes resume when space returns (the agent is stopped
/// with the broker away, so what it raised since is on disk only, and a new agent sends
/// it), and restarts on the same directories find no torn or corrupt record and lose
/// nothing written before the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_costs_a_counted_loss_and_no_crash_no_corruption_and_no_alarm() {
    let dir = scratch("disk-full");
    let state = dir.path().join("state");
    let _mount = match Mount::tmpfs(&state, "2m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why}); this test needs root");
            return;
        }
    };
    let (outbox, models, bridge_state) = (
        state.join("outbox"),
        state.join("models"),
        state.join("bridge"),
    );
    let out = dir.path().join("alarms.jsonl");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());
    let cfg = bridge_config(dir.path(), port, &bridge_state, &out);
    let bridge_args = ["run", "--config", cfg.to_str().unwrap()];
    let mut bridge = bridge(&bridge_args, dir.path());
    let mut sub =
        Subscriber::connect(port, &["lookout/+/agent/stats", "lookout/bridge/+/stats"]).await;
    let sets = [
        "mqtt.reconnect_max=2s".to_owned(),
        "agent.stats_interval=1s".to_owned(),
        format!("outbox.dir={}", outbox.display()),
        format!("snapshots.dir={}", models.display()),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let args = sim_run_args(port, 2, 300, &sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent(&args, dir.path());

    // Before the fill: some alarms arrive, and the notification log holds their records.
    let deadline = Instant::now() + Duration::from_secs(60);
    while raised(&agent.log_text()).len() < 4 {
        assert!(Instant::now() < deadline, "no alarm:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = raised(&agent.log_text());
    all_arrive(&before, &out, Duration::from_secs(20), "before the fill").await;
    let log_path = bridge_state.join("notifications.v1.log");
    let log_before = std::fs::read(&log_path).unwrap();
    assert!(!log_before.is_empty());

    // Full: topped up every 200 ms, since the agent frees space when it deletes
    // acknowledged segments.
    let filler = state.join("filler");
    let filled = fill(&filler);
    let full_from = raised(&agent.log_text()).len();
    let full_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < full_until {
        fill(&filler);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = raised(&agent.log_text());
    assert!(
        during.len() > full_from,
        "no alarm was raised while the disk was full; nothing tested"
    );
    all_arrive(&during, &out, Duration::from_secs(20), "disk full").await;
    // The stats come every second; give the last ones of the spell time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (agents, bridge_stats) = latest_stats(&mut sub);
    let write_errors = outbox_write_errors(&agents);
    let state_errors = bridge_stats
        .as_ref()
        .and_then(|s| s["state_errors"].as_u64())
        .unwrap_or(0);
    assert!(write_errors > 0, "outbox.write_errors: {agents:?}");
    assert!(state_errors > 0, "bridge state_errors: {bridge_stats:?}");

    // The broker goes away while the disk is still full: what the agent raises now is
    // kept in memory only (and counted). Then space returns, still without a broker: what
    // it raises now is written to its outbox, behind whatever the full disk cut short.
    let log_len_1 = std::fs::metadata(&log_path).unwrap().len();
    assert_eq!(broker.terminate(Duration::from_secs(10)), Some(0));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        fill(&filler);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(&filler).unwrap();
    let freed_at = raised(&agent.log_text()).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while raised(&agent.log_text()).len() < freed_at + 3 {
        assert!(
            Instant::now() < deadline,
            "no alarm after the disk had space again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A resolved state whose firing was raised while the disk was full and the broker
    // away (memory only, lost with the agent) is an orphan to the bridge, which does not
    // notify those (`orphan_resolved`): expect only states the bridge would notify.
    let notified = arrived_states(&out);
    let raised_now = raised(&agent.log_text());
    let written_after: Vec<_> = raised_now[freed_at..]
        .iter()
        .filter(|(id, st)| {
            st == "firing"
                || notified.contains(&(id.clone(), "firing".to_owned()))
                || raised_now[freed_at..].contains(&(id.clone(), "firing".to_owned()))
        })
        .cloned()
        .collect();

    // Reported at most once a minute: the spell lasted under a minute, so one line per
    // outbox (two hosts) and one per bridge file.
    let agent_log = agent.log_text();
    let bridge_log = bridge.log_text();
    let outbox_lines = agent_log.matches("outbox: write failed").count();
    let ack_lines = agent_log.matches("outbox: could not record").count();
    let notif_lines = bridge_log
        .matches("cannot write the notification log")
        .count();
    eprintln!(
        "filled {filled} bytes; alarm states: {} before, {} during the spell (broker up), {} \
         after space returned (broker down); outbox.write_errors {write_errors}, \
         state_errors {state_errors}; log lines: outbox {outbox_lines}+{ack_lines}, \
         notification log {notif_lines}",
        before.len(),
        during.len() - full_from,
        written_after.len()
    );
    // Appends and acknowledgements share one limit per outbox.
    assert!((1..=2).contains(&(outbox_lines + ack_lines)), "{agent_log}");
    assert!(notif_lines <= 1, "{bridge_log}");

    // No crash: the agent stops cleanly with its states on disk; a new one on the same
    // outbox finds nothing torn and sends what was written after space returned.
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0));
    let _broker = mosquitto(port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(40);
    while bridge.log_text().matches("MQTT connected").count() < 2 {
        assert!(Instant::now() < deadline, "the bridge never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agent2 = common::agent(&args, dir.path());
    all_arrive(
        &written_after,
        &out,
        Duration::from_secs(30),
        "written after the fill, sent by the restarted agent",
    )
    .await;
    assert!(
        agent2.log_text().contains("will be sent"),
        "the restarted agent found its outbox:\n{}",
        agent2.log_text()
    );
    // The bridge writes again, without new errors, and kept what it held before the fill.
    let bridge_stats = async |sub: &mut Subscriber| {
        let since = Instant::now();
        sub.wait_for("bridge stats", Duration::from_secs(20), |m| {
            m.topic.starts_with("lookout/bridge/") && m.at >= since
        })
        .await
        .json()
    };
    let b1 = bridge_stats(&mut sub).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b2 = bridge_stats(&mut sub).await;
    let since = Instant::now();
    let a2 = sub
        .wait_for("agent stats", Duration::from_secs(20), |m| {
            m.topic.ends_with("/agent/stats") && m.at >= since
        })
        .await
        .json();
    assert_eq!(a2["outbox"]["write_errors"], 0, "{a2}");
    assert_eq!(
        b1["state_errors"], b2["state_errors"],
        "bridge state errors still growing with space on the disk"
    );
    let log_after = std::fs::read(&log_path).unwrap();
    assert!(
        log_after.len() as u64 > log_len_1,
        "the notification log is written again"
    );
    assert!(
        log_after.starts_with(&log_before),
        "the notification log lost what it held before the fill"
    );
    assert_eq!(bridge.terminate(Duration::from_secs(15)), Some(0));
    let bridge2 = common::bridge(&bridge_args, dir.path());
    bridge2
        .wait_log("notification log loaded", Duration::from_secs(10))
        .await;
    for (name, log) in [("agent", agent2.log_text()), ("bridge", bridge2.log_text())] {
        for damage in [
            "torn or corrupt",
            "damaged",
            "unreadable acked",
            "snapshot not used",
        ] {
            assert!(
                !log.contains(damage),
                "{name} found damage after the disk-full spell ({damage}):\n{log}"
            );
        }
    }
    // Nothing notified before the fill is notified again: its keys survived.
    let mut seen: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for a in arrived(&out) {
        let key = (
            a["id"].as_str().unwrap_or_default().to_owned(),
            a["state"].as_str().unwrap_or_default().to_owned(),
            a["severity"].as_i64().unwrap_or(0),
        );
        *seen.entry(key).or_default() += 1;
    }
    let before: BTreeSet<&(String, String)> = before.iter().collect();
    let twice: Vec<_> = seen
        .iter()
        .filter(|((id, st, _), n)| **n > 1 && before.contains(&(id.clone(), st.clone())))
        .collect();
    assert!(
        twice.is_empty(),
        "notified again after the restart: {twice:?}"
    );
}
