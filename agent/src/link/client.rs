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
//!
//! One link may also take messages in (rules documents, ingested events): its
//! subscriptions are made again on every `ConnAck` (the session is clean), and what
//! arrives goes into a bounded [`Inbox`] that says what happens when it is full.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use lookout_shared::time::Jitter;

use crate::config::MqttSettings;

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Largest packet a link reads when it subscribes. A packet over the client's limit drops
/// the connection, and a retained one would then be redelivered on every reconnect, so
/// the limit is generous and the receiver judges sizes itself; larger packets are the
/// broker's to refuse (mosquitto: `message_size_limit`).
pub const INCOMING_PACKET_LIMIT: usize = 4 * 1024 * 1024;

/// Largest packet a link that subscribes to nothing reads (acks and the like).
const QUIET_PACKET_LIMIT: usize = 256 * 1024;

/// Dropped inbox messages are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// A message from one of the link's subscriptions.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What a link subscribes to and where the messages go.
#[derive(Debug)]
pub struct Inbox {
    /// Subscribed at QoS 1 on every connect.
    pub filters: Vec<String>,
    /// Topics whose messages must not be lost (rules documents): when the channel is full
    /// the link waits for room, which holds back the connection. Messages on other topics
    /// (ingested events) are dropped when it is full and counted in
    /// [`LinkStats::inbox_dropped`], so a flood of readings cannot stall the agent.
    pub reliable: Vec<String>,
    pub tx: mpsc::Sender<Incoming>,
}

/// Counters for the agent's own health; shared by all links of the process.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// Incoming messages dropped because the inbox was full.
    pub inbox_dropped: AtomicU64,
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
    /// Subscribed again on every connect.
    filters: Arc<Vec<String>>,
}

impl Link {
    /// Starts the connection's event loop on the runtime; returns at once.
    pub fn connect(
        settings: &MqttSettings,
        host: &str,
        client_id: &str,
        stats: Arc<LinkStats>,
    ) -> (Self, JoinHandle<()>) {
        Self::start(settings, host, client_id, stats, None)
    }

    /// As [`Link::connect`], and subscribes to `inbox.filters` on every connect.
    pub fn connect_with_inbox(
        settings: &MqttSettings,
        host: &str,
        client_id: &str,
        stats: Arc<LinkStats>,
        inbox: Inbox,
    ) -> (Self, JoinHandle<()>) {
        Self::start(settings, host, client_id, stats, Some(inbox))
    }

    fn start(
        settings: &MqttSettings,
        host: &str,
        client_id: &str,
        stats: Arc<LinkStats>,
        inbox: Option<Inbox>,
    ) -> (Self, JoinHandle<()>) {
        let status_topic = lookout_shared::topics::status(&settings.prefix, host);
        let mut opts = MqttOptions::new(client_id, settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive);
        if let Some((user, password)) = &settings.credentials {
            opts.set_credentials(user.clone(), password.expose().to_owned());
        }
        opts.set_clean_session(true);
        let incoming_limit = if inbox.is_some() {
            INCOMING_PACKET_LIMIT
        } else {
            QUIET_PACKET_LIMIT
        };
        opts.set_max_packet_size(incoming_limit, 256 * 1024);
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
            filters: Arc::new(
                inbox
                    .as_ref()
                    .map(|i| i.filters.clone())
                    .unwrap_or_default(),
            ),
        };
        let task = tokio::spawn(drive(
            eventloop,
            link.clone(),
            host.to_owned(),
            format!("{}:{}", settings.host, settings.port),
            (settings.reconnect_min, settings.reconnect_max),
            inbox.map(Receiving::new),
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

    /// Stops re-sending a state after reconnects (it stays retained on the broker): for
    /// states that are many and final, such as resolved rule alarms of groups long gone,
    /// whose memory would otherwise grow with every group ever seen.
    pub fn forget_state(&self, topic: &str) {
        if let Ok(mut map) = self.retained.lock() {
            map.remove(topic);
        }
    }

    /// Says goodbye: retained `offline`, then a clean disconnect (which suppresses the
    /// last will, so the explicit message is what subscribers see).
    pub async fn close(&self) {
        let _ = self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, OFFLINE);
        let _ = self.client.try_disconnect();
    }

    /// Subscribes again, announces the host and re-sends every alarm state. Runs as its
    /// own task with waiting requests: these must not be dropped, and waiting inside the
    /// event-loop task would stop the loop that makes room. Subscriptions go first, so
    /// that a subscriber who sees `online` knows the agent listens.
    fn on_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.drop_logged.store(false, Ordering::Relaxed);
        let states: Vec<(String, Vec<u8>)> = match self.retained.lock() {
            Ok(map) => map.iter().map(|(t, p)| (t.clone(), p.clone())).collect(),
            Err(_) => Vec::new(),
        };
        let client = self.client.clone();
        let status = self.status_topic.clone();
        let filters = Arc::clone(&self.filters);
        tokio::spawn(async move {
            for filter in filters.iter() {
                if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(filter, error = %e, "MQTT subscribe failed");
                }
            }
            let _ = client.publish(status, QoS::AtLeastOnce, true, ONLINE).await;
            for (topic, payload) in states {
                let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
            }
        });
    }
}

/// The receiving end of a link's event loop: hands messages to the inbox.
struct Receiving {
    inbox: Inbox,
    /// When a drop was last logged, and the drops since.
    drop_log: Option<std::time::Instant>,
    unlogged_drops: u64,
}

impl Receiving {
    fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            drop_log: None,
            unlogged_drops: 0,
        }
    }

    async fn deliver(&mut self, p: Publish, stats: &LinkStats) {
        let reliable = self.inbox.reliable.contains(&p.topic);
        let msg = Incoming {
            topic: p.topic,
            payload: p.payload.to_vec(),
            retain: p.retain,
        };
        if reliable {
            // Closed only at shutdown, when nothing is wanted any more.
            let _ = self.inbox.tx.send(msg).await;
            return;
        }
        match self.inbox.tx.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let total = stats.inbox_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.unlogged_drops += 1;
                let now = std::time::Instant::now();
                if self
                    .drop_log
                    .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)
                {
                    tracing::warn!(
                        topic = %msg.topic,
                        dropped = self.unlogged_drops,
                        total,
                        "incoming messages dropped: the agent cannot keep up (logged at most every 10 s)"
                    );
                    self.drop_log = Some(now);
                    self.unlogged_drops = 0;
                }
            }
        }
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
    mut receiving: Option<Receiving>,
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
            Ok(Event::Incoming(Packet::Publish(p))) => {
                tracing::debug!(host, topic = %p.topic, bytes = p.payload.len(), retain = p.retain, "MQTT message in");
                if let Some(r) = &mut receiving {
                    r.deliver(p, &link.stats).await;
                }
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
