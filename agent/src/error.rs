use std::path::PathBuf;

use thiserror::Error;

/// The agent's one error type; each variant names the file, key or topic at fault.
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
    #[error("{path}:{line}: {message}")]
    Csv {
        path: String,
        line: u64,
        message: String,
    },
    /// `replay --windows`: the labelled-windows file is not in NAB's format.
    #[error("{path}: {message}")]
    Windows { path: PathBuf, message: String },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded broker on {listen}: {message}")]
    Broker { listen: String, message: String },
}
