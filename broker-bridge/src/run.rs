//! The `run` command: MQTT in, notifications out.
//!
//! A message is acknowledged to the broker (manual QoS 1 acks) only after it has been
//! queued for every target it goes to, and, with `bridge.state_dir`, written to the
//! notification log ([`crate::dedup`]); so a bridge that dies, even by `kill -9`, loses
//! nothing: the broker still holds what was not acknowledged, the log what was. Queues
//! are bounded and a full one holds back the acknowledgements, which slows the broker
//! down instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_shared::mqtt::Session;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::Error;
use crate::config::{Built, Resolved, Settings};
use crate::dedup::{Key, NotificationLog};
use crate::deliver::{self, DeadLetter, Queued};
use crate::group::{Added, Groups};
use crate::inhibit::Hosts;
use crate::limits::Gate;
use crate::message::{Rejected, decode};
use crate::notify::Notification;
use crate::repeat::Repeats;
use crate::silence::Silences;
use crate::stats::{RateLimited, RouteStats, Stats, TargetStats};

/// Largest MQTT packet read from the broker; larger ones are the broker's to refuse
/// (mosquitto: `message_size_limit`).
const INCOMING_PACKET_LIMIT: usize = 16 * 1024 * 1024;

pub async fn run(resolved: Resolved) -> Result<(), Error> {
    // The state directory first: a second bridge on it stops here, before connecting.
    let (log, mut recovered, positions) = match &resolved.settings.state_dir {
        Some(dir) => {
            let (log, recovered, loaded) = NotificationLog::open(
                dir,
                resolved.settings.dedup_capacity,
                resolved.settings.state_sync,
            )?;
            if loaded.bad_lines > 0 || loaded.torn_tail > 0 {
                tracing::warn!(
                    path = %dir.join(crate::dedup::LOG_FILE).display(),
                    bad_lines = loaded.bad_lines,
                    first_bad_line = loaded.first_bad_line,
                    torn_tail_bytes = loaded.torn_tail,
                    "notification log damaged; bad records skipped (their alarms may be notified again)"
                );
            }
            tracing::info!(
                state_dir = %dir.display(),
                records = loaded.records,
                keys = loaded.keys,
                unfinished = recovered.len(),
                "notification log loaded"
            );
            (log, recovered, loaded.positions)
        }
        None => {
            tracing::info!("bridge.state_dir is empty: dedup keys and queues are in memory only");
            (
                NotificationLog::memory(resolved.settings.dedup_capacity),
                Vec::new(),
                Default::default(),
            )
        }
    };
    let log = Arc::new(log);
    let Built {
        settings,
        notifiers,
    } = resolved.build()?;
    let mut stats = Stats::default();
    for r in &settings.routes {
        stats.routes.push(RouteStats {
            topic: r.topic.clone(),
            ..Default::default()
        });
    }
    for (name, n) in settings.targets.iter().zip(&notifiers) {
        stats.targets.push(TargetStats {
            name: name.clone(),
            kind: n.kind(),
            ..Default::default()
        });
    }
    let stats = Arc::new(stats);
    let dead = Arc::new(DeadLetter::new(settings.delivery.dead_letter.clone()));
    let mut queues = Vec::with_capacity(notifiers.len());
    let mut workers = Vec::with_capacity(notifiers.len());
    // Targets that tell their output's position (a file's length): if it grew past the
    // position recorded with the last finished notification, the one in flight when the
    // last run died (the target's oldest unfinished one) was written: not again.
    for (t, n) in notifiers.iter().enumerate() {
        let name = &settings.targets[t];
        let Some(now) = n.position() else { continue };
        if let Some(&last) = positions.get(name)
            && now > last
            && let Some(i) = recovered.iter().position(|r| r.n.target == *name)
        {
            let r = recovered.remove(i);
            tracing::info!(target_name = %name, topic = %r.n.topic, "the notification in flight when the bridge stopped was written; not sending it again");
            log.done(r.seq, Some((name, now)));
        }
        log.set_position(name, now);
    }
    for (idx, n) in notifiers.into_iter().enumerate() {
        let (tx, task) = deliver::spawn(
            idx,
            settings.targets[idx].clone(),
            n,
            settings.delivery.clone(),
            Arc::clone(&stats),
            Arc::clone(&dead),
            Arc::clone(&log),
        );
        queues.push(tx);
        workers.push(task);
    }
    // What a previous run queued and did not finish goes first, in its order.
    for r in recovered {
        match settings.targets.iter().position(|name| *name == r.n.target) {
            Some(t) => {
                stats.replayed.inc();
                stats.targets[t].queued.inc();
                let _ = queues[t]
                    .send(Queued {
                        seq: Some(r.seq),
                        n: r.n,
                    })
                    .await;
            }
            None => {
                tracing::warn!(target_name = %r.n.target, topic = %r.n.topic, "queued notification for a target no longer configured dropped");
                log.done(r.seq, None);
            }
        }
    }

    let m = &settings.mqtt;
    let session = Session {
        // A persistent session: the broker keeps our QoS 1 messages while we restart.
        clean: false,
        manual_acks: true,
        // Read packets far larger than `max_payload` and reject them ourselves (counted,
        // acked, skipped): a packet over the client's own limit kills the connection, and
        // the broker would redeliver it on every reconnect, blocking the session for good.
        max_incoming: INCOMING_PACKET_LIMIT.max(settings.max_payload + 4096),
        max_outgoing: 64 * 1024,
        last_will: None,
    };
    let opts = m
        .client
        .options(&session, "bridge mqtt")
        .map_err(|e| Error::Config {
            path: format!("mqtt.{}", e.key()),
            message: e.reason(),
        })?;
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let stats_topic = format!("{}/bridge/{}/stats", settings.prefix, settings.id);
    tracing::info!(
        broker = %m.client.url.display(),
        tls = m.client.url.tls,
        client_cert = m.client.tls.cert_file.is_some(),
        login = m.client.login.is_some(),
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
        log: &log,
        gates: settings
            .routes
            .iter()
            .map(|r| Gate::new(r.limits.clone(), Instant::now()))
            .collect(),
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
    let mut backoff = lookout_shared::time::Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(30),
        &settings.id,
    );
    let mut connected = false;
    let failures = RateLimited::new(Duration::from_secs(30));
    // Acks waiting for room in the client's request queue: the event loop can hand us a
    // burst of messages before it drains that queue, and an ack that is dropped stalls
    // the broker's window for this client. Bounded by the broker's inflight window.
    let mut unacked: VecDeque<Publish> = VecDeque::new();
    // Ready for systemd (Type=notify) once the pipeline exists; not waiting for the broker.
    if let Err(e) = lookout_shared::systemd::notify_ready() {
        tracing::warn!(error = %e, "could not tell systemd the bridge is ready");
    }
    loop {
        while let Some(p) = unacked.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unacked.pop_front();
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = timer_tick.tick() => {
                pipeline.timers().await;
                log.sync_if_due();
            }
            _ = stats_tick.tick() => {
                stats.state_errors.set(log.errors());
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
                    backoff.reset();
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
                    let error = e.to_string();
                    let hint = lookout_shared::tls::hint(&error);
                    if connected {
                        tracing::warn!(%error, "MQTT connection lost; retrying with backoff");
                    } else if let Some(hint) = hint {
                        // A certificate problem does not go away by retrying: say so loudly.
                        failures.hit(|suppressed| {
                            tracing::error!(broker = %m.client.url.display(), %error, hint, suppressed, "MQTT TLS connection refused; retrying with backoff");
                        });
                    } else {
                        failures.hit(|suppressed| {
                            tracing::warn!(broker = %m.client.url.display(), %error, suppressed, "MQTT connection failed; retrying with backoff");
                        });
                    }
                    connected = false;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    let _ = lookout_shared::systemd::notify_stopping();
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
        tracing::warn!(
            unfinished = log.pending(),
            "grace time over with notifications still queued; the next start sends them"
        );
    }
    // Everything finished (or still queued) is on disk before we exit 0.
    if let Err(e) = log.sync() {
        tracing::error!(error = %e, "cannot fsync the notification log at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Everything between a message and the target queues, with the state it keeps.
struct Pipeline<'a> {
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
        if payload.len() > self.settings.max_payload {
            self.invalid(
                topic,
                &Rejected::TooLarge {
                    size: payload.len(),
                    limit: self.settings.max_payload,
                },
            );
            return;
        }
        // Route limits before decoding, so a flood on one route costs little and never
        // holds back another.
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
        if matched && !admitted.contains(&true) {
            return;
        }
        let decoded = match decode(payload, self.settings.max_payload) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                self.invalid(topic, &e);
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
            .filter(|(ri, r)| admitted[*ri] && r.when_holds(&decoded.fields));
        for (ri, route) in accepted {
            for &t in &route.targets {
                if std::mem::replace(&mut chosen[t], true) {
                    continue;
                }
                let mut dedup_key = None;
                if let Some((id, state)) = &decoded.alarm {
                    if state == "resolved" && !route.send_resolved {
                        self.stats.resolved_skipped.inc();
                        continue;
                    }
                    // A firing alarm whose level changed is news (the agent re-publishes it
                    // with the same id): the severity is part of what is deduplicated.
                    let state_key = match decoded.fields.get("severity").and_then(|v| v.as_u64()) {
                        Some(sev) if state == "firing" => format!("firing:{sev}"),
                        _ => state.clone(),
                    };
                    let k = crate::dedup::key(&self.settings.targets[t], id, &state_key);
                    if !self.log.first(k) {
                        self.stats.deduplicated.inc();
                        continue;
                    }
                    dedup_key = Some(k);
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
                    target: self.settings.targets[t].clone(),
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
                        if self.groups.add(ri, t, spec, n, dedup_key, Instant::now()) == Added::Full
                        {
                            self.stats.group_full.inc();
                        }
                    }
                    None => {
                        let keys: Vec<Key> = dedup_key.into_iter().collect();
                        self.enqueue(t, n, &keys).await
                    }
                }
            }
        }
        if routed {
            self.stats.routed.inc();
        } else {
            self.stats.unrouted.inc();
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
    async fn timers(&mut self) {
        let now = Instant::now();
        for (t, n, keys) in self.groups.due(now) {
            self.stats.grouped.inc();
            self.enqueue(t, n, &keys).await;
        }
        for (t, n) in self.repeats.due(now) {
            self.stats.repeated.inc();
            self.enqueue(t, n, &[]).await;
        }
    }
}

fn log_invalid(topic: &str, e: &Rejected, suppressed: u64) {
    // Bounded: a hostile topic or a long parser message does not make a long log line.
    let topic: String = topic.chars().take(200).collect();
    tracing::warn!(topic, error = %e, suppressed, "invalid message skipped");
}
