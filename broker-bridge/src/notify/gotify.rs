//! `type = "gotify"`: posts each notification to a self-hosted Gotify server's
//! `POST <base_url>/message`, authenticated by an application token in `X-Gotify-Key`
//! (a header, so the token stays out of URLs and proxy logs).
//!
//! ```toml
//! [targets.gotify]
//! type = "gotify"
//! base_url = "https://gotify.example.com"
//! token = "env:GOTIFY_APP_TOKEN"
//! ```
//!
//! Priority follows the alarm's severity on the scale Gotify's Android app acts on (1–3
//! silent, 4–7 sound, 8–10 pop-up): severity 1 → 2, 2 → 5, 3 → 8, 4 → 10; a resolution
//! → 2, silent. Gotify documents no length limit; the route's `max_payload` bounds the text.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::alarm::{Alarm, State, title_and_text};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    send_checked, target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "gotify"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Gotify server (no default: Gotify is always self-hosted); a path prefix is kept.
    pub base_url: String,
    /// An application's token (Apps > Create Application): a literal, `env:NAME` or
    /// `file:/path`; never logged.
    pub token: Secret,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// The Gotify plugin, built from a validated [`Config`].
pub struct Gotify {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    token: HeaderValue,
    redactor: Redactor,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    title: &'a str,
    message: &'a str,
    priority: u8,
    extras: Value,
}

impl Gotify {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let base = parse_base_url(name, "base_url", &cfg.base_url)?;
        let token = cfg.token.expose().trim();
        let Some(mut header) = HeaderValue::from_str(token)
            .ok()
            .filter(|_| !token.is_empty())
        else {
            return Err(target_error(
                name,
                "token",
                "must be an application token (no control characters)",
            ));
        };
        header.set_sensitive(true);
        let mut redactor = Redactor::default();
        redactor.add(token);
        Ok(Gotify {
            client: client(name, cfg.timeout)?,
            url: join_path(&base, &["message"]),
            endpoint: endpoint(&base),
            token: header,
            redactor,
        })
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let alarm = Alarm::of(n);
        let (title, body) = title_and_text(n, false);
        let message = Message {
            title,
            // Gotify refuses an empty message.
            message: if body.is_empty() { title } else { &body },
            priority: priority(alarm.state, alarm.severity),
            // Shown as written: a `*` or `#` in an alarm is not Markdown.
            extras: json!({"client::display": {"contentType": "text/plain"}}),
        };
        let req = self
            .client
            .post(self.url.clone())
            .header("X-Gotify-Key", self.token.clone())
            .json(&message);
        send_checked(
            "gotify",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(endpoint = %self.endpoint, priority = message.priority, "gotify message posted");
        Ok(())
    }
}

/// Gotify's priority (0–10) for an alarm's state and severity 1–4.
fn priority(state: State, severity: u8) -> u8 {
    match (state, severity) {
        (State::Resolved, _) | (State::Firing, ..=1) => 2,
        (State::Firing, 2) => 5,
        (State::Firing, 3) => 8,
        (State::Firing, _) => 10,
    }
}

impl Notifier for Gotify {
    fn kind(&self) -> &'static str {
        "gotify"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Gotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gotify")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::{alarm, windowed_alarm};

    const TOKEN: &str = "AvKcy9o-yvVhyKd";

    fn build(server: &TestServer) -> Gotify {
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"{}\"\ntoken = \"{TOKEN}\"",
            server.url("/gotify")
        ))
        .expect("valid config");
        Gotify::build("g", &cfg).expect("builds")
    }

    fn posted() -> Reply {
        Reply::json(200, json!({"id": 25, "appid": 5, "message": "..."}))
    }

    #[tokio::test]
    async fn a_firing_alarm_is_posted_with_the_token_header_and_its_priority() {
        let mut server = TestServer::start(vec![posted()]).await;
        build(&server).send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/gotify/message");
        assert_eq!(req.header("x-gotify-key"), Some(TOKEN));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "title": "[firing] sim-1 cpu_util",
                "message": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                "priority": 8,
                "extras": {"client::display": {"contentType": "text/plain"}}
            })
        );
    }

    #[tokio::test]
    async fn a_target_that_cannot_show_a_picture_gets_the_score_sparkline_after_the_body() {
        let mut server = TestServer::start(vec![posted()]).await;
        build(&server)
            .send(&windowed_alarm())
            .await
            .expect("delivered");
        let message = server.request().await.json()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        let (body, line) = message.split_once('\n').expect("two lines");
        assert_eq!(body, alarm().body);
        assert_eq!(
            line,
            "score ▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂██ 5.97 (threshold 2.00, last 9m59s)"
        );
    }

    #[tokio::test]
    async fn a_resolved_alarm_is_silent_and_an_empty_body_sends_the_title() {
        let mut server = TestServer::start(vec![posted()]).await;
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.body = String::new();
        build(&server).send(&n).await.expect("delivered");
        let body = server.request().await.json();
        assert_eq!(body["priority"], 2);
        assert_eq!(body["message"], "[firing] sim-1 cpu_util");
        let got: Vec<_> = (1..=4).map(|s| priority(State::Firing, s)).collect();
        assert_eq!(got, [2, 5, 8, 10]);
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_a_bad_token_is_not_and_never_shown() {
        let mut server = TestServer::start(vec![
            Reply::text(502, ""),
            Reply::json(
                401,
                json!({"error": "Unauthorized", "errorCode": 401,
                       "errorDescription": format!("you need to provide a valid access token: {TOKEN}")}),
            ),
        ])
        .await;
        let gotify = build(&server);
        assert!(matches!(
            gotify.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        let err = gotify.send(&alarm()).await.expect_err("401");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("gotify: HTTP 401")),
            "{err:?}"
        );
        assert!(!err.to_string().contains(TOKEN), "{err}");
        assert!(!format!("{gotify:?}").contains(TOKEN));
        for _ in 0..2 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"http://{}\"\ntoken = \"{TOKEN}\"",
            refused_addr().await
        ))
        .unwrap();
        let refused = Gotify::build("g", &cfg).unwrap();
        assert!(matches!(
            refused.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str("type = \"gotify\"\nbase_url = \"https://g\"\ntoken = \"t\"").unwrap();
        assert!(matches!(parsed, TargetConfig::Gotify(_)));
        assert!(
            toml::from_str::<Config>("token = \"t\"").is_err(),
            "base_url is required"
        );
        assert!(
            toml::from_str::<Config>("base_url = \"https://g\"\ntoken = \"t\"\nprio = 1").is_err()
        );
        let err = |t: &str| {
            Gotify::build("g", &toml::from_str(t).unwrap())
                .expect_err("rejected")
                .to_string()
        };
        assert!(err("base_url = \"https://g\"\ntoken = \" \"").starts_with("targets.g.token:"));
        assert!(err("base_url = \"g\"\ntoken = \"t\"").starts_with("targets.g.base_url:"));
    }
}
