//! Input events: the seed's shape (`eventTime`, `deviceId`, `custom.dimensions`,
//! `custom.filters`, `metric.name`, `metric.value`) and the plain form small devices send
//! over MQTT ingest (`{"metric": NAME, "value": X}`, with optional `time` and
//! `deviceId`). Both become one [`Event`]; where the event leaves out its device or time,
//! the caller's [`Defaults`] fill them in (the ingest topic's device, the agent's clock).
//!
//! Events are read leniently (unknown fields, such as the seed's `metric.count` or
//! `stdDev`, are ignored) but an event the rules cannot evaluate (no metric, a value that
//! is not a finite number, an unreadable time) is an error for that event only: the
//! caller counts it and goes on.

use serde_json::{Map, Value};

use super::document::{DIMS, scalar_text};
use super::time::parse_rfc3339;
use crate::Error;

/// One reading, ready for the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unix milliseconds.
    pub time: i64,
    pub device: String,
    pub metric: String,
    pub value: f64,
    /// `custom.dimensions."N".value`: what the output's `dimN` carries.
    pub dims: [Option<String>; DIMS],
    /// `custom.filters."N".value`: what a rule's `filter."N"` compares with.
    pub filters: [Option<String>; DIMS],
}

/// What fills in an event's missing `deviceId` and time. Fields the event carries win.
#[derive(Clone, Copy, Debug, Default)]
pub struct Defaults<'a> {
    pub device: Option<&'a str>,
    pub time: Option<i64>,
}

impl Event {
    /// One event from a JSON value; the error is a message for the person who sent it.
    pub fn from_value(v: &Value, defaults: Defaults<'_>) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("expected an event (a JSON object), got {}", brief(v)))?;
        let (metric, value) = match obj.get("metric") {
            Some(Value::Object(m)) => (
                text(m, "metric.name", "name")?,
                number(m.get("value"), "metric.value")?,
            ),
            Some(Value::String(name)) if !name.is_empty() => {
                (name.clone(), number(obj.get("value"), "value")?)
            }
            Some(other) => {
                return Err(format!(
                    "metric: expected {{\"name\": .., \"value\": ..}} or a name, got {}",
                    brief(other)
                ));
            }
            None => return Err("metric: missing".into()),
        };
        let given_time = ["eventTime", "time"]
            .into_iter()
            .find_map(|field| obj.get(field).map(|t| (field, t)));
        let time = match given_time {
            Some((field, t)) => parse_time(t).ok_or_else(|| {
                let t = brief(t);
                format!(
                    "{field}: expected an RFC 3339 time or Unix milliseconds (years 0000 to 9999), got {t}"
                )
            })?,
            None => defaults
                .time
                .ok_or("eventTime: missing (and no time to assume for it)")?,
        };
        let device = match obj.get("deviceId") {
            Some(v) => scalar_text(v).filter(|s| !s.is_empty()).ok_or_else(|| {
                format!("deviceId: expected a non-empty string, got {}", brief(v))
            })?,
            None => defaults
                .device
                .map(str::to_owned)
                .ok_or("deviceId: missing (and no device to assume for it)")?,
        };
        let custom = obj.get("custom").and_then(Value::as_object);
        Ok(Self {
            time,
            device,
            metric,
            value,
            dims: labels(custom, "dimensions"),
            filters: labels(custom, "filters"),
        })
    }
}

fn text(m: &Map<String, Value>, field: &str, key: &str) -> Result<String, String> {
    match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(v) => Err(format!(
            "{field}: expected a non-empty string, got {}",
            brief(v)
        )),
        None => Err(format!("{field}: missing")),
    }
}

/// A finite number; JSON has no NaN or infinity, but a sender may write them as strings
/// or overflow an f64, and neither may reach an average.
fn number(v: Option<&Value>, field: &str) -> Result<f64, String> {
    match v {
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{field}: expected a finite number, got {}", brief(v))),
        None => Err(format!("{field}: missing")),
    }
}

/// Event times are kept within RFC 3339's years 0000 to 9999, whatever their form: a
/// Unix-millisecond time near the ends of `i64` is no reading anyone took, and the
/// engine's window arithmetic must not be made to overflow by one.
const EARLIEST: i64 = -62_167_219_200_000;
const LATEST: i64 = 253_402_300_799_999;

fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .filter(|t| (EARLIEST..=LATEST).contains(t))
}

/// `custom.<table>."N".value`, for N in 0..5. Entries without a usable value are absent,
/// as ASA's NULL: they pass no filter and show as `null` in outputs.
fn labels(custom: Option<&Map<String, Value>>, table: &str) -> [Option<String>; DIMS] {
    let entries = custom.and_then(|c| c.get(table)).and_then(Value::as_object);
    std::array::from_fn(|i| {
        entries
            .and_then(|e| e.get(&i.to_string()))
            .and_then(|entry| entry.get("value"))
            .and_then(scalar_text)
    })
}

/// A value as it appears in an error, cut short: a sender's mistake can be large.
fn brief(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Reads events from a text holding a JSON array of them, one object per line, or
/// objects simply concatenated. Yields each event or the error that makes it unusable;
/// after a syntax error it skips to the next line and goes on, so one broken line costs
/// one event.
pub fn events<'a>(origin: &'a str, text: &'a str, defaults: Defaults<'a>) -> Events<'a> {
    let array = if text.trim_start().starts_with('[') {
        Some(serde_json::from_str::<Vec<Value>>(text).map(Vec::into_iter))
    } else {
        None
    };
    Events {
        origin,
        text,
        defaults,
        pos: 0,
        line: 1,
        line_pos: 0,
        array,
        index: 0,
        at: String::new(),
    }
}

pub struct Events<'a> {
    origin: &'a str,
    text: &'a str,
    defaults: Defaults<'a>,
    /// Stream form: the byte offset reached, and the line number at `line_pos`.
    pos: usize,
    line: usize,
    line_pos: usize,
    /// Array form: its items, or why it could not be read.
    array: Option<Result<std::vec::IntoIter<Value>, serde_json::Error>>,
    index: usize,
    at: String,
}

impl Events<'_> {
    /// Where the event last yielded was: `line 12`, or `[3]` in an array.
    pub fn at(&self) -> &str {
        &self.at
    }

    fn error(&self, message: String) -> Error {
        Error::Event {
            origin: self.origin.to_owned(),
            at: self.at.clone(),
            message,
        }
    }

    fn line_of(&mut self, offset: usize) -> usize {
        self.line += self.text[self.line_pos..offset].matches('\n').count();
        self.line_pos = offset;
        self.line
    }

    fn next_in_stream(&mut self) -> Option<Result<Event, Error>> {
        let rest = &self.text[self.pos..];
        let start = self.pos + (rest.len() - rest.trim_start().len());
        if start >= self.text.len() {
            self.pos = start;
            return None;
        }
        let line = self.line_of(start);
        self.at = format!("line {line}");
        let mut stream = serde_json::Deserializer::from_str(&self.text[start..]).into_iter();
        match stream.next()? {
            Ok(v) => {
                self.pos = start + stream.byte_offset();
                Some(Event::from_value(&v, self.defaults).map_err(|m| self.error(m)))
            }
            Err(e) => {
                self.pos = self.text[start..]
                    .find('\n')
                    .map_or(self.text.len(), |i| start + i + 1);
                let what = if e.is_eof() {
                    "unexpected end of input"
                } else {
                    "not JSON"
                };
                // serde's position is relative to where this event started.
                let (l, c) = (line + e.line() - 1, e.column());
                Some(Err(self.error(format!(
                    "{what} (at line {l}, column {c}); skipped to the next line"
                ))))
            }
        }
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.array.take() {
            None => self.next_in_stream(),
            Some(Err(e)) => {
                // Nothing of a broken array can be trusted: one error, then the end.
                self.array = Some(Ok(Vec::new().into_iter()));
                self.at = format!("line {}", e.line());
                Some(Err(self.error(format!("not a JSON array of events: {e}"))))
            }
            Some(Ok(mut items)) => {
                let v = items.next()?;
                self.at = format!("[{}]", self.index);
                self.index += 1;
                self.array = Some(Ok(items));
                Some(Event::from_value(&v, self.defaults).map_err(|m| self.error(m)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's first event, as written there.
    const SEED_EVENT: &str = r#"{
        "eventTime": "2018-04-30T14:50:23.1324132Z",
        "deviceId": "978648",
        "custom": {
            "dimensions": {
                "0": {"name": "NodeType", "value": "N1"},
                "1": {"name": "Cluster", "value": "C1"},
                "2": {"name": "NodeName", "value": "N024"}
            },
            "filters": {
                "0": {"name": "application", "value": "A1"},
                "1": {"name": "deviceType", "value": "T1"},
                "2": {"name": "cluster", "value": "C1"},
                "3": {"name": "nodeType", "value": "N1"}
            }
        },
        "metric": {"name": "CPU", "value": 98, "count": 1.0, "min": 98, "max": 98, "stdDev": 0.0}
    }"#;

    fn one(text: &str, defaults: Defaults<'_>) -> Result<Event, String> {
        let v: Value = serde_json::from_str(text).unwrap();
        Event::from_value(&v, defaults)
    }

    fn all(text: &str) -> Vec<Result<Event, String>> {
        events("events.json", text, Defaults::default())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn reads_the_seeds_event() {
        let e = one(SEED_EVENT, Defaults::default()).unwrap();
        assert_eq!(e.time, 1_525_099_823_132);
        assert_eq!(e.device, "978648");
        assert_eq!((e.metric.as_str(), e.value), ("CPU", 98.0));
        assert_eq!(
            e.dims,
            [
                Some("N1".into()),
                Some("C1".into()),
                Some("N024".into()),
                None,
                None
            ]
        );
        assert_eq!(
            e.filters,
            [
                Some("A1".into()),
                Some("T1".into()),
                Some("C1".into()),
                Some("N1".into()),
                None
            ]
        );
    }

    #[test]
    fn plain_events_take_device_and_time_from_the_defaults_unless_they_carry_them() {
        let defaults = Defaults {
            device: Some("sensor-7"),
            time: Some(5_000),
        };
        let e = one(r#"{"metric": "temp", "value": 21.5}"#, defaults).unwrap();
        assert_eq!(
            (e.device.as_str(), e.time, e.metric.as_str(), e.value),
            ("sensor-7", 5_000, "temp", 21.5)
        );
        assert_eq!(e.dims, [None, None, None, None, None]);
        let e = one(
            r#"{"metric": "temp", "value": 3, "deviceId": "s-1", "time": 1000}"#,
            defaults,
        )
        .unwrap();
        assert_eq!((e.device.as_str(), e.time), ("s-1", 1000));
        let e = one(
            r#"{"metric": "temp", "value": 3, "time": "1970-01-01T00:00:02Z"}"#,
            defaults,
        )
        .unwrap();
        assert_eq!(e.time, 2000);
    }

    #[test]
    fn events_that_cannot_be_evaluated_say_why() {
        let none = Defaults::default();
        for (text, want) in [
            (r#"{"metric": "temp"}"#, "value: missing"),
            (
                r#"{"metric": "temp", "value": "NaN", "deviceId": "d", "time": 1}"#,
                "value: expected a finite number",
            ),
            (
                r#"{"metric": "temp", "value": null, "deviceId": "d", "time": 1}"#,
                "value: expected a finite number",
            ),
            (
                r#"{"metric": {"name": "CPU"}, "deviceId": "d", "time": 1}"#,
                "metric.value: missing",
            ),
            (
                r#"{"metric": {"value": 1}, "deviceId": "d", "time": 1}"#,
                "metric.name: missing",
            ),
            (r#"{"value": 1}"#, "metric: missing"),
            (r#"{"metric": 5, "value": 1}"#, "metric: expected"),
            (
                r#"{"metric": "t", "value": 1, "deviceId": "d"}"#,
                "eventTime: missing",
            ),
            (
                r#"{"metric": "t", "value": 1, "time": 1}"#,
                "deviceId: missing",
            ),
            (
                r#"{"metric": "t", "value": 1, "time": 1, "deviceId": ""}"#,
                "deviceId: expected",
            ),
            (
                r#"{"metric": "t", "value": 1, "deviceId": "d", "eventTime": "yesterday"}"#,
                "eventTime: expected an RFC 3339 time",
            ),
            (
                r#"{"metric": "t", "value": 1, "deviceId": "d", "time": -9223372036854775808}"#,
                "time: expected an RFC 3339 time or Unix milliseconds (years 0000 to 9999)",
            ),
            (
                r#"{"metric": "t", "value": 1, "deviceId": "d", "time": 253402300800000}"#,
                "time: expected",
            ),
            ("[1]", "expected an event"),
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let err = Event::from_value(&v, none).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        // Beyond f64 the JSON reader already refuses the number; the event is still one
        // error, not a panic or an infinity.
        let overflow = all(r#"{"metric": "t", "value": 1e999, "deviceId": "d", "time": 1}"#);
        assert_eq!(overflow.len(), 1);
        assert!(
            overflow[0].as_ref().unwrap_err().contains("not JSON"),
            "{overflow:?}"
        );
    }

    #[test]
    fn reads_lines_concatenated_objects_and_arrays_alike() {
        let line =
            |v: f64| format!(r#"{{"metric": "m", "value": {v}, "deviceId": "d", "time": 1}}"#);
        let values =
            |text: &str| -> Vec<f64> { all(text).into_iter().map(|r| r.unwrap().value).collect() };
        let lines = format!("{}\n{}\n\n{}\n", line(1.0), line(2.0), line(3.0));
        assert_eq!(values(&lines), [1.0, 2.0, 3.0]);
        let glued = format!("{}{}  {}", line(1.0), line(2.0), line(3.0));
        assert_eq!(values(&glued), [1.0, 2.0, 3.0]);
        let array = format!("[{}, {},\n {}]", line(1.0), line(2.0), line(3.0));
        assert_eq!(values(&array), [1.0, 2.0, 3.0]);
        let seed_style = format!("{SEED_EVENT}\n{SEED_EVENT}\n");
        assert_eq!(values(&seed_style), [98.0, 98.0]);
        assert!(all("").is_empty() && all(" \n ").is_empty());
    }

    #[test]
    fn a_broken_line_costs_one_event_and_says_where() {
        let text = concat!(
            "{\"metric\": \"m\", \"value\": 1, \"deviceId\": \"d\", \"time\": 1}\n",
            "{\"metric\": \"m\", \"value\": \n",
            "{\"metric\": \"m\", \"value\": 3, \"deviceId\": \"d\", \"time\": 1}\n",
            "{\"metric\": \"m\", \"value\": \"x\", \"deviceId\": \"d\", \"time\": 1}\n",
            "{\"metric\": \"m\", \"value\": 5, \"deviceId\": \"d\", \"time\": 1}\n",
        );
        let got = all(text);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().value, 1.0);
        let broken = got[1].as_ref().unwrap_err();
        assert!(
            broken.starts_with("events.json, line 2: not JSON"),
            "{broken}"
        );
        assert_eq!(got[2].as_ref().unwrap().value, 3.0);
        assert_eq!(
            got[3].as_ref().unwrap_err(),
            "events.json, line 4: value: expected a finite number, got \"x\""
        );
        assert_eq!(got[4].as_ref().unwrap().value, 5.0);

        let array = all(
            "[{\"metric\": \"m\", \"value\": 1, \"deviceId\": \"d\", \"time\": 1}, {\"metric\": \"m\"}]",
        );
        assert_eq!(array[0].as_ref().unwrap().value, 1.0);
        assert_eq!(
            array[1].as_ref().unwrap_err(),
            "events.json, [1]: value: missing"
        );
        let broken_array = all("[{\"metric\": \"m\"},\n");
        assert_eq!(broken_array.len(), 1);
        assert!(
            broken_array[0]
                .as_ref()
                .unwrap_err()
                .contains("not a JSON array of events"),
            "{broken_array:?}"
        );
    }
}
