//! Commands operators send the agent over MQTT, and `[control]`.
//!
//! One command so far: `<prefix>/<host>/cmd/relearn` with `{"model": NAME, "token":
//! SECRET}` orders a model (or `"*"`, every model of the host) to take what it sees now as
//! its new normal ([`crate::tick::Host::relearn`]). MQTT does not tell a subscriber who
//! published, so two locks guard it: the broker's ACL lets only operators write
//! `<prefix>/+/cmd/#` (docs/topics.md), and the agent obeys only a command carrying the
//! token of its `[control]` table, compared in constant time. Without a token the agent
//! does not subscribe at all.
//!
//! This module reads and checks commands and writes the answers
//! (`<prefix>/<host>/cmd/relearn/result`); `run` carries them out. Each refusal is one
//! [`Control::refuse`] that counts it and logs it (at most every [`LOG_EVERY`]), so the
//! log and `agent/stats` never disagree. The token itself is never logged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lookout_shared::config::Invalid;
use lookout_shared::secret::Secret;
use serde::{Deserialize, Serialize};

/// Refusals are logged at most this often (with the number left unlogged).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A command larger than this is refused unread.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Shortest token accepted in the config: a short one could be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The model name that means every model of the host.
pub const ALL: &str = "*";

/// `[control]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The shared secret a command must carry: a literal, `env:NAME` or `file:/path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (trailing newline removed), read once at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// The resolved `[control]`: present only when a token is configured.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    pub token: Secret,
}

impl ControlConfig {
    /// `None` without a token: commands are off.
    pub fn resolve(&self) -> Result<Option<ControlSettings>, Invalid> {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "token_file",
                    "set token or token_file, not both",
                ));
            }
            (None, None) => return Ok(None),
            (Some(t), None) => t.clone(),
            (None, Some(path)) => {
                Secret::from_file(path).map_err(|m| Invalid::new("token_file", m))?
            }
        };
        let key = if self.token.is_some() {
            "token"
        } else {
            "token_file"
        };
        if token.expose().chars().count() < MIN_TOKEN_CHARS {
            return Err(Invalid::new(
                key,
                format!(
                    "the token must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 16`)"
                ),
            ));
        }
        Ok(Some(ControlSettings { token }))
    }
}

/// Why a command was not obeyed; [`Refusal::reason`] is the label logs use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Published retained: it would be obeyed again on every reconnect.
    Retained,
    TooLarge(usize),
    /// Not a JSON object of the command's fields.
    BadRequest(String),
    NoToken,
    WrongToken,
    UnknownModel {
        model: String,
        known: Vec<String>,
    },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Retained => "retained",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NoToken => "no_token",
            Refusal::WrongToken => "wrong_token",
            Refusal::UnknownModel { .. } => "unknown_model",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Retained => f.write_str(
                "retained commands are not obeyed (they would run again on every reconnect); publish without retain",
            ),
            Refusal::TooLarge(n) => {
                write!(f, "command of {n} bytes; at most {MAX_COMMAND_BYTES}")
            }
            Refusal::BadRequest(why) => write!(
                f,
                "not a command: {why}; expected {{\"model\": \"<name>\" or \"*\", \"token\": \"<secret>\"}}"
            ),
            Refusal::NoToken => f.write_str("no token: the command must carry the agent's token"),
            Refusal::WrongToken => f.write_str("wrong token"),
            Refusal::UnknownModel { model, known } => write!(
                f,
                "no model {model:?} on this host; its models: {} (or \"*\" for all)",
                known.join(", ")
            ),
        }
    }
}

/// A relearn command as published.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    model: String,
    #[serde(default)]
    token: Option<String>,
}

/// The answer on `cmd/relearn/result`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    /// The models that relearned (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Those of them whose firing alarm resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(models: Vec<String>, resolved: Vec<String>) -> Self {
        Self {
            ok: true,
            models: Some(models),
            resolved: Some(resolved),
            error: None,
        }
    }

    pub fn refused(r: &Refusal) -> Self {
        Self {
            ok: false,
            models: None,
            resolved: None,
            error: Some(r.to_string()),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        lookout_shared::codec::to_json(self)
    }
}

/// Commands obeyed and refused on one host since start (`agent/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub accepted: u64,
    pub refused: u64,
}

/// The agent's side of the commands: the token, and per host what was obeyed and refused.
#[derive(Debug)]
pub struct Control {
    token: Secret,
    counts: Vec<Counts>,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Control {
    /// For `hosts` published hosts, indexed as `run` indexes them.
    pub fn new(settings: &ControlSettings, hosts: usize) -> Self {
        Self {
            token: settings.token.clone(),
            counts: vec![Counts::default(); hosts],
            logged_at: None,
            unlogged: 0,
        }
    }

    /// The model a command names, once it has passed every check but the model's name
    /// (which only the host knows). The token is checked before anything in the command is
    /// looked at, so that a client without it learns nothing of the host's models.
    pub fn check(&self, payload: &[u8], retain: bool) -> Result<String, Refusal> {
        if retain {
            return Err(Refusal::Retained);
        }
        if payload.len() > MAX_COMMAND_BYTES {
            return Err(Refusal::TooLarge(payload.len()));
        }
        let req: Request = serde_json::from_slice(payload).map_err(|e| {
            // Only the kind of mistake and its place: serde's text may quote the payload,
            // and with it a token.
            Refusal::BadRequest(match e.classify() {
                serde_json::error::Category::Data => "missing or unknown field".into(),
                _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
            })
        })?;
        let Some(given) = req.token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::NoToken);
        };
        if !same_token(self.token.expose().as_bytes(), given.as_bytes()) {
            return Err(Refusal::WrongToken);
        }
        if req.model.is_empty() {
            return Err(Refusal::BadRequest("empty model".into()));
        }
        Ok(req.model)
    }

    /// Counts an obeyed command of host `index` and logs it.
    pub fn accept(&mut self, index: usize, host: &str, models: &[String], resolved: &[String]) {
        if let Some(c) = self.counts.get_mut(index) {
            c.accepted += 1;
        }
        tracing::info!(
            host,
            models = %models.join(","),
            resolved = %resolved.join(","),
            "relearn command obeyed: these models take what they see now as normal"
        );
    }

    /// Counts a refused command of host `index` and logs it, at most every [`LOG_EVERY`].
    pub fn refuse(&mut self, index: usize, host: &str, why: &Refusal) {
        let refused = self.counts.get_mut(index).map_or(0, |c| {
            c.refused += 1;
            c.refused
        });
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                host,
                reason = why.reason(),
                error = %why,
                refused,
                since_last_log = self.unlogged,
                "relearn command refused (logged at most every 10 s)"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        }
    }

    /// Host `index`'s counts.
    pub fn counts(&self, index: usize) -> Counts {
        self.counts.get(index).copied().unwrap_or_default()
    }
}

/// Whether `given` is the token `expected`, in time that depends on `expected`'s length
/// alone: every byte of it is compared, whatever the given token holds.
fn same_token(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!*e);
        diff |= std::hint::black_box(e ^ g);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-secret";

    fn control() -> Control {
        Control::new(
            &ControlSettings {
                token: Secret::new(TOKEN.into()),
            },
            2,
        )
    }

    fn command(model: &str, token: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"model": model, "token": token})).unwrap()
    }

    #[test]
    fn a_command_with_the_token_names_its_model() {
        let c = control();
        assert_eq!(c.check(&command("cpu", TOKEN), false), Ok("cpu".into()));
        assert_eq!(c.check(&command(ALL, TOKEN), false), Ok("*".into()));
    }

    #[test]
    fn a_command_without_the_right_token_is_refused_before_its_model_is_read() {
        let c = control();
        assert_eq!(
            c.check(&command("cpu", "0123456789abcdef-secreT"), false),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            c.check(&command("cpu", &TOKEN[..TOKEN.len() - 1]), false),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            c.check(&command("cpu", &format!("{TOKEN}x")), false),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            c.check(&command("", "nope"), false),
            Err(Refusal::WrongToken)
        );
        assert_eq!(c.check(&command("cpu", ""), false), Err(Refusal::NoToken));
        assert_eq!(
            c.check(br#"{"model": "cpu"}"#, false),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            c.check(&command("cpu", TOKEN), true),
            Err(Refusal::Retained)
        );
    }

    #[test]
    fn bad_json_is_refused_without_panicking_and_without_echoing_the_payload() {
        let c = control();
        let secretish = format!(r#"{{"model": "cpu", "token": "{TOKEN}", "x": 1}}"#);
        for payload in [
            &b""[..],
            b"not json",
            b"[1, 2]",
            b"{\"model\": 3, \"token\": \"x\"}",
            b"{\"token\": \"x\"}",
            b"\xff\xfe{",
            b"{\"model\": \"cpu\", \"token\": ",
            secretish.as_bytes(),
        ] {
            let err = c.check(payload, false).unwrap_err();
            assert_eq!(err.reason(), "bad_request", "{payload:?}: {err}");
            assert!(!err.to_string().contains(TOKEN), "{err}");
        }
        assert_eq!(
            c.check(&vec![b' '; MAX_COMMAND_BYTES + 1], false),
            Err(Refusal::TooLarge(MAX_COMMAND_BYTES + 1))
        );
        assert_eq!(
            c.check(&command("", TOKEN), false).unwrap_err().reason(),
            "bad_request"
        );
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same_token(b"abcdefgh", b"abcdefgh"));
        assert!(!same_token(b"abcdefgh", b"abcdefgx"));
        assert!(!same_token(b"abcdefgh", b"abcdefg"));
        assert!(!same_token(b"abcdefgh", b"abcdefghi"));
        assert!(!same_token(b"abcdefgh", b""));
        // A shorter given token is padded with bytes that never match.
        assert!(!same_token(b"a\0", b"a"));
    }

    #[test]
    fn refusals_and_obeyed_commands_are_counted_per_host() {
        let mut c = control();
        c.refuse(1, "h2", &Refusal::WrongToken);
        c.refuse(1, "h2", &Refusal::NoToken);
        c.accept(0, "h1", &["cpu".into()], &[]);
        assert_eq!(
            c.counts(0),
            Counts {
                accepted: 1,
                refused: 0
            }
        );
        assert_eq!(
            c.counts(1),
            Counts {
                accepted: 0,
                refused: 2
            }
        );
        assert_eq!(c.counts(7), Counts::default());
    }

    #[test]
    fn replies_are_the_documented_json() {
        let ok = Reply::ok(vec!["cpu".into()], vec!["cpu".into()]).to_json();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ok).unwrap(),
            serde_json::json!({"ok": true, "models": ["cpu"], "resolved": ["cpu"]})
        );
        let no = Reply::refused(&Refusal::WrongToken).to_json();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&no).unwrap(),
            serde_json::json!({"ok": false, "error": "wrong token"})
        );
    }

    #[test]
    fn the_config_needs_one_long_enough_token_and_no_unknown_keys() {
        let parse = |s: &str| toml::from_str::<ControlConfig>(s);
        assert!(parse("").unwrap().resolve().unwrap().is_none());
        let c = parse(&format!("token = \"{TOKEN}\"")).unwrap();
        assert_eq!(c.resolve().unwrap().unwrap().token.expose(), TOKEN);
        let short = parse("token = \"short\"").unwrap().resolve().unwrap_err();
        assert_eq!(short.key, "token");
        assert!(parse("tokn = \"x\"").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let c = ControlConfig {
            token: None,
            token_file: Some(path.clone()),
        };
        assert_eq!(c.resolve().unwrap().unwrap().token.expose(), TOKEN);
        let both = ControlConfig {
            token: Some(Secret::new(TOKEN.into())),
            token_file: Some(path),
        };
        assert_eq!(both.resolve().unwrap_err().key, "token_file");
        let missing = ControlConfig {
            token: None,
            token_file: Some(dir.path().join("nope")),
        };
        assert!(missing.resolve().unwrap_err().to_string().contains("nope"));
        // The effective config never prints it.
        let shown = toml::to_string(&parse(&format!("token = \"{TOKEN}\"")).unwrap()).unwrap();
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}
