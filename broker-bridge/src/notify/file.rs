//! `type = "file"`: appends one line per notification, the rendered body (by default the
//! message's JSON on one line). Newlines inside a body are escaped so one notification
//! stays one line. The file is opened once, in append mode, and created if missing.
//! Nothing else should write to it: its length tells the notification log, after a crash,
//! whether the line in flight was written (see `dedup.rs`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;

use super::{Notification, Notifier, SendError, SendFuture};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File to append to (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// fsync after every line: slower, but a line written survives a power cut.
    #[serde(default)]
    pub fsync: bool,
}

#[derive(Debug)]
pub struct File {
    path: PathBuf,
    fsync: bool,
    file: Mutex<std::fs::File>,
}

impl File {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, crate::Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .map_err(|e| crate::Error::Target {
                target: name.into(),
                key: "path".into(),
                message: format!("cannot open {} for appending: {e}", cfg.path.display()),
            })?;
        Ok(Self {
            path: cfg.path.clone(),
            fsync: cfg.fsync,
            file: Mutex::new(file),
        })
    }
}

impl Notifier for File {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let mut line = n.body.replace('\n', "\\n");
            line.push('\n');
            // A line is a few hundred bytes to a local file: writing it inline is cheaper
            // than handing it to a blocking thread.
            let mut f = self
                .file
                .lock()
                .map_err(|_| SendError::Permanent("file writer poisoned".into()))?;
            f.write_all(line.as_bytes())
                .and_then(|()| if self.fsync { f.sync_data() } else { Ok(()) })
                .map_err(|e| SendError::Retry(format!("writing {}: {e}", self.path.display())))
        })
    }

    /// The file's length: only this target appends to it, so growth past the length
    /// recorded with the last finished notification is the line in flight at a crash.
    fn position(&self) -> Option<u64> {
        let f = self.file.lock().ok()?;
        f.metadata().ok().map(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_one_line_per_notification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alarms.log");
        let f = File::build(
            "f",
            &Config {
                path: path.clone(),
                fsync: true,
            },
        )
        .unwrap();
        for body in ["{\"a\":1}", "two\nlines"] {
            let n = Notification {
                target: "f".into(),
                topic: "t".into(),
                title: "x".into(),
                body: body.into(),
                fields: serde_json::json!({}),
                raw: vec![],
            };
            f.send(&n).await.unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\ntwo\\nlines\n"
        );
    }

    #[test]
    fn an_unwritable_path_is_a_config_error_naming_the_key() {
        let err = File::build(
            "f",
            &Config {
                path: "/nonexistent-dir/x.log".into(),
                fsync: false,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("targets.f.path"), "{err}");
    }
}
