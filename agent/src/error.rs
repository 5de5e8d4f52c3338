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
    /// One rule of a rules document is wrong; the whole document is rejected, so a typo
    /// never leaves a fleet running half of a new rule set. `rule` reads
    /// `rules[2] (ruleId 1234)`, `field` is the document's own key (`operator`).
    #[error("{origin}: {rule}: {field}: {message}")]
    Rule {
        origin: String,
        rule: String,
        field: String,
        message: String,
    },
    /// A rules document that is not a rule or a list of rules at all.
    #[error("{origin}: {message}")]
    RulesDocument { origin: String, message: String },
    /// `watch` could not reach the broker (refused, unreachable, TLS, login).
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// `watch` could not draw on or read the terminal, or write its snapshot.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// An event the rules cannot evaluate: counted and skipped, never fatal. `at` is
    /// `line 12` in a stream of objects or `[3]` in an array.
    #[error("{origin}, {at}: {message}")]
    Event {
        origin: String,
        at: String,
        message: String,
    },
}
