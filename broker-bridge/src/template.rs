//! Title and body templates: `{field}` is replaced by the message's field (`{labels.ip}`
//! for nested ones), `{topic}` by the MQTT topic and `{payload}` by the message as
//! received; `{{` and `}}` are literal braces. Times in Unix milliseconds (`ts`,
//! `started_at`, `start`, `end`) are written readably, `2026-11-23 17:12:58 UTC`.
//!
//! A reference to a field the message does not have is an error; the caller then sends
//! the raw payload instead and counts it, so a template mistake never loses an alarm.
//! Three fields are always there: `{explain}` (the alarm's one-line attribution),
//! `{top_dimension}` (the name of its first `dimensions` entry) and `{sparkline}` (its
//! window's score as a line of block characters, `crate::picture`) are empty for a message
//! without them, as rule alarms and resolutions are, so one template serves every alarm.

use serde_json::Value;

use crate::expr::lookup;

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

const TIME_FIELDS: [&str; 4] = ["ts", "started_at", "start", "end"];

impl Template {
    /// Parses once at start; the error names the position of an unclosed brace.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch)) => name.push(ch),
                            None => return Err(format!("unclosed '{{' at character {i}")),
                        }
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(format!("empty '{{}}' at character {i}"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(name.split('.').map(str::to_owned).collect()));
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at character {i} (write '}}}}' for a brace)"
                    ));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// Renders with the message's fields; `Err` names the first missing field.
    pub fn render(&self, fields: &Value, topic: &str, raw: &[u8]) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(path)
                    if path.len() == 1 && path[0] == "topic" && fields.get("topic").is_none() =>
                {
                    out.push_str(topic)
                }
                Part::Field(path)
                    if path.len() == 1
                        && path[0] == "payload"
                        && fields.get("payload").is_none() =>
                {
                    out.push_str(&String::from_utf8_lossy(raw))
                }
                Part::Field(path) if path.len() == 1 && optional(fields, &path[0]) => {
                    out.push_str(&attribution(fields, &path[0]))
                }
                Part::Field(path) => {
                    let v = lookup(fields, path)
                        .ok_or_else(|| format!("no field {:?} in the message", path.join(".")))?;
                    let is_time = path.len() == 1 && TIME_FIELDS.contains(&path[0].as_str());
                    match v {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) if is_time && n.as_i64().is_some() => {
                            out.push_str(&readable_ms(n.as_i64().unwrap_or_default()))
                        }
                        Value::Null => out.push_str("null"),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Whether `name` is one of the attribution's fields that a message may lack.
fn optional(fields: &Value, name: &str) -> bool {
    matches!(name, "explain" | "top_dimension" | "sparkline") && fields.get(name).is_none()
}

/// `{explain}`, `{top_dimension}` and `{sparkline}` of a message that has no field of
/// that name: from the agent's `explain`, `dimensions` and `window`, or empty.
fn attribution(fields: &Value, name: &str) -> String {
    if name == "sparkline" {
        return crate::picture::sparkline_of(fields).unwrap_or_default();
    }
    let text = match name {
        "top_dimension" => fields
            .get("dimensions")
            .and_then(|d| d.get(0))
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str),
        _ => None,
    };
    text.unwrap_or_default().to_owned()
}

/// `2026-11-23 17:12:58 UTC` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn readable_ms(ms: i64) -> String {
    let c = lookout_shared::time::Civil::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_fields_nested_fields_and_readable_times() {
        let t = Template::parse(
            "[{state}] {host} {source} sev {severity} ip {labels.ip} at {ts} on {topic}",
        )
        .unwrap();
        let v = json!({"state": "firing", "host": "h1", "source": "cpu", "severity": 3, "labels": {"ip": "10.0.0.1"}, "ts": 1_795_457_578_000i64});
        assert_eq!(
            t.render(&v, "lookout/h1/alarms/cpu", b"").unwrap(),
            "[firing] h1 cpu sev 3 ip 10.0.0.1 at 2026-11-23 18:12:58 UTC on lookout/h1/alarms/cpu"
        );
    }

    #[test]
    fn missing_fields_are_errors_and_braces_escape() {
        let t = Template::parse("{nope}").unwrap();
        assert!(t.render(&json!({}), "t", b"").unwrap_err().contains("nope"));
        assert_eq!(
            Template::parse("{{x}}")
                .unwrap()
                .render(&json!({}), "t", b"")
                .unwrap(),
            "{x}"
        );
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("close}").is_err());
        assert_eq!(
            Template::parse("{payload}")
                .unwrap()
                .render(&json!({}), "t", b"raw")
                .unwrap(),
            "raw"
        );
    }

    #[test]
    fn explain_and_top_dimension_come_from_the_attribution_and_are_empty_without_one() {
        let t = Template::parse("{source}: {top_dimension} | {explain}").unwrap();
        let fired = json!({"source": "cpu", "explain": "system at 38.1, normal 2–6 (83 % of the cpu anomaly)",
            "dimensions": [{"name": "system", "share": 0.83, "value": 38.1, "normal": [2.0, 6.0]},
                           {"name": "user", "share": 0.17, "value": 20.0, "normal": [19.0, 21.0]}]});
        assert_eq!(
            t.render(&fired, "t", b"").unwrap(),
            "cpu: system | system at 38.1, normal 2–6 (83 % of the cpu anomaly)"
        );
        let rule = json!({"source": "rule/hot"});
        assert_eq!(t.render(&rule, "t", b"").unwrap(), "rule/hot:  | ");
        let own = json!({"source": "x", "top_dimension": "mine", "explain": 7});
        assert_eq!(
            t.render(&own, "t", b"").unwrap(),
            "x: mine | 7",
            "a message's own fields win"
        );
    }

    #[test]
    fn sparkline_draws_the_window_score_and_is_empty_without_a_window() {
        let t = Template::parse("{source} {sparkline}").unwrap();
        let fired = json!({"source": "cpu", "threshold": 2.0, "window": {
            "ts": [0, 1000, 2000], "score": [0.5, 1.0, 4.0], "level": [0, 0, 3], "series": []}});
        assert_eq!(
            t.render(&fired, "t", b"").unwrap(),
            "cpu score ▂▃█ 4.00 (threshold 2.00, last 2s)"
        );
        assert_eq!(
            t.render(&json!({"source": "rule/hot"}), "t", b"").unwrap(),
            "rule/hot "
        );
        let broken =
            json!({"source": "x", "window": {"ts": [1], "score": [], "level": [], "series": []}});
        assert_eq!(t.render(&broken, "t", b"").unwrap(), "x ");
    }

    #[test]
    fn readable_times_match_known_dates() {
        assert_eq!(readable_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(readable_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(readable_ms(-1000), "1969-12-31 23:59:59 UTC");
    }
}
