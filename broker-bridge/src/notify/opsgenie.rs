//! `type = "opsgenie"`: creates and closes Opsgenie alerts through the Alert API
//! (`POST <base>/v2/alerts`, `POST <base>/v2/alerts/<alias>/close?identifierType=alias`).
//!
//! ```toml
//! [targets.opsgenie]
//! type = "opsgenie"
//! api_key = "env:OPSGENIE_API_KEY"
//! region = "eu"
//! ```
//!
//! The alarm's `id` is the alert's `alias`: Opsgenie de-duplicates creates with the same
//! alias into one open alert (re-publications after a level change or a reconnect only
//! raise its count), and the resolution closes it by that alias. Severity 1–4 maps to
//! priority P5, P3, P2, P1: level 1 is information, and P3 is Opsgenie's own default.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::alarm::{
    Alarm, State, bounded_key, scalar_text, title_and_body, title_and_text, truncate_chars,
};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    send_checked, target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "opsgenie"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An API integration's key, sent as `Authorization: GenieKey <key>`: a literal,
    /// `env:NAME` or `file:/path`; never logged.
    pub api_key: Secret,
    /// Where the account lives: `"us"` (default, `https://api.opsgenie.com`) or `"eu"`
    /// (`https://api.eu.opsgenie.com`).
    #[serde(default)]
    pub region: Region,
    /// Another API server instead of the region's (a proxy, a test server); excludes
    /// `region`.
    pub base_url: Option<String>,
    /// Tags added to every alert, after the alarm's host and source.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

/// The Alert API's documented limits, in characters.
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_ENTITY: usize = 512;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 50;
/// `details` as a whole: keys and values together.
const MAX_DETAILS: usize = 8_000;
const SOURCE: &str = "Lookout";

/// The Opsgenie plugin, built from a validated [`Config`].
pub struct Opsgenie {
    client: reqwest::Client,
    base: Url,
    endpoint: String,
    auth: HeaderValue,
    tags: Vec<String>,
    redactor: Redactor,
}

#[derive(Debug, Serialize)]
struct Create {
    message: String,
    alias: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    details: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<String>,
    source: &'static str,
    priority: &'static str,
}

#[derive(Debug, Serialize)]
struct Close {
    source: &'static str,
    note: String,
}

/// `POST /v2/alerts/{alias}/acknowledge?identifierType=alias`: someone is on it.
#[derive(Serialize)]
struct Acknowledge {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    source: &'static str,
    note: String,
}

/// The API's limit on the acknowledging user's name.
const MAX_USER: usize = 100;

impl Opsgenie {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let key = cfg.api_key.expose().trim();
        let auth = HeaderValue::from_str(&format!("GenieKey {key}"))
            .ok()
            .filter(|_| !key.is_empty() && !key.contains(' '));
        let Some(mut auth) = auth else {
            return Err(target_error(
                name,
                "api_key",
                "must be an API integration key (no spaces or control characters)",
            ));
        };
        auth.set_sensitive(true);
        let base = match (&cfg.base_url, cfg.region) {
            (Some(url), Region::Us) => parse_base_url(name, "base_url", url)?,
            (Some(_), Region::Eu) => {
                return Err(target_error(
                    name,
                    "base_url",
                    "and region exclude each other",
                ));
            }
            (None, Region::Us) => Url::parse("https://api.opsgenie.com").expect("valid"),
            (None, Region::Eu) => Url::parse("https://api.eu.opsgenie.com").expect("valid"),
        };
        let mut tags = Vec::new();
        for tag in &cfg.tags {
            let tag = tag.trim();
            if tag.is_empty() || tag.chars().count() > MAX_TAG {
                return Err(target_error(
                    name,
                    "tags",
                    format!("{tag:?}: tags are 1-{MAX_TAG} characters"),
                ));
            }
            tags.push(tag.to_owned());
        }
        if tags.len() > MAX_TAGS - 2 {
            return Err(target_error(
                name,
                "tags",
                format!(
                    "at most {} (Opsgenie keeps {MAX_TAGS}, two are the host and source)",
                    MAX_TAGS - 2
                ),
            ));
        }
        let mut redactor = Redactor::default();
        redactor.add(key);
        Ok(Opsgenie {
            client: client(name, cfg.timeout)?,
            endpoint: endpoint(&base),
            base,
            auth,
            tags,
            redactor,
        })
    }

    fn create(&self, n: &Notification, alarm: &Alarm<'_>) -> Create {
        // Opsgenie shows no picture: the score's sparkline goes with the description.
        let (title, body) = title_and_text(n, false);
        let body = body.as_ref();
        let message = if title.is_empty() { body } else { title };
        let tags = [alarm.host, alarm.source]
            .into_iter()
            .flatten()
            .map(|t| truncate_chars(t, MAX_TAG))
            .chain(self.tags.iter().cloned())
            .take(MAX_TAGS)
            .collect();
        Create {
            message: truncate_chars(message, MAX_MESSAGE),
            alias: bounded_key(&alarm.key, MAX_ALIAS),
            description: truncate_chars(body, MAX_DESCRIPTION),
            tags,
            details: details(n, alarm),
            entity: alarm.host.map(|h| truncate_chars(h, MAX_ENTITY)),
            source: SOURCE,
            priority: priority(alarm.severity),
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let alarm = Alarm::of(n);
        let alias = bounded_key(&alarm.key, MAX_ALIAS);
        let req = match alarm.state {
            State::Firing if alarm.acknowledged => {
                let mut url = join_path(&self.base, &["v2", "alerts", &alias, "acknowledge"]);
                url.query_pairs_mut().append_pair("identifierType", "alias");
                let by = n.fields.pointer("/ack/by").and_then(Value::as_str);
                let note = n
                    .fields
                    .get("summary")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.client.post(url).json(&Acknowledge {
                    user: by.map(|u| truncate_chars(u, MAX_USER)),
                    source: SOURCE,
                    note: truncate_chars(note, 25_000),
                })
            }
            State::Firing => self
                .client
                .post(join_path(&self.base, &["v2", "alerts"]))
                .json(&self.create(n, &alarm)),
            State::Resolved => {
                let mut url = join_path(&self.base, &["v2", "alerts", &alias, "close"]);
                url.query_pairs_mut().append_pair("identifierType", "alias");
                let (title, _) = title_and_body(n);
                self.client.post(url).json(&Close {
                    source: SOURCE,
                    note: truncate_chars(title, 25_000),
                })
            }
        };
        let req = req.header(AUTHORIZATION, self.auth.clone());
        send_checked(
            "opsgenie",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(
            endpoint = %self.endpoint,
            %alias,
            state = ?alarm.state,
            "opsgenie request accepted"
        );
        Ok(())
    }
}

/// The alarm's labels, score, threshold, severity and topic as Opsgenie's flat string map,
/// stopping before [`MAX_DETAILS`] so a message with many labels is not refused whole.
fn details(n: &Notification, alarm: &Alarm<'_>) -> serde_json::Map<String, Value> {
    let mut entries: Vec<(String, String)> = alarm
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), scalar_text(v)))
        .collect();
    for key in ["score", "threshold", "severity", "id"] {
        if let Some(v) = n.fields.get(key).filter(|v| !v.is_null()) {
            entries.push((key.to_owned(), scalar_text(v)));
        }
    }
    entries.push(("topic".to_owned(), n.topic.clone()));
    let mut out = serde_json::Map::new();
    let mut used = 0;
    for (k, v) in entries {
        let size = k.chars().count() + v.chars().count();
        if used + size > MAX_DETAILS {
            break;
        }
        used += size;
        out.insert(k, Value::String(v));
    }
    out
}

/// Opsgenie's priority for Lookout's severity 1–4.
fn priority(severity: u8) -> &'static str {
    match severity {
        ..=1 => "P5",
        2 => "P3",
        3 => "P2",
        _ => "P1",
    }
}

impl Notifier for Opsgenie {
    fn kind(&self) -> &'static str {
        "opsgenie"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Opsgenie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opsgenie")
            .field("endpoint", &self.endpoint)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::alarm;

    const KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";

    fn build(extra: &str, server: &TestServer) -> Opsgenie {
        let cfg: Config = toml::from_str(&format!(
            "api_key = \"{KEY}\"\nbase_url = \"{}\"\n{extra}",
            server.url("")
        ))
        .expect("valid config");
        Opsgenie::build("og", &cfg).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).expect("valid config");
        Opsgenie::build("og", &cfg)
            .expect_err("rejected")
            .to_string()
    }

    fn accepted() -> Reply {
        Reply::json(
            202,
            json!({"result": "Request will be processed", "took": 0.302,
                   "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}),
        )
    }

    #[tokio::test]
    async fn a_firing_alarm_creates_an_alert_aliased_by_the_alarm_id() {
        let mut server = TestServer::start(vec![accepted()]).await;
        build("tags = [\"lookout\"]", &server)
            .send(&alarm())
            .await
            .expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v2/alerts");
        assert_eq!(
            req.header("authorization"),
            Some(format!("GenieKey {KEY}").as_str())
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "message": "[firing] sim-1 cpu_util",
                "alias": "sim-1:cpu_util:1795457375316",
                "description": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                "tags": ["sim-1", "cpu_util", "lookout"],
                "details": {"ip": "10.0.0.1", "score": "4.1", "threshold": "2.0", "severity": "3",
                            "id": "sim-1:cpu_util:1795457375316",
                            "topic": "lookout/sim-1/alarms/cpu_util"},
                "entity": "sim-1",
                "source": "Lookout",
                "priority": "P2"
            })
        );
    }

    #[tokio::test]
    async fn a_resolved_alarm_closes_the_alert_by_its_alias() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.fields["id"] = json!("h1:rule/1234/dev 7:17");
        n.title = "[resolved] h1 rule".into();
        build("", &server).send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path,
            "/v2/alerts/h1:rule%2F1234%2Fdev%207:17/close?identifierType=alias"
        );
        assert_eq!(
            req.header("authorization"),
            Some(format!("GenieKey {KEY}").as_str())
        );
        assert_eq!(
            req.json(),
            json!({"source": "Lookout", "note": "[resolved] h1 rule"})
        );
    }

    #[tokio::test]
    async fn an_acknowledgement_acknowledges_the_alert_by_its_alias_naming_who() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.fields["state"] = json!("acknowledged");
        n.fields["summary"] = json!("acknowledged by alice: on it");
        n.fields["ack"] = json!({"by": "alice", "comment": "on it", "until": null, "at": 1});
        build("", &server).send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path,
            "/v2/alerts/sim-1:cpu_util:1795457375316/acknowledge?identifierType=alias"
        );
        assert_eq!(
            req.json(),
            json!({"user": "alice", "source": "Lookout", "note": "acknowledged by alice: on it"})
        );
    }

    #[tokio::test]
    async fn an_alarm_with_a_window_carries_the_score_sparkline_in_its_description() {
        let mut server = TestServer::start(vec![accepted()]).await;
        let n = crate::notify::test_support::windowed_alarm();
        build("", &server).send(&n).await.expect("delivered");
        let req = server.request().await.json();
        let (text, line) = req["description"]
            .as_str()
            .unwrap()
            .split_once('\n')
            .unwrap();
        assert_eq!(text, n.body);
        assert!(line.starts_with("score ▂"), "{line}");
    }

    #[tokio::test]
    async fn severities_map_to_priorities_and_texts_are_cut_to_the_apis_limits() {
        assert_eq!(
            (1..=4).map(priority).collect::<Vec<_>>(),
            ["P5", "P3", "P2", "P1"]
        );
        let mut server = TestServer::start(vec![accepted()]).await;
        let mut n = alarm();
        n.title = "ä".repeat(500);
        n.body = "b".repeat(20_000);
        n.fields["labels"] = json!(
            (0..100)
                .map(|i| (format!("label{i}"), json!("v".repeat(200))))
                .collect::<serde_json::Map<_, _>>()
        );
        n.fields["severity"] = json!(1);
        build("", &server).send(&n).await.expect("delivered");
        let body = server.request().await.json();
        assert_eq!(
            body["message"].as_str().unwrap().chars().count(),
            MAX_MESSAGE
        );
        assert_eq!(
            body["description"].as_str().unwrap().chars().count(),
            MAX_DESCRIPTION
        );
        let details = body["details"].as_object().unwrap();
        let size: usize = details
            .iter()
            .map(|(k, v)| k.len() + v.as_str().unwrap().len())
            .sum();
        assert!(size <= MAX_DETAILS && !details.is_empty(), "{size}");
        assert_eq!(body["priority"], "P5");
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried_and_rejections_are_not() {
        let mut server = TestServer::start(vec![
            Reply::json(
                429,
                json!({"message": "You are making too many requests!", "took": 0.0}),
            ),
            Reply::text(503, ""),
            Reply::json(
                422,
                json!({"message": "Request body is not processable", "took": 0.0}),
            ),
            Reply::json(
                401,
                json!({"message": "Key format is not valid!", "took": 0.0}),
            ),
        ])
        .await;
        let og = build("", &server);
        assert!(matches!(og.send(&alarm()).await, Err(SendError::Retry(_))));
        assert!(matches!(og.send(&alarm()).await, Err(SendError::Retry(_))));
        let err = og.send(&alarm()).await.expect_err("422");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("opsgenie: HTTP 422")),
            "{err:?}"
        );
        assert!(matches!(
            og.send(&alarm()).await,
            Err(SendError::Permanent(_))
        ));
        for _ in 0..4 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "api_key = \"{KEY}\"\nbase_url = \"http://{}\"",
            refused_addr().await
        ))
        .unwrap();
        let refused = Opsgenie::build("og", &cfg).unwrap();
        assert!(matches!(
            refused.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn the_api_key_never_appears_in_debug_output_or_error_messages() {
        let _server = TestServer::start(vec![Reply::text(
            403,
            &format!("GenieKey {KEY} is disabled"),
        )])
        .await;
        let og = build("", &_server);
        let texts = [
            format!("{og:?}"),
            og.send(&alarm()).await.expect_err("403").to_string(),
        ];
        for text in &texts {
            assert!(!text.contains(KEY), "api key leaked in {text:?}");
        }
    }

    #[test]
    fn the_region_picks_the_api_and_the_config_is_strict() {
        let parsed: TargetConfig =
            toml::from_str(&format!("type = \"opsgenie\"\napi_key = \"{KEY}\"")).unwrap();
        let TargetConfig::Opsgenie(cfg) = parsed else {
            panic!("opsgenie")
        };
        let us = Opsgenie::build("og", &cfg).unwrap();
        assert_eq!(us.base.as_str(), "https://api.opsgenie.com/");
        let eu: Config = toml::from_str(&format!("api_key = \"{KEY}\"\nregion = \"eu\"")).unwrap();
        let eu = Opsgenie::build("og", &eu).unwrap();
        assert_eq!(
            join_path(&eu.base, &["v2", "alerts"]).as_str(),
            "https://api.eu.opsgenie.com/v2/alerts"
        );
        assert!(toml::from_str::<Config>("api_key = \"k\"\nregion = \"asia\"").is_err());
        assert!(toml::from_str::<Config>("api_key = \"k\"\nteam = \"ops\"").is_err());
        assert!(
            build_error("api_key = \"k\"\nregion = \"eu\"\nbase_url = \"http://h\"")
                .starts_with("targets.og.base_url:")
        );
        assert!(build_error("api_key = \"\"").starts_with("targets.og.api_key:"));
        assert!(
            build_error(&format!("api_key = \"k\"\ntags = [\"{}\"]", "t".repeat(51)))
                .starts_with("targets.og.tags:")
        );
    }
}
