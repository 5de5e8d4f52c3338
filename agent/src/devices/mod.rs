//! Device models: learned models over series that arrive over MQTT (a sensor's readings,
//! a shop's request counts), one instance per device, created when the device's first
//! reading arrives. Each instance runs the same decision path as a host model
//! ([`crate::decide::Decider`]) and publishes the same payloads, under
//! `<prefix>/<host>/scores/<model>/<device>` and `.../alarms/<model>/<device>`.
//!
//! What keeps a fleet of devices from hurting the agent:
//! - instances are bounded per definition (`max_instances`); beyond it the least recently
//!   seen one is evicted (its snapshot kept when snapshots are on, its firing alarm
//!   closed), counted, and logged at most once a minute;
//! - readings are aggregated into the model's interval ([`bucket`]); an interval without
//!   a reading is a gap, not a zero;
//! - a reading that is not a number, lies too far ahead of the agent's clock, comes after
//!   its interval was scored, or exceeds its device's rate (`max_rate`) is dropped and
//!   counted by reason, never stopping another device.
//!
//! Layout: [`config`] (the model table's own keys), [`bucket`] (aggregates),
//! [`instance`] (one device's state); this file routes readings and ticks.

pub mod bucket;
pub mod config;
pub mod instance;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lookout_shared::payload::Labels;
use lookout_shared::topics;

use self::bucket::Aggregate;
use self::config::{DeviceSpec, topic_device};
use self::instance::Instance;
use crate::alarm::publish::Publisher;
use crate::decide::{Decider, shape_key};
use crate::health::DevicesReport;
use crate::out::Out;
use crate::persist::Store;
use crate::rules::event::{Defaults, events};
use crate::rules::glob;
use crate::scorer::fit::Fitter;
use crate::tick::{Target, publish_decision};

/// The host index of device models in the trainer's keys: no host has it.
pub const TRAINER_HOST: usize = usize::MAX;

/// Largest message taken, as for ingested events of the rules.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How far past the agent's clock a reading's own time may lie before it is dropped;
/// within it, the time is taken as now (a device's clock a little fast).
pub const MAX_AHEAD_MS: i64 = 10_000;

/// Drops are logged at most this often (with counts by reason); evictions likewise.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
const EVICT_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the device models need from the config.
#[derive(Clone, Debug)]
pub struct DevicesParams {
    pub prefix: String,
    /// The agent's host: device models publish under its topics.
    pub host: String,
    pub labels: Labels,
    pub interval: Duration,
    pub specs: Vec<DeviceSpec>,
    /// `[snapshots]`' directory, when on.
    pub snapshots: Option<PathBuf>,
}

/// One definition and its instances.
struct Def {
    spec: DeviceSpec,
    aggregates: Vec<Aggregate>,
    shape: u64,
    /// Where its instances' snapshots live: `<dir>/<host>/devices/<model>/`.
    store: Option<Store>,
    instances: Vec<Instance>,
    by_device: HashMap<String, usize>,
}

/// Why a reading was dropped.
#[derive(Clone, Copy, Debug)]
enum Drop {
    /// Not a number, not JSON, not UTF-8, no metric, too large.
    Bad,
    Future,
    Late,
    Rate,
}

/// Every device model of the agent.
pub struct Devices {
    prefix: String,
    publisher: Publisher,
    labels: Labels,
    interval_ms: i64,
    defs: Vec<Def>,
    next_uid: usize,
    seq: u64,
    report: DevicesReport,
    /// Snapshots of evicted instances, for the caller to write off the tick thread.
    evicted: Vec<(Store, String, Vec<u8>)>,
    dropped_unlogged: u64,
    drop_logged_at: Option<Instant>,
    evicted_unlogged: u64,
    evict_logged_at: Option<Instant>,
}

impl Devices {
    pub fn new(p: DevicesParams) -> Self {
        let host_dir = p
            .snapshots
            .as_ref()
            .map(|root| root.join(topics::sanitize_level(&p.host)).join("devices"));
        let defs = p
            .specs
            .into_iter()
            .map(|spec| {
                let pairs: Vec<(String, String)> = spec
                    .metrics
                    .iter()
                    .map(|(m, a)| (m.clone(), a.as_str().to_owned()))
                    .collect();
                Def {
                    aggregates: spec.metrics.iter().map(|(_, a)| *a).collect(),
                    shape: shape_key(&spec.detector, &pairs),
                    store: host_dir.as_ref().map(|d| Store::new(d, &spec.name)),
                    instances: Vec::new(),
                    by_device: HashMap::new(),
                    spec,
                }
            })
            .collect();
        Self {
            prefix: p.prefix.clone(),
            publisher: Publisher::new(&p.prefix, &p.host, &p.labels),
            labels: p.labels,
            interval_ms: p.interval.as_millis().clamp(1, i64::MAX as u128) as i64,
            defs,
            next_uid: 0,
            seq: 0,
            report: DevicesReport::default(),
            evicted: Vec::new(),
            dropped_unlogged: 0,
            drop_logged_at: None,
            evicted_unlogged: 0,
            evict_logged_at: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// What to subscribe to: the ingest topics when a definition reads them, and each
    /// definition's own topic.
    pub fn filters(&self) -> Vec<String> {
        let mut f: Vec<String> = Vec::new();
        for d in &self.defs {
            let filter = match &d.spec.topic {
                Some(t) => t.clone(),
                None => topics::ingest_filter(&self.prefix),
            };
            if !f.contains(&filter) {
                f.push(filter);
            }
        }
        f
    }

    /// A message on one of [`Devices::filters`] (others are ignored). `now` is the agent's
    /// clock (Unix ms). Readings of a later interval close the open one, which is scored
    /// and published into `out`.
    pub fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: i64,
        fitter: &mut dyn Fitter,
        out: &mut Vec<Out>,
    ) {
        let ingest = topics::ingest_device(&self.prefix, topic);
        // Which definitions listen here, and the device the topic names for each.
        let listening: Vec<(usize, Option<&str>)> = self
            .defs
            .iter()
            .enumerate()
            .filter_map(|(di, d)| match &d.spec.topic {
                None => ingest.map(|dev| (di, Some(dev).filter(|d| !d.is_empty()))),
                Some(filter) => topic_device(filter, topic).map(|dev| (di, Some(dev))),
            })
            .collect();
        if listening.is_empty() {
            return;
        }
        if payload.len() > MAX_MESSAGE_BYTES {
            let why = format!(
                "{} bytes; at most {MAX_MESSAGE_BYTES} are taken",
                payload.len()
            );
            return self.drop(Drop::Bad, topic, &why);
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return self.drop(Drop::Bad, topic, "not UTF-8");
        };
        if let Ok(value) = text.trim().parse::<f64>() {
            return self.bare_number(topic, &listening, value, now, fitter, out);
        }
        // The device a topic names is the same for every definition but in odd layouts
        // (two filters with `+` at different levels); the event's `deviceId` wins anyway.
        let defaults = Defaults {
            device: listening.iter().find_map(|(_, d)| *d),
            time: Some(now),
        };
        let mut any = false;
        for parsed in events(topic, text, defaults) {
            any = true;
            match parsed {
                Ok(e) => {
                    for &(di, _) in &listening {
                        self.take(di, &e.device, &e.metric, e.value, e.time, now, fitter, out);
                    }
                }
                Err(e) => self.drop(Drop::Bad, topic, &e.to_string()),
            }
        }
        if !any {
            self.drop(Drop::Bad, topic, "an empty message: no reading in it");
        }
    }

    /// A bare number (`21.5`): the reading of a one-metric model, timed on arrival, its
    /// device named by the topic.
    fn bare_number(
        &mut self,
        topic: &str,
        listening: &[(usize, Option<&str>)],
        value: f64,
        now: i64,
        fitter: &mut dyn Fitter,
        out: &mut Vec<Out>,
    ) {
        if !value.is_finite() {
            return self.drop(Drop::Bad, topic, "not a finite number");
        }
        for &(di, device) in listening {
            let spec = &self.defs[di].spec;
            let (Some(device), [(metric, _)]) = (device, spec.metrics.as_slice()) else {
                let why = "a bare number names no device or metric: send {\"metric\": .., \"value\": ..} to a model of several metrics";
                self.drop(Drop::Bad, topic, why);
                continue;
            };
            let metric = metric.clone();
            self.take(di, device, &metric, value, now, now, fitter, out);
        }
    }

    /// One reading for definition `di`: checked, then into its device's open interval.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        di: usize,
        device: &str,
        metric: &str,
        value: f64,
        time: i64,
        now: i64,
        fitter: &mut dyn Fitter,
        out: &mut Vec<Out>,
    ) {
        let def = &self.defs[di];
        let Some(mi) = def.spec.metrics.iter().position(|(m, _)| m == metric) else {
            self.report.unmatched += 1;
            return;
        };
        if !glob::matches(&def.spec.device, device) {
            self.report.unmatched += 1;
            return;
        }
        if time > now.saturating_add(MAX_AHEAD_MS) {
            let why = format!(
                "{device}: time {time} is {} ms ahead of the agent's clock",
                time - now
            );
            return self.drop(Drop::Future, metric, &why);
        }
        let i = self.interval_ms;
        let bucket = time.min(now).div_euclid(i);
        if bucket.saturating_add(2).saturating_mul(i) <= now {
            let why = format!("{device}: time {time} is in an interval already scored");
            return self.drop(Drop::Late, metric, &why);
        }
        let ii = self.instance(di, device, now, out);
        self.seq += 1;
        let (seq, rate) = (self.seq, self.defs[di].spec.max_rate);
        let inst = &mut self.defs[di].instances[ii];
        if !inst.admit(now, rate) {
            let why = format!("{device}: more than {rate} readings per second");
            return self.drop(Drop::Rate, metric, &why);
        }
        inst.last_seen = seq;
        match inst.open() {
            Some(open) if bucket < open => {
                let why = format!("{device}: time {time} is before the interval being filled");
                return self.drop(Drop::Late, metric, &why);
            }
            Some(open) if bucket > open => self.close(di, ii, fitter, out),
            _ => {}
        }
        if self.defs[di].instances[ii].put(bucket, mi, value).is_ok() {
            self.report.readings += 1;
        }
    }

    /// Every tick: intervals that ended an interval ago are scored (a device that stopped
    /// sending still gets its last interval judged).
    pub fn tick(&mut self, now: i64, fitter: &mut dyn Fitter, out: &mut Vec<Out>) {
        let i = self.interval_ms;
        for di in 0..self.defs.len() {
            for ii in 0..self.defs[di].instances.len() {
                let due = self.defs[di].instances[ii]
                    .open()
                    .is_some_and(|b| b.saturating_add(2).saturating_mul(i) <= now);
                if due {
                    self.close(di, ii, fitter, out);
                }
            }
        }
    }

    /// Scores instance `ii`'s open interval, unless it is a gap.
    fn close(&mut self, di: usize, ii: usize, fitter: &mut dyn Fitter, out: &mut Vec<Out>) {
        let def = &mut self.defs[di];
        let inst = &mut def.instances[ii];
        let Some((bucket, complete)) = inst.close(&def.aggregates) else {
            return;
        };
        if !complete {
            self.report.gaps += 1;
            return;
        }
        let ts = bucket * self.interval_ms;
        let (decision, _) = inst
            .decider
            .step(ts, &inst.values, (TRAINER_HOST, inst.uid), fitter);
        let to = Target {
            model: &def.spec.name,
            device: Some(&inst.device),
            score_topic: &inst.score_topic,
            alarm_name: &inst.alarm_name,
            values: &inst.values,
        };
        publish_decision(
            &inst.decider,
            &to,
            decision,
            ts,
            &self.publisher,
            &self.labels,
            out,
        );
    }

    /// Device `device`'s instance of definition `di`, created (and its snapshot taken
    /// back) on its first reading, after evicting the least recently seen one when full.
    fn instance(&mut self, di: usize, device: &str, now: i64, out: &mut Vec<Out>) -> usize {
        if let Some(&ii) = self.defs[di].by_device.get(device) {
            return ii;
        }
        if self.defs[di].instances.len() >= self.defs[di].spec.max_instances {
            self.evict(di, now, out);
        }
        let def = &mut self.defs[di];
        let names = def.spec.metrics.iter().map(|(m, _)| m.clone()).collect();
        let mut decider =
            Decider::new(&def.spec.detector, def.spec.metrics.len()).with_names(names);
        if let Some(store) = &def.store {
            restore(store, &def.spec.name, device, def.shape, &mut decider);
        }
        let level = topics::escape_level(device);
        let name = format!("{}/{level}", def.spec.name);
        let inst = Instance::new(
            device,
            self.next_uid,
            decider,
            topics::score(&self.prefix, self.publisher.host(), &name),
            name,
            def.spec.max_rate,
            now,
        );
        self.next_uid += 1;
        def.instances.push(inst);
        def.by_device
            .insert(device.to_owned(), def.instances.len() - 1);
        self.report.created += 1;
        tracing::debug!(model = %def.spec.name, device, instances = def.instances.len(), "device model instance created");
        def.instances.len() - 1
    }

    /// Evicts definition `di`'s least recently seen instance: its firing alarm closed, its
    /// snapshot set aside for the caller to save.
    fn evict(&mut self, di: usize, now: i64, out: &mut Vec<Out>) {
        let def = &mut self.defs[di];
        let Some(ii) = (0..def.instances.len()).min_by_key(|&i| def.instances[i].last_seen) else {
            return;
        };
        let mut gone = def.instances.swap_remove(ii);
        def.by_device.remove(&gone.device);
        if let Some(moved) = def.instances.get(ii) {
            def.by_device.insert(moved.device.clone(), ii);
        }
        if let Some(t) = gone.decider.close_episode(now) {
            let mut e = gone.decider.episode(&def.spec.name, &gone.device, now, t);
            e.name = gone.alarm_name.clone();
            e.summary = format!(
                "{}: {} is no longer watched (evicted for a newer device; max_instances = {}); its alarm closes unresolved",
                def.spec.name, gone.device, def.spec.max_instances
            );
            e.labels.insert("device".into(), gone.device.clone());
            e.labels.insert("reason".into(), "evicted".into());
            out.push(self.publisher.publish(e));
        }
        if let Some(store) = &def.store {
            let bytes = gone.decider.snapshot(def.shape, now);
            self.evicted
                .push((store.clone(), file_name(&gone.device), bytes));
        }
        self.report.evicted += 1;
        self.evicted_unlogged += 1;
        let at = Instant::now();
        if self
            .evict_logged_at
            .is_none_or(|t| at.duration_since(t) >= EVICT_LOG_EVERY)
        {
            tracing::warn!(
                model = %def.spec.name,
                device = %gone.device,
                max_instances = def.spec.max_instances,
                evicted = self.evicted_unlogged,
                evicted_total = self.report.evicted,
                "device model full: least recently seen device evicted (logged at most once a minute; raise max_instances to keep more)"
            );
            self.evict_logged_at = Some(at);
            self.evicted_unlogged = 0;
        }
    }

    /// Counts a dropped reading by reason and logs it, at most every [`DROP_LOG_EVERY`].
    fn drop(&mut self, why: Drop, at: &str, message: &str) {
        let d = &mut self.report.dropped;
        let n = match why {
            Drop::Bad => &mut d.bad,
            Drop::Future => &mut d.future,
            Drop::Late => &mut d.late,
            Drop::Rate => &mut d.rate,
        };
        *n += 1;
        self.dropped_unlogged += 1;
        let now = Instant::now();
        if self
            .drop_logged_at
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)
        {
            tracing::warn!(
                reason = ?why,
                at,
                error = message,
                skipped = self.dropped_unlogged,
                "device reading dropped (logged at most every 10 s; counts by reason in agent/stats)"
            );
            self.drop_logged_at = Some(now);
            self.dropped_unlogged = 0;
        }
    }

    /// A fit of instance `uid` finished on the trainer thread: hands the staging buffer
    /// back, or the job's own when the instance was evicted meanwhile.
    pub fn install(&mut self, uid: usize, job: crate::scorer::model::TrainJob) -> Box<[f32]> {
        let found = self
            .defs
            .iter_mut()
            .flat_map(|d| d.instances.iter_mut())
            .find(|i| i.uid == uid);
        match found {
            Some(inst) => inst.decider.model_mut().install(job),
            None => job.data,
        }
    }

    /// Every instance's snapshot, with the store and file name it goes to, and those of
    /// instances evicted since the last call.
    pub fn snapshots(&mut self, now: i64) -> Vec<(Store, String, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.evicted);
        for d in &self.defs {
            let Some(store) = &d.store else { continue };
            for inst in &d.instances {
                out.push((
                    store.clone(),
                    file_name(&inst.device),
                    inst.decider.snapshot(d.shape, now),
                ));
            }
        }
        out
    }

    /// Snapshots of evicted instances not yet written.
    pub fn take_evicted(&mut self) -> Vec<(Store, String, Vec<u8>)> {
        std::mem::take(&mut self.evicted)
    }

    pub fn report(&self) -> DevicesReport {
        DevicesReport {
            instances: self.defs.iter().map(|d| d.instances.len()).sum(),
            heap_bytes: self
                .defs
                .iter()
                .flat_map(|d| &d.instances)
                .map(|i| i.decider.heap_bytes())
                .sum(),
            ..self.report
        }
    }
}

/// Takes back a device's snapshot; one that cannot be used is set aside and the instance
/// learns afresh.
fn restore(store: &Store, model: &str, device: &str, shape: u64, decider: &mut Decider) {
    let file = file_name(device);
    let result = match store.load(&file) {
        None => return,
        Some(Err(e)) => Err(format!("cannot read it: {e}")),
        Some(Ok(bytes)) => decider.restore(&bytes, shape).map_err(|e| e.to_string()),
    };
    match result {
        Ok(saved_at) => tracing::info!(
            model,
            device,
            saved_at,
            "device model restored from its snapshot"
        ),
        Err(why) => {
            let aside = store.set_aside(&file);
            tracing::warn!(model, device, reason = %why, set_aside = ?aside.as_ref().ok(), "device snapshot not used: this device learns afresh");
        }
    }
}

/// A device's snapshot file name: everything but `[A-Za-z0-9_-]` percent-escaped, so
/// that no two devices share a file and no name leaves the directory.
fn file_name(device: &str) -> String {
    let mut s = String::with_capacity(device.len());
    for b in device.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests;
