//! An MQTT connection in either version: the handful of operations the agent's link
//! (link/client.rs) and the `[[upstream]]` forwarder use (publish, subscribe,
//! disconnect, the next event) over rumqttc's MQTT 5 and 3.1.1 clients, which version to
//! speak to a broker, and what MQTT 5 adds to the agent's messages (user properties).
//!
//! With `protocol = "auto"` a connection first offers MQTT 5. A broker that refuses it
//! (CONNACK "unsupported protocol version", a 3.1.1 CONNACK the MQTT 5 client cannot read,
//! or a connection closed right after the CONNECT, as rumqttd's 3.1.1-only listener does)
//! is asked again at once in 3.1.1. The first version a broker accepts is remembered per
//! URL for the life of the process ([`Memory`]), so a later outage is never mistaken for
//! a refusal of the version.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lookout_shared::config::Invalid;
use lookout_shared::mqtt::{ClientConfig, Session};
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as Code5, Packet as Packet5, PubAckReason, PublishProperties,
};
use rumqttc::v5::mqttbytes::{Error as Bytes5Error, QoS as QoS5};
use rumqttc::v5::{ConnectionError as Error5, StateError as State5};
use rumqttc::{Outgoing, QoS};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A version of the protocol on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// `protocol` in `[[upstream]]`: a version, or MQTT 5 where the broker speaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Auto,
    Only(Version),
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Protocol::Auto => "auto",
            Protocol::Only(v) => v.as_str(),
        })
    }
}

impl<'de> Deserialize<'de> for Protocol {
    /// `"auto"`, `"5"` or `"3.1.1"`; the number `5` is taken too.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        match text.trim() {
            "auto" => Ok(Protocol::Auto),
            "5" | "5.0" => Ok(Protocol::Only(Version::V5)),
            "3.1.1" | "4" => Ok(Protocol::Only(Version::V311)),
            other => Err(serde::de::Error::custom(format!(
                "{other:?}: expected \"auto\", \"5\" or \"3.1.1\""
            ))),
        }
    }
}

/// The version each broker (by URL) accepted, for the life of the process.
#[derive(Debug, Default)]
pub struct Memory(Mutex<HashMap<String, Version>>);

impl Memory {
    /// The process's memory.
    pub fn global() -> &'static Memory {
        static MEMORY: OnceLock<Memory> = OnceLock::new();
        MEMORY.get_or_init(Memory::default)
    }

    pub fn get(&self, url: &str) -> Option<Version> {
        self.0.lock().ok().and_then(|m| m.get(url).copied())
    }

    /// Whether this is news (the first time, or another version than before).
    fn remember(&self, url: &str, v: Version) -> bool {
        self.0
            .lock()
            .map(|mut m| m.insert(url.to_owned(), v) != Some(v))
            .unwrap_or(false)
    }
}

/// Which version to offer a broker next; a pure state machine over [`Memory`].
#[derive(Debug)]
pub struct Negotiation<'m> {
    protocol: Protocol,
    url: String,
    trying: Version,
    memory: &'m Memory,
}

impl<'m> Negotiation<'m> {
    pub fn new(protocol: Protocol, url: &str, memory: &'m Memory) -> Self {
        let trying = match protocol {
            Protocol::Only(v) => v,
            Protocol::Auto => memory.get(url).unwrap_or(Version::V5),
        };
        Self {
            protocol,
            url: url.to_owned(),
            trying,
            memory,
        }
    }

    /// The version of the next connection attempt.
    pub fn version(&self) -> Version {
        self.trying
    }

    /// A connection failed. True when the next attempt should be made at once in the
    /// other version (MQTT 5 refused by a broker whose version is not known yet).
    pub fn failed(&mut self, f: &Failure) -> bool {
        if self.protocol != Protocol::Auto || self.memory.get(&self.url).is_some() {
            return false;
        }
        match self.trying {
            Version::V5 if f.wrong_version => {
                self.trying = Version::V311;
                true
            }
            // 3.1.1 did not work either: the broker is away, not old; start again at 5.
            Version::V311 => {
                self.trying = Version::V5;
                false
            }
            Version::V5 => false,
        }
    }

    /// The broker accepted the connection. True the first time it is known which version
    /// this URL speaks, with `auto` (worth a log line).
    pub fn connected(&mut self) -> bool {
        self.protocol == Protocol::Auto && self.memory.remember(&self.url, self.trying)
    }
}

/// What MQTT 5 adds to a publish: dropped on a 3.1.1 connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// Seconds the broker may keep the message for a subscriber that is away.
    pub expiry: Option<u32>,
    pub user: Vec<(String, String)>,
}

/// A connection failure, as a log line says it.
#[derive(Debug)]
pub struct Failure {
    pub text: String,
    /// The failure looks like a refusal of the version offered.
    pub wrong_version: bool,
    /// The connection ended on an incoming packet over the limit, of this size.
    pub oversize: Option<usize>,
}

/// What the connection reports, in either version.
#[derive(Debug)]
pub enum Event {
    Connected,
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// A publish went out with this packet id (in the order they were handed over).
    Sent(u16),
    /// The broker acknowledged a publish; `refused` holds its reason code when it did not
    /// take it (MQTT 5 only).
    Acked {
        pkid: u16,
        refused: Option<String>,
    },
    /// The broker answered a SUBSCRIBE.
    SubAck,
    /// The client said goodbye (a DISCONNECT went out).
    Disconnected,
    Other,
}

/// The handle the forwarder publishes through.
#[derive(Clone, Debug)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection's event loop (boxed: each is most of a kilobyte, made once a
/// connection).
pub enum Connection {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A client and its event loop for `config` in `version`. `session_expiry` applies to
/// MQTT 5; with 3.1.1 a non-zero one asks for a persistent session (the broker's own
/// limit then decides how long it is kept).
pub fn open(
    config: &ClientConfig,
    session: &Session,
    session_expiry: Duration,
    version: Version,
    cap: usize,
) -> (Client, Connection) {
    let session = Session {
        clean: session.clean && session_expiry.is_zero(),
        ..session.clone()
    };
    match version {
        Version::V311 => {
            let (c, l) = rumqttc::AsyncClient::new(config.options(&session), cap);
            (Client::V311(c), Connection::V311(Box::new(l)))
        }
        Version::V5 => {
            let (c, l) =
                rumqttc::v5::AsyncClient::new(config.options_v5(&session, session_expiry), cap);
            (Client::V5(c), Connection::V5(Box::new(l)))
        }
    }
}

impl Client {
    pub fn version(&self) -> Version {
        match self {
            Client::V311(_) => Version::V311,
            Client::V5(_) => Version::V5,
        }
    }

    /// A QoS 1 publish, without waiting; false when the request queue is full.
    pub fn try_publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        props: Option<Properties>,
    ) -> bool {
        self.try_publish_qos(topic, QoS::AtLeastOnce, retain, payload, props)
    }

    /// A publish at `qos` (0 or 1), without waiting; false when the request queue is
    /// full. `props` go out only on an MQTT 5 connection.
    pub fn try_publish_qos(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        props: Option<Properties>,
    ) -> bool {
        match self {
            Client::V311(c) => c.try_publish(topic, qos, retain, payload).is_ok(),
            Client::V5(c) => {
                let qos = qos5(qos);
                let Some(p) = props.filter(|p| p.expiry.is_some() || !p.user.is_empty()) else {
                    return c.try_publish(topic, qos, retain, payload).is_ok();
                };
                let properties = PublishProperties {
                    message_expiry_interval: p.expiry,
                    user_properties: p.user,
                    ..PublishProperties::default()
                };
                c.try_publish_with_properties(topic, qos, retain, payload, properties)
                    .is_ok()
            }
        }
    }

    /// A QoS 1 subscription, waiting for room in the request queue.
    pub async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(filter, QoS5::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
            Client::V5(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
        }
    }

    pub fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, QoS5::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl Connection {
    /// The next event. After a failure nothing of the old connection is sent again: the
    /// forwarder re-sends what was not acknowledged itself, and a resumed session must
    /// not put publishes on the wire that it does not know the packet ids of.
    pub async fn poll(&mut self) -> Result<Event, Failure> {
        let r = match self {
            Connection::V311(l) => l.poll().await.map(from_v311).map_err(failure_v311),
            Connection::V5(l) => l.poll().await.map(from_v5).map_err(failure_v5),
        };
        if r.is_err() {
            match self {
                Connection::V311(l) => l.pending.clear(),
                Connection::V5(l) => l.pending.clear(),
            }
        }
        r
    }
}

fn outgoing(o: Outgoing) -> Event {
    match o {
        Outgoing::Publish(pkid) => Event::Sent(pkid),
        Outgoing::Disconnect => Event::Disconnected,
        _ => Event::Other,
    }
}

fn qos5(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn from_v311(e: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Packet as P};
    match e {
        E::Incoming(P::ConnAck(_)) => Event::Connected,
        E::Incoming(P::Publish(p)) => Event::Publish {
            topic: p.topic,
            payload: p.payload.to_vec(),
            retain: p.retain,
        },
        E::Incoming(P::PubAck(a)) => Event::Acked {
            pkid: a.pkid,
            refused: None,
        },
        E::Incoming(P::SubAck(_)) => Event::SubAck,
        E::Outgoing(o) => outgoing(o),
        E::Incoming(_) => Event::Other,
    }
}

fn from_v5(e: rumqttc::v5::Event) -> Event {
    use rumqttc::v5::Event as E;
    match e {
        E::Incoming(Packet5::ConnAck(_)) => Event::Connected,
        E::Incoming(Packet5::Publish(p)) => Event::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            retain: p.retain,
        },
        E::Incoming(Packet5::PubAck(a)) => Event::Acked {
            pkid: a.pkid,
            refused: match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                r => Some(format!("{r:?}")),
            },
        },
        E::Incoming(Packet5::SubAck(_)) => Event::SubAck,
        E::Outgoing(o) => outgoing(o),
        E::Incoming(_) => Event::Other,
    }
}

fn failure_v311(e: rumqttc::ConnectionError) -> Failure {
    let wrong_version = matches!(
        e,
        rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::RefusedProtocolVersion
        )
    );
    let oversize = match &e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    };
    Failure {
        text: e.to_string(),
        wrong_version,
        oversize,
    }
}

/// An MQTT 5 failure, reason codes named. A broker that speaks only 3.1.1 answers a
/// version 5 CONNECT with a 3.1.1 CONNACK (code 1, which is no MQTT 5 reason code) or by
/// closing the connection.
fn failure_v5(e: Error5) -> Failure {
    let wrong_version = match &e {
        Error5::ConnectionRefused(Code5::UnsupportedProtocolVersion) => true,
        Error5::MqttState(State5::ConnectionAborted | State5::Deserialization(_)) => true,
        Error5::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    };
    let text = match &e {
        Error5::ConnectionRefused(code) => {
            format!("connection refused: CONNACK reason code {code:?}")
        }
        Error5::MqttState(State5::ServerDisconnect {
            reason_code,
            reason_string,
        }) => match reason_string {
            Some(s) => {
                format!("the broker disconnected: DISCONNECT reason code {reason_code:?} ({s})")
            }
            None => format!("the broker disconnected: DISCONNECT reason code {reason_code:?}"),
        },
        Error5::MqttState(State5::Deserialization(Bytes5Error::InvalidConnectReturnCode(n))) => {
            format!("the broker answered with CONNACK code {n}, not an MQTT 5 reason code")
        }
        _ => e.to_string(),
    };
    let oversize = match e {
        Error5::MqttState(State5::Deserialization(Bytes5Error::PayloadSizeLimitExceeded {
            pkt_size,
            ..
        })) => Some(pkt_size),
        _ => None,
    };
    Failure {
        text,
        wrong_version,
        oversize,
    }
}

/// The MQTT 5 user properties of a message, from its (local) topic:
/// `<prefix>/<host>/scores/<model>` gives `host` and `model`,
/// `<prefix>/<host>/alarms/<source>` gives `host` and the source as `model` (`cpu`,
/// `host`, `rule/<ruleId>/<device>`), any other topic under a host (`<prefix>/<host>/x`)
/// gives `host` alone; topics not under a host (`<prefix>/rules`) give none.
pub fn user_properties(prefix: &str, local: &str) -> Vec<(String, String)> {
    let mut levels = local.splitn(4, '/');
    let (Some(p), Some(host), Some(kind)) = (levels.next(), levels.next(), levels.next()) else {
        return Vec::new();
    };
    if p != prefix || host.is_empty() {
        return Vec::new();
    }
    let mut out = vec![("host".to_owned(), host.to_owned())];
    if let (Some(model), "scores" | "alarms") = (levels.next(), kind)
        && !model.is_empty()
    {
        out.push(("model".to_owned(), model.to_owned()));
    }
    out
}

/// An expiry or interval as MQTT 5 counts it: whole seconds; zero is none.
pub fn expiry_seconds(key: &str, d: Duration) -> Result<Option<u32>, Invalid> {
    if d.is_zero() {
        return Ok(None);
    }
    if d.subsec_nanos() != 0 {
        return Err(Invalid::new(
            key,
            "must be whole seconds (MQTT 5 counts in seconds), or \"0s\"",
        ));
    }
    u32::try_from(d.as_secs())
        .map(Some)
        .map_err(|_| Invalid::new(key, "must be at most 4294967295 s (about 136 years)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Failure {
        failure_v5(Error5::ConnectionRefused(Code5::UnsupportedProtocolVersion))
    }

    fn down() -> Failure {
        failure_v5(Error5::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn auto_offers_mqtt_5_first_and_falls_back_at_once_when_the_broker_refuses_it() {
        let memory = Memory::default();
        let mut n = Negotiation::new(Protocol::Auto, "mqtt://a:1883", &memory);
        assert_eq!(n.version(), Version::V5);
        assert!(n.failed(&refused()), "a refusal switches at once");
        assert_eq!(n.version(), Version::V311);
        assert!(n.connected(), "the first choice is news");
        assert_eq!(memory.get("mqtt://a:1883"), Some(Version::V311));
        // Remembered: a later connection starts in 3.1.1 and never flips again.
        let mut later = Negotiation::new(Protocol::Auto, "mqtt://a:1883", &memory);
        assert_eq!(later.version(), Version::V311);
        assert!(!later.failed(&refused()));
        assert!(!later.connected(), "logged once");
        assert_eq!(
            Negotiation::new(Protocol::Auto, "mqtt://b:1883", &memory).version(),
            Version::V5
        );
    }

    #[test]
    fn a_broker_that_is_down_is_not_taken_for_an_old_one() {
        let memory = Memory::default();
        let mut n = Negotiation::new(Protocol::Auto, "mqtt://a", &memory);
        assert!(!n.failed(&down()));
        assert_eq!(n.version(), Version::V5);
        // Refused in 5, then 3.1.1 fails too: the broker is away; back to 5, not at once.
        assert!(n.failed(&refused()));
        assert!(!n.failed(&down()));
        assert_eq!(n.version(), Version::V5);
        assert_eq!(memory.get("mqtt://a"), None);
        // Accepted in 5: remembered, and a connection closed later is not a refusal.
        assert!(n.connected());
        assert!(!n.failed(&refused()));
        assert_eq!(n.version(), Version::V5);
    }

    #[test]
    fn a_fixed_protocol_never_falls_back() {
        let memory = Memory::default();
        let mut n = Negotiation::new(Protocol::Only(Version::V5), "mqtt://a", &memory);
        assert!(!n.failed(&refused()));
        assert_eq!(n.version(), Version::V5);
        assert!(!n.connected());
        let n = Negotiation::new(Protocol::Only(Version::V311), "mqtt://a", &memory);
        assert_eq!(n.version(), Version::V311);
    }

    #[test]
    fn refusals_of_the_version_are_told_from_other_failures() {
        assert!(refused().wrong_version);
        assert!(
            failure_v5(Error5::MqttState(State5::ConnectionAborted)).wrong_version,
            "rumqttd's 3.1.1 listener closes the connection"
        );
        let old = failure_v5(Error5::MqttState(State5::Deserialization(
            Bytes5Error::InvalidConnectReturnCode(1),
        )));
        assert!(
            old.wrong_version && old.text.contains("CONNACK code 1"),
            "{}",
            old.text
        );
        assert!(!down().wrong_version);
        let login = failure_v5(Error5::ConnectionRefused(Code5::NotAuthorized));
        assert!(!login.wrong_version);
        assert!(login.text.contains("NotAuthorized"), "{}", login.text);
    }

    #[test]
    fn a_packet_over_the_limit_is_told_in_either_version() {
        let v5 = failure_v5(Error5::MqttState(State5::Deserialization(
            Bytes5Error::PayloadSizeLimitExceeded {
                pkt_size: 52_428_802,
                max: 4_194_304,
            },
        )));
        assert_eq!(v5.oversize, Some(52_428_802));
        let v311 = failure_v311(rumqttc::ConnectionError::MqttState(
            rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(52_428_802),
            ),
        ));
        assert_eq!(v311.oversize, Some(52_428_802));
        assert_eq!(down().oversize, None);
        let reset = failure_v311(rumqttc::ConnectionError::Io(
            std::io::ErrorKind::ConnectionReset.into(),
        ));
        assert_eq!(reset.oversize, None);
    }

    #[test]
    fn protocol_reads_the_ways_people_write_it() {
        let p = |t: &str| toml::from_str::<HashMap<String, Protocol>>(t).map(|m| m["p"]);
        assert_eq!(p("p = \"auto\"").unwrap(), Protocol::Auto);
        assert_eq!(p("p = \"5\"").unwrap(), Protocol::Only(Version::V5));
        assert_eq!(p("p = 5").unwrap(), Protocol::Only(Version::V5));
        assert_eq!(p("p = \"3.1.1\"").unwrap(), Protocol::Only(Version::V311));
        let e = p("p = \"3\"").unwrap_err().to_string();
        assert!(e.contains("3.1.1"), "{e}");
    }

    #[test]
    fn user_properties_name_the_host_and_the_model_or_alarm_source() {
        let props = |t: &str| user_properties("lookout", t);
        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            props("lookout/h1/scores/cpu"),
            kv(&[("host", "h1"), ("model", "cpu")])
        );
        assert_eq!(
            props("lookout/h1/alarms/disk"),
            kv(&[("host", "h1"), ("model", "disk")])
        );
        assert_eq!(
            props("lookout/h1/alarms/rule/r7/pump-2"),
            kv(&[("host", "h1"), ("model", "rule/r7/pump-2")])
        );
        assert_eq!(props("lookout/h1/metrics"), kv(&[("host", "h1")]));
        assert_eq!(props("lookout/h1/agent/stats"), kv(&[("host", "h1")]));
        assert_eq!(props("lookout/h1/scores"), kv(&[("host", "h1")]));
        assert!(props("lookout/rules").is_empty());
        assert!(props("other/h1/scores/cpu").is_empty());
        assert!(props("lookout//metrics").is_empty());
    }
}
