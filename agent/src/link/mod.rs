//! The MQTT side of the agent.
//!
//! - [`buffer`]: scores and metrics kept while the broker is away, sent again at a rate.
//! - [`broker`]: the embedded rumqttd, so one binary works with nothing else installed.
//! - [`client`]: one connection per host with its last will, reconnect with backoff and
//!   jitter, lossy publishing for metrics and scores, retained alarm state that is
//!   re-published after every reconnect, and subscriptions (rules documents, ingested
//!   events, operators' commands) delivered into a bounded inbox.
//! - [`config`]: the link's tables, `[mqtt]`, `[broker]`, `[outbox]` and `[buffer]`.
//! - [`outbox`]: the durable store of alarm states not yet acknowledged by the broker.
//! - [`ring`]: the bounded on-disk buffer of scores and metrics kept while a broker is
//!   unreachable (the agent's own link, and each `[[upstream]]`).
//! - [`sweep`]: clearing retained messages an earlier run published and this one does not
//!   (Home Assistant discovery configs).
//! - [`version`]: a connection in MQTT 5 or 3.1.1 and which one a broker speaks (the link
//!   and each `[[upstream]]` use it), and the user properties of the agent's messages.

pub mod broker;
pub mod buffer;
pub mod client;
pub mod config;
pub mod error_log;
pub mod outbox;
pub mod ring;
pub mod sweep;
pub mod version;

pub use client::{Extras, Inbox, Incoming, Link, LinkStats};
pub use config::{
    BrokerConfig, BrokerSettings, BufferConfig, BufferSettings, MqttConfig, MqttSettings,
    OutboxConfig, OutboxSettings,
};
