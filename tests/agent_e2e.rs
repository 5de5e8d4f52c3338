//! End-to-end: the real `lookout-agent` binary against real brokers (the embedded rumqttd
//! and mosquitto), observed by an ordinary MQTT client, as a user would.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SIM_MODELS: [&str; 5] = [
    "cpu_util",
    "mem_util",
    "disk_util",
    "net_err_util",
    "system_load1",
];

fn is_status(m: &Msg, host: &str, state: &str) -> bool {
    m.topic == format!("lookout/{host}/status") && m.text() == state
}

/// Retained `online` for every simulated host, a score for every model of every host, and
/// a firing alarm that matches an injected anomaly of the published ground truth, then
/// that alarm's resolution.
async fn simulated_story(sub: &mut Subscriber) {
    let wait = Duration::from_secs(30);
    for host in ["sim-1", "sim-2"] {
        sub.wait_for(&format!("{host} online"), wait, |m| {
            is_status(m, host, "online")
        })
        .await;
    }
    // A model still learning says so, with no score.
    let first = format!("lookout/sim-1/scores/{}", SIM_MODELS[0]);
    let m = sub
        .wait_for(&first, Duration::from_secs(60), |m| m.topic == first)
        .await;
    let v = m.json();
    assert!(v["learning"] == true && v["score"].is_null(), "{v}");
    for host in ["sim-1", "sim-2"] {
        for model in SIM_MODELS {
            let topic = format!("lookout/{host}/scores/{model}");
            // While learning, scores are null and marked so; then they are numbers.
            let m = sub
                .wait_for(&topic, Duration::from_secs(60), |m| {
                    m.topic == topic && m.json()["learning"] == false
                })
                .await;
            let v = m.json();
            assert_eq!(v["host"], host);
            assert_eq!(v["model"], model);
            assert!(v["score"].as_f64().is_some_and(f64::is_finite), "{v}");
            assert!(
                v["labels"].is_object(),
                "entity labels travel with scores: {v}"
            );
            assert!(
                v["ts"].as_i64().is_some_and(|t| t > 1_600_000_000_000),
                "ts in Unix ms: {v}"
            );
            assert!(
                v["anomalous"].is_boolean() && v["threshold"].is_number(),
                "{v}"
            );
        }
    }

    // A firing alarm whose host and metric match a truth record and whose start lies in
    // the injected window (with slack for smoothing and the `for` hysteresis).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut checked = BTreeSet::new();
    let (alarm, truth) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = sub
            .wait_for("a firing alarm matching the ground truth", left, |m| {
                m.topic.contains("/alarms/")
                    && !m.payload.is_empty()
                    && m.json()["state"] == "firing"
                    && !checked.contains(&m.json()["id"].to_string())
            })
            .await;
        let alarm = m.json();
        checked.insert(alarm["id"].to_string());
        let truths: Vec<Value> = sub
            .seen
            .iter()
            .filter(|t| t.topic.ends_with("/sim/truth"))
            .map(Msg::json)
            .collect();
        if let Some(t) = truths.into_iter().find(|t| {
            let started = alarm["started_at"].as_i64().unwrap();
            t["host"] == alarm["host"]
                && t["metric"] == alarm["source"]
                && started >= t["start"].as_i64().unwrap() - 10_000
                && started <= t["end"].as_i64().unwrap() + 60_000
        }) {
            break (alarm, t);
        }
    };
    assert!(
        sub.seen.iter().any(|m| m.topic
            == format!(
                "lookout/{}/alarms/{}",
                alarm["host"].as_str().unwrap(),
                alarm["source"].as_str().unwrap()
            )),
        "alarm published on its own topic"
    );
    for key in [
        "id",
        "host",
        "source",
        "state",
        "severity",
        "ts",
        "started_at",
        "score",
        "threshold",
        "summary",
        "labels",
    ] {
        assert!(alarm.get(key).is_some(), "alarm lacks {key}: {alarm}");
    }
    assert!(
        (1..=4).contains(&alarm["severity"].as_u64().unwrap()),
        "{alarm}"
    );
    assert!(
        alarm["labels"]["ip"].is_string(),
        "host labels travel with the alarm: {alarm}"
    );
    // A learned model's firing alarm carries what the model saw, for the bridge's picture.
    let window: lookout_shared::payload::Window =
        serde_json::from_value(alarm["window"].clone()).expect("a window on the firing alarm");
    assert!(window.is_consistent(), "{alarm}");
    assert_eq!(window.ts.last(), alarm["ts"].as_i64().as_ref(), "{alarm}");
    assert!(window.level.last().is_some_and(|&l| l > 0), "{alarm}");
    assert!(
        !window.series.is_empty() && window.series.len() <= 3,
        "{alarm}"
    );
    assert!(
        [
            "spike",
            "level_shift",
            "drop",
            "stuck",
            "climb",
            "oscillation",
            "dropout"
        ]
        .contains(&truth["kind"].as_str().unwrap()),
        "{truth}"
    );

    let id = alarm["id"].clone();
    let resolved = sub
        .wait_for(
            "the matching alarm's resolution",
            Duration::from_secs(60),
            |m| {
                m.topic.contains("/alarms/")
                    && !m.payload.is_empty()
                    && m.json()["id"] == id
                    && m.json()["state"] == "resolved"
            },
        )
        .await
        .json();
    assert!(
        resolved["ts"].as_i64() >= alarm["ts"].as_i64(),
        "{resolved}"
    );
    assert_eq!(resolved["started_at"], alarm["started_at"]);
}

fn sim_args(port: u16, broker_enabled: bool) -> Vec<String> {
    vec![
        "run".into(),
        "--config".into(),
        "configs/agent.toml".into(),
        "--simulate".into(),
        "2".into(),
        "--speed".into(),
        "300".into(),
        "--set".into(),
        format!("broker.enabled={broker_enabled}"),
        "--set".into(),
        format!("broker.listen=127.0.0.1:{port}"),
        "--set".into(),
        format!("mqtt.url=mqtt://127.0.0.1:{port}"),
        "--set".into(),
        "agent.stats_interval=1s".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_hosts_on_mosquitto_alarm_on_injected_anomalies_and_go_offline_when_killed() {
    let dir = scratch("e2e-mosquitto");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let args = sim_args(port, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent(&args, dir.path());

    simulated_story(&mut sub).await;

    // kill -9: no goodbye from the agent, so `offline` must come from its last will.
    agent.kill();
    for host in ["sim-1", "sim-2"] {
        let m = sub
            .wait_for(
                &format!("{host} offline (last will)"),
                Duration::from_secs(20),
                |m| is_status(m, host, "offline"),
            )
            .await;
        assert!(!m.payload.is_empty());
    }
    // And it is retained: a newcomer sees it.
    let mut late = Subscriber::connect(port, &["lookout/+/status"]).await;
    let m = late
        .wait_for("retained offline", Duration::from_secs(10), |m| {
            is_status(m, "sim-1", "offline")
        })
        .await;
    assert!(m.retain, "status is retained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_serves_ordinary_clients_and_says_offline_on_sigterm() {
    let dir = scratch("e2e-embedded");
    let port = free_port();
    let args = sim_args(port, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent(&args, dir.path());
    wait_for_port(port, Duration::from_secs(20));
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;

    simulated_story(&mut sub).await;

    // The agent's own health, per host.
    let m = sub
        .wait_for("agent stats", Duration::from_secs(10), |m| {
            m.topic == "lookout/sim-1/agent/stats"
        })
        .await;
    let v = m.json();
    assert_eq!(v["host"], "sim-1");
    assert!(
        v["uptime_s"].is_u64() && v["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{v}"
    );
    assert!(
        v["ticks"].as_u64().unwrap() > 0 && v["published"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        v["tick_lag_ms"]["p50"].is_number() && v["tick_lag_ms"]["max"].is_number(),
        "{v}"
    );
    assert_eq!(
        v["models"]["learning"].as_u64().unwrap() + v["models"]["ready"].as_u64().unwrap(),
        5,
        "{v}"
    );
    assert!(v["outbox"]["pending"].is_u64(), "{v}");

    // A newcomer sees the retained state of alarms.
    let mut late = Subscriber::connect(port, &["lookout/+/alarms/#"]).await;
    let m = late
        .wait_for("a retained alarm", Duration::from_secs(10), |m| m.retain)
        .await;
    assert!(m.json()["state"].is_string());

    let code = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "SIGTERM exits 0; log:\n{}", agent.log_text());
    for host in ["sim-1", "sim-2"] {
        sub.wait_for(&format!("{host} offline"), Duration::from_secs(5), |m| {
            is_status(m, host, "offline")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_host_publishes_its_metrics_and_scores() {
    let dir = scratch("e2e-host");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let url = format!("mqtt.url=mqtt://127.0.0.1:{port}");
    let _agent = agent(
        &[
            "run",
            "--config",
            "configs/agent.toml",
            "--set",
            "broker.enabled=false",
            "--set",
            &url,
            "--set",
            "agent.host=e2e-box",
            "--set",
            "agent.interval=50ms",
            "--set",
            "detector.train.window=20",
            "--set",
            "detector.train.every=20",
        ],
        dir.path(),
    );
    sub.wait_for("online", Duration::from_secs(20), |m| {
        is_status(m, "e2e-box", "online")
    })
    .await;
    let m = sub
        .wait_for("metrics with cpu", Duration::from_secs(20), |m| {
            m.topic == "lookout/e2e-box/metrics"
                && m.json()["metrics"]["system.cpu"]["user"].is_number()
        })
        .await
        .json();
    assert_eq!(m["host"], "e2e-box");
    let load = &m["metrics"]["system.load"]["load1"];
    assert!(load.as_f64().is_some_and(|v| v >= 0.0), "{m}");
    let ram = m["metrics"]["system.ram"]["used_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&ram), "{m}");
    let cpu: f64 = m["metrics"]["system.cpu"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_f64)
        .sum();
    assert!(
        (99.0..=101.0).contains(&cpu),
        "cpu modes add up to 100 %: {m}"
    );
    for model in ["cpu", "memory", "load"] {
        let topic = format!("lookout/e2e-box/scores/{model}");
        sub.wait_for(&topic, Duration::from_secs(30), |m| m.topic == topic)
            .await;
    }
}

#[test]
fn check_config_accepts_the_shipped_config_and_rejects_bad_ones_with_exit_2() {
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "configs/agent.toml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
    // The effective config, every table in the current shape.
    for table in [
        "[mqtt]",
        "[detector.train]",
        "[detector.alarm]",
        "[models.cpu.metrics]",
    ] {
        assert!(stdout.contains(table), "{table}: {stdout}");
    }
    // `config check` is the same command.
    let again = std::process::Command::new(agent_bin())
        .args(["config", "check", "--config", "configs/agent.toml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);

    let dir = scratch("bad-config");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\ninterval = \"1s\"\n\n[models.cpu]\nmetrics = { \"system.cpu\" = [\"user\"] }\nthreshold = \"high\"\n").unwrap();
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6: models.cpu.threshold: "), "{err}");

    // A config written before the detector's tables still loads, and says what to rename.
    let old = dir.path().join("old.toml");
    std::fs::write(&old, "[detector]\nthreshold = 2.0\ntrain_data_size = 600\n\n[models.cpu]\nmetrics = { \"system.cpu\" = [\"user\"] }\nkind = \"saturation\"\nlimit = 100.0\n").unwrap();
    let out = std::process::Command::new(agent_bin())
        .args(["config", "check", "--config"])
        .arg(&old)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for (old, new) in [
        ("detector.threshold", "detector.alarm.threshold"),
        ("detector.train_data_size", "detector.train.window"),
        ("models.cpu.kind", "models.cpu.alarm.kind"),
        ("models.cpu.limit", "models.cpu.saturation.limit"),
    ] {
        assert!(
            err.contains(&format!("config key {old} is deprecated: use {new}")),
            "{old}: {err}"
        );
    }
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("[detector.alarm]\nthreshold = 2.0"),
        "{shown}"
    );

    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_restarts_and_restores_retained_state() {
    let dir = scratch("e2e-restart");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let args = sim_args(port, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    let alarm = sub
        .wait_for("any alarm", Duration::from_secs(90), |m| {
            m.topic.contains("/alarms/") && !m.payload.is_empty()
        })
        .await;

    // The broker goes away and comes back empty (no persistence): the agent keeps
    // scoring, reconnects, says `online` again and re-publishes its alarm states.
    broker.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _broker = mosquitto(port, dir.path());
    let mut fresh = Subscriber::connect(port, &["lookout/#"]).await;
    fresh
        .wait_for("online after the restart", Duration::from_secs(45), |m| {
            is_status(m, "sim-1", "online")
        })
        .await;
    // Re-published (live, or retained if it came before we subscribed)...
    fresh
        .wait_for("the alarm's state again", Duration::from_secs(20), |m| {
            m.topic == alarm.topic
        })
        .await;
    // ...and retained: a newcomer gets it from the broker.
    let mut late = Subscriber::connect(port, &[alarm.topic.as_str()]).await;
    let restored = late
        .wait_for(
            "the alarm's state, retained",
            Duration::from_secs(10),
            |m| m.topic == alarm.topic && m.retain,
        )
        .await;
    assert!(restored.json()["id"].is_string());
    fresh
        .wait_for("scores after the restart", Duration::from_secs(20), |m| {
            m.topic.contains("/scores/")
        })
        .await;
    assert!(
        agent.log_text().contains("MQTT connection restored"),
        "the reconnect is logged:\n{}",
        agent.log_text()
    );
}

/// `mosquitto_sub` once against `port`, with or without credentials: (exit code, output).
fn sub_once(port: u16, creds: Option<(&str, &str)>) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "lookout/+/status", "-C", "1", "-W", "10", "-v"]);
    if let Some((u, p)) = creds {
        cmd.args(["-u", u, "-P", p]);
    }
    let out = cmd
        .output()
        .expect("mosquitto_sub (apt-get install -y mosquitto-clients)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_with_credentials_refuses_strangers_and_serves_the_agent() {
    let dir = scratch("e2e-broker-auth");
    let port = free_port();
    let mut args = sim_args(port, true);
    args.extend(
        [
            "--set",
            "broker.username=edge",
            "--set",
            "broker.password=env:LOOKOUT_TEST_BROKER_PASSWORD",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent_with_env(
        &args,
        dir.path(),
        &[("LOOKOUT_TEST_BROKER_PASSWORD", "s3cret")],
    );
    wait_for_port(port, Duration::from_secs(20));
    // The agent itself logged in with the broker's credentials: its status is there.
    let (code, out) = sub_once(port, Some(("edge", "s3cret")));
    assert_eq!(code, Some(0), "{out}\n{}", agent.log_text());
    assert!(out.contains("online"), "{out}");
    let (code, out) = sub_once(port, None);
    assert_ne!(code, Some(0), "an anonymous client must be refused: {out}");
    let (code, out) = sub_once(port, Some(("edge", "wrong")));
    assert_ne!(code, Some(0), "a wrong password must be refused: {out}");
    assert!(
        !agent.log_text().contains("s3cret"),
        "the password never reaches the log"
    );
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn an_open_embedded_broker_on_a_public_address_is_refused_with_exit_2() {
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "configs/agent.toml"])
        .args(["--set", "broker.listen=0.0.0.0:18830"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broker.listen") && err.contains("without authentication"),
        "{err}"
    );
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "configs/agent.toml"])
        .args(["--set", "broker.listen=0.0.0.0:18830"])
        .args([
            "--set",
            "broker.username=edge",
            "--set",
            "broker.password=x",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("password=x"),
        "check-config redacts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_connects_over_tls_and_mutual_tls_and_refuses_a_wrong_ca() {
    let dir = scratch("e2e-tls");
    let d = dir.path();
    make_test_pki(d);
    let (plain, tls, mtls) = (free_port(), free_port(), free_port());
    let p = |name: &str| d.join(name).display().to_string();
    let _broker = mosquitto_with(
        plain,
        d,
        &format!(
            "listener {tls} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
             listener {mtls} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\ncafile {ca}\n\
             require_certificate true\n",
            cert = p("server.pem"),
            key = p("server.key"),
            ca = p("ca.pem"),
        ),
    );
    wait_for_port(tls, Duration::from_secs(10));
    wait_for_port(mtls, Duration::from_secs(10));
    let mut sub = Subscriber::connect(plain, &["lookout/+/status"]).await;
    let run = |host: &str, port: u16, extra: &[String]| {
        let mut args: Vec<String> = [
            "run",
            "--config",
            "configs/agent.toml",
            "--set",
            "broker.enabled=false",
            "--set",
            &format!("agent.host={host}"),
            "--set",
            &format!("mqtt.url=mqtts://localhost:{port}"),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agent(&args, &d.join(host))
    };
    for h in ["tls-box", "mtls-box", "wrong-ca-box"] {
        std::fs::create_dir_all(d.join(h)).unwrap();
    }
    let set = |k: &str, v: String| ["--set".to_string(), format!("{k}={v}")];
    let ca = set("mqtt.ca_file", p("ca.pem"));
    let _tls = run("tls-box", tls, &ca);
    let mut client = ca.to_vec();
    client.extend(set("mqtt.cert_file", p("client.pem")));
    client.extend(set("mqtt.key_file", p("client.key")));
    let _mtls = run("mtls-box", mtls, &client);
    let wrong = run("wrong-ca-box", tls, &set("mqtt.ca_file", p("other-ca.pem")));
    for host in ["tls-box", "mtls-box"] {
        sub.wait_for(
            &format!("{host} online over TLS"),
            Duration::from_secs(30),
            |m| is_status(m, host, "online"),
        )
        .await;
    }
    wrong
        .wait_log("MQTT connection failed", Duration::from_secs(20))
        .await;
    let log = wrong.log_text();
    assert!(log.contains("hint"), "the failure explains itself: {log}");
    assert!(
        !sub.seen
            .iter()
            .any(|m| is_status(m, "wrong-ca-box", "online")),
        "a broker the CA did not sign must not be trusted"
    );

    // A CA file that does not exist stops the agent at start, naming the key.
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "configs/agent.toml"])
        .args(["--set", "mqtt.url=mqtts://localhost:8883"])
        .args(["--set", "mqtt.ca_file=/nonexistent/ca.pem"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mqtt.ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}
