use thiserror::Error;

/// Everything that can go wrong in the shared crate, each variant naming what was at fault.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid JSON payload on {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid postcard record ({what}): {source}")]
    Postcard {
        what: String,
        #[source]
        source: postcard::Error,
    },
    #[error("invalid topic {topic:?}: {reason}")]
    Topic { topic: String, reason: &'static str },
    #[error("cannot notify systemd on NOTIFY_SOCKET={socket}: {source}")]
    Notify {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}
