//! `type = "ntfy"`: publishes each notification to an ntfy topic (ntfy.sh or a self-hosted
//! server), `POST <base_url>/<topic>` with the body as the message and the title, priority
//! and tags in headers.
//!
//! ```toml
//! [targets.phone]
//! type = "ntfy"
//! base_url = "https://ntfy.example.com"   # default https://ntfy.sh
//! topic = "lookout-alarms"
//! token = "env:NTFY_TOKEN"
//! ```
//!
//! Priority follows the alarm's severity (1 low, 2 default, 3 high, 4 urgent, on ntfy's
//! scale 2..5); a resolution is sent at low priority, since it should not wake anyone.
//! Headers are ASCII: a title or tag with other characters is sent RFC 2047-encoded, which
//! ntfy decodes.
//!
//! A firing alarm with a `window` is published with its picture (`crate::picture`) as an
//! attachment: `PUT` with the PNG as the body, `Filename: anomaly.png`, and the message in
//! the `Message` header (cut to 2048 bytes, newlines as `\n`, which ntfy turns back). A
//! server without attachments refuses it (a 4xx): the text alone is then published, with
//! the score sparkline, as it is with `picture = false`.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::alarm::{Alarm, State, title_and_text, truncate_bytes, truncate_chars};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    send_checked, target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "ntfy"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ntfy server, default `"https://ntfy.sh"`; a path prefix is kept
    /// (`"https://example.com/ntfy"`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The topic to publish to: 1–64 letters, digits, `-` or `_`. On a public server
    /// anyone who knows the name can read it, so pick one hard to guess or use a token.
    pub topic: String,
    /// An access token (`tk_...`), sent as `Authorization: Bearer`: a literal, `env:NAME`
    /// or `file:/path`; never logged. Excludes `username`/`password`.
    pub token: Option<Secret>,
    /// User name for HTTP basic authentication (needs `password`).
    pub username: Option<String>,
    /// Password for basic authentication: a literal, `env:NAME` or `file:/path`.
    pub password: Option<Secret>,
    /// Tags added to every message, after the automatic ones (an emoji for the state,
    /// the host, the source). ntfy shows tags that name an emoji as that emoji.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Firing alarms with a window are published with their picture attached (default);
    /// `false`: text with a sparkline.
    #[serde(default = "yes")]
    pub picture: bool,
}

fn yes() -> bool {
    true
}

fn default_base_url() -> String {
    "https://ntfy.sh".to_owned()
}

/// ntfy's default `message-size-limit`, in bytes: a longer message becomes an attachment,
/// or is refused on servers without attachments.
const MAX_MESSAGE_BYTES: usize = 4096;
/// ntfy documents no title limit; this keeps the header well inside what proxies accept.
const MAX_TITLE_CHARS: usize = 250;
/// The message in a header, beside an attachment: half the body's limit, so the header
/// stays well inside what proxies accept once encoded.
const MAX_HEADER_MESSAGE_BYTES: usize = 2048;

enum Auth {
    None,
    Bearer(Secret),
    Basic(String, Secret),
}

/// The ntfy plugin, built from a validated [`Config`].
pub struct Ntfy {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    topic: String,
    auth: Auth,
    tags: Vec<String>,
    redactor: Redactor,
    picture: bool,
}

impl Ntfy {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let base = parse_base_url(name, "base_url", &cfg.base_url)?;
        let topic = cfg.topic.trim();
        if topic.is_empty()
            || topic.len() > 64
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(target_error(
                name,
                "topic",
                "must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        let mut redactor = Redactor::default();
        let auth = match (&cfg.token, &cfg.username, &cfg.password) {
            (None, None, None) => Auth::None,
            (Some(token), None, None) => {
                if token.expose().is_empty() || HeaderValue::from_str(token.expose()).is_err() {
                    return Err(target_error(
                        name,
                        "token",
                        "must be a non-empty header-safe string",
                    ));
                }
                redactor.add(token.expose());
                Auth::Bearer(token.clone())
            }
            (Some(_), _, _) => {
                return Err(target_error(
                    name,
                    "token",
                    "a token and username/password exclude each other",
                ));
            }
            (None, Some(user), Some(password)) => {
                if user.is_empty() || user.contains(':') {
                    return Err(target_error(
                        name,
                        "username",
                        "must be non-empty and contain no ':'",
                    ));
                }
                redactor.add(password.expose());
                Auth::Basic(user.clone(), password.clone())
            }
            (None, Some(_), None) => return Err(target_error(name, "password", "is missing")),
            (None, None, Some(_)) => {
                return Err(target_error(name, "password", "needs a username"));
            }
        };
        let mut tags = Vec::with_capacity(cfg.tags.len());
        for tag in &cfg.tags {
            let tag = tag.trim();
            if tag.is_empty() || tag.contains(',') || tag.chars().any(char::is_control) {
                return Err(target_error(
                    name,
                    "tags",
                    format!("{tag:?}: tags must be non-empty, without ',' or control characters"),
                ));
            }
            tags.push(tag.to_owned());
        }
        Ok(Ntfy {
            client: client(name, cfg.timeout)?,
            url: join_path(&base, &[topic]),
            endpoint: endpoint(&base),
            topic: topic.to_owned(),
            auth,
            tags,
            redactor,
            picture: cfg.picture,
        })
    }

    /// The headers and the message of one publish, with (`picture`) or without the picture.
    fn request_with(
        &self,
        n: &Notification,
        picture: bool,
    ) -> (Vec<(&'static str, HeaderValue)>, String) {
        let alarm = Alarm::of(n);
        let (title, body) = title_and_text(n, picture);
        let message = if body.is_empty() { title } else { &body };
        let mut headers = Vec::new();
        if !title.is_empty() && message != title {
            headers.push((
                "Title",
                header_text(&truncate_chars(title, MAX_TITLE_CHARS)),
            ));
        }
        headers.push((
            "Priority",
            HeaderValue::from_static(priority(alarm.state, alarm.severity)),
        ));
        let emoji = match (alarm.state, alarm.severity) {
            (State::Resolved, _) => "white_check_mark",
            (State::Firing, 3..) => "rotating_light",
            (State::Firing, _) => "warning",
        };
        let tags: Vec<String> = [Some(emoji), alarm.host, alarm.source]
            .into_iter()
            .flatten()
            .map(|t| t.replace(',', " "))
            .chain(self.tags.iter().cloned())
            .collect();
        headers.push(("Tags", header_text(&tags.join(","))));
        (headers, truncate_bytes(message, MAX_MESSAGE_BYTES))
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let firing = Alarm::of(n).state == State::Firing;
        let picture = (self.picture && firing)
            .then(|| crate::picture::attach(&n.target, &n.fields))
            .flatten();
        if let Some(picture) = picture {
            match self.publish(n, Some(picture)).await {
                Err(SendError::Permanent(e)) => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "ntfy refused the picture; publishing the text alone");
                }
                done => return done,
            }
        }
        self.publish(n, None).await
    }

    /// One publish: the text as the body, or the picture as the body and the text in the
    /// `Message` header.
    async fn publish(
        &self,
        n: &Notification,
        picture: Option<crate::picture::Picture>,
    ) -> Result<(), SendError> {
        let (headers, message) = self.request_with(n, picture.is_some());
        let mut req = match picture {
            None => self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(message),
            Some(p) => {
                let short = truncate_bytes(&message, MAX_HEADER_MESSAGE_BYTES);
                self.client
                    .put(self.url.clone())
                    .header("Filename", crate::picture::FILE_NAME)
                    .header("Message", header_text(&short.replace('\n', "\\n")))
                    .body(p.png)
            }
        };
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| SendError::Permanent("ntfy: token is not header-safe".into()))?;
                value.set_sensitive(true);
                req.header(AUTHORIZATION, value)
            }
            Auth::Basic(user, password) => req.basic_auth(user, Some(password.expose())),
        };
        send_checked(
            "ntfy",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(endpoint = %self.endpoint, topic = %self.topic, "ntfy message published");
        Ok(())
    }
}

/// ntfy's priority (1 min .. 5 max) for an alarm's state and severity 1–4.
fn priority(state: State, severity: u8) -> &'static str {
    match (state, severity) {
        (State::Resolved, _) | (State::Firing, ..=1) => "2",
        (State::Firing, 2) => "3",
        (State::Firing, 3) => "4",
        (State::Firing, _) => "5",
    }
}

/// Text as a header value: control characters become spaces; anything that is not plain
/// ASCII (or could be mistaken for an encoded word) is sent as one RFC 2047 encoded word,
/// which ntfy decodes, since raw UTF-8 in headers is mangled on the way.
fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii()
        && !clean.contains("=?")
        && let Ok(value) = HeaderValue::from_str(&clean)
    {
        return value;
    }
    let encoded = format!("=?UTF-8?B?{}?=", base64(clean.as_bytes()));
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Standard base64 with padding: only for [`header_text`], not worth a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Notifier for Ntfy {
    fn kind(&self) -> &'static str {
        "ntfy"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Ntfy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::Bearer(_) => "token",
            Auth::Basic(..) => "basic",
        };
        f.debug_struct("Ntfy")
            .field("endpoint", &self.endpoint)
            .field("topic", &self.topic)
            .field("auth", &auth)
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
    use crate::notify::test_support::{alarm, assert_picture, windowed_alarm};

    fn build(extra: &str, server: &TestServer) -> Ntfy {
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"{}\"\ntopic = \"lookout-alarms\"\n{extra}",
            server.url("")
        ))
        .expect("valid config");
        Ntfy::build("phone", &cfg).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).expect("valid config");
        Ntfy::build("phone", &cfg)
            .expect_err("rejected")
            .to_string()
    }

    fn published() -> Reply {
        Reply::json(200, json!({"id": "hwQ2YpKdmg", "event": "message"}))
    }

    #[tokio::test]
    async fn a_windowed_alarm_is_put_with_its_picture_attached_and_the_text_in_the_message_header()
    {
        let mut server = TestServer::start(vec![Reply::json(200, json!({"id": "x"}))]).await;
        let ntfy = build("", &server);
        ntfy.send(&windowed_alarm()).await.expect("delivered");
        let req = server.request().await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("PUT", "/lookout-alarms")
        );
        assert_eq!(req.header("filename"), Some("anomaly.png"));
        assert_eq!(req.header("title"), Some("[firing] sim-1 cpu_util"));
        assert_eq!(req.header("message"), Some(alarm().body.as_str()));
        assert_picture(&req.body);
    }

    #[tokio::test]
    async fn a_server_refusing_attachments_gets_the_text_with_a_sparkline_as_does_picture_false() {
        let mut server = TestServer::start(vec![
            Reply::json(
                400,
                json!({"code": 40014, "error": "attachments not allowed"}),
            ),
            Reply::json(200, json!({"id": "x"})),
        ])
        .await;
        let ntfy = build("", &server);
        ntfy.send(&windowed_alarm())
            .await
            .expect("delivered as text");
        assert_eq!(server.request().await.method, "PUT");
        let text = server.request().await;
        assert_eq!(text.method, "POST");
        assert!(text.text().contains("\nscore ▂"), "{}", text.text());

        let off = build("picture = false", &server);
        off.send(&windowed_alarm()).await.expect("delivered");
        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert!(req.header("filename").is_none());
        assert!(req.text().contains("score ▂"));
    }

    #[tokio::test]
    async fn a_firing_alarm_is_published_with_title_priority_tags_and_a_bearer_token() {
        let mut server = TestServer::start(vec![published()]).await;
        let ntfy = build(
            "token = \"tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2\"\ntags = [\"lookout\"]",
            &server,
        );
        ntfy.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/lookout-alarms");
        assert_eq!(req.header("title"), Some("[firing] sim-1 cpu_util"));
        assert_eq!(req.header("priority"), Some("4"), "severity 3 is high");
        assert_eq!(
            req.header("tags"),
            Some("rotating_light,sim-1,cpu_util,lookout")
        );
        assert_eq!(
            req.header("authorization"),
            Some("Bearer tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2")
        );
        assert_eq!(
            req.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(req.text(), alarm().body);
    }

    #[tokio::test]
    async fn a_resolved_alarm_is_sent_at_low_priority_with_basic_auth_under_a_path_prefix() {
        let mut server = TestServer::start(vec![published()]).await;
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"{}\"\ntopic = \"ops\"\nusername = \"bridge\"\npassword = \"pa55word\"",
            server.url("/ntfy/")
        ))
        .unwrap();
        let ntfy = Ntfy::build("phone", &cfg).unwrap();
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.title = "[resolved] sim-1 cpu_util".into();
        ntfy.send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.path, "/ntfy/ops");
        assert_eq!(req.header("priority"), Some("2"));
        assert_eq!(req.header("tags"), Some("white_check_mark,sim-1,cpu_util"));
        assert_eq!(
            req.header("authorization"),
            Some("Basic YnJpZGdlOnBhNTV3b3Jk")
        );
    }

    #[test]
    fn severity_maps_onto_ntfys_priorities() {
        let got: Vec<_> = (1..=4).map(|s| priority(State::Firing, s)).collect();
        assert_eq!(got, ["2", "3", "4", "5"]);
        assert_eq!(priority(State::Resolved, 4), "2");
    }

    #[tokio::test]
    async fn non_ascii_titles_are_rfc_2047_encoded_and_long_messages_cut_to_4096_bytes() {
        let mut server = TestServer::start(vec![published()]).await;
        let ntfy = build("", &server);
        let mut n = alarm();
        n.title = "Überlast\nauf sim-1 🔥".into();
        n.body = "é".repeat(3000);
        ntfy.send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(
            req.header("title"),
            Some(format!("=?UTF-8?B?{}?=", base64("Überlast auf sim-1 🔥".as_bytes())).as_str())
        );
        assert!(req.body.len() <= MAX_MESSAGE_BYTES, "{}", req.body.len());
        assert!(req.text().ends_with('…'));
        assert_eq!(req.header("authorization"), None);
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"bridge:pa55word"), "YnJpZGdlOnBhNTV3b3Jk");
        assert_eq!(
            header_text("a=?b").to_str().unwrap(),
            "=?UTF-8?B?YT0/Yg==?="
        );
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_retried_and_refusals_are_not() {
        let mut server = TestServer::start(vec![
            Reply::json(
                429,
                json!({"code": 42901, "http": 429, "error": "limit reached"}),
            ),
            Reply::text(503, "down"),
            Reply::json(
                403,
                json!({"code": 40301, "http": 403, "error": "forbidden"}),
            ),
        ])
        .await;
        let ntfy = build("", &server);
        assert!(matches!(
            ntfy.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        assert!(matches!(
            ntfy.send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
        let err = ntfy.send(&alarm()).await.expect_err("403");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("ntfy: HTTP 403")),
            "{err:?}"
        );
        for _ in 0..3 {
            server.request().await;
        }
        let refused = Ntfy::build(
            "phone",
            &toml::from_str(&format!(
                "base_url = \"http://{}\"\ntopic = \"t\"",
                refused_addr().await
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            refused.send(&alarm()).await,
            Err(SendError::Retry(ref m)) if m.starts_with("ntfy: cannot connect")
        ));
    }

    #[tokio::test]
    async fn the_token_never_appears_in_debug_output_or_error_messages() {
        let token = "tk_secretsecretsecret0042";
        let _server =
            TestServer::start(vec![Reply::text(401, &format!("bad token Bearer {token}"))]).await;
        let ntfy = build(&format!("token = \"{token}\""), &_server);
        let texts = [
            format!("{ntfy:?}"),
            ntfy.send(&alarm()).await.expect_err("401").to_string(),
        ];
        for text in &texts {
            assert!(!text.contains(token), "token leaked in {text:?}");
        }
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig = toml::from_str("type = \"ntfy\"\ntopic = \"t\"").unwrap();
        let TargetConfig::Ntfy(cfg) = parsed else {
            panic!("ntfy")
        };
        assert_eq!(cfg.base_url, "https://ntfy.sh");
        assert!(toml::from_str::<Config>("topic = \"t\"\nprio = 1").is_err());
        assert!(build_error("topic = \"a/b\"").starts_with("targets.phone.topic:"));
        assert!(
            build_error(&format!("topic = \"{}\"", "x".repeat(65)))
                .starts_with("targets.phone.topic:")
        );
        assert!(
            build_error("topic = \"t\"\ntoken = \"x\"\nusername = \"u\"\npassword = \"p\"")
                .starts_with("targets.phone.token:")
        );
        assert_eq!(
            build_error("topic = \"t\"\npassword = \"p\""),
            "targets.phone.password: needs a username"
        );
        assert!(build_error("topic = \"t\"\ntags = [\"a,b\"]").starts_with("targets.phone.tags:"));
        assert!(
            build_error("topic = \"t\"\nbase_url = \"http://h/?x=1\"")
                .starts_with("targets.phone.base_url:")
        );
    }
}
