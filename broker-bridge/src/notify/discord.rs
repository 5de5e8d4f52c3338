//! `type = "discord"`: posts to a Discord channel webhook, as one embed coloured by
//! severity (default) or as plain `content`.
//!
//! ```toml
//! [targets.discord]
//! type = "discord"
//! webhook_url = "env:DISCORD_WEBHOOK_URL"
//! ```
//!
//! Mentions are never parsed (`allowed_mentions` is empty), so an `@everyone` in an alarm's
//! text shows as text instead of pinging the server. Texts are cut to Discord's limits:
//! `content` 2000 characters, embed title 256, description 4096, field values 1024, and
//! 6000 for the whole embed.
//!
//! A firing alarm with a `window` carries its picture (`crate::picture`): the webhook call
//! is then `multipart/form-data`, the message as `payload_json` and the PNG as `files[0]`,
//! shown as the embed's image (`attachment://anomaly.png`) or under the `content`. With
//! `picture = false`, a window that cannot be drawn, or the picture refused (a 4xx, then
//! sent again without it), the text gets the score sparkline instead.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::alarm::{Alarm, State, time_field, title_and_text, truncate_chars};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, parse_url, send_checked,
    target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "discord"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The channel webhook's URL (`https://discord.com/api/webhooks/<id>/<token>`). The URL
    /// is the credential, so this is a secret: a literal, `env:NAME` or `file:/path`.
    pub webhook_url: Secret,
    /// `true` (default): one embed, coloured by state and severity, with host, source and
    /// severity as fields. `false`: plain `content`, the title in bold then the body.
    #[serde(default = "default_embed")]
    pub embed: bool,
    /// Post under this name instead of the webhook's (1-80 characters).
    pub username: Option<String>,
    /// Post with this avatar image instead of the webhook's.
    pub avatar_url: Option<String>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Firing alarms with a window carry their picture (default); `false`: text with a
    /// sparkline.
    #[serde(default = "default_embed")]
    pub picture: bool,
}

fn default_embed() -> bool {
    true
}

/// Discord's documented limits, in characters.
const MAX_CONTENT: usize = 2000;
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FIELD_VALUE: usize = 1024;
const MAX_USERNAME: usize = 80;

/// The Discord plugin, built from a validated [`Config`].
pub struct Discord {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    embed: bool,
    username: Option<String>,
    avatar_url: Option<String>,
    redactor: Redactor,
    picture: bool,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    embeds: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<&'a str>,
    allowed_mentions: Value,
    /// With a picture: the file `files[0]` described, as Discord asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<Value>,
}

impl Discord {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let url = parse_url(name, "webhook_url", cfg.webhook_url.expose())?;
        let username = match cfg.username.as_deref().map(str::trim) {
            Some(u) if u.is_empty() || u.chars().count() > MAX_USERNAME => {
                return Err(target_error(
                    name,
                    "username",
                    format!("must be 1-{MAX_USERNAME} characters"),
                ));
            }
            other => other.map(str::to_owned),
        };
        let avatar_url = match &cfg.avatar_url {
            Some(a) => Some(parse_url(name, "avatar_url", a)?.to_string()),
            None => None,
        };
        Ok(Discord {
            client: client(name, cfg.timeout)?,
            endpoint: endpoint(&url),
            redactor: Redactor::for_url(&url),
            url,
            embed: cfg.embed,
            username,
            avatar_url,
            picture: cfg.picture,
        })
    }

    /// The message, with the picture as its attachment (`picture`) or the sparkline.
    fn message_with(&self, n: &Notification, picture: bool) -> Message<'_> {
        let (title, body) = title_and_text(n, picture);
        let body = &*body;
        let file = crate::picture::FILE_NAME;
        let (content, embeds) = if self.embed {
            let mut e = embed(n, title, body);
            if picture {
                e["image"] = json!({"url": format!("attachment://{file}")});
            }
            (None, vec![e])
        } else {
            let text = match (title.is_empty(), body.is_empty()) {
                (false, false) => format!("**{title}**\n{body}"),
                (false, true) => format!("**{title}**"),
                (true, _) => body.to_owned(),
            };
            (Some(truncate_chars(&text, MAX_CONTENT)), Vec::new())
        };
        Message {
            content,
            embeds,
            username: self.username.as_deref(),
            avatar_url: self.avatar_url.as_deref(),
            allowed_mentions: json!({"parse": []}),
            attachments: picture.then(|| json!([{"id": 0, "filename": file}])),
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let firing = Alarm::of(n).state == State::Firing;
        let picture = (self.picture && firing)
            .then(|| crate::picture::attach(&n.target, &n.fields))
            .flatten();
        if let Some(picture) = picture {
            match self.post(n, Some(picture)).await {
                Err(SendError::Permanent(e)) => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "discord refused the picture; posting the text alone");
                }
                done => return done,
            }
        }
        self.post(n, None).await
    }

    async fn post(
        &self,
        n: &Notification,
        picture: Option<crate::picture::Picture>,
    ) -> Result<(), SendError> {
        let message = self.message_with(n, picture.is_some());
        let req = self.client.post(self.url.clone());
        let req = match picture {
            None => req.json(&message),
            Some(p) => {
                let payload = serde_json::to_string(&message)
                    .map_err(|e| SendError::Permanent(format!("discord: {e}")))?;
                let file = reqwest::multipart::Part::bytes(p.png)
                    .file_name(crate::picture::FILE_NAME)
                    .mime_str("image/png")
                    .map_err(|e| SendError::Permanent(format!("discord: {e}")))?;
                let form = reqwest::multipart::Form::new()
                    .text("payload_json", payload)
                    .part("files[0]", file);
                req.multipart(form)
            }
        };
        send_checked(
            "discord",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(endpoint = %self.endpoint, "discord message posted");
        Ok(())
    }
}

/// One embed: title, description, colour, the alarm's time, and host, source and severity
/// as inline fields when the message has them. Its texts add up to at most 256 + 4096 +
/// 3 × (8 + 1024) characters, inside the 6000 Discord allows for a whole embed.
fn embed(n: &Notification, title: &str, body: &str) -> Value {
    let alarm = Alarm::of(n);
    let mut embed = serde_json::Map::new();
    if !title.is_empty() {
        embed.insert("title".into(), json!(truncate_chars(title, MAX_TITLE)));
    }
    if !body.is_empty() {
        embed.insert(
            "description".into(),
            json!(truncate_chars(body, MAX_DESCRIPTION)),
        );
    }
    embed.insert("color".into(), json!(colour(alarm.state, alarm.severity)));
    if let Some(ts) = time_field(n, "ts") {
        embed.insert("timestamp".into(), json!(ts));
    }
    let severity = n.fields.get("severity").map(|_| alarm.severity.to_string());
    let fields: Vec<Value> = [
        ("host", alarm.host.map(str::to_owned)),
        ("source", alarm.source.map(str::to_owned)),
        ("severity", severity),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(
            |v| json!({"name": name, "value": truncate_chars(&v, MAX_FIELD_VALUE), "inline": true}),
        )
    })
    .collect();
    if !fields.is_empty() {
        embed.insert("fields".into(), Value::Array(fields));
    }
    Value::Object(embed)
}

/// Green when resolved; blue, yellow, orange, red for severity 1–4.
fn colour(state: State, severity: u8) -> u32 {
    match (state, severity) {
        (State::Resolved, _) => 0x2E_CC_71,
        (State::Firing, ..=1) => 0x34_98_DB,
        (State::Firing, 2) => 0xF1_C4_0F,
        (State::Firing, 3) => 0xE6_7E_22,
        (State::Firing, _) => 0xE7_4C_3C,
    }
}

impl Notifier for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Discord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discord")
            .field("endpoint", &self.endpoint)
            .field("embed", &self.embed)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, TestServer, refused_addr};
    use crate::notify::test_support::{alarm, assert_picture, multipart, windowed_alarm};

    const HOOK_PATH: &str = "/api/webhooks/1234567890/SecretWebhookTokenAbc_42";

    fn build(extra: &str, server: &TestServer) -> Discord {
        let cfg: Config = toml::from_str(&format!(
            "webhook_url = \"{}\"\n{extra}",
            server.url(HOOK_PATH)
        ))
        .expect("valid config");
        Discord::build("dc", &cfg).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).expect("valid config");
        Discord::build("dc", &cfg)
            .expect_err("rejected")
            .to_string()
    }

    #[tokio::test]
    async fn a_windowed_alarm_carries_its_picture_as_files_0_shown_as_the_embeds_image() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        let discord = build("", &server);
        discord.send(&windowed_alarm()).await.expect("delivered");
        let req = server.request().await;
        let parts = multipart(req.header("content-type").unwrap(), &req.body);
        assert_eq!(parts.len(), 2, "{parts:?}");
        let payload: Value = serde_json::from_slice(&parts[0].data).unwrap();
        assert_eq!(parts[0].name, "payload_json");
        assert_eq!(
            payload["embeds"][0]["image"]["url"],
            "attachment://anomaly.png"
        );
        assert_eq!(payload["attachments"][0]["filename"], "anomaly.png");
        assert_eq!(payload["allowed_mentions"], json!({"parse": []}));
        assert!(
            !payload["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .contains("score ▂")
        );
        assert_eq!(parts[1].name, "files[0]");
        assert_eq!(parts[1].filename.as_deref(), Some("anomaly.png"));
        assert_picture(&parts[1].data);
    }

    #[tokio::test]
    async fn with_picture_false_the_embed_gets_the_sparkline_and_no_file() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        let discord = build("picture = false", &server);
        discord.send(&windowed_alarm()).await.expect("delivered");
        let body = server.request().await.json();
        assert!(body.get("attachments").is_none());
        let description = body["embeds"][0]["description"].as_str().unwrap();
        assert!(description.contains("\nscore ▂"), "{description}");
    }

    #[tokio::test]
    async fn a_firing_alarm_is_one_embed_coloured_by_severity_without_mentions() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        build("username = \"Lookout\"", &server)
            .send(&alarm())
            .await
            .expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, HOOK_PATH);
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "embeds": [{
                    "title": "[firing] sim-1 cpu_util",
                    "description": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                    "color": 0xE67E22,
                    "timestamp": "2026-11-23T18:09:36.316Z",
                    "fields": [
                        {"name": "host", "value": "sim-1", "inline": true},
                        {"name": "source", "value": "cpu_util", "inline": true},
                        {"name": "severity", "value": "3", "inline": true}
                    ]
                }],
                "username": "Lookout",
                "allowed_mentions": {"parse": []}
            })
        );
    }

    #[tokio::test]
    async fn a_resolved_alarm_is_green_and_long_texts_are_cut_to_the_embed_limits() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.title = "t".repeat(300);
        n.body = "ö".repeat(5000);
        build("", &server).send(&n).await.expect("delivered");
        let embed = server.request().await.json()["embeds"][0].clone();
        assert_eq!(embed["color"], 0x2ECC71);
        assert_eq!(embed["title"].as_str().unwrap().chars().count(), MAX_TITLE);
        assert_eq!(
            embed["description"].as_str().unwrap().chars().count(),
            MAX_DESCRIPTION
        );
        let colours: Vec<_> = (1..=4).map(|s| colour(State::Firing, s)).collect();
        assert_eq!(colours, [0x3498DB, 0xF1C40F, 0xE67E22, 0xE74C3C]);
    }

    #[tokio::test]
    async fn content_mode_sends_bold_title_and_body_cut_to_2000_characters() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        let discord = build("embed = false", &server);
        discord.send(&alarm()).await.expect("delivered");
        assert_eq!(
            server.request().await.json(),
            json!({
                "content": "**[firing] sim-1 cpu_util**\ncpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                "allowed_mentions": {"parse": []}
            })
        );
        let mut n = alarm();
        n.body = "@everyone ".repeat(500);
        discord.send(&n).await.expect("delivered");
        let content = server.request().await.json()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(content.chars().count(), MAX_CONTENT);
        assert!(content.ends_with('…'));
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried_and_rejections_are_not() {
        let mut server = TestServer::start(vec![
            Reply::json(
                429,
                json!({"message": "You are being rate limited.", "retry_after": 0.5, "global": false}),
            ),
            Reply::text(502, ""),
            Reply::json(400, json!({"message": "Invalid Form Body", "code": 50035})),
        ])
        .await;
        let discord = build("", &server);
        assert!(matches!(
            discord.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        assert!(matches!(
            discord.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        let err = discord.send(&alarm()).await.expect_err("400");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("discord: HTTP 400")),
            "{err:?}"
        );
        for _ in 0..3 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "webhook_url = \"http://{}{HOOK_PATH}\"",
            refused_addr().await
        ))
        .unwrap();
        let refused = Discord::build("dc", &cfg).unwrap();
        assert!(matches!(
            refused.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn the_webhook_token_never_appears_in_debug_output_or_error_messages() {
        let secret = "SecretWebhookTokenAbc_42";
        let _server = TestServer::start(vec![Reply::json(
            404,
            json!({"message": format!("Unknown Webhook {HOOK_PATH}"), "code": 10015}),
        )])
        .await;
        let discord = build("", &_server);
        let texts = [
            format!("{discord:?}"),
            discord.send(&alarm()).await.expect_err("404").to_string(),
            build_error(&format!("webhook_url = \"discord.com{HOOK_PATH}\"")),
        ];
        for text in &texts {
            assert!(!text.contains(secret), "webhook token leaked in {text:?}");
        }
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig = toml::from_str(
            "type = \"discord\"\nwebhook_url = \"https://discord.com/api/webhooks/1/x\"",
        )
        .unwrap();
        assert!(matches!(
            parsed,
            TargetConfig::Discord(Config { embed: true, .. })
        ));
        assert!(
            toml::from_str::<Config>("webhook_url = \"https://h/x\"\ncontent = \"x\"").is_err()
        );
        assert!(
            build_error("webhook_url = \"https://h/x\"\nusername = \" \"")
                .starts_with("targets.dc.username:")
        );
        assert!(
            build_error("webhook_url = \"https://h/x\"\navatar_url = \"nope\"")
                .starts_with("targets.dc.avatar_url:")
        );
    }
}
