//! End-to-end: simulated hosts in the real agent → mosquitto → the real bridge → a file
//! target, checked against the simulator's ground truth.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn bridge_config(dir: &std::path::Path, port: u16, out: &std::path::Path) -> std::path::PathBuf {
    let stem = out.file_stem().unwrap().to_string_lossy();
    let cfg = dir.join(format!("bridge-{stem}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "e2e"
stats_interval = "1s"
state_dir = "{state}"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topics = ["lookout/+/alarms/#"]

[delivery]
dead_letter = "{dead}"

[targets.alarms_file]
type = "file"
path = "{out}"

[targets.console]
type = "log"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["alarms_file", "console"]
"#,
            dead = dir.join("dead.jsonl").display(),
            out = out.display(),
            state = dir.join(format!("state-{stem}")).display()
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_anomaly_reaches_the_file_target_firing_then_resolved_once_each() {
    let dir = scratch("bridge-e2e");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let mut bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    let mut sub = Subscriber::connect(port, &["lookout/+/sim/truth", "lookout/bridge/#"]).await;
    sub.wait_for("bridge stats", Duration::from_secs(20), |m| {
        m.topic == "lookout/bridge/e2e/stats"
    })
    .await;
    let args = sim_run_args(port, 2, 300, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = agent(&args, dir.path());

    // Wait for a firing line that matches a truth record, and then its resolved line.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (id, truth) = loop {
        assert!(
            Instant::now() < deadline,
            "no matching alarm in the file; bridge log:\n{}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        sub.drain();
        let truths: Vec<Value> = sub
            .seen
            .iter()
            .filter(|m| m.topic.ends_with("/sim/truth"))
            .map(Msg::json)
            .collect();
        let hit = lines(&out).into_iter().find_map(|a| {
            let t = truths.iter().find(|t| {
                let s = a["started_at"].as_i64().unwrap_or(0);
                a["state"] == "firing"
                    && t["host"] == a["host"]
                    && t["metric"] == a["source"]
                    && s >= t["start"].as_i64().unwrap() - 10_000
                    && s <= t["end"].as_i64().unwrap() + 60_000
            })?;
            Some((a["id"].clone(), t.clone()))
        });
        if let Some(h) = hit {
            break h;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines(&out)
        .iter()
        .any(|a| a["id"] == id && a["state"] == "resolved")
    {
        assert!(
            Instant::now() < deadline,
            "alarm {id} never resolved in the file (truth {truth})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each (id, state, severity) exactly once, for every alarm in the file: a firing alarm
    // whose level changed is notified again, on purpose.
    let mut count: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for a in lines(&out) {
        *count
            .entry((
                a["id"].to_string(),
                a["state"].to_string(),
                a["severity"].to_string(),
            ))
            .or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates in the file: {dups:?}");

    // The bridge's stats count what it did.
    let stats = sub
        .wait_for("stats with deliveries", Duration::from_secs(10), |m| {
            m.topic == "lookout/bridge/e2e/stats"
                && m.json()["targets"][0]["delivered"].as_u64() > Some(0)
        })
        .await
        .json();
    assert!(
        stats["received"].as_u64() >= stats["routed"].as_u64(),
        "{stats}"
    );

    assert_eq!(
        bridge.terminate(Duration::from_secs(15)),
        Some(0),
        "SIGTERM exits 0:\n{}",
        bridge.log_text()
    );
}

#[test]
fn check_config_accepts_the_shipped_config_and_rejects_bad_ones_with_exit_2() {
    let out = std::process::Command::new(bridge_bin())
        .args(["check-config", "--config", "configs/bridge.toml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = scratch("bridge-bad");
    for (text, must_say) in [
        (
            "[targets.f]\ntype = \"file\"\npath = \"x.log\"\n[[routes]]\ntopic = \"#\"\ntargets = [\"nope\"]\n",
            "nope",
        ),
        ("[targets.f]\ntype = \"carrier-pigeon\"\n", "carrier-pigeon"),
        (
            "[targets.f]\ntype = \"file\"\npath = \"x.log\"\n[[routes]]\ntopic = \"#\"\nwhen = \"severity >=\"\ntargets = [\"f\"]\n",
            "when",
        ),
        ("[mqtt]\nbogus = 1\n", "bogus"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = std::process::Command::new(bridge_bin())
            .args(["check-config", "--config"])
            .arg(&bad)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml") || err.contains("targets."),
            "{err}"
        );
        assert!(err.contains(must_say), "{must_say} not in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_in_a_share_group_deliver_ten_thousand_alarms_exactly_once_between_them() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let dir = scratch("bridge-share");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let outs: Vec<std::path::PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("out-{i}.log")))
        .collect();
    let mut bridges = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let cfg = bridge_config(dir.path(), port, out);
        let set_id = format!("bridge.id=b{i}");
        bridges.push(bridge(
            &[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--set",
                "mqtt.share_group=g",
                "--set",
                &set_id,
                "--set",
                "targets.console.level=warn",
            ],
            dir.path(),
        ));
    }
    let mut sub = Subscriber::connect(port, &["lookout/bridge/#"]).await;
    for i in 0..2 {
        let topic = format!("lookout/bridge/b{i}/stats");
        sub.wait_for(&topic, Duration::from_secs(20), |m| m.topic == topic)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    const N: usize = 10_000;
    let mut opts = MqttOptions::new("e2e-pub", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    for i in 0..N {
        let alarm = serde_json::json!({
            "id": format!("h{}:cpu:{i}", i % 50), "host": format!("h{}", i % 50), "source": "cpu",
            "state": "firing", "severity": 2, "ts": i, "started_at": i, "score": 3.0, "threshold": 2.0,
            "summary": "test", "labels": {}
        });
        client
            .publish(
                format!("lookout/h{}/alarms/cpu", i % 50),
                QoS::AtLeastOnce,
                false,
                alarm.to_string(),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let total = || outs.iter().map(|o| lines(o).len()).sum::<usize>();
    while total() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} delivered",
            total()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = std::collections::BTreeSet::new();
    let per: Vec<usize> = outs.iter().map(|o| lines(o).len()).collect();
    for o in &outs {
        for a in lines(o) {
            assert!(
                ids.insert(a["id"].to_string()),
                "delivered twice: {}",
                a["id"]
            );
        }
    }
    assert_eq!(ids.len(), N, "per bridge: {per:?}");
    assert!(
        per.iter().all(|&n| n > 0),
        "both bridges took a share: {per:?}"
    );
    poller.abort();
}

/// mosquitto replays retained messages to shared subscriptions too: a bridge that joins
/// (or rejoins, after a crash) its share group is handed every retained firing state its
/// partner already notified. Found by bench/fleet-load (293 duplicates when one of two
/// bridges was restarted in a 1,000-host burst). The joining bridge counts them and
/// notifies nothing; alarms published after it joined (retained, as agents publish them)
/// are still split between the two and each delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_joining_its_share_group_does_not_notify_again_what_its_partner_did() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let dir = scratch("bridge-share-join");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let outs: Vec<std::path::PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("out-{i}.log")))
        .collect();
    let start = |i: usize| {
        let cfg = bridge_config(dir.path(), port, &outs[i]);
        let set_id = format!("bridge.id=b{i}");
        let state = format!(
            "bridge.state_dir={}",
            dir.path().join(format!("state-{i}")).display()
        );
        bridge(
            &[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--set",
                "mqtt.share_group=g",
                "--set",
                &set_id,
                "--set",
                &state,
                "--set",
                "targets.console.level=warn",
            ],
            dir.path(),
        )
    };
    let mut sub = Subscriber::connect(port, &["lookout/bridge/#"]).await;
    let _b0 = start(0);
    sub.wait_for("b0 stats", Duration::from_secs(20), |m| {
        m.topic == "lookout/bridge/b0/stats"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut opts = MqttOptions::new("e2e-pub-join", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let publish = |i: usize| {
        let alarm = serde_json::json!({
            "id": format!("h{i}:cpu:{i}"), "host": format!("h{i}"), "source": "cpu",
            "state": "firing", "severity": 2, "ts": i, "started_at": i, "score": 3.0,
            "threshold": 2.0, "summary": "test", "labels": {}
        });
        let client = client.clone();
        async move {
            let topic = format!("lookout/h{i}/alarms/cpu");
            client
                .publish(topic, QoS::AtLeastOnce, true, alarm.to_string())
                .await
                .unwrap();
        }
    };
    for i in 0..20 {
        publish(i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&outs[0]).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "b0 delivered {}",
            lines(&outs[0]).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // b1 joins: the broker replays the 20 retained firing states to it.
    let _b1 = start(1);
    let stats = sub
        .wait_for("b1 counted the replays", Duration::from_secs(30), |m| {
            m.topic == "lookout/bridge/b1/stats" && m.json()["replayed_skipped"] == 20
        })
        .await
        .json();
    assert_eq!(stats["routed"], 0, "{stats}");
    for i in 20..60 {
        publish(i).await;
    }
    let total = || outs.iter().map(|o| lines(o).len()).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while total() < 60 {
        assert!(
            Instant::now() < deadline,
            "only {} of 60 delivered",
            total()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = std::collections::BTreeSet::new();
    for o in &outs {
        for a in lines(o) {
            assert!(
                ids.insert(a["id"].to_string()),
                "delivered twice: {}",
                a["id"]
            );
        }
    }
    assert_eq!(ids.len(), 60);
    let b1: Vec<_> = lines(&outs[1]);
    assert!(!b1.is_empty(), "b1 took a share of the live alarms");
    assert!(
        b1.iter().all(|a| a["ts"].as_u64().unwrap() >= 20),
        "b1 notified none of what b0 had: {b1:?}"
    );
    poller.abort();
}

#[test]
fn every_example_notifier_config_passes_check_config() {
    let dir = repo_root().join("configs/notifiers");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let scratch = scratch("bridge-examples");
        let out = std::process::Command::new(bridge_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .current_dir(scratch.path())
            .env("LOOKOUT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
            .env("LOOKOUT_WEBHOOK_KEY", "k")
            .env(
                "LOOKOUT_SLACK_WEBHOOK",
                "https://hooks.slack.com/services/T0/B0/XXXX",
            )
            .env(
                "LOOKOUT_TELEGRAM_TOKEN",
                "123456789:AAexampleexampleexample",
            )
            .env("LOOKOUT_SMTP_PASSWORD", "secret")
            .env("LOOKOUT_NTFY_TOKEN", "tk_XXXX")
            .env("LOOKOUT_GOTIFY_TOKEN", "AppXXXX")
            .env(
                "LOOKOUT_ALERTMANAGER_WEBHOOK_URL",
                "http://127.0.0.1:9/webhook",
            )
            .env("LOOKOUT_PUSHOVER_TOKEN", "PoAppXXXX")
            .env("LOOKOUT_PUSHOVER_USER", "PoUserXXXX")
            .env(
                "LOOKOUT_TEAMS_WEBHOOK",
                "https://prod-00.westeurope.logic.azure.com/workflows/0/triggers/manual/paths/invoke?sig=XXXX",
            )
            .env("LOOKOUT_PAGERDUTY_ROUTING_KEY", "R0utingXXXX")
            .env("LOOKOUT_OPSGENIE_API_KEY", "GenieXXXX")
            .env(
                "LOOKOUT_DISCORD_WEBHOOK",
                "https://discord.com/api/webhooks/1/XXXX",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in ["AAexampleexampleexample", "XXXX"] {
            assert!(!all.contains(secret), "{} printed a secret", path.display());
        }
        checked += 1;
    }
    assert_eq!(
        checked, 14,
        "one example per notifier plugin but log/file (in configs/bridge.toml), and http's \
         alertmanager format"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_gets_every_alarm_after_retries_without_delaying_the_file() {
    let dir = scratch("bridge-retry");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    // The webhook fails its first 8 requests with 500, then accepts.
    let mut script = vec![http::Reply::text(500, "failing"); 8];
    script.push(http::Reply::text(200, "ok"));
    let hook = http::TestServer::start(script).await;
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[targets.hook]\ntype = \"http\"\nurl = \"{}\"\n\n[[routes]]\ntopic = \"lookout/+/alarms/#\"\ntargets = [\"hook\"]\n",
        hook.url("/hook")
    ));
    std::fs::write(&cfg, text).unwrap();
    let mut bridge = bridge(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "delivery.backoff_min=20ms",
            "--set",
            "delivery.backoff_max=200ms",
            "--set",
            "delivery.retries=10",
        ],
        dir.path(),
    );
    let mut sub = Subscriber::connect(port, &["lookout/bridge/#"]).await;
    sub.wait_for("bridge up", Duration::from_secs(20), |m| {
        m.topic == "lookout/bridge/e2e/stats"
    })
    .await;
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    publish_alarms(port, 5).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&out).len() < 5 || hook.accepted().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "file {} / hook {}; log:\n{}",
            lines(&out).len(),
            hook.accepted().len(),
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = hook
        .accepted()
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        (0..5).map(|i| format!("h:cpu:{i}")).collect::<Vec<_>>(),
        "each alarm accepted exactly once"
    );
    assert!(
        !dir.path().join("dead.jsonl").exists(),
        "nothing dead-lettered"
    );
    let stats = sub
        .wait_for("stats with retries", Duration::from_secs(5), |m| {
            m.topic == "lookout/bridge/e2e/stats"
                && m.json()["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["name"] == "hook" && t["delivered"] == 5))
        })
        .await
        .json();
    let hook_stats = stats["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hook")
        .unwrap()
        .clone();
    assert_eq!(hook_stats["retried"], 8, "{stats}");
    assert_eq!(bridge.terminate(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_for_good_ends_in_the_dead_letter_file() {
    let dir = scratch("bridge-dead");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // Nothing listens on this port: connection refused on every attempt.
    text.push_str(&format!(
        "\n[targets.hook]\ntype = \"http\"\nurl = \"http://127.0.0.1:{}/hook\"\n\n[[routes]]\ntopic = \"lookout/+/alarms/#\"\ntargets = [\"hook\"]\n",
        free_port()
    ));
    std::fs::write(&cfg, text).unwrap();
    let bridge = bridge(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "delivery.backoff_min=10ms",
            "--set",
            "delivery.retries=2",
        ],
        dir.path(),
    );
    let mut sub = Subscriber::connect(port, &["lookout/bridge/#"]).await;
    sub.wait_for("bridge up", Duration::from_secs(20), |m| {
        m.topic == "lookout/bridge/e2e/stats"
    })
    .await;
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    publish_alarms(port, 3).await;
    let dead = dir.path().join("dead.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&dead).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "dead letters: {}; log:\n{}",
            lines(&dead).len(),
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for d in lines(&dead) {
        assert_eq!(d["target"], "hook");
        assert_eq!(d["attempts"], 3, "first attempt + 2 retries: {d}");
        assert!(d["error"].as_str().unwrap().contains("connect"), "{d}");
        assert!(d["fields"]["id"].is_string());
    }
    assert_eq!(lines(&out).len(), 3, "the file target was unaffected");
}

fn alarm(host: &str, id: &str, state: &str) -> (String, String, bool) {
    let a = serde_json::json!({
        "id": id, "host": host, "source": "cpu", "state": state, "severity": 2,
        "ts": 1, "started_at": 1, "score": 3.0, "threshold": 2.0, "summary": "test", "labels": {"site": "plant-3"}
    });
    (format!("lookout/{host}/alarms/cpu"), a.to_string(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_from_mqtt_hold_matching_alarms_and_repeats_continue_until_resolved() {
    let dir = scratch("bridge-silence");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "targets = [\"alarms_file\", \"console\"]",
        "targets = [\"alarms_file\", \"console\"]\nrepeat_interval = \"1s\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;

    // A fleet-wide silence for one host, as a retained message.
    let silence = r#"[{"matchers": {"host": "quiet-*", "labels.site": "plant-3"}, "comment": "maintenance"}]"#;
    publish(
        port,
        vec![("lookout/bridge/silences".into(), silence.into(), true)],
    )
    .await;
    bridge
        .wait_log("silences replaced", Duration::from_secs(10))
        .await;
    publish(
        port,
        vec![
            alarm("quiet-1", "quiet-1:cpu:1", "firing"),
            alarm("loud-1", "loud-1:cpu:1", "firing"),
        ],
    )
    .await;

    // The loud alarm repeats every second; the silenced one never arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&out)
        .iter()
        .filter(|a| a["id"] == "loud-1:cpu:1")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "no repeats; file: {:?}",
            lines(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lines(&out).iter().all(|a| a["host"] != "quiet-1"),
        "silenced: {:?}",
        lines(&out)
    );

    // Once resolved, it stops repeating.
    publish(port, vec![alarm("loud-1", "loud-1:cpu:1", "resolved")]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines(&out).iter().any(|a| a["state"] == "resolved") {
        assert!(Instant::now() < deadline, "resolved never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let firing = lines(&out)
        .iter()
        .filter(|a| a["state"] == "firing")
        .count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        lines(&out)
            .iter()
            .filter(|a| a["state"] == "firing")
            .count(),
        firing,
        "no repeat after resolving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_going_offline_gives_one_offline_alarm_and_holds_its_other_alarms_back() {
    let dir = scratch("bridge-inhibit");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let bridge = bridge(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "bridge.offline_grace=1s",
        ],
        dir.path(),
    );
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;

    publish(
        port,
        vec![("lookout/edge-1/status".into(), "online".into(), true)],
    )
    .await;
    publish(
        port,
        vec![("lookout/edge-1/status".into(), "offline".into(), true)],
    )
    .await;
    publish(
        port,
        vec![
            alarm("edge-1", "edge-1:cpu:7", "firing"),
            alarm("edge-2", "edge-2:cpu:7", "firing"),
        ],
    )
    .await;
    publish(
        port,
        vec![("lookout/edge-1/status".into(), "offline".into(), true)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while lines(&out).len() < 2 {
        assert!(Instant::now() < deadline, "file: {:?}", lines(&out));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(
        port,
        vec![("lookout/edge-1/status".into(), "online".into(), true)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lines(&out)
        .iter()
        .any(|a| a["source"] == "offline" && a["state"] == "resolved")
    {
        assert!(Instant::now() < deadline, "file: {:?}", lines(&out));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = lines(&out);
    let offline: Vec<_> = all.iter().filter(|a| a["source"] == "offline").collect();
    assert_eq!(
        offline.len(),
        2,
        "one firing and one resolved offline alarm: {all:?}"
    );
    assert_eq!(offline[0]["host"], "edge-1");
    assert!(
        all.iter().any(|a| a["id"] == "edge-2:cpu:7"),
        "other hosts unaffected"
    );
    assert!(
        all.iter().all(|a| a["id"] != "edge-1:cpu:7"),
        "held back while offline: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_alarms_from_one_site_becomes_one_grouped_notification() {
    let dir = scratch("bridge-group");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "targets = [\"alarms_file\", \"console\"]",
        "targets = [\"alarms_file\"]\ngroup_by = [\"labels.site\"]\ngroup_wait = \"1s\"\ngroup_interval = \"1h\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    let burst: Vec<_> = (0..5)
        .map(|i| alarm(&format!("edge-{i}"), &format!("edge-{i}:cpu:1"), "firing"))
        .collect();
    publish(port, burst).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    while read().lines().count() < 1 {
        assert!(Instant::now() < deadline, "no grouped notification");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = read();
    assert_eq!(
        text.lines().count(),
        1,
        "one notification for the burst: {text}"
    );
    for i in 0..5 {
        assert!(
            text.contains(&format!("edge-{i}:cpu:1")),
            "member {i} missing: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_restarted_mid_stream_loses_nothing_and_repeats_nothing() {
    let dir = scratch("bridge-restart");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "targets.console.level=warn",
    ];
    let mut first = bridge(&args, dir.path());
    first.wait_log("subscribed", Duration::from_secs(20)).await;

    // 3,000 alarms in batches; the bridge is stopped after the first third and a new
    // one starts while the rest is being published: the broker keeps the messages of the
    // persistent session meanwhile.
    const N: usize = 3000;
    let all: Vec<_> = (0..N)
        .map(|i| alarm(&format!("h{}", i % 40), &format!("a:{i}"), "firing"))
        .collect();
    let mut chunks = all.chunks(N / 3);
    publish(port, chunks.next().unwrap().to_vec()).await;
    assert_eq!(
        first.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        first.log_text()
    );
    publish(port, chunks.next().unwrap().to_vec()).await;
    let second = bridge(&args, dir.path());
    second.wait_log("subscribed", Duration::from_secs(20)).await;
    publish(port, chunks.next().unwrap().to_vec()).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&out).len() < N {
        assert!(
            Instant::now() < deadline,
            "{} of {N} delivered; log:\n{}",
            lines(&out).len(),
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = std::collections::BTreeSet::new();
    for a in lines(&out) {
        assert!(
            seen.insert(a["id"].to_string()),
            "delivered twice: {}",
            a["id"]
        );
    }
    assert_eq!(seen.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_skipped_and_the_bridge_keeps_delivering() {
    let dir = scratch("bridge-bad-input");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let bridge = bridge(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "bridge.max_payload=4096",
        ],
        dir.path(),
    );
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    let mut sub = Subscriber::connect(port, &["lookout/bridge/#"]).await;
    let topic = "lookout/h/alarms/cpu".to_string();
    publish(
        port,
        vec![
            (topic.clone(), "{\"id\": broken".into(), false),
            (topic.clone(), "x".repeat(10_000), false),
            alarm("h", "h:cpu:ok", "firing"),
        ],
    )
    .await;
    // Not UTF-8: rumqttc's publish takes bytes, so use a raw client.
    {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let (c, mut el) = AsyncClient::new(MqttOptions::new("e2e-raw", "127.0.0.1", port), 10);
        c.publish(
            topic.clone(),
            QoS::AtLeastOnce,
            false,
            vec![0xff, 0xfe, 0x00],
        )
        .await
        .unwrap();
        for _ in 0..6 {
            let _ = tokio::time::timeout(Duration::from_millis(300), el.poll()).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while lines(&out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the valid alarm never arrived; log:\n{}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines(&out)[0]["id"], "h:cpu:ok");
    let stats = sub
        .wait_for("stats counting 3 invalid", Duration::from_secs(15), |m| {
            m.topic == "lookout/bridge/e2e/stats" && m.json()["invalid"] == 3
        })
        .await
        .json();
    assert_eq!(stats["targets"][0]["delivered"], 1, "{stats}");
    let log = bridge.log_text();
    assert!(log.contains("invalid message skipped"), "{log}");
    assert!(
        log.matches("invalid message skipped").count() <= 2,
        "rate-limited: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alarm_whose_level_changes_is_notified_again_and_a_repeat_is_not() {
    let dir = scratch("bridge-levels");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = bridge_config(dir.path(), port, &out);
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    let at = |severity: u64, state: &str| {
        let (topic, payload, retain) = alarm("lvl-1", "lvl-1:cpu:1", state);
        let mut v: Value = serde_json::from_str(&payload).unwrap();
        v["severity"] = severity.into();
        (topic, v.to_string(), retain)
    };
    // Level 2, the same again (an agent re-sending after a reconnect), level 4, resolved.
    publish(
        port,
        vec![
            at(2, "firing"),
            at(2, "firing"),
            at(4, "firing"),
            at(4, "resolved"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&out).len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", lines(&out));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<(String, u64)> = lines(&out)
        .iter()
        .map(|a| {
            (
                a["state"].as_str().unwrap().to_owned(),
                a["severity"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("firing".into(), 2),
            ("firing".into(), 4),
            ("resolved".into(), 4)
        ]
    );
}
