use std::path::PathBuf;

use thiserror::Error;

/// The bridge's one error type; each variant names the file, key, target or topic at fault.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// A target's table is invalid: `targets.<name>.<key>: why`.
    #[error("targets.{target}.{key}: {message}")]
    Target {
        target: String,
        key: String,
        message: String,
    },
    #[error("secret {what}: {message}")]
    Secret { what: String, message: String },
    /// `lookout-bridge picture`: an alarm file that has no window to draw.
    #[error("{path}: {message}")]
    Picture { path: PathBuf, message: String },
    #[error("mqtt: {0}")]
    Mqtt(String),
}
