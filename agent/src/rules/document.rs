//! The rules document: threshold rules kept as reference data, in the shape of Azure
//! Stream Analytics' example (seed 002), parsed and validated into a [`RuleSet`] in one
//! step. A document is one rule object or an array of them; a document with any wrong
//! rule is rejected as a whole, with an error naming the rule (index and `ruleId`) and the
//! field, so that the rules in force are always a set someone wrote on purpose.
//!
//! Fields are read by hand from the JSON value rather than through a derived
//! `Deserialize`, because serde's messages name neither the rule nor (for type errors)
//! the field, and those are what a person fixing the file needs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::event::Event;
use super::glob;
use super::window::Aggregate;
use crate::Error;

/// Dimensions and filters are numbered `"0"` to `"4"`, as in the seed.
pub const DIMS: usize = 5;

/// The seed's `TumblingWindow(second, 60)`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// Past this a document is more likely a mistake (or an attack on a small device's
/// memory) than a rule set.
pub const MAX_RULES: usize = 10_000;

/// Largest document taken, from a file or a topic: 10,000 rules as people write them take
/// under 3 MB. Parsing holds the whole document as a JSON tree, several times its size,
/// so a larger one is refused before it is parsed; a file is read no further than this.
/// (Over MQTT the link's 4 MiB packet limit stops larger ones first.)
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// A rule's alarm grade when its document gives none: the level the shipped notifier
/// examples route by default, since a rule is a threshold someone chose on purpose.
pub const DEFAULT_SEVERITY: u8 = 2;

const FIELDS: [&str; 10] = [
    "ruleId",
    "deviceId",
    "metricName",
    "alertName",
    "operator",
    "value",
    "includeDim",
    "filter",
    "window",
    "severity",
];

/// A rule's identity: a JSON number or string, echoed in output events as written. It
/// names the rule across document versions (see `Engine::replace`) and in alarms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    Number(i64),
    Text(String),
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleId::Number(n) => write!(f, "{n}"),
            RuleId::Text(s) => f.write_str(s),
        }
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RuleId::Number(n) => s.serialize_i64(*n),
            RuleId::Text(t) => s.serialize_str(t),
        }
    }
}

/// What an operator aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Avg,
    Min,
    Max,
    Count,
}

/// How it compares; both include equality, as the seed's `>=` and `<=` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    GreaterOrEqual,
    EqualOrLess,
}

impl Cmp {
    pub fn holds(self, observed: f64, value: f64) -> bool {
        match self {
            Cmp::GreaterOrEqual => observed >= value,
            Cmp::EqualOrLess => observed <= value,
        }
    }
}

/// `AVGGREATEROREQUAL` and its seven siblings: a statistic and a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operator {
    pub stat: Stat,
    pub cmp: Cmp,
}

impl Operator {
    pub const ALL: [Operator; 8] = {
        use Cmp::*;
        use Stat::*;
        [
            Operator::new(Avg, GreaterOrEqual),
            Operator::new(Avg, EqualOrLess),
            Operator::new(Min, GreaterOrEqual),
            Operator::new(Min, EqualOrLess),
            Operator::new(Max, GreaterOrEqual),
            Operator::new(Max, EqualOrLess),
            Operator::new(Count, GreaterOrEqual),
            Operator::new(Count, EqualOrLess),
        ]
    };

    pub const fn new(stat: Stat, cmp: Cmp) -> Self {
        Self { stat, cmp }
    }

    pub fn name(self) -> &'static str {
        match (self.stat, self.cmp) {
            (Stat::Avg, Cmp::GreaterOrEqual) => "AVGGREATEROREQUAL",
            (Stat::Avg, Cmp::EqualOrLess) => "AVGEQUALORLESS",
            (Stat::Min, Cmp::GreaterOrEqual) => "MINGREATEROREQUAL",
            (Stat::Min, Cmp::EqualOrLess) => "MINEQUALORLESS",
            (Stat::Max, Cmp::GreaterOrEqual) => "MAXGREATEROREQUAL",
            (Stat::Max, Cmp::EqualOrLess) => "MAXEQUALORLESS",
            (Stat::Count, Cmp::GreaterOrEqual) => "COUNTGREATEROREQUAL",
            (Stat::Count, Cmp::EqualOrLess) => "COUNTEQUALORLESS",
        }
    }

    /// By name, ignoring case (`avgGreaterOrEqual` reads as well as the seed's capitals).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.name().eq_ignore_ascii_case(name))
    }

    /// Whether a window with these statistics raises the alarm of a rule with `value`.
    pub fn matches(self, agg: &Aggregate, value: f64) -> bool {
        self.cmp.holds(agg.stat(self.stat), value)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rule's `deviceId`: one host's name, or a glob (`edge-*`, `sensor-??`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceMatch {
    Exact(String),
    Glob(String),
}

impl DeviceMatch {
    fn new(pattern: String) -> Self {
        if glob::is_glob(&pattern) {
            DeviceMatch::Glob(pattern)
        } else {
            DeviceMatch::Exact(pattern)
        }
    }

    pub fn matches(&self, device: &str) -> bool {
        match self {
            DeviceMatch::Exact(name) => name == device,
            DeviceMatch::Glob(pattern) => glob::matches(pattern, device),
        }
    }

    pub fn pattern(&self) -> &str {
        match self {
            DeviceMatch::Exact(s) | DeviceMatch::Glob(s) => s,
        }
    }
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub id: RuleId,
    pub device: DeviceMatch,
    pub metric: String,
    pub alert: String,
    pub operator: Operator,
    pub value: f64,
    /// Which event dimensions become output dims (and split groups).
    pub include_dim: [bool; DIMS],
    /// `Some(v)`: only events whose filter of that number has value `v`.
    pub filter: [Option<String>; DIMS],
    pub window: Duration,
    /// The graded-alarm level (1 notice to 4 critical) of this rule's alarms.
    pub severity: u8,
}

impl Rule {
    /// The window in milliseconds, the unit of every time in the engine; validation keeps
    /// it between 1 s and 7 days, so it fits.
    pub fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// The seed's join and WHERE clause: same device, same metric name, and every
    /// non-empty filter equal to the event's filter of that number (an event without that
    /// filter does not pass).
    pub fn selects(&self, event: &Event) -> bool {
        self.metric == event.metric
            && self.device.matches(&event.device)
            && self
                .filter
                .iter()
                .zip(&event.filters)
                .all(|(want, have)| want.is_none() || want == have)
    }

    /// Whether two versions of a rule put the same events into the same groups, so that
    /// a window opened under one can be finished under the other. Operator, value and
    /// alert name may differ: they only matter when the window closes.
    pub fn same_selection(&self, other: &Rule) -> bool {
        self.device == other.device
            && self.metric == other.metric
            && self.include_dim == other.include_dim
            && self.filter == other.filter
            && self.window == other.window
    }
}

/// A validated rules document, in document order. Cheap to clone: rules are shared, so
/// the agent can hand a new set from its reader to the engine without copying.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Reads and parses a file; errors name the file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_DOCUMENT_BYTES as u64 + 1).read_to_end(&mut text))
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses a document; `origin` (a path, a topic) prefixes every error.
    pub fn parse(origin: &str, json: impl AsRef<[u8]>) -> Result<Self, Error> {
        let doc_err = |message: String| Error::RulesDocument {
            origin: origin.to_owned(),
            message,
        };
        let json = json.as_ref();
        if json.len() > MAX_DOCUMENT_BYTES {
            return Err(doc_err(format!(
                "over {MAX_DOCUMENT_BYTES} bytes; a document of at most {MAX_RULES} rules fits in less"
            )));
        }
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(doc_err(
                "empty document; write [] for a document without rules".into(),
            ));
        }
        let value: Value =
            serde_json::from_slice(json).map_err(|e| doc_err(format!("not JSON: {e}")))?;
        let rules = match &value {
            Value::Array(items) => {
                if items.len() > MAX_RULES {
                    return Err(doc_err(format!(
                        "{} rules; at most {MAX_RULES} are allowed",
                        items.len()
                    )));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse_rule(origin, Some(i), item))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Value::Object(_) => vec![parse_rule(origin, None, &value)?],
            _ => {
                return Err(doc_err(
                    "expected a rule (a JSON object) or an array of rules".into(),
                ));
            }
        };
        let mut seen: BTreeMap<&RuleId, usize> = BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(first) = seen.insert(&rule.id, i) {
                return Err(Error::Rule {
                    origin: origin.to_owned(),
                    rule: label(Some(i), Some(&rule.id)),
                    field: "ruleId".into(),
                    message: format!(
                        "rules[{first}] has the same ruleId; a ruleId names one rule (its alarms, and the rule across document versions)"
                    ),
                });
            }
        }
        Ok(Self {
            rules: rules.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// `rules[2] (ruleId 1234)`, `rules[2]`, `rule (ruleId 1234)` or `rule`.
fn label(index: Option<usize>, id: Option<&RuleId>) -> String {
    let head = match index {
        Some(i) => format!("rules[{i}]"),
        None => "rule".to_owned(),
    };
    match id {
        Some(RuleId::Text(t)) => format!("{head} (ruleId {t:?})"),
        Some(id) => format!("{head} (ruleId {id})"),
        None => head,
    }
}

fn parse_rule(origin: &str, index: Option<usize>, value: &Value) -> Result<Rule, Error> {
    let fail = |id: Option<&RuleId>, field: &str, message: String| Error::Rule {
        origin: origin.to_owned(),
        rule: label(index, id),
        field: field.to_owned(),
        message,
    };
    let Some(obj) = value.as_object() else {
        return Err(fail(None, "(rule)", "expected a JSON object".into()));
    };
    // The id first, so that every later error can name the rule by it.
    let id = parse_id(obj).map_err(|m| fail(None, "ruleId", m))?;
    let err = |field: &str, message: String| fail(Some(&id), field, message);
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(
            unknown,
            format!("unknown field; a rule has {}", FIELDS.join(", ")),
        ));
    }
    let device = DeviceMatch::new(required(obj, "deviceId", &err, parse_text)?);
    let metric = required(obj, "metricName", &err, parse_text)?;
    let alert = required(obj, "alertName", &err, parse_text)?;
    let operator = required(obj, "operator", &err, parse_operator)?;
    let value = required(obj, "value", &err, parse_number)?;
    if operator.stat == Stat::Count && value < 0.0 {
        return Err(err(
            "value",
            format!("{value} is below 0, and a {operator} rule counts events; write 0 or more"),
        ));
    }
    let include_dim = numbered(obj, "includeDim", &err, parse_flag)?.map(|b| b.unwrap_or(false));
    let filter = numbered(obj, "filter", &err, parse_filter)?.map(Option::flatten);
    let window = optional(obj, "window", &err, parse_window)?.unwrap_or(DEFAULT_WINDOW);
    let severity = optional(obj, "severity", &err, parse_severity)?.unwrap_or(DEFAULT_SEVERITY);
    Ok(Rule {
        id,
        device,
        metric,
        alert,
        operator,
        value,
        include_dim,
        filter,
        window,
        severity,
    })
}

/// A field every rule must have, read by `parse`; its errors name the field.
fn required<T>(
    obj: &Map<String, Value>,
    field: &str,
    err: &dyn Fn(&str, String) -> Error,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<T, Error> {
    let v = obj.get(field).ok_or_else(|| err(field, "missing".into()))?;
    parse(v).map_err(|m| err(field, m))
}

/// A field with a default, read by `parse`: `None` when the rule leaves it out.
fn optional<T>(
    obj: &Map<String, Value>,
    field: &str,
    err: &dyn Fn(&str, String) -> Error,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    obj.get(field)
        .map(parse)
        .transpose()
        .map_err(|m| err(field, m))
}

/// `deviceId`, `metricName`, `alertName`: text a rule is matched or named by, so never empty.
fn parse_text(v: &Value) -> Result<String, String> {
    match scalar_text(v) {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err("must not be empty".into()),
        None => Err(format!("expected a string, got {v}")),
    }
}

fn parse_operator(v: &Value) -> Result<Operator, String> {
    v.as_str().and_then(Operator::parse).ok_or_else(|| {
        let names: Vec<&str> = Operator::ALL.iter().map(|op| op.name()).collect();
        format!(
            "{v} is not an operator; expected one of {}",
            names.join(", ")
        )
    })
}

fn parse_number(v: &Value) -> Result<f64, String> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("expected a number, got {v}"))
}

/// An `includeDim` entry: the seed writes `"TRUE"` and `"FALSE"`; JSON booleans mean the same.
fn parse_flag(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(format!(
            "expected \"TRUE\", \"FALSE\" or a boolean, got {v}"
        )),
    }
}

/// A `filter` entry: the seed writes `""` for no filter on that number.
fn parse_filter(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        v => match scalar_text(v) {
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => Ok(Some(s)),
            None => Err(format!("expected \"\" (no filter) or a value, got {v}")),
        },
    }
}

/// Whole milliseconds, because the engine keeps every time in them ([`Rule::window_ms`]).
fn parse_window(v: &Value) -> Result<Duration, String> {
    let Value::String(s) = v else {
        return Err(format!(
            "expected a duration like \"60s\" or \"5m\", got {v}"
        ));
    };
    let d = s.parse::<HumanDuration>()?.0;
    if d < MIN_WINDOW || d > MAX_WINDOW || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "{s:?}: must be from 1s to 7d in whole milliseconds"
        ));
    }
    Ok(d)
}

fn parse_severity(v: &Value) -> Result<u8, String> {
    match v.as_u64() {
        Some(n @ 1..=4) => Ok(n as u8),
        _ => Err(format!("expected 1, 2, 3 or 4, got {v}")),
    }
}

fn parse_id(obj: &Map<String, Value>) -> Result<RuleId, String> {
    match obj.get("ruleId") {
        None => Err("missing".into()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(RuleId::Number)
            .ok_or_else(|| format!("{n}: a numeric ruleId must be a whole number")),
        Some(Value::String(s)) if s.is_empty() || s.contains(['/', '+', '#']) => Err(format!(
            "{s:?}: must not be empty nor hold '/', '+' or '#' (alarms name their topic after it)"
        )),
        Some(Value::String(s)) => Ok(RuleId::Text(s.clone())),
        Some(v) => Err(format!("expected a number or a string, got {v}")),
    }
}

/// A string, or a number or boolean written where a string was meant (`"deviceId":
/// 978648`): both mean the same text to a person, so both are taken.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `{"0": .., "4": ..}` tables (includeDim, filter); a missing table or key is `None`.
/// Errors name the key (`filter.2`), or the table when its shape is wrong.
fn numbered<T>(
    obj: &Map<String, Value>,
    table: &str,
    err: &dyn Fn(&str, String) -> Error,
    mut item: impl FnMut(&Value) -> Result<T, String>,
) -> Result<[Option<T>; DIMS], Error> {
    let mut out: [Option<T>; DIMS] = Default::default();
    let Some(v) = obj.get(table) else {
        return Ok(out);
    };
    let Some(entries) = v.as_object() else {
        return Err(err(
            table,
            format!("expected an object keyed \"0\" to \"4\", got {v}"),
        ));
    };
    for (key, v) in entries {
        let slot = key
            .parse::<usize>()
            .ok()
            .filter(|&i| i < DIMS && key.len() == 1)
            .ok_or_else(|| err(table, format!("{key:?}: keys are \"0\" to \"4\"")))?;
        out[slot] = Some(item(v).map_err(|m| err(&format!("{table}.{key}"), m))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's rule, as written there.
    pub(crate) const SEED_RULE: &str = r#"{
        "ruleId": 1234,
        "deviceId" : "978648",
        "metricName": "CPU",
        "alertName": "hot node AVG CPU over 90",
        "operator" : "AVGGREATEROREQUAL",
        "value": 90,
        "includeDim": {"0": "FALSE", "1": "FALSE", "2": "TRUE", "3": "FALSE", "4": "FALSE"},
        "filter": {"0": "", "1": "", "2": "C1", "3": "", "4": ""}
    }"#;

    fn rejected(doc: &str) -> (String, String, String) {
        match RuleSet::parse("rules.json", doc) {
            Err(Error::Rule {
                origin,
                rule,
                field,
                message,
            }) => {
                assert_eq!(origin, "rules.json");
                (rule, field, message)
            }
            other => panic!("expected a rule error, got {other:?}"),
        }
    }

    #[test]
    fn a_document_over_the_size_limit_is_refused_unparsed_from_a_topic_and_from_a_file() {
        let big = format!("[{}]", " ".repeat(MAX_DOCUMENT_BYTES));
        let err = RuleSet::parse("lookout/rules", &big)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over 4194304 bytes"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        std::fs::write(&path, &big).unwrap();
        let err = RuleSet::read(&path).unwrap_err().to_string();
        assert!(err.contains("over 4194304 bytes"), "{err}");
        let fits = format!("[{}]", " ".repeat(MAX_DOCUMENT_BYTES - 2));
        assert!(RuleSet::parse("lookout/rules", &fits).unwrap().is_empty());
    }

    #[test]
    fn reads_the_seeds_rule() {
        let set = RuleSet::parse("rules.json", SEED_RULE).unwrap();
        assert_eq!(set.len(), 1);
        let r = &set.rules()[0];
        assert_eq!(r.id, RuleId::Number(1234));
        assert_eq!(r.device, DeviceMatch::Exact("978648".into()));
        assert_eq!(r.metric, "CPU");
        assert_eq!(r.alert, "hot node AVG CPU over 90");
        assert_eq!(r.operator, Operator::new(Stat::Avg, Cmp::GreaterOrEqual));
        assert_eq!(r.value, 90.0);
        assert_eq!(r.include_dim, [false, false, true, false, false]);
        assert_eq!(r.filter, [None, None, Some("C1".into()), None, None]);
        assert_eq!(r.window, Duration::from_secs(60));
    }

    #[test]
    fn reads_arrays_booleans_string_ids_globs_and_windows() {
        let set = RuleSet::parse(
            "rules.json",
            r#"[
              {"ruleId": "disk-full", "deviceId": "edge-*", "metricName": "disk_util",
               "alertName": "disk nearly full", "operator": "maxGreaterOrEqual", "value": 95,
               "includeDim": {"1": true}, "window": "5m"},
              {"ruleId": 2, "deviceId": 978648, "metricName": "CPU", "alertName": "idle",
               "operator": "COUNTEQUALORLESS", "value": 0, "filter": {"3": 7}}
            ]"#,
        )
        .unwrap();
        let [a, b] = set.rules() else {
            panic!("two rules")
        };
        assert_eq!(a.id, RuleId::Text("disk-full".into()));
        assert_eq!(a.device, DeviceMatch::Glob("edge-*".into()));
        assert!(a.device.matches("edge-42") && !a.device.matches("core-1"));
        assert_eq!(a.operator.name(), "MAXGREATEROREQUAL");
        assert_eq!(a.include_dim, [false, true, false, false, false]);
        assert_eq!(a.filter, [None, None, None, None, None]);
        assert_eq!(a.window_ms(), 300_000);
        assert_eq!(b.device, DeviceMatch::Exact("978648".into()));
        assert_eq!(b.filter[3].as_deref(), Some("7"));
        assert_eq!(b.include_dim, [false; DIMS]);
    }

    #[test]
    fn an_empty_array_is_a_document_without_rules() {
        assert!(RuleSet::parse("rules.json", "[]").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_rule_by_index_and_id_and_the_field() {
        let doc = format!(
            "[{SEED_RULE}, {}]",
            SEED_RULE
                .replace("1234", "7")
                .replace("AVGGREATEROREQUAL", "AVGMORETHAN")
        );
        let (rule, field, message) = rejected(&doc);
        assert_eq!(rule, "rules[1] (ruleId 7)");
        assert_eq!(field, "operator");
        assert!(
            message.contains("\"AVGMORETHAN\" is not an operator")
                && message.contains("COUNTEQUALORLESS"),
            "{message}"
        );
        let err = RuleSet::parse("rules.json", &doc).unwrap_err().to_string();
        assert!(
            err.starts_with("rules.json: rules[1] (ruleId 7): operator: "),
            "{err}"
        );
    }

    #[test]
    fn each_field_is_checked() {
        let cases: [(&str, &str, &str, &str); 14] = [
            (
                "\"value\": 90",
                "\"value\": 90, \"severity\": 5",
                "severity",
                "expected 1, 2, 3 or 4",
            ),
            (
                "\"value\": 90",
                "\"value\": 90, \"severity\": \"high\"",
                "severity",
                "expected 1, 2, 3 or 4",
            ),
            (
                "\"value\": 90",
                "\"value\": \"90\"",
                "value",
                "expected a number",
            ),
            ("\"value\": 90,", "", "value", "missing"),
            (
                "\"metricName\": \"CPU\"",
                "\"metricName\": \"\"",
                "metricName",
                "empty",
            ),
            (
                "\"deviceId\" : \"978648\"",
                "\"deviceId\": null",
                "deviceId",
                "expected a string",
            ),
            (
                "\"alertName\"",
                "\"alertname\"",
                "alertname",
                "unknown field",
            ),
            (
                "\"2\": \"TRUE\"",
                "\"2\": \"yes\"",
                "includeDim.2",
                "\"TRUE\", \"FALSE\"",
            ),
            (
                "\"4\": \"FALSE\"",
                "\"5\": \"FALSE\"",
                "includeDim",
                "keys are \"0\" to \"4\"",
            ),
            (
                "\"2\": \"C1\"",
                "\"2\": [\"C1\"]",
                "filter.2",
                "expected \"\"",
            ),
            (
                "\"value\": 90",
                "\"value\": 90, \"window\": \"soon\"",
                "window",
                "invalid duration",
            ),
            (
                "\"value\": 90",
                "\"value\": 90, \"window\": \"500ms\"",
                "window",
                "from 1s to 7d",
            ),
            (
                "\"value\": 90",
                "\"value\": 90, \"window\": 60",
                "window",
                "like \"60s\"",
            ),
            (
                "\"operator\" : \"AVGGREATEROREQUAL\",",
                "",
                "operator",
                "missing",
            ),
        ];
        for (from, to, want_field, want_message) in cases {
            assert!(SEED_RULE.contains(from), "{from}");
            let (rule, field, message) = rejected(&SEED_RULE.replacen(from, to, 1));
            assert_eq!(rule, "rule (ruleId 1234)", "{to}");
            assert_eq!(field, want_field, "{to}: {message}");
            assert!(message.contains(want_message), "{to}: {message}");
        }
        let negative_count = SEED_RULE
            .replace("AVGGREATEROREQUAL", "COUNTEQUALORLESS")
            .replace("\"value\": 90", "\"value\": -1");
        let (_, field, message) = rejected(&negative_count);
        assert_eq!(field, "value");
        assert!(message.contains("-1 is below 0"), "{message}");
    }

    #[test]
    fn windows_are_whole_milliseconds_from_a_second_to_a_week() {
        let window = |s: &str| parse_window(&Value::from(s));
        assert_eq!(window("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(window("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(window("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["999ms", "8d", "1s500us"] {
            let message = window(bad).unwrap_err();
            assert!(message.contains("from 1s to 7d"), "{bad}: {message}");
        }
        let message = parse_window(&Value::from(60)).unwrap_err();
        assert!(message.contains("like \"60s\""), "{message}");
    }

    #[test]
    fn rule_ids_must_be_usable_and_unique() {
        let (rule, field, message) = rejected(&SEED_RULE.replace("1234", "12.5"));
        assert_eq!((rule.as_str(), field.as_str()), ("rule", "ruleId"));
        assert!(message.contains("whole number"), "{message}");
        let (_, field, message) = rejected(&SEED_RULE.replace("1234", "\"a/b\""));
        assert_eq!(field, "ruleId");
        assert!(message.contains("'/'"), "{message}");
        let (rule, field, message) = rejected(&SEED_RULE.replace("\"ruleId\": 1234,", ""));
        assert_eq!(
            (rule.as_str(), field.as_str(), message.as_str()),
            ("rule", "ruleId", "missing")
        );
        let (rule, field, message) = rejected(&format!("[{SEED_RULE}, {SEED_RULE}]"));
        assert_eq!(rule, "rules[1] (ruleId 1234)");
        assert_eq!(field, "ruleId");
        assert!(
            message.contains("rules[0] has the same ruleId"),
            "{message}"
        );
        let (rule, ..) = rejected(&format!("[{SEED_RULE}, 3]"));
        assert_eq!(rule, "rules[1]");
    }

    #[test]
    fn documents_that_are_not_rules_are_rejected_whole() {
        for (doc, want) in [
            ("", "empty document"),
            ("  \n", "empty document"),
            ("{\"ruleId\": ", "not JSON"),
            ("42", "expected a rule"),
        ] {
            match RuleSet::parse("topic lookout/rules", doc) {
                Err(e @ Error::RulesDocument { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with("topic lookout/rules: ") && text.contains(want),
                        "{doc:?}: {text}"
                    );
                }
                other => panic!("{doc:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn operator_names_round_trip_and_equality_matches_both_ways() {
        for op in Operator::ALL {
            assert_eq!(Operator::parse(op.name()), Some(op));
            assert_eq!(Operator::parse(&op.name().to_lowercase()), Some(op));
        }
        assert_eq!(Operator::parse("AVGGREATER"), None);
        assert!(Cmp::GreaterOrEqual.holds(90.0, 90.0));
        assert!(Cmp::EqualOrLess.holds(90.0, 90.0));
        assert!(!Cmp::GreaterOrEqual.holds(89.99, 90.0));
        assert!(!Cmp::EqualOrLess.holds(90.01, 90.0));
    }
}
