//! One MQTT connection per published host.
//!
//! Each host (the real one, or each simulated host) gets its own connection because its
//! last will, a retained `offline` on `<prefix>/<host>/status`, is a property of the
//! connection: that is how subscribers learn a host died.
//!
//! Publishing never waits. Metrics and scores are lossy (QoS 0, dropped and counted when
//! the bounded queue is full); alarm states are QoS 1 and retained, and the latest state
//! of every alarm topic is kept (one entry per topic, so bounded by the config) and sent
//! again after every reconnect, so a broker that restarted without persistence still ends
//! up holding the current state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;

use lookout_shared::time::Jitter;

use crate::config::MqttSettings;

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Counters for the agent's own health; shared by all links of the process.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
}

#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
    status_topic: String,
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    stats: Arc<LinkStats>,
    /// Set once the first drop has been logged, so a dead broker does not flood the log.
    drop_logged: Arc<AtomicBool>,
    /// While false, lossy messages are dropped at once instead of filling the queue, so
    /// that what matters (status, alarm states) finds room when the broker comes back.
    connected: Arc<AtomicBool>,
}

impl Link {
    /// Starts the connection's event loop on the runtime; returns at once.
    pub fn connect(
        settings: &MqttSettings,
        host: &str,
        client_id: &str,
        stats: Arc<LinkStats>,
    ) -> (Self, JoinHandle<()>) {
        let status_topic = lookout_shared::topics::status(&settings.prefix, host);
        let mut opts = MqttOptions::new(client_id, settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive);
        if let Some((user, password)) = &settings.credentials {
            opts.set_credentials(user.clone(), password.expose().to_owned());
        }
        opts.set_clean_session(true);
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_last_will(LastWill::new(
            &status_topic,
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(opts, settings.queue);
        let link = Self {
            client,
            status_topic,
            retained: Arc::new(Mutex::new(BTreeMap::new())),
            stats,
            drop_logged: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
        };
        let task = tokio::spawn(drive(
            eventloop,
            link.clone(),
            host.to_owned(),
            format!("{}:{}", settings.host, settings.port),
            (settings.reconnect_min, settings.reconnect_max),
        ));
        (link, task)
    }

    fn try_send(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) -> bool {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.drop_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        topic,
                        dropped = n,
                        "outgoing MQTT queue full, dropping (logged once per connection state)"
                    );
                }
                false
            }
        }
    }

    /// Metrics and scores: QoS 0, dropped while disconnected or when the queue is full.
    pub fn publish_lossy(&self, topic: &str, payload: Vec<u8>) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.try_send(topic, QoS::AtMostOnce, false, payload)
    }

    /// Events worth an acknowledgement but not retention (simulator ground truth).
    pub fn publish_event(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.try_send(topic, QoS::AtLeastOnce, false, payload)
    }

    /// Alarm state: QoS 1, retained, remembered and re-sent after each reconnect.
    pub fn publish_state(&self, topic: &str, payload: Vec<u8>) -> bool {
        if let Ok(mut map) = self.retained.lock() {
            map.insert(topic.to_owned(), payload.clone());
        }
        self.try_send(topic, QoS::AtLeastOnce, true, payload)
    }

    /// Says goodbye: retained `offline`, then a clean disconnect (which suppresses the
    /// last will, so the explicit message is what subscribers see).
    pub async fn close(&self) {
        let _ = self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, OFFLINE);
        let _ = self.client.try_disconnect();
    }

    /// Announces the host and re-sends every alarm state. Runs as its own task with
    /// waiting publishes: these must not be dropped, and waiting inside the event-loop
    /// task would stop the loop that makes room.
    fn on_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.drop_logged.store(false, Ordering::Relaxed);
        let states: Vec<(String, Vec<u8>)> = match self.retained.lock() {
            Ok(map) => map.iter().map(|(t, p)| (t.clone(), p.clone())).collect(),
            Err(_) => Vec::new(),
        };
        let client = self.client.clone();
        let status = self.status_topic.clone();
        tokio::spawn(async move {
            let _ = client.publish(status, QoS::AtLeastOnce, true, ONLINE).await;
            for (topic, payload) in states {
                let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
            }
        });
    }
}

/// Polls the connection forever, sleeping with exponential backoff and jitter after an
/// error (rumqttc retries at once otherwise), logging each change of state once. Ends
/// after a clean disconnect.
async fn drive(
    mut eventloop: EventLoop,
    link: Link,
    host: String,
    broker: String,
    backoff: (Duration, Duration),
) {
    let (min, max) = backoff;
    let mut delay = min;
    let mut connected = false;
    let mut failures: u64 = 0;
    let mut jitter = Jitter::from_name(&host);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if failures > 0 {
                    link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        host,
                        broker,
                        after_failures = failures,
                        "MQTT connection restored"
                    );
                } else {
                    tracing::info!(host, broker, "MQTT connected");
                }
                connected = true;
                failures = 0;
                delay = min;
                link.on_connected();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::debug!(host, "MQTT disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                link.connected.store(false, Ordering::Relaxed);
                if connected || failures == 0 {
                    tracing::warn!(host, broker, error = %e, "MQTT connection lost; retrying with backoff");
                }
                connected = false;
                failures += 1;
                tokio::time::sleep(jitter.apply(delay)).await;
                delay = (delay * 2).min(max);
            }
        }
    }
}
