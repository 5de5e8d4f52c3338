//! The Lookout agent.
//!
//! Data flows one way: sample → preprocess → score → decide → publish.
//!
//! Layout:
//! - [`config`]: the TOML config, parsed strictly, `--set` overrides, validation.
//! - [`footprint`]: keeping resident memory small (paging hints for our own code).
//! - [`frame`]: one tick's samples, the hand-off from samplers to models.
//! - [`health`]: the agent's own health, published on `agent/stats`.
//! - [`homeassistant`]: Home Assistant MQTT discovery configs, one device per host.
//! - [`sampler`]: one file per `/proc` source (cpu, memory, disk, load, network).
//! - [`simulate`]: simulated hosts with injected anomalies and their ground truth.
//! - [`scorer`]: the lagged k-means scorer (preprocess, k-means, model, training thread).
//! - [`alarm`]: hysteresis that turns anomalous ticks into firing/resolved alarms.
//! - [`rules`]: threshold rules as reference data: document, events, windows, evaluator,
//!   and the `test-rules` command.
//! - [`link`]: the MQTT side: client with reconnect and the embedded broker.
//! - [`run`]: the `run` command, wiring the above into ticks.
//! - [`replay`]: the `replay` command, a CSV streamed through one model offline, and its plot.
//! - [`watch`]: the `watch` command, the fleet's hosts, scores and firing alarms seen as an
//!   MQTT subscriber: live in the terminal, or one plain snapshot.
//! - [`error`]: the crate's error type.

pub mod alarm;
pub mod config;
pub mod error;
pub mod footprint;
pub mod frame;
pub mod health;
pub mod homeassistant;
pub mod link;
pub mod replay;
pub mod rules;
pub mod run;
pub mod sampler;
pub mod scorer;
pub mod simulate;
pub mod watch;

pub use error::Error;
