//! `type = "pushover"`: sends each notification through Pushover's Message API,
//! `POST <base_url>/1/messages.json`, form-encoded, with the application's API token and
//! the user (or group) key as form fields, as Pushover's API defines them.
//!
//! ```toml
//! [targets.pushover]
//! type = "pushover"
//! token = "env:PUSHOVER_APP_TOKEN"
//! user = "env:PUSHOVER_USER_KEY"
//! ```
//!
//! Priority follows the alarm's severity: 1 → -1 (quiet), 2 → 0 (normal), 3 and 4 → 1
//! (high: sounds even in the user's quiet hours); a resolution → -1. Priority 2
//! ("emergency") is never used: it requires `retry` and `expire` and repeats the alert until
//! someone acknowledges it in the app, which the bridge cannot track or cancel when the
//! alarm resolves. Texts are cut to Pushover's limits: message 1024 characters, title 250.

use std::fmt;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::Url;
use serde::Deserialize;

use super::alarm::{Alarm, State, title_and_text, truncate_chars};
use super::http::{
    Redactor, SNIPPET_READ_LIMIT, client, default_timeout, endpoint, join_path, parse_base_url,
    send_checked, target_error,
};
use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "pushover"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API server, default `"https://api.pushover.net"`; a path prefix is kept.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The application's API token (pushover.net > Your Applications): a literal,
    /// `env:NAME` or `file:/path`; never logged.
    pub token: Secret,
    /// The user key or delivery-group key to notify: a literal, `env:NAME` or
    /// `file:/path`; never logged.
    pub user: Secret,
    /// Only these of the user's devices (names, comma-separated; default: all).
    pub device: Option<String>,
    /// A notification sound by name (`"siren"`, `"none"`, a custom sound's name); default:
    /// the user's.
    pub sound: Option<String>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default). The
    /// target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_base_url() -> String {
    "https://api.pushover.net".to_owned()
}

/// Pushover's documented limits, in characters.
const MAX_MESSAGE: usize = 1024;
const MAX_TITLE: usize = 250;
const MAX_DEVICE: usize = 25;

/// The Pushover plugin, built from a validated [`Config`].
pub struct Pushover {
    client: reqwest::Client,
    url: Url,
    endpoint: String,
    token: Secret,
    user: Secret,
    device: Option<String>,
    sound: Option<String>,
    redactor: Redactor,
}

/// A key as Pushover issues them: letters and digits (30 of them).
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Pushover {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let base = parse_base_url(name, "base_url", &cfg.base_url)?;
        let mut redactor = Redactor::default();
        for (key, secret) in [("token", &cfg.token), ("user", &cfg.user)] {
            if !valid_key(secret.expose().trim()) {
                return Err(target_error(
                    name,
                    key,
                    "must be a Pushover key (letters and digits)",
                ));
            }
            redactor.add(secret.expose().trim());
        }
        let device = match cfg.device.as_deref().map(str::trim) {
            Some(d) if !d.split(',').all(|d| valid_name(d.trim(), MAX_DEVICE)) => {
                return Err(target_error(
                    name,
                    "device",
                    format!(
                        "must be device names (1-{MAX_DEVICE} letters, digits, '_' or '-'), comma-separated"
                    ),
                ));
            }
            other => other.map(|d| d.split(',').map(str::trim).collect::<Vec<_>>().join(",")),
        };
        let sound = match cfg.sound.as_deref().map(str::trim) {
            Some(s) if !valid_name(s, 64) => {
                return Err(target_error(
                    name,
                    "sound",
                    "must be a sound name (letters, digits, '_' or '-')",
                ));
            }
            other => other.map(str::to_owned),
        };
        Ok(Pushover {
            client: client(name, cfg.timeout)?,
            url: join_path(&base, &["1", "messages.json"]),
            endpoint: endpoint(&base),
            token: cfg.token.clone(),
            user: cfg.user.clone(),
            device,
            sound,
            redactor,
        })
    }

    /// The form fields of one message, the keys first.
    fn form(&self, n: &Notification) -> Vec<(&'static str, String)> {
        let alarm = Alarm::of(n);
        let (title, body) = title_and_text(n, false);
        let body = &*body;
        let mut form = vec![
            ("token", self.token.expose().trim().to_owned()),
            ("user", self.user.expose().trim().to_owned()),
        ];
        // Pushover refuses an empty message; a title alone is sent as the message.
        let message = if body.is_empty() { title } else { body };
        if !title.is_empty() && message != title {
            form.push(("title", truncate_chars(title, MAX_TITLE)));
        }
        form.push(("message", truncate_chars(message, MAX_MESSAGE)));
        form.push((
            "priority",
            priority(alarm.state, alarm.severity).to_string(),
        ));
        if let Some(device) = &self.device {
            form.push(("device", device.clone()));
        }
        if let Some(sound) = &self.sound {
            form.push(("sound", sound.clone()));
        }
        form
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let form = self.form(n);
        let req = self.client.post(self.url.clone()).form(&form);
        send_checked(
            "pushover",
            req,
            &self.endpoint,
            &self.redactor,
            SNIPPET_READ_LIMIT,
        )
        .await?;
        tracing::debug!(endpoint = %self.endpoint, "pushover message sent");
        Ok(())
    }
}

/// Pushover's priority (-2..2, of which -1..1 are used) for an alarm's state and severity.
fn priority(state: State, severity: u8) -> i8 {
    match (state, severity) {
        (State::Resolved, _) | (State::Firing, ..=1) => -1,
        (State::Firing, 2) => 0,
        (State::Firing, _) => 1,
    }
}

impl Notifier for Pushover {
    fn kind(&self) -> &'static str {
        "pushover"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Pushover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pushover")
            .field("endpoint", &self.endpoint)
            .field("device", &self.device)
            .field("sound", &self.sound)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, Request, TestServer, refused_addr};
    use crate::notify::test_support::alarm;

    const TOKEN: &str = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";
    const USER: &str = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG";

    fn build(server: &TestServer, extra: &str) -> Pushover {
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"{}\"\ntoken = \"{TOKEN}\"\nuser = \"{USER}\"\n{extra}",
            server.url("/po")
        ))
        .expect("valid config");
        Pushover::build("p", &cfg).expect("builds")
    }

    fn sent() -> Reply {
        Reply::json(
            200,
            json!({"status": 1, "request": "647d2300-702c-4b38-8b2f-d56326ae460b"}),
        )
    }

    /// The body decoded as `application/x-www-form-urlencoded`.
    fn decode(req: &Request) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!("x:?{}", req.text())).expect("form body");
        url.query_pairs().into_owned().collect()
    }

    fn get<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn a_firing_alarm_is_a_form_post_with_the_keys_and_a_high_priority() {
        let mut server = TestServer::start(vec![sent()]).await;
        build(&server, "device = \"phone, tablet\"\nsound = \"siren\"")
            .send(&alarm())
            .await
            .expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/po/1/messages.json");
        assert_eq!(
            req.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let form = decode(&req);
        let keys: Vec<_> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "token", "user", "title", "message", "priority", "device", "sound"
            ]
        );
        assert_eq!(get(&form, "token"), Some(TOKEN));
        assert_eq!(get(&form, "user"), Some(USER));
        assert_eq!(get(&form, "title"), Some("[firing] sim-1 cpu_util"));
        assert_eq!(get(&form, "message"), Some(alarm().body.as_str()));
        assert_eq!(get(&form, "priority"), Some("1"));
        assert_eq!(get(&form, "device"), Some("phone,tablet"));
        assert_eq!(get(&form, "sound"), Some("siren"));
    }

    #[tokio::test]
    async fn a_resolution_is_quiet_and_texts_are_cut_to_the_api_limits() {
        let mut server = TestServer::start(vec![sent()]).await;
        let pushover = build(&server, "");
        let mut n = alarm();
        n.fields["state"] = json!("resolved");
        n.title = "t".repeat(300);
        n.body = "é".repeat(2000);
        pushover.send(&n).await.expect("delivered");
        let form = decode(&server.request().await);
        assert_eq!(get(&form, "priority"), Some("-1"));
        assert_eq!(get(&form, "title").unwrap().chars().count(), MAX_TITLE);
        let message = get(&form, "message").unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE);
        assert!(message.ends_with('…'));
        assert_eq!(get(&form, "device"), None);
        assert_eq!(get(&form, "sound"), None);

        // A title alone is the message, since Pushover needs one.
        n.body = String::new();
        n.title = "[resolved] sim-1 cpu_util".into();
        pushover.send(&n).await.expect("delivered");
        let form = decode(&server.request().await);
        assert_eq!(get(&form, "message"), Some("[resolved] sim-1 cpu_util"));
        assert_eq!(get(&form, "title"), None);

        let got: Vec<_> = (1..=4).map(|s| priority(State::Firing, s)).collect();
        assert_eq!(got, [-1, 0, 1, 1]);
        assert_eq!(priority(State::Resolved, 4), -1);
    }

    #[tokio::test]
    async fn limits_and_server_errors_are_retried_and_bad_keys_are_not_and_never_shown() {
        let mut server = TestServer::start(vec![
            Reply::text(500, ""),
            Reply::json(429, json!({"status": 0, "errors": ["application limit reached"]})),
            Reply::json(
                400,
                json!({"user": "invalid", "errors": [format!("user identifier {USER} is not a valid user")],
                       "status": 0, "request": "5042853c-402d-4a18-abcb-168734a801de"}),
            ),
        ])
        .await;
        let pushover = build(&server, "");
        for _ in 0..2 {
            assert!(matches!(
                pushover.send(&alarm()).await,
                Err(SendError::Retry(_))
            ));
        }
        let err = pushover.send(&alarm()).await.expect_err("400");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.starts_with("pushover: HTTP 400")),
            "{err:?}"
        );
        let debug = format!("{pushover:?}");
        for text in [err.to_string(), debug] {
            assert!(!text.contains(TOKEN) && !text.contains(USER), "{text}");
        }
        for _ in 0..3 {
            server.request().await;
        }
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"http://{}\"\ntoken = \"{TOKEN}\"\nuser = \"{USER}\"",
            refused_addr().await
        ))
        .unwrap();
        assert!(matches!(
            Pushover::build("p", &cfg).unwrap().send(&alarm()).await,
            Err(SendError::Retry(_))
        ));
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str("type = \"pushover\"\ntoken = \"t\"\nuser = \"u\"").unwrap();
        let TargetConfig::Pushover(cfg) = parsed else {
            panic!("pushover")
        };
        assert_eq!(cfg.base_url, "https://api.pushover.net");
        let built = Pushover::build("p", &cfg).unwrap();
        assert_eq!(
            built.url.as_str(),
            "https://api.pushover.net/1/messages.json"
        );
        assert!(
            toml::from_str::<Config>("token = \"t\"").is_err(),
            "user is required"
        );
        assert!(toml::from_str::<Config>("token = \"t\"\nuser = \"u\"\npriority = 2").is_err());
        let err = |t: &str| {
            Pushover::build("p", &toml::from_str(t).unwrap())
                .expect_err("rejected")
                .to_string()
        };
        assert!(err("token = \" \"\nuser = \"u\"").starts_with("targets.p.token:"));
        assert!(err("token = \"t\"\nuser = \"u-1\"").starts_with("targets.p.user:"));
        assert!(
            err("token = \"t\"\nuser = \"u\"\ndevice = \"a,,b\"").starts_with("targets.p.device:")
        );
        assert!(
            err("token = \"t\"\nuser = \"u\"\nsound = \"a b\"").starts_with("targets.p.sound:")
        );
        assert!(
            err("base_url = \"ftp://x\"\ntoken = \"t\"\nuser = \"u\"")
                .starts_with("targets.p.base_url:")
        );
    }
}
