//! End-to-end reliability and security of the bridge (issue 7): the real binary against
//! a real mosquitto on free loopback ports, every wait bounded.
//!
//! - `kill -9` mid-stream, then a restart: each notification exactly once at a file target.
//! - SIGTERM: acks and the notification log flushed, exit 0; retained alarm states are not
//!   notified again by the next bridge.
//! - TLS and mutual TLS with certificates made here (rcgen); a wrong CA, a wrong host name
//!   and a missing client certificate refused with a clear log line.
//! - A flood of 10,000 malformed messages: counted, and good alarms still arrive.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A bridge config: `lookout/+/alarms/#` to a file target `out-<name>.log`, its own state
/// directory, `mqtt_extra` inside `[mqtt]` and `extra` at the end.
fn config(dir: &Path, name: &str, url: &str, mqtt_extra: &str, extra: &str) -> PathBuf {
    let cfg = dir.join(format!("bridge-{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "{name}"
stats_interval = "1s"
state_dir = "{state}"

[mqtt]
url = "{url}"
topics = ["lookout/+/alarms/#"]
{mqtt_extra}

[delivery]
dead_letter = "{dead}"
backoff_min = "50ms"

[targets.out]
type = "file"
path = "{out}"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["out"]
{extra}
"#,
            state = dir.join(format!("state-{name}")).display(),
            dead = dir.join(format!("dead-{name}.jsonl")).display(),
            out = out(dir, name).display(),
        ),
    )
    .unwrap();
    cfg
}

fn out(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("out-{name}.log"))
}

async fn wait_lines(path: &Path, n: usize, timeout: Duration, bridge: &Proc) {
    let deadline = Instant::now() + timeout;
    while lines(path).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines in {} after {timeout:?}; log:\n{}",
            lines(path).len(),
            path.display(),
            tail(&bridge.log_text())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn alarm(id: &str, state: &str, retain: bool) -> (String, String, bool) {
    let a = serde_json::json!({
        "id": id, "host": "h", "source": "cpu", "state": state, "severity": 2,
        "ts": 1, "started_at": 1, "score": 3.0, "threshold": 2.0, "summary": "test", "labels": {}
    });
    // One topic per alarm, as the agent's retained states are: a broker keeps one
    // retained message per topic.
    let topic = format!("lookout/h/alarms/{}", id.replace(':', "-"));
    (topic, a.to_string(), retain)
}

/// Each id's number of notifications in the file.
fn counts(path: &Path) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for a in lines(path) {
        *c.entry(a["id"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    c
}

/// Publishes `msgs` at QoS 1 as one continuous stream (the event loop polled alongside),
/// and returns when the broker has acknowledged them all.
async fn stream(port: u16, msgs: Vec<(String, String, bool)>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(format!("e2e-stream-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let total = msgs.len();
    let acks = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => n += 1,
                Ok(_) => {}
                Err(e) => panic!("stream publisher: {e}"),
            }
        }
    });
    for (topic, payload, retain) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), acks)
        .await
        .expect("the broker acknowledged the stream within 60 s")
        .unwrap();
}

fn run(cfg: &Path, dir: &Path) -> Proc {
    bridge(&["run", "--config", cfg.to_str().unwrap()], dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_with_sigkill_mid_stream_notifies_each_alarm_exactly_once_after_restart() {
    let dir = scratch("bridge-kill");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let cfg = config(dir.path(), "k", &format!("mqtt://127.0.0.1:{port}"), "", "");
    let out = out(dir.path(), "k");

    // Alarm states the agent keeps retained: the next bridge gets them again on subscribe.
    const R: usize = 20;
    publish(
        port,
        (0..R)
            .map(|i| alarm(&format!("r:{i}"), "firing", true))
            .collect(),
    )
    .await;
    let mut first = run(&cfg, dir.path());
    first.wait_log("subscribed", Duration::from_secs(20)).await;
    wait_lines(&out, R, Duration::from_secs(20), &first).await;

    // A stream of 3,000 alarms without pause; SIGKILL once a fifth has been notified, so
    // the bridge is busy (messages in its queue, in flight to the file) when it dies.
    const N: usize = 3000;
    let stream = tokio::spawn(stream(
        port,
        (0..N)
            .map(|i| alarm(&format!("a:{i}"), "firing", false))
            .collect(),
    ));
    wait_lines(&out, R + N / 5, Duration::from_secs(30), &first).await;
    first.kill();
    let at_kill = lines(&out).len();
    // The broker keeps the rest for the bridge's persistent session meanwhile.
    tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("publishing took over 60 s")
        .unwrap();
    assert!(at_kill < R + N, "the kill came after the stream ended");

    let mut second = run(&cfg, dir.path());
    wait_lines(&out, R + N, Duration::from_secs(60), &second).await;
    // Late duplicates would come within this.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = counts(&out);
    let twice: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "notified more than once: {twice:?}");
    assert_eq!(c.len(), R + N, "every alarm notified");
    let log = second.log_text();
    assert!(log.contains("notification log loaded"), "{}", tail(&log));
    assert_eq!(second.terminate(Duration::from_secs(15)), Some(0));
    let loaded = log
        .lines()
        .find(|l| l.contains("notification log loaded"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "killed after {at_kill} of {} notifications; all arrived exactly once; in-flight line \
         found written: {}; restart: {loaded}",
        R + N,
        log.contains("not sending it again")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_notification_log_and_exits_0_and_retained_alarms_stay_notified_once() {
    let dir = scratch("bridge-term");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let cfg = config(dir.path(), "t", &format!("mqtt://127.0.0.1:{port}"), "", "");
    let out = out(dir.path(), "t");
    const R: usize = 10;
    publish(
        port,
        (0..R)
            .map(|i| alarm(&format!("r:{i}"), "firing", true))
            .collect(),
    )
    .await;
    let mut first = run(&cfg, dir.path());
    wait_lines(&out, R, Duration::from_secs(20), &first).await;
    assert_eq!(
        first.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        tail(&first.log_text())
    );
    assert!(first.log_text().contains("stopped"));
    let state = std::fs::read(dir.path().join("state-t/notifications.v1.log")).unwrap();
    assert!(
        !state.is_empty() && state.ends_with(b"\n"),
        "the log ends with a whole record"
    );

    let mut stats = Subscriber::connect(port, &["lookout/bridge/t/stats"]).await;
    let mut second = run(&cfg, dir.path());
    second.wait_log("subscribed", Duration::from_secs(20)).await;
    publish(port, vec![alarm("new:1", "firing", false)]).await;
    wait_lines(&out, R + 1, Duration::from_secs(20), &second).await;
    // The retained states came again on subscribing and were recognised.
    let s = stats
        .wait_for("stats of the second bridge", Duration::from_secs(10), |m| {
            m.json()["received"].as_u64() >= Some(R as u64 + 1)
        })
        .await
        .json();
    assert_eq!(s["deduplicated"], R as u64, "{s}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = counts(&out);
    assert_eq!(c.len(), R + 1);
    assert!(c.values().all(|n| *n == 1), "{c:?}");
    assert_eq!(second.terminate(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_connect_over_tls_and_mutual_tls_and_refuse_a_wrong_ca_or_host_name() {
    let dir = scratch("bridge-tls");
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
    let password = "hunter2-from-a-file";
    std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
    let client_keys = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );

    // Over TLS, trusting the test CA.
    let ok_tls = config(
        d,
        "tls",
        &format!("mqtts://localhost:{tls}"),
        &format!("ca_file = {:?}", p("ca.pem")),
        "",
    );
    // Over mutual TLS with a login, and republishing over mutual TLS with an mqtt target.
    let ok_mtls = config(
        d,
        "mtls",
        &format!("mqtts://localhost:{mtls}"),
        &format!(
            "{client_keys}\nusername = \"bridge\"\npassword_file = {:?}",
            p("password")
        ),
        &format!(
            "\n[targets.upstream]\ntype = \"mqtt\"\nurl = \"mqtts://localhost:{mtls}\"\n\
             topic = \"site-a/{{topic}}\"\n{client_keys}\n\n\
             [[routes]]\ntopic = \"lookout/+/alarms/#\"\ntargets = [\"upstream\"]\n"
        ),
    );
    let wrong_ca = config(
        d,
        "wrong-ca",
        &format!("mqtts://localhost:{tls}"),
        &format!("ca_file = {:?}", p("other-ca.pem")),
        "",
    );
    // The certificate names localhost, not 127.0.0.1.
    let wrong_host = config(
        d,
        "wrong-host",
        &format!("mqtts://127.0.0.1:{tls}"),
        &format!("ca_file = {:?}", p("ca.pem")),
        "",
    );
    let no_client_cert = config(
        d,
        "no-client-cert",
        &format!("mqtts://localhost:{mtls}"),
        &format!("ca_file = {:?}", p("ca.pem")),
        "",
    );
    let insecure = config(
        d,
        "insecure",
        &format!("mqtts://127.0.0.1:{tls}"),
        "insecure_skip_verify = true",
        "",
    );

    let mut upstream = Subscriber::connect(plain, &["site-a/#"]).await;
    let bridges: Vec<(&str, Proc)> = [
        ("tls", &ok_tls),
        ("mtls", &ok_mtls),
        ("wrong-ca", &wrong_ca),
        ("wrong-host", &wrong_host),
        ("no-client-cert", &no_client_cert),
        ("insecure", &insecure),
    ]
    .into_iter()
    .map(|(name, cfg)| (name, run(cfg, d)))
    .collect();
    let by_name = |n: &str| &bridges.iter().find(|(name, _)| *name == n).unwrap().1;
    for name in ["tls", "mtls", "insecure"] {
        by_name(name)
            .wait_log("subscribed", Duration::from_secs(20))
            .await;
    }
    by_name("wrong-ca")
        .wait_log("MQTT TLS connection refused", Duration::from_secs(20))
        .await;
    by_name("wrong-host")
        .wait_log("MQTT TLS connection refused", Duration::from_secs(20))
        .await;

    publish(plain, vec![alarm("tls:1", "firing", false)]).await;
    for name in ["tls", "mtls", "insecure"] {
        wait_lines(&out(d, name), 1, Duration::from_secs(20), by_name(name)).await;
    }
    let m = upstream
        .wait_for("the mqtt target's copy", Duration::from_secs(20), |m| {
            m.topic == "site-a/lookout/h/alarms/tls-1"
        })
        .await;
    assert_eq!(m.json()["id"], "tls:1");

    let log = by_name("wrong-ca").log_text();
    assert!(log.contains("UnknownIssuer"), "{}", tail(&log));
    assert!(
        log.contains("not signed by a CA in ca_file"),
        "{}",
        tail(&log)
    );
    let log = by_name("wrong-host").log_text();
    assert!(
        log.contains("does not hold the host name"),
        "{}",
        tail(&log)
    );
    let log = by_name("no-client-cert").log_text();
    assert!(
        log.contains("MQTT TLS connection refused") || log.contains("MQTT connection failed"),
        "{}",
        tail(&log)
    );
    assert!(
        by_name("insecure")
            .log_text()
            .contains("TLS CERTIFICATE VERIFICATION IS OFF")
    );
    for name in ["wrong-ca", "wrong-host", "no-client-cert"] {
        let log = by_name(name).log_text();
        assert!(!log.contains("subscribed"), "{name} connected:\n{log}");
        assert!(lines(&out(d, name)).is_empty(), "{name} delivered");
    }
    for (name, b) in &bridges {
        assert!(
            !b.log_text().contains(password),
            "{name} logged the password"
        );
    }

    // check-config shows the TLS setup, never the password; a missing file is exit 2.
    let check = |cfg: &Path| {
        std::process::Command::new(bridge_bin())
            .args(["check-config", "--config"])
            .arg(cfg)
            .output()
            .unwrap()
    };
    let o = check(&ok_mtls);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(stdout.contains("mqtts://localhost"), "{stdout}");
    assert!(stdout.contains("password <redacted>"), "{stdout}");
    assert!(!stdout.contains(password) && !String::from_utf8_lossy(&o.stderr).contains(password));
    let missing = config(
        d,
        "missing",
        &format!("mqtts://localhost:{tls}"),
        &format!("ca_file = {:?}", p("nope/ca.pem")),
        "",
    );
    let o = check(&missing);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mqtt.ca_file"), "{stderr}");
    assert!(stderr.contains("nope/ca.pem"), "{stderr}");
    let o = check(&insecure);
    assert!(String::from_utf8_lossy(&o.stdout).contains("verify OFF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ten_thousand_malformed_messages_is_counted_and_good_alarms_still_arrive() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = scratch("bridge-flood");
    let d = dir.path();
    let port = free_port();
    let _broker = mosquitto(port, d);
    let noise = d.join("noise.log");
    let cfg = config(
        d,
        "f",
        &format!("mqtt://127.0.0.1:{port}"),
        "topics = [\"lookout/+/alarms/#\", \"lookout/+/noise/#\"]",
        &format!(
            "max_topic_length = 200\n\n\
             [targets.noise]\ntype = \"file\"\npath = {:?}\n\n\
             [[routes]]\ntopic = \"lookout/+/noise/#\"\ntargets = [\"noise\"]\n\
             rate_limit = 20\nrate_burst = 20\n",
            noise.display().to_string()
        ),
    );
    // `topics` is set twice (the default line and ours): keep ours.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "topics = [\"lookout/+/alarms/#\"]\n",
        "",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let mut bridge = run(&cfg, d);
    bridge.wait_log("subscribed", Duration::from_secs(20)).await;
    let mut stats = Subscriber::connect(port, &["lookout/bridge/f/stats"]).await;

    // 10,000 malformed: 1 MiB payloads, bytes that are not UTF-8, broken JSON; then 50
    // alarms on over-long topics and 300 messages on the rate-limited route.
    const BAD: usize = 10_000;
    let mut opts = MqttOptions::new("e2e-flood", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = BAD + 50 + 300;
    let acks = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => n += 1,
                Ok(_) => {}
                Err(e) => panic!("flood publisher: {e}"),
            }
        }
    });
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let topic = "lookout/h/alarms/cpu";
    for i in 0..BAD {
        let payload: Vec<u8> = match i % 100 {
            0 => vec![b'{'; 1 << 20],
            k if k % 2 == 0 => {
                let len = (next() % 300) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                b.insert(0, 0xff); // never UTF-8
                b
            }
            _ => {
                let full = alarm(&format!("bad:{i}"), "firing", false).1;
                let cut = 1 + (next() as usize) % (full.len() - 2);
                full.as_bytes()[..cut].to_vec() // '{' then cut short: broken JSON
            }
        };
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let long_topic = format!("lookout/h/alarms/{}", "x".repeat(300));
    for i in 0..50 {
        client
            .publish(
                long_topic.clone(),
                QoS::AtLeastOnce,
                false,
                alarm(&format!("long:{i}"), "firing", false).1,
            )
            .await
            .unwrap();
    }
    for i in 0..300 {
        client
            .publish(
                "lookout/h/noise/fan",
                QoS::AtLeastOnce,
                false,
                format!("{{\"rpm\": {i}}}"),
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), acks)
        .await
        .expect("the broker took the flood within 120 s")
        .unwrap();

    // Good alarms after the flood still arrive.
    publish(
        port,
        (0..10)
            .map(|i| alarm(&format!("good:{i}"), "firing", false))
            .collect(),
    )
    .await;
    wait_lines(&out(d, "f"), 10, Duration::from_secs(60), &bridge).await;
    let got: Vec<String> = lines(&out(d, "f"))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        (0..10).map(|i| format!("good:{i}")).collect::<Vec<_>>()
    );
    let delivered = |s: &Value, name: &str| {
        s["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .and_then(|t| t["delivered"].as_u64())
            .unwrap_or(0)
    };
    let s = stats
        .wait_for("stats counting the flood", Duration::from_secs(20), |m| {
            let s = m.json();
            s["invalid"] == BAD as u64
                && delivered(&s, "out") == 10
                && delivered(&s, "noise") + s["routes"][1]["rate_limited"].as_u64().unwrap_or(0)
                    == 300
        })
        .await
        .json();
    assert_eq!(s["routes"][0]["topic_too_long"], 50, "{s}");
    let limited = s["routes"][1]["rate_limited"].as_u64().unwrap();
    let noisy = lines(&noise).len() as u64;
    assert!(limited > 0 && noisy > 0, "{s}");
    assert_eq!(limited + noisy, 300, "every noise message counted: {s}");
    let log = bridge.log_text();
    let invalid_lines = log.matches("invalid message skipped").count();
    assert!(
        (1..=20).contains(&invalid_lines),
        "rate-limited logging: {invalid_lines} lines"
    );
    assert!(log.contains("message over a route's limits dropped"));
    assert_eq!(bridge.terminate(Duration::from_secs(15)), Some(0));
    eprintln!(
        "flood: invalid {}, topic_too_long {}, noise delivered {noisy} rate_limited {limited}, \
         good 10 of 10, {invalid_lines} 'invalid' log lines",
        s["invalid"], s["routes"][0]["topic_too_long"]
    );
}
