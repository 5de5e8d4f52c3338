//! End-to-end: threshold rules in the running `lookout-agent`, against a real mosquitto:
//! events published on `lookout/ingest/...`, rules from a watched file and from retained
//! MQTT messages, alarms observed by an ordinary subscriber.
//!
//! The engine windows by event time and the agent closes windows on its wall clock every
//! tick, so these tests use short windows (a test copy of the seed's rule with `"window":
//! "4s"`, rules of 2 s elsewhere), a 200 ms tick, and events stamped at or near the time
//! they are sent: a window closes a tick after its end, with nothing more to publish.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};

const HOST: &str = "rules-box";
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    lookout_shared::time::now_ms()
}

/// The agent on this host, publishing to mosquitto on `port`, with ingest on, a 200 ms
/// tick, and `rules_file` if given.
fn start_agent(port: u16, dir: &Path, rules_file: Option<&Path>) -> Proc {
    let mut args: Vec<String> = [
        "run",
        "--config",
        "configs/agent.toml",
        "--set",
        "broker.enabled=false",
        "--set",
        &format!("mqtt.url=mqtt://127.0.0.1:{port}"),
        "--set",
        &format!("agent.host={HOST}"),
        "--set",
        "agent.interval=200ms",
        "--set",
        "ingest.enabled=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(f) = rules_file {
        args.push("--set".into());
        args.push(format!("rules.file={}", f.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    agent(&args, dir)
}

async fn wait_online(sub: &mut Subscriber) {
    let topic = format!("lookout/{HOST}/status");
    sub.wait_for("the agent online (and subscribed)", WAIT, |m| {
        m.topic == topic && m.text() == "online"
    })
    .await;
}

fn alarm_topic(name: &str) -> String {
    format!("lookout/{HOST}/alarms/{name}")
}

/// Waits for a state of the rule alarm `name` (`rule/<id>/<device>...`).
async fn wait_alarm(sub: &mut Subscriber, name: &str, state: &str) -> Value {
    let topic = alarm_topic(name);
    sub.wait_for(&format!("{state} on {topic}"), WAIT, |m| {
        m.topic == topic && !m.payload.is_empty() && m.json()["state"] == state
    })
    .await
    .json()
}

/// A rule on `temp` of the `sensor-*` devices, with a 2 s window.
fn temp_rule(id: &str, operator: &str, value: f64) -> Value {
    json!({"ruleId": id, "deviceId": "sensor-*", "metricName": "temp", "alertName": format!("{id} alert"),
           "operator": operator, "value": value, "window": "2s"})
}

/// Replaces the file at once (write, then rename), as editors and config tools do.
fn write_rules(path: &Path, doc: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn temp_event(device: &str, value: f64) -> (String, String, bool) {
    (
        format!("lookout/ingest/{device}"),
        json!({"metric": "temp", "value": value}).to_string(),
        false,
    )
}

/// Publishes `{"metric": "temp", "value": value}` to `lookout/ingest/<device>` every
/// 250 ms (at arrival time, so every window has some) until dropped.
struct Feeder(tokio::task::JoinHandle<()>);

impl Feeder {
    fn start(port: u16, device: &str, value: f64) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "e2e-feed-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (topic, payload, _) = temp_event(device, value);
        Self(tokio::spawn(async move {
            let (client, mut eventloop) =
                AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
            let connection = async {
                loop {
                    if eventloop.poll().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let readings = async {
                loop {
                    let _ = client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                        .await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            tokio::join!(connection, readings);
        }))
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn label_f64(alarm: &Value, key: &str) -> f64 {
    alarm["labels"][key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("label {key} is not a number: {alarm}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_events_through_ingest_raise_one_alarm_for_n024_and_none_for_n014() {
    let dir = scratch("rules-seed");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());

    // The seed's rule with a 4 s window, so that the test does not wait a minute.
    const W: i64 = 4_000;
    let root = repo_root();
    let mut rules: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("configs/examples/rules.json")).unwrap(),
    )
    .unwrap();
    for r in rules.as_array_mut().unwrap() {
        r["window"] = json!("4s");
    }
    let rules_path = dir.path().join("rules.json");
    write_rules(&rules_path, &rules);
    let text = std::fs::read_to_string(root.join("configs/examples/events.json")).unwrap();
    let mut events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 3);

    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let agent = start_agent(port, dir.path(), Some(&rules_path));
    wait_online(&mut sub).await;

    // The seed's three events keep their order and shape; their times move to the start of
    // the current window (the engine takes an event older than its open window as late),
    // early enough in it that all three land in the same window.
    let now = loop {
        let now = now_ms();
        if (300..1_500).contains(&now.rem_euclid(W)) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let start = now - now.rem_euclid(W);
    for (i, e) in events.iter_mut().enumerate() {
        e["eventTime"] = json!(lookout_agent::rules::format_rfc3339_ms(
            start + 100 * (i as i64 + 1)
        ));
    }
    publish(
        port,
        events
            .iter()
            .map(|e| ("lookout/ingest/978648".to_owned(), e.to_string(), false))
            .collect(),
    )
    .await;

    let name = "rule/1234/978648/dim2=N024";
    let a = wait_alarm(&mut sub, name, "firing").await;
    let end = start + W;
    assert_eq!(a["id"], format!("{HOST}:{name}:{end}"), "{a}");
    assert_eq!(a["host"], HOST);
    assert_eq!(a["source"], "rule/1234");
    assert_eq!(
        (a["started_at"].as_i64(), a["ts"].as_i64()),
        (Some(end), Some(end))
    );
    assert_eq!(a["score"].as_f64(), Some(96.5), "{a}");
    assert_eq!(a["threshold"].as_f64(), Some(90.0), "{a}");
    assert_eq!(label_f64(&a, "avg"), 96.5);
    assert_eq!(label_f64(&a, "min"), 95.0);
    assert_eq!(label_f64(&a, "max"), 98.0);
    assert_eq!(label_f64(&a, "count"), 2.0);
    assert_eq!(a["labels"]["dim2"], "N024");
    assert_eq!(a["labels"]["deviceid"], "978648");
    assert_eq!(a["labels"]["ruleid"], "1234");
    assert_eq!(a["labels"]["alert"], "hot node AVG CPU over 90");
    assert!((1..=4).contains(&a["severity"].as_u64().unwrap()), "{a}");

    // The next window has no N024 event: the same alarm resolves.
    let r = wait_alarm(&mut sub, name, "resolved").await;
    assert_eq!(r["id"], a["id"]);
    assert_eq!(r["labels"]["cause"], "no_data");
    assert_eq!(r["ts"].as_i64(), Some(end + W));

    // Exactly one rule alarm episode, and nothing about N014 (average 80 < 90).
    sub.drain();
    let rule_msgs: Vec<&Msg> = sub
        .seen
        .iter()
        .filter(|m| m.topic.starts_with(&format!("lookout/{HOST}/alarms/rule/")))
        .collect();
    assert!(
        rule_msgs.iter().all(|m| m.topic == alarm_topic(name)),
        "{:?}",
        rule_msgs.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    let firing = rule_msgs
        .iter()
        .filter(|m| m.json()["state"] == "firing")
        .count();
    assert_eq!(firing, 1);
    assert!(
        !sub.seen
            .iter()
            .any(|m| !m.topic.starts_with("lookout/ingest/") && m.text().contains("N014")),
        "nothing but the events themselves mentions N014"
    );

    // Retained, and published again after the broker restarts empty (no persistence),
    // exactly as a model's alarm.
    let mut late = Subscriber::connect(port, &[&alarm_topic(name)]).await;
    let m = late
        .wait_for("the retained resolved state", WAIT, |m| m.retain)
        .await;
    assert_eq!(m.json()["state"], "resolved");
    drop(late);
    broker.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _broker = mosquitto(port, dir.path());
    // The new broker starts empty: whatever arrives on the topic is the agent's re-send
    // (live if it comes after this subscription, retained if before).
    let mut fresh = Subscriber::connect(port, &[&alarm_topic(name)]).await;
    let m = fresh
        .wait_for(
            "the rule alarm's state after the broker restart",
            Duration::from_secs(45),
            |_| true,
        )
        .await;
    assert_eq!(m.json()["id"], a["id"]);
    assert_eq!(m.json()["state"], "resolved");
    let mut newcomer = Subscriber::connect(port, &[&alarm_topic(name)]).await;
    let m = newcomer
        .wait_for("the state retained again", WAIT, |m| m.retain)
        .await;
    assert_eq!(m.json()["id"], a["id"]);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rules_file_takes_effect_without_restart_and_an_invalid_one_is_rejected() {
    let dir = scratch("rules-file");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let path = dir.path().join("rules.json");
    let v1 = json!([temp_rule("hot", "AVGGREATEROREQUAL", 50.0)]);
    write_rules(&path, &v1);
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let mut agent = start_agent(port, dir.path(), Some(&path));
    wait_online(&mut sub).await;

    let _feed = Feeder::start(port, "sensor-1", 60.0);
    let a = wait_alarm(&mut sub, "rule/hot/sensor-1", "firing").await;
    assert_eq!(label_f64(&a, "avg"), 60.0);
    assert_eq!(a["threshold"].as_f64(), Some(50.0));

    // A new version: `hot` now needs 70 (its window and alarm carry on), `cold` is new.
    write_rules(
        &path,
        &json!([
            temp_rule("hot", "AVGGREATEROREQUAL", 70.0),
            temp_rule("cold", "AVGEQUALORLESS", 10.0)
        ]),
    );
    let r = wait_alarm(&mut sub, "rule/hot/sensor-1", "resolved").await;
    assert_eq!(r["id"], a["id"], "the same episode ends");
    assert_eq!(r["labels"]["cause"], "no_longer_matches", "{r}");
    assert_eq!(r["threshold"].as_f64(), Some(70.0));
    assert_eq!(r["score"].as_f64(), Some(60.0));
    publish(port, vec![temp_event("sensor-2", 5.0)]).await;
    let c = wait_alarm(&mut sub, "rule/cold/sensor-2", "firing").await;
    assert_eq!(label_f64(&c, "max"), 5.0);

    // An invalid version is rejected as a whole and said so on the error topic; the
    // previous rules (with `cold`) stay in force.
    let bad = json!([{"ruleId": "hot", "deviceId": "sensor-*", "metricName": "temp",
                      "alertName": "x", "operator": "AVGMORE", "value": 1}]);
    write_rules(&path, &bad);
    let error_topic = format!("lookout/{HOST}/rules/error");
    let e = sub
        .wait_for("the rejection", WAIT, |m| {
            m.topic == error_topic && !m.payload.is_empty()
        })
        .await
        .json();
    let shown = path.display().to_string();
    assert_eq!(e["origin"], shown, "{e}");
    assert_eq!(e["in_force"], shown, "{e}");
    assert_eq!(e["rules"], 2, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("rules[0] (ruleId \"hot\"): operator: \"AVGMORE\" is not an operator"),
        "{msg}"
    );
    assert!(agent.log_text().contains("rules document rejected"));
    publish(port, vec![temp_event("sensor-3", 4.0)]).await;
    wait_alarm(&mut sub, "rule/cold/sensor-3", "firing").await;
    let mut late = Subscriber::connect(port, &[&error_topic]).await;
    let m = late
        .wait_for("the retained rejection", WAIT, |m| m.retain)
        .await;
    assert_eq!(m.json()["error"], e["error"]);

    // Bad events are counted and skipped, logged, and nothing else changes.
    publish(
        port,
        vec![
            ("lookout/ingest/sensor-9".into(), "not json".into(), false),
            (
                "lookout/ingest/sensor-9".into(),
                r#"{"metric": "temp"}"#.into(),
                false,
            ),
        ],
    )
    .await;
    agent.wait_log("bad ingest event skipped", WAIT).await;

    // A valid version again empties the error topic.
    sub.drain();
    sub.seen.clear();
    write_rules(&path, &v1);
    sub.wait_for("the rejection withdrawn", WAIT, |m| {
        m.topic == error_topic && m.payload.is_empty()
    })
    .await;
    let code = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", agent.log_text());
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("rules: events taken") && l.contains("bad=2")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_rules_messages_replace_the_rules_host_first_and_empty_ones_remove_them() {
    let dir = scratch("rules-mqtt");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let path = dir.path().join("rules.json");
    write_rules(
        &path,
        &json!([temp_rule("file", "AVGGREATEROREQUAL", 50.0)]),
    );
    let fleet_topic = "lookout/rules".to_owned();
    let host_topic = format!("lookout/{HOST}/rules");
    let error_topic = format!("lookout/{HOST}/rules/error");

    // The fleet's document is retained before the agent starts: it finds it on subscribing.
    let fleet = json!([temp_rule("fleet", "AVGGREATEROREQUAL", 50.0)]);
    publish(port, vec![(fleet_topic.clone(), fleet.to_string(), true)]).await;
    let mut sub = Subscriber::connect(port, &["lookout/#"]).await;
    let agent = start_agent(port, dir.path(), Some(&path));
    wait_online(&mut sub).await;
    let _feed = Feeder::start(port, "sensor-1", 60.0);
    let f = wait_alarm(&mut sub, "rule/fleet/sensor-1", "firing").await;
    assert_eq!(label_f64(&f, "avg"), 60.0);

    // The host's own document wins over the fleet's.
    let host = json!([temp_rule("host", "AVGGREATEROREQUAL", 50.0)]);
    publish(port, vec![(host_topic.clone(), host.to_string(), true)]).await;
    let r = wait_alarm(&mut sub, "rule/fleet/sensor-1", "resolved").await;
    assert_eq!(r["labels"]["cause"], "rule_removed");
    wait_alarm(&mut sub, "rule/host/sensor-1", "firing").await;

    // An invalid host document: rejected, published, and the host's rules stay.
    publish(
        port,
        vec![(host_topic.clone(), r#"[{"ruleId": "host"}]"#.into(), true)],
    )
    .await;
    let e = sub
        .wait_for("the rejection", WAIT, |m| {
            m.topic == error_topic && !m.payload.is_empty()
        })
        .await
        .json();
    assert_eq!(e["origin"], host_topic);
    assert_eq!(e["in_force"], host_topic);
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "{host_topic}: rules[0] (ruleId \"host\"): deviceId: missing"
        )),
        "{msg}"
    );
    publish(port, vec![temp_event("sensor-2", 60.0)]).await;
    wait_alarm(&mut sub, "rule/host/sensor-2", "firing").await;

    // An empty retained message removes the host's document: the fleet's applies again,
    // and the host's rejection is withdrawn with it.
    sub.drain();
    sub.seen.clear();
    publish(port, vec![(host_topic.clone(), String::new(), true)]).await;
    sub.wait_for("the rejection withdrawn", WAIT, |m| {
        m.topic == error_topic && m.payload.is_empty()
    })
    .await;
    let r = wait_alarm(&mut sub, "rule/host/sensor-1", "resolved").await;
    assert_eq!(r["labels"]["cause"], "rule_removed");
    wait_alarm(&mut sub, "rule/fleet/sensor-1", "firing").await;

    // Without the fleet's, the file's.
    publish(port, vec![(fleet_topic.clone(), String::new(), true)]).await;
    sub.wait_for("the fleet rule removed", WAIT, |m| {
        m.topic == alarm_topic("rule/fleet/sensor-1")
            && !m.payload.is_empty()
            && m.json()["labels"]["cause"] == "rule_removed"
    })
    .await;
    wait_alarm(&mut sub, "rule/file/sensor-1", "firing").await;
    assert!(
        agent.log_text().contains("rules document removed"),
        "{}",
        agent.log_text()
    );
}
