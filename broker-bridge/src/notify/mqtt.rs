//! `type = "mqtt"`: republishes each notification into another MQTT broker — how alarms
//! are bridged into a broker users already run (Home Assistant's, a plant's, a cloud's).
//!
//! One persistent connection per target: an rumqttc client whose event loop runs in a
//! tokio task spawned by [`Mqtt::build`] (so `build` must run inside a tokio runtime). The
//! task reconnects with exponential backoff and jitter (rumqttc itself retries at once).
//!
//! A send succeeds once the broker has the message: for QoS 1 when its PUBACK arrived,
//! for QoS 0 when the message was written to the connection. Correlating the PUBACK: the
//! event loop takes publishes from its request queue in order and reports each with its
//! packet id (`Outgoing::Publish(pkid)`), so the task keeps the waiting senders in the same
//! order, gives the front one that packet id, and completes it on `PubAck(pkid)`. Pushing
//! to rumqttc's queue and to ours happen under one lock, so the two orders cannot differ.
//!
//! When the connection drops, every send not yet acknowledged fails with a retry, and the
//! messages queued in rumqttc are discarded (the session is clean, so the broker would
//! not resume them either): the worker's retry delivers them, and nothing stale is
//! published after a reconnect. Sends while disconnected wait up to `timeout` for the
//! connection and then ask for a retry.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use lookout_shared::mqtt::{ClientConfig, Session};
use lookout_shared::secret::Secret;
use lookout_shared::time::Backoff;
use lookout_shared::tls::TlsSettings;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{Notification, Notifier, SendError, SendFuture};

/// Largest packet the plugin publishes; larger messages fail permanently instead of
/// breaking the connection (rumqttc's own default is 10 KiB).
const MAX_PACKET: usize = 1024 * 1024;
/// Fixed header, topic length and packet id of a PUBLISH, at most.
const PUBLISH_OVERHEAD: usize = 5 + 2 + 2;
/// Requests rumqttc may hold before the event loop takes them.
const QUEUE: usize = 64;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a stopping plugin waits to say DISCONNECT to the broker.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// `[targets.NAME]` with `type = "mqtt"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Broker to publish to: `"mqtt://host:port"` (plain; port 1883 if omitted) or
    /// `"mqtts://host:port"` (TLS; port 8883 if omitted).
    pub url: String,
    /// Topic to publish on. `{topic}` is replaced by the topic the message arrived on, so
    /// `"site-a/{topic}"` mirrors the alarm tree under `site-a/`. No other placeholders;
    /// no `+` or `#`. Default `"{topic}"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `0` (at most once) or `1` (at least once: a send succeeds only when the broker
    /// acknowledged it). Default `1`.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish with the retained flag, so a client subscribing later still gets the last
    /// alarm of each topic. Default `false`.
    #[serde(default)]
    pub retain: bool,
    /// MQTT client id; must be unique on the broker (two clients with the same id
    /// disconnect each other). Default `"lookout-bridge-<target name>"`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name for the broker, if it requires a login.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker: a literal, `"env:NAME"` or `"file:/path"`. Needs
    /// `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The password read from this file (trailing newline removed), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file with the certificate authorities that sign the broker's certificate, for
    /// `mqtts://`. Default: the system's trust store. Not allowed with `mqtt://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for a broker that requires
    /// client certificates (mutual TLS). Both or neither; `mqtts://` only.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate, for any name: anyone on the path can pose as the
    /// broker. Logged at warn every time the target is built. Default `false`.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// What to publish: `"raw"` (default) for the message exactly as received, or
    /// `"body"` for the rendered body template.
    #[serde(default)]
    pub payload: Payload,
    /// How long a send waits for the connection and the broker's acknowledgement before
    /// asking for a retry, like `"10s"`. Default `"10s"`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// What the `mqtt` notifier publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// The message as received.
    #[default]
    Raw,
    /// The rendered body.
    Body,
}

fn default_topic() -> String {
    "{topic}".into()
}

fn default_qos() -> u8 {
    1
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Told to a waiting send: delivered, or why not.
type Waiter = oneshot::Sender<Result<(), String>>;

/// Sends waiting for the broker, in the event loop's order, and the connection's state.
/// Shared by the plugin (which appends) and the event-loop task (which completes).
#[derive(Default)]
struct Tracker {
    connected: bool,
    last_error: Option<String>,
    /// Handed to rumqttc, not yet given a packet id; in the order rumqttc takes them.
    queued: VecDeque<Waiter>,
    /// A publish rumqttc holds back because its packet id is still in flight (a broker
    /// acknowledging out of order); rumqttc sends it when that id is acknowledged.
    collided: Option<(u16, Waiter)>,
    /// Sent with QoS 1, waiting for the PUBACK.
    unacked: HashMap<u16, Waiter>,
}

impl Tracker {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let waiter = match self.collided.take() {
                    Some((held, waiter)) if held == *pkid => Some(waiter),
                    other => {
                        self.collided = other;
                        self.queued.pop_front()
                    }
                };
                let Some(waiter) = waiter else { return };
                if *pkid == 0 {
                    // QoS 0: written and flushed, which is all QoS 0 promises.
                    let _ = waiter.send(Ok(()));
                } else if let Some(stale) = self.unacked.insert(*pkid, waiter) {
                    let _ = stale.send(Err(format!("packet id {pkid} reused before its PUBACK")));
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                if let Some(waiter) = self.queued.pop_front() {
                    self.collided = Some((*pkid, waiter));
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(waiter) = self.unacked.remove(&ack.pkid) {
                    let _ = waiter.send(Ok(()));
                }
            }
            _ => {}
        }
    }

    fn fail_all(&mut self, why: &str) {
        let collided = self.collided.take().map(|(_, w)| w);
        let unacked = self.unacked.drain().map(|(_, w)| w);
        for waiter in self.queued.drain(..).chain(collided).chain(unacked) {
            let _ = waiter.send(Err(why.to_owned()));
        }
    }
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `mqtt` notifier, built from a validated [`Config`]. Dropping it stops its
/// connection task (after a DISCONNECT, if connected).
pub struct Mqtt {
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    connected: watch::Receiver<bool>,
    /// Dropped with the plugin, which tells the connection task to stop.
    _stop: oneshot::Sender<()>,
    /// `mqtt[s]://host:port`, for messages.
    broker: String,
    topic: String,
    qos: QoS,
    retain: bool,
    payload: Payload,
    timeout: Duration,
}

impl Mqtt {
    /// Validates `cfg` and spawns the connection task on the current tokio runtime; fails
    /// when called outside one.
    pub fn build(name: &str, cfg: &Config) -> Result<Self, crate::Error> {
        let invalid = |key: &str, message: String| crate::Error::Target {
            target: name.into(),
            key: key.into(),
            message,
        };
        let url = lookout_shared::url::parse(&cfg.url).map_err(|m| invalid("url", m))?;
        check_topic_template(&cfg.topic).map_err(|m| invalid("topic", m))?;
        let qos = match cfg.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            n => return Err(invalid("qos", format!("must be 0 or 1, not {n}"))),
        };
        if cfg.timeout.0.is_zero() {
            return Err(invalid("timeout", "must be more than zero".into()));
        }
        let client_id = match &cfg.client_id {
            Some(id) if id.is_empty() => {
                return Err(invalid("client_id", "must not be empty".into()));
            }
            Some(id) => id.clone(),
            None => format!("lookout-bridge-{name}"),
        };
        let tls_error = |e: lookout_shared::tls::TlsError| invalid(e.key(), e.reason());
        let password =
            lookout_shared::tls::password(cfg.password.clone(), cfg.password_file.as_deref())
                .map_err(tls_error)?;
        let tls = TlsSettings {
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            insecure_skip_verify: cfg.insecure_skip_verify,
        };
        let context = format!("targets.{name}");
        let connection = ClientConfig::new(
            url,
            client_id,
            KEEP_ALIVE,
            cfg.username.clone(),
            password,
            tls,
            &context,
        )
        .map_err(tls_error)?;
        // A clean session: what the broker did not acknowledge is retried by the worker,
        // never resumed by the broker (see the module docs).
        let session = Session {
            clean: true,
            manual_acks: false,
            max_incoming: 64 * 1024,
            max_outgoing: MAX_PACKET,
            last_will: None,
        };
        let options = connection.options(&session);

        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            crate::Error::Mqtt(format!(
                "target {name}: the mqtt notifier must be built inside a tokio runtime"
            ))
        })?;
        let (client, eventloop) = AsyncClient::new(options, QUEUE);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let (connected_tx, connected) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let broker = connection.url.display();
        runtime.spawn(drive(Connection {
            eventloop,
            client: client.clone(),
            tracker: Arc::clone(&tracker),
            connected: connected_tx,
            stopped,
            target: name.to_owned(),
            broker: broker.clone(),
        }));

        Ok(Mqtt {
            client,
            tracker,
            connected,
            _stop: stop,
            broker,
            topic: cfg.topic.clone(),
            qos,
            retain: cfg.retain,
            payload: cfg.payload,
            timeout: cfg.timeout.0,
        })
    }

    async fn publish(&self, n: &Notification) -> Result<(), SendError> {
        let topic = self.topic.replace("{topic}", &n.topic);
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(SendError::Permanent(format!(
                "{topic:?} is not a topic one can publish to"
            )));
        }
        let payload = match self.payload {
            Payload::Raw => n.raw.clone(),
            Payload::Body => n.body.as_bytes().to_vec(),
        };
        let size = topic.len() + payload.len() + PUBLISH_OVERHEAD;
        if size > MAX_PACKET {
            return Err(SendError::Permanent(format!(
                "message of {size} bytes is larger than the {MAX_PACKET} bytes allowed"
            )));
        }

        let deadline = Instant::now() + self.timeout;
        let mut connected = self.connected.clone();
        let up = tokio::time::timeout_at(deadline, async {
            connected.wait_for(|up| *up).await.map(drop)
        })
        .await;
        match up {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.stopped()),
            Err(_) => return Err(self.not_connected()),
        }

        let acked = {
            let mut tracker = lock(&self.tracker);
            if !tracker.connected {
                drop(tracker);
                return Err(self.not_connected());
            }
            // Under the lock, so the order of rumqttc's queue and of `queued` agree.
            self.client
                .try_publish(topic, self.qos, self.retain, payload)
                .map_err(|_| {
                    SendError::Retry(format!(
                        "{}: too many messages waiting for the connection",
                        self.broker
                    ))
                })?;
            let (waiter, acked) = oneshot::channel();
            tracker.queued.push_back(waiter);
            acked
        };
        match tokio::time::timeout_at(deadline, acked).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(SendError::Retry(format!("{}: {why}", self.broker))),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(SendError::Retry(format!(
                "{}: no {} within {}",
                self.broker,
                if self.qos == QoS::AtMostOnce {
                    "send"
                } else {
                    "PUBACK"
                },
                HumanDuration(self.timeout)
            ))),
        }
    }

    fn not_connected(&self) -> SendError {
        let last = lock(&self.tracker).last_error.clone();
        SendError::Retry(match last {
            Some(e) => format!("not connected to {} (last error: {e})", self.broker),
            None => format!(
                "not connected to {} within {}",
                self.broker,
                HumanDuration(self.timeout)
            ),
        })
    }

    fn stopped(&self) -> SendError {
        SendError::Retry(format!("{}: connection task stopped", self.broker))
    }
}

impl Notifier for Mqtt {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.publish(n))
    }
}

/// What the connection task owns.
struct Connection {
    eventloop: EventLoop,
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    connected: watch::Sender<bool>,
    stopped: oneshot::Receiver<()>,
    target: String,
    broker: String,
}

/// Polls the event loop until the plugin is dropped: completes waiting sends, and on a
/// connection error fails them, empties rumqttc's queues and sleeps before reconnecting.
async fn drive(mut c: Connection) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, &c.target);
    loop {
        let polled = tokio::select! {
            _ = &mut c.stopped => break,
            polled = c.eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                lock(&c.tracker).connected = true;
                c.connected.send_replace(true);
                backoff.reset();
                tracing::info!(target_name = %c.target, broker = %c.broker, "mqtt target connected");
            }
            Ok(event) => lock(&c.tracker).on_event(&event),
            Err(e) => {
                let why = describe(&e);
                let was_connected = {
                    let mut tracker = lock(&c.tracker);
                    let was = std::mem::replace(&mut tracker.connected, false);
                    discard_queued(&mut c.eventloop);
                    tracker.fail_all(&format!(
                        "connection lost before the broker acknowledged: {why}"
                    ));
                    tracker.last_error = Some(why.clone());
                    was
                };
                c.connected.send_replace(false);
                let delay = backoff.next_delay();
                if was_connected {
                    tracing::warn!(target_name = %c.target, broker = %c.broker, error = %why, "mqtt target lost its connection");
                } else {
                    tracing::warn!(target_name = %c.target, broker = %c.broker, error = %why, retry_in = ?delay, "mqtt target cannot connect");
                }
                tokio::select! {
                    _ = &mut c.stopped => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    if *c.connected.borrow() && c.client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            loop {
                match c.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    lock(&c.tracker).fail_all("the notifier was stopped");
}

/// Forgets everything rumqttc would send on the next connection: publishes in flight or
/// still queued (their senders are told to retry), a held-back collision, and buffered
/// events that would otherwise be matched against newer sends.
fn discard_queued(eventloop: &mut EventLoop) {
    eventloop.clean();
    eventloop.pending.clear();
    eventloop.state.events.clear();
    eventloop.state.collision = None;
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    }
}

fn check_topic_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    if template.contains(['+', '#', '\0']) {
        return Err(format!(
            "{template:?}: wildcards (+, #) cannot be published to"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::net::TcpListener;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use rumqttc::MqttOptions;
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    const MOSQUITTO: &str = "/usr/sbin/mosquitto";
    /// A CA and a server certificate it signed for 127.0.0.1 and localhost, valid until
    /// 2126; made for these tests only, with `openssl req -x509 -newkey ec` and
    /// `openssl x509 -req -extfile` (serverAuth, subjectAltName IP:127.0.0.1,DNS:localhost).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUDOIJPiLE+fWCK4R0Gk/c3zYLjWcwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPTG9va291dCB0ZXN0IENBMCAXDTI2MTEyMzE4MDM1NFoYDzIx
MjYxMDMwMTgwMzU0WjAaMRgwFgYDVQQDDA9Mb29rb3V0IHRlc3QgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAASs4dWztYLcW5UQnDznMG2j4nUNM2+OCk2H79Aq
Uwf0gjqIbLtQ/Fxua8l+RwHbcjdV2Nf+DHI/qES/uzD4FCT0o2MwYTAdBgNVHQ4E
FgQUeIzmUKPXy7Gex0iAzpamjtfHrzwwHwYDVR0jBBgwFoAUeIzmUKPXy7Gex0iA
zpamjtfHrzwwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZI
zj0EAwIDSAAwRQIhAInG5LMUHkwe0IUSeN1u6Qc9HPsXULy7NOck7wUukLlaAiAm
qjQfuY2raQqGCdngURtOuAXtMD6NPaG3R0YeaNRx9g==
-----END CERTIFICATE-----\n";
    const TEST_SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBxjCCAWugAwIBAgIUWJbFYoC3by+wc/s7o5xcEmlc3eUwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPTG9va291dCB0ZXN0IENBMCAXDTI2MTEyMzE4MDM1NFoYDzIx
MjYxMDMwMTgwMzU0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAS5msx6nPmpYoB5pWz9Gz6lKBe/UI3MDGt0itUIybUGQlee
W3L4B9JJx1VjPu2OFB7XkEvT3Qd2hJkwWQ3fI/xMo4GSMIGPMAwGA1UdEwEB/wQC
MAAwDgYDVR0PAQH/BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQT
MBGHBH8AAAGCCWxvY2FsaG9zdDAdBgNVHQ4EFgQU5kN8fI0tyEXAUtz9+5/jLQ/F
Q18wHwYDVR0jBBgwFoAUeIzmUKPXy7Gex0iAzpamjtfHrzwwCgYIKoZIzj0EAwID
SQAwRgIhAIsiEKR12SBZ3cdltstHM0RUucRf/f8lmdEYuv2u9t6xAiEAonHSr/dV
uzzJHblIOkmGRVyctijUEyxTiRZW1nerwFg=
-----END CERTIFICATE-----\n";
    const TEST_SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgypWW0u5xnOEVPptF
6HDJIvvKmwO5xPxbL2l1fr7CIKqhRANCAAS5msx6nPmpYoB5pWz9Gz6lKBe/UI3M
DGt0itUIybUGQleeW3L4B9JJx1VjPu2OFB7XkEvT3Qd2hJkwWQ3fI/xM
-----END PRIVATE KEY-----\n";
    const WAIT: Duration = Duration::from_secs(10);

    /// A mosquitto on a free loopback port, killed on drop.
    struct Mosquitto {
        child: Child,
        port: u16,
        /// Its configuration and certificates.
        _dirs: Vec<tempfile::TempDir>,
    }

    impl Mosquitto {
        fn start() -> Mosquitto {
            Self::start_on(free_port(), "")
        }

        /// `extra` is appended to the configuration (more listeners, say).
        fn start_on(port: u16, extra: &str) -> Mosquitto {
            assert!(
                Path::new(MOSQUITTO).exists(),
                "{MOSQUITTO} is missing: these tests need a real mosquitto (apt-get install mosquitto)"
            );
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "per_listener_settings false\nallow_anonymous true\npersistence false\n\
                     max_queued_messages 0\nlog_dest stderr\nlistener {port} 127.0.0.1\n{extra}"
                ),
            )
            .unwrap();
            let child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut broker = Mosquitto {
                child,
                port,
                _dirs: vec![dir],
            };
            broker.wait_for_port(port);
            broker
        }

        /// Also listens with TLS on the returned port, with the test server certificate.
        fn start_with_tls() -> (Mosquitto, u16) {
            let files = tempfile::tempdir().unwrap();
            let cert = files.path().join("server.pem");
            let key = files.path().join("server.key");
            std::fs::write(&cert, TEST_SERVER_CERT).unwrap();
            std::fs::write(&key, TEST_SERVER_KEY).unwrap();
            let tls_port = free_port();
            let mut broker = Self::start_on(
                free_port(),
                &format!(
                    "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                    cert.display(),
                    key.display()
                ),
            );
            broker.wait_for_port(tls_port);
            broker._dirs.push(files);
            (broker, tls_port)
        }

        fn wait_for_port(&mut self, port: u16) {
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("mosquitto exited with {status}");
                }
                assert!(
                    started.elapsed() < WAIT,
                    "mosquitto did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A subscriber on `filter`, returning what it receives; ready when this returns.
    async fn subscribe(port: u16, filter: &str) -> mpsc::UnboundedReceiver<rumqttc::Publish> {
        let id = format!("test-sub-{}", RandomState::new().hash_one(filter) % 100_000);
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 16);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready, subscribed) = oneshot::channel();
        tokio::spawn(async move {
            let _client = client;
            let mut ready = Some(ready);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(WAIT, subscribed)
            .await
            .unwrap()
            .unwrap();
        rx
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>) -> rumqttc::Publish {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no message arrived")
            .unwrap()
    }

    fn notification() -> Notification {
        let fields = json!({"host": "edge-42", "source": "cpu", "state": "firing"});
        Notification {
            target: "upstream".into(),
            topic: "lookout/edge-42/alarms/cpu".into(),
            title: "[firing] edge-42 cpu".into(),
            body: "cpu is anomalous on edge-42".into(),
            raw: serde_json::to_vec(&fields).unwrap(),
            fields,
        }
    }

    fn mqtt(port: u16, extra: &str) -> Mqtt {
        let cfg: Config =
            toml::from_str(&format!("url = \"mqtt://127.0.0.1:{port}\"\n{extra}")).unwrap();
        Mqtt::build("upstream", &cfg).unwrap()
    }

    #[tokio::test]
    async fn republishes_the_raw_message_on_the_same_topic() {
        let broker = Mosquitto::start();
        let mut rx = subscribe(broker.port, "lookout/#").await;
        let plugin = mqtt(broker.port, "");

        plugin.send(&notification()).await.unwrap();

        let got = next(&mut rx).await;
        assert_eq!(got.topic, "lookout/edge-42/alarms/cpu");
        assert_eq!(got.payload.as_ref(), notification().raw.as_slice());
        assert!(!got.retain);
    }

    #[tokio::test]
    async fn retained_messages_reach_later_subscribers_with_the_retain_flag() {
        let broker = Mosquitto::start();
        let plugin = mqtt(broker.port, "retain = true");

        plugin.send(&notification()).await.unwrap();

        let mut rx = subscribe(broker.port, "lookout/#").await;
        let got = next(&mut rx).await;
        assert_eq!(got.topic, "lookout/edge-42/alarms/cpu");
        assert_eq!(got.payload.as_ref(), notification().raw.as_slice());
        assert!(got.retain);
    }

    #[tokio::test]
    async fn publishes_the_body_under_a_topic_built_from_the_original() {
        let broker = Mosquitto::start();
        let mut rx = subscribe(broker.port, "site-a/#").await;
        let plugin = mqtt(
            broker.port,
            "topic = \"site-a/{topic}/text\"\npayload = \"body\"\nqos = 0",
        );

        plugin.send(&notification()).await.unwrap();

        let got = next(&mut rx).await;
        assert_eq!(got.topic, "site-a/lookout/edge-42/alarms/cpu/text");
        assert_eq!(got.payload.as_ref(), b"cpu is anomalous on edge-42");
    }

    #[tokio::test]
    async fn concurrent_sends_are_each_acknowledged() {
        let broker = Mosquitto::start();
        let mut rx = subscribe(broker.port, "lookout/#").await;
        let plugin = Arc::new(mqtt(broker.port, ""));

        let mut sends = tokio::task::JoinSet::new();
        for i in 0..50 {
            let plugin = Arc::clone(&plugin);
            sends.spawn(async move {
                let mut n = notification();
                n.topic = format!("lookout/edge-{i}/alarms/cpu");
                plugin.send(&n).await
            });
        }
        while let Some(result) = sends.join_next().await {
            result.unwrap().unwrap();
        }

        let mut topics = Vec::new();
        for _ in 0..50 {
            topics.push(next(&mut rx).await.topic);
        }
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), 50);
    }

    #[tokio::test]
    async fn a_send_while_the_broker_is_down_asks_for_a_retry_within_the_timeout() {
        let plugin = mqtt(free_port(), "timeout = \"300ms\"");

        let started = Instant::now();
        let result = plugin.send(&notification()).await;
        let elapsed = started.elapsed();

        match result {
            Err(SendError::Retry(m)) => assert!(m.contains("not connected"), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn reconnects_after_the_broker_restarts() {
        let mut broker = Mosquitto::start();
        let port = broker.port;
        let plugin = mqtt(port, "timeout = \"2s\"");
        plugin.send(&notification()).await.unwrap();

        broker.stop();
        match plugin.send(&notification()).await {
            Err(SendError::Retry(_)) => {}
            other => panic!("expected a retry while the broker is down, got {other:?}"),
        }

        let broker = Mosquitto::start_on(port, "");
        let mut rx = subscribe(broker.port, "lookout/#").await;
        let started = Instant::now();
        loop {
            match plugin.send(&notification()).await {
                Ok(()) => break,
                Err(SendError::Retry(_)) if started.elapsed() < WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("no delivery after the restart: {other:?}"),
            }
        }
        let got = next(&mut rx).await;
        assert_eq!(got.payload.as_ref(), notification().raw.as_slice());
        // Nothing queued while the broker was down is published late.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn publishes_over_tls_to_a_broker_signed_by_the_ca_file() {
        let (broker, tls_port) = Mosquitto::start_with_tls();
        let mut rx = subscribe(broker.port, "lookout/#").await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        let cfg: Config = toml::from_str(&format!(
            "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = {:?}",
            ca.display().to_string()
        ))
        .unwrap();
        let plugin = Mqtt::build("upstream", &cfg).unwrap();

        plugin.send(&notification()).await.unwrap();

        let got = next(&mut rx).await;
        assert_eq!(got.payload.as_ref(), notification().raw.as_slice());
    }

    #[tokio::test]
    async fn a_broker_certificate_the_ca_file_did_not_sign_is_retried_and_named() {
        let (_broker, tls_port) = Mosquitto::start_with_tls();
        let dir = tempfile::tempdir().unwrap();
        // A certificate that is not a CA, let alone this broker's.
        let ca = dir.path().join("other.pem");
        std::fs::write(&ca, TEST_SERVER_CERT).unwrap();
        let cfg: Config = toml::from_str(&format!(
            "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = {:?}\ntimeout = \"1s\"",
            ca.display().to_string()
        ))
        .unwrap();
        let plugin = Mqtt::build("upstream", &cfg).unwrap();

        match plugin.send(&notification()).await {
            Err(SendError::Retry(m)) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_publish_the_broker_never_acknowledges_is_retried_after_the_timeout() {
        // A "broker" that accepts the connection and then ignores everything.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await; // CONNECT
            stream.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap(); // CONNACK, accepted
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let plugin = mqtt(port, "timeout = \"500ms\"");

        match plugin.send(&notification()).await {
            Err(SendError::Retry(m)) => assert!(m.contains("no PUBACK within"), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn config_errors_name_the_key() {
        let build = |text: &str| {
            let cfg: Config = toml::from_str(text).unwrap();
            Mqtt::build("upstream", &cfg).err().map(|e| e.to_string())
        };
        let err = build("url = \"mqtt://broker.local\"\nca_file = \"/x.pem\"").unwrap();
        assert!(err.starts_with("targets.upstream.ca_file:"), "{err}");
        let err = build("url = \"mqtts://broker.local\"\ncert_file = \"/x.pem\"").unwrap();
        assert!(err.starts_with("targets.upstream.key_file:"), "{err}");
        let err =
            build("url = \"mqtts://broker.local\"\nca_file = \"/nonexistent/ca.pem\"").unwrap();
        assert!(
            err.starts_with("targets.upstream.ca_file: /nonexistent/ca.pem:"),
            "{err}"
        );
        let err = build("url = \"mqtt://broker.local\"\nqos = 2").unwrap();
        assert!(err.starts_with("targets.upstream.qos:"), "{err}");
        let err = build("url = \"mqtt://broker.local\"\ntopic = \"a/+/b\"").unwrap();
        assert!(err.starts_with("targets.upstream.topic:"), "{err}");
        let err = build("url = \"mqtt://broker.local\"\npassword = \"pw\"").unwrap();
        assert!(err.starts_with("targets.upstream.username:"), "{err}");
        assert!(!err.contains("pw\""), "{err}");
        let err = build("url = \"broker.local:1883\"").unwrap();
        assert!(err.starts_with("targets.upstream.url:"), "{err}");
        assert!(toml::from_str::<Config>("url = \"mqtt://h\"\nkeepalive = 5").is_err());
        assert!(toml::from_str::<Config>("url = \"mqtt://h\"\npayload = \"json\"").is_err());
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let cfg: Config = toml::from_str("url = \"mqtt://127.0.0.1:1\"").unwrap();
        let err = Mqtt::build("upstream", &cfg).err().unwrap().to_string();
        assert!(err.contains("tokio runtime"), "{err}");
    }
}
