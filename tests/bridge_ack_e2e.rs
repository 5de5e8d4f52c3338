//! End-to-end: acknowledgements, escalation and fallback of the real bridge against a real
//! mosquitto, with file targets to read what was delivered.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ID: &str = "edge-1:cpu:1";

/// A bridge with one file target on a route that repeats every second; `extra` is
/// appended (more targets, routes' keys).
fn config(dir: &Path, port: u16, route_extra: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "e2e"
state_dir = "{state}"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[delivery]
dead_letter = "{dead}"
backoff_min = "50ms"
backoff_max = "100ms"
retries = 1
timeout = "1s"

[targets.alarms_file]
type = "file"
path = "{out}"

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["alarms_file"]
repeat_interval = "1s"
{route_extra}
{extra}
"#,
            state = dir.join("state").display(),
            dead = dir.join("dead.jsonl").display(),
            out = dir.join("alarms.log").display(),
        ),
    )
    .unwrap();
    cfg
}

fn count(path: &Path, state: &str) -> usize {
    lines(path).iter().filter(|a| a["state"] == state).count()
}

/// Waits until `path` holds at least `n` lines in `state`.
async fn wait_count(path: &Path, state: &str, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while count(path, state) < n {
        assert!(
            Instant::now() < deadline,
            "{n} {state} lines never came: {:?}",
            lines(path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alarm(state: &str) -> (String, String, bool) {
    let a = serde_json::json!({
        "id": ID, "host": "edge-1", "source": "cpu", "state": state, "severity": 3,
        "ts": 1, "started_at": 1, "score": 3.0, "threshold": 2.0, "summary": "test", "labels": {}
    });
    ("lookout/edge-1/alarms/cpu".into(), a.to_string(), true)
}

/// `lookout-bridge ack ...` with the test's config; its exit code and standard output.
fn ack_cli(cfg: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bridge_bin())
        .arg("ack")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_alarm_stops_repeating_notifies_once_and_stays_acknowledged_after_a_restart()
 {
    let dir = scratch("bridge-ack");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let out = dir.path().join("alarms.log");
    let cfg = config(dir.path(), port, "", "");
    let run = ["run", "--config", cfg.to_str().unwrap()];
    let mut first = bridge(&run, dir.path());
    first.wait_log("subscribed", Duration::from_secs(20)).await;

    publish(port, vec![alarm("firing")]).await;
    wait_count(&out, "firing", 2, Duration::from_secs(10)).await; // the firing and a repeat

    // Acknowledged over MQTT; a request is idempotent, so it is sent until answered.
    let mut replies = Subscriber::connect(port, &["lookout/bridge/ack/reply"]).await;
    let request = format!(r#"{{"id": "{ID}", "by": "alice", "comment": "on it"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        publish(
            port,
            vec![("lookout/bridge/ack".into(), request.clone(), false)],
        )
        .await;
        replies.drain();
        if let Some(m) = replies.seen.iter().find(|m| m.json()["id"] == ID) {
            break m.json();
        }
        assert!(Instant::now() < deadline, "no reply: {}", first.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("acknowledged by alice")
    );

    wait_count(&out, "acknowledged", 1, Duration::from_secs(10)).await;
    let notice = lines(&out)
        .into_iter()
        .find(|a| a["state"] == "acknowledged")
        .unwrap();
    assert_eq!(notice["summary"], "acknowledged by alice: on it");
    assert_eq!(notice["ack"]["by"], "alice");
    assert_eq!(notice["id"], ID);

    // No repeats while acknowledged (they were every second).
    let firing = count(&out, "firing");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count(&out, "firing"), firing, "repeated after the ack");

    // A restart keeps the acknowledgement: no repeats, and the same request is "again".
    assert_eq!(first.terminate(Duration::from_secs(15)), Some(0));
    let second = bridge(&run, dir.path());
    second.wait_log("subscribed", Duration::from_secs(20)).await;
    assert!(
        second.log_text().contains("firing alarms loaded firing=1"),
        "{}",
        second.log_text()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count(&out, "firing"), firing, "repeated after the restart");
    assert_eq!(count(&out, "acknowledged"), 1, "one notice in all");

    let (code, text) = ack_cli(&cfg, &[ID, "--by", "alice", "--comment", "on it"]);
    assert_eq!(code, Some(0), "{text}");
    let reply: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (reply["id"].as_str(), reply["ok"].as_bool()),
        (Some(ID), Some(true))
    );
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("already acknowledged"),
        "{text}"
    );

    // Another person, for two hours: a new notice.
    let (code, text) = ack_cli(&cfg, &[ID, "--by", "bob", "--until", "2h"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("acknowledged by bob until 20"), "{text}");
    wait_count(&out, "acknowledged", 2, Duration::from_secs(10)).await;

    // Unknown and resolved ids are refused with a reason, exit code 1.
    let (code, text) = ack_cli(&cfg, &["nope:cpu:1", "--by", "alice"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(r#""ok":false"#) && text.contains("unknown alarm id"),
        "{text}"
    );
    publish(port, vec![alarm("resolved")]).await;
    wait_count(&out, "resolved", 1, Duration::from_secs(10)).await;
    let (code, text) = ack_cli(&cfg, &[ID, "--by", "alice"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already resolved"), "{text}");
}

#[test]
fn the_ack_command_without_a_bridge_says_so_and_fails() {
    let dir = scratch("bridge-ack-nobody");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let cfg = config(dir.path(), port, "", "");
    let (code, text) = ack_cli(&cfg, &[ID, "--by", "alice", "--wait", "1s"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("no reply on lookout/bridge/ack/reply"),
        "{text}"
    );
}

#[test]
fn an_escalation_to_an_unknown_target_stops_check_config_with_exit_2() {
    let dir = scratch("bridge-escalate-config");
    let cfg = config(
        dir.path(),
        free_port(),
        r#"escalate = [{after = "15m", targets = ["email"]}]"#,
        "",
    );
    let out = Command::new(bridge_bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("routes[0].escalate[0].targets: no target named \"email\""),
        "{err}"
    );
}

/// A webhook that answers 500 while `down` is set, else 200, and keeps the bodies it took.
struct Webhook {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    taken: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Webhook {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, t) = (down.clone(), taken.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (d, t) = (d.clone(), t.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(stream);
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body).await;
                    let status = if d.load(Ordering::SeqCst) {
                        "500 Internal Server Error"
                    } else {
                        t.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = r.get_mut().write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { port, down, taken }
    }

    fn ids(&self) -> Vec<String> {
        let taken = self.taken.lock().unwrap();
        taken
            .iter()
            .map(|v| v["id"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

fn numbered(i: usize) -> (String, String, bool) {
    let a = serde_json::json!({
        "id": format!("edge-1:cpu:{i}"), "host": "edge-1", "source": "cpu", "state": "firing",
        "severity": 3, "ts": i, "started_at": i, "score": 3.0, "threshold": 2.0,
        "summary": "test", "labels": {}
    });
    ("lookout/edge-1/alarms/cpu".into(), a.to_string(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_falls_back_to_the_file_after_its_outage_time_and_back_when_it_recovers()
{
    let dir = scratch("bridge-fallback");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let hook = Webhook::start().await;
    let out = dir.path().join("alarms.log");
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bridge]
id = "e2e"
state_dir = "{state}"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[delivery]
dead_letter = "{dead}"
retries = 50
backoff_min = "100ms"
backoff_max = "200ms"
timeout = "2s"
[targets.webhook]
type = "http"
url = "http://127.0.0.1:{hook}/hook"
fallback = "alarms_file"
fallback_after = "1s"
[targets.alarms_file]
type = "file"
path = "{out}"
[[routes]]
topic = "lookout/+/alarms/#"
targets = ["webhook"]
"#,
            state = dir.path().join("state").display(),
            dead = dir.path().join("dead.jsonl").display(),
            out = out.display(),
            hook = hook.port,
        ),
    )
    .unwrap();
    let b = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    b.wait_log("subscribed", Duration::from_secs(20)).await;

    // Down: the first alarm is retried for the outage time, then goes to the file, marked;
    // the next one goes there after a single attempt.
    let t0 = Instant::now();
    publish(port, vec![numbered(1)]).await;
    wait_count(&out, "firing", 1, Duration::from_secs(15)).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "not before the outage time"
    );
    publish(port, vec![numbered(2)]).await;
    wait_count(&out, "firing", 2, Duration::from_secs(5)).await;
    let file = lines(&out);
    for (a, i) in file.iter().zip([1, 2]) {
        assert_eq!(a["id"], format!("edge-1:cpu:{i}"));
        assert_eq!(a["via_fallback"]["target"], "webhook", "{a}");
        assert!(
            a["via_fallback"]["failing_since"].as_i64().unwrap() > 0,
            "{a}"
        );
    }
    assert!(hook.ids().is_empty());

    // Recovered: new alarms go to the webhook again, not to the file.
    hook.down.store(false, std::sync::atomic::Ordering::SeqCst);
    publish(port, vec![numbered(3), numbered(4)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.ids().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "webhook got {:?}; log:\n{}",
            hook.ids(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hook.ids(), ["edge-1:cpu:3", "edge-1:cpu:4"]);
    assert_eq!(lines(&out).len(), 2, "nothing more in the file");
    assert!(
        !dir.path().join("dead.jsonl").exists(),
        "nothing dead-lettered"
    );
    assert!(
        b.log_text().contains("target delivers again"),
        "{}",
        b.log_text()
    );
}

/// A stand-in for the Telegram Bot API: `sendMessage` and `answerCallbackQuery` are
/// recorded and answered ok; `getUpdates` hands out the updates queued by the test from
/// the poll's `offset` on, else answers an empty list after a moment (a short long-poll).
#[derive(Clone, Default)]
struct FakeTelegram {
    port: u16,
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    updates: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl FakeTelegram {
    async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeTelegram {
            port: listener.local_addr().unwrap().port(),
            ..Default::default()
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(stream);
                    let (mut len, mut path) = (0, String::new());
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if path.is_empty() {
                            path = line.split(' ').nth(1).unwrap_or("").to_owned();
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body).await;
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let method = path.rsplit('/').next().unwrap_or("").to_owned();
                    let answer = if method == "getUpdates" {
                        let offset = body["offset"].as_i64().unwrap_or(0);
                        let ready: Vec<Value> = f
                            .updates
                            .lock()
                            .unwrap()
                            .iter()
                            .filter(|u| u["update_id"].as_i64().unwrap() >= offset)
                            .cloned()
                            .collect();
                        if ready.is_empty() {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        serde_json::json!({"ok": true, "result": ready})
                    } else {
                        f.calls.lock().unwrap().push((method, body));
                        serde_json::json!({"ok": true, "result": {"message_id": 1}})
                    };
                    let answer = answer.to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = r.get_mut().write_all(reply.as_bytes()).await;
                });
            }
        });
        fake
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }

    async fn wait_calls(&self, method: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.calls(method).len() < n {
            assert!(
                Instant::now() < deadline,
                "{method} x{n} never came: {:?}",
                self.calls.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.calls(method)
    }

    fn press(&self, update_id: i64, data: &str) {
        self.updates.lock().unwrap().push(serde_json::json!({
            "update_id": update_id,
            "callback_query": {"id": format!("cb{update_id}"), "chat_instance": "1",
                "from": {"id": 42, "is_bot": false, "first_name": "Alice", "username": "alice"},
                "data": data}
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_button_of_a_telegram_message_acknowledges_the_alarm() {
    let dir = scratch("bridge-ack-telegram");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let tg = FakeTelegram::start().await;
    let out = dir.path().join("alarms.log");
    let cfg = config(
        dir.path(),
        port,
        "",
        &format!(
            r#"
[targets.tg]
type = "telegram"
token = "123456789:AAHsecretKeyFromBotFather_x-42"
chat_id = 1
base_url = "http://127.0.0.1:{}"
ack_button = true

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["tg"]
"#,
            tg.port
        ),
    );
    let b = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    b.wait_log("subscribed", Duration::from_secs(20)).await;
    publish(port, vec![alarm("firing")]).await;

    let sent = tg.wait_calls("sendMessage", 1).await;
    let button = &sent[0]["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], "Ack", "{}", sent[0]);
    let data = button["callback_data"].as_str().unwrap().to_owned();
    assert!(data.starts_with("ack:") && data.len() <= 64, "{data}");

    tg.press(5, &data);
    let answers = tg.wait_calls("answerCallbackQuery", 1).await;
    assert_eq!(answers[0]["callback_query_id"], "cb5");
    let toast = answers[0]["text"].as_str().unwrap();
    assert!(toast.contains("acknowledged by @alice"), "{toast}");

    wait_count(&out, "acknowledged", 1, Duration::from_secs(10)).await;
    let notice = lines(&out)
        .into_iter()
        .find(|a| a["state"] == "acknowledged")
        .unwrap();
    assert_eq!(notice["summary"], "acknowledged by @alice: via Telegram");
    let sent = tg.wait_calls("sendMessage", 2).await;
    assert!(
        sent[1]["text"].as_str().unwrap().contains("[acknowledged]"),
        "{}",
        sent[1]
    );
    assert!(
        sent[1].get("reply_markup").is_none(),
        "no button on the notice"
    );

    // A button whose alarm is gone gets a toast that says so.
    tg.press(6, "ack:0000000000000000");
    let answers = tg.wait_calls("answerCallbackQuery", 2).await;
    assert!(
        answers[1]["text"]
            .as_str()
            .unwrap()
            .contains("no longer firing"),
        "{}",
        answers[1]
    );
    assert!(
        !b.log_text().contains("AAHsecretKey"),
        "the token stays out of logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_slack_button_press_acknowledges_the_alarm_and_an_unsigned_one_is_refused() {
    const SECRET: &str = "slack-signing-secret-for-the-test";
    let dir = scratch("bridge-ack-slack");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let hook = Webhook::start().await;
    hook.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let listen = free_port();
    let out = dir.path().join("alarms.log");
    let cfg = config(
        dir.path(),
        port,
        "",
        &format!(
            r#"
[targets.chat]
type = "slack"
webhook_url = "http://127.0.0.1:{hook}/services/T1/B2/x"
ack_button = true

[[routes]]
topic = "lookout/+/alarms/#"
targets = ["chat"]

[ack_http]
listen = "127.0.0.1:{listen}"
signing_secret = "{SECRET}"
"#,
            hook = hook.port
        ),
    );
    let b = bridge(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    b.wait_log("subscribed", Duration::from_secs(20)).await;
    b.wait_log("ack_http listening", Duration::from_secs(5))
        .await;
    publish(port, vec![alarm("firing")]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Some(m) = hook.taken.lock().unwrap().first().cloned() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no slack message: {}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let button = &message["blocks"][1]["elements"][0];
    assert_eq!(button["value"], ID, "{message}");

    // What Slack posts when alice presses it: signed with the app's secret.
    let payload = serde_json::json!({"type": "block_actions", "user": {"id": "U1", "username": "alice"},
        "response_url": format!("http://127.0.0.1:{}/actions/T1/1/x", hook.port),
        "actions": [{"action_id": button["action_id"], "value": button["value"]}]});
    let body = format!("payload={}", form_encode(&payload.to_string()));
    let press = |sig: String, ts: i64| {
        let body = body.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .unwrap();
            let req = format!(
                "POST /slack/actions HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\nx-slack-request-timestamp: {ts}\r\nx-slack-signature: {sig}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            answer
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sign = |ts: i64| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("v0={hex}")
    };
    let unsigned = press("v0=0000".into(), now).await;
    assert!(unsigned.starts_with("HTTP/1.1 401"), "{unsigned}");
    let signed = press(sign(now), now).await;
    assert!(signed.starts_with("HTTP/1.1 200"), "{signed}");

    wait_count(&out, "acknowledged", 1, Duration::from_secs(10)).await;
    let notice = lines(&out)
        .into_iter()
        .find(|a| a["state"] == "acknowledged")
        .unwrap();
    assert_eq!(notice["summary"], "acknowledged by @alice: via Slack");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let taken = hook.taken.lock().unwrap().clone();
        if let Some(answer) = taken.iter().find(|m| m["response_type"] == "ephemeral") {
            assert!(
                answer["text"]
                    .as_str()
                    .unwrap()
                    .contains("acknowledged by @alice"),
                "{answer}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on response_url: {taken:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
