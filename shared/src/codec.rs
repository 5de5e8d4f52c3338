//! Encoding of wire types. JSON is the default because every MQTT tool (mosquitto_sub,
//! Node-RED, Telegraf, mqttwarn) reads it unchanged; postcard is for internal records
//! (such as an on-disk outbox) where bytes count and no human reads them.

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// Serialises into `buf` (cleared first) so a caller on a hot path can reuse one buffer.
pub fn to_json_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) {
    buf.clear();
    // Writing into a Vec cannot fail, and our types have only string keys.
    serde_json::to_writer(&mut *buf, value).expect("wire types serialise to JSON");
}

pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    to_json_into(value, &mut buf);
    buf
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.to_owned(),
        source,
    })
}

pub fn to_postcard<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|source| Error::Postcard {
        what: std::any::type_name::<T>().to_owned(),
        source,
    })
}

pub fn from_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|source| Error::Postcard {
        what: std::any::type_name::<T>().to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Alarm, AlarmState, Dimension, Window, WindowSeries};

    /// JSON leaves an alarm's empty attribution out, so that alarms without one (rules,
    /// resolutions) stay as they were; postcard, which has no field names, needs it there.
    #[test]
    fn alarm_round_trips_through_both_codecs() {
        let alarm = Alarm {
            id: "h:cpu:1".into(),
            host: "h".into(),
            source: "cpu".into(),
            state: AlarmState::Firing,
            severity: 2,
            ts: 10,
            started_at: 5,
            score: 3.5,
            threshold: 3.0,
            summary: "cpu score 3.50 >= 3.00".into(),
            labels: [("ip".to_string(), "10.0.0.1".to_string())].into(),
            dimensions: Vec::new(),
            explain: None,
            window: None,
        };
        let bytes = to_json(&alarm);
        assert!(!String::from_utf8_lossy(&bytes).contains("dimensions"));
        let json: Alarm = from_json(&bytes, "test").unwrap();
        assert_eq!(json, alarm);
        let alarm = Alarm {
            dimensions: vec![Dimension {
                name: "system".into(),
                share: 0.83,
                value: 38.1,
                normal: Some([2.0, 6.0]),
            }],
            explain: Some("system 38.1, normal 2–6".into()),
            window: Some(Window {
                ts: vec![5, 10],
                score: vec![None, Some(3.5)],
                level: vec![0, 2],
                series: vec![WindowSeries {
                    name: "system".into(),
                    values: vec![Some(2.5), Some(38.1)],
                    normal: Some([2.0, 6.0]),
                }],
            }),
            ..alarm
        };
        let json: Alarm = from_json(&to_json(&alarm), "test").unwrap();
        assert_eq!(json, alarm);
        let pc: Alarm = from_postcard(&to_postcard(&alarm).unwrap()).unwrap();
        assert_eq!(pc, alarm);
    }

    #[test]
    fn bad_json_names_what_was_decoded() {
        let err = from_json::<Alarm>(b"{nope", "lookout/h/alarms/cpu").unwrap_err();
        assert!(err.to_string().contains("lookout/h/alarms/cpu"), "{err}");
    }
}
