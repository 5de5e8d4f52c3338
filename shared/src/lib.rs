//! Types both Lookout binaries agree on.
//!
//! Layout:
//! - [`topics`]: the MQTT topic scheme (`<prefix>/<host>/...`), built and parsed in one place.
//! - [`payload`]: the JSON documents published on those topics; their field names are a
//!   public contract documented in `docs/topics.md`.
//! - [`codec`]: JSON on the wire for users, postcard where compactness matters.
//! - [`logging`]: tracing to stderr, filtered by `LOOKOUT_LOG`.
//! - [`config`]: reading a config document (file, stdin, built-in), `--set` overrides,
//!   renamed keys, strict parsing with errors that name the key, its line and a suggestion.
//! - [`mqtt`]: MQTT client options built one way for every client of both binaries.
//! - [`overrides`]: `--set KEY=VALUE` applied to a TOML document.
//! - [`url`]: `mqtt://host:port` and `mqtts://host:port` as written in configs.
//! - [`tls`]: TLS (CA, client certificate, verification) and login for MQTT clients.
//! - [`signal`]: the SIGINT/SIGTERM future both binaries shut down on.
//! - [`systemd`]: `READY=1` / `STOPPING=1` to `$NOTIFY_SOCKET` for `Type=notify` units.
//! - [`time`]: wall-clock milliseconds, civil dates, and one retry [`time::Backoff`].
//! - [`rng`]: the small deterministic generator behind reproducible fits and simulations.
//! - [`duration`]: `"1s"`/`"5m"` durations in config files.
//! - [`secret`]: passwords and tokens from config, environment or file, never printed.
//! - [`error`]: the crate's one error type.

pub mod codec;
pub mod config;
pub mod duration;
pub mod error;
pub mod logging;
pub mod mqtt;
pub mod overrides;
pub mod payload;
pub mod rng;
pub mod secret;
pub mod signal;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod topics;
pub mod url;

pub use error::Error;
