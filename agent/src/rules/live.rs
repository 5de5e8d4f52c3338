//! Threshold rules in the running agent: which document is in force, what feeds the
//! engine, and the alarms its changes become.
//!
//! - **Documents** come from three sources, in rising precedence: the `[rules] file`
//!   (polled for changes by mtime and size), the fleet's retained `<prefix>/rules` and the
//!   host's retained `<prefix>/<host>/rules`. The highest source holding a document is in
//!   force; an empty retained message takes that source's document away, and the next
//!   one down applies (or none). A new valid document goes into the engine through
//!   [`Engine::replace`], which keeps the open windows and firing alarms of unchanged
//!   rules. An invalid one is rejected as a whole: logged, and published (retained) on
//!   `<prefix>/<host>/rules/error` until its source holds a valid document again, while
//!   the rules in force stay.
//! - **Events** come from `<prefix>/ingest/#` (with `[ingest] enabled`) and from the host's
//!   own samples (metric `chart.dim`, device the host's name), the latter only for metric
//!   names some rule of this host asks for, so that sampling costs nothing without rules.
//! - **Alarms**: each [`Change`] becomes an [`Alarm`] state, retained on
//!   `<prefix>/<host>/alarms/rule/<ruleId>/<device>[/dimN=<value>...]`, one topic per rule
//!   and group so that groups do not overwrite each other's state.
//!
//! Everything here is synchronous and returns what to publish ([`Out`]), so that `run`
//! owns the MQTT side and the tests below drive it without a broker.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use lookout_shared::codec::to_json;
use lookout_shared::duration::HumanDuration;
use lookout_shared::payload::{AlarmState, Labels};
use lookout_shared::topics;
use serde::Serialize;

use super::config::RulesSettings;
use super::document::{Cmp, DIMS, Rule, RuleSet, Stat};
use super::engine::{Cause, Change, Closed, Engine, Stats};
use super::event::{Defaults, Event, events};
use super::window::{Aggregate, GroupKey};
use crate::alarm::publish::{Episode, Publisher};
use crate::frame::Frame;
pub use crate::out::Out;

/// How far past the agent's clock an event's own time may lie. The engine's clock follows
/// event time, so a device whose clock runs ahead would otherwise close everyone's windows
/// early; later times are clamped to this.
pub const FUTURE_TOLERANCE_MS: i64 = 1_000;

/// How often the rules file's mtime and size are looked at.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// Largest ingest message taken; larger ones are bad events.
pub const MAX_INGEST_BYTES: usize = 256 * 1024;

/// Resolved rule alarms whose state is re-sent after a reconnect; older ones stay retained
/// on the broker but leave the agent's memory, which would otherwise grow with every group
/// ever seen. Firing alarms are always re-sent.
pub const RESOLVED_KEPT: usize = 1024;

/// Bad events are logged at most this often, with the number left unlogged.
const BAD_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the running agent's rules need from the config.
#[derive(Clone, Debug)]
pub struct LiveParams {
    pub prefix: String,
    /// The host the rules belong to: their topics, and the device of its own samples.
    pub host: String,
    /// The host's labels, added to every rule alarm.
    pub labels: Labels,
    pub rules: RulesSettings,
    /// Whether `<prefix>/ingest/#` is taken.
    pub ingest: bool,
    /// Whether the host's own samples feed the rules (not for simulated hosts, whose clock
    /// is simulated and would run the engine's clock ahead of every real event).
    pub host_metrics: bool,
}

/// Where a document came from, in rising precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    File,
    Fleet,
    Host,
}

impl Origin {
    const BY_PRECEDENCE: [Origin; 3] = [Origin::Host, Origin::Fleet, Origin::File];
}

#[derive(Debug, Default)]
struct Slot {
    doc: Option<RuleSet>,
    /// Fingerprint of the last MQTT payload taken, so that the redelivery of a retained
    /// document after each reconnect changes nothing.
    seen: Option<u64>,
    error: Option<Rejection>,
}

#[derive(Clone, Debug)]
struct Rejection {
    /// Order of rejections: the error topic shows the latest one still standing.
    seq: u64,
    ts: i64,
    message: String,
}

/// The retained payload on `<prefix>/<host>/rules/error`.
#[derive(Serialize)]
struct RulesError<'a> {
    ts: i64,
    host: &'a str,
    /// The file or topic whose document was rejected.
    origin: &'a str,
    error: &'a str,
    /// The file or topic whose rules stay in force, or null when none.
    in_force: Option<&'a str>,
    rules: usize,
}

/// A file's identity for change detection.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stamp {
    Seen {
        modified: Option<SystemTime>,
        len: u64,
    },
    Unreadable(String),
}

impl Stamp {
    fn of(path: &std::path::Path) -> Self {
        match std::fs::metadata(path) {
            Ok(m) => Stamp::Seen {
                modified: m.modified().ok(),
                len: m.len(),
            },
            Err(e) => Stamp::Unreadable(e.to_string()),
        }
    }
}

#[derive(Debug)]
struct FileWatch {
    path: PathBuf,
    stamp: Stamp,
    next_poll: Option<Instant>,
}

/// The rules of the running agent. See the module docs.
#[derive(Debug)]
pub struct Live {
    engine: Engine,
    prefix: String,
    host: String,
    /// Rule alarms' payloads, built as the learned models' are.
    alarms: Publisher,
    host_topic: String,
    fleet_topic: String,
    error_topic: String,
    ingest: bool,
    host_metrics: bool,
    file: Option<FileWatch>,
    slots: [Slot; 3],
    /// The source whose document is in the engine, and that document.
    in_force: Option<Origin>,
    current: RuleSet,
    /// Metric names (`chart.dim`) of the host's own samples that some rule selects.
    wanted: BTreeSet<String>,
    /// Firing rule alarms by topic, with the statistic that fired them (what a resolution
    /// without data reports).
    firing: BTreeMap<String, f64>,
    resolved: VecDeque<String>,
    /// The rejection shown on the error topic (`None`: the topic is empty).
    error_shown: Option<u64>,
    seq: u64,
    bad_logged_at: Option<Instant>,
    bad_unlogged: u64,
    clamped: u64,
    name_buf: String,
}

impl Live {
    pub fn new(p: LiveParams) -> Self {
        let RulesSettings {
            file,
            initial,
            limits,
        } = p.rules;
        let mut slots: [Slot; 3] = Default::default();
        let file = file.map(|path| {
            slots[Origin::File as usize].doc = Some(initial.clone());
            FileWatch {
                stamp: Stamp::of(&path),
                path,
                next_poll: None,
            }
        });
        let in_force = file.as_ref().map(|_| Origin::File);
        let mut live = Self {
            engine: Engine::new(initial.clone(), limits),
            host_topic: topics::rules(&p.prefix, &p.host),
            fleet_topic: topics::fleet_rules(&p.prefix),
            error_topic: topics::rules_error(&p.prefix, &p.host),
            alarms: Publisher::new(&p.prefix, &p.host, &p.labels),
            prefix: p.prefix,
            host: p.host,
            ingest: p.ingest,
            host_metrics: p.host_metrics,
            file,
            slots,
            in_force,
            current: initial,
            wanted: BTreeSet::new(),
            firing: BTreeMap::new(),
            resolved: VecDeque::new(),
            error_shown: None,
            seq: 0,
            bad_logged_at: None,
            bad_unlogged: 0,
            clamped: 0,
            name_buf: String::new(),
        };
        live.refresh_wanted();
        live
    }

    /// The topics to subscribe to; the first two carry documents that must not be lost.
    pub fn filters(&self) -> Vec<String> {
        let mut f = vec![self.host_topic.clone(), self.fleet_topic.clone()];
        if self.ingest {
            f.push(topics::ingest_filter(&self.prefix));
        }
        f
    }

    /// Topics whose messages are rules documents.
    pub fn document_topics(&self) -> Vec<String> {
        vec![self.host_topic.clone(), self.fleet_topic.clone()]
    }

    /// At start: empties the error topic, which may still hold a rejection from before a
    /// restart (a document still invalid is rejected again when it is redelivered). Once
    /// is enough, so this one is not re-sent after reconnects.
    pub fn start(&mut self, out: &mut Vec<Out>) {
        self.error_shown = None;
        out.push(Out::State {
            topic: self.error_topic.clone(),
            payload: Vec::new(),
        });
        out.push(Out::Forget {
            topic: self.error_topic.clone(),
        });
        tracing::info!(
            host = %self.host,
            source = self.describe(self.in_force).unwrap_or("none"),
            rules = self.current.len(),
            documents = %format!("{}, {}", self.host_topic, self.fleet_topic),
            ingest = %if self.ingest { topics::ingest_filter(&self.prefix) } else { "off".into() },
            "rules ready"
        );
    }

    /// A message from one of [`Live::filters`]. `now` is the agent's clock (Unix ms).
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: i64, out: &mut Vec<Out>) {
        if topic == self.host_topic {
            self.mqtt_document(Origin::Host, payload, now, out);
        } else if topic == self.fleet_topic {
            self.mqtt_document(Origin::Fleet, payload, now, out);
        } else if let Some(device) = topics::ingest_device(&self.prefix, topic)
            && self.ingest
        {
            self.take_events(topic, device, payload, now, out);
        } else {
            tracing::debug!(topic, "message on a topic the rules do not take; ignored");
        }
    }

    /// One tick of the host's samples (a real host only; see [`LiveParams::host_metrics`]).
    pub fn on_samples(&mut self, frame: &Frame, out: &mut Vec<Out>) {
        if !self.host_metrics || self.wanted.is_empty() {
            return;
        }
        for s in &frame.samples {
            if !s.value.is_finite() {
                continue;
            }
            self.name_buf.clear();
            self.name_buf.push_str(&s.chart);
            self.name_buf.push('.');
            self.name_buf.push_str(&s.dim);
            if !self.wanted.contains(&self.name_buf) {
                continue;
            }
            let event = Event {
                time: frame.ts,
                device: self.host.clone(),
                metric: self.name_buf.clone(),
                value: s.value,
                dims: Default::default(),
                filters: Default::default(),
            };
            let closed = self.engine.push(&event);
            self.publish_closed(closed, out);
        }
    }

    /// Every tick: looks at the rules file when due, then closes the windows that ended by
    /// `now`, so that alarms come when events stop.
    pub fn tick(&mut self, now: i64, at: Instant, out: &mut Vec<Out>) {
        self.poll_file(now, at, out);
        let closed = self.engine.close_until(now);
        self.publish_closed(closed, out);
    }

    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// Ingested events whose time lay too far ahead and was clamped.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    fn describe(&self, origin: Option<Origin>) -> Option<&str> {
        Some(match origin? {
            Origin::File => self.file.as_ref()?.path.to_str().unwrap_or("(rules file)"),
            Origin::Fleet => &self.fleet_topic,
            Origin::Host => &self.host_topic,
        })
    }

    fn poll_file(&mut self, now: i64, at: Instant, out: &mut Vec<Out>) {
        let Some(watch) = &mut self.file else { return };
        if watch.next_poll.is_some_and(|t| at < t) {
            return;
        }
        watch.next_poll = Some(at + FILE_POLL);
        let stamp = Stamp::of(&watch.path);
        if stamp == watch.stamp {
            return;
        }
        watch.stamp = stamp.clone();
        let path = watch.path.clone();
        let read = match stamp {
            Stamp::Unreadable(e) => Err(format!("{}: {e}", path.display())),
            Stamp::Seen { .. } => RuleSet::read(&path).map_err(|e| e.to_string()),
        };
        match read {
            Ok(set) => self.accept(Origin::File, Some(set), out),
            Err(message) => self.reject(Origin::File, message, now, out),
        }
    }

    fn mqtt_document(&mut self, origin: Origin, payload: &[u8], now: i64, out: &mut Vec<Out>) {
        let mut h = std::hash::DefaultHasher::new();
        payload.hash(&mut h);
        let fingerprint = h.finish();
        let slot = &mut self.slots[origin as usize];
        if slot.seen == Some(fingerprint) {
            return;
        }
        slot.seen = Some(fingerprint);
        let topic = match origin {
            Origin::Host => self.host_topic.clone(),
            _ => self.fleet_topic.clone(),
        };
        if payload.is_empty() {
            tracing::info!(topic, "rules document removed (empty retained message)");
            return self.accept(origin, None, out);
        }
        match RuleSet::parse(&topic, payload) {
            Ok(set) => self.accept(origin, Some(set), out),
            Err(e) => self.reject(origin, e.to_string(), now, out),
        }
    }

    /// A source's new valid document (or its removal): it clears the source's rejection,
    /// and goes into the engine if the source is, or becomes, the one in force.
    fn accept(&mut self, origin: Origin, doc: Option<RuleSet>, out: &mut Vec<Out>) {
        let slot = &mut self.slots[origin as usize];
        slot.doc = doc;
        slot.error = None;
        let top = Origin::BY_PRECEDENCE
            .into_iter()
            .find(|&o| self.slots[o as usize].doc.is_some());
        let set = top
            .and_then(|o| self.slots[o as usize].doc.clone())
            .unwrap_or_default();
        if top == self.in_force && set == self.current {
            if top != Some(origin) {
                tracing::info!(
                    source = self.describe(Some(origin)).unwrap_or("?"),
                    in_force = self.describe(top).unwrap_or("none"),
                    "rules document taken but not in force: a source of higher precedence holds one"
                );
            }
        } else {
            let changes = self.engine.replace(set.clone());
            self.in_force = top;
            self.current = set;
            self.refresh_wanted();
            tracing::info!(
                source = self.describe(top).unwrap_or("none"),
                rules = self.current.len(),
                resolved = changes.len(),
                "rules in force replaced"
            );
            for change in &changes {
                self.publish_change(change, out);
            }
        }
        self.show_error(out);
    }

    fn reject(&mut self, origin: Origin, message: String, now: i64, out: &mut Vec<Out>) {
        tracing::warn!(
            error = %message,
            in_force = self.describe(self.in_force).unwrap_or("none"),
            "rules document rejected; the rules in force stay"
        );
        self.seq += 1;
        self.slots[origin as usize].error = Some(Rejection {
            seq: self.seq,
            ts: now,
            message,
        });
        self.show_error(out);
    }

    /// Publishes the latest rejection still standing, or empties the topic when none is.
    fn show_error(&mut self, out: &mut Vec<Out>) {
        let latest = Origin::BY_PRECEDENCE
            .into_iter()
            .filter_map(|o| self.slots[o as usize].error.as_ref().map(|r| (o, r)))
            .max_by_key(|(_, r)| r.seq);
        let want = latest.map(|(_, r)| r.seq);
        if want == self.error_shown {
            return;
        }
        let payload = match latest {
            None => Vec::new(),
            Some((origin, r)) => to_json(&RulesError {
                ts: r.ts,
                host: &self.host,
                origin: self.describe(Some(origin)).unwrap_or("?"),
                error: &r.message,
                in_force: self.describe(self.in_force),
                rules: self.current.len(),
            }),
        };
        self.error_shown = want;
        out.push(Out::State {
            topic: self.error_topic.clone(),
            payload,
        });
    }

    fn refresh_wanted(&mut self) {
        self.wanted = if self.host_metrics {
            self.engine
                .rules()
                .filter(|r| r.device.matches(&self.host) && r.filter.iter().all(Option::is_none))
                .map(|r| r.metric.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
    }

    fn take_events(
        &mut self,
        topic: &str,
        device: &str,
        payload: &[u8],
        now: i64,
        out: &mut Vec<Out>,
    ) {
        if payload.len() > MAX_INGEST_BYTES {
            let n = payload.len();
            return self.bad(
                topic,
                &format!("a message of {n} bytes; at most {MAX_INGEST_BYTES} are taken"),
            );
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return self.bad(topic, "not UTF-8");
        };
        let defaults = Defaults {
            device: Some(device).filter(|d| !d.is_empty()),
            time: Some(now),
        };
        let mut any = false;
        for parsed in events(topic, text, defaults) {
            any = true;
            match parsed {
                Ok(mut event) => {
                    let latest = now.saturating_add(FUTURE_TOLERANCE_MS);
                    if event.time > latest {
                        self.clamped += 1;
                        tracing::debug!(
                            topic,
                            device = %event.device,
                            time = event.time,
                            now,
                            "event time ahead of the agent's clock; clamped"
                        );
                        event.time = latest;
                    }
                    let closed = self.engine.push(&event);
                    self.publish_closed(closed, out);
                }
                Err(e) => self.bad(topic, &e.to_string()),
            }
        }
        if !any {
            self.bad(topic, "an empty message: no event in it");
        }
    }

    /// Counts a bad event and logs it, at most once per [`BAD_LOG_EVERY`].
    fn bad(&mut self, topic: &str, why: &str) {
        self.engine.record_bad();
        self.bad_unlogged += 1;
        let now = Instant::now();
        if self
            .bad_logged_at
            .is_none_or(|t| now.duration_since(t) >= BAD_LOG_EVERY)
        {
            tracing::warn!(
                topic,
                error = why,
                skipped = self.bad_unlogged,
                bad_total = self.engine.stats().bad,
                "bad ingest event skipped (logged at most every 10 s)"
            );
            self.bad_logged_at = Some(now);
            self.bad_unlogged = 0;
        }
    }

    fn publish_closed(&mut self, closed: Closed, out: &mut Vec<Out>) {
        for o in &closed.outputs {
            tracing::debug!(output = %o.to_json_line(), "rule output");
        }
        for change in &closed.changes {
            self.publish_change(change, out);
        }
    }

    fn publish_change(&mut self, change: &Change, out: &mut Vec<Out>) {
        let (rule, key, started_at) = match change {
            Change::Fired {
                rule,
                key,
                started_at,
                ..
            }
            | Change::Resolved {
                rule,
                key,
                started_at,
                ..
            } => (rule, key, *started_at),
        };
        let name = alarm_name(rule, &key.group);
        let topic = self.alarms.topic(&name);
        let stat = rule.operator.stat;
        let mut labels: Labels = rule_labels(rule, &key.group).into_iter().collect();
        let where_ = place(rule, &key.group);
        let (state, ts, score, summary) = match change {
            Change::Fired { output, .. } => {
                let observed = output.aggregate.stat(stat);
                labels.extend(aggregate_labels(&output.aggregate));
                self.firing.insert(topic.clone(), observed);
                let summary = format!(
                    "{}: {} {} {observed} {} {} on {where_}",
                    rule.alert,
                    rule.metric,
                    stat_name(stat),
                    cmp_sign(rule.operator.cmp),
                    rule.value
                );
                (AlarmState::Firing, output.time, observed, summary)
            }
            Change::Resolved {
                at,
                aggregate,
                cause,
                ..
            } => {
                let fired = self.firing.remove(&topic);
                if let Some(agg) = aggregate {
                    labels.extend(aggregate_labels(agg));
                }
                labels.insert("cause".into(), cause_name(*cause).into());
                let score = aggregate
                    .map(|a| a.stat(stat))
                    .or(fired)
                    .unwrap_or(rule.value);
                let summary = format!(
                    "{}: resolved on {where_} after {}: {}",
                    rule.alert,
                    HumanDuration(Duration::from_millis(
                        u64::try_from(at - started_at).unwrap_or(0),
                    )),
                    resolution(rule, stat, score, *cause)
                );
                (AlarmState::Resolved, *at, score, summary)
            }
        };
        tracing::debug!(host = %self.host, rule = %rule.id, device = %key.group.device, "rule alarm {}", state.as_str());
        out.push(self.alarms.publish(Episode {
            name,
            source: topics::rule_source(&rule.id.to_string()),
            state,
            severity: rule.severity,
            ts,
            started_at,
            score,
            threshold: rule.value,
            summary,
            labels,
            dimensions: Vec::new(),
            explain: None,
            window: None,
        }));
        if state == AlarmState::Resolved {
            self.keep_resolved(topic, out);
        }
    }

    fn keep_resolved(&mut self, topic: String, out: &mut Vec<Out>) {
        self.resolved.push_back(topic);
        while self.resolved.len() > RESOLVED_KEPT {
            let Some(old) = self.resolved.pop_front() else {
                break;
            };
            if !self.firing.contains_key(&old) && !self.resolved.contains(&old) {
                out.push(Out::Forget { topic: old });
            }
        }
    }
}

/// Why a rule alarm resolved, in words.
fn resolution(rule: &Rule, stat: Stat, score: f64, cause: Cause) -> String {
    match cause {
        Cause::NoLongerMatches => format!(
            "{} {} {score} no longer {} {}",
            rule.metric,
            stat_name(stat),
            cmp_sign(rule.operator.cmp),
            rule.value
        ),
        Cause::NoData => format!("no {} events in a window", rule.metric),
        Cause::RuleRemoved => "the rule was removed".into(),
        Cause::RuleChanged => "the rule now selects other events".into(),
    }
}

/// `rule/<ruleId>/<device>[/dimN=<value>...]` for the rule's included dimensions.
fn alarm_name(rule: &Rule, group: &GroupKey) -> String {
    topics::rule_alarm_name(
        &rule.id.to_string(),
        &group.device,
        (0..DIMS)
            .filter(|&i| rule.include_dim[i])
            .map(|i| (i, group.dims[i].as_deref())),
    )
}

/// `978648 (dim2=N024)`: the device and the included dimensions, for summaries.
fn place(rule: &Rule, group: &GroupKey) -> String {
    let dims: Vec<String> = (0..DIMS)
        .filter(|&i| rule.include_dim[i])
        .map(|i| match &group.dims[i] {
            Some(v) => format!("dim{i}={v}"),
            None => format!("dim{i}=null"),
        })
        .collect();
    if dims.is_empty() {
        group.device.clone()
    } else {
        format!("{} ({})", group.device, dims.join(", "))
    }
}

/// The seed's output fields that name the rule and group, as labels.
fn rule_labels(rule: &Rule, group: &GroupKey) -> Vec<(String, String)> {
    let mut l = vec![
        ("deviceid".to_owned(), group.device.clone()),
        ("ruleid".to_owned(), rule.id.to_string()),
        ("metric".to_owned(), rule.metric.clone()),
        ("alert".to_owned(), rule.alert.clone()),
        ("operator".to_owned(), rule.operator.name().to_owned()),
        ("window".to_owned(), HumanDuration(rule.window).to_string()),
    ];
    for (i, dim) in group.dims.iter().enumerate() {
        if let Some(v) = dim {
            l.push((format!("dim{i}"), v.clone()));
        }
    }
    l
}

fn aggregate_labels(a: &Aggregate) -> [(String, String); 4] {
    [
        ("avg".to_owned(), a.avg().to_string()),
        ("min".to_owned(), a.min.to_string()),
        ("max".to_owned(), a.max.to_string()),
        ("count".to_owned(), a.count.to_string()),
    ]
}

fn stat_name(s: Stat) -> &'static str {
    match s {
        Stat::Avg => "avg",
        Stat::Min => "min",
        Stat::Max => "max",
        Stat::Count => "count",
    }
}

fn cmp_sign(c: Cmp) -> &'static str {
    match c {
        Cmp::GreaterOrEqual => ">=",
        Cmp::EqualOrLess => "<=",
    }
}

fn cause_name(c: Cause) -> &'static str {
    match c {
        Cause::NoLongerMatches => "no_longer_matches",
        Cause::NoData => "no_data",
        Cause::RuleRemoved => "rule_removed",
        Cause::RuleChanged => "rule_changed",
    }
}

#[cfg(test)]
mod tests;
