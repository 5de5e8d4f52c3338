//! What the incident-style plugins (ntfy, PagerDuty, Opsgenie, Discord, Gotify, Pushover,
//! Teams, the http plugin's Alertmanager format) read from a notification's fields, and the
//! text limits they share.
//!
//! Those services want a state, a severity and a stable key, not just text, and each
//! message the bridge routes may be an agent alarm (`docs/topics.md`), a group batch
//! (`{group, count, alerts}`, from `group_by`) or any other message. One reading of all
//! three keeps the plugins agreeing on what "resolved" and "severity 3" mean.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::Notification;

/// Severity of messages that carry none: the agent's default for rules without one
/// (`docs/topics.md`), so a plain message is neither paged at the top nor lost at the
/// bottom.
pub(crate) const DEFAULT_SEVERITY: u8 = 2;

/// The state acknowledgement notices carry, for templates (`{state}`) and `when`.
pub const ACKNOWLEDGED: &str = "acknowledged";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Firing,
    Resolved,
}

/// One notification as an incident.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Alarm<'a> {
    /// The incident's key: the alarm's `id`, a group's `group:` + its labels, or else the
    /// topic, so a resolve finds the incident its firing opened.
    pub key: String,
    pub state: State,
    /// 1–4, clamped; [`DEFAULT_SEVERITY`] when the message has none.
    pub severity: u8,
    /// The alarm's `host`, when it has one.
    pub host: Option<&'a str>,
    /// The alarm's `source`, when it has one.
    pub source: Option<&'a str>,
    /// The alarm's `labels` (strings and scalars only); a group's common labels.
    pub labels: Map<String, Value>,
    /// An acknowledgement notice (`state = "acknowledged"`, [`crate::ack`]): still firing,
    /// and someone is on it. Services with an acknowledge action (PagerDuty, Opsgenie)
    /// take it as that instead of a new trigger; the others show its text.
    pub acknowledged: bool,
}

impl<'a> Alarm<'a> {
    pub(crate) fn of(n: &'a Notification) -> Self {
        let fields = n.fields.as_object();
        let get = |k: &str| fields.and_then(|f| f.get(k));
        let text = |k: &str| get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(alerts) = get("alerts").and_then(Value::as_array)
            && get("group").is_some()
        {
            // A batch is firing while any member fires, and as severe as its worst member.
            let firing = alerts.iter().any(|a| state_of(a) != State::Resolved);
            let severity = alerts
                .iter()
                .filter_map(severity_of)
                .max()
                .unwrap_or(DEFAULT_SEVERITY);
            let labels = get("group")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let key = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", scalar_text(v)))
                .collect::<Vec<_>>()
                .join(",");
            return Alarm {
                key: format!("group:{key}"),
                state: if firing {
                    State::Firing
                } else {
                    State::Resolved
                },
                severity,
                host: None,
                source: None,
                labels,
                acknowledged: false,
            };
        }
        Alarm {
            key: text("id").unwrap_or(n.topic.as_str()).to_owned(),
            state: state_of(&n.fields),
            severity: severity_of(&n.fields).unwrap_or(DEFAULT_SEVERITY),
            host: text("host"),
            source: text("source"),
            labels: get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            acknowledged: text("state").is_some_and(|s| s.eq_ignore_ascii_case(ACKNOWLEDGED)),
        }
    }
}

/// `resolved` only when the message says so: anything else is worth a look.
pub(crate) fn state_of(fields: &Value) -> State {
    match fields.get("state").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("resolved") => State::Resolved,
        _ => State::Firing,
    }
}

/// `severity` as a number or a numeric string, clamped to 1–4.
pub(crate) fn severity_of(fields: &Value) -> Option<u8> {
    let v = fields.get("severity")?;
    let x = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    if !x.is_finite() {
        return None;
    }
    Some(x.round().clamp(1.0, 4.0) as u8)
}

/// RFC 3339 UTC with milliseconds (`2026-11-23T17:12:58.316Z`) from Unix milliseconds;
/// `None` outside years 0000–9999, which no API accepts.
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    let c = lookout_shared::time::Civil::from_ms(ms);
    (0..=9999).contains(&c.year).then(|| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
        )
    })
}

/// A time field (`ts`, `started_at`: Unix milliseconds) as RFC 3339, when it is one.
pub(crate) fn time_field(n: &Notification, key: &str) -> Option<String> {
    n.fields
        .get(key)
        .and_then(Value::as_i64)
        .and_then(rfc3339_ms)
}

/// A label's value as text: strings without quotes, other values as JSON.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cuts `s` to at most `max` characters (Unicode scalar values, as the JSON APIs count),
/// ending it with `…` when cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) if max == 0 => String::new(),
        Some(_) => {
            let end = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// Cuts `s` to at most `max` bytes of UTF-8 at a character boundary, ending it with `…`
/// when cut (for APIs that count bytes).
pub(crate) fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ellipsis = '…'.len_utf8();
    if max < ellipsis {
        return String::new();
    }
    let mut end = max - ellipsis;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A key for an API that caps its length: kept whole when it fits; otherwise a prefix and
/// a checksum of the whole key, so two long keys that share a prefix stay two incidents.
pub(crate) fn bounded_key(key: &str, max: usize) -> String {
    if key.chars().count() <= max {
        return key.to_owned();
    }
    let sum = format!("~{:08x}", crc32fast::hash(key.as_bytes()));
    let keep = max.saturating_sub(sum.len());
    let prefix: String = key.chars().take(keep).collect();
    format!("{prefix}{sum}")
}

/// The title and the body, or the topic when both are empty: what every text-only
/// service shows.
pub(crate) fn title_and_body(n: &Notification) -> (&str, &str) {
    match (n.title.is_empty(), n.body.is_empty()) {
        (true, true) => ("", n.topic.as_str()),
        _ => (n.title.as_str(), n.body.as_str()),
    }
}

/// [`title_and_body`] for people: the body with the alarm's score sparkline when the
/// target is not sending its picture ([`Notification::body_for_people`]).
pub(crate) fn title_and_text(n: &Notification, picture: bool) -> (&str, Cow<'_, str>) {
    match (n.title.is_empty(), n.body.is_empty()) {
        (true, true) => ("", Cow::Borrowed(n.topic.as_str())),
        _ => (n.title.as_str(), with_sparkline(n, picture)),
    }
}

/// The body and, unless a picture goes with it, the sparkline (not the explain line: the
/// plugins that use this never added it, and their bodies stay as they were).
fn with_sparkline(n: &Notification, picture: bool) -> Cow<'_, str> {
    let Some(line) = (!picture)
        .then(|| crate::picture::sparkline_of(&n.fields))
        .flatten()
        .filter(|l| !n.title.contains(l.as_str()) && !n.body.contains(l.as_str()))
    else {
        return Cow::Borrowed(n.body.as_str());
    };
    if n.body.is_empty() {
        return Cow::Owned(line);
    }
    Cow::Owned(format!("{}\n{line}", n.body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::test_support::alarm;

    #[test]
    fn an_agent_alarm_reads_as_its_id_state_severity_and_labels() {
        let n = alarm();
        let a = Alarm::of(&n);
        assert_eq!(a.key, "sim-1:cpu_util:1795457375316");
        assert_eq!(a.state, State::Firing);
        assert_eq!(a.severity, 3);
        assert_eq!(a.host, Some("sim-1"));
        assert_eq!(a.source, Some("cpu_util"));
        assert_eq!(a.labels["ip"], "10.0.0.1");
    }

    #[test]
    fn other_messages_fall_back_to_the_topic_and_the_default_severity() {
        let mut n = alarm();
        n.fields = json!({"payload": "disk full"});
        let a = Alarm::of(&n);
        assert_eq!(a.key, n.topic);
        assert_eq!((a.state, a.severity), (State::Firing, DEFAULT_SEVERITY));
        for (sev, want) in [
            (json!(9), 4),
            (json!(0), 1),
            (json!("3"), 3),
            (json!("x"), 2),
        ] {
            n.fields = json!({"severity": sev, "state": "RESOLVED"});
            let a = Alarm::of(&n);
            assert_eq!((a.severity, a.state), (want, State::Resolved));
        }
    }

    #[test]
    fn a_group_fires_while_any_member_fires_at_its_worst_severity() {
        let mut n = alarm();
        n.fields = json!({"group": {"labels.site": "s1"}, "count": 2, "alerts": [
            {"id": "a", "state": "resolved", "severity": 4},
            {"id": "b", "state": "firing", "severity": 2}]});
        let a = Alarm::of(&n);
        assert_eq!(a.key, "group:labels.site=s1");
        assert_eq!((a.state, a.severity), (State::Firing, 4));
        n.fields["alerts"][1]["state"] = json!("resolved");
        assert_eq!(Alarm::of(&n).state, State::Resolved);
    }

    #[test]
    fn truncation_cuts_at_character_boundaries_and_marks_the_cut() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        assert_eq!(truncate_chars("😀😀😀😀", 2), "😀…");
        assert_eq!(truncate_chars("ab", 0), "");
        assert_eq!(truncate_bytes("abc", 3), "abc");
        assert_eq!(truncate_bytes("éééé", 6), "é…");
        assert_eq!(truncate_bytes("éééé", 2), "");
        assert!(truncate_bytes(&"😀".repeat(100), 50).len() <= 50);
    }

    #[test]
    fn times_are_rfc_3339_in_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            time_field(&alarm(), "ts").as_deref(),
            Some("2026-11-23T18:09:36.316Z")
        );
        assert_eq!(rfc3339_ms(i64::MAX), None);
        assert_eq!(rfc3339_ms(-62_200_000_000_000), None);
    }

    #[test]
    fn long_keys_keep_a_prefix_and_stay_distinct() {
        assert_eq!(bounded_key("short", 10), "short");
        let a = bounded_key(&format!("{}a", "x".repeat(300)), 255);
        let b = bounded_key(&format!("{}b", "x".repeat(300)), 255);
        assert_eq!(a.chars().count(), 255);
        assert_ne!(a, b);
        assert_eq!(bounded_key(&"é".repeat(300), 255).chars().count(), 255);
    }
}
