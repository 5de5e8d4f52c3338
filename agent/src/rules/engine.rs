//! The evaluator: events go into each matching rule's open window; when time passes a
//! window's end the window closes, every group whose statistics meet its rule becomes an
//! [`Output`] in the seed's output shape, and groups that start or stop matching become
//! [`Change`]s, from which the agent makes one firing alarm per episode and its
//! resolution.
//!
//! Time is event time. Each [`Engine::push`] first moves the engine's clock (its
//! watermark) to the event's time, closing what ended; [`Engine::close_until`] moves it
//! without an event, which is how the agent closes windows on its wall clock when events
//! stop. The clock never goes back. Each rule thus has exactly one open window, the one
//! holding the watermark, and an event older than it is late: counted and skipped, as
//! the window it belonged to has already been decided.
//!
//! Memory is bounded by rules × `groups_per_window`: the firing state of a rule is at most
//! the groups of its last window.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::document::{DIMS, Rule, RuleId, RuleSet};
use super::event::Event;
use super::time::format_rfc3339_ms;
use super::window::{Aggregate, GroupKey, Window};

/// Bounds on what the engine holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open groups per rule and window; events of further groups in that window are
    /// dropped and counted in [`Stats::over_cap`].
    pub groups_per_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            groups_per_window: 1024,
        }
    }
}

/// What happened to the events pushed so far. An event is counted once in each
/// category that applies: one that one rule takes and another finds late is in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events at least one rule took into a window.
    pub accepted: u64,
    /// Events no rule selects (by device, metric and filters).
    pub unmatched: u64,
    /// Events older than the open window of a rule that selects them.
    pub late: u64,
    /// Events refused because their group would exceed `groups_per_window`.
    pub over_cap: u64,
    /// Events that could not be evaluated at all (see [`Engine::record_bad`]).
    pub bad: u64,
}

/// A window whose statistics met its rule: the seed's output event, plus `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The window's end, Unix milliseconds (ASA's `System.Timestamp`).
    pub time: i64,
    pub device: String,
    pub rule_id: RuleId,
    pub metric: String,
    pub alert: String,
    pub aggregate: Aggregate,
    pub dims: [Option<String>; DIMS],
}

impl Output {
    fn new(rule: &Rule, key: &GroupKey, aggregate: Aggregate, time: i64) -> Self {
        Self {
            time,
            device: key.device.clone(),
            rule_id: rule.id.clone(),
            metric: rule.metric.clone(),
            alert: rule.alert.clone(),
            aggregate,
            dims: key.dims.clone(),
        }
    }

    /// One line of JSON, as `test-rules` prints it.
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

const DIM_FIELDS: [&str; DIMS] = ["dim0", "dim1", "dim2", "dim3", "dim4"];

/// The seed's field names and order (`time`, `deviceid`, `ruleid`, `metric`, `alert`,
/// `avg`, `min`, `max`, `dim0`..`dim4`), then `count`, which COUNT rules need and the
/// seed's query did not compute. `time` is RFC 3339 UTC with milliseconds.
impl Serialize for Output {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Output", 14)?;
        m.serialize_field("time", &format_rfc3339_ms(self.time))?;
        m.serialize_field("deviceid", &self.device)?;
        m.serialize_field("ruleid", &self.rule_id)?;
        m.serialize_field("metric", &self.metric)?;
        m.serialize_field("alert", &self.alert)?;
        m.serialize_field("avg", &self.aggregate.avg())?;
        m.serialize_field("min", &self.aggregate.min)?;
        m.serialize_field("max", &self.aggregate.max)?;
        for (name, dim) in DIM_FIELDS.into_iter().zip(&self.dims) {
            m.serialize_field(name, dim)?;
        }
        m.serialize_field("count", &self.aggregate.count)?;
        m.end()
    }
}

/// What one alarm is about: a rule, a device and the rule's included dims.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmKey {
    pub rule: RuleId,
    pub group: GroupKey,
}

/// Why a firing alarm stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Its group's window closed with statistics that no longer meet the rule.
    NoLongerMatches,
    /// A window closed without a single event of its group.
    NoData,
    /// A new document dropped the rule.
    RuleRemoved,
    /// A new document kept the ruleId but changed which events it selects or how it
    /// groups them (device, metric, filters, included dims, window): a different rule.
    RuleChanged,
}

/// An alarm starting or ending. Windows that go on matching produce outputs but no
/// change, so consecutive matching windows are one episode.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Fired {
        rule: Arc<Rule>,
        key: AlarmKey,
        /// The end of the first matching window: the episode's start and its identity.
        started_at: i64,
        /// Boxed: an output is large next to the other variant.
        output: Box<Output>,
    },
    Resolved {
        rule: Arc<Rule>,
        key: AlarmKey,
        started_at: i64,
        /// The end of the first window that did not match, or the engine's time when a
        /// new document removed or changed the rule.
        at: i64,
        /// That window's statistics, when its group had events in it.
        aggregate: Option<Aggregate>,
        cause: Cause,
    },
}

/// What closing windows produced, outputs ordered by time (then document order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Closed {
    pub outputs: Vec<Output>,
    pub changes: Vec<Change>,
}

impl Closed {
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.changes.is_empty()
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    /// A rule added by `replace` takes events from its first whole window on; before
    /// that, events are simply not its business (not late).
    active_from: i64,
    /// `None` until the engine has seen a time.
    window: Option<Window>,
    /// Groups whose alarm is firing, with the episode's start.
    firing: BTreeMap<GroupKey, i64>,
}

impl RuleState {
    fn new(rule: Arc<Rule>, watermark: Option<i64>, cap: usize) -> Self {
        let len = rule.window_ms();
        let (active_from, window) = match watermark {
            None => (i64::MIN, None),
            Some(wm) => {
                let current = Window::aligned(wm, len);
                let next = if current == wm {
                    wm
                } else {
                    current.saturating_add(len)
                };
                (next, Some(Window::new(next, len, cap)))
            }
        };
        Self {
            rule,
            active_from,
            window,
            firing: BTreeMap::new(),
        }
    }

    fn alarm_key(&self, group: GroupKey) -> AlarmKey {
        AlarmKey {
            rule: self.rule.id.clone(),
            group,
        }
    }

    /// Closes the open window if it ended at or before `ts`, and opens the one holding
    /// `ts`.
    fn advance(&mut self, ts: i64, cap: usize, out: &mut Closed) {
        let len = self.rule.window_ms();
        let Some(window) = &mut self.window else {
            self.window = Some(Window::new(Window::aligned(ts, len), len, cap));
            return;
        };
        let end = window.end();
        if end > ts {
            return;
        }
        let groups = window.roll(Window::aligned(ts, len));
        let rule = Arc::clone(&self.rule);
        let mut was_firing = std::mem::take(&mut self.firing);
        for (group, agg) in groups {
            if rule.operator.matches(&agg, rule.value) {
                let output = Output::new(&rule, &group, agg, end);
                match was_firing.remove(&group) {
                    Some(started_at) => {
                        self.firing.insert(group, started_at);
                    }
                    None => {
                        self.firing.insert(group.clone(), end);
                        out.changes.push(Change::Fired {
                            rule: Arc::clone(&rule),
                            key: self.alarm_key(group),
                            started_at: end,
                            output: Box::new(output.clone()),
                        });
                    }
                }
                out.outputs.push(output);
            } else if let Some(started_at) = was_firing.remove(&group) {
                out.changes.push(Change::Resolved {
                    rule: Arc::clone(&rule),
                    key: self.alarm_key(group),
                    started_at,
                    at: end,
                    aggregate: Some(agg),
                    cause: Cause::NoLongerMatches,
                });
            }
        }
        // Firing groups without a single event in the window that just closed.
        self.resolve(was_firing, end, Cause::NoData, out);
        // And if a whole window has passed since without any event, nothing in it
        // matched either.
        let next_end = end.saturating_add(len);
        if ts >= next_end {
            let still = std::mem::take(&mut self.firing);
            self.resolve(still, next_end, Cause::NoData, out);
        }
    }

    fn resolve(&self, groups: BTreeMap<GroupKey, i64>, at: i64, cause: Cause, out: &mut Closed) {
        for (group, started_at) in groups {
            out.changes.push(Change::Resolved {
                rule: Arc::clone(&self.rule),
                key: self.alarm_key(group),
                started_at,
                at,
                aggregate: None,
                cause,
            });
        }
    }
}

/// Rules plus their open windows and alarm state. See the module docs for time.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleState>,
    limits: Limits,
    watermark: Option<i64>,
    stats: Stats,
}

impl Engine {
    pub fn new(rules: RuleSet, limits: Limits) -> Self {
        let limits = Limits {
            groups_per_window: limits.groups_per_window.max(1),
        };
        Self {
            rules: rules
                .rules()
                .iter()
                .map(|r| RuleState::new(Arc::clone(r), None, limits.groups_per_window))
                .collect(),
            limits,
            watermark: None,
            stats: Stats::default(),
        }
    }

    /// Moves the clock to the event's time (closing what ended before it) and adds the
    /// event to every rule that selects it.
    pub fn push(&mut self, event: &Event) -> Closed {
        if !event.value.is_finite() {
            self.record_bad();
            return Closed::default();
        }
        let closed = self.close_until(event.time);
        let (mut selected, mut accepted, mut late, mut over_cap) = (false, false, false, false);
        for st in &mut self.rules {
            if !st.rule.selects(event) {
                continue;
            }
            selected = true;
            if event.time < st.active_from {
                continue;
            }
            let Some(window) = &mut st.window else {
                continue;
            };
            if event.time < window.start() {
                late = true;
                continue;
            }
            match window.add(GroupKey::of(&st.rule, event), event.value) {
                Ok(()) => accepted = true,
                Err(_) => over_cap = true,
            }
        }
        let s = &mut self.stats;
        s.unmatched += u64::from(!selected);
        s.accepted += u64::from(accepted);
        s.late += u64::from(late);
        s.over_cap += u64::from(over_cap);
        if late || over_cap {
            tracing::debug!(
                device = %event.device, metric = %event.metric, time = event.time, late, over_cap,
                "rules: event skipped"
            );
        }
        closed
    }

    /// Moves the clock to `ts` and closes every window that ended at or before it (an
    /// event at exactly a window's end belongs to the next window). Earlier times change
    /// nothing: the clock never goes back.
    pub fn close_until(&mut self, ts: i64) -> Closed {
        let mut out = Closed::default();
        if self.watermark.is_some_and(|wm| ts <= wm) {
            return out;
        }
        self.watermark = Some(ts);
        let cap = self.limits.groups_per_window;
        for st in &mut self.rules {
            st.advance(ts, cap, &mut out);
        }
        out.outputs.sort_by_key(|o| o.time);
        out
    }

    /// Closes every open window as if time had reached its end: the end of an offline
    /// run, where no later event will come to close them.
    pub fn finish(&mut self) -> Closed {
        let mut out = Closed::default();
        let cap = self.limits.groups_per_window;
        let mut latest = self.watermark;
        for st in &mut self.rules {
            let Some(end) = st.window.as_ref().map(Window::end) else {
                continue;
            };
            st.advance(end, cap, &mut out);
            latest = latest.max(Some(end));
        }
        self.watermark = latest;
        out.outputs.sort_by_key(|o| o.time);
        out
    }

    /// Puts a new document in force. Rules are matched to the old ones by `ruleId`:
    /// - a rule that selects and groups events as before keeps its open window and its
    ///   firing alarms; its new operator, value and alert name decide that window when
    ///   it closes, which is the next window boundary;
    /// - a removed rule's open window is dropped and its firing alarms resolve now
    ///   ([`Cause::RuleRemoved`]); a rule whose selection changed is treated as removed
    ///   ([`Cause::RuleChanged`]) and added again;
    /// - an added rule starts with the next whole window, so that its first verdict is
    ///   never on a partial window.
    ///
    /// Returns the resolutions, at the engine's current time.
    pub fn replace(&mut self, rules: RuleSet) -> Vec<Change> {
        let cap = self.limits.groups_per_window;
        let at = self.watermark.unwrap_or_default();
        let mut old: Vec<Option<RuleState>> = std::mem::take(&mut self.rules)
            .into_iter()
            .map(Some)
            .collect();
        let index: BTreeMap<RuleId, usize> = old
            .iter()
            .enumerate()
            .filter_map(|(i, st)| st.as_ref().map(|st| (st.rule.id.clone(), i)))
            .collect();
        let mut out = Closed::default();
        for rule in rules.rules() {
            let previous = index.get(&rule.id).and_then(|&i| old[i].take());
            let state = match previous {
                Some(mut st) if st.rule.same_selection(rule) => {
                    st.rule = Arc::clone(rule);
                    st
                }
                Some(mut st) => {
                    let firing = std::mem::take(&mut st.firing);
                    st.resolve(firing, at, Cause::RuleChanged, &mut out);
                    RuleState::new(Arc::clone(rule), self.watermark, cap)
                }
                None => RuleState::new(Arc::clone(rule), self.watermark, cap),
            };
            self.rules.push(state);
        }
        for mut st in old.into_iter().flatten() {
            let firing = std::mem::take(&mut st.firing);
            st.resolve(firing, at, Cause::RuleRemoved, &mut out);
        }
        out.changes
    }

    /// Counts an event that could not be evaluated at all (unreadable, no metric, a value
    /// that is not a finite number), so that one place holds every count.
    pub fn record_bad(&mut self) {
        self.stats.bad += 1;
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The engine's clock: the latest event time or `close_until` time, if any.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter().map(|st| &st.rule)
    }

    /// Every firing alarm with its episode's start: what the agent re-publishes after a
    /// reconnect.
    pub fn firing(&self) -> impl Iterator<Item = (&Arc<Rule>, &GroupKey, i64)> {
        self.rules
            .iter()
            .flat_map(|st| st.firing.iter().map(move |(g, &t)| (&st.rule, g, t)))
    }

    /// Open groups over all rules' current windows.
    pub fn open_groups(&self) -> usize {
        self.rules
            .iter()
            .filter_map(|st| st.window.as_ref())
            .map(Window::groups)
            .sum()
    }
}
