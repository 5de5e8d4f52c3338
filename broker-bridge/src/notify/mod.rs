//! Notifier plugins: one module each, all behind the [`Notifier`] trait.
//!
//! A plugin is built once from its `[targets.NAME]` table (validated then, so nothing at
//! run time reads raw config) and then asked to [`send`](Notifier::send) one
//! [`Notification`] at a time by its target's worker. It says whether a failure is worth
//! retrying; the worker owns retries, backoff, timeouts and the dead-letter file.

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;
use serde_json::Value;

pub(crate) mod alarm;
pub(crate) mod alertmanager;
pub mod discord;
pub mod exec;
pub mod file;
pub mod gotify;
pub mod http;
pub mod log;
pub mod mqtt;
pub mod ntfy;
pub mod opsgenie;
pub mod pagerduty;
pub mod pushover;
pub mod slack;
pub mod smtp;
pub mod teams;
pub mod telegram;
/// The test HTTP server the plugins' tests talk to: the end-to-end tests' own, one file
/// for both.
#[cfg(test)]
#[path = "../../../tests/common/http.rs"]
pub(crate) mod test_server;
#[cfg(test)]
pub(crate) mod test_support;

/// One message, rendered for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Name of the target (`[targets.NAME]`).
    pub target: String,
    /// MQTT topic the message arrived on.
    pub topic: String,
    /// Rendered title template (route's `title`, default `"[{state}] {host} {source}"`).
    pub title: String,
    /// Rendered body template (route's `body`, default the message's JSON on one line).
    pub body: String,
    /// The decoded message: the alarm's JSON object, any other JSON value, or
    /// `{"payload": "<text>"}` for plain text. Plugins that send JSON send this.
    pub fields: Value,
    /// The message as received.
    pub raw: Vec<u8>,
}

impl Notification {
    /// The body for people: the alarm's `explain` line (which dimension moved, beside its
    /// normal range) first, then the body, unless the title or a body written for people
    /// shows it already (a route template with `{explain}`). A JSON body holds it too, but
    /// as one field among many: the line still goes first. The chat and e-mail plugins
    /// send this; the plugins that send the alarm's fields send them as they are.
    pub fn body_with_explain(&self) -> std::borrow::Cow<'_, str> {
        let explain = self
            .fields
            .get("explain")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let Some(e) = explain else {
            return self.body.as_str().into();
        };
        let json_body = serde_json::from_str::<serde::de::IgnoredAny>(&self.body).is_ok();
        if self.title.contains(e) || (self.body.contains(e) && !json_body) {
            return self.body.as_str().into();
        }
        if self.body.is_empty() {
            return e.to_owned().into();
        }
        format!("{e}\n{}", self.body).into()
    }
}

impl Notification {
    /// [`body_with_explain`](Self::body_with_explain), then, for a target that is not
    /// sending the alarm's picture (`picture` false: it cannot, it is off, or the window
    /// could not be drawn), the window's score as a text sparkline on its own line, unless
    /// the title or body shows it already (a template with `{sparkline}`).
    pub fn body_for_people(&self, picture: bool) -> std::borrow::Cow<'_, str> {
        let body = self.body_with_explain();
        let line = match (picture, crate::picture::sparkline_of(&self.fields)) {
            (false, Some(line)) => line,
            _ => return body,
        };
        if self.title.contains(&line) || body.contains(&line) {
            return body;
        }
        if body.is_empty() {
            return line.into();
        }
        format!("{body}\n{line}").into()
    }
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Network errors, timeouts, 5xx, 429: worth another attempt.
    #[error("{0} (will retry)")]
    Retry(String),
    /// 4xx, a rejected address, a bad command: retrying would fail the same way.
    #[error("{0}")]
    Permanent(String),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

pub trait Notifier: Send + Sync {
    /// The plugin's `type`, for logs and stats.
    fn kind(&self) -> &'static str;
    /// Delivers one notification. The worker applies the per-attempt timeout around it.
    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a>;
    /// Where the target's output stands, for targets that can tell (the `file` target: its
    /// length). The notification log records it with each finished notification, so after
    /// a crash the bridge sees whether the notification in flight was written and does not
    /// write it twice. `None` (the default): cannot tell.
    fn position(&self) -> Option<u64> {
        None
    }
}

/// `[targets.NAME]`: `type` picks the plugin, the other keys are the plugin's own.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    Log(log::Config),
    File(file::Config),
    Exec(exec::Config),
    Http(http::Config),
    Slack(slack::Config),
    Telegram(telegram::Config),
    Smtp(smtp::Config),
    Mqtt(mqtt::Config),
    Ntfy(ntfy::Config),
    Pagerduty(pagerduty::Config),
    Opsgenie(opsgenie::Config),
    Discord(discord::Config),
    Gotify(gotify::Config),
    Pushover(pushover::Config),
    Teams(teams::Config),
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Log(_) => "log",
            TargetConfig::File(_) => "file",
            TargetConfig::Exec(_) => "exec",
            TargetConfig::Http(_) => "http",
            TargetConfig::Slack(_) => "slack",
            TargetConfig::Telegram(_) => "telegram",
            TargetConfig::Smtp(_) => "smtp",
            TargetConfig::Mqtt(_) => "mqtt",
            TargetConfig::Ntfy(_) => "ntfy",
            TargetConfig::Pagerduty(_) => "pagerduty",
            TargetConfig::Opsgenie(_) => "opsgenie",
            TargetConfig::Discord(_) => "discord",
            TargetConfig::Gotify(_) => "gotify",
            TargetConfig::Pushover(_) => "pushover",
            TargetConfig::Teams(_) => "teams",
        }
    }

    /// Builds the plugin; errors name the target and the key at fault.
    pub fn build(&self, name: &str) -> Result<Box<dyn Notifier>, crate::Error> {
        Ok(match self {
            TargetConfig::Log(c) => Box::new(log::Log::build(name, c)?),
            TargetConfig::File(c) => Box::new(file::File::build(name, c)?),
            TargetConfig::Exec(c) => Box::new(exec::Exec::build(name, c)?),
            TargetConfig::Http(c) => Box::new(http::Http::build(name, c)?),
            TargetConfig::Slack(c) => Box::new(slack::Slack::build(name, c)?),
            TargetConfig::Telegram(c) => Box::new(telegram::Telegram::build(name, c)?),
            TargetConfig::Smtp(c) => Box::new(smtp::Smtp::build(name, c)?),
            TargetConfig::Mqtt(c) => Box::new(mqtt::Mqtt::build(name, c)?),
            TargetConfig::Ntfy(c) => Box::new(ntfy::Ntfy::build(name, c)?),
            TargetConfig::Pagerduty(c) => Box::new(pagerduty::PagerDuty::build(name, c)?),
            TargetConfig::Opsgenie(c) => Box::new(opsgenie::Opsgenie::build(name, c)?),
            TargetConfig::Discord(c) => Box::new(discord::Discord::build(name, c)?),
            TargetConfig::Gotify(c) => Box::new(gotify::Gotify::build(name, c)?),
            TargetConfig::Pushover(c) => Box::new(pushover::Pushover::build(name, c)?),
            TargetConfig::Teams(c) => Box::new(teams::Teams::build(name, c)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::alarm;

    const EXPLAIN: &str = "system at 38.1, normal 2–6 (83 % of the cpu anomaly)";

    #[test]
    fn the_explain_line_goes_first_in_the_body_unless_a_template_shows_it_already() {
        let mut n = alarm();
        assert_eq!(
            n.body_with_explain(),
            n.body,
            "no explain: the body as it is"
        );
        n.fields["explain"] = json!(EXPLAIN);
        assert_eq!(n.body_with_explain(), format!("{EXPLAIN}\n{}", n.body));
        n.body = serde_json::to_string(&n.fields).unwrap();
        assert!(
            n.body_with_explain().starts_with(&format!("{EXPLAIN}\n{{")),
            "the default JSON body holds it as a field, not as a line"
        );
        n.body = format!("why: {EXPLAIN}");
        assert_eq!(n.body_with_explain(), n.body, "a template with {{explain}}");
        n.body = String::new();
        assert_eq!(n.body_with_explain(), EXPLAIN);
        n.title = format!("[firing] {EXPLAIN}");
        assert_eq!(n.body_with_explain(), "", "the title shows it");
    }
}
