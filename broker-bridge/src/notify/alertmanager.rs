//! The `http` plugin's `format = "alertmanager"`: the JSON body Prometheus Alertmanager
//! posts to its webhook receivers (version 4), so anything that reads Alertmanager
//! webhooks (alert routers, chat bots, incident tools) can take Lookout's alarms as they
//! are.
//!
//! One alert per alarm; a `group_by` batch is one payload with one alert per member.
//! Each alert's labels are the alarm's `labels` (as strings) plus `alertname` (the alarm's
//! `source`, else the topic), `host` and `severity` (1–4); its one annotation is
//! `summary`. `startsAt` is the episode's `started_at` (else `ts`); `endsAt` is the time it
//! resolved (`ts`), and Alertmanager's zero time `0001-01-01T00:00:00Z` while it fires.
//! `fingerprint` is 16 hex digits of a 64-bit FNV-1a hash of the alarm's `id` (Alertmanager
//! hashes the label set the same way), so an episode keeps one fingerprint from firing to
//! resolved. `groupKey` is the incident key (the alarm's `id`, a batch's `group:` and its
//! labels, or the topic), `receiver` the target's name, `commonLabels` the labels every
//! alert shares; `groupLabels`, `commonAnnotations`, `externalURL` and `generatorURL` are
//! empty, since the bridge has no such things.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::Notification;
use super::alarm::{
    Alarm, DEFAULT_SEVERITY, State, rfc3339_ms, scalar_text, severity_of, state_of,
};

/// Alertmanager's (Go's) zero time: the `endsAt` of an alert that has not ended.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The webhook body for one notification.
pub(crate) fn payload(n: &Notification) -> Value {
    let alarm = Alarm::of(n);
    let members: Vec<&Value> = match n.fields.get("alerts").and_then(Value::as_array) {
        Some(alerts) if n.fields.get("group").is_some() => alerts.iter().collect(),
        _ => vec![&n.fields],
    };
    let single = members.len() == 1 && n.fields.get("group").is_none();
    let now = lookout_shared::time::now_ms();
    let alerts: Vec<(BTreeMap<String, String>, Value)> = members
        .iter()
        .map(|fields| alert(n, fields, single, now))
        .collect();
    let mut common = alerts.first().map(|(l, _)| l.clone()).unwrap_or_default();
    for (labels, _) in &alerts[1.min(alerts.len())..] {
        common.retain(|k, v| labels.get(k) == Some(v));
    }
    json!({
        "version": "4",
        "groupKey": alarm.key,
        "truncatedAlerts": 0,
        "status": status(alarm.state),
        "receiver": n.target,
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts.into_iter().map(|(_, a)| a).collect::<Vec<_>>(),
    })
}

fn status(state: State) -> &'static str {
    match state {
        State::Firing => "firing",
        State::Resolved => "resolved",
    }
}

/// One alert, and its labels (for `commonLabels`). `single`: the notification is this one
/// message, so the topic and the rendered body stand in for a missing `source` and
/// `summary`.
fn alert(
    n: &Notification,
    fields: &Value,
    single: bool,
    now: i64,
) -> (BTreeMap<String, String>, Value) {
    let text = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let time = |k: &str| fields.get(k).and_then(Value::as_i64).and_then(rfc3339_ms);
    let state = state_of(fields);
    let mut labels: BTreeMap<String, String> = fields
        .get("labels")
        .and_then(Value::as_object)
        .map(Map::iter)
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null() && !v.is_array() && !v.is_object())
        .map(|(k, v)| (k.clone(), scalar_text(v)))
        .collect();
    let alertname = text("source").or(single.then_some(n.topic.as_str()));
    if let Some(name) = alertname {
        labels.insert("alertname".into(), name.to_owned());
    }
    if let Some(host) = text("host") {
        labels.insert("host".into(), host.to_owned());
    }
    let severity = severity_of(fields).unwrap_or(DEFAULT_SEVERITY);
    labels.insert("severity".into(), severity.to_string());

    let mut annotations = Map::new();
    let summary = text("summary").or((single && !n.body.is_empty()).then_some(n.body.as_str()));
    if let Some(summary) = summary {
        annotations.insert("summary".into(), json!(summary));
    }
    let now_text = || rfc3339_ms(now).unwrap_or_else(|| ZERO_TIME.to_owned());
    let starts_at = time("started_at")
        .or_else(|| time("ts"))
        .unwrap_or_else(now_text);
    let ends_at = match state {
        State::Firing => ZERO_TIME.to_owned(),
        State::Resolved => time("ts").unwrap_or_else(now_text),
    };
    let id = text("id").map_or_else(|| Alarm::of(n).key, str::to_owned);
    let alert = json!({
        "status": status(state),
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "",
        "fingerprint": format!("{:016x}", fnv1a64(id.as_bytes())),
    });
    (labels, alert)
}

/// 64-bit FNV-1a, as Alertmanager's fingerprints use.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_support::alarm;

    #[test]
    fn a_firing_alarm_is_one_firing_alert_with_its_labels_and_the_zero_end_time() {
        let p = payload(&alarm());
        assert_eq!(
            p,
            json!({
                "version": "4",
                "groupKey": "sim-1:cpu_util:1795457375316",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "test",
                "groupLabels": {},
                "commonLabels": {"alertname": "cpu_util", "host": "sim-1", "ip": "10.0.0.1",
                                 "severity": "3"},
                "commonAnnotations": {},
                "externalURL": "",
                "alerts": [{
                    "status": "firing",
                    "labels": {"alertname": "cpu_util", "host": "sim-1", "ip": "10.0.0.1",
                               "severity": "3"},
                    "annotations": {"summary": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)"},
                    "startsAt": "2026-11-23T18:09:35.316Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": format!("{:016x}", fnv1a64(b"sim-1:cpu_util:1795457375316")),
                }]
            })
        );
    }

    #[test]
    fn a_resolved_alarm_ends_when_it_resolved_and_keeps_its_fingerprint() {
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.fields["ts"] = json!(1795457436316_i64);
        let p = payload(&n);
        assert_eq!(p["status"], "resolved");
        let a = &p["alerts"][0];
        assert_eq!(a["status"], "resolved");
        assert_eq!(a["endsAt"], "2026-11-23T18:10:36.316Z");
        assert_eq!(
            a["fingerprint"],
            payload(&alarm())["alerts"][0]["fingerprint"]
        );
        let fp = a["fingerprint"].as_str().unwrap();
        assert!(
            fp.len() == 16 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            "{fp}"
        );
    }

    #[test]
    fn fingerprints_are_fnv_1a_64() {
        // The FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn a_group_batch_is_one_alert_per_member_with_the_labels_they_share() {
        let mut n = alarm();
        let mut a = alarm().fields;
        a["labels"] = json!({"site": "s1", "ip": "10.0.0.1"});
        let mut b = a.clone();
        b["id"] = json!("sim-2:mem:1");
        b["host"] = json!("sim-2");
        b["state"] = json!("resolved");
        b["labels"]["ip"] = json!("10.0.0.2");
        n.fields = json!({"group": {"labels.site": "s1"}, "count": 2, "alerts": [a, b]});
        let p = payload(&n);
        assert_eq!(p["groupKey"], "group:labels.site=s1");
        assert_eq!(p["status"], "firing");
        assert_eq!(
            p["commonLabels"],
            json!({"alertname": "cpu_util", "severity": "3", "site": "s1"})
        );
        let alerts = p["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["status"], "firing");
        assert_eq!(alerts[1]["status"], "resolved");
        assert_eq!(alerts[1]["labels"]["host"], "sim-2");
        assert_ne!(alerts[0]["fingerprint"], alerts[1]["fingerprint"]);
    }

    #[test]
    fn other_messages_are_named_by_their_topic_and_summarised_by_the_body() {
        let mut n = alarm();
        n.fields = json!({"payload": "disk full"});
        n.body = "disk full".into();
        let a = &payload(&n)["alerts"][0];
        assert_eq!(
            a["labels"],
            json!({"alertname": "lookout/sim-1/alarms/cpu_util", "severity": "2"})
        );
        assert_eq!(a["annotations"], json!({"summary": "disk full"}));
        assert_eq!(a["endsAt"], ZERO_TIME);
        assert!(a["startsAt"].as_str().unwrap().ends_with('Z'));
    }
}
