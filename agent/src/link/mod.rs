//! The MQTT side of the agent.
//!
//! - [`broker`]: the embedded rumqttd, so one binary works with nothing else installed.
//! - [`client`]: one connection per host with its last will, reconnect with backoff and
//!   jitter, lossy publishing for metrics and scores, retained alarm state that is
//!   re-published after every reconnect, and subscriptions (rules documents, ingested
//!   events, operators' commands) delivered into a bounded inbox.
//! - [`config`]: the link's tables, `[mqtt]`, `[broker]` and `[outbox]`.
//! - [`outbox`]: the durable store of alarm states not yet acknowledged by the broker.
//! - [`sweep`]: clearing retained messages an earlier run published and this one does not
//!   (Home Assistant discovery configs).

pub mod broker;
pub mod client;
pub mod config;
pub mod outbox;
pub mod sweep;

pub use client::{Extras, Inbox, Incoming, Link, LinkStats};
pub use config::{
    BrokerConfig, BrokerSettings, MqttConfig, MqttSettings, OutboxConfig, OutboxSettings,
};
