//! The `run` command: MQTT in, notifications out.
//!
//! A message is acknowledged to the broker (manual QoS 1 acks) only after it has been
//! queued for every target it goes to, so a bridge that dies loses nothing the broker
//! still holds; queues are bounded and a full one holds back the acknowledgements, which
//! slows the broker down instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::Error;
use crate::config::Settings;
use crate::dedup::Dedup;
use crate::deliver::{self, DeadLetter};
use crate::group::{Added, Groups};
use crate::inhibit::Hosts;
use crate::message::{Rejected, decode};
use crate::notify::Notification;
use crate::repeat::Repeats;
use crate::silence::Silences;
use crate::stats::{RateLimited, Stats, TargetStats};

/// Largest MQTT packet read from the broker; larger ones are the broker's to refuse
/// (mosquitto: `message_size_limit`).
const INCOMING_PACKET_LIMIT: usize = 16 * 1024 * 1024;

pub async fn run(settings: Settings) -> Result<(), Error> {
    let mut stats = Stats::default();
    let mut notifiers = Vec::with_capacity(settings.targets.len());
    for (name, cfg) in &settings.targets {
        let n = cfg.build(name)?;
        stats.targets.push(TargetStats {
            name: name.clone(),
            kind: n.kind(),
            ..Default::default()
        });
        notifiers.push(n);
    }
    let stats = Arc::new(stats);
    let dead = Arc::new(DeadLetter::new(settings.delivery.dead_letter.clone()));
    let mut queues = Vec::with_capacity(notifiers.len());
    let mut workers = Vec::with_capacity(notifiers.len());
    for (idx, n) in notifiers.into_iter().enumerate() {
        let (tx, task) = deliver::spawn(
            idx,
            n,
            settings.delivery.clone(),
            Arc::clone(&stats),
            Arc::clone(&dead),
        );
        queues.push(tx);
        workers.push(task);
    }

    let m = &settings.mqtt;
    let mut opts = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    opts.set_keep_alive(m.keep_alive);
    opts.set_manual_acks(true);
    // A persistent session: the broker keeps our QoS 1 messages while we restart.
    opts.set_clean_session(false);
    // Read packets far larger than `max_payload` and reject them ourselves (counted,
    // acked, skipped): a packet over the client's own limit kills the connection, and the
    // broker would redeliver it on every reconnect, blocking the session for good.
    opts.set_max_packet_size(
        INCOMING_PACKET_LIMIT.max(settings.max_payload + 4096),
        64 * 1024,
    );
    if let Some(user) = &m.username {
        opts.set_credentials(
            user.clone(),
            m.password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        );
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let stats_topic = format!("{}/bridge/{}/stats", settings.prefix, settings.id);
    tracing::info!(
        broker = %format!("mqtt://{}:{}", m.host, m.port),
        filters = ?m.filters,
        targets = settings.targets.len(),
        routes = settings.routes.len(),
        stats = %stats_topic,
        "lookout-bridge running"
    );

    let mut pipeline = Pipeline {
        settings: &settings,
        stats: &stats,
        queues: &queues,
        dedup: Dedup::new(settings.dedup_capacity),
        silences: Silences::new(settings.silences.clone()),
        hosts: Hosts::new(settings.dedup_capacity),
        repeats: Repeats::new(settings.dedup_capacity),
        groups: Groups::new(settings.dedup_capacity),
        invalid_log: RateLimited::new(Duration::from_secs(10)),
        template_log: RateLimited::new(Duration::from_secs(10)),
        silences_topic: format!("{}/bridge/silences", settings.prefix),
        default_title: crate::template::Template::parse(crate::config::DEFAULT_TITLE).map_err(
            |m| Error::Config {
                path: "built-in default title".into(),
                message: m,
            },
        )?,
    };
    // Control topics next to the configured filters: fleet-wide silences, and host
    // availability for inhibition. Not shared: every bridge of a group needs all of them.
    let mut filters = m.filters.clone();
    filters.push(pipeline.silences_topic.clone());
    if settings.inhibit_offline {
        filters.push(format!("{}/+/status", settings.prefix));
    }
    // Group and repeat timers; a quarter second is finer than any sensible setting.
    let mut timer_tick = tokio::time::interval(Duration::from_millis(250));
    timer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stats_tick = tokio::time::interval(settings.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = std::pin::pin!(lookout_shared::signal::shutdown());
    let mut delay = Duration::from_millis(250);
    let mut jitter = lookout_shared::time::Jitter::from_name(&settings.id);
    let mut connected = false;
    // Acks waiting for room in the client's request queue: the event loop can hand us a
    // burst of messages before it drains that queue, and an ack that is dropped stalls
    // the broker's window for this client. Bounded by the broker's inflight window.
    let mut unacked: VecDeque<Publish> = VecDeque::new();
    loop {
        while let Some(p) = unacked.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unacked.pop_front();
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = timer_tick.tick() => pipeline.timers().await,
            _ = stats_tick.tick() => {
                if let Ok(json) = serde_json::to_vec(&*stats) {
                    let _ = client.try_publish(&stats_topic, QoS::AtMostOnce, false, json);
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT connected; subscribing");
                    // Acks of the old connection mean nothing to the new one; the broker
                    // redelivers those messages and dedup keeps them single.
                    unacked.clear();
                    connected = true;
                    delay = Duration::from_millis(250);
                    for f in &filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    tracing::info!(codes = ?ack.return_codes, "subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    pipeline.handle(&p.topic, &p.payload).await;
                    unacked.push_back(p);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "MQTT connection lost; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, "MQTT connection failed");
                    }
                    connected = false;
                    tokio::time::sleep(jitter.apply(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    tracing::info!(grace = ?settings.grace, "shutting down: draining queues");
    // Send the acks still waiting and a clean DISCONNECT before anything else: without
    // them the broker would redeliver messages that are already queued here, and the
    // next bridge would notify them twice. Messages that arrive meanwhile are not acked;
    // the broker keeps them for the next session.
    for p in unacked.drain(..) {
        let _ = client.try_ack(&p);
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
    drop(pipeline);
    drop(queues);
    let drained = tokio::time::timeout(settings.grace, async {
        for w in workers {
            let _ = w.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace time over with notifications still queued");
    }
    Ok(())
}

/// Everything between a message and the target queues, with the state it keeps.
struct Pipeline<'a> {
    settings: &'a Settings,
    stats: &'a Stats,
    queues: &'a [mpsc::Sender<Notification>],
    dedup: Dedup,
    silences: Silences,
    hosts: Hosts,
    repeats: Repeats,
    groups: Groups,
    invalid_log: RateLimited,
    template_log: RateLimited,
    silences_topic: String,
    default_title: crate::template::Template,
}

impl Pipeline<'_> {
    /// Handles one message from the broker: control topics (silences, host status) first,
    /// then alarms and other messages.
    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        self.stats.received.inc();
        if topic == self.silences_topic {
            match self.silences.replace_from_json(payload) {
                Ok(n) => tracing::info!(topic, silences = n, "silences replaced"),
                Err(e) => {
                    self.stats.invalid.inc();
                    tracing::warn!(topic, error = %e, "silences rejected; the previous ones stay");
                }
            }
            return;
        }
        if let Ok((host, lookout_shared::topics::Kind::Status)) =
            lookout_shared::topics::parse(&self.settings.prefix, topic)
        {
            if self.settings.inhibit_offline
                && let Some(alarm) =
                    self.hosts
                        .update(host, payload, lookout_shared::time::now_ms())
            {
                let alarm_topic =
                    lookout_shared::topics::alarm(&self.settings.prefix, host, "offline");
                let raw = alarm.to_string().into_bytes();
                self.route(&alarm_topic, &raw).await;
            }
            return;
        }
        self.route(topic, payload).await;
    }

    async fn route(&mut self, topic: &str, payload: &[u8]) {
        let decoded = match decode(payload, self.settings.max_payload) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                self.stats.invalid.inc();
                self.invalid_log
                    .hit(|suppressed| log_invalid(topic, &e, suppressed));
                return;
            }
        };
        let now = lookout_shared::time::now_ms();
        if let Some(s) = self.silences.silenced_by(&decoded.fields, now) {
            self.stats.silenced.inc();
            tracing::debug!(topic, comment = %s.comment, "silenced");
            return;
        }
        if let Some(host) = decoded.fields.get("host").and_then(|h| h.as_str())
            && self.hosts.is_offline(host)
            && decoded.fields.get("source").and_then(|s| s.as_str()) != Some("offline")
        {
            self.stats.inhibited.inc();
            return;
        }
        if let Some((id, state)) = &decoded.alarm
            && state == "resolved"
        {
            self.repeats.resolved(id);
        }
        let raw_text = String::from_utf8_lossy(payload);
        let mut chosen = vec![false; self.queues.len()];
        let mut routed = false;
        let accepted = self
            .settings
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.accepts(topic, &decoded.fields));
        for (ri, route) in accepted {
            for &t in &route.targets {
                if std::mem::replace(&mut chosen[t], true) {
                    continue;
                }
                if let Some((id, state)) = &decoded.alarm {
                    if state == "resolved" && !route.send_resolved {
                        self.stats.resolved_skipped.inc();
                        continue;
                    }
                    if !self.dedup.first(t, id, state) {
                        self.stats.deduplicated.inc();
                        continue;
                    }
                }
                let render = |tpl: &crate::template::Template| {
                    tpl.render(&decoded.fields, topic, payload).unwrap_or_else(|e| {
                        self.stats.template_errors.inc();
                        self.template_log.hit(|suppressed| {
                            tracing::warn!(topic, error = %e, suppressed, "template error; sending the raw payload")
                        });
                        raw_text.to_string()
                    })
                };
                let title = match (&route.title, &decoded.alarm) {
                    (Some(t), _) => render(t),
                    (None, Some(_)) => render(&self.default_title),
                    (None, None) => topic.to_owned(),
                };
                let plain_text = decoded
                    .fields
                    .as_object()
                    .is_some_and(|o| o.len() == 1 && o.contains_key("payload"));
                let body = match &route.body {
                    Some(b) => render(b),
                    None if plain_text => raw_text.to_string(),
                    None => serde_json::to_string(&decoded.fields)
                        .unwrap_or_else(|_| raw_text.to_string()),
                };
                let n = Notification {
                    target: self.settings.targets[t].0.clone(),
                    topic: topic.to_owned(),
                    title,
                    body,
                    fields: decoded.fields.clone(),
                    raw: payload.to_vec(),
                };
                if let (Some(every), Some((id, state))) = (route.repeat_interval, &decoded.alarm)
                    && state == "firing"
                    && !self.repeats.firing(t, id, every, n.clone(), Instant::now())
                {
                    self.stats.repeat_full.inc();
                }
                routed = true;
                match &route.group {
                    Some(spec) => {
                        if self.groups.add(ri, t, spec, n, Instant::now()) == Added::Full {
                            self.stats.group_full.inc();
                        }
                    }
                    None => self.enqueue(t, n).await,
                }
            }
        }
        if routed {
            self.stats.routed.inc();
        } else {
            self.stats.unrouted.inc();
        }
    }

    async fn enqueue(&self, t: usize, n: Notification) {
        self.stats.targets[t].queued.inc();
        if self.queues[t].send(n).await.is_err() {
            tracing::error!(target_name = %self.settings.targets[t].0, "target worker stopped");
        }
    }

    /// Sends the batches whose time has come and re-sends alarms whose repeat interval
    /// has come.
    async fn timers(&mut self) {
        let now = Instant::now();
        for (t, n) in self.groups.due(now) {
            self.stats.grouped.inc();
            self.enqueue(t, n).await;
        }
        for (t, n) in self.repeats.due(now) {
            self.stats.repeated.inc();
            self.enqueue(t, n).await;
        }
    }
}

fn log_invalid(topic: &str, e: &Rejected, suppressed: u64) {
    tracing::warn!(topic, error = %e, suppressed, "invalid message skipped");
}
