//! Everything between a message and the target queues, one stage per function, in the
//! order a message meets them:
//!
//! 1. control messages: the fleet-wide silences document replaces the silences; a host's
//!    status updates inhibition and may raise its `offline` alarm ([`crate::offline`]),
//!    routed like any other;
//! 2. `admit`: the size limit and each matching route's limits, before decoding, so a
//!    flood on one route costs little and never holds back another;
//! 3. `decode` ([`crate::message`]);
//! 4. `silenced`, then `inhibited`;
//! 5. per route whose `when` holds, per target not reached by an earlier route: `dedup`,
//!    `render`, `repeat`, then `group` or `enqueue` into the target's bounded queue
//!    ([`crate::deliver`]).
//!
//! The state each stage keeps (gates, silences, hosts, repeats, groups) lives in its own
//! module; this file strings the stages together and counts what each one decided.
//! Acknowledgements and the firing alarms' table are in `pipeline/acks.rs`, escalation
//! in `pipeline/escalate.rs`.

mod acks;
mod escalate;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::Error;
use crate::config::Settings;
use crate::deadman::Silent;
use crate::dedup::{Key, NotificationLog};
use crate::deliver::Queued;
use crate::firing::{Firing, Sent};
use crate::group::{Added, GroupSpec, Groups};
use crate::heartbeat::Watchdog;
use crate::limits::Gate;
use crate::message::{Decoded, Rejected};
use crate::mute::{Held, Hold};
use crate::notify::Notification;
use crate::offline::Hosts;
use crate::orphan::Orphans;
use crate::repeat::Repeats;
use crate::route::Route;
use crate::silence::Silences;
use crate::source::Incoming;
use crate::stats::{RateLimited, Stats};
use crate::template::Template;

/// The pipeline and the state it keeps between messages.
pub struct Pipeline<'a> {
    settings: &'a Settings,
    stats: &'a Stats,
    queues: &'a [mpsc::Sender<Queued>],
    log: &'a NotificationLog,
    /// Per route, in route order: its limits' run-time state.
    gates: Vec<Gate>,
    silences: Silences,
    hosts: Hosts,
    repeats: Repeats,
    groups: Groups,
    invalid_log: RateLimited,
    template_log: RateLimited,
    orphans: Orphans,
    /// Alarms muted routes held back, for the end of their window.
    held: Held,
    /// Unix ms now: the wall clock, or a test's (mute windows, offline records).
    wall: fn() -> i64,
    /// Hosts watched for silence (the dead-man alarm).
    silent: Silent,
    /// The heartbeat and the broker-lost notice.
    watchdog: Watchdog,
    default_title: Template,
    /// Firing alarms: who was sent them, acknowledgements (`pipeline/acks.rs`).
    firing: Firing,
    clock: acks::Clock,
    /// Replies to acknowledgements, for the source to publish.
    replies: Vec<(String, Vec<u8>)>,
    ack_log: RateLimited,
}

/// A decoded message on its way through the routes.
struct Message<'m> {
    topic: &'m str,
    payload: &'m [u8],
    decoded: Decoded,
    /// The payload as text, for templates that fail and bodies of plain-text messages.
    raw_text: std::borrow::Cow<'m, str>,
}

/// Dedup or `send_resolved` held the message back from a target.
struct Skipped;

impl<'a> Pipeline<'a> {
    pub fn new(
        settings: &'a Settings,
        stats: &'a Stats,
        queues: &'a [mpsc::Sender<Queued>],
        log: &'a NotificationLog,
    ) -> Result<Self, Error> {
        let default_title =
            Template::parse(crate::config::DEFAULT_TITLE).map_err(|m| Error::Config {
                path: "built-in default title".into(),
                message: m,
            })?;
        Ok(Self {
            settings,
            stats,
            queues,
            log,
            gates: settings
                .routes
                .iter()
                .map(|r| Gate::new(r.limits.clone(), Instant::now()))
                .collect(),
            silences: Silences::new(settings.silences.clone()),
            hosts: Hosts::new(
                settings.offline,
                settings.dedup_capacity,
                settings.state_dir.as_deref(),
            ),
            repeats: Repeats::new(settings.dedup_capacity),
            groups: Groups::new(settings.dedup_capacity),
            invalid_log: RateLimited::new(Duration::from_secs(10)),
            template_log: RateLimited::new(Duration::from_secs(10)),
            orphans: Orphans::default(),
            held: Held::new(settings.dedup_capacity),
            wall: lookout_shared::time::now_ms,
            silent: Silent::new(settings.silent_after, settings.dedup_capacity),
            watchdog: Watchdog::new(
                settings.heartbeat.clone(),
                settings.broker_lost.clone(),
                lookout_shared::time::now_ms(),
            ),
            default_title,
            firing: Firing::memory(settings.firing_capacity),
            clock: acks::Clock::new(),
            replies: Vec::new(),
            ack_log: RateLimited::new(Duration::from_secs(10)),
        })
    }

    /// Handles one message from the broker: control topics (silences, host status) first,
    /// then alarms and other messages.
    pub async fn handle(&mut self, incoming: Incoming<'_>) {
        self.stats.received.inc();
        match incoming {
            Incoming::Silences { topic, payload } => self.replace_silences(topic, payload),
            Incoming::Ack { payload } => {
                self.acknowledge(payload).await;
            }
            Incoming::Status {
                host,
                payload,
                retained,
            } => self.host_status(host, payload, retained).await,
            // A sign of life only, taken by `heard`.
            Incoming::HostStats { .. } => {}
            Incoming::Message { topic, payload } => self.route(topic, payload).await,
            Incoming::Replayed { topic } => {
                self.stats.replayed_skipped.inc();
                tracing::debug!(topic, "retained replay in a share group: not routed");
            }
        }
    }

    fn replace_silences(&mut self, topic: &str, payload: &[u8]) {
        match self.silences.replace_from_json(payload) {
            Ok(n) => tracing::info!(topic, silences = n, "silences replaced"),
            Err(e) => {
                self.stats.invalid.inc();
                tracing::warn!(topic, error = %e, "silences rejected; the previous ones stay");
            }
        }
    }

    /// A message arrived from the broker: a host that publishes live is alive (its status
    /// is `host_status`'s to judge); one that was silent gets its `silent` alarm resolved.
    pub async fn heard(&mut self, topic: &str, payload: &[u8], retained: bool) {
        use lookout_shared::topics::Kind;
        if retained {
            return;
        }
        let Ok((host, kind)) = lookout_shared::topics::parse(&self.settings.prefix, topic) else {
            return;
        };
        if kind == Kind::Status {
            return;
        }
        let now_ms = lookout_shared::time::now_ms();
        self.hosts.heard(host, now_ms);
        let every = (kind == Kind::AgentStats)
            .then(|| crate::deadman::stats_interval(payload))
            .flatten();
        let regular = matches!(kind, Kind::AgentStats | Kind::Metrics | Kind::Score { .. });
        let now = tokio::time::Instant::now();
        let back = self.silent.heard(host, regular, every, now, now_ms);
        if let Some(alarm) = back {
            self.host_alarm(&alarm).await;
        }
    }

    /// The broker link's state, every timer tick: heartbeats while connected, and the
    /// broker-lost notice, straight into the listed targets' queues.
    pub async fn link(&mut self, connected: bool) {
        let now_ms = lookout_shared::time::now_ms();
        let Some(news) = self.watchdog.check(connected, now_ms) else {
            return;
        };
        let (id, prefix) = (&self.settings.id, &self.settings.prefix);
        for &t in self.watchdog.lost_targets() {
            let n =
                crate::heartbeat::link_notice(&self.settings.targets[t], id, prefix, &news, now_ms);
            self.enqueue(t, n, &[]).await;
        }
    }

    /// A host's availability: with `inhibit_offline`, going offline raises the host's
    /// `offline` alarm after its grace and coming back resolves it, both routed like any
    /// alarm ([`crate::offline`]).
    async fn host_status(&mut self, host: &str, payload: &[u8], retained: bool) {
        if !self.settings.inhibit_offline {
            return;
        }
        let now_ms = lookout_shared::time::now_ms();
        let silent = match payload {
            b"offline" | b"" => self.silent.offline(host, now_ms),
            b"online" if !retained => {
                self.silent
                    .heard(host, false, None, tokio::time::Instant::now(), now_ms)
            }
            _ => None,
        };
        let offline = self.hosts.status(host, payload, retained, now_ms);
        for alarm in silent.iter().chain(&offline) {
            self.host_alarm(alarm).await;
        }
    }

    /// A synthetic host alarm (`offline`), routed on `<prefix>/<host>/alarms/<source>`.
    async fn host_alarm(&mut self, alarm: &serde_json::Value) {
        let field = |k: &str| alarm[k].as_str().unwrap_or_default();
        let topic =
            lookout_shared::topics::alarm(&self.settings.prefix, field("host"), field("source"));
        let raw = alarm.to_string().into_bytes();
        self.route(&topic, &raw).await;
    }

    /// An alarm or any other message, through every stage to the target queues.
    async fn route(&mut self, topic: &str, payload: &[u8]) {
        let Some(admitted) = self.admit(topic, payload) else {
            return;
        };
        let Some(decoded) = self.decode(topic, payload) else {
            return;
        };
        if self.silenced(topic, &decoded) || self.inhibited(&decoded) {
            return;
        }
        let mut was_firing = None;
        if let Some((id, state)) = &decoded.alarm
            && state == "resolved"
        {
            self.repeats.resolved(id);
            was_firing = self.firing_resolved(id);
        }
        let m = Message {
            topic,
            payload,
            decoded,
            raw_text: String::from_utf8_lossy(payload),
        };
        if self.fan_out(&admitted, &m).await {
            self.stats.routed.inc();
        } else {
            self.stats.unrouted.inc();
        }
        if let Some(entry) = was_firing {
            self.resolve_escalated(&m, entry).await;
        }
    }

    /// The payload size limit, then the limits of every route whose filter matches: which
    /// routes admit the message, or `None` when it goes no further (too large, or every
    /// matching route refused it).
    fn admit(&mut self, topic: &str, payload: &[u8]) -> Option<Vec<bool>> {
        if payload.len() > self.settings.max_payload {
            self.invalid(
                topic,
                &Rejected::TooLarge {
                    size: payload.len(),
                    limit: self.settings.max_payload,
                },
            );
            return None;
        }
        let now = Instant::now();
        let mut admitted = vec![false; self.settings.routes.len()];
        let mut matched = false;
        for (ri, route) in self.settings.routes.iter().enumerate() {
            if !crate::route::topic_matches(&route.topic, topic) {
                continue;
            }
            matched = true;
            match self.gates[ri].admit(topic, payload.len(), now) {
                Ok(()) => admitted[ri] = true,
                Err(why) => self.gates[ri].emit(&self.stats.routes[ri], topic, why),
            }
        }
        (!matched || admitted.contains(&true)).then_some(admitted)
    }

    /// The payload as fields; `None` for an empty payload (a cleared retained message) and
    /// for one that cannot be decoded (counted and logged).
    fn decode(&self, topic: &str, payload: &[u8]) -> Option<Decoded> {
        match crate::message::decode(payload, self.settings.max_payload) {
            Ok(d) => d,
            Err(e) => {
                self.invalid(topic, &e);
                None
            }
        }
    }

    fn silenced(&self, topic: &str, d: &Decoded) -> bool {
        let Some(s) = self
            .silences
            .silenced_by(&d.fields, lookout_shared::time::now_ms())
        else {
            return false;
        };
        self.stats.silenced.inc();
        tracing::debug!(topic, comment = %s.comment, "silenced");
        true
    }

    /// An offline host's alarms are held back, except the bridge's own about the host
    /// (`offline`, and the resolve of `silent`).
    fn inhibited(&self, d: &Decoded) -> bool {
        let held = d
            .fields
            .get("host")
            .and_then(|h| h.as_str())
            .is_some_and(|host| self.hosts.is_offline(host))
            && !matches!(
                d.fields.get("source").and_then(|s| s.as_str()),
                Some("offline" | "silent")
            );
        if held {
            self.stats.inhibited.inc();
        }
        held
    }

    /// Each route that admitted the message and whose `when` holds, to each of its targets
    /// not reached by an earlier route. True when some target took it.
    async fn fan_out(&mut self, admitted: &[bool], m: &Message<'_>) -> bool {
        let settings = self.settings;
        let mut chosen = vec![false; self.queues.len()];
        let mut routed = false;
        let mut sent = Vec::new();
        for (ri, route) in settings.routes.iter().enumerate() {
            if !admitted[ri] || !route.when_holds(&m.decoded.fields) || self.muted(ri, route, m) {
                continue;
            }
            for &t in &route.targets {
                if std::mem::replace(&mut chosen[t], true) {
                    continue;
                }
                routed |= self.for_target(ri, route, t, m).await;
                sent.push(Sent {
                    route: ri,
                    target: settings.targets[t].clone(),
                });
            }
        }
        self.note_firing(m, &sent);
        routed
    }

    /// True when route `ri` is muted now ([`crate::mute`]): the message is counted and an
    /// alarm's latest state held for the window's end.
    fn muted(&mut self, ri: usize, route: &Route, m: &Message<'_>) -> bool {
        if route.mute.is_empty() && route.active.is_empty() {
            return false;
        }
        let now_ms = (self.wall)();
        if !crate::mute::route_muted(
            &route.mute,
            &route.active,
            &self.settings.time_intervals,
            now_ms,
        ) {
            return false;
        }
        self.stats.muted.inc();
        if let Some((id, state)) = &m.decoded.alarm {
            match self.held.hold(ri, id, state, m.topic, m.payload) {
                Hold::Kept => {}
                Hold::Orphan => {
                    for &t in &route.targets {
                        self.orphans.emit(self.stats, &self.settings.targets[t], id);
                    }
                }
                Hold::Full => self.stats.mute_full.inc(),
            }
        }
        true
    }

    /// One message for target `t` by route `ri`. False when dedup or `send_resolved` held
    /// it back.
    async fn for_target(&mut self, ri: usize, route: &Route, t: usize, m: &Message<'_>) -> bool {
        let Ok(keys) = self.dedup(route, t, &m.decoded) else {
            return false;
        };
        let n = self.render(route, t, m);
        self.repeat(ri, route, t, &m.decoded, &n);
        match &route.group {
            Some(spec) => self.group(ri, t, spec, n, keys),
            None => self.enqueue(t, n, &keys).await,
        }
        true
    }

    /// The agent's alarms reach each target once per `(id, state)`, a firing state once
    /// per severity, a resolved state only where the firing went ([`crate::orphan`]);
    /// returns the keys the notification settles (none for other messages).
    fn dedup(&self, route: &Route, t: usize, d: &Decoded) -> Result<Vec<Key>, Skipped> {
        let Some((id, state)) = &d.alarm else {
            return Ok(Vec::new());
        };
        if state == "resolved" && !route.send_resolved {
            self.stats.resolved_skipped.inc();
            return Err(Skipped);
        }
        // A firing alarm whose level changed is news (the agent re-publishes it with the
        // same id): the severity is part of what is deduplicated.
        let state_key = match d.fields.get("severity").and_then(|v| v.as_u64()) {
            Some(sev) if state == "firing" => format!("firing:{sev}"),
            _ => state.clone(),
        };
        let k = crate::dedup::key(&self.settings.targets[t], id, &state_key);
        if !self.log.first(k) {
            self.stats.deduplicated.inc();
            return Err(Skipped);
        }
        let target = &self.settings.targets[t];
        if state == "resolved" && !crate::orphan::resolve_allowed(self.log, target, id) {
            self.orphans.emit(self.stats, target, id);
            return Err(Skipped);
        }
        if state == "firing" {
            let fired = crate::orphan::fired_key(target, id);
            self.log.first(fired);
            return Ok(vec![k, fired]);
        }
        Ok(vec![k])
    }

    /// The notification for target `t`: the route's templates, else the defaults (the
    /// alarm title, or the topic; the text of a plain-text message, else its JSON).
    fn render(&self, route: &Route, t: usize, m: &Message<'_>) -> Notification {
        let title = match (&route.title, &m.decoded.alarm) {
            (Some(tpl), _) => self.fill(tpl, m),
            (None, Some(_)) => self.fill(&self.default_title, m),
            (None, None) => m.topic.to_owned(),
        };
        let fields = &m.decoded.fields;
        let plain_text = fields
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("payload"));
        let body = match &route.body {
            Some(b) => self.fill(b, m),
            None if plain_text => m.raw_text.to_string(),
            None => default_body(fields).unwrap_or_else(|_| m.raw_text.to_string()),
        };
        Notification {
            target: self.settings.targets[t].clone(),
            topic: m.topic.to_owned(),
            title,
            body,
            fields: fields.clone(),
            raw: m.payload.to_vec(),
        }
    }

    /// A template filled in; a template error sends the raw payload instead (counted,
    /// logged at most once per 10 s).
    fn fill(&self, tpl: &Template, m: &Message<'_>) -> String {
        tpl.render(&m.decoded.fields, m.topic, m.payload)
            .unwrap_or_else(|e| {
                self.stats.template_errors.inc();
                self.template_log.hit(|suppressed| {
                    tracing::warn!(topic = m.topic, error = %e, suppressed, "template error; sending the raw payload")
                });
                m.raw_text.to_string()
            })
    }

    /// A firing alarm on a route with `repeat_interval` is remembered, to be sent again
    /// while it stays firing.
    fn repeat(&mut self, ri: usize, route: &Route, t: usize, d: &Decoded, n: &Notification) {
        if let (Some(every), Some((id, state))) = (route.repeat_interval, &d.alarm)
            && state == "firing"
            && !self
                .repeats
                .firing(ri, t, id, every, n.clone(), Instant::now())
        {
            self.stats.repeat_full.inc();
        }
    }

    fn group(&mut self, ri: usize, t: usize, spec: &GroupSpec, n: Notification, keys: Vec<Key>) {
        if self.groups.add(ri, t, spec, n, keys, Instant::now()) == Added::Full {
            self.stats.group_full.inc();
        }
    }

    /// Counts and logs (rate-limited) a message that cannot be decoded.
    fn invalid(&self, topic: &str, e: &Rejected) {
        self.stats.invalid.inc();
        self.invalid_log
            .hit(|suppressed| log_invalid(topic, e, suppressed));
    }

    /// Writes the notification to the log (with the dedup keys it settles), then queues
    /// it: on disk before the message can be acknowledged.
    async fn enqueue(&self, t: usize, n: Notification, keys: &[Key]) {
        self.stats.targets[t].queued.inc();
        let seq = self.log.queued(keys, &n);
        if self.queues[t].send(Queued { seq, n }).await.is_err() {
            tracing::error!(target_name = %self.settings.targets[t], "target worker stopped");
        }
    }

    /// Sends the batches whose time has come and re-sends alarms whose repeat interval
    /// has come.
    pub async fn timers(&mut self) {
        let now = Instant::now();
        for (t, n, keys) in self.groups.due(now) {
            self.stats.grouped.inc();
            self.enqueue(t, n, &keys).await;
        }
        self.ack_timers();
        self.escalations().await;
        let now_ms = (self.wall)();
        for (ri, t, n) in self.repeats.due(now) {
            if self.acked(&n) {
                continue;
            }
            // Alertmanager's mute_time_intervals mute repeats too: a maintenance window is
            // quiet. The next repeat after the window comes at its interval.
            if let Some(r) = self.settings.routes.get(ri)
                && crate::mute::route_muted(
                    &r.mute,
                    &r.active,
                    &self.settings.time_intervals,
                    now_ms,
                )
            {
                self.stats.muted.inc();
                continue;
            }
            self.stats.repeated.inc();
            self.enqueue(t, n, &[]).await;
        }
        for alarm in self.hosts.due(tokio::time::Instant::now()) {
            self.host_alarm(&alarm).await;
        }
        let silent = self
            .silent
            .due(tokio::time::Instant::now(), lookout_shared::time::now_ms());
        for alarm in silent {
            self.host_alarm(&alarm).await;
        }
        self.unmuted().await;
        self.hosts.save_if_due();
    }
}

impl Pipeline<'_> {
    /// Routes again what muted routes held, once their window has ended: a firing alarm
    /// that still fires is delivered then, never lost to the window.
    async fn unmuted(&mut self) {
        let settings = self.settings;
        let now_ms = (self.wall)();
        for (ri, r) in settings.routes.iter().enumerate() {
            if (r.mute.is_empty() && r.active.is_empty())
                || crate::mute::route_muted(&r.mute, &r.active, &settings.time_intervals, now_ms)
            {
                continue;
            }
            for (topic, payload) in self.held.release(ri) {
                self.route(&topic, &payload).await;
            }
        }
    }
}

/// The default body: the message's JSON, less an alarm's `window` (hundreds of ticks for
/// the picture, `crate::picture`, not text for people; `{window}` still shows it).
fn default_body(fields: &serde_json::Value) -> serde_json::Result<String> {
    match fields.as_object() {
        Some(o) if o.contains_key("window") => {
            let rest: serde_json::Map<String, serde_json::Value> = o
                .iter()
                .filter(|(k, _)| *k != "window")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::to_string(&rest)
        }
        _ => serde_json::to_string(fields),
    }
}

fn log_invalid(topic: &str, e: &Rejected, suppressed: u64) {
    // Bounded: a hostile topic or a long parser message does not make a long log line.
    let topic: String = topic.chars().take(200).collect();
    tracing::warn!(topic, error = %e, suppressed, "invalid message skipped");
}

#[cfg(test)]
mod tests {
    use lookout_shared::config::Source;
    use serde_json::json;

    use super::*;
    use crate::stats::TargetStats;

    /// Two log targets, `a` by the alarm route and `b` by both routes, and what each
    /// target's queue receives.
    pub(super) struct Bench {
        pub(super) settings: Settings,
        pub(super) stats: Stats,
        log: NotificationLog,
        queues: Vec<mpsc::Sender<Queued>>,
        received: Vec<std::cell::RefCell<mpsc::Receiver<Queued>>>,
    }

    impl Bench {
        fn new() -> Self {
            Self::with_log(NotificationLog::memory)
        }

        /// A bench whose notification log is the one in `dir`, as a bridge's after a
        /// restart.
        fn on_disk(dir: &std::path::Path) -> Self {
            Self::with_log(|capacity| {
                NotificationLog::open(dir, capacity, Duration::ZERO)
                    .unwrap()
                    .0
            })
        }

        fn with_log(log: impl FnOnce(usize) -> NotificationLog) -> Self {
            Self::with_config(BENCH, log)
        }

        /// A bench on another config.
        pub(super) fn with(text: &str) -> Self {
            Self::with_config(text, NotificationLog::memory)
        }

        fn with_config(text: &str, log: impl FnOnce(usize) -> NotificationLog) -> Self {
            let settings = crate::config::resolve(&Source::builtin("test.toml", text), &[])
                .unwrap()
                .settings;
            let mut stats = Stats::default();
            for name in &settings.targets {
                stats.targets.push(TargetStats {
                    name: name.clone(),
                    ..Default::default()
                });
            }
            let (queues, received): (_, Vec<_>) =
                settings.targets.iter().map(|_| mpsc::channel(16)).unzip();
            let received = received.into_iter().map(std::cell::RefCell::new).collect();
            Self {
                log: log(settings.dedup_capacity),
                settings,
                stats,
                queues,
                received,
            }
        }

        pub(super) fn pipeline(&self) -> Pipeline<'_> {
            Pipeline::new(&self.settings, &self.stats, &self.queues, &self.log).unwrap()
        }

        /// Everything queued for target `t` so far.
        pub(super) fn queued(&self, t: usize) -> Vec<Notification> {
            let mut out = Vec::new();
            while let Ok(q) = self.received[t].borrow_mut().try_recv() {
                out.push(q.n);
            }
            out
        }
    }

    const BENCH: &str = r#"
        [bridge]
        state_dir = ""
        [targets.a]
        type = "log"
        [targets.b]
        type = "log"
        [[routes]]
        topic = "lookout/+/alarms/#"
        targets = ["a", "b"]
        [[routes]]
        topic = "lookout/#"
        targets = ["b"]
    "#;

    pub(super) fn alarm(host: &str, state: &str) -> Vec<u8> {
        json!({"id": format!("{host}:cpu:1"), "host": host, "source": "cpu", "state": state, "severity": 2})
            .to_string()
            .into_bytes()
    }

    pub(super) fn message<'a>(topic: &'a str, payload: &'a [u8]) -> Incoming<'a> {
        Incoming::Message { topic, payload }
    }

    #[test]
    fn the_default_body_leaves_out_an_alarms_window_and_keeps_everything_else() {
        let fields = serde_json::json!({"host": "h", "score": 4.1,
            "window": {"ts": [1], "score": [1.0], "level": [0], "series": []}});
        let body: serde_json::Value =
            serde_json::from_str(&super::default_body(&fields).unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({"host": "h", "score": 4.1}));
        let plain = serde_json::json!([1, 2]);
        assert_eq!(super::default_body(&plain).unwrap(), "[1,2]");
    }

    #[tokio::test]
    async fn an_alarm_reaches_each_target_once_and_a_redelivery_reaches_none() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        let firing = alarm("edge-1", "firing");
        p.handle(message("lookout/edge-1/alarms/cpu", &firing))
            .await;
        p.handle(message("lookout/edge-1/alarms/cpu", &firing))
            .await;
        drop(p);

        let a = bench.queued(0);
        let b = bench.queued(1);
        assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
        assert_eq!(a[0].title, "[firing] edge-1: cpu (severity 2)");
        assert_eq!(b[0].target, "b");
        let s = &bench.stats;
        assert_eq!(s.received.get(), 2);
        assert_eq!(s.routed.get(), 1);
        assert_eq!(s.deduplicated.get(), 2, "the redelivery, once per target");
    }

    fn status<'a>(host: &'a str, payload: &'a [u8], retained: bool) -> Incoming<'a> {
        Incoming::Status {
            host,
            payload,
            retained,
        }
    }

    /// `host source state severity` of each notification queued for target `t`.
    fn summary(bench: &Bench, t: usize) -> Vec<String> {
        bench
            .queued(t)
            .iter()
            .map(|n| {
                let f = &n.fields;
                format!(
                    "{} {} {} {}",
                    f["host"].as_str().unwrap_or("?"),
                    f["source"].as_str().unwrap_or("?"),
                    f["state"].as_str().unwrap_or("?"),
                    f["severity"]
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_past_the_grace_raises_the_offline_alarm_and_holds_back_the_hosts_others() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        p.handle(status("edge-1", b"offline", false)).await;
        let firing = alarm("edge-1", "firing");
        p.handle(message("lookout/edge-1/alarms/cpu", &firing))
            .await;
        let other = alarm("edge-2", "firing");
        p.handle(message("lookout/edge-2/alarms/cpu", &other)).await;
        tokio::time::advance(Duration::from_secs(119)).await;
        p.timers().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        p.timers().await;
        p.handle(status("edge-1", b"online", false)).await;
        drop(p);

        assert_eq!(
            summary(&bench, 0),
            [
                "edge-2 cpu firing 2",
                "edge-1 offline firing 4",
                "edge-1 offline resolved 4",
            ]
        );
        assert_eq!(bench.stats.inhibited.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_40_second_reboot_notifies_nobody() {
        // Without the dead-man alarm, which would rightly fire for a host silent after.
        let quiet = BENCH.replace(
            "state_dir = \"\"",
            "state_dir = \"\"\nsilent_after = \"0s\"",
        );
        let bench = Bench::with(&quiet);
        let mut p = bench.pipeline();
        p.handle(status("edge-1", b"offline", false)).await;
        for _ in 0..40 {
            tokio::time::advance(Duration::from_secs(1)).await;
            p.timers().await;
        }
        p.handle(status("edge-1", b"online", false)).await;
        tokio::time::advance(Duration::from_secs(600)).await;
        p.timers().await;
        drop(p);
        assert!(summary(&bench, 0).is_empty());
        assert!(summary(&bench, 1).is_empty());
        assert_eq!(
            bench.stats.orphan_resolved.get(),
            0,
            "no resolve was even made"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_retained_offline_at_start_is_one_level_1_notice() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        p.handle(status("gone-1", b"offline", true)).await;
        // The broker replays it again after a reconnect.
        p.handle(status("gone-1", b"offline", true)).await;
        tokio::time::advance(Duration::from_secs(3600)).await;
        p.timers().await;
        drop(p);
        assert_eq!(summary(&bench, 0), ["gone-1 offline firing 1"]);
    }

    /// The states of the notifications queued for target `t`.
    fn states(bench: &Bench, t: usize) -> Vec<String> {
        bench
            .queued(t)
            .iter()
            .map(|n| n.fields["state"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_resolve_whose_firing_the_bridge_never_sent_goes_nowhere_and_is_counted() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        let resolved = alarm("edge-1", "resolved");
        p.handle(message("lookout/edge-1/alarms/cpu", &resolved))
            .await;
        drop(p);
        assert!(states(&bench, 0).is_empty());
        assert!(states(&bench, 1).is_empty());
        assert_eq!(bench.stats.orphan_resolved.get(), 2, "once per target");
        assert_eq!(bench.stats.routed.get(), 0);
    }

    #[tokio::test]
    async fn a_firing_and_its_resolve_both_reach_every_target() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        for state in ["firing", "resolved"] {
            let a = alarm("edge-1", state);
            p.handle(message("lookout/edge-1/alarms/cpu", &a)).await;
        }
        drop(p);
        assert_eq!(states(&bench, 0), ["firing", "resolved"]);
        assert_eq!(states(&bench, 1), ["firing", "resolved"]);
        assert_eq!(bench.stats.orphan_resolved.get(), 0);
    }

    #[tokio::test]
    async fn a_resolve_after_a_restart_reaches_the_targets_that_were_sent_the_firing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let before = Bench::on_disk(dir.path());
            let mut p = before.pipeline();
            let firing = alarm("edge-1", "firing");
            p.handle(message("lookout/edge-1/alarms/cpu", &firing))
                .await;
            drop(p);
            assert_eq!(states(&before, 0), ["firing"]);
        }
        let after = Bench::on_disk(dir.path());
        let mut p = after.pipeline();
        let resolved = alarm("edge-1", "resolved");
        p.handle(message("lookout/edge-1/alarms/cpu", &resolved))
            .await;
        let other = alarm("edge-2", "resolved");
        p.handle(message("lookout/edge-2/alarms/cpu", &other)).await;
        drop(p);
        assert_eq!(states(&after, 0), ["resolved"]);
        assert_eq!(states(&after, 1), ["resolved"]);
        assert_eq!(
            after.stats.orphan_resolved.get(),
            2,
            "edge-2 fired before any bridge saw it"
        );
    }

    /// Route 0 to `a` muted on Sundays 02:00-04:00 in Berlin, route 1 to `b` active on
    /// weekdays 08:00-16:00 there.
    const WINDOWS: &str = r#"
        [bridge]
        state_dir = ""
        [targets.a]
        type = "log"
        [targets.b]
        type = "log"
        [[time_intervals]]
        name = "sunday-maintenance"
        times = [{ weekdays = ["sunday"], times = [{ start_time = "02:00", end_time = "04:00" }], location = "Europe/Berlin" }]
        [[time_intervals]]
        name = "shift-hours"
        times = [{ weekdays = ["monday:friday"], times = [{ start_time = "08:00", end_time = "16:00" }], location = "Europe/Berlin" }]
        [[routes]]
        topic = "lookout/+/alarms/#"
        targets = ["a"]
        mute = ["sunday-maintenance"]
        [[routes]]
        topic = "lookout/+/alarms/#"
        targets = ["b"]
        active = ["shift-hours"]
    "#;

    thread_local! {
        static NOW_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    }

    fn test_clock() -> i64 {
        NOW_MS.with(|n| n.get())
    }

    /// Sets the test clock to a UTC time.
    fn at(utc: &str) {
        let ts: jiff::Timestamp = utc.parse().unwrap();
        NOW_MS.with(|n| n.set(ts.as_millisecond()));
    }

    fn ids(bench: &Bench, t: usize) -> Vec<String> {
        bench
            .queued(t)
            .iter()
            .map(|n| {
                format!(
                    "{} {}",
                    n.fields["host"].as_str().unwrap_or("?"),
                    n.fields["state"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_muted_route_sends_nothing_until_its_window_ends_then_what_still_fires() {
        let bench = Bench::with(WINDOWS);
        let mut p = bench.pipeline();
        p.wall = test_clock;
        at("2026-12-06T01:30:00Z"); // Sunday 02:30 in Berlin
        p.handle(message("lookout/e1/alarms/cpu", &alarm("e1", "firing")))
            .await;
        p.handle(message("lookout/e2/alarms/cpu", &alarm("e2", "firing")))
            .await;
        p.handle(message("lookout/e2/alarms/cpu", &alarm("e2", "resolved")))
            .await;
        p.timers().await;
        at("2026-12-06T02:59:00Z"); // 03:59: still muted
        p.timers().await;
        assert!(bench.queued(0).is_empty(), "muted");
        at("2026-12-06T03:00:00Z"); // 04:00: the window is over
        p.timers().await;
        p.timers().await;
        drop(p);
        assert_eq!(
            ids(&bench, 0),
            ["e1 firing"],
            "e2 resolved while muted: nothing"
        );
        assert!(ids(&bench, 1).is_empty(), "no shift on Sundays");
        let s = &bench.stats;
        assert_eq!(
            s.muted.get(),
            7,
            "three messages on two routes, and e1 again on b's route when a's window ended"
        );
        assert_eq!(s.orphan_resolved.get(), 2, "e2's resolve, for a and b");
    }

    /// Alertmanager mutes repeats in a mute window too: a maintenance window is quiet
    /// even for an alarm that fired before it. Repeats are timed by the monotonic clock,
    /// so this test waits for a 1 s interval.
    #[tokio::test]
    async fn repeats_fall_silent_while_their_route_is_muted() {
        let config = r#"
            [bridge]
            state_dir = ""
            [targets.a]
            type = "log"
            [[time_intervals]]
            name = "sunday-maintenance"
            times = [{ weekdays = ["sunday"], times = [{ start_time = "02:00", end_time = "04:00" }], location = "Europe/Berlin" }]
            [[routes]]
            topic = "lookout/+/alarms/#"
            targets = ["a"]
            mute = ["sunday-maintenance"]
            repeat_interval = "1s"
        "#;
        let bench = Bench::with(config);
        let mut p = bench.pipeline();
        p.wall = test_clock;
        at("2026-12-06T00:30:00Z"); // Sunday 01:30 in Berlin: before the window
        p.handle(message("lookout/e1/alarms/cpu", &alarm("e1", "firing")))
            .await;
        assert_eq!(ids(&bench, 0), ["e1 firing"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        p.timers().await;
        assert_eq!(ids(&bench, 0), ["e1 firing"], "a repeat");
        at("2026-12-06T01:30:00Z"); // 02:30: muted
        std::thread::sleep(std::time::Duration::from_millis(1100));
        p.timers().await;
        assert!(bench.queued(0).is_empty(), "no repeat in the window");
        assert_eq!(bench.stats.muted.get(), 1);
        at("2026-12-06T03:00:00Z"); // 04:00: over, and the alarm still fires
        std::thread::sleep(std::time::Duration::from_millis(1100));
        p.timers().await;
        drop(p);
        assert_eq!(
            ids(&bench, 0),
            ["e1 firing"],
            "repeats resume after the window"
        );
        assert_eq!(bench.stats.repeated.get(), 2);
    }

    #[tokio::test]
    async fn an_active_route_sends_only_inside_its_window() {
        let bench = Bench::with(WINDOWS);
        let mut p = bench.pipeline();
        p.wall = test_clock;
        at("2026-12-07T06:59:00Z"); // Monday 07:59 in Berlin
        p.handle(message("lookout/e1/alarms/cpu", &alarm("e1", "firing")))
            .await;
        p.timers().await;
        assert_eq!(ids(&bench, 0), ["e1 firing"]);
        assert!(ids(&bench, 1).is_empty(), "before the shift");
        at("2026-12-07T07:00:00Z"); // 08:00: the shift begins, e1 still fires
        p.timers().await;
        assert_eq!(ids(&bench, 1), ["e1 firing"]);
        p.handle(message("lookout/e3/alarms/cpu", &alarm("e3", "firing")))
            .await;
        assert_eq!(ids(&bench, 1), ["e3 firing"], "inside the window: at once");
        at("2026-12-07T15:00:00Z"); // 16:00: over
        p.handle(message("lookout/e4/alarms/cpu", &alarm("e4", "firing")))
            .await;
        p.timers().await;
        drop(p);
        assert!(ids(&bench, 1).is_empty());
        assert_eq!(bench.stats.muted.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_host_raises_its_silent_alarm_and_resolves_it_when_it_publishes_again() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        let stats = br#"{"ts": 1, "host": "e1", "stats_interval_s": 20}"#;
        p.heard("lookout/e1/agent/stats", stats, false).await;
        p.handle(Incoming::HostStats { host: "e1" }).await;
        // A retained replay says nothing about a host being alive, and alarms alone (a
        // host without stats) start no watch.
        p.heard("lookout/e2/agent/stats", stats, true).await;
        p.heard("lookout/e3/alarms/cpu", &alarm("e3", "firing"), false)
            .await;
        tokio::time::advance(Duration::from_secs(59)).await;
        p.timers().await;
        assert!(summary(&bench, 0).is_empty(), "3 × 20 s not over yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        p.timers().await;
        assert_eq!(summary(&bench, 0), ["e1 silent firing 3"]);
        p.timers().await;
        p.heard("lookout/e1/metrics", b"{}", false).await;
        drop(p);
        assert_eq!(summary(&bench, 0), ["e1 silent resolved 3"]);
        assert!(
            summary(&bench, 1).iter().all(|n| n.contains("silent")),
            "stats themselves are not routed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_announced_offline_gets_no_silent_alarm() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        p.heard("lookout/e1/metrics", b"{}", false).await;
        p.handle(status("e1", b"offline", false)).await;
        tokio::time::advance(Duration::from_secs(181)).await;
        p.timers().await;
        drop(p);
        assert_eq!(
            summary(&bench, 0),
            ["e1 offline firing 4"],
            "only the offline alarm"
        );
    }

    #[tokio::test]
    async fn bad_input_is_counted_and_goes_nowhere() {
        let bench = Bench::new();
        let mut p = bench.pipeline();
        p.handle(message("lookout/edge-1/alarms/cpu", b"{\"id\": broken"))
            .await;
        p.handle(message("lookout/edge-1/alarms/cpu", &[0xff, 0xfe]))
            .await;
        p.handle(message("lookout/edge-1/alarms/cpu", b"")).await;
        drop(p);

        assert_eq!(bench.stats.invalid.get(), 2);
        assert!(bench.queued(0).is_empty() && bench.queued(1).is_empty());
    }
}
