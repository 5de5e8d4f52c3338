//! Forwarding to upstream brokers (`[[upstream]]`): a site's agents send their alarms,
//! scores and metrics to a central broker, keep them while it is unreachable, fail over
//! to another, and take the fleet's rules document down from it.
//!
//! - [`config`]: the `[[upstream]]` table and its checks (a forwarding that would loop is
//!   refused).
//! - [`route`]: topic names on each side (site prefix, rewrites) and filter matching.
//! - [`forward`]: the forwarder of one upstream: reads the agent's broker, sends up with
//!   QoS 1, keeps scores and metrics in a `link::ring` during outages, brings topics down.
//! - [`failover`]: which broker of an upstream to use, and when to fail back.
//! - [`delivered`]: which retained states the upstream already has, across restarts.

pub mod config;
pub mod delivered;
pub mod failover;
pub mod forward;
pub mod route;

pub use config::{UpstreamConfig, UpstreamSettings};
pub use forward::{Forwarder, UpstreamReport};
