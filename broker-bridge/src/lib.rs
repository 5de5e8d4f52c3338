//! The Lookout broker-bridge: subscribes to alarm topics and fans each alarm out to
//! notifier plugins, with Alertmanager-grade handling.
//!
//! Data flows one way, one stage per file:
//! source → pipeline (limits → decode → silence/offline → dedup → render → repeat →
//! group) → per-target queue → deliver → plugin; recover puts what a previous run left
//! unfinished at the head of the queues.
//!
//! Layout:
//! - [`config`]: the TOML config, parsed strictly, resolved, then built into plugins once.
//! - [`source`]: the MQTT subscription (reconnects with backoff, manual acks) and the
//!   sorting of what arrives into control messages and messages to route.
//! - [`pipeline`]: a message's way from the source to the target queues, one function per
//!   stage; the state of each stage lives in its own module:
//!   - [`limits`]: per-route limits on input: payload size, topic length, message rate;
//!   - [`message`]: decoding payloads (alarm JSON, other JSON, text) into fields;
//!   - [`silence`]: silences, from the config and from MQTT;
//!   - [`mute`]: recurring time intervals that mute routes or keep them active;
//!   - [`deadman`]: the `silent` alarm of hosts that stopped publishing;
//!   - [`offline`]: host availability: the `offline` alarm after its grace, stale
//!     retained states, holding back offline hosts' alarms;
//!   - [`route`]: topic filters and `when` conditions ([`expr`]), templates ([`template`]);
//!   - [`dedup`]: the notification log that keeps (target, alarm id, state) unique and,
//!     under `bridge.state_dir`, keeps queued notifications across restarts and `kill -9`;
//!   - [`orphan`]: resolved notices only to targets that were sent the firing;
//!   - [`repeat`], [`group`]: re-sending alarms that stay firing, batching notifications
//!     that share labels into one.
//! - [`firing`], [`ack`]: the alarms notified as firing (to whom, acknowledged by whom,
//!   escalation steps sent), durable under `bridge.state_dir`; acknowledgement requests
//!   from `<prefix>/bridge/ack` and their replies. [`ack_client`]: `lookout-bridge ack`.
//!   [`escalate`]: routes' escalation steps (sent from the pipeline's timers).
//!   [`chat_ack`]: "Ack" buttons pressed in Telegram, back to the pipeline; [`ack_http`]:
//!   the listener for Slack's (signed) button presses.
//! - [`deliver`]: per-target bounded queues, workers, retries, dead letters; [`fallback`]:
//!   a failing target's notifications handed to its fallback target.
//! - [`heartbeat`]: the HTTP heartbeat while connected, and the broker-lost notice.
//! - [`recover`]: at start, the notification log's unfinished notifications, settled or
//!   queued again.
//! - [`notify`]: the notifier plugins, one file each, behind one trait. They depend on
//!   nothing upstream of them (no `pipeline`, `source` or `run`).
//! - [`decommission`]: the `decommission` command: clears a gone host's retained topics.
//! - [`stats`]: counters, published on `<prefix>/bridge/<id>/stats`.
//! - [`run`]: the `run` command: the stages wired together, the main loop, shutdown.
//! - [`error`]: the crate's error type.

pub mod ack;
pub mod ack_client;
pub mod ack_http;
pub mod chat_ack;
pub mod config;
pub mod deadman;
pub mod decommission;
pub mod dedup;
pub mod deliver;
pub mod error;
pub mod escalate;
pub mod expr;
pub mod fallback;
pub mod firing;
pub mod group;
pub mod heartbeat;
pub mod limits;
pub mod message;
pub mod mute;
pub mod notify;
pub mod offline;
pub mod orphan;
pub mod picture;
pub mod pipeline;
#[cfg(test)]
mod proptests;
pub mod recover;
pub mod repeat;
pub mod route;
pub mod run;
pub mod silence;
pub mod source;
pub mod stats;
pub mod template;

pub use error::Error;
