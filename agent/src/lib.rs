//! The Lookout agent.
//!
//! Data flows one way: sample → preprocess → score → decide → publish.
//!
//! Layout:
//! - [`sampler`]: one file per `/proc` source (cpu, memory, disk, load, network).
//! - [`simulate`]: simulated hosts with injected anomalies and their ground truth.
//! - [`frame`]: one tick's samples, the hand-off from samplers to models.
//! - [`scorer`]: the lagged k-means scorer (preprocess, k-means, model, fits, the
//!   training thread) and its config keys.
//! - [`alarm`]: per tick, anomalous or not and at which level; hysteresis into episodes;
//!   alarm payloads, one builder for models and rules.
//! - [`decide`]: the one decision path, model → score → judge → hysteresis → episode,
//!   that `run` and `replay` share; `[detector]` and the models' tables.
//! - [`devices`]: device models, learned over series ingested over MQTT, one instance per
//!   device, bounded, aggregated into the interval.
//! - [`tick`]: one host's tick as a function: frame in, what to publish ([`out`]) out.
//! - [`rules`]: threshold rules as reference data: document, events, windows, evaluator,
//!   the running agent's rules, and the `test-rules` command.
//! - [`link`]: the MQTT side: client with reconnect and outbox, the embedded broker, and
//!   their config tables.
//! - [`upstream`]: forwarding to upstream brokers (`[[upstream]]`) with failover, a
//!   buffer for outages, and topics brought down from the centre.
//! - [`persist`]: model snapshots on disk, written atomically, and `[snapshots]`.
//! - [`homeassistant`]: Home Assistant MQTT discovery configs, one device per host.
//! - [`control`]: operators' commands over MQTT (`cmd/relearn`): the token check, the
//!   answers, and `[control]`.
//! - [`health`]: the agent's own health, published on `agent/stats`.
//! - [`footprint`]: keeping resident memory small (paging hints for our own code).
//! - [`config`]: reads the TOML document and hands each part its table; checks across
//!   tables; old key names.
//! - [`run`]: the `run` command, wiring the above into ticks.
//! - [`record`]: the `record` command, this host's metrics as a CSV for replaying later.
//! - [`replay`]: the `replay` command, a CSV streamed through one model offline, and its plot.
//! - [`sim_fleet`]: the `simulate` command, a simulated fleet offline through the tick
//!   loop, for the fleet benchmark.
//! - [`watch`]: the `watch` command, the fleet's hosts, scores and firing alarms seen as an
//!   MQTT subscriber: live in the terminal, or one plain snapshot.
//! - [`error`]: the crate's error type.
//!
//! Which part may use which is written down in `docs/architecture.md` and checked by
//! `tests/architecture.rs`.

pub mod alarm;
pub mod config;
pub mod control;
pub mod decide;
pub mod devices;
pub mod error;
pub mod footprint;
pub mod frame;
pub mod health;
pub mod homeassistant;
pub mod link;
pub mod out;
pub mod persist;
pub mod record;
pub mod replay;
pub mod rules;
pub mod run;
pub mod sampler;
pub use lookout_scorer as scorer;
pub mod sim_fleet;
pub mod simulate;
pub mod tick;
pub mod upstream;
pub mod watch;

pub use error::Error;
