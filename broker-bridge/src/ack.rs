//! Acknowledgements as they arrive on `<prefix>/bridge/ack`: parsing and checking the
//! request, and the reply published on `<prefix>/bridge/ack/reply`.
//!
//! Everything here is input from people and scripts: it is checked and bounded, and every
//! way it can be wrong becomes a reply that says why, never a panic. What an
//! acknowledgement does to an alarm lives in [`crate::firing`] (the state) and the
//! pipeline (the notices it sends).

use serde::{Deserialize, Serialize};

/// Longest alarm id taken; the agent's ids are `<host>:<source>:<started_at>`.
const MAX_ID: usize = 512;
/// Longest `by`, in characters; longer ones are refused (a name, not a text).
const MAX_BY: usize = 100;
/// Longest `comment` kept, in characters; a longer one is cut, not refused.
const MAX_COMMENT: usize = 1000;
/// Largest request payload read.
pub const MAX_REQUEST: usize = 16 * 1024;

/// An acknowledgement, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    pub by: String,
    /// Unix ms; `None`: until the alarm resolves.
    pub until: Option<i64>,
    pub comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    id: String,
    by: String,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// Why a request was refused, with the alarm id when the request named one.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub id: Option<String>,
    pub reason: String,
}

/// The answer on `<prefix>/bridge/ack/reply`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// The alarm id of the request; null when it could not be read.
    pub id: Option<String>,
    pub ok: bool,
    pub reason: String,
}

impl Reply {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A press of an "Ack" button in a chat (Telegram, Slack), on its way to the pipeline;
/// `answer` takes the reply back to the chat.
#[derive(Debug)]
pub struct ChatPress {
    pub alarm: Alarm,
    /// Who pressed it, as the chat names them.
    pub by: String,
    /// `"Telegram"`, `"Slack"`: said in the notice's comment.
    pub via: &'static str,
    pub answer: tokio::sync::oneshot::Sender<Reply>,
}

/// How a button names its alarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alarm {
    Id(String),
    /// [`short_key`] of the id, where the id would not fit (Telegram's 64-byte
    /// `callback_data`).
    Key(String),
}

/// 16 hex digits that stand for alarm `id` in a button; stable across runs, so a button
/// pressed after a restart still finds its alarm.
pub fn short_key(id: &str) -> String {
    format!("{:016x}", crate::dedup::key("chat-ack", id, "") as u64)
}

/// Parses and checks one request at `now_ms`.
pub fn parse(payload: &[u8], now_ms: i64) -> Result<Request, Refused> {
    let refuse = |id: Option<&str>, reason: String| Refused {
        id: id.map(str::to_owned),
        reason,
    };
    if payload.len() > MAX_REQUEST {
        return Err(refuse(
            None,
            format!("request of {} bytes, over {MAX_REQUEST}", payload.len()),
        ));
    }
    let raw: RawRequest = serde_json::from_slice(payload).map_err(|e| {
        // The id, if the JSON at least has one, so the sender can match the reply.
        let id = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(|s| cut(s, MAX_ID)));
        refuse(
            id.as_deref(),
            format!(
                "bad request ({e}); send {{\"id\": \"<alarm id>\", \"by\": \"<name>\", \"until\": \"2h\", \"comment\": \"...\"}}"
            ),
        )
    })?;
    let id = raw.id.trim();
    if id.is_empty() || id.len() > MAX_ID {
        return Err(refuse(
            Some(&cut(id, MAX_ID)),
            format!("id must be 1 to {MAX_ID} bytes"),
        ));
    }
    let by = raw.by.trim();
    if by.is_empty() || by.chars().count() > MAX_BY || by.chars().any(char::is_control) {
        return Err(refuse(
            Some(id),
            format!("by must be a name of 1 to {MAX_BY} characters"),
        ));
    }
    let until = match raw.until.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(parse_until(text, now_ms).map_err(|m| refuse(Some(id), m))?),
    };
    if until.is_some_and(|u| u <= now_ms) {
        return Err(refuse(Some(id), "until is in the past".into()));
    }
    Ok(Request {
        id: id.to_owned(),
        by: by.to_owned(),
        until,
        comment: raw
            .comment
            .map(|c| cut(c.trim(), MAX_COMMENT))
            .filter(|c| !c.is_empty()),
    })
}

/// `"2h"` (from now) or an RFC 3339 time (`2026-12-07T06:00:00Z`, `...+01:00`) as Unix ms.
pub fn parse_until(text: &str, now_ms: i64) -> Result<i64, String> {
    if text.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(d) = text.parse::<lookout_shared::duration::HumanDuration>()
    {
        let ms = i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_add(ms));
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!("until {text:?} is neither a duration (\"2h\") nor an RFC 3339 time")
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as Unix ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if d > i64::from(lookout_shared::time::days_in_month(y, mo as u32)) {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = f[..digits].chars().chain("000".chars()).take(3).collect();
        frac_ms = ms.parse::<i64>().ok()?;
        rest = &f[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if ob[0] == b'-' { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
    };
    let days = lookout_shared::time::days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_457_375_000; // 2026-11-23T18:09:35Z

    #[test]
    fn a_full_request_is_read_with_until_as_a_duration_or_a_time() {
        let r = parse(
            br#"{"id": "h:cpu:1", "by": " alice ", "until": "2h", "comment": "on it"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(
            r,
            Request {
                id: "h:cpu:1".into(),
                by: "alice".into(),
                until: Some(NOW + 2 * 3_600_000),
                comment: Some("on it".into()),
            }
        );
        let r = parse(
            br#"{"id": "h:cpu:1", "by": "bob", "until": "2026-11-23T20:09:35+01:00"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(r.until, Some(NOW + 3_600_000));
        assert_eq!(r.comment, None);
    }

    #[test]
    fn rfc3339_times_with_fractions_and_offsets_are_read_and_nonsense_is_not() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
        for bad in [
            "1970-01-01",
            "1970-02-30T00:00:00Z",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00+1:00",
            "1970-01-01T00:00:00.Z",
            "x970-01-01T00:00:00Z",
            "1970-01-01T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_bad_request_is_refused_with_a_reason_and_the_id_when_there_is_one() {
        let cases: [(&[u8], Option<&str>, &str); 7] = [
            (b"not json", None, "bad request"),
            (br#"{"by": "alice"}"#, None, "missing field `id`"),
            (
                br#"{"id": "a", "by": "alice", "x": 1}"#,
                Some("a"),
                "unknown field",
            ),
            (br#"{"id": "", "by": "alice"}"#, Some(""), "id must be"),
            (br#"{"id": "a", "by": ""}"#, Some("a"), "by must be"),
            (
                br#"{"id": "a", "by": "alice", "until": "soon"}"#,
                Some("a"),
                "neither a duration",
            ),
            (
                br#"{"id": "a", "by": "alice", "until": "2020-01-01T00:00:00Z"}"#,
                Some("a"),
                "in the past",
            ),
        ];
        for (payload, id, reason) in cases {
            let e = parse(payload, NOW).unwrap_err();
            assert_eq!(e.id.as_deref(), id, "{e:?}");
            assert!(e.reason.contains(reason), "{e:?}");
        }
        let huge = vec![b' '; MAX_REQUEST + 1];
        assert!(parse(&huge, NOW).unwrap_err().reason.contains("bytes"));
    }

    #[test]
    fn a_long_comment_is_cut_not_refused() {
        let long = "x".repeat(5000);
        let payload = format!(r#"{{"id": "a", "by": "alice", "comment": "{long}"}}"#);
        let r = parse(payload.as_bytes(), NOW).unwrap();
        assert_eq!(r.comment.unwrap().len(), MAX_COMMENT);
    }
}
