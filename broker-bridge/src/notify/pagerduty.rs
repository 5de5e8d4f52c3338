//! `type = "pagerduty"`: opens and resolves PagerDuty incidents through the Events API v2
//! (`POST <base_url>/v2/enqueue`).
//!
//! ```toml
//! [targets.pager]
//! type = "pagerduty"
//! routing_key = "env:PAGERDUTY_ROUTING_KEY"
//! ```
//!
//! A firing alarm is a `trigger`, an acknowledgement (`state = "acknowledged"`, from
//! `lookout-bridge ack` or a chat button) an `acknowledge`, a resolved one a `resolve`, all
//! with the alarm's `id` as `dedup_key`: the agent re-publishes a firing alarm when its level changes and after
//! reconnects, and PagerDuty folds those into the one open incident, which the resolution
//! then closes. Severity 1–4 maps to `info`, `warning`, `error`, `critical`.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::alarm::{Alarm, State, bounded_key, time_field, title_and_text, truncate_chars};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    send_checked, target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "pagerduty"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The integration key of an Events API v2 integration (a service's or a global
    /// ruleset's, 32 characters): a literal, `env:NAME` or `file:/path`; never logged.
    pub routing_key: Secret,
    /// The Events API server, default `"https://events.pagerduty.com"`; `/v2/enqueue` is
    /// appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// `payload.source` for messages without a `host` (default `"lookout"`).
    #[serde(default = "default_source")]
    pub source: String,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_base_url() -> String {
    "https://events.pagerduty.com".to_owned()
}

fn default_source() -> String {
    "lookout".to_owned()
}

/// The Events API's limits: `dedup_key` 255 characters, `payload.summary` 1024.
const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;
/// `payload.source` and `component` have no documented limit; this keeps them readable.
const MAX_SOURCE: usize = 255;

/// The PagerDuty plugin, built from a validated [`Config`].
pub struct PagerDuty {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    routing_key: Secret,
    source: String,
    redactor: Redactor,
}

#[derive(Debug, Serialize)]
struct Event<'a> {
    routing_key: &'a str,
    event_action: &'static str,
    dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload>,
}

#[derive(Debug, Serialize)]
struct Payload {
    summary: String,
    source: String,
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<String>,
    custom_details: Map<String, Value>,
}

impl PagerDuty {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let key = cfg.routing_key.expose().trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(target_error(
                name,
                "routing_key",
                "must be an Events API v2 integration key (no spaces)",
            ));
        }
        let source = cfg.source.trim();
        if source.is_empty() {
            return Err(target_error(name, "source", "must not be empty"));
        }
        let base = parse_base_url(name, "base_url", &cfg.base_url)?;
        let mut redactor = Redactor::default();
        redactor.add(key);
        Ok(PagerDuty {
            client: client(name, cfg.timeout)?,
            url: join_path(&base, &["v2", "enqueue"]),
            endpoint: endpoint(&base),
            routing_key: Secret::new(key.to_owned()),
            source: truncate_chars(source, MAX_SOURCE),
            redactor,
        })
    }

    fn event<'a>(&'a self, n: &Notification) -> Event<'a> {
        let alarm = Alarm::of(n);
        let dedup_key = bounded_key(&alarm.key, MAX_DEDUP_KEY);
        // A resolve and an acknowledge need only the key: PagerDuty ignores a payload on
        // them, and an acknowledgement sent as a trigger would page again.
        let bare = match alarm.state {
            State::Resolved => Some("resolve"),
            State::Firing if alarm.acknowledged => Some("acknowledge"),
            State::Firing => None,
        };
        if let Some(event_action) = bare {
            return Event {
                routing_key: self.routing_key.expose(),
                event_action,
                dedup_key,
                client: None,
                payload: None,
            };
        }
        // PagerDuty shows no picture: the score's sparkline goes with the body.
        let (title, body) = title_and_text(n, false);
        let body = body.as_ref();
        let summary = if title.is_empty() { body } else { title };
        let mut details = Map::new();
        if !alarm.labels.is_empty() {
            details.insert("labels".into(), Value::Object(alarm.labels.clone()));
        }
        for key in ["score", "threshold", "severity", "id", "count"] {
            if let Some(v) = n.fields.get(key).filter(|v| !v.is_null()) {
                details.insert(key.into(), v.clone());
            }
        }
        if let Some(started) = time_field(n, "started_at") {
            details.insert("started_at".into(), json!(started));
        }
        details.insert("topic".into(), json!(n.topic));
        if !body.is_empty() && body != summary {
            details.insert("body".into(), json!(body));
        }
        Event {
            routing_key: self.routing_key.expose(),
            event_action: "trigger",
            dedup_key,
            client: Some("Lookout"),
            payload: Some(Payload {
                summary: truncate_chars(summary, MAX_SUMMARY),
                source: truncate_chars(alarm.host.unwrap_or(&self.source), MAX_SOURCE),
                severity: severity(alarm.severity),
                timestamp: time_field(n, "ts"),
                component: alarm.source.map(|s| truncate_chars(s, MAX_SOURCE)),
                custom_details: details,
            }),
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let event = self.event(n);
        let req = self.client.post(self.url.clone()).json(&event);
        send_checked(
            "pagerduty",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(
            endpoint = %self.endpoint,
            action = event.event_action,
            dedup_key = %event.dedup_key,
            "pagerduty event accepted"
        );
        Ok(())
    }
}

/// The Events API's severity for Lookout's 1–4.
fn severity(level: u8) -> &'static str {
    match level {
        ..=1 => "info",
        2 => "warning",
        3 => "error",
        _ => "critical",
    }
}

impl Notifier for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDuty")
            .field("endpoint", &self.endpoint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::alarm;

    const KEY: &str = "R0ut1ngKeyR0ut1ngKeyR0ut1ngKey32";

    fn build(server: &TestServer) -> PagerDuty {
        let cfg: Config = toml::from_str(&format!(
            "routing_key = \"{KEY}\"\nbase_url = \"{}\"",
            server.url("")
        ))
        .expect("valid config");
        PagerDuty::build("pager", &cfg).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).expect("valid config");
        PagerDuty::build("pager", &cfg)
            .expect_err("rejected")
            .to_string()
    }

    fn accepted() -> Reply {
        Reply::json(
            202,
            json!({"status": "success", "message": "Event processed",
                   "dedup_key": "sim-1:cpu_util:1795457375316"}),
        )
    }

    #[tokio::test]
    async fn a_firing_alarm_triggers_with_the_alarm_id_as_dedup_key() {
        let mut server = TestServer::start(vec![accepted()]).await;
        build(&server).send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v2/enqueue");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "routing_key": KEY,
                "event_action": "trigger",
                "dedup_key": "sim-1:cpu_util:1795457375316",
                "client": "Lookout",
                "payload": {
                    "summary": "[firing] sim-1 cpu_util",
                    "source": "sim-1",
                    "severity": "error",
                    "timestamp": "2026-11-23T18:09:36.316Z",
                    "component": "cpu_util",
                    "custom_details": {
                        "labels": {"ip": "10.0.0.1"},
                        "score": 4.1,
                        "threshold": 2.0,
                        "severity": 3,
                        "id": "sim-1:cpu_util:1795457375316",
                        "started_at": "2026-11-23T18:09:35.316Z",
                        "topic": "lookout/sim-1/alarms/cpu_util",
                        "body": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)"
                    }
                }
            })
        );
    }

    #[tokio::test]
    async fn an_acknowledgement_acknowledges_the_same_dedup_key_instead_of_triggering() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.fields["state"] = json!("acknowledged");
        n.fields["summary"] = json!("acknowledged by alice");
        build(&server).send(&n).await.expect("delivered");
        assert_eq!(
            server.request().await.json(),
            json!({"routing_key": KEY, "event_action": "acknowledge",
                   "dedup_key": "sim-1:cpu_util:1795457375316"})
        );
    }

    #[tokio::test]
    async fn an_alarm_with_a_window_carries_the_score_sparkline_in_its_details() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let n = crate::notify::test_support::windowed_alarm();
        build(&server).send(&n).await.expect("delivered");
        let body = server.request().await.json()["payload"]["custom_details"]["body"]
            .as_str()
            .unwrap()
            .to_owned();
        let (text, line) = body.split_once('\n').expect("two lines");
        assert_eq!(text, n.body);
        assert!(
            line.starts_with("score ▂") && line.contains("threshold"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn a_resolved_alarm_resolves_the_same_dedup_key() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        build(&server).send(&n).await.expect("delivered");
        assert_eq!(
            server.request().await.json(),
            json!({"routing_key": KEY, "event_action": "resolve",
                   "dedup_key": "sim-1:cpu_util:1795457375316"})
        );
    }

    #[tokio::test]
    async fn severities_map_and_long_summaries_and_keys_are_cut_to_the_apis_limits() {
        assert_eq!(
            (1..=4).map(severity).collect::<Vec<_>>(),
            ["info", "warning", "error", "critical"]
        );
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.title = "ü".repeat(2000);
        n.fields["id"] = json!("k".repeat(400));
        n.fields["severity"] = json!(4);
        build(&server).send(&n).await.expect("delivered");
        let body = server.request().await.json();
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SUMMARY);
        assert!(summary.ends_with('…'));
        assert_eq!(body["dedup_key"].as_str().unwrap().chars().count(), 255);
        assert_eq!(body["payload"]["severity"], "critical");
    }

    #[tokio::test]
    async fn a_plain_message_triggers_keyed_by_its_topic_from_the_configured_source() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.fields = json!({"payload": "disk full"});
        n.title = String::new();
        n.body = "disk full".into();
        build(&server).send(&n).await.expect("delivered");
        let body = server.request().await.json();
        assert_eq!(body["dedup_key"], "lookout/sim-1/alarms/cpu_util");
        assert_eq!(body["payload"]["summary"], "disk full");
        assert_eq!(body["payload"]["source"], "lookout");
        assert_eq!(body["payload"]["severity"], "warning");
        assert_eq!(body["payload"].get("timestamp"), None);
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried_and_invalid_events_are_not() {
        let mut server = TestServer::start(vec![
            Reply::json(429, json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly"})),
            Reply::text(500, ""),
            Reply::json(400, json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["'routing_key' is invalid"]})),
        ])
        .await;
        let pd = build(&server);
        assert!(matches!(pd.send(&alarm()).await, Err(SendError::Retry(_))));
        assert!(matches!(pd.send(&alarm()).await, Err(SendError::Retry(_))));
        let err = pd.send(&alarm()).await.expect_err("400");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("pagerduty: HTTP 400 Bad Request:") && m.contains("Event object is invalid")),
            "{err:?}"
        );
        for _ in 0..3 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "routing_key = \"{KEY}\"\nbase_url = \"http://{}\"",
            refused_addr().await
        ))
        .unwrap();
        let refused = PagerDuty::build("pager", &cfg).unwrap();
        assert!(matches!(
            refused.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn the_routing_key_never_appears_in_debug_output_or_error_messages() {
        let _server = TestServer::start(vec![Reply::text(
            400,
            &format!("unknown routing_key {KEY}"),
        )])
        .await;
        let pd = build(&_server);
        let texts = [
            format!("{pd:?}"),
            pd.send(&alarm()).await.expect_err("400").to_string(),
        ];
        for text in &texts {
            assert!(!text.contains(KEY), "routing key leaked in {text:?}");
        }
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str(&format!("type = \"pagerduty\"\nrouting_key = \"{KEY}\"")).unwrap();
        let TargetConfig::Pagerduty(cfg) = parsed else {
            panic!("pagerduty")
        };
        assert_eq!(cfg.base_url, "https://events.pagerduty.com");
        let pd = PagerDuty::build("pager", &cfg).unwrap();
        assert_eq!(pd.url.as_str(), "https://events.pagerduty.com/v2/enqueue");
        assert!(toml::from_str::<Config>("routing_key = \"k\"\nservice_key = \"k\"").is_err());
        assert!(build_error("routing_key = \" \"").starts_with("targets.pager.routing_key:"));
        assert!(
            build_error("routing_key = \"k\"\nsource = \"\"").starts_with("targets.pager.source:")
        );
        assert!(
            build_error("routing_key = \"k\"\nbase_url = \"events.pagerduty.com\"")
                .starts_with("targets.pager.base_url:")
        );
    }
}
