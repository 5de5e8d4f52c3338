//! The `run` command: the stages wired together, MQTT in, notifications out.
//!
//! ```text
//! recover ──(unfinished notifications first)──────────────┐
//! source ──▶ pipeline ──▶ per-target bounded queues ──▶ deliver ──▶ plugins
//!   ▲            │
//!   └── acks ────┘ (once queued, and written to the notification log)
//! ```
//!
//! A message is acknowledged to the broker (manual QoS 1 acks) only after it has been
//! queued for every target it goes to, and, with `bridge.state_dir`, written to the
//! notification log ([`crate::dedup`]); so a bridge that dies, even by `kill -9`, loses
//! nothing: the broker still holds what was not acknowledged, the log what was. Queues
//! are bounded and a full one holds back the acknowledgements, which slows the broker
//! down instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::Error;
use crate::ack::ChatPress;
use crate::config::{Built, Resolved, Settings};
use crate::deliver;
use crate::firing::Firing;
use crate::notify::Notifier;
use crate::pipeline::Pipeline;
use crate::recover::Recovery;
use crate::source::Subscription;
use crate::stats::{RouteStats, Stats, TargetStats};

/// Group and repeat timers; a quarter second is finer than any sensible setting.
const TIMER_TICK: Duration = Duration::from_millis(250);

pub async fn run(resolved: Resolved) -> Result<(), Error> {
    // The state directory first: a second bridge on it stops here, before connecting.
    let mut recovery = Recovery::open(&resolved.settings)?;
    let Built {
        settings,
        notifiers,
        telegram_acks,
    } = resolved.build()?;
    let stats = Arc::new(new_stats(&settings, &notifiers));
    recovery.settle_in_flight(&settings.targets, &notifiers);
    let log = Arc::clone(&recovery.log);
    let (queues, workers) = deliver::start(
        &settings.targets,
        notifiers,
        &settings.delivery,
        &stats,
        &log,
        &settings.fallbacks,
        settings.state_dir.as_deref(),
    );
    // What a previous run queued and did not finish goes first, in its order.
    recovery.requeue(&settings.targets, &stats, &queues).await;

    let mut source = Subscription::new(&settings)?;
    let stats_topic = format!("{}/bridge/{}/stats", settings.prefix, settings.id);
    log_running(&settings, &stats_topic);
    let mut pipeline = Pipeline::new(&settings, &stats, &queues, &log)?;
    pipeline.restore(open_firing(&settings)?);
    // "Ack" presses from chats; the sender is kept here, so the channel never closes.
    let (press_tx, mut presses) = mpsc::channel::<ChatPress>(16);
    let mut chat_tasks = telegram_acks
        .iter()
        .map(|(name, cfg)| crate::chat_ack::telegram(name, cfg, press_tx.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(h) = &settings.ack_http {
        chat_tasks.push(crate::ack_http::start(h, press_tx.clone(), Arc::clone(&stats)).await?);
    }
    let mut timer_tick = tokio::time::interval(TIMER_TICK);
    timer_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stats_tick = tokio::time::interval(settings.stats_interval);
    stats_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut shutdown = std::pin::pin!(lookout_shared::signal::shutdown());
    // Ready for systemd (Type=notify) once the pipeline exists; not waiting for the broker.
    if let Err(e) = lookout_shared::systemd::notify_ready() {
        tracing::warn!(error = %e, "could not tell systemd the bridge is ready");
    }
    loop {
        source.send_acks();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = timer_tick.tick() => {
                pipeline.timers().await;
                pipeline.link(source.connected()).await;
                log.sync_if_due();
            }
            _ = stats_tick.tick() => publish_stats(&source, &stats_topic, &stats, log.errors() + pipeline.state_errors()),
            Some(press) = presses.recv() => {
                let reply = pipeline.acknowledge_chat(&press).await;
                let _ = press.answer.send(reply);
                for (topic, reply) in pipeline.take_replies() {
                    source.publish_reliable(&topic, reply);
                }
            }
            event = source.poll() => {
                if let Some(p) = source.handle(event).await {
                    pipeline.heard(&p.topic, &p.payload, p.retain).await;
                    pipeline.handle(source.topics.sort(&p.topic, &p.payload, p.retain)).await;
                    source.ack(p);
                    for (topic, reply) in pipeline.take_replies() {
                        source.publish_reliable(&topic, reply);
                    }
                }
            }
        }
    }

    let _ = lookout_shared::systemd::notify_stopping();
    for t in chat_tasks {
        t.abort();
    }
    tracing::info!(grace = ?settings.grace, "shutting down: draining queues");
    // The acks and the DISCONNECT go out before anything else (see `Subscription::close`).
    source.close().await;
    drop(pipeline);
    drop(queues);
    if !workers.drain(settings.grace).await {
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

/// The firing alarms a previous run left under `bridge.state_dir` (acknowledgements,
/// escalation steps), or an empty table in memory.
fn open_firing(settings: &Settings) -> Result<Firing, Error> {
    let Some(dir) = &settings.state_dir else {
        return Ok(Firing::memory(settings.firing_capacity));
    };
    let (firing, loaded) = Firing::open(dir, settings.firing_capacity, settings.state_sync)?;
    if loaded.bad_lines > 0 || loaded.torn_tail > 0 {
        tracing::warn!(
            path = %dir.join(crate::firing::FILE).display(),
            bad_lines = loaded.bad_lines,
            torn_tail_bytes = loaded.torn_tail,
            "firing alarms' state damaged; bad records skipped"
        );
    }
    tracing::info!(firing = loaded.entries, "firing alarms loaded");
    Ok(firing)
}

/// Counters for every route and target, in index order.
fn new_stats(settings: &Settings, notifiers: &[Box<dyn Notifier>]) -> Stats {
    let mut stats = Stats::default();
    for r in &settings.routes {
        stats.routes.push(RouteStats {
            topic: r.topic.clone(),
            ..Default::default()
        });
    }
    for (name, n) in settings.targets.iter().zip(notifiers) {
        stats.targets.push(TargetStats {
            name: name.clone(),
            kind: n.kind(),
            ..Default::default()
        });
    }
    stats
}

fn log_running(settings: &Settings, stats_topic: &str) {
    let m = &settings.mqtt;
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
}

/// The stats, at QoS 0: a stats message dropped for a full request queue is replaced by
/// the next one. `state_errors`: failed writes to the notification log and the firing
/// alarms' state together, both under `state_dir`.
fn publish_stats(source: &Subscription, topic: &str, stats: &Stats, state_errors: u64) {
    stats.state_errors.set(state_errors);
    stats.pictures.copy_from(crate::picture::counts());
    if let Ok(json) = serde_json::to_vec(stats) {
        source.publish_lossy(topic, json);
    }
}
