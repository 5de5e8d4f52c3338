//! Threshold rules kept as reference data (seed 002, Azure Stream Analytics): per device
//! and metric, tumbling windows of avg/min/max/count compared with a rule's value, for
//! the things a learned model should not have to discover (a disk above 95 %, a sensor
//! that reports too rarely). Data flows one way: document → engine; event → window →
//! output events and alarm changes.
//!
//! Layout:
//! - [`config`]: the `[rules]` and `[ingest]` tables.
//! - [`document`]: the rules document, parsed and validated as a whole; operators.
//! - [`event`]: input events (the seed's shape and the plain ingest form), one or a stream.
//! - [`window`]: one rule's open tumbling window and its bounded groups.
//! - [`engine`]: the evaluator: event time, closing windows, outputs, raise/resolve,
//!   replacing the document without losing state.
//! - [`offline`]: the `test-rules` command.
//! - [`live`]: the rules in the running agent: documents from a watched file and retained
//!   MQTT messages, events from `<prefix>/ingest/#` and the host's samples, alarms.
//! - `glob`, `time`: `deviceId` globs and RFC 3339 times, small enough to write here.

pub mod config;
pub mod document;
pub mod engine;
pub mod event;
pub mod glob;
pub mod live;
pub mod offline;
mod time;
pub mod window;

#[cfg(test)]
mod tests;

pub use config::{IngestConfig, RulesConfig, RulesSettings};
pub use document::{Operator, Rule, RuleId, RuleSet};
pub use engine::{AlarmKey, Cause, Change, Closed, Engine, Limits, Output, Stats};
pub use event::{Defaults, Event, events};
pub use time::{format_rfc3339_ms, parse_rfc3339};
