//! Silences: "do not notify about alarms matching these labels until then", from the
//! config (`[[silences]]`) and from a retained JSON message on `<prefix>/bridge/silences`
//! (a list of silences that replaces the previous list: the way to silence a fleet
//! without touching any bridge's config).
//!
//! A silence matches when every matcher matches the message's field: `host = "sim-1"`,
//! `source = "cpu*"` (`*` matches any run of characters), `labels.site = "plant-3"`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::expr::lookup;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SilenceRaw {
    /// Field path → pattern (`*` is a wildcard).
    pub matchers: BTreeMap<String, String>,
    /// Expiry: Unix milliseconds, or `YYYY-MM-DDTHH:MM:SSZ` (UTC). Omitted: until removed.
    #[serde(default)]
    pub until: Option<Until>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Until {
    Ms(i64),
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Silence {
    matchers: Vec<(Vec<String>, String)>,
    until: Option<i64>,
    pub comment: String,
}

impl Silence {
    pub fn build(raw: &SilenceRaw) -> Result<Self, String> {
        if raw.matchers.is_empty() {
            return Err(
                "a silence needs at least one matcher (it would silence everything)".into(),
            );
        }
        let until =
            match &raw.until {
                None => None,
                Some(Until::Ms(ms)) => Some(*ms),
                Some(Until::Text(t)) => Some(parse_utc(t).ok_or_else(|| {
                    format!("until = {t:?} is not Unix ms or YYYY-MM-DDTHH:MM:SSZ")
                })?),
            };
        Ok(Self {
            matchers: raw
                .matchers
                .iter()
                .map(|(k, v)| (k.split('.').map(str::to_owned).collect(), v.clone()))
                .collect(),
            until,
            comment: raw.comment.clone(),
        })
    }

    pub fn is_active(&self, now_ms: i64) -> bool {
        self.until.is_none_or(|u| now_ms < u)
    }

    pub fn matches(&self, fields: &Value) -> bool {
        self.matchers
            .iter()
            .all(|(path, pattern)| match lookup(fields, path) {
                Some(Value::String(s)) => glob(pattern, s),
                Some(Value::Number(n)) => glob(pattern, &n.to_string()),
                Some(Value::Bool(b)) => glob(pattern, &b.to_string()),
                _ => false,
            })
    }
}

/// The silences in force: the config's, and the latest list received over MQTT.
#[derive(Debug, Default)]
pub struct Silences {
    from_config: Vec<Silence>,
    from_mqtt: Vec<Silence>,
}

impl Silences {
    pub fn new(from_config: Vec<Silence>) -> Self {
        Self {
            from_config,
            from_mqtt: Vec::new(),
        }
    }

    /// Replaces the MQTT list with a JSON array of silences (an empty payload clears it).
    /// An invalid document is refused as a whole and the previous list stays.
    pub fn replace_from_json(&mut self, payload: &[u8]) -> Result<usize, String> {
        if payload.is_empty() {
            self.from_mqtt.clear();
            return Ok(0);
        }
        let raws: Vec<SilenceRaw> = serde_json::from_slice(payload)
            .map_err(|e| format!("not a JSON list of silences: {e}"))?;
        let built = raws
            .iter()
            .enumerate()
            .map(|(i, r)| Silence::build(r).map_err(|e| format!("silence {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.from_mqtt = built;
        Ok(self.from_mqtt.len())
    }

    /// The first active silence matching the message, if any.
    pub fn silenced_by(&self, fields: &Value, now_ms: i64) -> Option<&Silence> {
        self.from_config
            .iter()
            .chain(&self.from_mqtt)
            .find(|s| s.is_active(now_ms) && s.matches(fields))
    }
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// `YYYY-MM-DDTHH:MM:SSZ` → Unix ms (UTC only; no offsets, no fractions).
pub fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = lookout_shared::time::days_from_civil(y, m as u32, d as u32);
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn silence(m: &[(&str, &str)], until: Option<Until>) -> Silence {
        Silence::build(&SilenceRaw {
            matchers: m
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            until,
            comment: String::new(),
        })
        .unwrap()
    }

    #[test]
    fn matchers_all_have_to_match_and_globs_work() {
        let s = silence(&[("host", "sim-*"), ("labels.site", "plant-3")], None);
        assert!(s.matches(&json!({"host": "sim-1", "labels": {"site": "plant-3"}})));
        assert!(!s.matches(&json!({"host": "sim-1", "labels": {"site": "plant-4"}})));
        assert!(!s.matches(&json!({"host": "edge-1", "labels": {"site": "plant-3"}})));
        assert!(!s.matches(&json!({"host": "sim-1"})));
        assert!(
            glob("*cpu*", "sim_cpu_util")
                && glob("a*c", "abc")
                && !glob("a*c", "abd")
                && glob("*", "")
        );
    }

    #[test]
    fn silences_expire() {
        let s = silence(
            &[("host", "h")],
            Some(Until::Text("2026-11-23T18:00:00Z".into())),
        );
        let t = parse_utc("2026-11-23T18:00:00Z").unwrap();
        assert!(s.is_active(t - 1) && !s.is_active(t));
        assert_eq!(parse_utc("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_utc("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert!(parse_utc("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn mqtt_silences_replace_as_a_whole_and_bad_documents_change_nothing() {
        let mut all = Silences::new(vec![]);
        assert_eq!(
            all.replace_from_json(br#"[{"matchers": {"host": "h1"}, "comment": "maintenance"}]"#),
            Ok(1)
        );
        assert!(all.silenced_by(&json!({"host": "h1"}), 0).is_some());
        assert!(all.replace_from_json(br#"[{"matchers": {}}]"#).is_err());
        assert!(all.replace_from_json(b"nope").is_err());
        assert!(
            all.silenced_by(&json!({"host": "h1"}), 0).is_some(),
            "old list kept"
        );
        assert_eq!(all.replace_from_json(b""), Ok(0));
        assert!(all.silenced_by(&json!({"host": "h1"}), 0).is_none());
    }
}
