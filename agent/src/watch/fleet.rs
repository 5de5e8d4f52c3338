//! The fleet as `watch` sees it: what each host last said on its topics, built by applying
//! MQTT messages one at a time. Pure (the caller passes the clock), bounded, and knows
//! nothing of rendering: the terminal view and the `--once` snapshot both read it through
//! [`Fleet::hosts`] and [`Fleet::firing`].
//!
//! Bounds: at most [`Limits::hosts`] hosts, [`Limits::models_per_host`] scores per host,
//! [`Limits::alarms_per_host`] firing alarms per host and [`Limits::alarms`] in all; what
//! does not fit is dropped and counted in [`Counters`]. Payloads over [`MAX_PAYLOAD`]
//! bytes, names with control characters and payloads that do not parse are counted as bad
//! and skipped. Texts are stored with control characters replaced (a payload must not be
//! able to drive the terminal it is shown on) and cut to a bounded length.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use lookout_shared::payload::{Alarm, AlarmState, Score};
use lookout_shared::topics::{self, Kind};
use serde::Deserialize;

/// Largest payload read; larger ones are bad.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Longest host or model name (bytes) taken from a topic.
const MAX_NAME: usize = 128;
/// Longest stored summary, source and id (characters).
const MAX_SUMMARY: usize = 240;
const MAX_SOURCE: usize = 96;
const MAX_ID: usize = 256;
/// Longest stored top dimension and explain line (characters).
const MAX_DIMENSION: usize = 48;
const MAX_EXPLAIN: usize = 160;

/// What is kept; beyond these, new entries are dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub hosts: usize,
    pub models_per_host: usize,
    pub alarms_per_host: usize,
    /// Firing alarms of all hosts together.
    pub alarms: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hosts: 10_000,
            models_per_host: 32,
            alarms_per_host: 64,
            alarms: 20_000,
        }
    }
}

/// A shell-style glob on host names (`edge-*`, `sim-?`, `rack-[12]-*`).
#[derive(Clone, Debug)]
pub struct HostFilter {
    pattern: glob::Pattern,
}

impl HostFilter {
    pub fn new(glob: &str) -> Result<Self, String> {
        if glob.is_empty() {
            return Err("empty host glob".into());
        }
        glob::Pattern::new(glob)
            .map(|pattern| Self { pattern })
            .map_err(|e| format!("{glob:?} is not a glob: {e}"))
    }

    pub fn matches(&self, host: &str) -> bool {
        self.pattern.matches(host)
    }

    /// The one host the glob names when it has no wildcard, and that host can stand in a
    /// topic filter: then only that host's topics need subscribing.
    pub fn literal(&self) -> Option<&str> {
        let s = self.pattern.as_str();
        let plain = glob::Pattern::escape(s) == s && !s.contains(['+', '#', '/', '\0']);
        plain.then_some(s)
    }

    pub fn as_str(&self) -> &str {
        self.pattern.as_str()
    }
}

/// A host's `status` topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// Heard from, but no status (yet, or it was cleared).
    #[default]
    Unknown,
    Online,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Online => "online",
            Status::Offline => "offline",
        }
    }
}

/// The latest `scores/<model>` of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelScore {
    /// `None` while learning.
    pub score: Option<f64>,
    pub learning: bool,
    pub anomalous: bool,
    /// An anomalous tick's top dimension (its `dimensions[0].name`), when it names one.
    pub top: Option<String>,
}

/// One firing alarm, as its latest retained message says.
#[derive(Clone, Debug, PartialEq)]
pub struct FiringAlarm {
    pub id: String,
    pub source: String,
    pub severity: u8,
    /// The `ts` of the first firing message seen of this episode (Unix ms, host clock).
    pub fired_at: i64,
    pub summary: String,
    /// The alarm's `explain` line, when it has one.
    pub explain: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Host {
    status: Status,
    /// Our clock (Unix ms) when the host's latest live (not retained) message arrived.
    last_seen: Option<i64>,
    /// The host's clock minus ours, from the `ts` of its latest live message: alarm ages
    /// are measured on the host's clock, so that simulated time or a skewed clock still
    /// gives sensible ages.
    clock_offset: Option<i64>,
    scores: BTreeMap<String, ModelScore>,
    /// Keyed by alarm name (what follows `alarms/` in the topic): one retained state each.
    alarms: BTreeMap<String, FiringAlarm>,
}

/// What happened to the messages so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages received, whatever became of them.
    pub received: u64,
    /// Payloads or topics that could not be read: skipped.
    pub bad: u64,
    /// Messages of hosts outside the filter.
    pub filtered: u64,
    /// Messages of new hosts refused because [`Limits::hosts`] were known.
    pub hosts_dropped: u64,
    /// Scores of new models refused by [`Limits::models_per_host`].
    pub models_dropped: u64,
    /// Firing alarms refused by [`Limits::alarms_per_host`] or [`Limits::alarms`].
    pub alarms_dropped: u64,
}

/// What [`Fleet::apply`] did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Bad,
    Filtered,
    Dropped,
}

/// One row of the host table.
#[derive(Clone, Debug)]
pub struct HostView<'a> {
    pub name: &'a str,
    pub status: Status,
    /// Milliseconds since the latest live message; `None`: only retained ones so far.
    pub seen_ago: Option<i64>,
    pub firing: usize,
    pub scores: &'a BTreeMap<String, ModelScore>,
}

/// One row of the firing-alarm table.
#[derive(Clone, Debug)]
pub struct AlarmView<'a> {
    pub host: &'a str,
    pub source: &'a str,
    pub severity: u8,
    /// Milliseconds since it fired, on the host's clock (never negative).
    pub age: i64,
    pub summary: &'a str,
    pub explain: Option<&'a str>,
}

/// The state model. See the module doc.
#[derive(Clone, Debug)]
pub struct Fleet {
    prefix: String,
    filter: Option<HostFilter>,
    limits: Limits,
    hosts: BTreeMap<String, Host>,
    firing: usize,
    counters: Counters,
}

/// The part of `agent/stats` read here: its time.
#[derive(Deserialize)]
struct Stats {
    ts: i64,
}

/// A message's payload, read before any state changes, so a bad one changes nothing.
enum Update<'a> {
    Status(Option<Status>),
    Score(&'a str, ModelScore, i64),
    Alarm(&'a str, Option<Box<Alarm>>),
    Stats(Option<i64>),
}

impl Fleet {
    pub fn new(prefix: &str, filter: Option<HostFilter>, limits: Limits) -> Self {
        Self {
            prefix: prefix.to_owned(),
            filter,
            limits,
            hosts: BTreeMap::new(),
            firing: 0,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn filter(&self) -> Option<&HostFilter> {
        self.filter.as_ref()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hosts known (after the filter).
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Firing alarms of all hosts.
    pub fn firing_count(&self) -> usize {
        self.firing
    }

    /// Applies one message that arrived at `now_ms` (Unix ms, our clock).
    pub fn apply(&mut self, topic: &str, payload: &[u8], retained: bool, now_ms: i64) -> Outcome {
        self.counters.received += 1;
        let outcome = self.apply_inner(topic, payload, retained, now_ms);
        let c = &mut self.counters;
        match outcome {
            Outcome::Applied => {}
            Outcome::Bad => c.bad += 1,
            Outcome::Filtered => c.filtered += 1,
            // Counted where the cause is known.
            Outcome::Dropped => {}
        }
        outcome
    }

    fn apply_inner(&mut self, topic: &str, payload: &[u8], retained: bool, now: i64) -> Outcome {
        let Ok((host, kind)) = topics::parse(&self.prefix, topic) else {
            return Outcome::Bad;
        };
        if !usable_name(host) {
            return Outcome::Bad;
        }
        if self.filter.as_ref().is_some_and(|f| !f.matches(host)) {
            return Outcome::Filtered;
        }
        if payload.len() > MAX_PAYLOAD {
            return Outcome::Bad;
        }
        let Some(update) = read(kind, payload) else {
            return Outcome::Bad;
        };
        // An emptied retained topic says nothing about the host: it creates no entry.
        let clears = matches!(
            update,
            Update::Status(None) | Update::Alarm(_, None) | Update::Stats(None)
        );
        if !self.hosts.contains_key(host) {
            if clears {
                return Outcome::Applied;
            }
            if self.hosts.len() >= self.limits.hosts {
                self.counters.hosts_dropped += 1;
                return Outcome::Dropped;
            }
            self.hosts.insert(host.to_owned(), Host::default());
        }
        let limits = self.limits;
        let total_firing = self.firing;
        let Some(h) = self.hosts.get_mut(host) else {
            return Outcome::Applied;
        };
        if !retained && !clears {
            h.last_seen = Some(now);
        }
        let live_ts = |h: &mut Host, ts: i64| {
            if !retained {
                h.clock_offset = Some(ts.saturating_sub(now));
            }
        };
        match update {
            Update::Status(s) => h.status = s.unwrap_or(Status::Unknown),
            Update::Stats(ts) => {
                if let Some(ts) = ts {
                    live_ts(h, ts);
                }
            }
            Update::Score(model, score, ts) => {
                live_ts(h, ts);
                if let Some(s) = h.scores.get_mut(model) {
                    *s = score;
                } else if h.scores.len() >= limits.models_per_host {
                    self.counters.models_dropped += 1;
                    return Outcome::Dropped;
                } else {
                    h.scores.insert(model.to_owned(), score);
                }
            }
            Update::Alarm(name, alarm) => {
                if let Some(a) = &alarm {
                    live_ts(h, a.ts);
                }
                let Some(a) = alarm.filter(|a| a.state == AlarmState::Firing) else {
                    if h.alarms.remove(name).is_some() {
                        self.firing -= 1;
                    }
                    return Outcome::Applied;
                };
                let id = clean(&a.id, MAX_ID);
                let fired_at = match h.alarms.get(name) {
                    Some(old) if old.id == id => old.fired_at.min(a.ts),
                    _ => a.ts,
                };
                let entry = FiringAlarm {
                    id,
                    source: clean(&a.source, MAX_SOURCE),
                    severity: a.severity,
                    fired_at,
                    summary: clean(&a.summary, MAX_SUMMARY),
                    explain: a.explain.as_deref().map(|e| clean(e, MAX_EXPLAIN)),
                };
                if let Some(old) = h.alarms.get_mut(name) {
                    *old = entry;
                } else if h.alarms.len() >= limits.alarms_per_host || total_firing >= limits.alarms
                {
                    self.counters.alarms_dropped += 1;
                    return Outcome::Dropped;
                } else {
                    h.alarms.insert(name.to_owned(), entry);
                    self.firing += 1;
                }
            }
        }
        Outcome::Applied
    }

    /// Every host, in natural order of names (`sim-2` before `sim-10`).
    pub fn hosts(&self, now_ms: i64) -> Vec<HostView<'_>> {
        let mut rows: Vec<HostView<'_>> = self
            .hosts
            .iter()
            .map(|(name, h)| HostView {
                name,
                status: h.status,
                seen_ago: h.last_seen.map(|t| now_ms.saturating_sub(t).max(0)),
                firing: h.alarms.len(),
                scores: &h.scores,
            })
            .collect();
        rows.sort_by(|a, b| natural_cmp(a.name, b.name));
        rows
    }

    /// Every firing alarm: highest severity first, then the most recent, then by host.
    pub fn firing(&self, now_ms: i64) -> Vec<AlarmView<'_>> {
        let mut rows = Vec::with_capacity(self.firing);
        for (name, h) in &self.hosts {
            let host_now = now_ms.saturating_add(h.clock_offset.unwrap_or(0));
            for a in h.alarms.values() {
                rows.push(AlarmView {
                    host: name,
                    source: &a.source,
                    severity: a.severity,
                    age: host_now.saturating_sub(a.fired_at).max(0),
                    summary: &a.summary,
                    explain: a.explain.as_deref(),
                });
            }
        }
        rows.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.age.cmp(&b.age))
                .then_with(|| natural_cmp(a.host, b.host))
                .then_with(|| a.source.cmp(b.source))
        });
        rows
    }
}

/// Reads a payload for `kind`; `None` when it is bad. Only the subscribed kinds are read.
fn read<'a>(kind: Kind<'a>, payload: &[u8]) -> Option<Update<'a>> {
    match kind {
        Kind::Status => match payload {
            b"online" => Some(Update::Status(Some(Status::Online))),
            b"offline" => Some(Update::Status(Some(Status::Offline))),
            b"" => Some(Update::Status(None)),
            _ => None,
        },
        Kind::Score { model } => {
            if !usable_name(model) {
                return None;
            }
            let s: Score = serde_json::from_slice(payload).ok()?;
            let top = s.dimensions.first().filter(|_| s.anomalous);
            let score = ModelScore {
                score: s.score.filter(|v| v.is_finite()),
                learning: s.learning,
                anomalous: s.anomalous,
                top: top.map(|d| clean(&d.name, MAX_DIMENSION)),
            };
            Some(Update::Score(model, score, s.ts))
        }
        Kind::Alarm { source } => {
            // Rule alarms carry a group after the rule: longer, but as bounded.
            if source.len() > 4 * MAX_NAME || source.chars().any(char::is_control) {
                return None;
            }
            if payload.is_empty() {
                return Some(Update::Alarm(source, None));
            }
            let a: Alarm = serde_json::from_slice(payload).ok()?;
            Some(Update::Alarm(source, Some(Box::new(a))))
        }
        Kind::AgentStats => {
            if payload.is_empty() {
                return Some(Update::Stats(None));
            }
            let s: Stats = serde_json::from_slice(payload).ok()?;
            Some(Update::Stats(Some(s.ts)))
        }
        Kind::Metrics
        | Kind::SimTruth
        | Kind::Rules
        | Kind::RulesError
        | Kind::Relearn
        | Kind::RelearnResult => None,
    }
}

fn usable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(char::is_control)
}

/// `s` with control characters replaced by `?` and cut to `max` characters (`…` marks a
/// cut).
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Orders names as people count: digit runs by value (`sim-2` < `sim-10`), the rest by
/// character.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if o != Ordering::Equal {
                    return o;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// A compact age: `0s`, `42s`, `7m`, `3h`, `2d`.
pub fn format_age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// An alarm's summary as shown: its explain line after it, when it has one.
pub fn format_summary(summary: &str, explain: Option<&str>) -> String {
    match explain.filter(|e| !e.is_empty()) {
        Some(e) => format!("{summary}; {e}"),
        None => summary.to_owned(),
    }
}

/// A score as shown: two decimals, `-` while learning.
pub fn format_score(s: &ModelScore) -> String {
    match s.score {
        Some(v) if !s.learning => format!("{v:.2}"),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_457_400_000;

    fn fleet() -> Fleet {
        Fleet::new("lookout", None, Limits::default())
    }

    fn score(host: &str, model: &str, v: f64, anomalous: bool, ts: i64) -> (String, Vec<u8>) {
        let p = serde_json::json!({"ts": ts, "host": host, "model": model, "score": v,
            "learning": false, "anomalous": anomalous, "level": 0, "threshold": 1.75,
            "alarm": false, "labels": {}});
        (
            format!("lookout/{host}/scores/{model}"),
            p.to_string().into_bytes(),
        )
    }

    fn alarm(host: &str, source: &str, state: &str, sev: u8, ts: i64) -> (String, Vec<u8>) {
        let p = serde_json::json!({"id": format!("{host}:{source}:{}", ts - 1000),
            "host": host, "source": source, "state": state, "severity": sev, "ts": ts,
            "started_at": ts - 1000, "score": 4.1, "threshold": 2.0,
            "summary": format!("{source}: anomaly on {host}"), "labels": {}});
        (
            format!("lookout/{host}/alarms/{source}"),
            p.to_string().into_bytes(),
        )
    }

    fn apply(f: &mut Fleet, (t, p): (String, Vec<u8>), retained: bool, now: i64) -> Outcome {
        f.apply(&t, &p, retained, now)
    }

    #[test]
    fn status_scores_and_alarms_build_the_host_table() {
        let mut f = fleet();
        f.apply("lookout/sim-1/status", b"online", true, NOW);
        f.apply("lookout/sim-2/status", b"offline", true, NOW);
        apply(&mut f, score("sim-1", "cpu", 0.42, false, NOW), false, NOW);
        apply(&mut f, score("sim-1", "mem", 1.3, true, NOW), false, NOW);
        apply(&mut f, alarm("sim-1", "mem", "firing", 3, NOW), true, NOW);

        let hosts = f.hosts(NOW + 2000);
        assert_eq!(hosts.len(), 2);
        let h = &hosts[0];
        assert_eq!((h.name, h.status, h.firing), ("sim-1", Status::Online, 1));
        assert_eq!(h.seen_ago, Some(2000), "live scores count as seen");
        assert_eq!(h.scores.len(), 2);
        assert!(h.scores["mem"].anomalous && !h.scores["cpu"].anomalous);
        assert_eq!(format_score(&h.scores["cpu"]), "0.42");
        let h = &hosts[1];
        assert_eq!((h.name, h.status, h.firing), ("sim-2", Status::Offline, 0));
        assert_eq!(h.seen_ago, None, "a retained status is not a sign of life");

        let alarms = f.firing(NOW + 5000);
        assert_eq!(alarms.len(), 1);
        let a = &alarms[0];
        assert_eq!((a.host, a.source, a.severity), ("sim-1", "mem", 3));
        assert_eq!(a.age, 5000);
        assert_eq!(a.summary, "mem: anomaly on sim-1");
        assert_eq!(f.counters().bad, 0);
    }

    #[test]
    fn a_resolved_or_emptied_alarm_leaves_the_firing_pane() {
        let mut f = fleet();
        apply(&mut f, alarm("h", "cpu", "firing", 2, NOW), true, NOW);
        apply(&mut f, alarm("h", "mem", "firing", 1, NOW), true, NOW);
        assert_eq!(f.firing_count(), 2);
        apply(
            &mut f,
            alarm("h", "cpu", "resolved", 2, NOW + 10),
            false,
            NOW,
        );
        assert_eq!(f.firing_count(), 1);
        f.apply("lookout/h/alarms/mem", b"", true, NOW);
        assert_eq!(f.firing_count(), 0);
        assert!(f.firing(NOW).is_empty());
        assert_eq!(f.hosts(NOW)[0].firing, 0);
        // Emptied topics of unknown hosts create nothing.
        f.apply("lookout/ghost/alarms/cpu", b"", true, NOW);
        f.apply("lookout/ghost/status", b"", true, NOW);
        assert_eq!(f.host_count(), 1);
    }

    #[test]
    fn a_level_change_keeps_the_time_the_episode_fired() {
        let mut f = fleet();
        apply(&mut f, alarm("h", "cpu", "firing", 1, NOW), true, NOW);
        let mut later = alarm("h", "cpu", "firing", 3, NOW + 60_000);
        // Same episode id as the first.
        later.1 = String::from_utf8(later.1)
            .unwrap()
            .replace(
                &format!("h:cpu:{}", NOW + 59_000),
                &format!("h:cpu:{}", NOW - 1000),
            )
            .into_bytes();
        apply(&mut f, later, false, NOW);
        let a = &f.firing(NOW + 90_000)[0];
        assert_eq!(a.severity, 3);
        // The host's clock runs 60 s ahead of ours (from the live alarm's ts).
        assert_eq!(a.age, 150_000);
    }

    #[test]
    fn ages_follow_the_hosts_clock_when_it_differs_from_ours() {
        let mut f = fleet();
        // A simulated host whose time runs an hour ahead.
        let ahead = NOW + 3_600_000;
        apply(
            &mut f,
            alarm("sim-1", "cpu", "firing", 2, ahead - 30_000),
            true,
            NOW,
        );
        apply(&mut f, score("sim-1", "cpu", 3.0, true, ahead), false, NOW);
        assert_eq!(f.firing(NOW)[0].age, 30_000);
        // Without a live message, our clock; a future time gives 0, never negative.
        apply(&mut f, alarm("sim-2", "cpu", "firing", 2, ahead), true, NOW);
        let a = f
            .firing(NOW)
            .into_iter()
            .find(|a| a.host == "sim-2")
            .unwrap();
        assert_eq!(a.age, 0);
    }

    #[test]
    fn firing_alarms_are_ordered_by_severity_then_recency() {
        let mut f = fleet();
        apply(
            &mut f,
            alarm("a", "cpu", "firing", 1, NOW - 1000),
            true,
            NOW,
        );
        apply(
            &mut f,
            alarm("b", "cpu", "firing", 4, NOW - 9000),
            true,
            NOW,
        );
        apply(
            &mut f,
            alarm("c", "cpu", "firing", 4, NOW - 2000),
            true,
            NOW,
        );
        let order: Vec<&str> = f.firing(NOW).iter().map(|a| a.host).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }

    #[test]
    fn bad_payloads_and_topics_are_counted_and_change_nothing() {
        let mut f = fleet();
        for (topic, payload) in [
            ("lookout/h/status", &b"maybe"[..]),
            ("lookout/h/scores/cpu", b"{not json"),
            ("lookout/h/scores/cpu", b"{\"ts\": 1}"),
            ("lookout/h/alarms/cpu", b"[1,2]"),
            ("lookout/h/alarms/cpu", &[0xff, 0xfe][..]),
            ("lookout/h/agent/stats", b"null"),
            ("lookout/h/metrics", b"{}"),
            ("other/h/status", b"online"),
            ("lookout/h/whatever", b"online"),
            ("lookout/h\x1b[2J/status", b"online"),
        ] {
            assert_eq!(f.apply(topic, payload, false, NOW), Outcome::Bad, "{topic}");
        }
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            f.apply("lookout/h/agent/stats", &big, false, NOW),
            Outcome::Bad
        );
        assert_eq!(f.counters().bad, 11);
        assert_eq!(f.counters().received, 11);
        assert_eq!(f.host_count(), 0, "a bad message creates no host");
    }

    #[test]
    fn texts_lose_control_characters_and_are_cut() {
        let mut f = fleet();
        let p = serde_json::json!({"id": "x", "host": "h", "source": "cpu\u{1b}[31m",
            "state": "firing", "severity": 2, "ts": NOW, "started_at": NOW, "score": 1.0,
            "threshold": 1.0, "summary": format!("evil\u{1b}]0;title\u{7}{}", "x".repeat(1000)),
            "labels": {}});
        f.apply("lookout/h/alarms/cpu", p.to_string().as_bytes(), true, NOW);
        let a = &f.firing(NOW)[0];
        assert_eq!(a.source, "cpu?[31m");
        assert!(a.summary.starts_with("evil?]0;title?x"));
        assert!(!a.summary.chars().any(char::is_control));
        assert_eq!(a.summary.chars().count(), MAX_SUMMARY);
        assert!(a.summary.ends_with('…'));
    }

    #[test]
    fn the_filter_keeps_only_matching_hosts_and_counts_the_rest() {
        let filter = HostFilter::new("sim-?").unwrap();
        let mut f = Fleet::new("lookout", Some(filter), Limits::default());
        for h in ["sim-1", "sim-2", "sim-10", "edge-1"] {
            f.apply(&format!("lookout/{h}/status"), b"online", true, NOW);
        }
        let names: Vec<&str> = f.hosts(NOW).iter().map(|h| h.name).collect();
        assert_eq!(names, ["sim-1", "sim-2"]);
        assert_eq!(f.counters().filtered, 2);
    }

    #[test]
    fn globs_match_like_a_shell_and_literal_globs_name_one_host() {
        let f = HostFilter::new("edge-*").unwrap();
        assert!(f.matches("edge-1") && f.matches("edge-") && !f.matches("xedge-1"));
        assert_eq!(f.literal(), None);
        let f = HostFilter::new("rack-[12]").unwrap();
        assert!(f.matches("rack-1") && !f.matches("rack-3"));
        assert_eq!(HostFilter::new("sim-1").unwrap().literal(), Some("sim-1"));
        assert_eq!(HostFilter::new("a+b").unwrap().literal(), None);
        assert!(HostFilter::new("rack-[").is_err());
        assert!(HostFilter::new("").is_err());
    }

    #[test]
    fn hosts_beyond_the_cap_are_dropped_and_counted() {
        let limits = Limits {
            hosts: 2,
            ..Limits::default()
        };
        let mut f = Fleet::new("lookout", None, limits);
        for h in ["a", "b", "c", "d"] {
            f.apply(&format!("lookout/{h}/status"), b"online", true, NOW);
        }
        // Known hosts still update.
        f.apply("lookout/a/status", b"offline", false, NOW);
        assert_eq!(f.host_count(), 2);
        assert_eq!(f.counters().hosts_dropped, 2);
        assert_eq!(f.hosts(NOW)[0].status, Status::Offline);
    }

    #[test]
    fn models_and_alarms_beyond_their_caps_are_dropped_and_counted() {
        let limits = Limits {
            hosts: 10,
            models_per_host: 2,
            alarms_per_host: 2,
            alarms: 3,
        };
        let mut f = Fleet::new("lookout", None, limits);
        for m in ["a", "b", "c"] {
            apply(&mut f, score("h", m, 0.1, false, NOW), false, NOW);
        }
        assert_eq!(f.hosts(NOW)[0].scores.len(), 2);
        assert_eq!(f.counters().models_dropped, 1);
        for s in ["a", "b", "c"] {
            apply(&mut f, alarm("h", s, "firing", 2, NOW), true, NOW);
        }
        assert_eq!(f.firing_count(), 2, "per host");
        for s in ["a", "b"] {
            apply(&mut f, alarm("g", s, "firing", 2, NOW), true, NOW);
        }
        assert_eq!(f.firing_count(), 3, "in all");
        assert_eq!(f.counters().alarms_dropped, 2);
        // A resolved alarm makes room again.
        apply(&mut f, alarm("h", "a", "resolved", 2, NOW), false, NOW);
        apply(&mut f, alarm("g", "b", "firing", 2, NOW), true, NOW);
        assert_eq!(f.firing_count(), 3);
    }

    #[test]
    fn rule_alarms_are_kept_per_group_topic() {
        let mut f = fleet();
        for dev in ["d1", "d2"] {
            let p = serde_json::json!({"id": format!("h:rule/r/{dev}:1"), "host": "h",
                "source": "rule/r", "state": "firing", "severity": 2, "ts": NOW,
                "started_at": NOW, "score": 96.5, "threshold": 90.0,
                "summary": format!("hot on {dev}"), "labels": {}});
            f.apply(
                &format!("lookout/h/alarms/rule/r/{dev}"),
                p.to_string().as_bytes(),
                true,
                NOW,
            );
        }
        let rows = f.firing(NOW);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|a| a.source == "rule/r"));
    }

    #[test]
    fn names_sort_as_people_count_and_ages_are_compact() {
        let mut v = vec!["sim-10", "sim-2", "edge-01", "edge-1a", "sim-1", "a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a", "edge-01", "edge-1a", "sim-1", "sim-2", "sim-10"]);
        assert_eq!(format_age(-5), "0s");
        assert_eq!(format_age(59_999), "59s");
        assert_eq!(format_age(61_000), "1m");
        assert_eq!(format_age(7_200_000), "2h");
        assert_eq!(format_age(3 * 86_400_000), "3d");
    }
}
