//! One MQTT connection per published host.
//!
//! Each host (the real one, or each simulated host) gets its own connection because its
//! last will, a retained `offline` on `<prefix>/<host>/status`, is a property of the
//! connection: that is how subscribers learn a host died.
//!
//! Publishing never waits. Metrics and scores are lossy (QoS 0, dropped and counted when
//! the bounded queue is full, and at once while disconnected).
//!
//! Alarm states are QoS 1 and retained, and go through the durable [`Outbox`]: appended
//! before they are sent, removed when the broker's PUBACK comes back, sent again in order
//! after a reconnect or a restart. Every QoS 1 publish of a link (status, events, states)
//! is handed to rumqttc by one function, [`Link::pump`], which records what each one was
//! in a FIFO; rumqttc reports each packet id it assigns in the same order
//! (`Outgoing::Publish`), which maps packet ids to outbox records, and `PubAck` settles
//! them. On a reconnect with a clean session rumqttc forgets what was in flight, so the
//! FIFO is cleared and everything unacknowledged is sent again (duplicates are the price
//! of at-least-once; subscribers deduplicate on the alarm's id, state and severity).
//! The latest state of every alarm topic is also re-sent after each reconnect, so a
//! broker that restarted without persistence still ends up holding the current state.
//!
//! One link may also take messages in (rules documents, ingested events, operators'
//! commands): its subscriptions are made again on every `ConnAck` (the session is clean),
//! and what arrives goes into a bounded [`Inbox`] that says what happens when it is full.
//!
//! A message over the link's packet limit ends the connection (rumqttc cannot skip a
//! packet), and a retained one, on `<prefix>/rules` say, would come again on every
//! reconnect and keep the host's alarms off the broker for good. So the link that meets
//! one counts it ([`LinkStats::oversize`]), logs it at error, and reconnects with its
//! subscriptions paused ([`Pause`]): alarm states flow, documents and events do not, and
//! it subscribes again after a minute, then after twice as long each time it is thrown
//! out again (at most an hour), until the broker no longer holds the message.
//!
//! A link may also announce itself ([`Extras::announce`]: retained QoS 1 messages such as
//! Home Assistant discovery configs, published right after `online` on every connect) and
//! sweep the retained messages an earlier run left under a filter ([`Extras::sweep`],
//! link/sweep.rs), in a task of its own so that nothing waits for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{LastWill, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use lookout_shared::time::Backoff;

use super::buffer::Buffer;
use super::config::MqttSettings;
use super::outbox::{Outbox, OutboxStats};
use super::ring::{Ring, RingSettings, RingStats};
use super::sweep::{Sweep, Verdict};
use super::version::{
    Client, Connection, Event, Failure, Memory, Negotiation, Properties, Version, open,
    user_properties,
};
use crate::out::Out;
use lookout_shared::mqtt::Session;

/// QoS 1 messages that need no durability (status, simulator events, re-sent states) held
/// while the request queue is full or the link is down; beyond this the oldest go.
const TRANSIENT_CAP: usize = 1024;

/// How long `close` waits for the outbox and the goodbye to be acknowledged.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Everything about the link's QoS 1 traffic, behind one lock.
#[derive(Debug)]
struct Qos1 {
    outbox: Outbox,
    transient: VecDeque<(String, Vec<u8>, bool)>,
    /// One entry per QoS 1 publish handed to rumqttc, oldest first: what it carries, and
    /// its topic.
    fifo: VecDeque<(Carried, String)>,
    /// Packet id → what a publish on the wire carries, and its topic.
    by_pkid: HashMap<u16, (Carried, String)>,
    /// When a refusal (an MQTT 5 PUBACK reason code) was last logged, and those since.
    refused_log: Option<std::time::Instant>,
    refused_unlogged: u64,
    /// Scores and metrics kept while the broker is away (`[buffer]`).
    buffer: Option<Buffer>,
    /// The newest outbox record handed to rumqttc in this connection.
    last_sent: u64,
    /// False between a ConnAck and the end of re-subscribing, so that nothing (`online`
    /// first of all) goes out before the link listens again.
    ready: bool,
}

/// What a QoS 1 publish handed to rumqttc carries, to settle when its PUBACK comes.
#[derive(Clone, Copy, Debug)]
enum Carried {
    /// Status, events, re-sent states: nothing to settle.
    Transient,
    /// An outbox record.
    State(u64),
    /// A record of the buffer.
    Buffered(u64),
}

pub use lookout_shared::payload::{OFFLINE, ONLINE};

/// Largest packet a link reads when it subscribes (shared::mqtt says why it is large).
pub const INCOMING_PACKET_LIMIT: usize = lookout_shared::mqtt::SUBSCRIBER_PACKET_LIMIT;

/// Largest packet a link that subscribes to nothing reads (acks and the like).
const QUIET_PACKET_LIMIT: usize = 256 * 1024;

/// Dropped inbox messages are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection that lasted this long resets the reconnect backoff when it ends.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// How long subscriptions pause after a message over the packet limit, at first and at
/// most (doubling each time in between).
const PAUSE_FIRST: Duration = Duration::from_secs(60);
const PAUSE_MAX: Duration = Duration::from_secs(3600);

/// Subscriptions paused after a message over the packet limit (see the module's doc).
#[derive(Debug)]
struct Pause {
    until: Option<std::time::Instant>,
    next: Duration,
}

impl Pause {
    fn new() -> Self {
        Self {
            until: None,
            next: PAUSE_FIRST,
        }
    }

    /// How long is left, if paused.
    fn left(&self) -> Option<Duration> {
        let left = self
            .until?
            .checked_duration_since(std::time::Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Starts a pause; returns its length.
    fn start(&mut self) -> Duration {
        let d = self.next;
        self.until = Some(std::time::Instant::now() + d);
        self.next = (d * 2).min(PAUSE_MAX);
        d
    }
}

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
    /// Topics whose messages must not be lost (rules documents, commands): when the channel
    /// is full the link waits for room, which holds back the connection. Messages on other topics
    /// (ingested events) are dropped when it is full and counted in
    /// [`LinkStats::inbox_dropped`], so a flood of readings cannot stall the agent.
    pub reliable: Vec<String>,
    pub tx: mpsc::Sender<Incoming>,
}

/// What a link does on every connect besides announcing `online` and re-sending states.
#[derive(Debug, Default)]
pub struct Extras {
    /// Subscriptions and where their messages go.
    pub inbox: Option<Inbox>,
    /// `(topic, payload)`, published QoS 1 and retained right after `online` on every
    /// connect, before the alarm states.
    pub announce: Vec<(String, Vec<u8>)>,
    /// A filter whose retained messages on topics not in `announce` are cleared once per
    /// process (link/sweep.rs). It must cover only topics that belong to this link's host.
    pub sweep: Option<String>,
}

/// Counters for the agent's own health; shared by all links of the process.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    /// Scores and metrics kept in the buffer while the broker was away.
    pub buffered: AtomicU64,
    pub reconnects: AtomicU64,
    /// Incoming messages dropped because the inbox was full.
    pub inbox_dropped: AtomicU64,
    /// Connections ended by an incoming message over the packet limit.
    pub oversize: AtomicU64,
    /// QoS 1 publishes the broker refused with an MQTT 5 PUBACK reason code (settled,
    /// not sent again: it would refuse them again).
    pub refused: AtomicU64,
}

#[derive(Clone)]
pub struct Link {
    /// Replaced when `protocol = "auto"` falls back to 3.1.1.
    client: Arc<Mutex<Client>>,
    host: Arc<str>,
    prefix: Arc<str>,
    /// On scores and metrics over MQTT 5.
    message_expiry: Option<u32>,
    status_topic: String,
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    stats: Arc<LinkStats>,
    /// Set once the first drop has been logged, so a dead broker does not flood the log.
    drop_logged: Arc<AtomicBool>,
    /// While false, lossy messages are dropped at once instead of filling the queue, so
    /// that what matters (status, alarm states) finds room when the broker comes back.
    connected: Arc<AtomicBool>,
    /// Subscribed again on every connect, unless paused.
    filters: Arc<Vec<String>>,
    pause: Arc<Mutex<Pause>>,
    qos1: Arc<Mutex<Qos1>>,
    /// Published after `online` on every connect.
    announce: Arc<Vec<(String, Vec<u8>)>>,
    sweep: Option<Arc<Mutex<Sweep>>>,
    /// Counts connections, so that a sweep knows when its connection is gone.
    epoch: Arc<AtomicU64>,
}

impl Link {
    /// Starts the connection's event loop on the runtime; returns at once. On every
    /// connect it subscribes to `extras.inbox`'s filters and publishes `extras.announce`.
    pub fn connect(
        settings: &MqttSettings,
        host: &str,
        client_id: &str,
        stats: Arc<LinkStats>,
        extras: Extras,
    ) -> (Self, JoinHandle<()>) {
        let Extras {
            inbox,
            announce,
            sweep,
        } = extras;
        let status_topic = lookout_shared::topics::status(&settings.prefix, host);
        // A sweep reads retained messages that anyone may have published under its filter.
        let incoming_limit = if inbox.is_some() || sweep.is_some() {
            INCOMING_PACKET_LIMIT
        } else {
            QUIET_PACKET_LIMIT
        };
        let session = Session {
            clean: true,
            manual_acks: false,
            max_incoming: incoming_limit,
            max_outgoing: 256 * 1024,
            last_will: Some(LastWill::new(
                &status_topic,
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            )),
        };
        let config = settings.client.with_client_id(client_id.to_owned());
        let negotiation = Negotiation::new(
            settings.protocol,
            &settings.client.url.display(),
            Memory::global(),
        );
        let (client, conn) = open(
            &config,
            &session,
            Duration::ZERO,
            negotiation.version(),
            settings.queue,
        );
        let reopen = Reopen {
            negotiation,
            config,
            session,
            cap: settings.queue,
        };
        let (outbox, buffer) = open_stores(settings, host);
        let link = Self {
            qos1: Arc::new(Mutex::new(Qos1 {
                outbox,
                transient: VecDeque::new(),
                fifo: VecDeque::new(),
                by_pkid: HashMap::new(),
                buffer,
                last_sent: 0,
                ready: false,
                refused_log: None,
                refused_unlogged: 0,
            })),
            client: Arc::new(Mutex::new(client)),
            host: host.into(),
            prefix: settings.prefix.as_str().into(),
            message_expiry: settings.message_expiry,
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
            pause: Arc::new(Mutex::new(Pause::new())),
            sweep: sweep.map(|filter| {
                let keep = announce.iter().map(|(t, _)| t.clone());
                Arc::new(Mutex::new(Sweep::new(filter, keep)))
            }),
            announce: Arc::new(announce),
            epoch: Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(drive(
            conn,
            reopen,
            link.clone(),
            host.to_owned(),
            settings.client.url.display(),
            Backoff::new(settings.reconnect_min, settings.reconnect_max, host),
            inbox.map(Receiving::new),
        ));
        (link, task)
    }

    /// The client of the current connection.
    fn client(&self) -> Client {
        match self.client.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The version the link speaks (or offers, before it is connected).
    pub fn protocol(&self) -> Version {
        self.client().version()
    }

    /// What MQTT 5 adds to a message on `topic` (docs/topics.md): the `host` (this
    /// link's) and `model` user properties, and on scores and metrics (`lossy`) the
    /// expiry. `None` on a 3.1.1 connection.
    fn properties(&self, client: &Client, topic: &str, lossy: bool) -> Option<Properties> {
        if client.version() != Version::V5 {
            return None;
        }
        let mut user = user_properties(&self.prefix, topic);
        match user.first_mut() {
            Some((_, host)) => *host = self.host.to_string(),
            None => user.push(("host".to_owned(), self.host.to_string())),
        }
        Some(Properties {
            expiry: if lossy { self.message_expiry } else { None },
            user,
        })
    }

    fn try_send(&self, topic: &str, lossy: bool, retain: bool, payload: Vec<u8>) -> bool {
        let client = self.client();
        let props = self.properties(&client, topic, lossy);
        match client.try_publish_qos(topic, QoS::AtMostOnce, retain, payload, props) {
            true => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            false => {
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

    /// Publishes what the tick loop, the rules or the health report asked for, each kind
    /// with its delivery (see [`Out`]).
    pub fn publish(&self, out: Out) {
        match out {
            Out::Metrics { topic, payload } | Out::Score { topic, payload } => {
                self.publish_lossy(&topic, payload);
            }
            Out::Alarm { topic, payload } | Out::State { topic, payload } => {
                self.publish_state(&topic, payload);
            }
            Out::Forget { topic } => self.forget_state(&topic),
            Out::Truth { topic, payload } | Out::Reply { topic, payload } => {
                self.publish_event(&topic, payload);
            }
            Out::Stats { topic, payload } => {
                self.publish_report(&topic, payload);
            }
        }
    }

    /// Metrics and scores: QoS 0 while the broker is there and nothing waits; kept in the
    /// buffer while it is away, and behind what the buffer holds until that is sent (so
    /// each topic stays in order). Without a buffer, dropped while disconnected; dropped
    /// when rumqttc's queue is full either way.
    pub fn publish_lossy(&self, topic: &str, payload: Vec<u8>) -> bool {
        let connected = self.connected.load(Ordering::Relaxed);
        let kept = self.qos1.lock().ok().and_then(|mut q| {
            let b = q.buffer.as_mut()?;
            (!connected || !b.idle()).then(|| {
                b.keep(topic, &payload, lookout_shared::time::now_ms());
            })
        });
        if kept.is_some() {
            self.stats.buffered.fetch_add(1, Ordering::Relaxed);
            self.pump();
            return true;
        }
        if !connected {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.try_send(topic, true, false, payload)
    }

    /// The buffer's counters, for the agent's own health (`None`: no buffer).
    pub fn buffer_stats(&self) -> Option<RingStats> {
        self.qos1
            .lock()
            .ok()
            .and_then(|q| q.buffer.as_ref().map(Buffer::stats))
    }

    /// Periodic reports (the agent's health): QoS 0 and retained, so a newcomer sees the
    /// latest; dropped like metrics while disconnected.
    pub fn publish_report(&self, topic: &str, payload: Vec<u8>) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.try_send(topic, false, true, payload)
    }

    /// Events worth an acknowledgement but not retention (simulator ground truth): QoS 1,
    /// held in memory while the link is down.
    pub fn publish_event(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.queue_transient(topic, payload, false);
        self.pump();
        true
    }

    fn queue_transient(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        if let Ok(mut q) = self.qos1.lock() {
            if q.transient.len() >= TRANSIENT_CAP {
                q.transient.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.transient.push_back((topic.to_owned(), payload, retain));
        }
    }

    /// Alarm state: QoS 1, retained, through the durable outbox; the latest per topic is
    /// also re-sent after each reconnect.
    pub fn publish_state(&self, topic: &str, payload: Vec<u8>) -> bool {
        if let Ok(mut map) = self.retained.lock() {
            map.insert(topic.to_owned(), payload.clone());
        }
        if let Ok(mut q) = self.qos1.lock() {
            q.outbox.push(topic, &payload, true);
        }
        self.pump();
        true
    }

    /// The outbox's counters, for the agent's own health.
    pub fn outbox_stats(&self) -> OutboxStats {
        self.qos1
            .lock()
            .map(|q| q.outbox.stats())
            .unwrap_or_default()
    }

    /// Hands queued QoS 1 messages to rumqttc, oldest first, without waiting: transient
    /// ones, then outbox records not yet sent on this connection. Stops when rumqttc's
    /// queue is full; it is called again on every publish, PUBACK and reconnect.
    fn pump(&self) {
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut q) = self.qos1.lock() else { return };
        if !q.ready {
            return;
        }
        let client = self.client();
        while let Some((topic, payload, retain)) = q.transient.front().cloned() {
            // The FIFO entry goes in first: rumqttc reports the packet id when it takes
            // the request, which cannot happen before this function returns (the agent's
            // runtime is single-threaded, and the lock is held either way).
            let props = self.properties(&client, &topic, false);
            q.fifo.push_back((Carried::Transient, topic.clone()));
            if client.try_publish(&topic, retain, payload, props) {
                q.transient.pop_front();
            } else {
                q.fifo.pop_back();
                return;
            }
        }
        while let Some(r) = q.outbox.next_after(q.last_sent) {
            let (seq, topic, payload, retain) =
                (r.seq, r.topic.clone(), r.payload.clone(), r.retain);
            let props = self.properties(&client, &topic, false);
            q.fifo.push_back((Carried::State(seq), topic.clone()));
            if !client.try_publish(&topic, retain, payload, props) {
                q.fifo.pop_back();
                return;
            }
            q.last_sent = seq;
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.pump_buffered(&mut q, &client);
    }

    /// What the buffer kept, oldest first, after the alarm states, at its replay rate.
    fn pump_buffered(&self, q: &mut Qos1, client: &Client) {
        let Some(b) = q.buffer.as_mut() else { return };
        let batch = b.next(std::time::Instant::now());
        let mut handed = Vec::with_capacity(batch.len());
        for e in batch {
            let id = e.id;
            let props = self.properties(client, &e.topic, true);
            if !client.try_publish(&e.topic, false, e.payload, props) {
                b.unsend(id);
                break;
            }
            handed.push((Carried::Buffered(id), e.topic));
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
        }
        q.fifo.extend(handed);
    }

    /// rumqttc took a publish and gave it `pkid`.
    fn on_outgoing_publish(&self, pkid: u16) {
        if pkid == 0 {
            return; // QoS 0
        }
        if let Ok(mut q) = self.qos1.lock()
            && let Some(carried) = q.fifo.pop_front()
        {
            q.by_pkid.insert(pkid, carried);
        }
    }

    /// The broker acknowledged `pkid`; `refused` holds its reason code when it did not
    /// take the message (MQTT 5). A refused message is settled all the same: sent again
    /// it would be refused again, and the outbox would hold it for ever.
    fn on_puback(&self, pkid: u16, refused: Option<&str>) {
        if let Ok(mut q) = self.qos1.lock() {
            let carried = q.by_pkid.remove(&pkid);
            if let Some(reason) = refused {
                let topic = carried.as_ref().map_or("", |(_, t)| t.as_str());
                self.on_refused(&mut q, topic, reason);
            }
            match carried.map(|(c, _)| c) {
                Some(Carried::State(seq)) => q.outbox.ack(seq),
                Some(Carried::Buffered(id)) => {
                    if let Some(b) = q.buffer.as_mut() {
                        b.arrived(id, std::time::Instant::now());
                    }
                }
                Some(Carried::Transient) | None => {}
            }
        }
        self.pump();
    }

    /// Counts a refused publish and logs it, at most every [`DROP_LOG_EVERY`].
    fn on_refused(&self, q: &mut Qos1, topic: &str, reason: &str) {
        let total = self.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
        q.refused_unlogged += 1;
        let now = std::time::Instant::now();
        if q.refused_log
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)
        {
            tracing::warn!(
                host = %self.host,
                topic,
                reason,
                refused = q.refused_unlogged,
                total,
                "the broker refused a QoS 1 publish (MQTT 5 PUBACK reason code); it is not sent again (logged at most every 10 s)"
            );
            q.refused_log = Some(now);
            q.refused_unlogged = 0;
        }
    }

    fn states_waiting(&self) -> bool {
        self.qos1.lock().is_ok_and(|q| q.outbox.stats().pending > 0)
    }

    /// True when nothing of QoS 1 waits: the outbox is empty and every publish was acked.
    fn settled(&self) -> bool {
        self.qos1.lock().is_ok_and(|q| {
            q.outbox.stats().pending == 0
                && q.transient.is_empty()
                && q.by_pkid
                    .values()
                    .all(|(c, _)| matches!(c, Carried::Transient))
        })
    }

    /// Stops re-sending a state after reconnects (it stays retained on the broker): for
    /// states that are many and final, such as resolved rule alarms of groups long gone,
    /// whose memory would otherwise grow with every group ever seen.
    pub fn forget_state(&self, topic: &str) {
        if let Ok(mut map) = self.retained.lock() {
            map.remove(topic);
        }
    }

    /// Says goodbye: waits (at most a few seconds) for the outbox to be acknowledged,
    /// publishes the retained `offline`, then disconnects cleanly (which suppresses the
    /// last will, so the explicit message is what subscribers see). What is still in the
    /// outbox then stays on disk for the next start.
    ///
    /// With alarm states waiting, a link that is down waits for its reconnect too: a stop
    /// that comes while the broker restarts would otherwise leave the newest states on
    /// disk until the agent runs again (the soak found one).
    pub async fn close(&self) {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        while (self.connected.load(Ordering::Relaxed) || self.states_waiting())
            && !self.settled()
            && tokio::time::Instant::now() < deadline
        {
            self.pump();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.queue_transient(&self.status_topic, OFFLINE.as_bytes().to_vec(), true);
        self.pump();
        while self.connected.load(Ordering::Relaxed)
            && !self.settled()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(mut q) = self.qos1.lock()
            && let Some(b) = q.buffer.as_mut()
        {
            b.flush(std::time::Instant::now());
        }
        self.client().try_disconnect();
    }

    /// Subscribes again, announces the host, re-sends every alarm state and whatever the
    /// outbox still holds. rumqttc forgot what was in flight (clean session), so the FIFO
    /// starts empty. Subscriptions go first, so that a subscriber who sees `online` knows
    /// the agent listens; they run as their own task because waiting inside the
    /// event-loop task would stop the loop that makes room.
    fn on_connected(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.connected.store(true, Ordering::Relaxed);
        self.drop_logged.store(false, Ordering::Relaxed);
        let states: Vec<(String, Vec<u8>)> = match self.retained.lock() {
            Ok(map) => map.iter().map(|(t, p)| (t.clone(), p.clone())).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut q) = self.qos1.lock() {
            q.fifo.clear();
            q.by_pkid.clear();
            q.last_sent = 0;
            q.ready = false;
            if let Some(b) = q.buffer.as_mut() {
                b.reconnected(std::time::Instant::now());
            }
            // `online` first, then the announcements, then the latest state of topics the
            // outbox does not resend anyway (its records follow, in order, so they end up
            // retained last).
            let pending: std::collections::BTreeSet<String> =
                q.outbox.unacked().map(|r| r.topic.clone()).collect();
            let mut front: Vec<(String, Vec<u8>, bool)> =
                vec![(self.status_topic.clone(), ONLINE.as_bytes().to_vec(), true)];
            front.extend(
                self.announce
                    .iter()
                    .map(|(t, p)| (t.clone(), p.clone(), true)),
            );
            front.extend(
                states
                    .into_iter()
                    .filter(|(t, _)| !pending.contains(t))
                    .map(|(t, p)| (t, p, true)),
            );
            for m in front.into_iter().rev() {
                q.transient.push_front(m);
            }
            while q.transient.len() > TRANSIENT_CAP + 1 + self.announce.len() {
                q.transient.pop_back();
            }
        }
        let link = self.clone();
        tokio::spawn(async move {
            // The sweep subscribes first, so that the first SUBACK of the connection is its.
            let sweep = link.sweep.as_ref().and_then(|s| {
                let mut s = s.lock().ok()?;
                s.begin(epoch, std::time::Instant::now())
                    .then(|| s.filter().to_owned())
            });
            if let Some(filter) = &sweep
                && let Err(e) = link.client().subscribe(filter).await
            {
                tracing::warn!(filter, error = %e, "MQTT subscribe failed");
            }
            let paused = link.pause.lock().ok().and_then(|p| p.left());
            match paused {
                None => link.subscribe_all().await,
                Some(left) => link.resubscribe_later(epoch, left),
            }
            if let Ok(mut q) = link.qos1.lock() {
                q.ready = true;
            }
            link.pump();
            if let Some(filter) = sweep {
                link.finish_sweep(epoch, filter).await;
            }
        });
    }

    async fn subscribe_all(&self) {
        for filter in self.filters.iter() {
            if let Err(e) = self.client().subscribe(filter).await {
                tracing::warn!(filter, error = %e, "MQTT subscribe failed");
            }
        }
    }

    /// Subscribes after `left`, if connection `epoch` is still up by then.
    fn resubscribe_later(&self, epoch: u64, left: Duration) {
        tracing::info!(
            filters = ?self.filters,
            seconds = left.as_secs(),
            "MQTT subscriptions paused after a message over the packet limit; alarm states are sent meanwhile"
        );
        let link = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            if link.epoch.load(Ordering::Relaxed) == epoch && link.connected.load(Ordering::Relaxed)
            {
                tracing::info!(filters = ?link.filters, "MQTT subscriptions resumed");
                link.subscribe_all().await;
            }
        });
    }

    /// A message over the packet limit ended the connection: counts it, pauses the
    /// subscriptions, and says what to do about it.
    fn on_oversize(&self, host: &str, bytes: usize) {
        self.stats.oversize.fetch_add(1, Ordering::Relaxed);
        let pause = self
            .pause
            .lock()
            .map(|mut p| p.start())
            .unwrap_or(PAUSE_FIRST);
        tracing::error!(
            host,
            bytes,
            limit = INCOMING_PACKET_LIMIT,
            filters = ?self.filters,
            pause_s = pause.as_secs(),
            "an MQTT message over the packet limit on a subscribed topic ended the connection; \
             reconnecting without subscriptions for a while (rules documents, ingested events and \
             commands wait; alarm states do not). A retained one comes back every time: remove it, \
             and cap message sizes on the broker (mosquitto: message_size_limit)"
        );
    }

    /// Waits for the sweep started on connection `epoch` to collect what the broker
    /// retains under `filter`, then clears the stale topics and unsubscribes.
    async fn finish_sweep(&self, epoch: u64, filter: String) {
        let Some(sweep) = &self.sweep else { return };
        let verdict = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let v = match sweep.lock() {
                Ok(mut s) => s.poll(epoch, std::time::Instant::now()),
                Err(_) => Verdict::Abandon,
            };
            if v != Verdict::Wait {
                break v;
            }
        };
        let Verdict::Clear { topics, skipped } = verdict else {
            tracing::debug!(
                filter,
                "retained-message sweep abandoned (connection lost or no SUBACK)"
            );
            return;
        };
        for topic in &topics {
            self.queue_transient(topic, Vec::new(), true);
        }
        self.pump();
        if let Err(e) = self.client().unsubscribe(&filter).await {
            tracing::debug!(filter, error = %e, "MQTT unsubscribe failed");
        }
        if !topics.is_empty() || skipped > 0 {
            tracing::info!(
                filter,
                cleared = topics.len(),
                skipped,
                "cleared retained messages this agent published before and no longer does"
            );
        } else {
            tracing::debug!(filter, "nothing stale under the sweep's filter");
        }
    }

    /// A message arrived: `true` when it belongs to the sweep (and to no subscription of
    /// the inbox), so that it goes no further.
    fn swept(&self, p: &Incoming) -> bool {
        let Some(sweep) = &self.sweep else {
            return false;
        };
        let ours = sweep
            .lock()
            .is_ok_and(|mut s| s.offer(&p.topic, p.retain, p.payload.is_empty()));
        ours && !self
            .filters
            .iter()
            .any(|f| super::sweep::matches(f, &p.topic))
    }
}

/// The link's outbox and, with `[buffer]`, its ring, in the host's directories; in
/// memory (or none) when the disk says no, with an error logged.
fn open_stores(settings: &MqttSettings, host: &str) -> (Outbox, Option<Buffer>) {
    let o = &settings.outbox;
    let dir = o.dir.join(lookout_shared::topics::sanitize_level(host));
    let outbox = Outbox::open(&dir, o.max_bytes, 64 * 1024, o.fsync).unwrap_or_else(|e| {
            tracing::error!(host, error = %e, "outbox unusable: alarm states are kept in memory only and lost if the agent stops");
            Outbox::in_memory(o.max_bytes)
        });
    let buffer = settings.buffer.as_ref().and_then(|b| {
            let dir = b.dir.join(lookout_shared::topics::sanitize_level(host));
            match Ring::open(RingSettings::new(dir, b.max_bytes, b.max_age)) {
                Ok(ring) => Some(Buffer::new(ring, b.replay_rate)),
                Err(e) => {
                    tracing::error!(host, error = %e, "buffer unusable: scores and metrics are dropped (and counted) while the broker is away");
                    None
                }
            }
        });
    (outbox, buffer)
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

    async fn deliver(&mut self, msg: Incoming, stats: &LinkStats) {
        let reliable = self.inbox.reliable.contains(&msg.topic);
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

/// What a link needs to open its connection again in another version
/// (`protocol = "auto"` against a broker that refuses MQTT 5).
struct Reopen {
    negotiation: Negotiation<'static>,
    config: lookout_shared::mqtt::ClientConfig,
    session: Session,
    cap: usize,
}

impl Reopen {
    /// A new client and connection in the version the negotiation picks now.
    fn open(&self, link: &Link) -> Connection {
        let version = self.negotiation.version();
        let (client, conn) = open(
            &self.config,
            &self.session,
            Duration::ZERO,
            version,
            self.cap,
        );
        match link.client.lock() {
            Ok(mut c) => *c = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
        conn
    }
}

/// The connection's state as the event loop sees it, for its log lines.
struct Drive {
    host: String,
    broker: String,
    connected: bool,
    connected_at: Option<std::time::Instant>,
    failures: u64,
    /// Why the broker refused MQTT 5, told once when 3.1.1 is accepted.
    refusal: Option<String>,
}

/// Polls the connection forever, sleeping with exponential backoff and jitter after an
/// error (rumqttc retries at once otherwise; a broker that never answers CONNACK costs
/// its 5 s connection timeout per attempt), logging each change of state once. The
/// backoff starts over only after a connection that lasted [`STABLE_CONNECTION`]. Ends
/// after a clean disconnect. With `protocol = "auto"`, a broker that refuses MQTT 5 is
/// asked again at once in 3.1.1, quietly (link/version.rs).
async fn drive(
    mut conn: Connection,
    mut reopen: Reopen,
    link: Link,
    host: String,
    broker: String,
    mut backoff: Backoff,
    mut receiving: Option<Receiving>,
) {
    let mut d = Drive {
        host,
        broker,
        connected: false,
        connected_at: None,
        failures: 0,
        refusal: None,
    };
    loop {
        match conn.poll().await {
            Ok(Event::Connected) => {
                d.on_connack(&link, &mut reopen);
                link.on_connected();
            }
            Ok(Event::Publish {
                topic,
                payload,
                retain,
            }) => {
                tracing::debug!(
                    host = d.host,
                    topic,
                    bytes = payload.len(),
                    retain,
                    "MQTT message in"
                );
                let msg = Incoming {
                    topic,
                    payload,
                    retain,
                };
                if link.swept(&msg) {
                    continue;
                }
                if let Some(r) = &mut receiving {
                    r.deliver(msg, &link.stats).await;
                }
            }
            Ok(Event::Sent(pkid)) => link.on_outgoing_publish(pkid),
            Ok(Event::Acked { pkid, refused }) => link.on_puback(pkid, refused.as_deref()),
            Ok(Event::SubAck) => {
                if let Some(s) = &link.sweep
                    && let Ok(mut s) = s.lock()
                {
                    s.on_suback(
                        link.epoch.load(Ordering::Relaxed),
                        std::time::Instant::now(),
                    );
                }
            }
            Ok(Event::Disconnected) => {
                tracing::debug!(host = d.host, "MQTT disconnected cleanly");
                return;
            }
            Ok(Event::Other) => {}
            Err(f) => {
                link.connected.store(false, Ordering::Relaxed);
                if let Ok(mut q) = link.qos1.lock() {
                    q.ready = false;
                }
                if reopen.negotiation.failed(&f) {
                    // Not a failure of the broker: it speaks 3.1.1 only. Asked again at
                    // once, and said at info when it answers.
                    tracing::debug!(host = d.host, broker = d.broker, error = %f.text, "the broker refused MQTT 5; asking again in MQTT 3.1.1");
                    d.refusal = Some(f.text);
                    conn = reopen.open(&link);
                    continue;
                }
                d.on_failure(&link, &mut backoff, &f);
                tokio::time::sleep(backoff.next_delay()).await;
                if reopen.negotiation.version() != link.protocol() {
                    conn = reopen.open(&link);
                }
            }
        }
    }
}

impl Drive {
    fn on_connack(&mut self, link: &Link, reopen: &mut Reopen) {
        let (host, broker) = (&self.host, &self.broker);
        let protocol = reopen.negotiation.version();
        if reopen.negotiation.connected() {
            match protocol {
                Version::V5 => tracing::info!(
                    host,
                    broker,
                    "the broker speaks MQTT 5: scores and metrics go out with an expiry, messages with host and model properties"
                ),
                Version::V311 => tracing::info!(
                    host,
                    broker,
                    refused_mqtt5 = self.refusal.as_deref().unwrap_or(""),
                    "the broker speaks MQTT 3.1.1 only; the link speaks 3.1.1 with it until the agent restarts (no expiry, no properties)"
                ),
            }
        }
        if self.failures > 0 {
            link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                host,
                broker,
                protocol = protocol.as_str(),
                after_failures = self.failures,
                "MQTT connection restored"
            );
        } else {
            tracing::info!(host, broker, protocol = protocol.as_str(), "MQTT connected");
        }
        self.connected = true;
        self.connected_at = Some(std::time::Instant::now());
        self.failures = 0;
    }

    /// A connection failed or ended: counts an oversized message, logs the first failure
    /// of a run (MQTT 5 reason codes named), and decides whether the backoff starts over.
    fn on_failure(&mut self, link: &Link, backoff: &mut Backoff, f: &Failure) {
        let (host, broker) = (&self.host, &self.broker);
        if let Some(bytes) = f.oversize {
            link.on_oversize(host, bytes);
        }
        if self.connected || self.failures == 0 {
            let text = &f.text;
            match lookout_shared::tls::hint(text) {
                Some(hint) => {
                    tracing::warn!(host, broker, error = %text, hint, "MQTT connection failed; retrying with backoff")
                }
                None => {
                    tracing::warn!(host, broker, error = %text, "MQTT connection lost; retrying with backoff")
                }
            }
        }
        // Only a connection that held counts as a success: one dropped soon after
        // its ConnAck (a broker that kicks every client, a retained message over
        // the packet limit) keeps the backoff growing instead of a retry a second.
        if self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
        {
            backoff.reset();
            if let Ok(mut p) = link.pause.lock()
                && p.left().is_none()
            {
                p.next = PAUSE_FIRST;
            }
        }
        self.connected = false;
        self.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pause_after_an_oversized_message_doubles_up_to_an_hour() {
        let mut p = Pause::new();
        assert_eq!(p.left(), None, "not paused before any oversized message");
        let lengths: Vec<u64> = (0..8).map(|_| p.start().as_secs()).collect();
        assert_eq!(lengths, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        let left = p.left().expect("paused");
        assert!(
            left > Duration::from_secs(3590) && left <= PAUSE_MAX,
            "{left:?}"
        );
    }
}
