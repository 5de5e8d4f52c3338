//! `type = "log"`: writes each notification to the bridge's log (stderr), at a chosen
//! level. Useful first target and a trail next to the real ones.

use serde::Deserialize;

use super::{Notification, Notifier, SendFuture};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `info` (default) or `warn`.
    #[serde(default = "info")]
    pub level: String,
}

fn info() -> String {
    "info".into()
}

#[derive(Debug)]
pub struct Log {
    name: String,
    warn: bool,
}

impl Log {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, crate::Error> {
        let warn = match cfg.level.as_str() {
            "info" => false,
            "warn" => true,
            other => {
                return Err(crate::Error::Target {
                    target: name.into(),
                    key: "level".into(),
                    message: format!("{other:?} is not \"info\" or \"warn\""),
                });
            }
        };
        Ok(Self {
            name: name.into(),
            warn,
        })
    }
}

impl Notifier for Log {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            if self.warn {
                tracing::warn!(target_name = %self.name, topic = %n.topic, title = %n.title, body = %n.body, "notification");
            } else {
                tracing::info!(target_name = %self.name, topic = %n.topic, title = %n.title, body = %n.body, "notification");
            }
            Ok(())
        })
    }
}
