//! Decoding what arrives: the agent's alarm JSON, any other JSON, or plain text. Whatever
//! it is, routes and templates see one JSON object of fields.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub fields: Value,
    /// `(id, state)` when the message is one of the agent's alarms: the dedup key.
    pub alarm: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("payload of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload looks like JSON but does not parse: {0}")]
    BrokenJson(String),
}

/// Decodes one payload. Empty payloads (cleared retained messages) decode to `None`.
pub fn decode(raw: &[u8], limit: usize) -> Result<Option<Decoded>, Rejected> {
    if raw.len() > limit {
        return Err(Rejected::TooLarge {
            size: raw.len(),
            limit,
        });
    }
    if raw.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Rejected::NotUtf8)?;
    let trimmed = text.trim_start();
    let fields = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(other) => Value::Object(Map::from_iter([("value".to_string(), other)])),
            Err(e) => return Err(Rejected::BrokenJson(e.to_string())),
        }
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ (Value::Number(_) | Value::Bool(_))) => {
                Value::Object(Map::from_iter([("value".to_string(), v)]))
            }
            _ => Value::Object(Map::from_iter([(
                "payload".to_string(),
                Value::String(text.to_owned()),
            )])),
        }
    };
    let alarm = match (fields.get("id"), fields.get("state")) {
        (Some(Value::String(id)), Some(Value::String(state))) => Some((id.clone(), state.clone())),
        _ => None,
    };
    Ok(Some(Decoded { fields, alarm }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_json_and_text_all_become_fields() {
        let a = decode(br#"{"id":"h:cpu:1","state":"firing","severity":2}"#, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(a.alarm, Some(("h:cpu:1".into(), "firing".into())));
        assert_eq!(a.fields["severity"], 2);
        let j = decode(br#"{"temp": 21.5}"#, 1024).unwrap().unwrap();
        assert_eq!(
            (j.alarm, &j.fields["temp"]),
            (None, &serde_json::json!(21.5))
        );
        let t = decode(b"offline", 1024).unwrap().unwrap();
        assert_eq!(t.fields["payload"], "offline");
        assert_eq!(decode(b"42", 1024).unwrap().unwrap().fields["value"], 42);
        assert_eq!(decode(b"", 1024).unwrap(), None);
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        assert!(matches!(
            decode(&[0xff, 0xfe], 1024),
            Err(Rejected::NotUtf8)
        ));
        assert!(matches!(
            decode(b"{broken", 1024),
            Err(Rejected::BrokenJson(_))
        ));
        assert!(matches!(
            decode(&[b'x'; 2000], 1024),
            Err(Rejected::TooLarge {
                size: 2000,
                limit: 1024
            })
        ));
    }
}
