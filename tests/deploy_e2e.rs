//! End-to-end: the deployment recipes of docs/deploy.md, run with the files they ship in
//! configs/examples/ (only ports, addresses and paths replaced by the test's):
//! (a) simulated agents publish to a central mosquitto over TLS, and lookout-bridge beside
//! it writes their alarms to a file; (b) agents publish to a site's gateway mosquitto whose
//! bridge forwards everything to the central one over TLS, brings the fleet's rules
//! document down, and queues alarm states while the central broker is away.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The files docs/deploy.md shows, each of which must appear there verbatim.
const EXAMPLES: &[&str] = &[
    "configs/examples/mosquitto-central.conf",
    "configs/examples/agent-central.toml",
    "configs/examples/mosquitto-bridge.conf",
    "configs/examples/agent-gateway.toml",
    "configs/examples/agent-upstream.toml",
];

/// The bridge's `remote_clientid` in configs/examples/mosquitto-bridge.conf.
const GATEWAY_ID: &str = "lookout-gateway-site-a";

fn example(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `text` with each whole line `from` replaced by `to`; every `from` must occur exactly
/// once, so that a changed example file fails here instead of being tested half-replaced.
fn substitute(path: &str, text: &str, lines: &[(&str, String)]) -> String {
    for (from, _) in lines {
        let n = text.lines().filter(|l| l == from).count();
        assert_eq!(n, 1, "{path}: the line {from:?} occurs {n} times");
    }
    let mut out = String::new();
    for line in text.lines() {
        match lines.iter().find(|(from, _)| *from == line) {
            Some((_, to)) => out.push_str(to),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A directory a mosquitto started as root can use after dropping to its own user: it
/// reads the certificates (the bridge's CA file at every connect) and writes `store`.
fn broker_dir(d: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = d.join(name);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    for p in [d, &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(dir.join("store"), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// configs/examples/mosquitto-central.conf on loopback ports: `plain` for local clients
/// (the bridge, the test's subscribers), `tls` for agents and gateways.
fn central_conf(d: &Path, dir: &Path, plain: u16, tls: u16) -> String {
    let path = "configs/examples/mosquitto-central.conf";
    let p = |name: &str| d.join(name).display().to_string();
    substitute(
        path,
        &example(path),
        &[
            (
                "listener 1883 127.0.0.1",
                format!("listener {plain} 127.0.0.1"),
            ),
            ("listener 8883", format!("listener {tls} 127.0.0.1")),
            (
                "certfile /etc/mosquitto/certs/central.pem",
                format!("certfile {}", p("server.pem")),
            ),
            (
                "keyfile /etc/mosquitto/certs/central.key",
                format!("keyfile {}", p("server.key")),
            ),
            (
                "persistence_location /var/lib/mosquitto/",
                format!("persistence_location {}/", dir.join("store").display()),
            ),
        ],
    )
}

/// configs/examples/mosquitto-bridge.conf listening on `port`, bridged to the central
/// broker's TLS listener on `central_tls` by the name its certificate holds.
fn gateway_conf(d: &Path, dir: &Path, port: u16, central_tls: u16) -> String {
    let path = "configs/examples/mosquitto-bridge.conf";
    substitute(
        path,
        &example(path),
        &[
            ("listener 1883", format!("listener {port} 127.0.0.1")),
            (
                "persistence_location /var/lib/mosquitto/",
                format!("persistence_location {}/", dir.join("store").display()),
            ),
            (
                "address central.example.net:8883",
                format!("address localhost:{central_tls}"),
            ),
            (
                "bridge_cafile /etc/mosquitto/certs/ca.pem",
                format!("bridge_cafile {}", d.join("ca.pem").display()),
            ),
        ],
    )
}

/// mosquitto with the configuration `conf` (written to `dir`), waited for on `port`.
/// Fails the test, never skips, when mosquitto is not installed.
fn start_mosquitto(name: &'static str, conf: &str, dir: &Path, port: u16) -> Proc {
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is not installed (apt-get install -y mosquitto); .ci/run installs it");
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let p = Proc { child, name, log };
    wait_for_port(port, Duration::from_secs(10));
    p
}

/// The shipped configs/agent.toml with its `[mqtt]` and `[broker]` tables replaced by
/// those of `fragment`, as the recipe tells an operator to do; written to `dir`.
fn agent_config(dir: &Path, fragment: &str) -> PathBuf {
    let mut base: toml::Table = example("configs/agent.toml").parse().unwrap();
    let tables: toml::Table = example(fragment)
        .parse()
        .unwrap_or_else(|e| panic!("{fragment}: {e}"));
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["broker", "mqtt"],
        "{fragment} holds the [mqtt] and [broker] tables"
    );
    for (k, v) in tables {
        base.insert(k, v);
    }
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml::to_string(&base).unwrap()).unwrap();
    path
}

/// `lookout-agent run` of `config` with simulated hosts that alarm within seconds
/// ([`LEVEL_SHIFTS_ONLY`]), and `sets`.
fn sim_agent(config: &Path, hosts: usize, sets: &[String], dir: &Path) -> Proc {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--simulate".into(),
        hosts.to_string(),
        "--speed".into(),
        "60".into(),
    ];
    for set in LEVEL_SHIFTS_ONLY
        .iter()
        .map(|s| s.to_string())
        .chain(sets.iter().cloned())
    {
        args.push("--set".into());
        args.push(set);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    agent(&args, dir)
}

fn is_firing_model_alarm(m: &Msg) -> bool {
    m.topic.contains("/alarms/")
        && !m.topic.contains("/alarms/rule/")
        && !m.payload.is_empty()
        && m.json()["state"] == "firing"
}

fn is_score(m: &Msg) -> bool {
    m.topic.contains("/scores/") && m.json()["score"].is_number()
}

/// Alarm lines of the bridge's file target.
fn file_alarms(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `mosquitto_sub` over TLS, as docs/deploy.md has the reader check: the retained alarm
/// states on the central broker, one `retained QoS topic` line each.
fn retained_alarms_over_tls(d: &Path, tls: u16) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &tls.to_string()])
        .arg("--cafile")
        .arg(d.join("ca.pem"))
        .args(["-t", "lookout/+/alarms/#", "-q", "1", "-F", "%r %q %t"])
        .args(["--retained-only", "-W", "2"])
        .output()
        .expect("mosquitto_sub is not installed (apt-get install -y mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_deploy_md_shows_each_example_file_exactly_as_shipped() {
    let doc = example("docs/deploy.md");
    for path in EXAMPLES {
        let text = example(path);
        assert!(
            doc.contains(&format!("```\n{text}```"))
                || doc.contains(&format!("```toml\n{text}```")),
            "docs/deploy.md does not show {path} as it is (a code block holding the whole file)"
        );
    }
    assert!(
        doc.contains("## (c) Agents with the embedded broker forwarding upstream"),
        "recipe (c)'s heading"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_publish_to_a_central_mosquitto_over_tls_and_the_bridge_beside_it_files_their_alarms()
 {
    let dir = scratch("deploy-central");
    let d = dir.path();
    make_test_pki(d);
    let (plain, tls) = (free_port(), free_port());
    let central = broker_dir(d, "central");
    let _central = start_mosquitto(
        "central",
        &central_conf(d, &central, plain, tls),
        &central,
        plain,
    );
    wait_for_port(tls, Duration::from_secs(10));
    let mut sub = Subscriber::connect(
        plain,
        &[
            "lookout/+/scores/#",
            "lookout/+/status",
            "lookout/+/sim/truth",
        ],
    )
    .await;

    // The bridge beside the central broker: the shipped configs/bridge.toml, which reads
    // alarms from 127.0.0.1:1883 and writes them to a file; here on the test's port.
    let out = d.join("alarms.log");
    let sets = [
        format!("mqtt.url=mqtt://127.0.0.1:{plain}"),
        format!("bridge.state_dir={}", d.join("bridge-state").display()),
        format!(
            "delivery.dead_letter={}",
            d.join("dead-letter.jsonl").display()
        ),
        format!("targets.alarms_file.path={}", out.display()),
    ];
    let mut args = vec!["run", "--config", "configs/bridge.toml"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let mut bridge = bridge(&args, d);
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;

    // Agents: the shipped agent.toml with recipe (a)'s [mqtt] and [broker].
    let config = agent_config(d, "configs/examples/agent-central.toml");
    let _agents = sim_agent(
        &config,
        2,
        &[
            format!("mqtt.url=mqtts://localhost:{tls}"),
            format!("mqtt.ca_file={}", d.join("ca.pem").display()),
        ],
        d,
    );

    for host in ["sim-1", "sim-2"] {
        sub.wait_for(&format!("{host} online"), Duration::from_secs(20), |m| {
            m.topic == format!("lookout/{host}/status") && m.payload == b"online"
        })
        .await;
    }
    let score = sub
        .wait_for(
            "a score at the central broker",
            Duration::from_secs(30),
            is_score,
        )
        .await;
    assert!(score.topic.starts_with("lookout/sim-"), "{}", score.topic);

    // A firing alarm of an injected anomaly (its ground truth on sim/truth, published
    // to the central broker too), in the bridge's file.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        sub.drain();
        let truths: Vec<Value> = sub
            .seen
            .iter()
            .filter(|m| m.topic.ends_with("/sim/truth"))
            .map(Msg::json)
            .collect();
        let injected = |a: &Value| {
            truths.iter().any(|t| {
                a["state"] == "firing"
                    && t["host"] == a["host"]
                    && t["metric"] == a["source"]
                    && a["started_at"].as_i64() >= t["start"].as_i64()
            })
        };
        if file_alarms(&out).iter().any(injected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no firing alarm of an injected anomaly in the bridge's file ({} truths); bridge log:\n{}",
            truths.len(),
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The central broker holds the alarm states retained at QoS 1, readable over TLS.
    let retained = retained_alarms_over_tls(d, tls);
    assert!(
        !retained.is_empty(),
        "no retained alarm on the central broker"
    );
    for line in &retained {
        assert!(
            line.starts_with("1 1 lookout/sim-"),
            "not retained at QoS 1: {line}"
        );
    }
    assert_eq!(
        bridge.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        bridge.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_mosquitto_bridges_agents_to_the_central_one_brings_rules_down_and_queues_alarms_while_it_is_away()
 {
    let dir = scratch("deploy-gateway");
    let d = dir.path();
    make_test_pki(d);
    let (central_plain, central_tls, gw) = (free_port(), free_port(), free_port());
    let central_dir = broker_dir(d, "central");
    let central_cfg = central_conf(d, &central_dir, central_plain, central_tls);
    let mut central = start_mosquitto("central", &central_cfg, &central_dir, central_plain);
    wait_for_port(central_tls, Duration::from_secs(10));
    let mut watch = Subscriber::persistent(
        central_plain,
        "deploy-e2e-central-watch",
        &["lookout/#", "$SYS/broker/connection/#"],
    )
    .await;
    let gateway_dir = broker_dir(d, "gateway");
    let _gateway = start_mosquitto(
        "gateway",
        &gateway_conf(d, &gateway_dir, gw, central_tls),
        &gateway_dir,
        gw,
    );
    let state_topic = format!("$SYS/broker/connection/{GATEWAY_ID}/state");
    watch
        .wait_for(
            "the bridge's notification \"1\"",
            Duration::from_secs(20),
            |m| m.topic == state_topic && m.payload == b"1",
        )
        .await;

    // Agents on the site publish to the gateway (recipe b's [mqtt] and [broker]); ingest
    // on, so that a device's readings can trip a rule from the fleet's rules document.
    let config = agent_config(d, "configs/examples/agent-gateway.toml");
    let agents = sim_agent(
        &config,
        2,
        &[
            format!("mqtt.url=mqtt://127.0.0.1:{gw}"),
            "ingest.enabled=true".into(),
        ],
        d,
    );
    let mut local =
        Subscriber::connect(gw, &["lookout/+/alarms/#", "$SYS/broker/connection/#"]).await;

    // Scores and alarms arrive at the central broker through the bridge.
    let score = watch
        .wait_for("a score", Duration::from_secs(30), is_score)
        .await;
    assert!(score.topic.starts_with("lookout/sim-"), "{}", score.topic);
    watch
        .wait_for(
            "a firing alarm",
            Duration::from_secs(40),
            is_firing_model_alarm,
        )
        .await;
    let retained = retained_alarms_over_tls(d, central_tls);
    assert!(
        !retained.is_empty(),
        "no retained alarm on the central broker"
    );
    for line in &retained {
        assert!(
            line.starts_with("1 1 lookout/sim-"),
            "not retained at QoS 1: {line}"
        );
    }

    // The fleet's rules document, published retained on the central broker, comes down to
    // the agents: a sensor on the site that trips its rule raises an alarm that goes up.
    let rules = json!([{"ruleId": "hot", "deviceId": "sensor-*", "metricName": "temp",
        "alertName": "sensor too warm", "operator": "MAXGREATEROREQUAL", "value": 30,
        "window": "1s"}]);
    publish(
        central_plain,
        vec![("lookout/rules".into(), rules.to_string(), true)],
    )
    .await;
    let reading = || {
        (
            "lookout/ingest/sensor-7".to_string(),
            json!({"metric": "temp", "value": 31.5}).to_string(),
            false,
        )
    };
    let rule_topic = "lookout/sim-1/alarms/rule/hot/sensor-7";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publish(gw, vec![reading()]).await;
        watch.drain();
        if watch.seen.iter().any(|m| {
            m.topic == rule_topic && !m.payload.is_empty() && m.json()["state"] == "firing"
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rule never fired: the rules document did not reach the agent through the \
             gateway, or its alarm did not come back; agent log:\n{}",
            agents.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The document came down once and did not loop back up (the bridge is try_private).
    watch.drain();
    let copies = watch
        .seen
        .iter()
        .filter(|m| m.topic == "lookout/rules")
        .count();
    assert_eq!(
        copies, 1,
        "lookout/rules seen {copies} times on the central broker"
    );

    // The central broker goes away. Alarm states raised meanwhile (the rule's firing and
    // resolution for another sensor, and whatever the models raise) wait on the gateway.
    // From the bridge's notification "0" on, the gateway knows the central broker is gone.
    let stopping = Instant::now();
    assert_eq!(
        central.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        central.log_text()
    );
    let down = local
        .wait_for(
            "the bridge's notification \"0\" on the gateway",
            Duration::from_secs(10),
            |m| m.topic == state_topic && m.payload == b"0" && m.at > stopping,
        )
        .await
        .at;
    let reading9 = || {
        (
            "lookout/ingest/sensor-9".to_string(),
            json!({"metric": "temp", "value": 35}).to_string(),
            false,
        )
    };
    let rule9 = "lookout/sim-1/alarms/rule/hot/sensor-9";
    let state_on = |m: &Msg, topic: &str, state: &str| {
        m.topic == topic && !m.payload.is_empty() && m.json()["state"] == state
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !local.seen.iter().any(|m| state_on(m, rule9, "firing")) {
        assert!(
            Instant::now() < deadline,
            "sensor-9's rule never fired on the gateway"
        );
        publish(gw, vec![reading9()]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        local.drain();
    }
    local
        .wait_for(
            "sensor-9's resolution on the gateway",
            Duration::from_secs(10),
            |m| state_on(m, rule9, "resolved"),
        )
        .await;
    // Down long enough for the bridge to fail a reconnection attempt (restart_timeout 2).
    tokio::time::sleep_until((down + Duration::from_secs(4)).into()).await;
    local.drain();
    let up = Instant::now();
    let during: Vec<Msg> = local
        .seen
        .iter()
        .filter(|m| m.at > down && m.at < up && !m.payload.is_empty())
        .cloned()
        .collect();
    for state in ["firing", "resolved"] {
        assert!(
            during.iter().any(|m| state_on(m, rule9, state)),
            "sensor-9's {state} was published during the outage"
        );
    }
    eprintln!(
        "{} alarm states published on the gateway during the {:?} outage",
        during.len(),
        up - down
    );

    let _central = start_mosquitto("central", &central_cfg, &central_dir, central_plain);
    local
        .wait_for(
            "the bridge's notification \"1\" on the gateway",
            Duration::from_secs(40),
            |m| m.topic == state_topic && m.payload == b"1" && m.at > up,
        )
        .await;
    for m in &during {
        watch
            .wait_for(
                &format!("{} raised during the outage", m.topic),
                Duration::from_secs(40),
                |c| c.topic == m.topic && c.payload == m.payload,
            )
            .await;
    }
    eprintln!(
        "all arrived {:?} after the central broker was back",
        up.elapsed()
    );
}
