//! `type = "slack"`: posts to a Slack incoming webhook, `{"text": "*<title>*\n<body>"}`;
//! an alarm's `explain` line comes first in the body ([`Notification::body_with_explain`]).
//!
//! ```toml
//! [targets.oncall-slack]
//! type = "slack"
//! webhook_url = "env:SLACK_WEBHOOK_URL"
//! channel = "#oncall"
//! ```
//!
//! Slack answers `200 ok`, or an error code in the body (`invalid_payload`,
//! `channel_not_found`, `no_service`, ...) with a 4xx status, which is not retried.
//!
//! An incoming webhook cannot upload files. With `bot_token` and `channel_id` set, a
//! firing alarm with a `window` has its picture (`crate::picture`) uploaded first, with
//! the Web API's `files.getUploadURLExternal`, a POST of the PNG to the URL it returns,
//! and `files.completeUploadExternal` to share it in the channel titled with the
//! notification's title; then the message goes through the webhook as always (with its
//! Ack button). A failed upload that may succeed later (network, 5xx, `ratelimited`) is
//! retried with the notification, so a retry may show the picture twice but never the
//! message; one Slack refuses (a bad token, `not_in_channel`) is logged and counted, and
//! the message goes without it. Without a bot token, or with `picture = false`, the message
//! carries the score sparkline instead.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    parse_url, read_body, send_checked, snippet, status_error, target_error, transport_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "slack"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The incoming webhook's URL (`https://hooks.slack.com/services/...`). The URL is the
    /// credential, so this is a secret: a literal, `env:NAME` or `file:/path`; it is never
    /// logged.
    pub webhook_url: Secret,
    /// Post to this channel (`"#alerts"`) or user instead of the webhook's default, where
    /// the webhook allows it (legacy webhooks do; app webhooks ignore it).
    pub channel: Option<String>,
    /// Post under this name instead of the webhook's default (legacy webhooks).
    pub username: Option<String>,
    /// Post with this emoji as the icon, written `":rotating_light:"` (legacy webhooks).
    pub icon_emoji: Option<String>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// An "Ack" button under firing alarms (Block Kit); presses reach the bridge through
    /// its `[ack_http]` listener, which the Slack app's Request URL must point to.
    #[serde(default)]
    pub ack_button: bool,
    /// A bot token (`xoxb-...`, scope `files:write`) for uploading the alarm's picture: a
    /// literal, `env:NAME` or `file:/path`; never logged. Needs `channel_id`.
    pub bot_token: Option<Secret>,
    /// The channel's id (`C0123456789`, not its name) the picture is shared in: the bot
    /// must be a member.
    pub channel_id: Option<String>,
    /// Slack's Web API, default `"https://slack.com/api"` (tests point it elsewhere).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// With a bot token, firing alarms with a window get their picture (default); `false`:
    /// the sparkline instead.
    #[serde(default = "yes")]
    pub picture: bool,
}

fn default_api_url() -> String {
    "https://slack.com/api".to_owned()
}

fn yes() -> bool {
    true
}

/// What a picture upload needs: the bot's token and where to share the file.
struct Uploader {
    api: Url,
    token: Secret,
    channel_id: String,
}

/// The Slack plugin, built from a validated [`Config`].
pub struct Slack {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    redactor: Redactor,
    ack_button: bool,
    /// `Some` with a bot token and `picture` on.
    uploader: Option<Uploader>,
}

/// The webhook's JSON payload.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocks: Option<serde_json::Value>,
}

impl Slack {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let url = parse_url(name, "webhook_url", cfg.webhook_url.expose())?;
        let non_empty = |key: &str, value: &Option<String>| match value {
            Some(v) if v.trim().is_empty() => Err(target_error(
                name,
                key,
                "must not be empty (leave it out instead)",
            )),
            _ => Ok(value.as_ref().map(|v| v.trim().to_owned())),
        };
        let channel = non_empty("channel", &cfg.channel)?;
        let username = non_empty("username", &cfg.username)?;
        let icon_emoji = non_empty("icon_emoji", &cfg.icon_emoji)?;
        if let Some(emoji) = &icon_emoji
            && !(emoji.len() > 2 && emoji.starts_with(':') && emoji.ends_with(':'))
        {
            return Err(target_error(
                name,
                "icon_emoji",
                format!("{emoji:?} is not an emoji code like \":bell:\""),
            ));
        }
        let uploader = uploader(name, cfg)?;
        let mut redactor = Redactor::for_url(&url);
        if let Some(u) = &uploader {
            redactor.add(u.token.expose());
        }
        Ok(Slack {
            client: client(name, cfg.timeout)?,
            endpoint: endpoint(&url),
            redactor,
            uploader,
            url,
            channel,
            username,
            icon_emoji,
            ack_button: cfg.ack_button,
        })
    }

    #[cfg(test)]
    fn payload<'a>(&'a self, n: &Notification) -> Payload<'a> {
        self.payload_with(n, false)
    }

    /// The webhook's payload; with the sparkline unless the picture was uploaded.
    fn payload_with<'a>(&'a self, n: &Notification, picture: bool) -> Payload<'a> {
        let body = n.body_for_people(picture);
        let text = match (n.title.is_empty(), body.is_empty()) {
            (false, false) => format!("*{}*\n{}", escape(&n.title), escape(&body)),
            (false, true) => format!("*{}*", escape(&n.title)),
            (true, false) => escape(&body),
            (true, true) => escape(&n.topic),
        };
        Payload {
            blocks: self.ack_blocks(n, &text),
            text,
            channel: self.channel.as_deref(),
            username: self.username.as_deref(),
            icon_emoji: self.icon_emoji.as_deref(),
        }
    }

    /// With `ack_button`, a firing alarm is sent as blocks: its text (cut to a section's
    /// 3000 characters; `text` stays the notification's fallback) and an "Ack" button
    /// whose value is the alarm id (Slack allows 2000 characters).
    fn ack_blocks(&self, n: &Notification, text: &str) -> Option<serde_json::Value> {
        let id = n.fields.get("id")?.as_str()?;
        let firing = n.fields.get("state")?.as_str()? == "firing";
        if !(self.ack_button && firing && id.chars().count() <= 2000) {
            return None;
        }
        let section: String = text.chars().take(3000).collect();
        Some(serde_json::json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "actions", "elements": [{
                "type": "button", "text": {"type": "plain_text", "text": "Ack"},
                "action_id": crate::ack_http::ACTION_ID, "value": id,
            }]},
        ]))
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let firing = n.fields.get("state").and_then(|s| s.as_str()) == Some("firing");
        let picture = match &self.uploader {
            Some(up) if firing => crate::picture::attach(&n.target, &n.fields).map(|p| (up, p)),
            _ => None,
        };
        let mut uploaded = false;
        if let Some((up, p)) = picture {
            match self.upload(up, &n.title, p).await {
                Ok(()) => uploaded = true,
                Err(SendError::Permanent(e)) => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "slack refused the picture; sending the message without it");
                }
                Err(retry) => return Err(retry),
            }
        }
        let resp = self
            .client
            .post(self.url.clone())
            .json(&self.payload_with(n, uploaded))
            .send()
            .await
            .map_err(|e| transport_error("slack", e, &self.redactor))?;
        let status = resp.status();
        let body = read_body(resp, SNIPPET_READ_LIMIT).await;
        if status.is_success() {
            tracing::debug!(endpoint = %self.endpoint, %status, "slack notification delivered");
            return Ok(());
        }
        Err(status_error(
            "slack",
            status,
            &snippet(&body),
            &self.redactor,
        ))
    }
}

impl Slack {
    /// The three steps of an external upload; the file is shared in `channel_id`.
    async fn upload(
        &self,
        up: &Uploader,
        title: &str,
        picture: crate::picture::Picture,
    ) -> Result<(), SendError> {
        let length = picture.png.len().to_string();
        let form = [("filename", crate::picture::FILE_NAME), ("length", &length)];
        let req = self
            .client
            .post(join_path(&up.api, &["files.getUploadURLExternal"]))
            .bearer_auth(up.token.expose())
            .form(&form);
        let reply = self.web_api(req).await?;
        let (Some(upload_url), Some(file_id)) = (
            reply.get("upload_url").and_then(|v| v.as_str()),
            reply.get("file_id").and_then(|v| v.as_str()),
        ) else {
            return Err(SendError::Permanent(
                "slack: files.getUploadURLExternal gave no upload_url or file_id".into(),
            ));
        };
        let upload_url = Url::parse(upload_url).map_err(|e| {
            SendError::Permanent(format!("slack: the upload URL is not a URL: {e}"))
        })?;
        let req = self
            .client
            .post(upload_url)
            .header(reqwest::header::CONTENT_TYPE, "image/png")
            .body(picture.png);
        send_checked(
            "slack upload",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        let title: String = title.chars().take(250).collect();
        let complete = serde_json::json!({
            "files": [{"id": file_id, "title": if title.is_empty() { crate::picture::FILE_NAME } else { &title }}],
            "channel_id": up.channel_id,
        });
        let req = self
            .client
            .post(join_path(&up.api, &["files.completeUploadExternal"]))
            .bearer_auth(up.token.expose())
            .json(&complete);
        self.web_api(req).await.map(drop)
    }

    /// A Web API call: its JSON reply when `ok`; `ratelimited` and `internal_error` are
    /// worth retrying, other errors are not.
    async fn web_api(&self, req: reqwest::RequestBuilder) -> Result<serde_json::Value, SendError> {
        let body = send_checked(
            "slack api",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT * 4,
        )
        .await?;
        let reply: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            SendError::Permanent(format!("slack api: not JSON: {}", snippet(&body)))
        })?;
        if reply.get("ok").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(reply);
        }
        let error = reply
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("no error given");
        let message = self.redactor.apply(&format!("slack api: {error}"));
        Err(match error {
            "ratelimited" | "internal_error" | "fatal_error" | "service_unavailable" => {
                SendError::Retry(message)
            }
            _ => SendError::Permanent(message),
        })
    }
}

/// `bot_token` and `channel_id` checked together; `None` without a token or with
/// `picture = false`.
fn uploader(name: &str, cfg: &Config) -> Result<Option<Uploader>, Error> {
    let channel = cfg.channel_id.as_deref().map(str::trim);
    let api = parse_base_url(name, "api_url", &cfg.api_url)?;
    match (&cfg.bot_token, channel) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(target_error(name, "channel_id", "needs bot_token")),
        (Some(_), None) => Err(target_error(
            name,
            "bot_token",
            "needs channel_id (the channel's id, like \"C0123456789\")",
        )),
        (Some(token), Some(ch)) => {
            if token.expose().trim().is_empty() || !token.expose().is_ascii() {
                return Err(target_error(
                    name,
                    "bot_token",
                    "must be a bot token like \"xoxb-...\"",
                ));
            }
            if ch.is_empty() || !ch.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(target_error(
                    name,
                    "channel_id",
                    format!(
                        "{ch:?} is not a channel id like \"C0123456789\" (names do not work here)"
                    ),
                ));
            }
            Ok(cfg.picture.then(|| Uploader {
                api,
                token: token.clone(),
                channel_id: ch.to_owned(),
            }))
        }
    }
}

/// Slack's message formatting gives `&`, `<` and `>` a meaning (`<!channel>` pings
/// everyone); the rendered text is data, so they are escaped as Slack asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Slack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slack")
            .field("endpoint", &self.endpoint)
            .field("channel", &self.channel)
            .field("username", &self.username)
            .field("icon_emoji", &self.icon_emoji)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::{alarm, assert_picture, windowed_alarm};

    const HOOK_PATH: &str = "/services/T0001/B0002/XyZsecretWebhookToken42";

    fn build(toml_text: &str) -> Slack {
        Slack::build("chat", &toml::from_str(toml_text).expect("valid config")).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        Slack::build("chat", &toml::from_str(toml_text).expect("valid config"))
            .expect_err("rejected")
            .to_string()
    }

    const BOT_TOKEN: &str = "xoxb-1234-5678-SecretBotToken";

    #[tokio::test]
    async fn with_a_bot_token_the_picture_is_uploaded_and_shared_then_the_message_posted() {
        let mut upload = TestServer::start(vec![Reply::text(200, "OK - 5042")]).await;
        let mut api = TestServer::start(vec![
            Reply::json(
                200,
                json!({"ok": true, "upload_url": upload.url("/upload/v1/ABC"), "file_id": "F0123"}),
            ),
            Reply::json(200, json!({"ok": true, "files": [{"id": "F0123"}]})),
        ])
        .await;
        let mut hook = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let slack = build(&format!(
            "webhook_url = \"{}\"\nbot_token = \"{BOT_TOKEN}\"\nchannel_id = \"C0123456789\"\napi_url = \"{}\"\nack_button = true",
            hook.url(HOOK_PATH),
            api.url("/api")
        ));
        slack.send(&windowed_alarm()).await.expect("delivered");

        let get = api.request().await;
        assert_eq!(get.path, "/api/files.getUploadURLExternal");
        assert_eq!(
            get.header("authorization"),
            Some(format!("Bearer {BOT_TOKEN}").as_str())
        );
        let sent = upload.request().await;
        assert_eq!(sent.path, "/upload/v1/ABC");
        assert_picture(&sent.body);
        assert_eq!(
            get.text(),
            format!("filename=anomaly.png&length={}", sent.body.len())
        );
        let complete = api.request().await;
        assert_eq!(complete.path, "/api/files.completeUploadExternal");
        assert_eq!(
            complete.json(),
            json!({"files": [{"id": "F0123", "title": "[firing] sim-1 cpu_util"}], "channel_id": "C0123456789"})
        );
        let message = hook.request().await.json();
        assert_eq!(message["blocks"][1]["elements"][0]["text"]["text"], "Ack");
        assert!(
            !message["text"].as_str().unwrap().contains("score ▂"),
            "the picture, not the sparkline"
        );
    }

    #[tokio::test]
    async fn a_plain_webhook_gets_the_sparkline_and_a_refused_upload_still_sends_the_message() {
        let mut hook = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let slack = build(&format!("webhook_url = \"{}\"", hook.url(HOOK_PATH)));
        slack.send(&windowed_alarm()).await.expect("delivered");
        let text = hook.request().await.json()["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("\nscore ▂"), "{text}");

        let mut api = TestServer::start(vec![Reply::json(
            200,
            json!({"ok": false, "error": "not_in_channel"}),
        )])
        .await;
        let slack = build(&format!(
            "webhook_url = \"{}\"\nbot_token = \"{BOT_TOKEN}\"\nchannel_id = \"C0123456789\"\napi_url = \"{}\"",
            hook.url(HOOK_PATH),
            api.url("")
        ));
        slack
            .send(&windowed_alarm())
            .await
            .expect("delivered without the picture");
        api.request().await;
        assert!(
            hook.request().await.json()["text"]
                .as_str()
                .unwrap()
                .contains("score ▂")
        );

        let ratelimited = TestServer::start(vec![Reply::json(
            200,
            json!({"ok": false, "error": "ratelimited"}),
        )])
        .await;
        let slack = build(&format!(
            "webhook_url = \"{}\"\nbot_token = \"{BOT_TOKEN}\"\nchannel_id = \"C0123456789\"\napi_url = \"{}\"",
            hook.url(HOOK_PATH),
            ratelimited.url("")
        ));
        let err = slack
            .send(&windowed_alarm())
            .await
            .expect_err("retried whole");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
        assert_eq!(
            hook.requests().len(),
            2,
            "no message before the picture is up"
        );
        assert!(!format!("{err} {slack:?}").contains("SecretBotToken"));
    }

    #[test]
    fn a_bot_token_needs_a_channel_id_and_picture_false_turns_the_upload_off() {
        let err = |extra: &str| {
            build_error(&format!(
                "webhook_url = \"https://hooks.slack.com/x\"\n{extra}"
            ))
        };
        assert!(
            err(&format!("bot_token = \"{BOT_TOKEN}\"")).starts_with("targets.chat.bot_token:")
        );
        assert!(err("channel_id = \"C1\"").starts_with("targets.chat.channel_id:"));
        assert!(
            err(&format!(
                "bot_token = \"{BOT_TOKEN}\"\nchannel_id = \"#alerts\""
            ))
            .starts_with("targets.chat.channel_id:")
        );
        let off = build(&format!(
            "webhook_url = \"https://hooks.slack.com/x\"\nbot_token = \"{BOT_TOKEN}\"\nchannel_id = \"C1\"\npicture = false"
        ));
        assert!(off.uploader.is_none());
    }

    #[tokio::test]
    async fn with_ack_button_a_firing_alarm_gets_an_ack_button_holding_its_id_and_others_do_not() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let slack = build(&format!(
            "webhook_url = \"{}\"\nack_button = true",
            server.url(HOOK_PATH)
        ));
        let firing = alarm();
        slack.send(&firing).await.expect("delivered");
        let body = server.request().await.json();
        let button = &body["blocks"][1]["elements"][0];
        assert_eq!(button["action_id"], "lookout_ack");
        assert_eq!(button["value"], "sim-1:cpu_util:1795457375316");
        assert!(
            body["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("*[firing]")
        );
        assert!(body["text"].is_string(), "the fallback text stays");

        let mut resolved = alarm();
        resolved.fields["state"] = json!("resolved");
        slack.send(&resolved).await.expect("delivered");
        assert!(server.request().await.json().get("blocks").is_none());
    }

    #[tokio::test]
    async fn posts_a_bold_title_and_the_body_with_the_optional_settings() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let slack = build(&format!(
            "webhook_url = \"{}\"\nchannel = \"#oncall\"\nusername = \"lookout\"\nicon_emoji = \":rotating_light:\"",
            server.url(HOOK_PATH)
        ));
        slack.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, HOOK_PATH);
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "text": "*[firing] sim-1 cpu_util*\ncpu_util: anomaly score 4.10 &gt;= 2.00 on sim-1 (severity 3)",
                "channel": "#oncall",
                "username": "lookout",
                "icon_emoji": ":rotating_light:"
            })
        );
    }

    #[test]
    fn an_alarms_explain_line_comes_between_the_title_and_the_body() {
        let slack = build("webhook_url = \"http://127.0.0.1:9/hook\"");
        let mut n = alarm();
        n.fields["explain"] = json!("system at 38.1, normal 2–6 (83 % of the cpu anomaly)");
        assert_eq!(
            slack.payload(&n).text,
            "*[firing] sim-1 cpu_util*\nsystem at 38.1, normal 2–6 (83 % of the cpu anomaly)\n\
             cpu_util: anomaly score 4.10 &gt;= 2.00 on sim-1 (severity 3)"
        );
    }

    #[tokio::test]
    async fn leaves_out_unset_settings_and_escapes_slack_control_characters() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let slack = build(&format!("webhook_url = \"{}\"", server.url(HOOK_PATH)));
        let mut n = alarm();
        n.title = "<!channel> disk & co".into();
        n.body = String::new();
        slack.send(&n).await.expect("delivered");
        assert_eq!(
            server.request().await.json(),
            json!({"text": "*&lt;!channel&gt; disk &amp; co*"})
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_slack_rejections_are_not() {
        let mut server = TestServer::start(vec![
            Reply::text(500, "rollup_error"),
            Reply::text(400, "invalid_payload"),
            Reply::text(404, "channel_not_found"),
        ])
        .await;
        let slack = build(&format!("webhook_url = \"{}\"", server.url(HOOK_PATH)));

        let err = slack.send(&alarm()).await.expect_err("500");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "slack: HTTP 500 Internal Server Error: rollup_error (will retry)"
        );
        let err = slack.send(&alarm()).await.expect_err("400");
        assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "slack: HTTP 400 Bad Request: invalid_payload"
        );
        assert!(
            matches!(slack.send(&alarm()).await, Err(SendError::Permanent(_))),
            "404"
        );
        for _ in 0..3 {
            server.request().await;
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let slack = build(&format!(
            "webhook_url = \"http://{}{HOOK_PATH}\"",
            refused_addr().await
        ));
        let err = slack.send(&alarm()).await.expect_err("refused");
        assert!(
            matches!(err, SendError::Retry(ref m) if m.starts_with("slack: cannot connect")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_webhook_url_never_appears_in_debug_output_or_error_messages() {
        let secret = "XyZsecretWebhookToken42";
        let server = TestServer::start(vec![Reply::text(
            404,
            &format!("no_service for {HOOK_PATH}"),
        )])
        .await;
        let slack = build(&format!("webhook_url = \"{}\"", server.url(HOOK_PATH)));
        let refused = build(&format!(
            "webhook_url = \"http://{}{HOOK_PATH}\"",
            refused_addr().await
        ));
        let texts = [
            format!("{slack:?}"),
            slack.send(&alarm()).await.expect_err("404").to_string(),
            refused
                .send(&alarm())
                .await
                .expect_err("refused")
                .to_string(),
            build_error(&format!("webhook_url = \"hooks.slack.com{HOOK_PATH}\"")),
        ];
        for text in &texts {
            assert!(!text.contains(secret), "webhook token leaked in {text:?}");
        }
        assert_eq!(
            texts[1],
            "slack: HTTP 404 Not Found: no_service for <redacted>"
        );
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str("type = \"slack\"\nwebhook_url = \"https://hooks.slack.com/x\"")
                .unwrap();
        assert!(matches!(parsed, TargetConfig::Slack(_)));
        assert!(
            toml::from_str::<TargetConfig>(
                "type = \"slack\"\nwebhook_url = \"https://h/x\"\nurl = \"x\""
            )
            .is_err()
        );
        assert!(
            toml::from_str::<TargetConfig>("type = \"slack\"").is_err(),
            "webhook_url is required"
        );

        assert!(
            build_error("webhook_url = \"https://h/x\"\nchannel = \" \"")
                .starts_with("targets.chat.channel:")
        );
        assert!(
            build_error("webhook_url = \"https://h/x\"\nicon_emoji = \"bell\"")
                .starts_with("targets.chat.icon_emoji:")
        );
        assert_eq!(
            build_error("webhook_url = \"ftp://h/x\""),
            "targets.chat.webhook_url: must start with http:// or https://"
        );
    }
}
