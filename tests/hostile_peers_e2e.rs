//! Hostile peers end to end (issue 19, item 2): brokers that misbehave and clients on a
//! real broker that do. Real processes (the agent with simulated hosts, mosquitto, the
//! bridge), loopback only, every wait bounded. Each test asserts counts: what was sent,
//! what arrived, what the agent counted and logged, and how much memory it took.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// Resident memory of `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What a fake broker does with each connection it accepts.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Reads whatever comes and never answers, not even CONNACK.
    NeverConnAck,
    /// Answers the CONNECT with a CONNACK (accepted), then closes after this long.
    DropAfter(Duration),
}

/// A broker made of a TcpListener: counts the connections it accepts and misbehaves on
/// each. `stop` ends it and every connection it holds, freeing the port.
struct FakeBroker {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBroker {
    async fn start(port: u16, how: Misbehaviour) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (accepted.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok(Ok((mut sock, _))) =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                else {
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                };
                n.fetch_add(1, Ordering::Relaxed);
                let halt = halt.clone();
                tokio::spawn(async move {
                    let opened = Instant::now();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut answered = false;
                    loop {
                        if halt.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Misbehaviour::DropAfter(after) = how
                            && opened.elapsed() >= after
                        {
                            return;
                        }
                        match tokio::time::timeout(Duration::from_millis(50), sock.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(_)) => {
                                if matches!(how, Misbehaviour::DropAfter(_)) && !answered {
                                    // CONNACK: session present 0, return code 0 (accepted).
                                    let _ = sock.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
                                    answered = true;
                                }
                            }
                            Err(_) => {}
                        }
                    }
                });
            }
        });
        Self {
            accepted,
            stop,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Connection tasks see the flag within 50 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `sub` has seen every (id, state) in `want` on the alarm topics.
async fn all_states_arrive(sub: &mut Subscriber, want: &[(String, String)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        sub.drain();
        let got: BTreeSet<(String, String)> = sub
            .seen
            .iter()
            .filter(|m| m.topic.contains("/alarms/") && !m.payload.is_empty())
            .map(|m| {
                let a = m.json();
                (
                    a["id"].as_str().unwrap_or_default().to_owned(),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} alarm states never arrived: {missing:?}",
            missing.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscriber that is known to be subscribed: it has seen its own probe come back.
async fn listening_subscriber(port: u16, filters: &[&str]) -> Subscriber {
    let mut all: Vec<&str> = filters.to_vec();
    all.push("e2e-probe/#");
    let mut sub = Subscriber::connect(port, &all).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publish(port, vec![("e2e-probe/x".into(), "probe".into(), false)]).await;
        sub.drain();
        if sub.seen.iter().any(|m| m.topic == "e2e-probe/x") {
            return sub;
        }
        assert!(Instant::now() < deadline, "the subscriber never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker that never answers CONNACK for 10 s, then one that accepts every connection
/// and drops it after 1 s for 20 s: the agent retries with a growing backoff (the
/// attempts are counted and bounded), keeps sampling and scoring (alarms keep being
/// raised, in its log), and when a real broker takes the port every alarm state raised
/// meanwhile arrives from the durable outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_that_never_answer_or_drop_every_connection_cost_bounded_retries_and_lose_no_alarm()
{
    let dir = scratch("hostile-fake-broker");
    let port = free_port();
    let silent = FakeBroker::start(port, Misbehaviour::NeverConnAck).await;
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.push("mqtt.reconnect_max=8s");
    let args = sim_run_args(port, 1, 300, &sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    let pid = agent.child.id();
    let mut peak_rss = 0;

    tokio::time::sleep(Duration::from_secs(10)).await;
    peak_rss = peak_rss.max(rss_kib(pid));
    let silent_attempts = silent.accepted();
    silent.stop().await;
    let raised_silent = raised(&agent.log_text()).len();

    let flaky = FakeBroker::start(port, Misbehaviour::DropAfter(Duration::from_secs(1))).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    let flaky_attempts = flaky.accepted();
    flaky.stop().await;
    let log = agent.log_text();
    let want = raised(&log);
    eprintln!(
        "connections: {silent_attempts} in 10 s to the silent broker, {flaky_attempts} in 20 s \
         to the dropping one; alarm states raised: {raised_silent} then {}; peak RSS {peak_rss} KiB",
        want.len()
    );
    // rumqttc gives up on a CONNACK after 5 s: two or three attempts, never a busy loop.
    assert!(
        (1..=4).contains(&silent_attempts),
        "{silent_attempts} connections in 10 s to a broker that never answers:\n{log}"
    );
    // Each connection lives 1 s; the backoff grows 0.25, 0.5, 1, 2, 4, 8 s because no
    // connection lasted: six or seven in 20 s (a reset backoff would make about sixteen).
    assert!(
        (2..=8).contains(&flaky_attempts),
        "{flaky_attempts} connections in 20 s to a broker that drops each after 1 s:\n{log}"
    );
    assert!(
        log.contains("MQTT connection lost") || log.contains("MQTT connection failed"),
        "the failure is logged:\n{log}"
    );
    assert!(
        !want.is_empty() && want.len() > raised_silent,
        "the agent kept scoring and raising alarms without a broker ({raised_silent} then {}):\n{log}",
        want.len()
    );
    assert!(peak_rss < 64 * 1024, "agent RSS {peak_rss} KiB");

    let _broker = mosquitto(port, dir.path());
    let mut sub = listening_subscriber(port, &["lookout/+/alarms/#"]).await;
    all_states_arrive(&mut sub, &want, Duration::from_secs(30)).await;
    agent
        .wait_log("MQTT connection restored", Duration::from_secs(5))
        .await;
}

/// Publishes `(topic, payload)` at QoS 1, retained, logged in as `login` if given, with
/// packets up to 64 MiB, and waits until the broker has acknowledged them all (mosquitto
/// acknowledges what its ACL drops as well: MQTT 3.1.1 has no way to refuse a publish).
async fn publish_as(port: u16, login: Option<(&str, &str)>, msgs: &[(String, String)]) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "e2e-pub-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(64 << 20, 64 << 20);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    for (topic, payload) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, true, payload.clone())
            .await
            .unwrap();
    }
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks < msgs.len() {
        assert!(
            Instant::now() < deadline,
            "{acks} of {} acknowledged",
            msgs.len()
        );
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publishing as {login:?}: {e}"),
            Err(_) => {}
        }
    }
    let _ = client.disconnect().await;
}

fn alarm_json(id: &str, host: &str) -> String {
    serde_json::json!({
        "id": id, "host": host, "source": "cpu", "state": "firing", "severity": 3,
        "ts": 1, "started_at": 1, "score": 9.0, "threshold": 2.0,
        "summary": "forged?", "labels": {}
    })
    .to_string()
}

/// The shipped ACL (configs/mosquitto/acl.example) on a mosquitto with logins: another
/// agent's login (`sim-2`) publishing alarms on `sim-1`'s topics gets nothing through to
/// the bridge, while its publishes on its own prefix and the real `sim-1`'s alarm states
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_keeps_forged_alarms_for_another_host_from_the_bridge() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("hostile-acl");
    // mosquitto drops to its own user, which must read the password and ACL files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let passwd = dir.path().join("passwd");
    for (i, user) in ["sim-1", "sim-2", "lookout-bridge"].iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(format!("pw-{user}"))
            .status()
            .expect("mosquitto_passwd (package mosquitto) is installed");
        assert!(status.success());
    }
    let acl = dir.path().join("lookout.acl");
    std::fs::copy(repo_root().join("configs/mosquitto/acl.example"), &acl).unwrap();
    for f in [&passwd, &acl] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = free_port();
    let _broker = mosquitto_with(
        port,
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    );
    let out = dir.path().join("alarms.jsonl");
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "acl"
state_dir = ""

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topics = ["lookout/+/alarms/#"]
username = "lookout-bridge"
password = "pw-lookout-bridge"

[targets.file]
type = "file"
path = "{out}"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["file"]
"#,
            out = out.display()
        ),
    )
    .unwrap();
    let bridge = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    bridge
        .wait_log("MQTT connected", Duration::from_secs(20))
        .await;
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.extend(["mqtt.username=sim-1", "mqtt.password=pw-sim-1"]);
    let args = sim_run_args(port, 1, 60, &sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());

    let ids = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // The real agent's alarms get through.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids(&out).iter().any(|id| id.starts_with("sim-1:")) {
        assert!(
            Instant::now() < deadline,
            "no alarm of sim-1 reached the bridge:\nagent:\n{}\nbridge:\n{}",
            agent.log_text(),
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // sim-2 forges 10 alarms for sim-1, then publishes one of its own.
    let forged: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                format!("lookout/sim-1/alarms/cpu{i}"),
                alarm_json(&format!("forged:{i}"), "sim-1"),
            )
        })
        .collect();
    // mosquitto_pub, as an intruder would: a rumqttc client is disconnected at its first
    // denied publish (mosquitto 2.0.11 answers a v3.1.1 client's denied QoS 1 publish with
    // a PUBACK carrying reason 135), which would end the test before the forgery.
    for (topic, payload) in &forged {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                "sim-2",
                "-P",
                "pw-sim-2",
            ])
            .args(["-q", "1", "-r", "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub (package mosquitto-clients) is installed");
        assert!(status.success(), "mosquitto_pub {topic}");
    }
    let own = vec![(
        "lookout/sim-2/alarms/cpu".to_owned(),
        alarm_json("sim-2:own", "sim-2"),
    )];
    publish_as(port, Some(("sim-2", "pw-sim-2")), &own).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids(&out).iter().any(|id| id == "sim-2:own") {
        assert!(
            Instant::now() < deadline,
            "sim-2's own alarm never arrived:\n{}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = ids(&out);
    let forged_in = got.iter().filter(|id| id.starts_with("forged:")).count();
    let real = got.iter().filter(|id| id.starts_with("sim-1:")).count();
    eprintln!(
        "at the bridge: {real} alarm states of the real sim-1, 1 of sim-2 on its own prefix, \
         {forged_in} of 10 forged"
    );
    assert_eq!(forged_in, 0, "forged alarms reached the bridge: {got:?}");
    // An anonymous client is refused outright.
    let mut opts = rumqttc::MqttOptions::new("e2e-anon", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (_c, mut ev) = rumqttc::AsyncClient::new(opts, 10);
    let refused = tokio::time::timeout(Duration::from_secs(5), ev.poll()).await;
    assert!(
        matches!(&refused, Ok(Err(_))),
        "an anonymous client was let in: {refused:?}"
    );
}

/// Waits for an `agent/stats` report received from now on.
async fn fresh_stats(sub: &mut Subscriber) -> serde_json::Value {
    let since = Instant::now();
    sub.wait_for("agent/stats", Duration::from_secs(20), |m| {
        m.topic.ends_with("/agent/stats") && !m.payload.is_empty() && m.at >= since
    })
    .await
    .json()
}

/// Waits for a score published after `since`.
async fn scores_after(sub: &mut Subscriber, since: Instant, what: &str) {
    sub.wait_for(what, Duration::from_secs(20), |m| {
        m.topic.contains("/scores/") && m.at > since
    })
    .await;
}

/// Hostile retained rules documents on `lookout/rules`, each within the agent's 4 MiB
/// packet limit: 100,000 rules, JSON nested 100,000 deep, 4 MB of garbage. Each is
/// rejected as a whole with its reason on `rules/error`, memory stays bounded, and the
/// agent keeps scoring throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rules_documents_are_rejected_with_a_reason_and_the_agent_keeps_scoring() {
    let dir = scratch("hostile-rules");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/rules/error",
            "lookout/+/scores/#",
            "lookout/+/agent/stats",
        ],
    )
    .await;
    let args = sim_run_args(port, 1, 60, &["agent.stats_interval=1s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    let pid = agent.child.id();
    scores_after(&mut sub, Instant::now(), "a first score").await;
    let base_rss = rss_kib(pid);

    let many = format!("[{}{{}}]", "{},".repeat(99_999));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let garbage: String = (0..4_000_000u32)
        .map(|i| char::from(b'!' + (i.wrapping_mul(2_654_435_761) >> 26) as u8 % 90))
        .collect();
    let cases = [
        ("100,000 rules", many, "100000 rules; at most 10000"),
        ("nested 100,000 deep", deep, "recursion limit"),
        ("4 MB of garbage", garbage, "not JSON"),
    ];
    let mut peak = base_rss;
    for (name, doc, reason) in cases {
        let bytes = doc.len();
        let sent = Instant::now();
        publish_as(port, None, &[("lookout/rules".into(), doc)]).await;
        let err = sub
            .wait_for(name, Duration::from_secs(30), |m| {
                m.topic.ends_with("/rules/error") && m.at > sent && !m.payload.is_empty()
            })
            .await
            .json();
        peak = peak.max(rss_kib(pid));
        let message = err["error"].as_str().unwrap_or_default().to_owned();
        eprintln!("{name} ({bytes} bytes): rejected: {message}");
        assert!(message.contains(reason), "{name}: {err}");
        assert_eq!(err["rules"], 0, "no rules in force: {err}");
        scores_after(&mut sub, Instant::now(), "scores after a hostile document").await;
        peak = peak.max(rss_kib(pid));
    }
    eprintln!("agent RSS: {base_rss} KiB before, peak {peak} KiB");
    assert!(
        peak < base_rss + 64 * 1024,
        "RSS grew from {base_rss} to {peak} KiB"
    );
    let stats = fresh_stats(&mut sub).await;
    assert_eq!(
        stats["reconnects"], 0,
        "no document cost the connection: {stats}"
    );
}

/// A retained rules document of 50 MB on `lookout/rules` (mosquitto's default limit is
/// 256 MB): over the agent's 4 MiB packet limit, it ends the agent's connection once,
/// which is counted (`oversize`) and logged at error; the agent reconnects with its
/// subscriptions paused, so it is not thrown out again, keeps scoring, and every alarm
/// state it raises meanwhile arrives. Its memory does not take the 50 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_mb_retained_rules_document_costs_one_counted_reconnect_and_no_alarm() {
    let dir = scratch("hostile-50mb");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/scores/#",
            "lookout/+/agent/stats",
            "lookout/+/alarms/#",
        ],
    )
    .await;
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.extend(["agent.stats_interval=1s", "mqtt.reconnect_max=2s"]);
    let args = sim_run_args(port, 1, 60, &sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    let pid = agent.child.id();
    scores_after(&mut sub, Instant::now(), "a first score").await;
    let base_rss = rss_kib(pid);
    let doc = format!("[{}]", " ".repeat(50 << 20));
    let sent = Instant::now();
    publish_as(port, None, &[("lookout/rules".into(), doc)]).await;
    let raised_before = raised(&agent.log_text()).len();
    agent
        .wait_log("over the packet limit", Duration::from_secs(20))
        .await;
    let mut peak = base_rss;
    let mut scores_per_second = Vec::new();
    for _ in 0..15 {
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(pid));
        sub.drain();
        scores_per_second.push(
            sub.seen
                .iter()
                .filter(|m| m.topic.contains("/scores/") && m.at >= from)
                .count(),
        );
    }
    let want = raised(&agent.log_text());
    all_states_arrive(&mut sub, &want, Duration::from_secs(20)).await;
    let stats = fresh_stats(&mut sub).await;
    let log = agent.log_text();
    eprintln!(
        "oversize {}, reconnects {}; alarm states raised {} before the document, {} in all, \
         all arrived; scores per second after it {scores_per_second:?}; RSS {base_rss} KiB \
         before, peak {peak} KiB; {:?} from the publish to the end",
        stats["oversize"],
        stats["reconnects"],
        raised_before,
        want.len(),
        sent.elapsed()
    );
    assert_eq!(
        stats["oversize"], 1,
        "thrown out once, not again: {stats}\n{log}"
    );
    assert_eq!(stats["reconnects"], 1, "{stats}");
    assert_eq!(
        log.matches("over the packet limit on a subscribed topic")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("MQTT subscriptions paused"), "{log}");
    assert!(
        want.len() > raised_before,
        "no alarm state raised after the document; nothing tested"
    );
    assert!(
        scores_per_second.iter().all(|&n| n > 0),
        "scores per second: {scores_per_second:?}"
    );
    assert!(
        peak < base_rss + 16 * 1024,
        "RSS grew from {base_rss} to {peak} KiB"
    );
}

/// `(accepted, unmatched, late, over_cap, bad, inbox_dropped)` from the agent's last words
/// ("rules: events taken in this run").
fn events_taken(log: &str) -> [u64; 6] {
    let line = log
        .lines()
        .rfind(|l| l.contains("rules: events taken in this run"))
        .unwrap_or_else(|| panic!("no rules summary at shutdown:\n{log}"));
    let field = |key: &str| -> u64 {
        let at = line.find(&format!(" {key}=")).unwrap() + key.len() + 2;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    [
        "accepted",
        "unmatched",
        "late",
        "over_cap",
        "bad",
        "inbox_dropped",
    ]
    .map(field)
}

/// One client floods `lookout/ingest/#` at 10,000 messages a second for 5 s, then sends 5
/// payloads of 3.9 MB (under the 4 MiB packet limit, over the 256 KiB ingest limit): the
/// agent keeps scoring every second of it, each message is either taken (here: no rule
/// wants it, `unmatched`), bad (the large ones) or dropped and counted
/// (`inbox_dropped`), none unaccounted for, and its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ingest_messages_is_taken_or_counted_and_scoring_goes_on() {
    use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
    let dir = scratch("hostile-flood");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(port, &["lookout/+/scores/#", "lookout/+/agent/stats"]).await;
    let args = sim_run_args(
        port,
        1,
        60,
        &["agent.stats_interval=1s", "ingest.enabled=true"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent(&args, dir.path());
    let pid = agent.child.id();
    scores_after(&mut sub, Instant::now(), "a first score").await;
    agent.wait_log("rules ready", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_rss = rss_kib(pid);

    let mut opts = MqttOptions::new("e2e-flooder", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let poller = tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    });
    const RATE: usize = 10_000;
    const SECONDS: usize = 5;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut peak = base_rss;
    let mut score_seconds = Vec::new();
    for second in 0..SECONDS {
        let slice_start = Instant::now();
        for ms in 0..100 {
            for _ in 0..RATE / 100 {
                let payload = format!(r#"{{"metric": "temp", "value": {}}}"#, sent % 50);
                client
                    .publish(
                        format!("lookout/ingest/dev-{}", sent % 20),
                        QoS::AtMostOnce,
                        false,
                        payload,
                    )
                    .await
                    .unwrap();
                sent += 1;
            }
            let due = slice_start + Duration::from_millis(10 * (ms + 1));
            tokio::time::sleep_until(due.into()).await;
        }
        sub.drain();
        let from = started + Duration::from_secs(second as u64);
        score_seconds.push(
            sub.seen
                .iter()
                .filter(|m| m.topic.contains("/scores/") && m.at >= from)
                .count(),
        );
        peak = peak.max(rss_kib(pid));
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let big = "x".repeat(3_900_000);
    for i in 0..5 {
        client
            .publish(
                format!("lookout/ingest/big-{i}"),
                QoS::AtMostOnce,
                false,
                big.clone(),
            )
            .await
            .unwrap();
        sent += 1;
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), poller).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(pid));
    }
    let after = Instant::now();
    scores_after(&mut sub, after, "a score after the flood").await;
    let stats = fresh_stats(&mut sub).await;
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0));
    let [accepted, unmatched, late, over_cap, bad, dropped] = events_taken(&agent.log_text());
    eprintln!(
        "sent {sent} ({:.0}/s over {flood_secs:.1} s); taken: unmatched {unmatched}, bad {bad}, \
         inbox_dropped {dropped}; scores per second during the flood {score_seconds:?}; \
         RSS {base_rss} KiB before, peak {peak} KiB; last stats inbox_dropped {}",
        (sent - 5) as f64 / flood_secs,
        stats["inbox_dropped"]
    );
    assert!(
        (sent - 5) as f64 / flood_secs >= 0.8 * RATE as f64,
        "the flood reached only {:.0}/s",
        (sent - 5) as f64 / flood_secs
    );
    assert_eq!((accepted, late, over_cap), (0, 0, 0));
    assert_eq!(bad, 5, "the 3.9 MB messages are bad events");
    assert_eq!(
        unmatched + bad + dropped,
        sent as u64,
        "every message taken or counted as dropped"
    );
    assert!(
        score_seconds.iter().all(|&n| n >= 10),
        "scores per second during the flood: {score_seconds:?}"
    );
    assert!(
        peak < base_rss + 64 * 1024,
        "RSS grew from {base_rss} to {peak} KiB"
    );
}

/// An MQTT 3.1.1 packet: `kind` (type and flags), then `body` with its remaining length.
fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn mqtt_str(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A QoS 0 PUBLISH with raw topic bytes (which no MQTT library lets one get wrong).
fn raw_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// A raw TCP client writes PUBLISHes with topics that are not UTF-8 (`0xff 0xfe`, and a
/// lone surrogate's bytes) to the agent's embedded rumqttd, after one good one: the broker
/// closes that client's connection, the bad messages never reach the agent, and the agent
/// goes on scoring; its rules count exactly the one good event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_are_not_utf8_cost_the_sender_its_connection_and_the_agent_nothing() {
    let dir = scratch("hostile-utf8");
    let port = free_port();
    let mut agent = agent(
        &[
            "run",
            "--config",
            "configs/agent.toml",
            "--simulate",
            "1",
            "--speed",
            "60",
            "--set",
            &format!("broker.listen=127.0.0.1:{port}"),
            "--set",
            &format!("mqtt.url=mqtt://127.0.0.1:{port}"),
            "--set",
            "ingest.enabled=true",
            "--set",
            "agent.stats_interval=1s",
        ],
        dir.path(),
    );
    wait_for_port(port, Duration::from_secs(20));
    let mut sub = Subscriber::connect(port, &["lookout/+/scores/#", "lookout/+/agent/stats"]).await;
    scores_after(&mut sub, Instant::now(), "a first score").await;
    agent.wait_log("rules ready", Duration::from_secs(10)).await;

    let mut closed = 0;
    for bad_topic in [
        &b"lookout/ingest/\xff\xfe"[..],
        &b"lookout/ingest/\xed\xa0\x80"[..],
    ] {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut connect = mqtt_str(b"MQTT");
        connect.extend_from_slice(&[4, 0x02, 0, 30]);
        connect.extend_from_slice(&mqtt_str(format!("e2e-raw-{closed}").as_bytes()));
        sock.write_all(&packet(0x10, &connect)).await.unwrap();
        let mut connack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut connack))
            .await
            .expect("CONNACK in time")
            .unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "connection accepted");
        let good = br#"{"metric": "temp", "value": 1}"#;
        sock.write_all(&raw_publish(b"lookout/ingest/dev-ok", good))
            .await
            .unwrap();
        sock.write_all(&raw_publish(bad_topic, good)).await.unwrap();
        // The broker answers the bad topic by closing the connection.
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(Ok(0)) | Ok(Err(_))),
            "the connection stays open after a topic that is not UTF-8: {end:?}"
        );
        closed += 1;
    }
    scores_after(&mut sub, Instant::now(), "a score after the bad topics").await;
    let stats = fresh_stats(&mut sub).await;
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0));
    let [accepted, unmatched, _, _, bad, dropped] = events_taken(&agent.log_text());
    eprintln!(
        "{closed} connections closed by the broker; the agent took {unmatched} good events, \
         {bad} bad; stats reconnects {}",
        stats["reconnects"]
    );
    assert_eq!((accepted, unmatched, bad, dropped), (0, 2, 0, 0));
    assert_eq!(
        stats["reconnects"], 0,
        "the agent's own connection was untouched"
    );
}
