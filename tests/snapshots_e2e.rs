//! Models survive restarts (issue 17): the agent saves every model at shutdown, and the
//! next start with the same state directory takes them back, scoring from its first tick
//! without a learning period and without an alarm from the restart itself. A snapshot
//! that cannot be used is set aside with a warning naming its model, which alone learns
//! afresh.

mod common;

use std::time::Duration;

use common::*;

const MODELS: [&str; 5] = [
    "cpu_util",
    "mem_util",
    "disk_util",
    "net_err_util",
    "system_load1",
];

/// One simulated host at 60x, no injected anomaly, a detector small enough to be trained
/// within seconds.
fn args(port: u16, dir: &std::path::Path) -> Vec<String> {
    sim_run_args(
        port,
        1,
        60,
        &[
            "simulate.anomaly_every=0s",
            "detector.train.window=200",
            "detector.train.every=100",
            "detector.train.min_points=150",
            &format!("snapshots.dir={}", dir.join("models").display()),
        ],
    )
}

fn is_score(m: &Msg, model: &str) -> bool {
    m.topic == format!("lookout/sim-1/scores/{model}")
}

/// Waits for one score of each model and returns whether each was still learning.
async fn first_scores(sub: &mut Subscriber) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for model in MODELS {
        let m = sub
            .wait_for(
                &format!("a score of {model}"),
                Duration::from_secs(30),
                |m| is_score(m, model),
            )
            .await;
        out.push((model.to_owned(), m.json()["learning"].as_bool().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_models_and_a_bad_snapshot_relearns_alone() {
    let dir = scratch("snapshots");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let args = args(port, dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // First run: every model trains (150 ticks at 60x: under 3 s), then SIGTERM saves.
    let mut sub = Subscriber::connect(port, &["lookout/sim-1/scores/#"]).await;
    let mut first = agent(&args, dir.path());
    for model in MODELS {
        sub.wait_for(&format!("{model} trained"), Duration::from_secs(60), |m| {
            is_score(m, model) && m.json()["learning"] == false
        })
        .await;
    }
    assert_eq!(first.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        first.log_text().contains("models saved"),
        "{}",
        first.log_text()
    );
    let snaps = dir.path().join("models/sim-1");
    for model in MODELS {
        assert!(snaps.join(format!("{model}.snap")).is_file(), "{model}");
    }

    // Second run: scores from the first tick, no learning, no new alarm.
    let mut sub =
        Subscriber::connect(port, &["lookout/sim-1/scores/#", "lookout/sim-1/alarms/#"]).await;
    let restarted_at = lookout_shared::time::now_ms();
    let mut second = agent(&args, dir.path());
    let firsts = first_scores(&mut sub).await;
    assert!(firsts.iter().all(|(_, learning)| !learning), "{firsts:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    sub.drain();
    let new_alarms: Vec<String> = sub
        .seen
        .iter()
        .filter(|m| m.topic.contains("/alarms/") && !m.payload.is_empty())
        .map(|m| m.json())
        .filter(|a| a["state"] == "firing" && a["started_at"].as_i64().unwrap() >= restarted_at)
        .map(|a| a.to_string())
        .collect();
    assert!(
        new_alarms.is_empty(),
        "alarms from the restart: {new_alarms:?}"
    );
    assert_eq!(second.terminate(Duration::from_secs(10)), Some(0));
    let log = second.log_text();
    // The models and the host-level judgement (its alarm may be firing).
    assert_eq!(
        log.matches("model restored from its snapshot").count(),
        MODELS.len() + 1,
        "{log}"
    );

    // Third run with one snapshot garbled: it is set aside with a warning naming the
    // model, which learns afresh; the others keep theirs.
    std::fs::write(snaps.join("disk_util.snap"), b"not a snapshot").unwrap();
    let mut sub = Subscriber::connect(port, &["lookout/sim-1/scores/#"]).await;
    let mut third = agent(&args, dir.path());
    let firsts = first_scores(&mut sub).await;
    for (model, learning) in &firsts {
        assert_eq!(*learning, model == "disk_util", "{firsts:?}");
    }
    assert_eq!(third.terminate(Duration::from_secs(10)), Some(0));
    let log = third.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("model snapshot not used"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("disk_util") && warning.contains("not a readable snapshot"),
        "{warning}"
    );
    assert!(snaps.join("disk_util.snap.bad").is_file());
    assert!(
        snaps.join("disk_util.snap").is_file(),
        "saved again at shutdown"
    );
}
