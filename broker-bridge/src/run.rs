//! The `run` command: MQTT in, notifications out.
//!
//! A message is acknowledged to the broker (manual QoS 1 acks) only after it has been
//! queued for every target it goes to, so a bridge that dies loses nothing the broker
//! still holds; queues are bounded and a full one holds back the acknowledgements, which
//! slows the broker down instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::Error;
use crate::config::Settings;
use crate::dedup::Dedup;
use crate::deliver::{self, DeadLetter};
use crate::message::{Rejected, decode};
use crate::notify::Notification;
use crate::stats::{RateLimited, Stats, TargetStats};

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
    opts.set_max_packet_size(settings.max_payload.max(4096) + 4096, 64 * 1024);
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

    let mut dedup = Dedup::new(settings.dedup_capacity);
    let invalid_log = RateLimited::new(Duration::from_secs(10));
    let template_log = RateLimited::new(Duration::from_secs(10));
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
                    for f in &m.filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    tracing::info!(codes = ?ack.return_codes, "subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    handle(&settings, &stats, &mut dedup, &queues, &invalid_log, &template_log, &p).await;
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
    let _ = client.try_disconnect();
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

/// Decodes, routes, deduplicates, renders and queues one message.
async fn handle(
    settings: &Settings,
    stats: &Stats,
    dedup: &mut Dedup,
    queues: &[mpsc::Sender<Notification>],
    invalid_log: &RateLimited,
    template_log: &RateLimited,
    p: &Publish,
) {
    stats.received.inc();
    let decoded = match decode(&p.payload, settings.max_payload) {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            stats.invalid.inc();
            invalid_log.hit(|suppressed| log_invalid(&p.topic, &e, suppressed));
            return;
        }
    };
    let mut chosen = vec![false; queues.len()];
    let mut routed = false;
    for route in settings
        .routes
        .iter()
        .filter(|r| r.accepts(&p.topic, &decoded.fields))
    {
        for &t in &route.targets {
            if chosen[t] {
                continue;
            }
            chosen[t] = true;
            if let Some((id, state)) = &decoded.alarm {
                if state == "resolved" && !route.send_resolved {
                    stats.resolved_skipped.inc();
                    continue;
                }
                if !dedup.first(t, id, state) {
                    stats.deduplicated.inc();
                    continue;
                }
            }
            let raw_text = String::from_utf8_lossy(&p.payload);
            let render = |tpl: &crate::template::Template| {
                tpl.render(&decoded.fields, &p.topic, &p.payload).unwrap_or_else(|e| {
                    stats.template_errors.inc();
                    template_log.hit(|suppressed| {
                        tracing::warn!(topic = %p.topic, error = %e, suppressed, "template error; sending the raw payload")
                    });
                    raw_text.to_string()
                })
            };
            let title = render(&route.title);
            let body = match &route.body {
                Some(b) => render(b),
                None => {
                    serde_json::to_string(&decoded.fields).unwrap_or_else(|_| raw_text.to_string())
                }
            };
            let body = if route.body.is_none()
                && decoded.fields.get("payload").is_some()
                && decoded.fields.as_object().is_some_and(|o| o.len() == 1)
            {
                raw_text.to_string()
            } else {
                body
            };
            let n = Notification {
                target: settings.targets[t].0.clone(),
                topic: p.topic.to_string(),
                title,
                body,
                fields: decoded.fields.clone(),
                raw: p.payload.to_vec(),
            };
            stats.targets[t].queued.inc();
            routed = true;
            if queues[t].send(n).await.is_err() {
                tracing::error!(target_name = %settings.targets[t].0, "target worker stopped");
            }
        }
    }
    if routed {
        stats.routed.inc();
    } else {
        stats.unrouted.inc();
    }
}

fn log_invalid(topic: &str, e: &Rejected, suppressed: u64) {
    tracing::warn!(topic, error = %e, suppressed, "invalid message skipped");
}
