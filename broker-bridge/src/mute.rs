//! Mute windows: recurring time intervals (`[[time_intervals]]`, after Alertmanager's)
//! that routes reference as `mute = [...]` (the route sends nothing while any of them is
//! active) or `active = [...]` (the route sends only while one of them is).
//!
//! An interval is active when any of its `times` entries matches; an entry matches when
//! every field it sets matches the wall-clock time in its `location` (an IANA zone,
//! default UTC; DST-correct, from the tz database compiled into the binary): `weekdays`
//! (`"monday:friday"`, `"sunday"`), `times` (`start_time` inclusive to `end_time`
//! exclusive, `"HH:MM"`, `end_time` up to `"24:00"`), `days_of_month` (1 to 31, or -1 for
//! the month's last day to -31, ranges `"1:7"`, `"-7:-1"`), `months` (`"january:march"`
//! or 1 to 12) and `years` (`"2026:2027"`). A field left out matches always. On a DST
//! change the wall clock is what counts: a window 02:00-03:00 does not happen on the
//! spring-forward day and happens twice (two real hours) on the fall-back day.
//!
//! What a muted route does with the alarms it holds back ([`Held`]): the latest state of
//! each alarm id is kept per route, and when the route's window ends the message is routed
//! again, so a firing muted alarm that still fires is delivered then (dedup keeps targets
//! that had it from getting it twice); a resolve that arrives while its firing is held
//! drops both (the resolve is an orphan, [`crate::orphan`]); a resolve of an alarm whose
//! firing went out before the window waits for the window's end. Messages without an alarm
//! id are dropped while muted.

use std::collections::HashMap;

use jiff::civil::DateTime;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use serde::Deserialize;

/// `[[time_intervals]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalRaw {
    pub name: String,
    /// Entries; the interval is active when any of them matches.
    pub times: Vec<EntryRaw>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntryRaw {
    pub weekdays: Vec<String>,
    pub times: Vec<TimeRangeRaw>,
    pub days_of_month: Vec<NumberOrRange>,
    pub months: Vec<NumberOrRange>,
    pub years: Vec<NumberOrRange>,
    /// IANA zone name; default UTC.
    pub location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeRaw {
    pub start_time: String,
    pub end_time: String,
}

/// `5` or `"5"`, `"1:7"`, `"march:may"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum NumberOrRange {
    Number(i64),
    Text(String),
}

/// A named interval, built.
#[derive(Clone, Debug)]
pub struct TimeInterval {
    pub name: String,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Monday = 1 .. Sunday = 7, inclusive ranges.
    weekdays: Vec<(i8, i8)>,
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u16, u16)>,
    /// Days, negative from the month's end, inclusive.
    days: Vec<(i8, i8)>,
    months: Vec<(i8, i8)>,
    years: Vec<(i64, i64)>,
    tz: TimeZone,
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl TimeInterval {
    /// Builds `raw`; an error names the key within the interval (`times[1].weekdays`).
    pub fn build(raw: &TimeIntervalRaw) -> Result<Self, (String, String)> {
        if raw.name.is_empty() {
            return Err(("name".into(), "must not be empty".into()));
        }
        if raw.times.is_empty() {
            return Err(("times".into(), "list at least one entry".into()));
        }
        let entries = raw
            .times
            .iter()
            .enumerate()
            .map(|(i, e)| Entry::build(e).map_err(|(k, m)| (format!("times[{i}].{k}"), m)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: raw.name.clone(),
            entries,
        })
    }

    /// Whether the interval is active at `now_ms` (Unix ms).
    pub fn active(&self, now_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else {
            return false;
        };
        self.entries.iter().any(|e| e.matches(e.tz.to_datetime(ts)))
    }
}

impl Entry {
    fn build(e: &EntryRaw) -> Result<Self, (String, String)> {
        let weekdays = e
            .weekdays
            .iter()
            .map(|w| range(w, |s| named(s, &WEEKDAYS)))
            .collect::<Result<_, _>>()
            .map_err(|m| ("weekdays".to_string(), m))?;
        let times = e
            .times
            .iter()
            .enumerate()
            .map(|(i, t)| time_range(t).map_err(|m| (format!("times[{i}]"), m)))
            .collect::<Result<_, _>>()?;
        let days = list(&e.days_of_month, day)
            .and_then(|d: Vec<(i64, i64)>| check_days(&d))
            .map_err(|m| ("days_of_month".to_string(), m))?;
        let months = list(&e.months, |s| {
            named(s, &MONTHS).or_else(|_| number_in(s, 1, 12, "a month (1 to 12 or its name)"))
        })
        .map_err(|m| ("months".to_string(), m))?;
        let years = list(&e.years, |s| number_in(s, 1, 9999, "a year"))
            .map_err(|m| ("years".to_string(), m))?;
        let tz = match e.location.as_deref() {
            None | Some("UTC") => TimeZone::UTC,
            Some(name) => zone(name).map_err(|m| ("location".to_string(), m))?,
        };
        Ok(Self {
            weekdays,
            times,
            days,
            months: months.iter().map(|&(a, b)| (a as i8, b as i8)).collect(),
            years,
            tz,
        })
    }

    fn matches(&self, t: DateTime) -> bool {
        let in_any = |ranges: &[(i64, i64)], v: i64| {
            ranges.is_empty() || ranges.iter().any(|&(a, b)| a <= v && v <= b)
        };
        let weekday = i64::from(t.weekday().to_monday_one_offset());
        let minute = u16::try_from(i32::from(t.hour()) * 60 + i32::from(t.minute())).unwrap_or(0);
        let last = i64::from(t.days_in_month());
        let day = i64::from(t.day());
        let widen = |v: &[(i8, i8)]| -> Vec<(i64, i64)> {
            v.iter()
                .map(|&(a, b)| (i64::from(a), i64::from(b)))
                .collect()
        };
        let days_ok = self.days.is_empty()
            || self.days.iter().any(|&(a, b)| {
                let abs = |d: i8| {
                    let d = i64::from(d);
                    if d < 0 { last + 1 + d } else { d }
                };
                abs(a) <= day && day <= abs(b)
            });
        in_any(&widen(&self.weekdays), weekday)
            && (self.times.is_empty() || self.times.iter().any(|&(a, b)| a <= minute && minute < b))
            && days_ok
            && in_any(&widen(&self.months), i64::from(t.month()))
            && in_any(&self.years, i64::from(t.year()))
    }
}

/// An IANA zone from the compiled-in database (the same on every device).
fn zone(name: &str) -> Result<TimeZone, String> {
    static DB: std::sync::OnceLock<TimeZoneDatabase> = std::sync::OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
        .get(name)
        .map_err(|_| format!("unknown time zone {name:?}; use an IANA name like \"Europe/Berlin\""))
}

/// `"a"` or `"a:b"`, each end parsed by `one`; the start must not come after the end.
fn range<T: PartialOrd + Copy>(
    text: &str,
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    let (a, b) = match text.split_once(':') {
        Some((a, b)) => (one(a.trim())?, one(b.trim())?),
        None => {
            let v = one(text.trim())?;
            (v, v)
        }
    };
    if a > b {
        return Err(format!("{text:?}: the start comes after the end"));
    }
    Ok((a, b))
}

fn list(
    items: &[NumberOrRange],
    one: impl Fn(&str) -> Result<i64, String>,
) -> Result<Vec<(i64, i64)>, String> {
    items
        .iter()
        .map(|item| match item {
            NumberOrRange::Number(n) => {
                let v = one(&n.to_string())?;
                Ok((v, v))
            }
            NumberOrRange::Text(t) => range_or_raw(t, &one),
        })
        .collect()
}

/// Like [`range`], but day ranges of mixed sign (`"1:-1"`) are ordered only per month.
fn range_or_raw(
    text: &str,
    one: &impl Fn(&str) -> Result<i64, String>,
) -> Result<(i64, i64), String> {
    match text.split_once(':') {
        Some((a, b)) => {
            let (a, b) = (one(a.trim())?, one(b.trim())?);
            if a.signum() == b.signum() && a > b {
                return Err(format!("{text:?}: the start comes after the end"));
            }
            Ok((a, b))
        }
        None => {
            let v = one(text.trim())?;
            Ok((v, v))
        }
    }
}

fn check_days(d: &[(i64, i64)]) -> Result<Vec<(i8, i8)>, String> {
    Ok(d.iter().map(|&(a, b)| (a as i8, b as i8)).collect())
}

fn day(s: &str) -> Result<i64, String> {
    let v: i64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a day of the month (1 to 31, or -1 to -31)"))?;
    if v == 0 || !(-31..=31).contains(&v) {
        return Err(format!(
            "{v} is not a day of the month (1 to 31, or -1 to -31)"
        ));
    }
    Ok(v)
}

fn named<T: From<i8>>(s: &str, names: &[&str]) -> Result<T, String> {
    let lower = s.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| T::from(i as i8 + 1))
        .ok_or_else(|| format!("{s:?} is not one of {}", names.join(", ")))
}

fn number_in(s: &str, min: i64, max: i64, what: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("{s:?} is not {what}"))
}

/// `"HH:MM"` to `"HH:MM"` as minutes of the day, `[start, end)`.
fn time_range(t: &TimeRangeRaw) -> Result<(u16, u16), String> {
    let minutes = |s: &str| -> Result<u16, String> {
        let bad = || format!("{s:?} is not a time of day \"HH:MM\" (00:00 to 24:00)");
        let (hh, mm) = s.split_once(':').ok_or_else(bad)?;
        if hh.len() != 2 || mm.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (
            hh.parse().map_err(|_| bad())?,
            mm.parse().map_err(|_| bad())?,
        );
        let v = h * 60 + m;
        if m > 59 || v > 24 * 60 {
            return Err(bad());
        }
        Ok(v)
    };
    let (a, b) = (minutes(&t.start_time)?, minutes(&t.end_time)?);
    if a >= b {
        return Err(format!(
            "start_time {:?} must come before end_time {:?}",
            t.start_time, t.end_time
        ));
    }
    Ok((a, b))
}

/// A route's `mute` or `active` names as indices into the intervals.
pub fn resolve_names(names: &[String], intervals: &[TimeInterval]) -> Result<Vec<usize>, String> {
    names
        .iter()
        .map(|n| {
            intervals.iter().position(|i| &i.name == n).ok_or_else(|| {
                format!("no time interval named {n:?}; define it in [[time_intervals]]")
            })
        })
        .collect()
}

/// Whether a route with these `mute` and `active` lists is muted at `now_ms`.
pub fn route_muted(
    mute: &[usize],
    active: &[usize],
    intervals: &[TimeInterval],
    now_ms: i64,
) -> bool {
    mute.iter().any(|&i| intervals[i].active(now_ms))
        || (!active.is_empty() && !active.iter().any(|&i| intervals[i].active(now_ms)))
}

/// A held message: whether it is a resolve, its topic and payload.
type HeldMessage = (bool, String, Vec<u8>);

/// What muted routes held back: per route, the latest message of each alarm id.
#[derive(Debug, Default)]
pub struct Held {
    /// Route → alarm id → its latest message.
    by_route: HashMap<usize, HashMap<String, HeldMessage>>,
    capacity: usize,
    len: usize,
}

/// What [`Held::hold`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    Kept,
    /// A resolve met its held firing: both dropped (the resolve is an orphan).
    Orphan,
    Full,
}

impl Held {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_route: HashMap::new(),
            capacity: capacity.max(1),
            len: 0,
        }
    }

    /// Keeps the latest state of alarm `id` for route `ri`.
    pub fn hold(&mut self, ri: usize, id: &str, state: &str, topic: &str, payload: &[u8]) -> Hold {
        let route = self.by_route.entry(ri).or_default();
        let resolved = state == "resolved";
        if resolved
            && route
                .get(id)
                .is_some_and(|(was_resolved, _, _)| !was_resolved)
        {
            route.remove(id);
            self.len -= 1;
            return Hold::Orphan;
        }
        if !route.contains_key(id) {
            if self.len >= self.capacity {
                return Hold::Full;
            }
            self.len += 1;
        }
        route.insert(
            id.to_owned(),
            (resolved, topic.to_owned(), payload.to_vec()),
        );
        Hold::Kept
    }

    /// Everything held for route `ri`, to route again now that its window ended.
    pub fn release(&mut self, ri: usize) -> Vec<(String, Vec<u8>)> {
        let out: Vec<_> = self
            .by_route
            .remove(&ri)
            .map(|m| m.into_values().map(|(_, t, p)| (t, p)).collect())
            .unwrap_or_default();
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(toml_text: &str) -> Result<TimeInterval, (String, String)> {
        let raw: TimeIntervalRaw = toml::from_str(toml_text).unwrap();
        TimeInterval::build(&raw)
    }

    /// Unix ms of a UTC time.
    fn utc(text: &str) -> i64 {
        let ts: jiff::Timestamp = text.parse().unwrap();
        ts.as_millisecond()
    }

    #[test]
    fn weekdays_and_times_match_the_wall_clock_of_the_location() {
        let i = interval(
            r#"name = "office"
               times = [{ weekdays = ["monday:friday"], times = [{ start_time = "09:00", end_time = "17:00" }], location = "Europe/Berlin" }]"#,
        )
        .unwrap();
        // Monday 2026-12-07: 08:00 UTC is 09:00 in Berlin (CET, +1).
        assert!(!i.active(utc("2026-12-07T07:59:59Z")));
        assert!(i.active(utc("2026-12-07T08:00:00Z")));
        assert!(i.active(utc("2026-12-07T15:59:59Z")));
        assert!(!i.active(utc("2026-12-07T16:00:00Z")), "end is exclusive");
        assert!(!i.active(utc("2026-12-06T10:00:00Z")), "Sunday");
        assert!(i.active(utc("2026-12-11T10:00:00Z")), "Friday");
    }

    #[test]
    fn a_window_follows_the_dst_change_in_spring_and_in_autumn() {
        let i = interval(
            r#"name = "night"
               times = [{ times = [{ start_time = "02:00", end_time = "03:00" }, { start_time = "03:00", end_time = "04:00" }], location = "Europe/Berlin" }]"#,
        )
        .unwrap();
        // 2026-03-28 (CET, +1): 02:00-04:00 local is 01:00-03:00 UTC.
        assert!(i.active(utc("2026-03-28T01:00:00Z")));
        assert!(i.active(utc("2026-03-28T02:59:00Z")));
        // 2026-03-29: at 02:00 CET the clocks jump to 03:00 CEST (+2): 01:00 UTC is 03:00
        // local; 02:00-03:00 does not happen, 03:00-04:00 is 01:00-02:00 UTC.
        assert!(!i.active(utc("2026-03-29T00:59:00Z")), "01:59 CET");
        assert!(i.active(utc("2026-03-29T01:00:00Z")), "03:00 CEST");
        assert!(i.active(utc("2026-03-29T01:59:00Z")), "03:59 CEST");
        assert!(!i.active(utc("2026-03-29T02:00:00Z")), "04:00 CEST");
        // 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET: 02:00-03:00 local
        // happens twice (00:00-01:00 and 01:00-02:00 UTC), 03:00-04:00 is 02:00-03:00 UTC.
        assert!(!i.active(utc("2026-10-24T23:59:00Z")), "01:59 CEST");
        assert!(i.active(utc("2026-10-25T00:00:00Z")), "02:00 CEST");
        assert!(
            i.active(utc("2026-10-25T01:30:00Z")),
            "02:30 CET, the second time"
        );
        assert!(i.active(utc("2026-10-25T02:59:00Z")), "03:59 CET");
        assert!(!i.active(utc("2026-10-25T03:00:00Z")), "04:00 CET");
    }

    #[test]
    fn negative_days_of_month_count_from_the_month_end() {
        let i = interval(
            r#"name = "month-end"
               times = [{ days_of_month = ["-3:-1"] }]"#,
        )
        .unwrap();
        assert!(
            i.active(utc("2026-02-26T12:00:00Z")),
            "Feb has 28 days in 2026"
        );
        assert!(!i.active(utc("2026-02-25T12:00:00Z")));
        assert!(i.active(utc("2028-02-27T12:00:00Z")), "29 in a leap year");
        assert!(!i.active(utc("2028-02-26T12:00:00Z")));
        assert!(i.active(utc("2026-12-31T23:59:00Z")));
        assert!(!i.active(utc("2026-12-28T23:59:00Z")));
        let first_to_last = interval(
            r#"name = "all"
               times = [{ days_of_month = ["1:-1", 15] }]"#,
        )
        .unwrap();
        assert!(first_to_last.active(utc("2026-04-30T00:00:00Z")));
    }

    #[test]
    fn months_by_name_or_number_and_years_in_ranges() {
        let i = interval(
            r#"name = "q1"
               times = [{ months = ["january:march", 12], years = ["2026:2027"] }]"#,
        )
        .unwrap();
        assert!(i.active(utc("2026-01-01T00:00:00Z")));
        assert!(i.active(utc("2027-03-31T23:59:00Z")));
        assert!(!i.active(utc("2026-04-01T00:00:00Z")));
        assert!(i.active(utc("2026-12-15T00:00:00Z")));
        assert!(!i.active(utc("2028-02-01T00:00:00Z")), "not in the years");
        let any_entry = interval(
            r#"name = "two"
               times = [{ weekdays = ["sunday"] }, { months = ["7"] }]"#,
        )
        .unwrap();
        assert!(any_entry.active(utc("2026-12-06T12:00:00Z")), "Sunday");
        assert!(any_entry.active(utc("2026-07-01T12:00:00Z")), "July");
        assert!(!any_entry.active(utc("2026-12-07T12:00:00Z")));
    }

    #[test]
    fn bad_ranges_names_and_zones_are_errors_naming_the_key() {
        let err = |text: &str| interval(&format!("name = \"x\"\ntimes = [{text}]")).unwrap_err();
        assert_eq!(err(r#"{ weekdays = ["funday"] }"#).0, "times[0].weekdays");
        assert_eq!(
            err(r#"{ weekdays = ["friday:monday"] }"#).0,
            "times[0].weekdays"
        );
        assert_eq!(
            err(r#"{ days_of_month = [0] }"#).0,
            "times[0].days_of_month"
        );
        assert_eq!(
            err(r#"{ days_of_month = ["-1:-3"] }"#).0,
            "times[0].days_of_month"
        );
        assert_eq!(err(r#"{ months = ["13"] }"#).0, "times[0].months");
        assert_eq!(err(r#"{ months = ["may:march"] }"#).0, "times[0].months");
        let (key, msg) = err(r#"{ location = "Mars/Olympus" }"#);
        assert_eq!(key, "times[0].location");
        assert!(msg.contains("Mars/Olympus"), "{msg}");
        let (key, _) = err(r#"{}, { times = [{ start_time = "10:00", end_time = "09:00" }] }"#);
        assert_eq!(key, "times[1].times[0]");
        assert_eq!(
            err(r#"{ times = [{ start_time = "9", end_time = "10:00" }] }"#).0,
            "times[0].times[0]"
        );
        assert_eq!(
            err(r#"{ times = [{ start_time = "00:00", end_time = "24:01" }] }"#).0,
            "times[0].times[0]"
        );
        assert!(interval("name = \"x\"\ntimes = [{ times = [{ start_time = \"00:00\", end_time = \"24:00\" }] }]").is_ok());
    }

    #[test]
    fn a_muted_firing_is_held_until_released_and_its_resolve_drops_both() {
        let mut h = Held::new(10);
        let firing = br#"{"id":"a","state":"firing"}"#;
        let resolved = br#"{"id":"a","state":"resolved"}"#;
        assert_eq!(h.hold(0, "a", "firing", "t", firing), Hold::Kept);
        assert_eq!(h.hold(0, "a", "resolved", "t", resolved), Hold::Orphan);
        assert!(h.release(0).is_empty());
        // A resolve whose firing went out before the window is kept for its end.
        assert_eq!(h.hold(0, "b", "resolved", "t", resolved), Hold::Kept);
        assert_eq!(h.release(0), vec![("t".to_string(), resolved.to_vec())]);
        let mut small = Held::new(1);
        small.hold(0, "a", "firing", "t", firing);
        assert_eq!(small.hold(1, "b", "firing", "t", firing), Hold::Full);
    }
}
