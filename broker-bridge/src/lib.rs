//! The Lookout broker-bridge: subscribes to alarm topics and fans each alarm out to
//! notifier plugins, with Alertmanager-grade handling.
//!
//! Data flows one way: message → decode → route → silence/inhibit/dedup → queue → deliver.
//!
//! Layout:
//! - [`config`]: the TOML config, parsed strictly and built into routes and targets.
//! - [`message`]: decoding payloads (alarm JSON, other JSON, text) into fields.
//! - [`route`]: topic filters and `when` conditions ([`expr`]), templates ([`template`]).
//! - [`limits`]: per-route limits on input: payload size, topic length, message rate.
//! - [`dedup`]: the notification log that keeps (target, alarm id, state) unique and,
//!   under `bridge.state_dir`, keeps queued notifications across restarts and `kill -9`.
//! - [`group`]: batching notifications that share labels into one.
//! - [`silence`], [`inhibit`], [`repeat`]: silences, holding back offline hosts' alarms,
//!   re-sending alarms that stay firing.
//! - [`deliver`]: per-target bounded queues, workers, retries, dead letters.
//! - [`notify`]: the notifier plugins, one file each, behind one trait.
//! - [`stats`]: counters, published on `<prefix>/bridge/<id>/stats`.
//! - [`run`]: the `run` command.
//! - [`error`]: the crate's error type.

pub mod config;
pub mod dedup;
pub mod deliver;
pub mod error;
pub mod expr;
pub mod group;
pub mod inhibit;
pub mod limits;
pub mod message;
pub mod notify;
#[cfg(test)]
mod proptests;
pub mod repeat;
pub mod route;
pub mod run;
pub mod silence;
pub mod stats;
pub mod template;

pub use error::Error;
