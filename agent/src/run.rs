//! The `run` command: every tick, each host's samples go through its models, and metrics,
//! scores and alarm changes go out over that host's MQTT link. Between ticks, rules
//! documents and ingested events arrive on the first host's link and go to the rules
//! ([`crate::rules::live`]), whose alarms go out over that link too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_shared::codec::to_json;
use lookout_shared::payload::{Alarm, AlarmState, Labels, Score, SimTruth};
use lookout_shared::topics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::alarm::{Hysteresis, Judge, Tick, Transition};
use crate::config::{Detector, ModelSpec, Settings};
use crate::frame::Frame;
use crate::health::{Health, Lag, ModelsReport, OutboxReport, Report};
use crate::link::{Extras, Inbox, Incoming, Link, LinkStats, broker};
use crate::rules::live::{Live, LiveParams, Out};
use crate::sampler::HostSampler;
use crate::scorer::Model;
use crate::scorer::trainer::{ModelKey, Trainer};
use crate::simulate::SimHost;

/// Start-up is over by then: the code that ran once can leave the resident set.
const TRIM_AT_TICK: i64 = 3;

/// Ticks a model's metric may be missing before that is worth a warning.
const MISSING_WARN_AFTER: u32 = 5;
/// Staging buffers for fits (see `scorer::trainer`): one fitting, one queued.
const STAGING_BUFFERS: usize = 2;

/// How long shutdown waits for links to flush their goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Incoming messages (rules documents, ingested events) waiting for the run loop. Beyond
/// it ingested events are dropped and counted; documents wait (see `link::Inbox`).
const INBOX_CAPACITY: usize = 1024;

enum Source {
    Real(Box<HostSampler>),
    Sim(Box<SimHost>),
}

/// One model of one host, with everything its tick needs prepared at start.
struct ModelRun {
    name: String,
    metrics: Vec<(String, String)>,
    values: Vec<f64>,
    model: Model,
    judge: Judge,
    alarm: Hysteresis,
    threshold: f64,
    detector: Detector,
    /// Ticks refused because a value was outside the model's `down_limit`/`upper_limit`.
    invalid: u64,
    score_topic: String,
    alarm_topic: String,
    episode: Option<(String, i64)>,
    /// Consecutive ticks without this model's metrics; the warning goes out once, when a
    /// metric is still missing after a few ticks (rates appear only from the second).
    missing_ticks: u32,
}

struct Host {
    name: String,
    labels: Labels,
    source: Source,
    link: Link,
    metrics_topic: String,
    truth_topic: String,
    models: Vec<ModelRun>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> Result<(), Error> {
    if let Some(b) = &settings.broker {
        broker::start(b)?;
    }
    let stats = Arc::new(LinkStats::default());
    let sim = settings.simulate.hosts > 0;
    let speed = if sim { settings.simulate.speed } else { 1.0 };
    let interval_ms = settings.interval.as_millis().max(1) as i64;
    let start_ts = lookout_shared::time::now_ms();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut hosts = Vec::new();
    let specs = if sim {
        &settings.sim_models
    } else {
        &settings.models
    };
    // The rules belong to the first host (the real one, or sim-1) and come in on its link.
    let (inbox_tx, mut inbox) = mpsc::channel::<Incoming>(INBOX_CAPACITY);
    let mut inbox_tx = Some(inbox_tx);
    let mut live: Option<Live> = None;
    let mut connect = |host: &str, labels: &Labels, client_id: &str| -> (Link, JoinHandle<()>) {
        // Home Assistant discovery: configs when on; the sweep clears stale ones either way.
        let models = specs.iter().map(|s| crate::homeassistant::Model {
            name: &s.name,
            scores_every_tick: !s.detector.only_show_anomaly,
        });
        let ha = crate::homeassistant::for_host(&settings, host, models);
        let mut extras = Extras {
            inbox: None,
            announce: ha.announce,
            sweep: Some(ha.sweep),
        };
        let Some(tx) = inbox_tx.take() else {
            return Link::connect(&settings.mqtt, host, client_id, Arc::clone(&stats), extras);
        };
        let rules = Live::new(LiveParams {
            prefix: settings.mqtt.prefix.clone(),
            host: host.to_owned(),
            labels: labels.clone(),
            rules: settings.rules.clone(),
            ingest: settings.ingest.enabled,
            host_metrics: !sim,
        });
        extras.inbox = Some(Inbox {
            filters: rules.filters(),
            reliable: rules.document_topics(),
            tx,
        });
        live = Some(rules);
        Link::connect(&settings.mqtt, host, client_id, Arc::clone(&stats), extras)
    };
    if sim {
        for i in 1..=settings.simulate.hosts {
            let sh = SimHost::new(i, &settings.simulate, start_ts, interval_ms);
            let name = sh.name().to_owned();
            let mut labels = settings.labels.clone();
            labels.extend(sh.labels().iter().map(|(k, v)| (k.clone(), v.clone())));
            let client_id = format!("{}-{}", settings.mqtt.client_id, name);
            let (link, task) = connect(&name, &labels, &client_id);
            tasks.push(task);
            hosts.push(new_host(
                &settings,
                name,
                labels,
                Source::Sim(Box::new(sh)),
                link,
                specs,
            ));
        }
    } else {
        let (link, task) = connect(&settings.host, &settings.labels, &settings.mqtt.client_id);
        tasks.push(task);
        let source = Source::Real(Box::new(HostSampler::new("/proc")));
        hosts.push(new_host(
            &settings,
            settings.host.clone(),
            settings.labels.clone(),
            source,
            link,
            specs,
        ));
    }

    // Every run has a first host (simulate.hosts is 0 for this host, or at least 1).
    let (Some(mut live), Some(rules_link)) = (live, hosts.first().map(|h| h.link.clone())) else {
        return Err(Error::Config {
            path: "simulate.hosts".into(),
            message: "no host to run the rules on".into(),
        });
    };
    let mut outs: Vec<Out> = Vec::new();
    live.start(&mut outs);
    flush(&rules_link, &mut outs);

    let (rows, width, k) = specs.iter().fold((1, 1, 1), |(r, w, k), s| {
        let p = &s.detector.params;
        (
            // With decay, a fit also holds the previous fit's weighted centres.
            r.max(
                p.train_data_size
                    + (p.decay.min(1.0) * p.train_data_size as f64).ceil() as usize
                    + p.n_clusters,
            ),
            w.max(s.metrics.len() * (p.n_lags + 1)),
            k.max(p.n_clusters),
        )
    });
    let staging_len = specs
        .iter()
        .map(|s| s.detector.params.ring_len(s.metrics.len()))
        .max()
        .unwrap_or(1);
    // Two staging buffers: one fitting, one queued behind it. Models due at the same tick
    // take turns over the next ticks; a fit takes milliseconds, a tick a second.
    let mut trainer =
        Trainer::spawn(STAGING_BUFFERS, staging_len, rows, width, k).map_err(|source| {
            Error::Thread {
                what: "trainer",
                source,
            }
        })?;

    let period = settings.interval.div_f64(speed);
    tracing::info!(
        broker = %format!("mqtt://{}:{}", settings.mqtt.host, settings.mqtt.port),
        topics = %format!("{}/{}/#", settings.mqtt.prefix, if sim { "+" } else { &settings.host }),
        hosts = hosts.len(),
        models = specs.len(),
        interval = ?settings.interval,
        speed,
        "lookout-agent running; subscribe with: mosquitto_sub -v -t '{}/#'",
        settings.mqtt.prefix
    );

    // Signal handlers first: from READY=1 on, systemd may send SIGTERM at any moment.
    let mut shutdown = std::pin::pin!(lookout_shared::signal::shutdown());
    // Ready for systemd (Type=notify): broker bound, links and trainer running. Not
    // waiting for the first MQTT connection: a broker that is down must not fail the start.
    if let Err(e) = lookout_shared::systemd::notify_ready() {
        tracing::warn!(error = %e, "could not tell systemd the agent is ready");
    }
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut health = Health::new(period);
    let stats_on = !settings.stats_interval.is_zero();
    // The first report one interval after start, not at once: at start there is nothing to
    // report yet, and a retained report of zero ticks would mislead whoever reads it.
    let stats_every = settings.stats_interval.max(Duration::from_millis(100));
    let mut stats_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + stats_every, stats_every);
    stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut frame = Frame::with_capacity(256);
    let mut truth = Vec::with_capacity(4);
    let mut tick: i64 = 0;
    loop {
        tokio::select! {
            scheduled = ticker.tick() => health.tick(scheduled),
            _ = stats_timer.tick(), if stats_on => {
                publish_health(&settings, &hosts, &stats, &mut health);
                continue;
            }
            Some(msg) = inbox.recv() => {
                live.on_message(&msg.topic, &msg.payload, lookout_shared::time::now_ms(), &mut outs);
                flush(&rules_link, &mut outs);
                continue;
            }
            _ = &mut shutdown => break,
        }
        while let Some(((h, m), job)) = trainer.try_result() {
            let buffer = match hosts.get_mut(h).and_then(|host| host.models.get_mut(m)) {
                Some(mr) => mr.model.install(job),
                None => job.data,
            };
            trainer.recycle(buffer);
        }
        if tick == TRIM_AT_TICK {
            crate::footprint::trim_code_pages();
        }
        let ts = if sim {
            start_ts + tick * interval_ms
        } else {
            lookout_shared::time::now_ms()
        };
        tick += 1;
        let now = Instant::now();
        for (hi, host) in hosts.iter_mut().enumerate() {
            frame.clear(ts);
            truth.clear();
            match &mut host.source {
                Source::Real(s) => s.sample(now, &mut frame),
                Source::Sim(s) => s.tick(ts, &mut frame, &mut truth),
            }
            for t in truth.drain(..) {
                tracing::info!(host = %t.host, metric = %t.metric, kind = %t.kind, start = t.start, end = t.end, "simulator injected an anomaly");
                host.link
                    .publish_event(&host.truth_topic, to_json::<SimTruth>(&t));
            }
            if !frame.samples.is_empty() {
                host.link
                    .publish_lossy(&host.metrics_topic, metrics_json(&host.name, &frame));
            }
            for (mi, mr) in host.models.iter_mut().enumerate() {
                step_model(
                    &mut trainer,
                    (hi, mi),
                    &host.name,
                    &host.labels,
                    &host.link,
                    &frame,
                    mr,
                );
            }
            if hi == 0 {
                live.on_samples(&frame, &mut outs);
            }
        }
        live.tick(lookout_shared::time::now_ms(), now, &mut outs);
        flush(&rules_link, &mut outs);
    }

    // Nothing more is taken in: a link waiting for room in the inbox lets go.
    drop(inbox);
    let rs = live.stats();
    tracing::info!(
        accepted = rs.accepted,
        unmatched = rs.unmatched,
        late = rs.late,
        over_cap = rs.over_cap,
        bad = rs.bad,
        clamped = live.clamped(),
        inbox_dropped = stats
            .inbox_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        "rules: events taken in this run"
    );
    let _ = lookout_shared::systemd::notify_stopping();
    tracing::info!("shutting down: publishing offline status");
    for host in &hosts {
        host.link.close().await;
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    if settings.broker.is_some() {
        // The embedded broker dies with the process: give it a moment to forward the
        // goodbyes to its subscribers first.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(trainer);
    Ok(())
}

/// One `agent/stats` report per published host: process-wide counters, that host's
/// outbox and models.
fn publish_health(settings: &Settings, hosts: &[Host], stats: &LinkStats, health: &mut Health) {
    use std::sync::atomic::Ordering::Relaxed;
    let lag = health.take_lag();
    let rss = crate::health::rss_bytes();
    for host in hosts {
        let o = host.link.outbox_stats();
        let report = Report {
            ts: lookout_shared::time::now_ms(),
            host: &host.name,
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: health.uptime().as_secs(),
            rss_bytes: rss,
            ticks: health.ticks,
            ticks_skipped: health.skipped,
            tick_lag_ms: Lag {
                p50: lag.p50,
                max: lag.max,
            },
            published: stats.queued.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            reconnects: stats.reconnects.load(Relaxed),
            inbox_dropped: stats.inbox_dropped.load(Relaxed),
            outbox: OutboxReport {
                pending: o.pending,
                bytes: o.bytes,
                dropped: o.dropped,
                write_errors: o.write_errors,
                recovered: o.recovered,
            },
            models: ModelsReport {
                learning: host.models.iter().filter(|m| !m.model.is_trained()).count(),
                ready: host.models.iter().filter(|m| m.model.is_trained()).count(),
                invalid_values: host.models.iter().map(|m| m.invalid).sum(),
            },
        };
        host.link.publish_report(
            &topics::agent_stats(&settings.mqtt.prefix, &host.name),
            to_json(&report),
        );
    }
}

/// Hands the rules' output to the link: states retained and re-sent after reconnects.
fn flush(link: &Link, outs: &mut Vec<Out>) {
    for out in outs.drain(..) {
        match out {
            Out::State { topic, payload } => {
                link.publish_state(&topic, payload);
            }
            Out::Forget { topic } => link.forget_state(&topic),
        }
    }
}

fn new_host(
    settings: &Settings,
    name: String,
    labels: Labels,
    source: Source,
    link: Link,
    specs: &[ModelSpec],
) -> Host {
    let prefix = &settings.mqtt.prefix;
    let models = specs
        .iter()
        .map(|s| ModelRun {
            name: s.name.clone(),
            metrics: s.metrics.clone(),
            values: vec![0.0; s.metrics.len()],
            model: Model::new(s.detector.params, s.metrics.len()),
            judge: Judge::new(s.detector.alarm),
            alarm: Hysteresis::new(s.detector.alarm),
            threshold: s.detector.alarm.threshold,
            detector: s.detector.clone(),
            invalid: 0,
            score_topic: topics::score(prefix, &name, &s.name),
            alarm_topic: topics::alarm(prefix, &name, &s.name),
            episode: None,
            missing_ticks: 0,
        })
        .collect();
    Host {
        metrics_topic: topics::metrics(prefix, &name),
        truth_topic: topics::sim_truth(prefix, &name),
        name,
        labels,
        source,
        link,
        models,
    }
}

fn step_model(
    trainer: &mut Trainer,
    key: ModelKey,
    host: &str,
    labels: &Labels,
    link: &Link,
    frame: &Frame,
    mr: &mut ModelRun,
) {
    for (v, (chart, dim)) in mr.values.iter_mut().zip(&mr.metrics) {
        match frame.get(chart, dim) {
            Some(x) => *v = x,
            None => {
                mr.missing_ticks = mr.missing_ticks.saturating_add(1);
                if mr.missing_ticks == MISSING_WARN_AFTER {
                    tracing::warn!(host, model = %mr.name, chart, dim, "metric not available on this host; model waits for it (logged once)");
                }
                return;
            }
        }
    }
    if !mr.values.iter().all(|v| mr.detector.valid(*v)) {
        mr.invalid += 1;
        // Once, then every 10,000th: a sensor stuck out of range must not flood the log.
        if mr.invalid % 10_000 == 1 {
            tracing::warn!(host, model = %mr.name, values = ?mr.values, invalid = mr.invalid, down_limit = ?mr.detector.down_limit, upper_limit = ?mr.detector.upper_limit, "value outside the model's limits: not scored");
        }
        return;
    }
    let Ok(train_due) = mr.model.ingest(&mr.values) else {
        return;
    };
    if train_due && let Some(buffer) = trainer.staging() {
        let back = match mr.model.take_training_set(buffer) {
            // The queue has a slot per staging buffer, so only a stopped trainer hands
            // the job back: keep the old centres.
            Ok(job) => trainer
                .submit(key, job)
                .err()
                .map(|job| mr.model.install(job)),
            Err(buffer) => Some(buffer),
        };
        if let Some(buffer) = back {
            trainer.recycle(buffer);
        }
    }
    let Some(score) = mr.model.score() else {
        if !mr.detector.only_show_anomaly {
            let msg = Score {
                ts: frame.ts,
                host: host.to_owned(),
                model: mr.name.clone(),
                score: None,
                learning: true,
                anomalous: false,
                level: 0,
                threshold: mr.threshold,
                alarm: false,
                labels: labels.clone(),
            };
            link.publish_lossy(&mr.score_topic, to_json(&msg));
        }
        return;
    };
    let level = mr.judge.judge(&Tick {
        ts: frame.ts,
        score,
        novelty: mr.model.novelty(),
        deviation: if mr.judge.needs_deviation() {
            mr.model.deviation()
        } else {
            0.0
        },
        value: mr.values[0],
    });
    let transition = mr.alarm.step(frame.ts, score, level);
    if level.is_some() || !mr.detector.only_show_anomaly {
        let msg = Score {
            ts: frame.ts,
            host: host.to_owned(),
            model: mr.name.clone(),
            score: Some(score),
            learning: false,
            anomalous: level.is_some(),
            level: level.unwrap_or(0),
            threshold: mr.threshold,
            alarm: mr.alarm.is_firing(),
            labels: labels.clone(),
        };
        link.publish_lossy(&mr.score_topic, to_json(&msg));
    }
    let Some(t) = transition else { return };
    let (state, started_at, score, severity) = match t {
        Transition::Fired {
            started_at,
            score,
            severity,
        }
        | Transition::Changed {
            started_at,
            score,
            severity,
        } => (AlarmState::Firing, started_at, score, severity),
        Transition::Resolved {
            started_at,
            score,
            severity,
        } => (AlarmState::Resolved, started_at, score, severity),
    };
    let id = match (&mr.episode, state) {
        (Some((id, _)), AlarmState::Resolved) => id.clone(),
        _ => Alarm::episode_id(host, &mr.name, started_at),
    };
    let summary = match state {
        AlarmState::Firing if score >= mr.threshold => format!(
            "{}: anomaly score {score:.2} >= {:.2} on {host} (severity {severity})",
            mr.name, mr.threshold
        ),
        AlarmState::Firing => format!(
            "{}: values in an order never seen before on {host} (score {score:.2}, severity {severity})",
            mr.name
        ),
        AlarmState::Resolved => format!(
            "{}: back to normal on {host} (score {score:.2}) after {}",
            mr.name,
            humanize_ms(frame.ts - started_at)
        ),
    };
    tracing::info!(host, model = %mr.name, state = state.as_str(), score, severity, started_at, "alarm {}", state.as_str());
    let alarm = Alarm {
        id: id.clone(),
        host: host.to_owned(),
        source: mr.name.clone(),
        state,
        severity,
        ts: frame.ts,
        started_at,
        score,
        threshold: mr.threshold,
        summary,
        labels: labels.clone(),
    };
    mr.episode = match state {
        AlarmState::Firing => Some((id, started_at)),
        AlarmState::Resolved => None,
    };
    link.publish_state(&mr.alarm_topic, to_json(&alarm));
}

/// `{"ts":…,"host":…,"metrics":{chart:{dim:value}}}` written straight from the frame;
/// samples of one chart are contiguous because each source pushes a chart at a time.
fn metrics_json(host: &str, frame: &Frame) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(64 + frame.samples.len() * 24);
    let _ = write!(out, "{{\"ts\":{},\"host\":", frame.ts);
    let _ = serde_json::to_writer(&mut out, host);
    out.extend_from_slice(b",\"metrics\":{");
    let mut chart: Option<&str> = None;
    for s in &frame.samples {
        if chart != Some(&*s.chart) {
            if chart.is_some() {
                out.extend_from_slice(b"},");
            }
            let _ = serde_json::to_writer(&mut out, &*s.chart);
            out.extend_from_slice(b":{");
            chart = Some(&*s.chart);
        } else {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &*s.dim);
        out.push(b':');
        if s.value.is_finite() {
            let _ = serde_json::to_writer(&mut out, &s.value);
        } else {
            out.extend_from_slice(b"null");
        }
    }
    if chart.is_some() {
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

fn humanize_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn metrics_json_groups_dims_by_chart_and_parses() {
        let mut f = Frame::with_capacity(4);
        f.clear(42);
        let (cpu, load): (Arc<str>, Arc<str>) = ("system.cpu".into(), "system.load".into());
        f.push(&cpu, &"user".into(), 1.5);
        f.push(&cpu, &"system".into(), 0.5);
        f.push(&load, &"load1".into(), f64::NAN);
        let v: lookout_shared::payload::Metrics = serde_json::from_slice(&metrics_json("h\"1", &f))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {}",
                    String::from_utf8_lossy(&metrics_json("h\"1", &f))
                )
            });
        assert_eq!(v.ts, 42);
        assert_eq!(v.host, "h\"1");
        assert_eq!(v.metrics["system.cpu"]["user"], Some(1.5));
        assert_eq!(v.metrics["system.cpu"].len(), 2);
        let raw: serde_json::Value = serde_json::from_slice(&metrics_json("h", &f)).unwrap();
        assert!(raw["metrics"]["system.load"]["load1"].is_null());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(humanize_ms(12_000), "12s");
        assert_eq!(humanize_ms(192_000), "3m12s");
        assert_eq!(humanize_ms(3_720_000), "1h02m");
    }
}
