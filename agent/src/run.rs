//! The `run` command: every tick, each host's frame goes through its models
//! ([`crate::tick::Host`]) and what they say goes out over that host's MQTT link. Between
//! ticks, rules documents and ingested events arrive on the first host's link and go to
//! the rules ([`crate::rules::live`]), whose alarms go out over that link too. With a
//! `[control]` token, each host's link also takes that host's relearn commands
//! ([`crate::control`]), carried out between ticks like the rules' messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_shared::codec::to_json;
use lookout_shared::payload::Labels;
use lookout_shared::topics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::config::Settings;
use crate::control::{Control, Refusal, Reply};
use crate::decide::ModelSpec;
use crate::devices::config::DeviceSpec;
use crate::devices::{Devices, DevicesParams, TRAINER_HOST};
use crate::frame::Frame;
use crate::health::{BufferReport, CommandsReport, Health, Lag, OutboxReport, Report};
use crate::link::{Extras, Inbox, Incoming, Link, LinkStats, broker};
use crate::out::Out;
use crate::persist::Store;
use crate::rules::live::{Live, LiveParams};
use crate::sampler::HostSampler;
use crate::scorer::trainer::Trainer;
use crate::simulate::SimHost;
use crate::tick::Host;
use crate::upstream::Forwarder;

/// Start-up is over by then: the code that ran once can leave the resident set.
const TRIM_AT_TICK: i64 = 3;

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

/// A published host: where its samples come from, its models, its link.
struct Running {
    source: Source,
    host: Host,
    link: Link,
}

/// Everything the tick loop owns.
struct Agent {
    settings: Settings,
    hosts: Vec<Running>,
    /// The rules belong to the first host (the real one, or sim-1) and come in on its link.
    live: Live,
    /// Device models: readings come in on the first host's link, and its alarms go out on
    /// it, under the first host's topics.
    devices: Devices,
    /// Operators' commands, when a token is configured.
    control: Option<Control>,
    /// Each host's relearn command topic, in the order of `hosts`.
    command_topics: Vec<String>,
    /// The time of the last tick (simulated time when simulating).
    last_ts: i64,
    trainer: Trainer,
    stats: Arc<LinkStats>,
    tasks: Vec<JoinHandle<()>>,
    /// `[[upstream]]`: what goes on from the agent's broker to the centre.
    forwarders: Vec<Forwarder>,
    sim: bool,
    start_ts: i64,
    interval_ms: i64,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> Result<(), Error> {
    if let Some(b) = &settings.broker {
        broker::start(b)?;
    }
    let (mut agent, mut inbox) = Agent::start(sped_up(settings))?;
    agent.forwarders = (agent.settings.upstreams.iter().cloned())
        .map(Forwarder::start)
        .collect();
    let s = &agent.settings;
    let speed = if agent.sim { s.simulate.speed } else { 1.0 };
    let period = s.interval.div_f64(speed);
    tracing::info!(
        broker = %s.mqtt.client.url.display(),
        topics = %format!("{}/{}/#", s.mqtt.prefix, if agent.sim { "+" } else { &s.host }),
        hosts = agent.hosts.len(),
        models = agent.specs().len(),
        interval = ?s.interval,
        speed,
        "lookout-agent running; subscribe with: mosquitto_sub -v -t '{}/#'",
        s.mqtt.prefix
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
    let stats_on = !agent.settings.stats_interval.is_zero();
    // The first report one interval after start, not at once: at start there is nothing to
    // report yet, and a retained report of zero ticks would mislead whoever reads it.
    let stats_every = agent
        .settings
        .stats_interval
        .max(Duration::from_millis(100));
    let mut stats_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + stats_every, stats_every);
    stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let snapshot_every = agent
        .settings
        .snapshots
        .as_ref()
        .map_or(Duration::from_secs(3600), |s| s.interval);
    let mut snapshot_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + snapshot_every, snapshot_every);
    snapshot_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let snapshots_on = agent.settings.snapshots.is_some();
    let mut tick: i64 = 0;
    let mut scratch = Scratch::default();
    loop {
        tokio::select! {
            scheduled = ticker.tick() => health.tick(scheduled),
            _ = stats_timer.tick(), if stats_on => {
                agent.publish_health(&mut health);
                continue;
            }
            _ = snapshot_timer.tick(), if snapshots_on => {
                // Off the tick loop's thread: an fsync on an SD card can take a while.
                let writes = agent.snapshots();
                tokio::task::spawn_blocking(move || save(writes));
                continue;
            }
            Some(msg) = inbox.recv() => {
                agent.on_message(&msg, &mut scratch.outs);
                continue;
            }
            _ = &mut shutdown => break,
        }
        if tick == TRIM_AT_TICK {
            crate::footprint::trim_code_pages();
        }
        agent.tick(tick, &mut scratch);
        tick += 1;
    }
    // Nothing more is taken in: a link waiting for room in the inbox lets go.
    drop(inbox);
    agent.stop().await;
    Ok(())
}

/// Simulated hosts publish `speed` times as often: what the buffer sends again after an
/// outage is paced in their time too, or it could never catch up with them.
fn sped_up(mut settings: Settings) -> Settings {
    if settings.simulate.hosts > 0
        && let Some(b) = settings.mqtt.buffer.as_mut()
    {
        let rate = f64::from(b.replay_rate) * settings.simulate.speed.max(1.0);
        b.replay_rate = rate.min(f64::from(u32::MAX)) as u32;
    }
    settings
}

/// Buffers reused by every tick.
#[derive(Default)]
struct Scratch {
    frame: Frame,
    truth: Vec<lookout_shared::payload::SimTruth>,
    outs: Vec<Out>,
}

impl Agent {
    /// Links, hosts, rules and the trainer; the inbox receives the rules' subscriptions.
    fn start(settings: Settings) -> Result<(Self, mpsc::Receiver<Incoming>), Error> {
        let sim = settings.simulate.hosts > 0;
        let stats = Arc::new(LinkStats::default());
        let start_ts = lookout_shared::time::now_ms();
        let interval_ms = settings.interval.as_millis().max(1) as i64;
        let specs = if sim {
            &settings.sim_models
        } else {
            &settings.models
        };
        let hosts = sources(&settings, start_ts, interval_ms);
        let (inbox_tx, inbox) = mpsc::channel::<Incoming>(INBOX_CAPACITY);
        let (first, first_labels) = match hosts.first() {
            Some((name, labels, _)) => (name.clone(), labels.clone()),
            None => {
                return Err(Error::Config {
                    path: "simulate.hosts".into(),
                    message: "no host to run the rules on".into(),
                });
            }
        };
        let mut live = Live::new(LiveParams {
            prefix: settings.mqtt.prefix.clone(),
            host: first,
            labels: first_labels,
            rules: settings.rules.clone(),
            ingest: settings.ingest.enabled,
            host_metrics: !sim,
        });
        let devices = device_models(&settings, &hosts);
        let control = commands(&settings, &hosts);
        let command_topics: Vec<String> = hosts
            .iter()
            .map(|(name, _, _)| topics::relearn(&settings.mqtt.prefix, name))
            .collect();
        let mut tasks = Vec::new();
        let mut running = Vec::new();
        for (hi, (name, labels, source)) in hosts.into_iter().enumerate() {
            let client_id = if sim {
                format!("{}-{}", settings.mqtt.client.client_id, name)
            } else {
                settings.mqtt.client.client_id.clone()
            };
            let inbox = host_inbox(
                hi,
                &live,
                &devices,
                control.is_some().then(|| command_topics[hi].clone()),
                &inbox_tx,
            );
            let extras = discovery(&settings, specs, &name, inbox);
            let (link, task) = Link::connect(
                &settings.mqtt,
                &name,
                &client_id,
                Arc::clone(&stats),
                extras,
            );
            tasks.push(task);
            let host = Host::new(
                &settings.mqtt.prefix,
                &name,
                &labels,
                specs,
                &settings.host_judge,
                settings.host_alarm,
            );
            running.push(Running { source, host, link });
        }
        let mut outs = Vec::new();
        live.start(&mut outs);
        if let Some(first) = running.first() {
            flush(&first.link, &mut outs);
        }
        let trainer = spawn_trainer(specs, &settings.devices)?;
        if let Some(snap) = &settings.snapshots {
            for r in &mut running {
                restore(&Store::new(&snap.dir, r.host.name()), &mut r.host);
            }
        }
        let agent = Self {
            settings,
            hosts: running,
            live,
            devices,
            control,
            command_topics,
            last_ts: start_ts,
            trainer,
            stats,
            tasks,
            forwarders: Vec::new(),
            sim,
            start_ts,
            interval_ms,
        };
        Ok((agent, inbox))
    }

    fn specs(&self) -> &[ModelSpec] {
        if self.sim {
            &self.settings.sim_models
        } else {
            &self.settings.models
        }
    }

    /// A relearn command for one of the hosts, or a rules document or an ingested event,
    /// for the rules of the first host.
    fn on_message(&mut self, msg: &Incoming, outs: &mut Vec<Out>) {
        if let Some(hi) = self.command_topics.iter().position(|t| *t == msg.topic) {
            self.on_command(hi, msg, outs);
            return;
        }
        let now = lookout_shared::time::now_ms();
        self.live.on_message(&msg.topic, &msg.payload, now, outs);
        self.devices
            .on_message(&msg.topic, &msg.payload, now, &mut self.trainer, outs);
        if let Some(first) = self.hosts.first() {
            flush(&first.link, outs);
        }
    }

    /// A relearn command for host `hi`: checked, carried out on the named models at the
    /// host's current time, and answered on `cmd/relearn/result`; the alarms it resolves
    /// go out like any other alarm change, over the host's link.
    fn on_command(&mut self, hi: usize, msg: &Incoming, outs: &mut Vec<Out>) {
        let (Some(control), Some(r)) = (self.control.as_mut(), self.hosts.get_mut(hi)) else {
            return;
        };
        // The model's clock: simulated time for simulated hosts.
        let ts = if self.sim {
            self.last_ts
        } else {
            lookout_shared::time::now_ms()
        };
        let reply = match control.check(&msg.payload, msg.retain) {
            Ok(model) => match r.host.relearn(&model, ts, outs) {
                Ok((models, resolved)) => {
                    control.accept(hi, r.host.name(), &models, &resolved);
                    Reply::ok(models, resolved)
                }
                Err(known) => {
                    let why = Refusal::UnknownModel { model, known };
                    control.refuse(hi, r.host.name(), &why);
                    Reply::refused(&why)
                }
            },
            Err(why) => {
                control.refuse(hi, r.host.name(), &why);
                Reply::refused(&why)
            }
        };
        outs.push(Out::Reply {
            topic: topics::relearn_result(&self.settings.mqtt.prefix, r.host.name()),
            payload: reply.to_json(),
        });
        flush(&r.link, outs);
    }

    /// One tick of every host: fits that finished go in first, then each host samples,
    /// decides and publishes, then the rules close their windows.
    fn tick(&mut self, tick: i64, scratch: &mut Scratch) {
        while let Some(((h, m), job)) = self.trainer.try_result() {
            let buffer = match self.hosts.get_mut(h) {
                Some(r) => r.host.install(m, job),
                None if h == TRAINER_HOST => self.devices.install(m, job),
                None => job.data,
            };
            self.trainer.recycle(buffer);
        }
        let ts = if self.sim {
            self.start_ts + tick * self.interval_ms
        } else {
            lookout_shared::time::now_ms()
        };
        self.last_ts = ts;
        let now = Instant::now();
        for (hi, r) in self.hosts.iter_mut().enumerate() {
            scratch.frame.clear(ts);
            scratch.truth.clear();
            match &mut r.source {
                Source::Real(s) => s.sample(now, &mut scratch.frame),
                Source::Sim(s) => s.tick(ts, &mut scratch.frame, &mut scratch.truth),
            }
            r.host.tick(
                hi,
                &scratch.frame,
                &scratch.truth,
                &mut self.trainer,
                &mut scratch.outs,
            );
            if hi == 0 {
                self.live.on_samples(&scratch.frame, &mut scratch.outs);
            }
            flush(&r.link, &mut scratch.outs);
        }
        let wall = lookout_shared::time::now_ms();
        self.live.tick(wall, now, &mut scratch.outs);
        self.devices
            .tick(wall, &mut self.trainer, &mut scratch.outs);
        let evicted = self.devices.take_evicted();
        if !evicted.is_empty() && self.settings.snapshots.is_some() {
            tokio::task::spawn_blocking(move || save(evicted));
        }
        if let Some(first) = self.hosts.first() {
            flush(&first.link, &mut scratch.outs);
        }
    }

    /// One `agent/stats` report per published host: process-wide counters, that host's
    /// outbox and models.
    fn publish_health(&self, health: &mut Health) {
        use std::sync::atomic::Ordering::Relaxed;
        let lag = health.take_lag();
        let rss = crate::health::rss_bytes();
        for (hi, r) in self.hosts.iter().enumerate() {
            let o = r.link.outbox_stats();
            let c = self
                .control
                .as_ref()
                .map(|c| c.counts(hi))
                .unwrap_or_default();
            let report = Report {
                ts: lookout_shared::time::now_ms(),
                host: r.host.name(),
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: health.uptime().as_secs(),
                stats_interval_s: self.settings.stats_interval.as_secs(),
                rss_bytes: rss,
                ticks: health.ticks,
                ticks_skipped: health.skipped,
                tick_lag_ms: Lag {
                    p50: lag.p50,
                    max: lag.max,
                },
                published: self.stats.queued.load(Relaxed),
                dropped: self.stats.dropped.load(Relaxed),
                reconnects: self.stats.reconnects.load(Relaxed),
                inbox_dropped: self.stats.inbox_dropped.load(Relaxed),
                oversize: self.stats.oversize.load(Relaxed),
                refused: self.stats.refused.load(Relaxed),
                protocol: r.link.protocol().as_str(),
                outbox: OutboxReport {
                    pending: o.pending,
                    bytes: o.bytes,
                    dropped: o.dropped,
                    write_errors: o.write_errors,
                    recovered: o.recovered,
                },
                buffer: r.link.buffer_stats().map(|b| BufferReport {
                    records: b.records,
                    bytes: b.bytes,
                    kept: b.written,
                    downsampled: b.downsampled,
                    dropped: b.dropped,
                    write_errors: b.write_errors,
                }),
                models: r.host.models_report(),
                commands: CommandsReport {
                    accepted: c.accepted,
                    refused: c.refused,
                },
                devices: (hi == 0 && !self.devices.is_empty()).then(|| self.devices.report()),
                upstream: if hi == 0 {
                    self.forwarders
                        .iter()
                        .filter_map(Forwarder::report)
                        .collect()
                } else {
                    Vec::new()
                },
            };
            r.link.publish(Out::Stats {
                topic: topics::agent_stats(&self.settings.mqtt.prefix, r.host.name()),
                payload: to_json(&report),
            });
        }
    }

    /// Every model's snapshot with the store it goes to, device models' included.
    fn snapshots(&mut self) -> Vec<(Store, String, Vec<u8>)> {
        let Some(snap) = &self.settings.snapshots else {
            return Vec::new();
        };
        let now = lookout_shared::time::now_ms();
        let mut out = Vec::new();
        for r in &self.hosts {
            let store = Store::new(&snap.dir, r.host.name());
            for (model, bytes) in r.host.snapshots(now) {
                out.push((store.clone(), model, bytes));
            }
        }
        out.extend(self.devices.snapshots(now));
        out
    }

    /// Saves every model, says goodbye on every link (offline status), waits a moment
    /// for the links to flush, and stops the trainer.
    async fn stop(mut self) {
        let writes = self.snapshots();
        if !writes.is_empty() {
            let n = writes.len();
            let _ = tokio::task::spawn_blocking(move || save(writes)).await;
            tracing::info!(models = n, "models saved");
        }
        let rs = self.live.stats();
        tracing::info!(
            accepted = rs.accepted,
            unmatched = rs.unmatched,
            late = rs.late,
            over_cap = rs.over_cap,
            bad = rs.bad,
            clamped = self.live.clamped(),
            inbox_dropped = self
                .stats
                .inbox_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            "rules: events taken in this run"
        );
        if !self.devices.is_empty() {
            let d = self.devices.report();
            tracing::info!(instances = d.instances, created = d.created, evicted = d.evicted, readings = d.readings, gaps = d.gaps, dropped = ?d.dropped, "device models: readings taken in this run");
        }
        let _ = lookout_shared::systemd::notify_stopping();
        tracing::info!("shutting down: publishing offline status");
        // All at once: each may wait for its broker a few seconds.
        let closing: Vec<_> = self
            .hosts
            .iter()
            .map(|r| {
                let link = r.link.clone();
                tokio::spawn(async move { link.close().await })
            })
            .collect();
        for c in closing {
            let _ = c.await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for t in self.tasks {
                let _ = t.await;
            }
        })
        .await;
        if self.settings.broker.is_some() {
            // The embedded broker dies with the process: give it a moment to forward the
            // goodbyes to its subscribers first.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Last, so that the goodbyes go up too; what the upstream has not taken by then
        // stays on disk for the next start.
        for f in self.forwarders {
            f.stop().await;
        }
        drop(self.trainer);
    }
}

/// The device models, under the first host's topics (the rules' host).
fn device_models(settings: &Settings, hosts: &[(String, Labels, Source)]) -> Devices {
    Devices::new(DevicesParams {
        prefix: settings.mqtt.prefix.clone(),
        host: hosts.first().map(|h| h.0.clone()).unwrap_or_default(),
        labels: hosts.first().map(|h| h.1.clone()).unwrap_or_default(),
        interval: settings.interval,
        specs: settings.devices.clone(),
        snapshots: settings.snapshots.as_ref().map(|s| s.dir.clone()),
    })
}

/// The published hosts: this one, sampled from `/proc`, or the simulated ones.
fn sources(settings: &Settings, start_ts: i64, interval_ms: i64) -> Vec<(String, Labels, Source)> {
    if settings.simulate.hosts == 0 {
        let sampler = Box::new(HostSampler::host());
        return vec![(
            settings.host.clone(),
            settings.labels.clone(),
            Source::Real(sampler),
        )];
    }
    (1..=settings.simulate.hosts)
        .map(|i| {
            let sh = SimHost::new(i, &settings.simulate, start_ts, interval_ms);
            let mut labels = settings.labels.clone();
            labels.extend(sh.labels().iter().map(|(k, v)| (k.clone(), v.clone())));
            (sh.name().to_owned(), labels, Source::Sim(Box::new(sh)))
        })
        .collect()
}

/// Operators' commands: on with a `[control]` token, else off, said once.
fn commands(settings: &Settings, hosts: &[(String, Labels, Source)]) -> Option<Control> {
    match &settings.control {
        Some(c) => {
            tracing::info!(
                topic = %topics::relearn(&settings.mqtt.prefix, "<host>"),
                "relearn command on: obeyed only with the [control] token"
            );
            Some(Control::new(c, hosts.len()))
        }
        None => {
            tracing::info!(
                topic = %topics::relearn(&settings.mqtt.prefix, "<host>"),
                "relearn command off: no [control] token configured, not subscribing to it"
            );
            None
        }
    }
}

/// What host `hi`'s link subscribes to: the rules' topics on the first host's, and each
/// host's own relearn command topic (`command`) when commands are on. Commands wait for
/// room like rules documents: an operator's order must not be lost to a flood of events.
fn host_inbox(
    hi: usize,
    live: &Live,
    devices: &Devices,
    command: Option<String>,
    tx: &mpsc::Sender<Incoming>,
) -> Option<Inbox> {
    let (mut filters, mut reliable) = if hi == 0 {
        (live.filters(), live.document_topics())
    } else {
        (Vec::new(), Vec::new())
    };
    if hi == 0 {
        for f in devices.filters() {
            if !filters.contains(&f) {
                filters.push(f);
            }
        }
    }
    if let Some(t) = command {
        filters.push(t.clone());
        reliable.push(t);
    }
    (hi == 0 || !filters.is_empty()).then(|| Inbox {
        filters,
        reliable,
        tx: tx.clone(),
    })
}

/// What a host's link announces and sweeps for Home Assistant, and the subscriptions of
/// the first host's link.
fn discovery(settings: &Settings, specs: &[ModelSpec], host: &str, inbox: Option<Inbox>) -> Extras {
    // Configs when discovery is on; the sweep clears stale ones either way.
    let models = specs.iter().map(|s| crate::homeassistant::Model {
        name: &s.name,
        scores_every_tick: !s.detector.only_show_anomaly,
    });
    let ha = crate::homeassistant::for_host(
        &settings.homeassistant,
        &settings.mqtt.prefix,
        !settings.stats_interval.is_zero(),
        host,
        models,
    );
    Extras {
        inbox,
        announce: ha.announce,
        sweep: Some(ha.sweep),
    }
}

/// Two staging buffers: one fitting, one queued behind it. Models due at the same tick
/// take turns over the next ticks; a fit takes milliseconds, a tick a second. The one
/// workspace is sized for the largest model.
fn spawn_trainer(specs: &[ModelSpec], devices: &[DeviceSpec]) -> Result<Trainer, Error> {
    let shapes = specs
        .iter()
        .map(|s| (&s.detector, s.metrics.len()))
        .chain(devices.iter().map(|d| (&d.detector, d.metrics.len())));
    let (rows, width, k) = shapes.clone().fold((1, 1, 1), |(r, w, k), (d, n_dims)| {
        let p = &d.params;
        (
            // With decay, a fit also holds the previous fit's weighted centres.
            r.max(
                p.max_rows()
                    + (p.decay.min(1.0) * p.max_rows() as f64).ceil() as usize
                    + p.n_clusters,
            ),
            w.max(n_dims * (p.n_lags + 1)),
            k.max(p.n_clusters),
        )
    });
    let staging_len = shapes
        .map(|(d, n_dims)| d.params.staging_len(n_dims))
        .max()
        .unwrap_or(1);
    Trainer::spawn(STAGING_BUFFERS, staging_len, rows, width, k).map_err(|source| Error::Thread {
        what: "trainer",
        source,
    })
}

/// Takes back what `store` holds for each of `host`'s models. A snapshot that cannot be
/// used is set aside with one warning naming the model and why, and that model alone
/// learns afresh; nothing here stops the agent from starting.
fn restore(store: &Store, host: &mut Host) {
    let names: Vec<String> = host.model_names().map(str::to_owned).collect();
    let now = lookout_shared::time::now_ms();
    for model in names {
        let result = match store.load(&model) {
            None => continue,
            Some(Err(e)) => Err(format!("cannot read it: {e}")),
            Some(Ok(bytes)) => host.restore(&model, &bytes).map_err(|e| e.to_string()),
        };
        match result {
            Ok(saved_at) => tracing::info!(
                host = host.name(),
                model,
                saved_s_ago = (now - saved_at).max(0) / 1000,
                "model restored from its snapshot"
            ),
            Err(why) => {
                let aside = store.set_aside(&model);
                tracing::warn!(
                    host = host.name(),
                    model,
                    reason = %why,
                    set_aside = ?aside.as_ref().ok(),
                    "model snapshot not used: this model learns afresh"
                );
            }
        }
    }
}

/// Writes snapshots; a failure is logged (rate: once per model and attempt) and the
/// previous snapshot stays.
fn save(writes: Vec<(Store, String, Vec<u8>)>) {
    for (store, model, bytes) in writes {
        if let Err(e) = store.save(&model, &bytes) {
            tracing::warn!(model, error = %e, "cannot save the model's snapshot; the previous one stays");
        }
    }
}

/// Hands outputs to a link.
fn flush(link: &Link, outs: &mut Vec<Out>) {
    for out in outs.drain(..) {
        link.publish(out);
    }
}
