//! Types both Lookout binaries agree on.
//!
//! Layout:
//! - [`topics`]: the MQTT topic scheme (`<prefix>/<host>/...`), built and parsed in one place.
//! - [`payload`]: the JSON documents published on those topics; their field names are a
//!   public contract documented in `docs/topics.md`.
//! - [`codec`]: JSON on the wire for users, postcard where compactness matters.
//! - [`logging`]: tracing to stderr, filtered by `LOOKOUT_LOG`.
//! - [`overrides`]: `--set KEY=VALUE` applied to a TOML document, and parsing with them.
//! - [`url`]: `mqtt://host:port` and `mqtts://host:port` as written in configs.
//! - [`tls`]: TLS (CA, client certificate, verification) and login for MQTT clients.
//! - [`signal`]: the SIGINT/SIGTERM future both binaries shut down on.
//! - [`systemd`]: `READY=1` / `STOPPING=1` to `$NOTIFY_SOCKET` for `Type=notify` units.
//! - [`time`]: wall-clock milliseconds and backoff jitter.
//! - [`duration`]: `"1s"`/`"5m"` durations in config files.
//! - [`secret`]: passwords and tokens from config, environment or file, never printed.
//! - [`error`]: the crate's one error type.

pub mod codec;
pub mod duration;
pub mod error;
pub mod logging;
pub mod overrides;
pub mod payload;
pub mod secret;
pub mod signal;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod topics;
pub mod url;

pub use error::Error;
