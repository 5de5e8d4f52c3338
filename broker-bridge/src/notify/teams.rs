//! `type = "teams"`: posts each notification to a Microsoft Teams channel through a
//! Workflows webhook (the "Post to a channel when a webhook request is received" flow that
//! replaced Office 365 connectors), as one Adaptive Card.
//!
//! ```toml
//! [targets.teams]
//! type = "teams"
//! webhook_url = "env:TEAMS_WORKFLOW_URL"
//! ```
//!
//! The card: the title in bold, coloured `attention` (severity 3–4), `warning` (1–2) or
//! `good` (resolved); the body; then a FactSet of the alarm's labels, score, threshold and
//! start time. Teams refuses messages over 28 KB, so the request is kept under
//! 28000 bytes: the title is cut to 1000 characters, each fact to 500, at most 40
//! labels are shown, and the body gets whatever room is left.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

use super::alarm::truncate_chars;
use super::alarm::{Alarm, State, scalar_text, time_field, title_and_text, truncate_bytes};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, parse_url, send_checked,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "teams"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The workflow's HTTP POST URL (`https://....logic.azure.com/workflows/...` or
    /// `https://....powerplatform.com/...`). Its `sig` parameter is the credential, so this
    /// is a secret: a literal, `env:NAME` or `file:/path`; never logged.
    pub webhook_url: Secret,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// Teams' message size limit is 28 KB; the whole request body stays under this.
pub(crate) const MAX_BODY_BYTES: usize = 28_000;
const MAX_TITLE: usize = 1000;
const MAX_FACT: usize = 500;
const MAX_LABELS: usize = 40;

/// The Teams plugin, built from a validated [`Config`].
pub struct Teams {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    redactor: Redactor,
}

impl Teams {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let url = parse_url(name, "webhook_url", cfg.webhook_url.expose())?;
        Ok(Teams {
            client: client(name, cfg.timeout)?,
            endpoint: endpoint(&url),
            redactor: Redactor::for_url(&url),
            url,
        })
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let body = serde_json::to_vec(&message(n))
            .map_err(|e| SendError::Permanent(format!("teams: cannot encode the card: {e}")))?;
        let req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        send_checked(
            "teams",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(endpoint = %self.endpoint, "teams card posted");
        Ok(())
    }
}

/// The title's colour: `good` when resolved, `attention` for severity 3–4, else `warning`.
fn colour(state: State, severity: u8) -> &'static str {
    match (state, severity) {
        (State::Resolved, _) => "good",
        (State::Firing, 3..) => "attention",
        (State::Firing, _) => "warning",
    }
}

/// The message: one Adaptive Card, its encoding at most [`MAX_BODY_BYTES`].
fn message(n: &Notification) -> Value {
    let alarm = Alarm::of(n);
    let (title, summary) = title_and_text(n, false);
    let summary = &*summary;
    let mut facts: Vec<Value> = alarm
        .labels
        .iter()
        .take(MAX_LABELS)
        .map(|(k, v)| fact(k, &scalar_text(v)))
        .collect();
    for key in ["score", "threshold"] {
        if let Some(v) = n.fields.get(key).filter(|v| v.is_number()) {
            facts.push(fact(key, &v.to_string()));
        }
    }
    if let Some(started) = time_field(n, "started_at") {
        facts.push(fact("started", &started));
    }
    let title = truncate_chars(title, MAX_TITLE);
    let colour = colour(alarm.state, alarm.severity);
    let mut budget = MAX_BODY_BYTES;
    loop {
        let msg = card(&title, colour, &truncate_bytes(summary, budget), &facts);
        let len = msg.to_string().len();
        if len <= MAX_BODY_BYTES {
            return msg;
        }
        let over = len - MAX_BODY_BYTES;
        if budget > 0 {
            // JSON escaping can make the text longer than its bytes: cut by the excess.
            budget = budget.saturating_sub(over.max(1)).min(summary.len());
        } else if facts.pop().is_none() {
            // Only a title full of escapes can get here: 1000 characters of them.
            return card(&truncate_chars(&title, 100), colour, "", &facts);
        }
    }
}

fn fact(title: &str, value: &str) -> Value {
    json!({"title": truncate_chars(title, MAX_FACT), "value": truncate_chars(value, MAX_FACT)})
}

fn card(title: &str, colour: &str, summary: &str, facts: &[Value]) -> Value {
    let mut body = Vec::new();
    if !title.is_empty() {
        body.push(
            json!({"type": "TextBlock", "text": title, "weight": "bolder",
                         "size": "medium", "color": colour, "wrap": true}),
        );
    }
    if !summary.is_empty() {
        body.push(json!({"type": "TextBlock", "text": summary, "wrap": true}));
    }
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

impl Notifier for Teams {
    fn kind(&self) -> &'static str {
        "teams"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Teams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Teams")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::alarm;

    const SIG: &str = "Xq3xY0secretSignatureValue_42abc";

    fn hook_path() -> String {
        format!(
            "/workflows/0a1b2c3d/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"
        )
    }

    fn build(server: &TestServer) -> Teams {
        let cfg: Config =
            toml::from_str(&format!("webhook_url = \"{}\"", server.url(&hook_path())))
                .expect("valid config");
        Teams::build("tm", &cfg).expect("builds")
    }

    /// The card's `body` array.
    fn card_body(msg: &Value) -> &Vec<Value> {
        msg["attachments"][0]["content"]["body"]
            .as_array()
            .expect("card body")
    }

    #[tokio::test]
    async fn a_firing_alarm_is_an_adaptive_card_with_the_title_summary_and_facts() {
        let mut server = TestServer::start(vec![Reply::text(202, "")]).await;
        build(&server).send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, hook_path());
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {"type": "TextBlock", "text": "[firing] sim-1 cpu_util",
                             "weight": "bolder", "size": "medium", "color": "attention", "wrap": true},
                            {"type": "TextBlock",
                             "text": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                             "wrap": true},
                            {"type": "FactSet", "facts": [
                                {"title": "ip", "value": "10.0.0.1"},
                                {"title": "score", "value": "4.1"},
                                {"title": "threshold", "value": "2.0"},
                                {"title": "started", "value": "2026-11-23T18:09:35.316Z"}
                            ]}
                        ]
                    }
                }]
            })
        );
    }

    #[tokio::test]
    async fn resolved_is_good_and_low_severity_is_a_warning() {
        let mut server = TestServer::start(vec![Reply::text(202, "")]).await;
        let teams = build(&server);
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        teams.send(&n).await.expect("delivered");
        let body = server.request().await.json();
        assert_eq!(card_body(&body)[0]["color"], "good");
        n.fields["state"] = json!("firing");
        n.fields["severity"] = json!(2);
        teams.send(&n).await.expect("delivered");
        let body = server.request().await.json();
        assert_eq!(card_body(&body)[0]["color"], "warning");
        assert_eq!(colour(State::Firing, 4), "attention");
    }

    #[test]
    fn the_card_stays_under_28_kb_however_long_or_escaped_the_texts() {
        let mut n = alarm();
        n.title = "t".repeat(5000);
        n.body = "é".repeat(40_000);
        let labels: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("label{i}"), json!("v".repeat(2000))))
            .collect();
        n.fields["labels"] = Value::Object(labels);
        let msg = message(&n);
        let len = msg.to_string().len();
        assert!(len <= MAX_BODY_BYTES, "{len}");
        assert!(len > MAX_BODY_BYTES - 100, "the body fills the room: {len}");
        let body = card_body(&msg);
        assert_eq!(body[0]["text"].as_str().unwrap().chars().count(), MAX_TITLE);
        assert!(body[1]["text"].as_str().unwrap().ends_with('…'));
        let facts = body[2]["facts"].as_array().unwrap();
        assert_eq!(facts.len(), MAX_LABELS + 3);
        assert_eq!(
            facts[0]["value"].as_str().unwrap().chars().count(),
            MAX_FACT
        );

        // Control characters take six bytes each in JSON.
        n.body = "\u{1}".repeat(40_000);
        n.title = "\u{2}".repeat(5000);
        n.fields["labels"] = json!({"l": "\u{3}".repeat(5000)});
        let len = message(&n).to_string().len();
        assert!(len <= MAX_BODY_BYTES, "{len}");
    }

    #[tokio::test]
    async fn throttling_is_retried_a_bad_request_is_not_and_the_signature_never_shows() {
        let mut server = TestServer::start(vec![
            Reply::text(429, "Rate limit is exceeded"),
            Reply::json(
                401,
                json!({"error": {"code": "DirectApiAuthorizationRequired",
                                 "message": format!("The request signature {SIG} is not valid")}}),
            ),
        ])
        .await;
        let teams = build(&server);
        assert!(matches!(
            teams.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        let err = teams.send(&alarm()).await.expect_err("401");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("teams: HTTP 401")),
            "{err:?}"
        );
        assert!(!err.to_string().contains(SIG), "{err}");
        assert!(!format!("{teams:?}").contains(SIG));
        for _ in 0..2 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "webhook_url = \"http://{}{}\"",
            refused_addr().await,
            hook_path()
        ))
        .unwrap();
        let err = Teams::build("tm", &cfg)
            .unwrap()
            .send(&alarm())
            .await
            .expect_err("refused");
        assert!(matches!(err, SendError::Retry(_)) && !err.to_string().contains(SIG));
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str("type = \"teams\"\nwebhook_url = \"https://x.logic.azure.com/w\"")
                .unwrap();
        assert!(matches!(parsed, TargetConfig::Teams(_)));
        assert!(
            toml::from_str::<Config>("").is_err(),
            "webhook_url is required"
        );
        assert!(toml::from_str::<Config>("webhook_url = \"https://h/\"\ncolor = \"red\"").is_err());
        let err = |t: &str| {
            Teams::build("tm", &toml::from_str(t).unwrap())
                .expect_err("rejected")
                .to_string()
        };
        assert!(err("webhook_url = \"h/x\"").starts_with("targets.tm.webhook_url:"));
        assert!(
            err("webhook_url = \"https://h/\"\ntimeout = \"0s\"")
                .starts_with("targets.tm.timeout:")
        );
    }
}
