//! The source: the bridge's MQTT subscription, and what arrives on it sorted into the
//! control messages and the messages to route.
//!
//! QoS 1 with manual acks on a persistent session: a message is acknowledged only after
//! the pipeline has queued it for every target (and, with `bridge.state_dir`, written it
//! to the notification log), so a bridge that dies, even by `kill -9`, loses nothing: the
//! broker still holds what was not acknowledged. rumqttc reconnects at once on its own;
//! the waits between attempts are ours ([`Backoff`]).
//!
//! Payloads are decoded later, in the pipeline ([`crate::message`]), after the routes'
//! limits: a flood on one route is cheap to drop before it is parsed.

use std::collections::VecDeque;
use std::time::Duration;

use lookout_shared::mqtt::Session;
use lookout_shared::time::Backoff;
use lookout_shared::topics::Kind;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS};

use crate::Error;
use crate::config::Settings;
use crate::stats::RateLimited;

/// Largest MQTT packet read from the broker; larger ones are the broker's to refuse
/// (mosquitto: `message_size_limit`).
const INCOMING_PACKET_LIMIT: usize = 16 * 1024 * 1024;
/// Requests (acks, subscriptions, stats) the client may hold before the event loop takes
/// them.
const REQUESTS: usize = 1024;
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long a stopping bridge waits to say DISCONNECT to the broker.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);

/// A message from the broker, by what it is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The fleet-wide silences document, `<prefix>/bridge/silences`.
    Silences { topic: &'a str, payload: &'a [u8] },
    /// An acknowledgement, `<prefix>/bridge/ack` ([`crate::ack`]).
    Ack { payload: &'a [u8] },
    /// A host's availability, `<prefix>/<host>/status`; `retained`: a state the broker
    /// replayed on subscribing, not news.
    Status {
        host: &'a str,
        payload: &'a [u8],
        retained: bool,
    },
    /// A host's `agent/stats`, subscribed for the dead-man alarm only: a sign of life,
    /// not routed.
    HostStats { host: &'a str },
    /// Anything else: alarms and other messages, for the routes.
    Message { topic: &'a str, payload: &'a [u8] },
    /// A retained state the broker replayed to a bridge of a `share_group` on
    /// subscribing: another bridge of the group was sent it live and notified it, and this
    /// bridge's notification log cannot know that. mosquitto replays retained messages to
    /// shared subscriptions too, so a bridge restarted beside its partner would notify
    /// every firing alarm its partner already had (measured: 293 duplicates in a 1,000-host
    /// burst, bench/fleet-load). Counted, not routed.
    Replayed { topic: &'a str },
}

/// The topics the bridge itself listens to, besides the configured filters.
#[derive(Clone, Debug)]
pub struct ControlTopics {
    prefix: String,
    silences: String,
    ack: String,
    /// `<prefix>/+/agent/stats` is subscribed for the dead-man alarm.
    host_stats: bool,
    /// The configured filters are shared (`mqtt.share_group`).
    shared: bool,
}

impl ControlTopics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            silences: format!("{prefix}/bridge/silences"),
            ack: lookout_shared::topics::bridge_ack(prefix),
            host_stats: false,
            shared: false,
        }
    }

    /// Also follows every host's `agent/stats` (for the dead-man alarm).
    pub fn with_host_stats(self) -> Self {
        Self {
            host_stats: true,
            ..self
        }
    }

    /// The configured filters are a share group's: retained replays on them are not news.
    pub fn shared(self) -> Self {
        Self {
            shared: true,
            ..self
        }
    }

    /// Sorts one message; `retained`: the broker replayed it from its retained store.
    pub fn sort<'a>(&self, topic: &'a str, payload: &'a [u8], retained: bool) -> Incoming<'a> {
        if topic == self.silences {
            return Incoming::Silences { topic, payload };
        }
        if topic == self.ack {
            return Incoming::Ack { payload };
        }
        match lookout_shared::topics::parse(&self.prefix, topic) {
            Ok((host, Kind::Status)) => Incoming::Status {
                host,
                payload,
                retained,
            },
            Ok((host, Kind::AgentStats)) if self.host_stats => Incoming::HostStats { host },
            // Status and the control topics above are not shared: every bridge needs them.
            _ if retained && self.shared => Incoming::Replayed { topic },
            _ => Incoming::Message { topic, payload },
        }
    }

    /// The subscriptions: the configured filters, then the fleet-wide silences and the
    /// acknowledgements, then with
    /// `inhibit_offline` every host's status. The control topics are not shared
    /// (`$share/`): every bridge of a group needs all of them.
    fn filters(&self, settings: &Settings) -> Vec<String> {
        let mut filters = settings.mqtt.filters.clone();
        filters.push(self.silences.clone());
        filters.push(self.ack.clone());
        if settings.inhibit_offline {
            filters.push(format!("{}/+/status", self.prefix));
        }
        if self.host_stats {
            filters.push(lookout_shared::topics::agent_stats(&self.prefix, "+"));
        }
        filters
    }
}

/// The subscription: the client, its event loop, and the acks not yet sent.
pub struct Subscription {
    client: AsyncClient,
    eventloop: EventLoop,
    filters: Vec<String>,
    pub topics: ControlTopics,
    /// `mqtt[s]://host:port`, for log lines.
    broker: String,
    connected: bool,
    backoff: Backoff,
    failures: RateLimited,
    /// Acks waiting for room in the client's request queue: the event loop can hand us a
    /// burst of messages before it drains that queue, and an ack that is dropped stalls
    /// the broker's window for this client. Bounded by the broker's inflight window.
    unacked: VecDeque<Publish>,
}

impl Subscription {
    /// The client for `settings.mqtt`; it connects when first polled.
    pub fn new(settings: &Settings) -> Result<Self, Error> {
        let session = Session {
            // A persistent session: the broker keeps our QoS 1 messages while we restart.
            clean: false,
            manual_acks: true,
            // Read packets far larger than `max_payload` and reject them ourselves
            // (counted, acked, skipped): a packet over the client's own limit kills the
            // connection, and the broker would redeliver it on every reconnect, blocking
            // the session for good.
            max_incoming: INCOMING_PACKET_LIMIT.max(settings.max_payload + 4096),
            max_outgoing: 64 * 1024,
            last_will: None,
        };
        let c = &settings.mqtt.client;
        let options = c.options(&session);
        let (client, eventloop) = AsyncClient::new(options, REQUESTS);
        let mut topics = ControlTopics::new(&settings.prefix);
        if !settings.silent_after.is_zero() {
            topics = topics.with_host_stats();
        }
        if settings.mqtt.shared {
            topics = topics.shared();
        }
        Ok(Self {
            client,
            eventloop,
            filters: topics.filters(settings),
            topics,
            broker: c.url.display(),
            connected: false,
            backoff: Backoff::new(RECONNECT_MIN, RECONNECT_MAX, &settings.id),
            failures: RateLimited::new(Duration::from_secs(30)),
            unacked: VecDeque::new(),
        })
    }

    /// The next event from the connection. Cancel-safe: nothing is lost when another
    /// branch of a `select!` wins; hand what it returns to [`Self::handle`].
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        self.eventloop.poll().await
    }

    /// Acts on one event: subscribes on every (re)connection, and after an error waits
    /// out the backoff before the next attempt (the caller's loop does nothing else
    /// meanwhile). Returns the message, if the event was one.
    pub async fn handle(&mut self, event: Result<Event, ConnectionError>) -> Option<Publish> {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => self.subscribe(),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::info!(codes = ?ack.return_codes, "subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => return Some(p),
            Ok(_) => {}
            Err(e) => self.failed(&e).await,
        }
        None
    }

    fn subscribe(&mut self) {
        tracing::info!("MQTT connected; subscribing");
        // Acks of the old connection mean nothing to the new one; the broker redelivers
        // those messages and dedup keeps them single.
        self.unacked.clear();
        self.connected = true;
        self.backoff.reset();
        for f in &self.filters {
            if let Err(e) = self.client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                tracing::error!(filter = %f, error = %e, "cannot subscribe");
            }
        }
    }

    async fn failed(&mut self, e: &ConnectionError) {
        let error = e.to_string();
        let broker = &self.broker;
        if self.connected {
            tracing::warn!(%error, "MQTT connection lost; retrying with backoff");
        } else if let Some(hint) = lookout_shared::tls::hint(&error) {
            // A certificate problem does not go away by retrying: say so loudly.
            self.failures.hit(|suppressed| {
                tracing::error!(%broker, %error, hint, suppressed, "MQTT TLS connection refused; retrying with backoff");
            });
        } else {
            self.failures.hit(|suppressed| {
                tracing::warn!(%broker, %error, suppressed, "MQTT connection failed; retrying with backoff");
            });
        }
        self.connected = false;
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    /// True while connected to the broker (from its ConnAck to the next error).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Acknowledges `p` once the client's request queue has room (see [`Self::send_acks`]).
    pub fn ack(&mut self, p: Publish) {
        self.unacked.push_back(p);
    }

    /// Hands the waiting acks to the client, as many as its request queue takes.
    pub fn send_acks(&mut self) {
        while let Some(p) = self.unacked.front() {
            if self.client.try_ack(p).is_err() {
                break;
            }
            self.unacked.pop_front();
        }
    }

    /// Publishes at QoS 0 without waiting; dropped when the request queue is full.
    pub fn publish_lossy(&self, topic: &str, payload: Vec<u8>) {
        let _ = self
            .client
            .try_publish(topic, QoS::AtMostOnce, false, payload);
    }

    /// Publishes at QoS 1 without waiting (a reply to a person or a script that waits for
    /// it); dropped, and logged, when the request queue is full.
    pub fn publish_reliable(&self, topic: &str, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            tracing::warn!(topic, error = %e, "reply not published");
        }
    }

    /// Sends the acks still waiting and a clean DISCONNECT, and waits a little for them to
    /// go out: without them the broker would redeliver messages that are already queued
    /// here, and the next bridge would notify them twice. Messages that arrive meanwhile
    /// are not acked; the broker keeps them for the next session.
    pub async fn close(mut self) {
        for p in self.unacked.drain(..) {
            let _ = self.client.try_ack(&p);
        }
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    _ => {}
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_topics_are_sorted_from_the_messages_to_route() {
        let t = ControlTopics::new("lookout");
        assert_eq!(
            t.sort("lookout/bridge/silences", b"[]", false),
            Incoming::Silences {
                topic: "lookout/bridge/silences",
                payload: b"[]"
            }
        );
        assert_eq!(
            t.sort("lookout/edge-1/status", b"offline", true),
            Incoming::Status {
                host: "edge-1",
                payload: b"offline",
                retained: true
            }
        );
        assert_eq!(
            t.sort("lookout/bridge/ack", b"{}", false),
            Incoming::Ack { payload: b"{}" }
        );
        assert_eq!(
            t.sort("lookout/edge-1/agent/stats", b"{}", false),
            Incoming::Message {
                topic: "lookout/edge-1/agent/stats",
                payload: b"{}"
            },
            "routed like any message unless the dead-man alarm follows it"
        );
        assert_eq!(
            t.clone()
                .with_host_stats()
                .sort("lookout/edge-1/agent/stats", b"{}", false),
            Incoming::HostStats { host: "edge-1" }
        );
        for topic in [
            "lookout/bridge/ack/reply",
            "lookout/edge-1/alarms/cpu",
            "plant/fan",
            "other/edge-1/status",
        ] {
            assert_eq!(
                t.sort(topic, b"x", false),
                Incoming::Message {
                    topic,
                    payload: b"x"
                }
            );
        }
    }

    #[test]
    fn a_share_group_member_does_not_route_retained_replays_but_keeps_live_ones_and_status() {
        let t = ControlTopics::new("lookout").shared();
        let alarm = "lookout/edge-1/alarms/cpu";
        assert_eq!(
            t.sort(alarm, b"x", true),
            Incoming::Replayed { topic: alarm }
        );
        assert_eq!(
            t.sort(alarm, b"x", false),
            Incoming::Message {
                topic: alarm,
                payload: b"x"
            }
        );
        assert!(matches!(
            t.sort("lookout/edge-1/status", b"offline", true),
            Incoming::Status { retained: true, .. }
        ));
        assert!(matches!(
            t.sort("lookout/bridge/silences", b"[]", true),
            Incoming::Silences { .. }
        ));
        let alone = ControlTopics::new("lookout");
        assert!(matches!(
            alone.sort(alarm, b"x", true),
            Incoming::Message { .. }
        ));
    }
}
