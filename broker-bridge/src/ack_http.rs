//! `[ack_http]`: a small HTTP listener for Slack's interactive buttons. A `slack` target
//! with `ack_button = true` puts an "Ack" button under firing alarms; when someone presses
//! it, Slack POSTs the interaction to the app's Request URL, which points here
//! (`POST /slack/actions`, usually through a reverse proxy with TLS).
//!
//! Every request must carry Slack's signature: `X-Slack-Signature` is `v0=` and the
//! HMAC-SHA256 (key: the app's signing secret) of `v0:<X-Slack-Request-Timestamp>:<body>`,
//! and the timestamp must be within five minutes of now, so a recorded request cannot be
//! replayed later. Anything else is refused (401) before the body is read as JSON. The
//! answer to the presser goes to the interaction's `response_url` (an ephemeral message).
//!
//! The server is deliberately small: HTTP/1.1, one request per connection, the head at
//! most 16 KiB, the body at most 64 KiB, 10 s per connection, at most 64 at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lookout_shared::secret::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ack::{Alarm, ChatPress, Reply};
use crate::stats::{RateLimited, Stats};

/// Slack's replay window.
pub const MAX_SKEW_SECS: i64 = 300;
/// The button's `action_id`.
pub const ACTION_ID: &str = "lookout_ack";
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
const CONNECTION_TIME: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;

/// `[ack_http]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Address to listen on, e.g. `"127.0.0.1:9092"`.
    pub listen: String,
    /// The Slack app's signing secret (literal, `env:NAME` or `file:/path`).
    pub signing_secret: Secret,
}

/// `[ack_http]`, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub signing_secret: Secret,
}

impl Raw {
    /// An error is `(key, message)`.
    pub fn resolve(&self) -> Result<Settings, (&'static str, String)> {
        let listen = self.listen.parse().map_err(|_| {
            (
                "ack_http.listen",
                format!(
                    "{:?} is not an address like \"127.0.0.1:9092\"",
                    self.listen
                ),
            )
        })?;
        if self.signing_secret.expose().trim().is_empty() {
            return Err((
                "ack_http.signing_secret",
                "is empty; copy it from the Slack app's Basic Information page".into(),
            ));
        }
        Ok(Settings {
            listen,
            signing_secret: self.signing_secret.clone(),
        })
    }
}

/// True when `signature` is Slack's `v0=` signature of `timestamp` and `body` under
/// `secret`, and `timestamp` (Unix seconds) is within [`MAX_SKEW_SECS`] of `now_secs`.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str, now_secs: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now_secs - ts).abs() > MAX_SKEW_SECS {
        return false;
    }
    let Some(tag) = signature.trim().strip_prefix("v0=").and_then(hex_decode) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut msg = Vec::with_capacity(body.len() + 32);
    msg.extend_from_slice(format!("v0:{ts}:").as_bytes());
    msg.extend_from_slice(body);
    // Constant time: ring compares the tag without an early exit.
    ring::hmac::verify(&key, &msg, &tag).is_ok()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The listener's shared parts.
struct Server {
    secret: Secret,
    presses: mpsc::Sender<ChatPress>,
    client: reqwest::Client,
    stats: Arc<Stats>,
    refused: RateLimited,
}

/// Binds `settings.listen`; then serves until aborted.
pub async fn start(
    settings: &Settings,
    presses: mpsc::Sender<ChatPress>,
    stats: Arc<Stats>,
) -> Result<tokio::task::JoinHandle<()>, crate::Error> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| crate::Error::Config {
            path: "ack_http.listen".into(),
            message: format!("cannot listen on {}: {e}", settings.listen),
        })?;
    let client = crate::notify::http::client(
        "ack_http",
        lookout_shared::duration::HumanDuration::from_secs(10),
    )?;
    tracing::info!(listen = %settings.listen, "ack_http listening for Slack's Ack buttons on POST /slack/actions");
    let server = Arc::new(Server {
        secret: settings.signing_secret.clone(),
        presses,
        client,
        stats,
        refused: RateLimited::new(Duration::from_secs(10)),
    });
    Ok(tokio::spawn(serve(listener, server)))
}

async fn serve(listener: TcpListener, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue; // full: the connection is dropped, Slack retries
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIME, server.connection(stream)).await;
            drop(slot);
        });
    }
}

/// One request as read.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = 0;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line).await.ok()?;
        head += n;
        if n == 0 || head > MAX_HEAD {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let mut first = lines.first()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    if len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

impl Server {
    async fn connection(&self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        let (status, text) = match read_request(&mut stream).await {
            None => (400, "bad request"),
            Some(r) if r.path != "/slack/actions" => (404, "not found"),
            Some(r) if r.method != "POST" => (405, "POST only"),
            Some(r) => self.slack(&r).await,
        };
        let reply = format!(
            "HTTP/1.1 {status} {text}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = stream.get_mut().write_all(reply.as_bytes()).await;
    }

    /// A signed interaction: each "Ack" press in it, acknowledged and answered.
    async fn slack(&self, r: &Request) -> (u16, &'static str) {
        let now = lookout_shared::time::now_ms() / 1000;
        let signed = verify(
            self.secret.expose().as_bytes(),
            r.header("x-slack-request-timestamp"),
            &r.body,
            r.header("x-slack-signature"),
            now,
        );
        if !signed {
            self.stats.ack_rejected.inc();
            self.refused.hit(|suppressed| {
                tracing::warn!(suppressed, "ack_http: request without a valid Slack signature (or older than 5 minutes) refused");
            });
            return (401, "invalid signature");
        }
        let Some(payload) = form_payload(&r.body) else {
            return (400, "no payload");
        };
        let by = payload["user"]["username"]
            .as_str()
            .or(payload["user"]["name"].as_str())
            .map_or_else(|| "a Slack user".to_owned(), |u| format!("@{u}"));
        let response_url = payload["response_url"].as_str().unwrap_or("");
        let actions = payload["actions"].as_array().cloned().unwrap_or_default();
        for a in actions.iter().filter(|a| a["action_id"] == ACTION_ID) {
            let Some(id) = a["value"].as_str() else {
                continue;
            };
            let text = self.ask(Alarm::Id(id.to_owned()), by.clone()).await;
            if !response_url.is_empty() {
                let body =
                    json!({"response_type": "ephemeral", "replace_original": false, "text": text});
                if let Err(e) = self.client.post(response_url).json(&body).send().await {
                    tracing::warn!(error = %e.without_url(), "ack_http: cannot answer on Slack's response_url");
                }
            }
        }
        (200, "ok")
    }

    async fn ask(&self, alarm: Alarm, by: String) -> String {
        let (answer, reply) = oneshot::channel::<Reply>();
        let press = ChatPress {
            alarm,
            by,
            via: "Slack",
            answer,
        };
        if self.presses.send(press).await.is_err() {
            return "the bridge is stopping; try again".into();
        }
        match tokio::time::timeout(Duration::from_secs(5), reply).await {
            Ok(Ok(r)) if r.ok => format!("✓ {}", r.reason),
            Ok(Ok(r)) => format!("✗ {}", r.reason),
            _ => "no answer from the bridge; try again".into(),
        }
    }
}

/// The `payload` field of a form-encoded body, as JSON.
fn form_payload(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let url = reqwest::Url::parse(&format!("http://form/?{text}")).ok()?;
    let (_, json) = url.query_pairs().find(|(k, _)| k == "payload")?;
    serde_json::from_str(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_server::{Reply as Answer, TestServer};

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    #[test]
    fn slacks_documented_example_signature_verifies_and_changes_do_not() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let ts = 1_531_420_618;
        assert!(verify(SECRET.as_bytes(), "1531420618", body, sig, ts + 10));
        assert!(
            !verify(SECRET.as_bytes(), "1531420618", body, sig, ts + 301),
            "replayed"
        );
        assert!(
            !verify(SECRET.as_bytes(), "1531420619", body, sig, ts),
            "other time"
        );
        assert!(!verify(b"another secret", "1531420618", body, sig, ts));
        assert!(!verify(
            SECRET.as_bytes(),
            "1531420618",
            &body[1..],
            sig,
            ts
        ));
        assert!(!verify(SECRET.as_bytes(), "1531420618", body, "v0=zz", ts));
        assert!(!verify(SECRET.as_bytes(), "soon", body, sig, ts));
    }

    #[test]
    fn a_bad_listen_address_or_an_empty_secret_names_its_key() {
        let raw = |listen: &str, secret: &str| Raw {
            listen: listen.into(),
            signing_secret: Secret::new(secret.into()),
        };
        assert_eq!(
            raw("localhost", "s").resolve().unwrap_err().0,
            "ack_http.listen"
        );
        assert_eq!(
            raw("127.0.0.1:9092", " ").resolve().unwrap_err().0,
            "ack_http.signing_secret"
        );
        assert_eq!(
            raw("127.0.0.1:9092", "s").resolve().unwrap().listen.port(),
            9092
        );
    }

    fn sign(ts: i64, body: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("v0={hex}")
    }

    #[tokio::test]
    async fn a_signed_press_acknowledges_and_answers_and_an_unsigned_one_does_nothing() {
        let mut slack = TestServer::start(vec![Answer::text(200, "ok")]).await;
        let (tx, mut presses) = mpsc::channel(4);
        let settings = Raw {
            listen: "127.0.0.1:0".into(),
            signing_secret: Secret::new(SECRET.into()),
        }
        .resolve()
        .unwrap();
        // Bind ourselves to learn the port, then hand the listener over.
        let listener = TcpListener::bind(settings.listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let server = Arc::new(Server {
            secret: settings.signing_secret.clone(),
            presses: tx,
            client: client(),
            stats: Arc::clone(&stats),
            refused: RateLimited::new(Duration::from_secs(10)),
        });
        let task = tokio::spawn(serve(listener, server));
        let pipeline = tokio::spawn(async move {
            let p: ChatPress = presses.recv().await.unwrap();
            assert_eq!(p.alarm, Alarm::Id("edge-1:cpu:1".into()));
            assert_eq!((p.by.as_str(), p.via), ("@alice", "Slack"));
            let _ = p.answer.send(Reply {
                id: Some("edge-1:cpu:1".into()),
                ok: true,
                reason: "acknowledged by @alice until it resolves".into(),
            });
            presses
        });

        let payload = json!({"type": "block_actions", "user": {"id": "U1", "username": "alice"},
            "response_url": slack.url("/actions/T1/1/xyz"),
            "actions": [{"action_id": ACTION_ID, "value": "edge-1:cpu:1"}]});
        let body = format!("payload={}", url_encode(&payload.to_string()));
        let now = lookout_shared::time::now_ms() / 1000;
        let client = client();
        let post = |sig: String, ts: i64| {
            client
                .post(format!("http://127.0.0.1:{port}/slack/actions"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", sig)
                .body(body.clone())
                .send()
        };
        assert_eq!(post(sign(now, &body), now).await.unwrap().status(), 200);
        let answer = slack.request().await;
        assert_eq!(
            answer.json()["text"],
            "✓ acknowledged by @alice until it resolves"
        );
        assert_eq!(answer.json()["response_type"], "ephemeral");
        let mut presses = pipeline.await.unwrap();

        // Wrong signature, or a replay of an old request: refused, nothing pressed.
        assert_eq!(post("v0=00".into(), now).await.unwrap().status(), 401);
        let old = now - 600;
        assert_eq!(post(sign(old, &body), old).await.unwrap().status(), 401);
        assert!(presses.try_recv().is_err());
        assert_eq!(stats.ack_rejected.get(), 2);
        task.abort();
    }

    fn client() -> reqwest::Client {
        crate::notify::http::client(
            "test",
            lookout_shared::duration::HumanDuration::from_secs(5),
        )
        .unwrap()
    }

    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
