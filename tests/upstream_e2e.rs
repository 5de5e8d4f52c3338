//! `[[upstream]]` end to end: an agent on its embedded broker forwards to real mosquitto
//! brokers (the centre): over TLS with a site prefix and the rules brought down; through
//! a five-minute outage of the centre (simulated time) with nothing lost and nothing sent
//! twice; and from a dead primary to a secondary and back. And `[buffer]`: an agent that
//! publishes straight to the central broker keeps its scores and metrics through an
//! outage of it too.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::mpsc;

/// The shipped config with `upstream` (TOML) appended.
fn config_with_upstream(dir: &Path, upstream: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("configs/agent.toml")).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, format!("{shipped}\n{upstream}\n")).unwrap();
    path.display().to_string()
}

fn run_args(config: &str, local: u16, speed: u32, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--config",
        config,
        "--simulate",
        "1",
        "--speed",
        &speed.to_string(),
        "--set",
        "broker.enabled=true",
        "--set",
        &format!("broker.listen=127.0.0.1:{local}"),
        "--set",
        &format!("mqtt.url=mqtt://127.0.0.1:{local}"),
        "--set",
        "agent.stats_interval=1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for s in sets {
        args.push("--set".into());
        args.push((*s).into());
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_broker_forwards_over_tls_under_the_site_prefix_and_takes_the_rules_down() {
    let dir = scratch("upstream-tls");
    make_test_pki(dir.path());
    let (plain, tls, local) = (free_port(), free_port(), free_port());
    let d = dir.path().display();
    let _central = mosquitto_with(
        plain,
        dir.path(),
        &format!("listener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"),
    );
    wait_for_port(tls, Duration::from_secs(10));
    let mut central = Subscriber::connect(plain, &["site/berlin-3/#"]).await;
    // The recipe as shipped (docs/deploy.md, recipe c), pointed at this test's broker.
    let shipped =
        std::fs::read_to_string(repo_root().join("configs/examples/agent-upstream.toml")).unwrap();
    for name in ["central.example.net:8883", "/etc/lookout/ca.pem"] {
        assert!(shipped.contains(name), "the recipe names {name}");
    }
    let mut upstream = shipped
        .replace("central.example.net:8883", &format!("localhost:{tls}"))
        .replace("/etc/lookout/ca.pem", &format!("{d}/ca.pem"));
    upstream.push_str(&format!(
        "remote_prefix = \"site/berlin-3\"\ndir = \"{d}/upstream\"\n"
    ));
    let config = config_with_upstream(dir.path(), &upstream);
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.push("ingest.enabled=true");
    let args = run_args(&config, local, 60, &sets);
    let _agent = agent(&strs(&args), dir.path());

    central
        .wait_for(
            "a score under the site's prefix",
            Duration::from_secs(30),
            |m| m.topic.starts_with("site/berlin-3/lookout/sim-1/scores/"),
        )
        .await;
    let alarm = central
        .wait_for("a firing alarm, forwarded", Duration::from_secs(40), |m| {
            m.topic.starts_with("site/berlin-3/lookout/sim-1/alarms/")
                && !m.payload.is_empty()
                && m.json()["state"] == "firing"
        })
        .await;
    assert_eq!(alarm.json()["host"], "sim-1");
    // The centre steers the fleet: a rules document it holds comes down to the agent,
    // whose verdict on it (a broken one) goes back up.
    publish(
        plain,
        vec![("lookout/rules".into(), r#"[{"ruleId": "x"}]"#.into(), true)],
    )
    .await;
    let verdict = central
        .wait_for(
            "the agent's verdict on the centre's rules",
            Duration::from_secs(20),
            |m| m.topic == "site/berlin-3/lookout/sim-1/rules/error" && !m.payload.is_empty(),
        )
        .await;
    assert_eq!(
        verdict.json()["origin"],
        "lookout/rules",
        "{}",
        verdict.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minutes_without_the_centre_and_a_drop_mid_replay_lose_nothing_and_send_no_alarm_twice()
 {
    let dir = scratch("upstream-outage");
    let (central_port, local) = (free_port(), free_port());
    let central_dir = dir.path().join("central");
    std::fs::create_dir_all(&central_dir).unwrap();
    let mut central = mosquitto_persistent(central_port, &central_dir);
    let mut sub = Subscriber::persistent(central_port, "e2e-upstream-outage", &["lookout/#"]).await;
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:{central_port}\"]\nreplay_rate = 1000\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    // 60x: five simulated minutes are five seconds.
    let args = run_args(&config, local, 60, LEVEL_SHIFTS_ONLY);
    let mut agent = agent(&strs(&args), dir.path());
    sub.collect_for(Duration::from_secs(8)).await;
    assert!(
        sub.seen.iter().any(|m| m.topic.contains("/scores/")),
        "scores reach the centre before the outage"
    );

    assert!(central.terminate(Duration::from_secs(10)).is_some());
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Back, and gone again while the outage's messages are being sent.
    let mut central = mosquitto_persistent(central_port, &central_dir);
    let before = sub.seen.len();
    while sub.seen.len() == before {
        sub.collect_for(Duration::from_millis(100)).await;
    }
    sub.collect_for(Duration::from_millis(300)).await;
    assert!(central.terminate(Duration::from_secs(10)).is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _central = mosquitto_persistent(central_port, &central_dir);
    sub.collect_for(Duration::from_secs(15)).await;
    agent.terminate(Duration::from_secs(10));
    sub.collect_for(Duration::from_secs(1)).await;

    // Scores and metrics: every tick of every topic, in order, the outage's included.
    let mut ticks: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for m in &sub.seen {
        if m.topic.contains("/scores/") || m.topic.ends_with("/metrics") {
            let ts = m.json()["ts"].as_i64().unwrap();
            ticks.entry(m.topic.as_str()).or_default().push(ts);
        }
    }
    assert!(ticks.len() >= 5, "{:?}", ticks.keys());
    let mut outage_ticks = 0;
    let mut resent = 0;
    for (topic, ts) in &ticks {
        // A first delivery is always newer than everything before it; a message the
        // broker took but did not acknowledge before it went away comes again (at least
        // once), and only such a repeat may be older.
        let mut seen = std::collections::BTreeSet::new();
        for t in ts {
            if !seen.insert(*t) {
                resent += 1;
                continue;
            }
            assert_eq!(
                seen.last(),
                Some(t),
                "{topic}: {t} arrived after newer ticks"
            );
        }
        let unique: Vec<i64> = seen.into_iter().collect();
        let gaps: Vec<_> = unique.windows(2).filter(|w| w[1] - w[0] != 1000).collect();
        assert!(gaps.is_empty(), "{topic}: ticks missing at {gaps:?}");
        outage_ticks = outage_ticks.max(unique.len());
    }
    eprintln!("scores and metrics sent twice after the drop mid-replay: {resent}");
    assert!(outage_ticks > 600, "ticks per topic: {outage_ticks}");

    // Alarm states: each one exactly once (live deliveries; retained ones come only from
    // a new subscription, and this one is never renewed).
    let mut alarms: HashMap<(String, Vec<u8>), usize> = HashMap::new();
    for m in sub
        .seen
        .iter()
        .filter(|m| m.topic.contains("/alarms/") && !m.payload.is_empty())
    {
        *alarms
            .entry((m.topic.clone(), m.payload.clone()))
            .or_default() += 1;
    }
    assert!(alarms.len() >= 2, "alarms seen: {}", alarms.len());
    let twice: Vec<_> = alarms
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((t, p), n)| (t.clone(), String::from_utf8_lossy(p).into_owned(), *n))
        .collect();
    assert!(
        twice.is_empty(),
        "alarm states sent more than once: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_go_through_the_secondary_when_the_primary_dies_and_come_back_to_it() {
    let dir = scratch("upstream-failover");
    let (a, b, local) = (free_port(), free_port(), free_port());
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let mut primary = mosquitto(a, &dir_a);
    let _secondary = mosquitto(b, &dir_b);
    let mut on_a = Subscriber::connect(a, &["lookout/+/scores/#"]).await;
    let mut on_b = Subscriber::connect(b, &["lookout/#"]).await;
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:{a}\", \"mqtt://127.0.0.1:{b}\"]\nfailover_after = \"2s\"\nfailback_after = \"3s\"\nreplay_rate = 20000\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, LEVEL_SHIFTS_ONLY);
    let _agent = agent(&strs(&args), dir.path());
    on_a.wait_for("scores on the primary", Duration::from_secs(30), |m| {
        m.topic.contains("/scores/")
    })
    .await;

    primary.kill();
    let died = Instant::now();
    on_b.wait_for(
        "a firing alarm through the secondary",
        Duration::from_secs(30),
        |m| m.topic.contains("/alarms/") && !m.payload.is_empty() && m.json()["state"] == "firing",
    )
    .await;
    let first_on_b = on_b.seen.iter().map(|m| m.at).min().unwrap();
    assert!(
        first_on_b.duration_since(died) < Duration::from_secs(15),
        "the secondary took over {:?} after the primary died",
        first_on_b.duration_since(died)
    );
    on_b.wait_for("stats naming the secondary", Duration::from_secs(20), |m| {
        m.topic.ends_with("/agent/stats")
            && m.json()["upstream"][0]["broker"]
                .as_str()
                .is_some_and(|u| u.contains(&b.to_string()))
            && m.json()["upstream"][0]["switches"].as_u64() >= Some(1)
    })
    .await;

    // The primary returns: after `failback_after` of healthy probes, the agent goes back.
    let _primary = mosquitto(a, &dir_a);
    let mut back = Subscriber::connect(a, &["lookout/+/scores/#"]).await;
    back.wait_for(
        "scores on the primary again",
        Duration::from_secs(40),
        |m| m.topic.contains("/scores/"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_the_login_or_shows_a_wrong_certificate_is_named_and_local_publishing_goes_on()
 {
    let dir = scratch("upstream-faults");
    make_test_pki(dir.path());
    let (locked, tls, local) = (free_port(), free_port(), free_port());
    let d = dir.path().display();
    let passwd = dir.path().join("passwd");
    let ok = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["central", "right"])
        .status()
        .expect("mosquitto_passwd (mosquitto package)");
    assert!(ok.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _open = mosquitto_with(
        free_port(),
        dir.path(),
        &format!(
            "listener {locked} 127.0.0.1\nallow_anonymous false\npassword_file {}\nlistener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            passwd.display()
        ),
    );
    wait_for_port(locked, Duration::from_secs(10));
    wait_for_port(tls, Duration::from_secs(10));
    let upstream = format!(
        "[[upstream]]\nname = \"locked\"\nurls = [\"mqtt://127.0.0.1:{locked}\"]\nusername = \"central\"\npassword = \"wrong\"\ndir = \"{d}/up-locked\"\n\n\
         [[upstream]]\nname = \"impostor\"\nurls = [\"mqtts://localhost:{tls}\"]\nca_file = \"{d}/other-ca.pem\"\ndir = \"{d}/up-impostor\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, &[]);
    let agent = agent(&strs(&args), dir.path());
    let mut on_device =
        Subscriber::connect(local, &["lookout/+/agent/stats", "lookout/+/scores/#"]).await;
    agent
        .wait_log("upstream=\"locked\"", Duration::from_secs(20))
        .await;
    agent
        .wait_log("upstream=\"impostor\"", Duration::from_secs(20))
        .await;
    let log = agent.log_text();
    let line = |name: &str| {
        log.lines()
            .find(|l| l.contains(&format!("upstream=\"{name}\"")) && l.contains("failed"))
            .unwrap_or_else(|| panic!("no failure line for {name}:\n{log}"))
            .to_owned()
    };
    assert!(
        line("locked").to_lowercase().contains("not authorized")
            || line("locked").contains("BadUserNamePassword")
            || line("locked").to_lowercase().contains("refused"),
        "{}",
        line("locked")
    );
    assert!(
        line("impostor").contains("UnknownIssuer") || line("impostor").contains("hint"),
        "{}",
        line("impostor")
    );
    // The device goes on: scores on its own broker, and what the centre should get is kept.
    on_device
        .wait_for(
            "scores on the device's broker",
            Duration::from_secs(20),
            |m| m.topic.contains("/scores/"),
        )
        .await;
    let stats = on_device
        .wait_for(
            "stats with both upstreams down and keeping",
            Duration::from_secs(20),
            |m| {
                m.topic.ends_with("/agent/stats")
                    && m.json()["upstream"].as_array().is_some_and(|u| {
                        u.len() == 2
                            && u.iter().all(|x| {
                                x["connected"] == false && x["buffered"].as_u64() > Some(100)
                            })
                    })
            },
        )
        .await
        .json();
    assert_eq!(stats["upstream"][0]["dropped"], 0, "{stats}");
    // One line per outage, not one per retry.
    let attempts = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("upstream=\"locked\"") && l.contains("failed"))
        .count();
    assert!(
        attempts <= 3,
        "logged {attempts} failures: once per connection, not per retry"
    );
}

#[test]
fn a_forwarding_that_would_loop_stops_the_agent_at_config_check_naming_both_filters() {
    let dir = scratch("upstream-loop");
    let config = config_with_upstream(
        dir.path(),
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:1\"]\nforward = [\"lookout/#\"]\nsubscribe = [\"lookout/rules\"]\n",
    );
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", &config])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("upstream[0].subscribe") && err.contains("lookout/#") && err.contains("loop"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_publishing_straight_to_its_broker_keeps_scores_and_metrics_through_its_outage() {
    let dir = scratch("buffer-outage");
    let port = free_port();
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let mut broker = mosquitto_persistent(port, &broker_dir);
    let mut sub = Subscriber::persistent(port, "e2e-buffer-outage", &["lookout/#"]).await;
    let args = sim_run_args(
        port,
        1,
        60,
        &[
            "buffer.replay_rate=1000",
            "mqtt.reconnect_max=1s",
            "agent.stats_interval=1s",
        ],
    );
    let _agent = agent(&strs(&args), dir.path());
    sub.collect_for(Duration::from_secs(6)).await;
    assert!(sub.seen.iter().any(|m| m.topic.contains("/scores/")));
    assert!(broker.terminate(Duration::from_secs(10)).is_some());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _broker = mosquitto_persistent(port, &broker_dir);
    sub.collect_for(Duration::from_secs(15)).await;

    // Per topic and per QoS (what was kept comes with QoS 1, live ticks with QoS 0): MQTT
    // keeps order only among messages of one QoS, and mosquitto hands a subscriber a
    // QoS 0 message at once while QoS 1 ones still queue for its in-flight window.
    let mut ticks: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut by_qos: BTreeMap<(&str, u8), Vec<i64>> = BTreeMap::new();
    for m in &sub.seen {
        if m.topic.contains("/scores/") || m.topic.ends_with("/metrics") {
            let ts = m.json()["ts"].as_i64().unwrap();
            ticks.entry(m.topic.as_str()).or_default().push(ts);
            by_qos
                .entry((m.topic.as_str(), m.qos))
                .or_default()
                .push(ts);
        }
    }
    for ((topic, qos), ts) in &by_qos {
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{topic}: out of order or twice at QoS {qos}"
        );
    }
    assert!(ticks.len() >= 5, "{:?}", ticks.keys());
    for (topic, ts) in &mut ticks {
        // Metrics and scores go out at QoS 0 while the broker is there: one sent just as
        // it went away may be lost; what came after is kept, and each tick comes once.
        ts.sort_unstable();
        let n = ts.len();
        ts.dedup();
        assert_eq!(ts.len(), n, "{topic}: a tick came twice");
        let gaps: Vec<_> = ts.windows(2).filter(|w| w[1] - w[0] != 1000).collect();
        assert!(gaps.len() <= 1, "{topic}: ticks missing at {gaps:?}");
        if let Some(w) = gaps.first() {
            assert!(
                w[1] - w[0] <= 5000,
                "{topic}: {} ticks lost",
                (w[1] - w[0]) / 1000 - 1
            );
        }
        assert!(ts.len() > 600, "{topic}: {} ticks", ts.len());
    }
    let stats = sub
        .seen
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/agent/stats"))
        .unwrap()
        .json();
    assert!(stats["buffer"]["kept"].as_u64() > Some(1000), "{stats}");
    assert_eq!(stats["buffer"]["dropped"], 0, "{stats}");
}

/// A message as an MQTT 5 subscriber sees it: its properties too.
#[derive(Clone, Debug)]
struct Msg5 {
    topic: String,
    payload: Vec<u8>,
    user: Vec<(String, String)>,
    expiry: Option<u32>,
    /// The QoS it was delivered with (the lower of the publisher's and the subscription's).
    qos: u8,
}

/// An MQTT 5 client (rumqttc's v5) subscribed to `filter`, collecting what it receives;
/// it can publish too.
struct Subscriber5 {
    client: rumqttc::v5::AsyncClient,
    rx: mpsc::Receiver<Msg5>,
    seen: Vec<Msg5>,
    _task: tokio::task::JoinHandle<()>,
}

impl Subscriber5 {
    fn connect(port: u16, filter: &str) -> Self {
        use rumqttc::v5::mqttbytes::QoS as QoS5;
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Options5};
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "e2e-sub5-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut opts = Options5::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(Some(1 << 20));
        let (client, mut eventloop) = Client5::new(opts, 64);
        let (tx, rx) = mpsc::channel(100_000);
        let filter = filter.to_owned();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(E5::Incoming(P5::ConnAck(_))) => {
                        let _ = sub.subscribe(filter.clone(), QoS5::AtLeastOnce).await;
                    }
                    Ok(E5::Incoming(P5::Publish(p))) => {
                        let props = p.properties.clone().unwrap_or_default();
                        let m = Msg5 {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            user: props.user_properties,
                            expiry: props.message_expiry_interval,
                            qos: p.qos as u8,
                        };
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Msg5) -> bool,
    ) -> Msg5 {
        if let Some(m) = self.seen.iter().find(|m| pred(m)) {
            return m.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.seen.push(m.clone());
                    if pred(&m) {
                        return m;
                    }
                }
                _ => panic!(
                    "timed out after {timeout:?} waiting for {what}; topics seen: {:?}",
                    self.seen
                        .iter()
                        .map(|m| m.topic.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                ),
            }
        }
    }
}

impl Drop for Subscriber5 {
    fn drop(&mut self) {
        self._task.abort();
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_reach_an_mqtt_5_subscriber_on_the_centre_with_host_and_model_and_an_expiry() {
    let dir = scratch("upstream-mqtt5");
    let (central, local) = (free_port(), free_port());
    let _central = mosquitto(central, dir.path());
    let mut sub = Subscriber5::connect(central, "lookout/#");
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:{central}\"]\nmessage_expiry = \"10m\"\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, &[]);
    let agent = agent(&strs(&args), dir.path());

    let score = sub
        .wait_for("a score", Duration::from_secs(30), |m| {
            m.topic.starts_with("lookout/sim-1/scores/")
        })
        .await;
    let model = score.topic.rsplit('/').next().unwrap();
    assert_eq!(score.user, pairs(&[("host", "sim-1"), ("model", model)]));
    // mosquitto hands on what is left of the expiry.
    assert!(
        score.expiry.is_some_and(|e| e > 590 && e <= 600),
        "{:?}",
        score.expiry
    );
    let metrics = sub
        .wait_for("metrics", Duration::from_secs(10), |m| {
            m.topic == "lookout/sim-1/metrics"
        })
        .await;
    assert_eq!(metrics.user, pairs(&[("host", "sim-1")]));
    assert!(metrics.expiry.is_some());
    // A state (retained on the agent's broker) never expires.
    let status = sub
        .wait_for("the host's status", Duration::from_secs(10), |m| {
            m.topic == "lookout/sim-1/status"
        })
        .await;
    assert_eq!(status.user, pairs(&[("host", "sim-1")]));
    assert_eq!(status.expiry, None);
    let stats = sub
        .wait_for("stats naming the protocol", Duration::from_secs(20), |m| {
            m.topic == "lookout/sim-1/agent/stats"
        })
        .await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["upstream"][0]["protocol"], "5", "{stats}");
    assert_eq!(stats["upstream"][0]["refused"], 0, "{stats}");
    agent
        .wait_log("upstream broker speaks MQTT 5", Duration::from_secs(5))
        .await;
}

/// A broker that speaks only MQTT 3.1.1: rumqttd with a v4 listener alone, in this
/// process. It closes a connection whose CONNECT says version 5.
fn broker_v311_only(port: u16) {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 1 << 20,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-only".into(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 16,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("the 3.1.1-only broker stopped: {e}");
        }
    });
    wait_for_port(port, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_speaks_only_mqtt_3_1_1_gets_everything_in_3_1_1_and_the_log_says_so() {
    let dir = scratch("upstream-v311");
    let (central, local) = (free_port(), free_port());
    broker_v311_only(central);
    let mut on_central =
        Subscriber::connect(central, &["lookout/+/scores/#", "lookout/+/status"]).await;
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"old\"\nurls = [\"mqtt://127.0.0.1:{central}\"]\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, &[]);
    let agent = agent(&strs(&args), dir.path());
    let mut on_device = Subscriber::connect(local, &["lookout/+/agent/stats"]).await;

    on_central
        .wait_for("a score, in 3.1.1", Duration::from_secs(30), |m| {
            m.topic.starts_with("lookout/sim-1/scores/")
        })
        .await;
    on_central
        .wait_for("the status, a state", Duration::from_secs(10), |m| {
            m.topic == "lookout/sim-1/status"
        })
        .await;
    agent
        .wait_log("falling back to MQTT 3.1.1", Duration::from_secs(5))
        .await;
    let stats = on_device
        .wait_for("stats", Duration::from_secs(20), |m| {
            m.json()["upstream"][0]["connected"] == true
        })
        .await
        .json();
    assert_eq!(stats["upstream"][0]["protocol"], "3.1.1", "{stats}");
    let log = agent.log_text();
    let said = log.lines().filter(|l| l.contains("falling back")).count();
    assert_eq!(said, 1, "said once:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("upstream=\"old\"") && l.contains("connection failed")),
        "the refusal of MQTT 5 is not an outage:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_serves_mqtt_5_beside_3_1_1_and_messages_cross_between_them() {
    let dir = scratch("broker-v5");
    let (local, v5) = (free_port(), free_port());
    let config = config_with_upstream(dir.path(), "");
    let listen_v5 = format!("broker.listen_v5=127.0.0.1:{v5}");
    let args = run_args(&config, local, 60, &[&listen_v5]);
    let _agent = agent(&strs(&args), dir.path());
    wait_for_port(v5, Duration::from_secs(10));
    // The agent publishes in 3.1.1; an MQTT 5 client reads it.
    let mut sub5 = Subscriber5::connect(v5, "lookout/#");
    sub5.wait_for(
        "a score through the MQTT 5 listener",
        Duration::from_secs(30),
        |m| m.topic.starts_with("lookout/sim-1/scores/"),
    )
    .await;
    // And the other way (published until the 3.1.1 subscription is in place).
    let mut sub4 = Subscriber::connect(local, &["e2e/v5"]).await;
    for _ in 0..50 {
        sub5.client
            .publish(
                "e2e/v5",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                "from v5",
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sub4.drain();
        if !sub4.seen.is_empty() {
            break;
        }
    }
    let m = sub4
        .wait_for("the MQTT 5 client's message", Duration::from_secs(1), |m| {
            m.topic == "e2e/v5"
        })
        .await;
    assert_eq!(m.text(), "from v5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_centre_refuses_by_reason_code_are_counted_logged_and_not_sent_again() {
    let dir = scratch("upstream-refused");
    let (central, local) = (free_port(), free_port());
    // The centre's ACL takes scores, status and stats, and denies metrics and alarms.
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite lookout/+/scores/#\ntopic readwrite lookout/+/status\ntopic readwrite lookout/+/agent/stats\ntopic read lookout/rules\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // With max_queued_messages 0 (the test brokers' setting) mosquitto 2.0.11 closes the
    // connection right after denying a publish (docs/deploy.md, pitfalls); the shipped
    // central config's value instead.
    let _central = mosquitto_with(
        central,
        dir.path(),
        &format!("max_queued_messages 10000\nacl_file {}\n", acl.display()),
    );
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:{central}\"]\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, &[]);
    let agent = agent(&strs(&args), dir.path());
    let mut on_device = Subscriber::connect(local, &["lookout/+/agent/stats"]).await;
    let stats = on_device
        .wait_for(
            "stats with refused messages",
            Duration::from_secs(30),
            |m| {
                let u = &m.json()["upstream"][0];
                u["refused"].as_u64() > Some(5) && u["forwarded"].as_u64() > Some(5)
            },
        )
        .await
        .json();
    let u = &stats["upstream"][0];
    // Settled: nothing waits to be sent again.
    assert_eq!(u["buffered"], 0, "{stats}");
    assert_eq!(u["states_pending"], 0, "{stats}");
    agent
        .wait_log("refused a message", Duration::from_secs(5))
        .await;
    let log = agent.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a message"))
        .collect();
    assert!(
        lines[0].contains("NotAuthorized") && lines[0].contains("lookout/sim-1/"),
        "{}",
        lines[0]
    );
    assert!(lines.len() <= 2, "rate-limited: {lines:?}");
}

// The agent's own link in MQTT 5 (`[mqtt] protocol`).

/// On mosquitto with `protocol = "auto"` the agent speaks MQTT 5: scores carry the
/// expiry and the `host` and `model` properties, alarms `host` and `model`, and its
/// stats say `"5"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_mosquitto_with_protocol_auto_speaks_mqtt_5_with_expiry_and_properties() {
    let dir = scratch("link-mqtt5");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber5::connect(port, "lookout/#");
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.extend(["mqtt.protocol=auto", "agent.stats_interval=1s"]);
    let args = sim_run_args(port, 1, 60, &sets);
    let agent = agent(&strs(&args), dir.path());
    let score = sub
        .wait_for("a score", Duration::from_secs(30), |m| {
            m.topic.starts_with("lookout/sim-1/scores/")
        })
        .await;
    let model = score.topic.rsplit('/').next().unwrap();
    assert_eq!(score.user, pairs(&[("host", "sim-1"), ("model", model)]));
    assert!(
        score.expiry.is_some_and(|e| e > 3590 && e <= 3600),
        "{:?}",
        score.expiry
    );
    let alarm = sub
        .wait_for("an alarm", Duration::from_secs(60), |m| {
            m.topic.starts_with("lookout/sim-1/alarms/")
        })
        .await;
    let source = alarm.topic.splitn(4, '/').nth(3).unwrap();
    assert_eq!(alarm.user, pairs(&[("host", "sim-1"), ("model", source)]));
    assert_eq!(alarm.expiry, None, "alarm states never expire");
    let stats = sub
        .wait_for("stats", Duration::from_secs(20), |m| {
            m.topic == "lookout/sim-1/agent/stats"
        })
        .await;
    assert_eq!(stats.user, pairs(&[("host", "sim-1")]));
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["protocol"], "5", "{stats}");
    assert_eq!(stats["reconnects"], 0, "{stats}");
    agent
        .wait_log("the broker speaks MQTT 5", Duration::from_secs(5))
        .await;
}

/// The shipped config's embedded broker listens in 3.1.1 only; with `protocol = "auto"`
/// the agent falls back once, quietly (no warning of its own, no reconnect counted), and
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_its_embedded_3_1_1_broker_with_protocol_auto_falls_back_once_and_works() {
    let dir = scratch("link-auto-v311");
    let local = free_port();
    let config = config_with_upstream(dir.path(), "");
    let args = run_args(&config, local, 60, &["mqtt.protocol=auto"]);
    let agent = agent(&strs(&args), dir.path());
    wait_for_port(local, Duration::from_secs(10));
    let mut sub =
        Subscriber::connect(local, &["lookout/+/agent/stats", "lookout/+/scores/#"]).await;
    sub.wait_for("a score", Duration::from_secs(30), |m| {
        m.topic.starts_with("lookout/sim-1/scores/")
    })
    .await;
    let stats = sub
        .wait_for("stats", Duration::from_secs(20), |m| {
            m.topic == "lookout/sim-1/agent/stats"
        })
        .await
        .json();
    assert_eq!(stats["protocol"], "3.1.1", "{stats}");
    assert_eq!(stats["reconnects"], 0, "{stats}");
    let log = agent.log_text();
    assert_eq!(
        log.matches("the broker speaks MQTT 3.1.1 only").count(),
        1,
        "{log}"
    );
    // The agent's link says nothing alarming (rumqttd itself logs the refused CONNECT at
    // error, `InvalidProtocolLevel(5)`: docs/config.md says so).
    assert!(
        !log.lines().any(|l| l.contains("MQTT connection")),
        "the fallback is not an outage:\n{log}"
    );
    assert_eq!(log.matches("InvalidProtocolLevel(5)").count(), 1, "{log}");
}

/// `protocol = "5"` against the embedded broker's MQTT 5 listener: one agent runs the
/// broker, another publishes to it in MQTT 5 and is killed (-9); its last will, the
/// retained `offline`, arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaking_mqtt_5_to_the_embedded_v5_listener_works_and_its_last_will_arrives() {
    let dir = scratch("link-v5-will");
    let (local, v5) = (free_port(), free_port());
    let config = config_with_upstream(dir.path(), "");
    let listen_v5 = format!("broker.listen_v5=127.0.0.1:{v5}");
    // The broker's own agent publishes under another prefix, out of the way.
    let args = run_args(&config, local, 60, &[&listen_v5, "mqtt.prefix=site"]);
    let _broker_agent = agent(&strs(&args), dir.path());
    wait_for_port(v5, Duration::from_secs(10));
    let mut sub = Subscriber5::connect(v5, "lookout/#");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let args = sim_run_args(v5, 1, 60, &["mqtt.protocol=5", "agent.stats_interval=1s"]);
    let mut publisher = agent(&strs(&args), &other);
    let score = sub
        .wait_for("a score in MQTT 5", Duration::from_secs(30), |m| {
            m.topic.starts_with("lookout/sim-1/scores/")
        })
        .await;
    assert_eq!(score.user[0], ("host".to_owned(), "sim-1".to_owned()));
    assert!(score.expiry.is_some(), "{score:?}");
    let stats = sub
        .wait_for("stats", Duration::from_secs(20), |m| {
            m.topic == "lookout/sim-1/agent/stats"
        })
        .await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["protocol"], "5", "{stats}");
    sub.wait_for("online", Duration::from_secs(5), |m| {
        m.topic == "lookout/sim-1/status" && m.payload == b"online"
    })
    .await;
    publisher.kill();
    sub.wait_for("the last will", Duration::from_secs(30), |m| {
        m.topic == "lookout/sim-1/status" && m.payload == b"offline"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_qos_0_live_scores_go_up_at_qos_0_and_alarm_states_still_at_qos_1() {
    let dir = scratch("upstream-qos0");
    let (central, local) = (free_port(), free_port());
    let _central = mosquitto(central, dir.path());
    let mut sub = Subscriber5::connect(central, "lookout/#");
    let d = dir.path().display();
    let upstream = format!(
        "[[upstream]]\nname = \"central\"\nurls = [\"mqtt://127.0.0.1:{central}\"]\nqos = 0\ndir = \"{d}/upstream\"\n"
    );
    let config = config_with_upstream(dir.path(), &upstream);
    let args = run_args(&config, local, 60, LEVEL_SHIFTS_ONLY);
    let _agent = agent(&strs(&args), dir.path());
    let score = sub
        .wait_for("a score", Duration::from_secs(30), |m| {
            m.topic.starts_with("lookout/sim-1/scores/")
        })
        .await;
    assert_eq!(score.qos, 0);
    let alarm = sub
        .wait_for("a firing alarm", Duration::from_secs(40), |m| {
            m.topic.starts_with("lookout/sim-1/alarms/") && !m.payload.is_empty()
        })
        .await;
    assert_eq!(alarm.qos, 1, "states always go with QoS 1");
    let stats = sub
        .wait_for(
            "stats with scores forwarded",
            Duration::from_secs(20),
            |m| m.topic == "lookout/sim-1/agent/stats",
        )
        .await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert!(
        stats["upstream"][0]["forwarded"].as_u64() > Some(10),
        "{stats}"
    );
    assert_eq!(stats["upstream"][0]["buffered"], 0, "{stats}");
}
