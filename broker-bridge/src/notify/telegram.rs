//! `type = "telegram"`: sends each notification as a message from a bot, through the Bot
//! API's `sendMessage`.
//!
//! ```toml
//! [targets.oncall-telegram]
//! type = "telegram"
//! token = "env:TELEGRAM_BOT_TOKEN"
//! chat_id = -1001234567890
//! parse_mode = "HTML"
//! ```
//!
//! The text is the title, then the alarm's `explain` line if it has one, then the body
//! ([`Notification::body_with_explain`]).
//!
//! A firing alarm with a `window` goes as one `sendPhoto` instead: the picture
//! (`crate::picture`) with the text as its caption, cut to Telegram's 1024 characters, and
//! the same Ack button. `picture = false`, a window that cannot be drawn, or a photo
//! Telegram refuses (a permanent error) send the text with the score sparkline instead.
//!
//! The token is part of the request's URL (`/bot<token>/sendMessage`), so errors are built
//! from the status and Telegram's `description`, never from the URL.

use std::borrow::Cow;
use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::http::{
    Redactor, client, default_timeout, endpoint, parse_url, read_body, snippet, status_error,
    target_error, transport_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "telegram"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bot's token from @BotFather (`123456:ABC-DEF...`): a literal, `env:NAME` or
    /// `file:/path`; it is never logged.
    pub token: Secret,
    /// Where to send: a chat's numeric id (`-1001234567890` for a group or channel, as a
    /// number or a string) or a public channel's `"@username"`.
    pub chat_id: ChatId,
    /// The Bot API server, default `"https://api.telegram.org"`; set it for a self-hosted
    /// Bot API server.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// `"HTML"` or `"MarkdownV2"` to show the title in bold; the rendered title and body are
    /// escaped for that mode, so they always show as written. Unset: plain text.
    pub parse_mode: Option<ParseMode>,
    /// `true` to deliver silently (no sound on the recipients' phones).
    pub disable_notification: Option<bool>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// An "Ack" button under each firing alarm; the bridge then long-polls the bot's
    /// `getUpdates` for presses (`crate::chat_ack`), so the bot must have no webhook.
    #[serde(default)]
    pub ack_button: bool,
    /// Firing alarms with a window are sent as a picture with the text as its caption
    /// (default); `false`: text with a sparkline.
    #[serde(default = "yes")]
    pub picture: bool,
}

fn yes() -> bool {
    true
}

/// A chat's numeric id, or `@channelusername`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Name(String),
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum ParseMode {
    #[serde(rename = "HTML", alias = "html")]
    Html,
    #[serde(alias = "markdownv2")]
    MarkdownV2,
}

impl ParseMode {
    fn as_str(self) -> &'static str {
        match self {
            ParseMode::Html => "HTML",
            ParseMode::MarkdownV2 => "MarkdownV2",
        }
    }
}

fn default_base_url() -> String {
    "https://api.telegram.org".to_owned()
}

/// Telegram's limit on a message's text, in UTF-16 code units after entity parsing.
const MAX_TEXT: usize = 4096;
/// Telegram's limit on a photo's caption, counted as [`MAX_TEXT`] is.
const MAX_CAPTION: usize = 1024;
/// A successful reply echoes the message, so read enough of it to parse.
const REPLY_READ_LIMIT: usize = 64 * 1024;

/// The Telegram plugin, built from a validated [`Config`].
pub struct Telegram {
    client: reqwest::Client,
    /// `<base_url>/bot<token>/sendMessage`: holds the token, never shown.
    url: Url,
    /// `<base_url>/bot<token>/sendPhoto`, likewise.
    photo_url: Url,
    endpoint: String,
    chat_id: ChatId,
    parse_mode: Option<ParseMode>,
    disable_notification: Option<bool>,
    redactor: Redactor,
    ack_button: bool,
    picture: bool,
}

#[derive(Debug, Serialize)]
struct SendMessage<'a> {
    chat_id: &'a ChatId,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_notification: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_markup: Option<serde_json::Value>,
}

/// What the Bot API answers, success or not.
#[derive(Debug, Deserialize)]
struct Reply {
    ok: bool,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ReplyParameters>,
}

#[derive(Debug, Deserialize)]
struct ReplyParameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

impl Telegram {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let token = cfg.token.expose();
        let Some((bot_id, key)) = token.split_once(':') else {
            return Err(bad_token(name, token));
        };
        let valid_key = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if bot_id.is_empty()
            || !bot_id.bytes().all(|b| b.is_ascii_digit())
            || key.is_empty()
            || !key.chars().all(valid_key)
        {
            return Err(bad_token(name, token));
        }

        let base = parse_url(name, "base_url", &cfg.base_url)?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(target_error(
                name,
                "base_url",
                "must not have a query or fragment",
            ));
        }
        let method_url = |method: &str| {
            Url::parse(&format!(
                "{}/bot{token}/{method}",
                base.as_str().trim_end_matches('/')
            ))
            .map_err(|_| target_error(name, "token", "does not fit in a URL"))
        };
        let url = method_url("sendMessage")?;
        let photo_url = method_url("sendPhoto")?;

        match &cfg.chat_id {
            ChatId::Id(0) => return Err(target_error(name, "chat_id", "0 is not a chat")),
            ChatId::Id(_) => {}
            ChatId::Name(s) => {
                let valid = s.parse::<i64>().is_ok_and(|id| id != 0)
                    || s.strip_prefix('@')
                        .is_some_and(|u| !u.is_empty() && u.chars().all(valid_key));
                if !valid {
                    return Err(target_error(
                        name,
                        "chat_id",
                        format!("{s:?} is neither a numeric chat id nor a \"@channelusername\""),
                    ));
                }
            }
        }

        let mut redactor = Redactor::for_url(&url);
        redactor.add(token);
        redactor.add(key);
        Ok(Telegram {
            client: client(name, cfg.timeout)?,
            url,
            photo_url,
            endpoint: endpoint(&base),
            chat_id: cfg.chat_id.clone(),
            parse_mode: cfg.parse_mode,
            disable_notification: cfg.disable_notification,
            redactor,
            ack_button: cfg.ack_button,
            picture: cfg.picture,
        })
    }

    /// `<title>\n<body>`, cut to Telegram's limit, the title in bold and everything escaped
    /// when a parse mode is set.
    fn text(&self, n: &Notification) -> String {
        self.text_within(n, MAX_TEXT, false)
    }

    /// The text cut to `max`; with the sparkline unless a picture goes with it.
    fn text_within(&self, n: &Notification, max: usize, picture: bool) -> String {
        let with_explain = n.body_for_people(picture);
        let (title, body) = match (n.title.is_empty(), with_explain.is_empty()) {
            (true, true) => ("", n.topic.as_str()),
            _ => (n.title.as_str(), &*with_explain),
        };
        let title = truncate(title, max);
        let room = max - utf16_len(&title) - usize::from(!title.is_empty());
        let body = truncate(body, room);
        let (open, close, escape): (&str, &str, fn(&str) -> String) = match self.parse_mode {
            None => ("", "", str::to_owned),
            Some(ParseMode::Html) => ("<b>", "</b>", escape_html),
            Some(ParseMode::MarkdownV2) => ("*", "*", escape_markdown_v2),
        };
        match (title.is_empty(), body.is_empty()) {
            (false, false) => format!("{open}{}{close}\n{}", escape(&title), escape(&body)),
            (false, true) => format!("{open}{}{close}", escape(&title)),
            (true, _) => escape(&body),
        }
    }

    /// With `ack_button`, a firing alarm gets an inline "Ack" button whose
    /// `callback_data` (at most 64 bytes) is `ack:` and the alarm id's short key.
    fn ack_markup(&self, n: &Notification) -> Option<serde_json::Value> {
        let id = n.fields.get("id")?.as_str()?;
        (self.ack_button && n.fields.get("state")?.as_str()? == "firing").then(|| {
            serde_json::json!({"inline_keyboard": [[{
                "text": "Ack",
                "callback_data": format!("ack:{}", crate::ack::short_key(id)),
            }]]})
        })
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let picture = (self.picture
            && n.fields.get("state").and_then(|s| s.as_str()) == Some("firing"))
        .then(|| crate::picture::attach(&n.target, &n.fields))
        .flatten();
        if let Some(picture) = picture {
            match self.send_photo(n, picture).await {
                Err(SendError::Permanent(e)) => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "telegram refused the picture; sending the text alone");
                }
                done => return done,
            }
        }
        self.send_message(n).await
    }

    /// One `sendPhoto`: the picture, the text as its caption, the Ack button.
    async fn send_photo(
        &self,
        n: &Notification,
        picture: crate::picture::Picture,
    ) -> Result<(), SendError> {
        let chat_id = match &self.chat_id {
            ChatId::Id(id) => id.to_string(),
            ChatId::Name(name) => name.clone(),
        };
        let photo = reqwest::multipart::Part::bytes(picture.png)
            .file_name(crate::picture::FILE_NAME)
            .mime_str("image/png")
            .map_err(|e| SendError::Permanent(format!("telegram: {e}")))?;
        let mut form = reqwest::multipart::Form::new()
            .text("chat_id", chat_id)
            .text("caption", self.text_within(n, MAX_CAPTION, true))
            .part("photo", photo);
        if let Some(mode) = self.parse_mode {
            form = form.text("parse_mode", mode.as_str());
        }
        if let Some(quiet) = self.disable_notification {
            form = form.text("disable_notification", quiet.to_string());
        }
        if let Some(markup) = self.ack_markup(n) {
            form = form.text("reply_markup", markup.to_string());
        }
        let resp = self
            .client
            .post(self.photo_url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport_error("telegram", e, &self.redactor))?;
        self.answer(resp).await
    }

    async fn send_message(&self, n: &Notification) -> Result<(), SendError> {
        let message = SendMessage {
            chat_id: &self.chat_id,
            text: self.text(n),
            parse_mode: self.parse_mode.map(ParseMode::as_str),
            disable_notification: self.disable_notification,
            reply_markup: self.ack_markup(n),
        };
        let resp = self
            .client
            .post(self.url.clone())
            .json(&message)
            .send()
            .await
            .map_err(|e| transport_error("telegram", e, &self.redactor))?;
        self.answer(resp).await
    }

    /// The Bot API's reply: `ok`, or an error that says whether to retry.
    async fn answer(&self, resp: reqwest::Response) -> Result<(), SendError> {
        let status = resp.status();
        let body = read_body(resp, REPLY_READ_LIMIT).await;
        let Ok(reply) = serde_json::from_slice::<Reply>(&body) else {
            if status.is_success() {
                let message = format!(
                    "telegram: HTTP {status} but not a Bot API reply (is base_url right?): {}",
                    snippet(&body)
                );
                return Err(SendError::Permanent(self.redactor.apply(&message)));
            }
            return Err(status_error(
                "telegram",
                status,
                &snippet(&body),
                &self.redactor,
            ));
        };
        if status.is_success() && reply.ok {
            tracing::debug!(endpoint = %self.endpoint, chat_id = ?self.chat_id, "telegram message sent");
            return Ok(());
        }
        // `ok: false`: Telegram's own error code says more than a 200 would.
        let status = match reply.error_code.and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(code) if status.is_success() => code,
            _ if status.is_success() => StatusCode::BAD_REQUEST,
            _ => status,
        };
        let mut detail = reply.description.unwrap_or_else(|| snippet(&body));
        if let Some(p) = reply.parameters {
            if let Some(after) = p.retry_after.filter(|_| !detail.contains("retry after")) {
                detail.push_str(&format!(" (retry after {after} s)"));
            }
            if let Some(id) = p.migrate_to_chat_id {
                detail.push_str(&format!(
                    " (the group became a supergroup: set chat_id = {id})"
                ));
            }
        }
        Err(status_error("telegram", status, &detail, &self.redactor))
    }
}

fn bad_token(name: &str, token: &str) -> Error {
    let hint = if token.starts_with("bot") {
        " (leave out the \"bot\" prefix)"
    } else {
        ""
    };
    target_error(
        name,
        "token",
        format!("does not look like a bot token <bot id>:<key> from @BotFather{hint}"),
    )
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Cuts `s` to at most `max` UTF-16 code units, ending it with `…` when cut.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if utf16_len(s) <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + c.len_utf16() + 1 > max {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    Cow::Owned(out)
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Every character MarkdownV2 gives a meaning, backslash-escaped.
fn escape_markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        if "_*[]()~`>#+-=|{}.!\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Notifier for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram")
            .field("endpoint", &self.endpoint)
            .field("chat_id", &self.chat_id)
            .field("parse_mode", &self.parse_mode)
            .field("disable_notification", &self.disable_notification)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply as Answer, TestServer, refused_addr};
    use crate::notify::test_support::{alarm, assert_picture, multipart, windowed_alarm};

    const TOKEN: &str = "123456789:AAHsecretKeyFromBotFather_x-42";

    fn config(extra: &str, base_url: &str) -> Config {
        toml::from_str(&format!(
            "token = \"{TOKEN}\"\nbase_url = \"{base_url}\"\n{extra}"
        ))
        .expect("valid config")
    }

    fn build(extra: &str, server: &TestServer) -> Telegram {
        Telegram::build("tg", &config(extra, &server.url(""))).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).expect("valid config");
        Telegram::build("tg", &cfg)
            .expect_err("rejected")
            .to_string()
    }

    fn sent(message_text: &str) -> Answer {
        Answer::json(
            200,
            json!({"ok": true, "result": {"message_id": 7, "text": message_text}}),
        )
    }

    #[tokio::test]
    async fn posts_send_message_with_the_chat_id_and_title_then_body() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build(
            "chat_id = -1001234567890\ndisable_notification = true",
            &server,
        );
        telegram.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.json(),
            json!({
                "chat_id": -1001234567890_i64,
                "text": "[firing] sim-1 cpu_util\ncpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
                "disable_notification": true
            })
        );
    }

    #[test]
    fn an_alarms_explain_line_comes_between_the_title_and_the_body() {
        let cfg = config("chat_id = 42\nparse_mode = \"HTML\"", "http://127.0.0.1:9");
        let telegram = Telegram::build("tg", &cfg).expect("builds");
        let mut n = alarm();
        n.fields["explain"] = json!("system at 38.1, normal 2–6 (83 % of the cpu anomaly)");
        assert_eq!(
            telegram.text(&n),
            "<b>[firing] sim-1 cpu_util</b>\nsystem at 38.1, normal 2–6 (83 % of the cpu anomaly)\n\
             cpu_util: anomaly score 4.10 &gt;= 2.00 on sim-1 (severity 3)"
        );
    }

    #[tokio::test]
    async fn html_mode_bolds_the_title_and_escapes_the_text() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build(
            "chat_id = \"@lookout_alerts\"\nparse_mode = \"HTML\"",
            &server,
        );
        telegram.send(&alarm()).await.expect("delivered");

        let body = server.request().await.json();
        assert_eq!(body["chat_id"], "@lookout_alerts");
        assert_eq!(body["parse_mode"], "HTML");
        assert_eq!(
            body["text"],
            "<b>[firing] sim-1 cpu_util</b>\ncpu_util: anomaly score 4.10 &gt;= 2.00 on sim-1 (severity 3)"
        );
        assert_eq!(body.get("disable_notification"), None);
    }

    #[tokio::test]
    async fn markdown_v2_mode_bolds_the_title_and_escapes_every_special_character() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build("chat_id = \"42\"\nparse_mode = \"MarkdownV2\"", &server);
        telegram.send(&alarm()).await.expect("delivered");

        let body = server.request().await.json();
        assert_eq!(body["chat_id"], "42");
        assert_eq!(body["parse_mode"], "MarkdownV2");
        assert_eq!(
            body["text"],
            "*\\[firing\\] sim\\-1 cpu\\_util*\ncpu\\_util: anomaly score 4\\.10 \\>\\= 2\\.00 on sim\\-1 \\(severity 3\\)"
        );
        assert_eq!(escape_markdown_v2(r"a\b*c`d"), r"a\\b\*c\`d");
    }

    #[tokio::test]
    async fn long_messages_are_cut_to_telegrams_limit() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build("chat_id = 42\nparse_mode = \"HTML\"", &server);
        let mut n = alarm();
        n.body = "<😀>".repeat(2000);
        telegram.send(&n).await.expect("delivered");

        let text = server.request().await.json()["text"]
            .as_str()
            .unwrap()
            .to_owned();
        let visible = text
            .replace("<b>", "")
            .replace("</b>", "")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        assert_eq!(utf16_len(&visible), MAX_TEXT);
        assert!(visible.ends_with('…'));
    }

    #[tokio::test]
    async fn a_rejection_with_ok_false_is_permanent_and_quotes_telegram() {
        let mut server = TestServer::start(vec![Answer::json(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
        )])
        .await;
        let telegram = build("chat_id = 42", &server);
        let err = telegram.send(&alarm()).await.expect_err("400");
        assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "telegram: HTTP 400 Bad Request: Bad Request: chat not found"
        );
        server.request().await;
    }

    #[tokio::test]
    async fn ok_false_with_a_success_status_is_still_an_error() {
        let _server = TestServer::start(vec![Answer::json(
            200,
            json!({"ok": false, "error_code": 403}),
        )])
        .await;
        let telegram = build("chat_id = 42", &_server);
        assert!(matches!(
            telegram.send(&alarm()).await,
            Err(SendError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried() {
        let _server = TestServer::start(vec![
            Answer::json(
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 5",
                       "parameters": {"retry_after": 5}}),
            ),
            Answer::text(502, "Bad Gateway"),
        ])
        .await;
        let telegram = build("chat_id = 42", &_server);
        let err = telegram.send(&alarm()).await.expect_err("429");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "telegram: HTTP 429 Too Many Requests: Too Many Requests: retry after 5 (will retry)"
        );
        let err = telegram.send(&alarm()).await.expect_err("502");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_group_upgraded_to_a_supergroup_names_the_new_chat_id() {
        let _server = TestServer::start(vec![Answer::json(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat",
                   "parameters": {"migrate_to_chat_id": -1009876543210_i64}}),
        )])
        .await;
        let telegram = build("chat_id = -12345", &_server);
        let err = telegram.send(&alarm()).await.expect_err("400");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.contains("set chat_id = -1009876543210")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let cfg = config("chat_id = 42", &format!("http://{}", refused_addr().await));
        let telegram = Telegram::build("tg", &cfg).expect("builds");
        let err = telegram.send(&alarm()).await.expect_err("refused");
        assert!(
            matches!(err, SendError::Retry(ref m) if m.starts_with("telegram: cannot connect")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_token_never_appears_in_debug_output_or_error_messages() {
        let key = TOKEN.split_once(':').unwrap().1;
        let _server = TestServer::start(vec![
            Answer::text(
                404,
                &format!("<h1>No such bot: /bot{TOKEN}/sendMessage</h1>"),
            ),
            Answer::text(200, &format!("<html>proxy login for /bot{TOKEN}</html>")),
        ])
        .await;
        let telegram = build("chat_id = 42", &_server);
        let refused = Telegram::build(
            "tg",
            &config("chat_id = 42", &format!("http://{}", refused_addr().await)),
        )
        .unwrap();
        let texts = [
            format!("{telegram:?}"),
            telegram.send(&alarm()).await.expect_err("404").to_string(),
            telegram
                .send(&alarm())
                .await
                .expect_err("not the Bot API")
                .to_string(),
            refused
                .send(&alarm())
                .await
                .expect_err("refused")
                .to_string(),
            build_error(&format!("token = \"bot{TOKEN}\"\nchat_id = 42")),
            build_error(&format!(
                "token = \"{TOKEN}\"\nchat_id = 42\nbase_url = \"ftp://x\""
            )),
        ];
        for text in &texts {
            assert!(!text.contains(key), "token leaked in {text:?}");
        }
        assert!(
            texts[1].starts_with("telegram: HTTP 404 Not Found:"),
            "{}",
            texts[1]
        );
        assert!(
            texts[4].contains("leave out the \"bot\" prefix"),
            "{}",
            texts[4]
        );
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig = toml::from_str(&format!(
            "type = \"telegram\"\ntoken = \"{TOKEN}\"\nchat_id = 42"
        ))
        .unwrap();
        let TargetConfig::Telegram(cfg) = parsed else {
            panic!("telegram")
        };
        assert_eq!(cfg.base_url, "https://api.telegram.org");
        assert!(
            toml::from_str::<Config>(&format!("token = \"{TOKEN}\"\nchat_id = 42\nchat = 1"))
                .is_err()
        );
        assert!(
            toml::from_str::<Config>(&format!(
                "token = \"{TOKEN}\"\nchat_id = 42\nparse_mode = \"Markdown\""
            ))
            .is_err()
        );

        assert!(build_error("token = \"nocolon\"\nchat_id = 42").starts_with("targets.tg.token:"));
        assert!(
            build_error("token = \"12:has/slash\"\nchat_id = 42").starts_with("targets.tg.token:")
        );
        assert!(
            build_error(&format!("token = \"{TOKEN}\"\nchat_id = \"lookout\""))
                .starts_with("targets.tg.chat_id:")
        );
        assert!(
            build_error(&format!("token = \"{TOKEN}\"\nchat_id = 0"))
                .starts_with("targets.tg.chat_id:")
        );
        assert!(
            build_error(&format!(
                "token = \"{TOKEN}\"\nchat_id = 1\nbase_url = \"http://h/?q=1\""
            ))
            .starts_with("targets.tg.base_url:")
        );
    }

    #[tokio::test]
    async fn a_windowed_alarm_goes_as_one_photo_with_the_text_as_caption_and_the_ack_button() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build(
            "chat_id = -100123\nparse_mode = \"HTML\"\nack_button = true\ndisable_notification = true",
            &server,
        );
        let mut n = windowed_alarm();
        n.body = "é".repeat(3000);
        telegram.send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.path, format!("/bot{TOKEN}/sendPhoto"));
        let parts = multipart(req.header("content-type").unwrap(), &req.body);
        let part = |name: &str| {
            parts
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        assert_eq!(part("chat_id").text(), "-100123");
        assert_eq!(part("parse_mode").text(), "HTML");
        assert_eq!(part("disable_notification").text(), "true");
        let caption = part("caption").text();
        assert!(
            caption.starts_with("<b>[firing] sim-1 cpu_util</b>\n"),
            "{caption}"
        );
        assert_eq!(
            utf16_len(&caption.replace("<b>", "").replace("</b>", "")),
            MAX_CAPTION
        );
        assert!(
            !caption.contains("score ▂"),
            "no sparkline beside a picture"
        );
        let markup: serde_json::Value = serde_json::from_str(part("reply_markup").text()).unwrap();
        assert_eq!(markup["inline_keyboard"][0][0]["text"], "Ack");
        let photo = part("photo");
        assert_eq!(photo.filename.as_deref(), Some("anomaly.png"));
        assert_eq!(photo.content_type.as_deref(), Some("image/png"));
        assert_picture(&photo.data);
    }

    #[tokio::test]
    async fn with_picture_false_or_a_window_that_cannot_be_drawn_the_text_carries_a_sparkline() {
        let mut server = TestServer::start(vec![sent("...")]).await;
        let telegram = build("chat_id = 42\npicture = false", &server);
        telegram.send(&windowed_alarm()).await.expect("delivered");
        let req = server.request().await;
        assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
        let text = req.json()["text"].as_str().unwrap().to_owned();
        assert!(text.contains("\nscore ▂"), "{text}");

        let before = crate::picture::counts()
            .inconsistent
            .load(std::sync::atomic::Ordering::Relaxed);
        let telegram = build("chat_id = 42", &server);
        let mut hostile = windowed_alarm();
        hostile.fields["window"]["level"] = json!([1, 2]);
        telegram
            .send(&hostile)
            .await
            .expect("delivered without a picture");
        let req = server.request().await;
        assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
        assert!(
            crate::picture::counts()
                .inconsistent
                .load(std::sync::atomic::Ordering::Relaxed)
                > before
        );
    }

    #[tokio::test]
    async fn a_refused_photo_falls_back_to_the_text_and_a_rate_limit_is_retried_whole() {
        let mut server = TestServer::start(vec![
            Answer::json(400, json!({"ok": false, "error_code": 400, "description": "Bad Request: PHOTO_INVALID_DIMENSIONS"})),
            sent("..."),
            Answer::json(429, json!({"ok": false, "error_code": 429, "description": "Too Many Requests"})),
        ])
        .await;
        let telegram = build("chat_id = 42", &server);
        telegram
            .send(&windowed_alarm())
            .await
            .expect("delivered as text");
        assert_eq!(
            server.request().await.path,
            format!("/bot{TOKEN}/sendPhoto")
        );
        let text = server.request().await;
        assert_eq!(text.path, format!("/bot{TOKEN}/sendMessage"));
        assert!(text.json()["text"].as_str().unwrap().contains("score ▂"));
        let err = telegram.send(&windowed_alarm()).await.expect_err("429");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
        assert_eq!(
            server.request().await.path,
            format!("/bot{TOKEN}/sendPhoto")
        );
        assert_eq!(
            server.requests().len(),
            3,
            "no text after a photo that may be retried"
        );
    }

    #[test]
    fn truncation_counts_utf16_units_and_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("😀😀", 3), "😀…");
        assert_eq!(truncate("abc", 0), "");
    }
}
