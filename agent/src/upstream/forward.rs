//! The forwarder of one `[[upstream]]`: reads the chosen topics from the agent's own
//! broker and sends them up, brings the chosen upstream topics down, and keeps what it
//! cannot send yet.
//!
//! Three tasks share one [`Core`] behind a lock: the local client's event loop (messages
//! in), the upstream connection's event loop (acknowledgements, messages down), and a
//! control loop every [`TICK`] that paces the sending of what was kept, decides failover
//! and failback, and probes the primary.
//!
//! Every message goes up with QoS 1, so the forwarder knows what arrived:
//! - **States** (messages the local broker holds retained, or topics under `retained`:
//!   alarms, status, stats) go through a durable [`Outbox`] and up retained; the upstream's
//!   PUBACK removes them, and a record of what was acknowledged ([`Delivered`]) keeps a
//!   restart from sending the same state twice (the local broker hands every retained
//!   state to a new subscription).
//! - **Everything else** (scores, metrics, events) goes straight up while the upstream is connected
//!   and nothing is waiting; otherwise into the on-disk [`Ring`], sent oldest first at
//!   `replay_rate` once the upstream is back. The few sent straight up and not yet
//!   acknowledged when a connection drops are sent again first.
//!
//! Alarm states go before scores and metrics when both wait: they are the promise.
//! Packet ids map to what each publish carried the way the agent's link does it
//! (link/client.rs): rumqttc reports the packet id of each publish in the order they were
//! handed to it.
//!
//! The connection speaks MQTT 5 or 3.1.1 ([`crate::link::version`]); nothing here depends on
//! which, except what MQTT 5 adds: a message expiry on scores and metrics, the `host` and
//! `model` user properties, and PUBACK reason codes. A message the broker refuses with a
//! reason code is counted (`refused`), logged, and settled: sending it again would be
//! refused again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout_shared::mqtt::{ClientConfig, SUBSCRIBER_PACKET_LIMIT, Session};
use lookout_shared::time::Backoff;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::UpstreamSettings;
use super::delivered::{Delivered, digest};
use super::failover::{Decision, Failover};
use super::route::Route;
use crate::link::outbox::Outbox;
use crate::link::ring::Ring;
use crate::link::sweep::matches;
use crate::link::version::{
    Client, Connection, Event, Failure, Memory, Negotiation, Properties, Version, open,
    user_properties,
};

/// How often the control loop runs.
const TICK: Duration = Duration::from_millis(100);

/// Publishes handed to rumqttc and not yet acknowledged, at most.
const WINDOW: usize = 64;

/// The durable states' bound (the agent's own outbox has the same default).
const STATES_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How often a working secondary checks whether the primary is back.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long a stop waits for what is waiting to go up.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// At most one log line a while about messages the broker refused.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a publish handed to rumqttc carried.
#[derive(Clone, Debug)]
enum Sent {
    State {
        seq: u64,
        topic: String,
        digest: Option<u64>,
    },
    Buffered(u64),
    Direct(u64),
}

#[derive(Clone, Debug)]
struct Lossy {
    topic: String,
    payload: Vec<u8>,
    at_ms: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    forwarded: u64,
    brought_down: u64,
    duplicates_skipped: u64,
    /// Scores and metrics lost because there was no buffer to keep them in.
    dropped: u64,
    down_dropped: u64,
    /// Acknowledged with an MQTT 5 reason code that says the broker did not take them.
    refused: u64,
}

/// What `stats` says about one upstream.
#[derive(Debug, Serialize)]
pub struct UpstreamReport {
    pub name: String,
    pub broker: String,
    pub connected: bool,
    /// The MQTT version of the last connection (`"5"`, `"3.1.1"`); absent before one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    pub switches: u64,
    pub forwarded: u64,
    pub brought_down: u64,
    pub duplicates_skipped: u64,
    pub states_pending: usize,
    pub buffered: u64,
    pub buffer_bytes: u64,
    pub buffer_downsampled: u64,
    pub buffer_dropped: u64,
    pub dropped: u64,
    pub refused: u64,
}

struct Core {
    name: String,
    urls: Vec<String>,
    retained: Vec<String>,
    /// For the MQTT 5 properties: the agent's prefix, the route (to find a topic's
    /// local name), the expiry of scores and metrics.
    prefix: String,
    route: Route,
    message_expiry: Option<u32>,
    /// Live scores and metrics at QoS 0 (`qos = 0`).
    qos0: bool,
    states: Outbox,
    delivered: Delivered,
    ring: Option<Ring>,
    /// Sent straight up and not acknowledged when the connection dropped: sent again first.
    retry: VecDeque<Lossy>,
    direct: BTreeMap<u64, Lossy>,
    next_direct: u64,
    /// What each publish carried, and its topic upstream.
    fifo: VecDeque<(Sent, String)>,
    by_pkid: HashMap<u16, (Sent, String)>,
    in_flight: usize,
    states_sent: u64,
    buffered_sent: u64,
    /// Buffered records handed out, oldest first, and whether each was acknowledged.
    buffered_in_flight: VecDeque<(u64, bool)>,
    /// Acknowledged through this id, not yet told to the ring: the ring syncs its cursor
    /// on every acknowledgement, so they are told once a tick, not once a message.
    buffered_acked: Option<u64>,
    up: Option<Client>,
    connected: bool,
    version: Option<Version>,
    /// When refused messages were last logged, and how many since.
    refused_logged: Option<Instant>,
    refused_unlogged: u64,
    failover: Failover,
    /// Sends of kept messages allowed now (refilled at `replay_rate`).
    budget: f64,
    counters: Counters,
}

impl Core {
    /// A message from the local broker.
    /// The QoS a message arrives with says little (rumqttd delivers at the subscription's
    /// QoS, not the publisher's), so what is a state is decided by the retain flag and
    /// the `retained` filters.
    fn take(&mut self, topic: &str, route: &Route, payload: &[u8], retain: bool) {
        let up = route.up(topic);
        if retain || self.retained.iter().any(|f| matches(f, topic)) {
            self.take_state(up, payload);
            return;
        }
        let m = Lossy {
            topic: up,
            payload: payload.to_vec(),
            at_ms: lookout_shared::time::now_ms(),
        };
        let idle = self.retry.is_empty() && self.ring.as_ref().is_none_or(Ring::is_empty);
        if self.connected && idle && self.qos0 {
            if self.send_qos0(&m.topic, m.payload.clone()) {
                return;
            }
        } else if self.connected && idle && self.in_flight < WINDOW {
            let id = self.next_direct;
            if self.send(Sent::Direct(id), &m.topic, m.payload.clone(), false) {
                self.next_direct += 1;
                self.direct.insert(id, m);
                return;
            }
        }
        self.keep(m);
    }

    fn take_state(&mut self, topic: String, payload: &[u8]) {
        let d = digest(payload);
        let latest = self
            .states
            .unacked()
            .filter(|r| r.topic == topic)
            .last()
            .map(|r| digest(&r.payload));
        let already = match latest {
            Some(pending) => pending == d,
            None => self.delivered.has(&topic, d),
        };
        if already {
            self.counters.duplicates_skipped += 1;
            return;
        }
        self.states.push(&topic, payload, true);
    }

    fn keep(&mut self, m: Lossy) {
        match &mut self.ring {
            Some(ring) => ring.push(&m.topic, &m.payload, m.at_ms),
            None => self.counters.dropped += 1,
        }
    }

    /// `qos = 0`: out and forgotten (rumqttc reports it with packet id 0, which nothing
    /// waits for).
    fn send_qos0(&mut self, topic: &str, payload: Vec<u8>) -> bool {
        let Some(up) = &self.up else { return false };
        let props = (up.version() == Version::V5).then(|| Properties {
            expiry: self.message_expiry,
            user: user_properties(&self.prefix, &self.route.local_of(topic)),
        });
        let sent = up.try_publish_qos(topic, rumqttc::QoS::AtMostOnce, false, payload, props);
        if sent {
            self.counters.forwarded += 1;
        }
        sent
    }

    fn send(&mut self, sent: Sent, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        let Some(up) = &self.up else { return false };
        let props = (up.version() == Version::V5).then(|| Properties {
            expiry: match sent {
                Sent::State { .. } => None,
                Sent::Buffered(_) | Sent::Direct(_) => self.message_expiry,
            },
            user: user_properties(&self.prefix, &self.route.local_of(topic)),
        });
        if !up.try_publish(topic, retain, payload, props) {
            return false;
        }
        self.fifo.push_back((sent, topic.to_owned()));
        self.in_flight += 1;
        true
    }

    /// Hands rumqttc what waits, states first, within the window and the replay budget.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        while self.in_flight < WINDOW {
            let Some(r) = self.states.next_after(self.states_sent) else {
                break;
            };
            let (seq, topic, payload, retain) =
                (r.seq, r.topic.clone(), r.payload.clone(), r.retain);
            let d = retain.then(|| digest(&payload));
            let sent = Sent::State {
                seq,
                topic: topic.clone(),
                digest: d,
            };
            if !self.send(sent, &topic, payload, retain) {
                return;
            }
            self.states_sent = seq;
        }
        while self.in_flight < WINDOW && self.budget >= 1.0 {
            let Some(m) = self.retry.pop_front() else {
                break;
            };
            let id = self.next_direct;
            if !self.send(Sent::Direct(id), &m.topic, m.payload.clone(), false) {
                self.retry.push_front(m);
                return;
            }
            self.next_direct += 1;
            self.direct.insert(id, m);
            self.budget -= 1.0;
        }
        if self.retry.is_empty() {
            self.pump_buffered();
        }
    }

    fn pump_buffered(&mut self) {
        let room = WINDOW
            .saturating_sub(self.in_flight)
            .min(self.budget as usize);
        if room == 0 {
            return;
        }
        let Some(ring) = &mut self.ring else { return };
        let batch = ring.peek(self.buffered_in_flight.len() + room);
        let after = self.buffered_sent;
        for e in batch.into_iter().filter(|e| e.id > after).take(room) {
            if !self.send(Sent::Buffered(e.id), &e.topic, e.payload, false) {
                return;
            }
            self.buffered_sent = e.id;
            self.buffered_in_flight.push_back((e.id, false));
            self.budget -= 1.0;
        }
    }

    fn on_outgoing(&mut self, pkid: u16) {
        if pkid == 0 {
            return; // QoS 0: nothing to settle
        }
        if let Some(sent) = self.fifo.pop_front() {
            self.by_pkid.insert(pkid, sent);
        }
    }

    /// An acknowledgement; `refused` is the broker's reason code when it did not take
    /// the message, which is then settled all the same.
    fn on_puback(&mut self, pkid: u16, refused: Option<&str>) {
        let Some((sent, up_topic)) = self.by_pkid.remove(&pkid) else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        match refused {
            None => self.counters.forwarded += 1,
            Some(reason) => self.refused(&up_topic, reason),
        }
        match sent {
            Sent::State { seq, topic, digest } => {
                self.states.ack(seq);
                if let Some(d) = digest
                    && refused.is_none()
                {
                    self.delivered.record(&topic, d);
                }
            }
            Sent::Direct(id) => {
                self.direct.remove(&id);
            }
            Sent::Buffered(id) => self.settle_buffered(id),
        }
        self.pump();
    }

    fn refused(&mut self, topic: &str, reason: &str) {
        self.counters.refused += 1;
        let now = Instant::now();
        if self
            .refused_logged
            .is_some_and(|t| now.duration_since(t) < REFUSED_LOG_EVERY)
        {
            self.refused_unlogged += 1;
            return;
        }
        tracing::warn!(
            upstream = self.name,
            topic,
            reason,
            also_refused_since_last_line = self.refused_unlogged,
            "upstream broker refused a message (PUBACK reason code); it is not sent again"
        );
        self.refused_logged = Some(now);
        self.refused_unlogged = 0;
    }

    /// The ring is acknowledged up to the oldest record still in flight, so a record is
    /// never dropped from disk before everything older has arrived.
    fn settle_buffered(&mut self, id: u64) {
        if let Some(e) = self.buffered_in_flight.iter_mut().find(|(i, _)| *i == id) {
            e.1 = true;
        }
        let mut through = None;
        while let Some(&(i, true)) = self.buffered_in_flight.front() {
            through = Some(i);
            self.buffered_in_flight.pop_front();
        }
        if through.is_some() {
            self.buffered_acked = through;
        }
    }

    fn flush_acks(&mut self) {
        if let (Some(ring), Some(t)) = (&mut self.ring, self.buffered_acked.take()) {
            ring.ack(t);
        }
    }

    /// A new connection: nothing of the last one is in flight any more.
    fn on_connected(&mut self, version: Version) {
        self.connected = true;
        self.version = Some(version);
        self.failover.connected();
        self.pump();
    }

    fn on_disconnected(&mut self, now: Instant) {
        self.flush_acks();
        self.connected = false;
        self.failover.disconnected(now);
        self.fifo.clear();
        self.by_pkid.clear();
        self.in_flight = 0;
        self.states_sent = 0;
        self.buffered_sent = 0;
        self.buffered_in_flight.clear();
        let direct = std::mem::take(&mut self.direct);
        for m in direct.into_values().rev() {
            self.retry.push_front(m);
        }
    }

    fn refill(&mut self, rate: u32, dt: Duration) {
        let rate = f64::from(rate);
        self.budget = (self.budget + rate * dt.as_secs_f64()).min(rate.max(1.0));
    }

    /// Whether everything taken in has gone up.
    fn settled(&mut self) -> bool {
        self.flush_acks();
        self.states.stats().pending == 0
            && self.retry.is_empty()
            && self.direct.is_empty()
            && self.ring.as_ref().is_none_or(Ring::is_empty)
    }

    fn report(&self) -> UpstreamReport {
        let ring = self.ring.as_ref().map(Ring::stats).unwrap_or_default();
        UpstreamReport {
            name: self.name.clone(),
            broker: self.urls[self.failover.current()].clone(),
            connected: self.connected,
            protocol: self.version.map(Version::as_str),
            switches: self.failover.switches(),
            forwarded: self.counters.forwarded,
            brought_down: self.counters.brought_down,
            duplicates_skipped: self.counters.duplicates_skipped,
            states_pending: self.states.stats().pending,
            buffered: ring.records + self.retry.len() as u64,
            buffer_bytes: ring.bytes,
            buffer_downsampled: ring.downsampled,
            buffer_dropped: ring.dropped,
            dropped: self.counters.dropped + self.counters.down_dropped,
            refused: self.counters.refused,
        }
    }
}

/// A running forwarder.
pub struct Forwarder {
    core: Arc<Mutex<Core>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Opens the forwarder's state and starts its tasks; returns at once. A state
    /// directory that cannot be used is logged, and the forwarder runs from memory.
    pub fn start(s: UpstreamSettings) -> Self {
        let states = Outbox::open(&s.states_dir, STATES_MAX_BYTES, 64 * 1024, true).unwrap_or_else(|e| {
            tracing::error!(upstream = s.name, error = %e, "upstream: state directory unusable; alarm states waiting for it are kept in memory only");
            Outbox::in_memory(STATES_MAX_BYTES)
        });
        let delivered = if s.states_dir.is_dir() {
            Delivered::open(&s.states_dir)
        } else {
            Delivered::in_memory()
        };
        let ring = match Ring::open(s.ring.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(upstream = s.name, error = %e, "upstream: buffer unusable; scores and metrics are dropped (and counted) while the upstream is unreachable");
                None
            }
        };
        let now = Instant::now();
        let core = Arc::new(Mutex::new(Core {
            name: s.name.clone(),
            urls: s.brokers.iter().map(|b| b.url.display()).collect(),
            retained: s.retained.clone(),
            prefix: s.prefix.clone(),
            route: s.route.clone(),
            message_expiry: s.message_expiry,
            qos0: s.qos0,
            states,
            delivered,
            ring,
            retry: VecDeque::new(),
            direct: BTreeMap::new(),
            next_direct: 1,
            fifo: VecDeque::new(),
            by_pkid: HashMap::new(),
            in_flight: 0,
            states_sent: 0,
            buffered_sent: 0,
            buffered_in_flight: VecDeque::new(),
            buffered_acked: None,
            up: None,
            connected: false,
            version: None,
            refused_logged: None,
            refused_unlogged: 0,
            failover: Failover::new(s.brokers.len(), s.failover_after, s.failback_after, now),
            budget: 0.0,
            counters: Counters::default(),
        }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(Arc::new(s), Arc::clone(&core), stopped));
        Self { core, stop, task }
    }

    pub fn report(&self) -> Option<UpstreamReport> {
        self.core.lock().ok().map(|c| c.report())
    }

    /// Waits (a little) for what is waiting to go up, then disconnects; what is still
    /// waiting stays on disk for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The control loop: owns the local client's and the upstream connection's tasks.
async fn run(s: Arc<UpstreamSettings>, core: Arc<Mutex<Core>>, mut stopped: watch::Receiver<bool>) {
    // The agent's broker: the embedded one serves 3.1.1 on `listen` (MQTT 5 only on
    // `listen_v5`), so the forwarder reads it in 3.1.1 whatever broker it is.
    let (local, local_loop) = open(&s.local, &session(), Duration::ZERO, Version::V311, 256);
    let local_task = tokio::spawn(drive_local(
        local_loop,
        local.clone(),
        Arc::clone(&s),
        Arc::clone(&core),
    ));
    let mut upstream = connect(&s, 0, &core, &local);
    let probe: Arc<Mutex<Option<bool>>> = Arc::new(Mutex::new(None));
    let mut last_probe = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => break,
        }
        let now = Instant::now();
        let decision = {
            let mut c = lock(&core);
            if let Some(ok) = probe.lock().ok().and_then(|mut p| p.take()) {
                c.failover.probed(ok, now);
            }
            c.flush_acks();
            c.refill(s.replay_rate, TICK);
            c.pump();
            if c.failover.wants_probe() && now.duration_since(last_probe) >= PROBE_EVERY {
                last_probe = now;
                tokio::spawn(probe_primary(Arc::clone(&s), Arc::clone(&probe)));
            }
            c.failover.decide(now)
        };
        if let Decision::SwitchTo(i) = decision {
            tracing::warn!(upstream = s.name, to = %s.brokers[i].url.display(), "upstream: switching broker");
            upstream.abort();
            lock(&core).on_disconnected(now);
            upstream = connect(&s, i, &core, &local);
        }
    }
    drain(&core).await;
    let up = lock(&core).up.take();
    if let Some(up) = up {
        up.try_disconnect();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    upstream.abort();
    local_task.abort();
    lock(&core).on_disconnected(Instant::now());
    let mut c = lock(&core);
    let retry = std::mem::take(&mut c.retry);
    for m in retry {
        c.keep(m);
    }
}

/// At a stop: a short while for what waits to go up, if the upstream is there.
async fn drain(core: &Mutex<Core>) {
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        {
            let mut c = lock(core);
            if !c.connected || c.settled() {
                return;
            }
            c.budget = c.budget.max(WINDOW as f64);
            c.pump();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both connections read packets up to the agent's own limit.
fn session() -> Session {
    Session {
        max_incoming: SUBSCRIBER_PACKET_LIMIT,
        max_outgoing: SUBSCRIBER_PACKET_LIMIT,
        ..Session::default()
    }
}

/// Starts a connection to broker `i` of the upstream.
fn connect(
    s: &Arc<UpstreamSettings>,
    i: usize,
    core: &Arc<Mutex<Core>>,
    local: &Client,
) -> JoinHandle<()> {
    tokio::spawn(drive_upstream(
        i,
        Arc::clone(s),
        Arc::clone(core),
        local.clone(),
    ))
}

/// Says once per broker (and process) which version it speaks, with `auto`.
fn log_version(name: &str, url: &str, version: Version, refusal: Option<&str>) {
    match version {
        Version::V5 => tracing::info!(
            upstream = name,
            broker = url,
            "upstream broker speaks MQTT 5: scores and metrics go up with an expiry, every message with host and model properties"
        ),
        Version::V311 => tracing::info!(
            upstream = name,
            broker = url,
            refused_mqtt5 = refusal.unwrap_or(""),
            "upstream broker refused MQTT 5; falling back to MQTT 3.1.1 with it until the agent restarts (no expiry, no properties)"
        ),
    }
}

/// The connection to broker `i`, in the version [`Negotiation`] picks; a connection
/// refused in MQTT 5 is made again at once in 3.1.1.
async fn drive_upstream(i: usize, s: Arc<UpstreamSettings>, core: Arc<Mutex<Core>>, local: Client) {
    let url = s.brokers[i].url.display();
    let mut backoff = Backoff::new(s.reconnect_min, s.reconnect_max, &s.name);
    let mut failures: u64 = 0;
    let mut negotiation = Negotiation::new(s.protocol, &url, Memory::global());
    let mut refusal: Option<String> = None;
    loop {
        let version = negotiation.version();
        let (client, mut conn) = open(&s.brokers[i], &session(), s.session_expiry, version, 256);
        lock(&core).up = Some(client.clone());
        loop {
            let failure = match conn.poll().await {
                Ok(Event::Connected) => {
                    if negotiation.connected() {
                        log_version(&s.name, &url, version, refusal.as_deref());
                    }
                    tracing::info!(
                        upstream = s.name,
                        broker = url,
                        protocol = version.as_str(),
                        after_failures = failures,
                        "upstream connected"
                    );
                    failures = 0;
                    backoff.reset();
                    for f in &s.subscribe {
                        if let Err(e) = client.try_subscribe(f) {
                            tracing::warn!(upstream = s.name, filter = f, error = %e, "upstream subscribe failed");
                        }
                    }
                    lock(&core).on_connected(version);
                    continue;
                }
                Ok(event) => {
                    on_event(event, &s, &core, &local);
                    continue;
                }
                Err(f) => f,
            };
            let was = lock(&core).connected;
            lock(&core).on_disconnected(Instant::now());
            if negotiation.failed(&failure) {
                tracing::debug!(upstream = s.name, broker = url, error = %failure.text, "upstream refused MQTT 5; trying MQTT 3.1.1");
                refusal = Some(failure.text);
                break;
            }
            if was || failures == 0 {
                let hint = lookout_shared::tls::hint(&failure.text).unwrap_or("");
                tracing::warn!(upstream = s.name, broker = url, protocol = version.as_str(), error = %failure.text, hint, "upstream connection failed; what it should get is kept and sent when it is back");
            }
            failures += 1;
            tokio::time::sleep(backoff.next_delay()).await;
            if negotiation.version() != version {
                break;
            }
        }
    }
}

/// An event of the upstream connection other than a new connection.
fn on_event(event: Event, s: &UpstreamSettings, core: &Mutex<Core>, local: &Client) {
    match event {
        Event::Publish {
            topic,
            payload,
            retain,
        } => {
            let topic = s.route.down(&topic);
            let sent = local.try_publish(&topic, retain, payload, None);
            let mut c = lock(core);
            match sent {
                true => c.counters.brought_down += 1,
                false => c.counters.down_dropped += 1,
            }
        }
        Event::Sent(pkid) => lock(core).on_outgoing(pkid),
        Event::Acked { pkid, refused } => lock(core).on_puback(pkid, refused.as_deref()),
        Event::Connected | Event::SubAck | Event::Disconnected | Event::Other => {}
    }
}

async fn drive_local(
    mut conn: Connection,
    client: Client,
    s: Arc<UpstreamSettings>,
    core: Arc<Mutex<Core>>,
) {
    let mut backoff = Backoff::new(s.reconnect_min, s.reconnect_max, &s.name);
    let mut failures: u64 = 0;
    loop {
        match conn.poll().await {
            Ok(Event::Connected) => {
                failures = 0;
                backoff.reset();
                for f in &s.forward {
                    if let Err(e) = client.try_subscribe(f) {
                        tracing::warn!(upstream = s.name, filter = f, error = %e, "subscribe on the local broker failed");
                    }
                }
            }
            Ok(Event::Publish {
                topic,
                payload,
                retain,
            }) => {
                let mut c = lock(&core);
                c.take(&topic, &s.route, &payload, retain);
                c.pump();
            }
            Ok(_) => {}
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(upstream = s.name, broker = %s.local.url.display(), error = %e.text, "upstream: cannot read from the agent's broker; retrying");
                }
                failures += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// One MQTT connect to the primary, in the version the forwarder would use (MQTT 5 first
/// with `auto`, then 3.1.1 if it is refused): healthy only if it accepts us (TCP alone
/// is not enough: a broker that refuses the login would be failed back to for nothing).
async fn probe_primary(s: Arc<UpstreamSettings>, result: Arc<Mutex<Option<bool>>>) {
    let primary = &s.brokers[0];
    let probe = primary.with_client_id(format!("{}-probe", primary.client_id));
    let url = primary.url.display();
    let mut negotiation = Negotiation::new(s.protocol, &url, Memory::global());
    let mut refusal = None;
    let ok = loop {
        let version = negotiation.version();
        match probe_once(&probe, version).await {
            Ok(()) => {
                if negotiation.connected() {
                    log_version(&s.name, &url, version, refusal.as_deref());
                }
                break true;
            }
            Err(f) if negotiation.failed(&f) => refusal = Some(f.text),
            Err(_) => break false,
        }
    };
    if let Ok(mut r) = result.lock() {
        *r = Some(ok);
    }
}

async fn probe_once(probe: &ClientConfig, version: Version) -> Result<(), Failure> {
    let (client, mut conn) = open(probe, &Session::default(), Duration::ZERO, version, 4);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.poll().await {
                Ok(Event::Connected) => return Ok(()),
                Ok(_) => {}
                Err(f) => return Err(f),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(Failure {
            text: "no CONNACK within 5 s".into(),
            wrong_version: false,
            oversize: None,
        })
    });
    if r.is_ok() {
        client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.poll()).await;
    }
    r
}
