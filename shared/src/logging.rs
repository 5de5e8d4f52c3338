//! Logging setup both binaries share: structured `tracing` to stderr, filtered by the
//! `LOOKOUT_LOG` variable (an `EnvFilter` directive such as `debug` or `info,rumqttc=debug`).

/// `default` applies when `LOOKOUT_LOG` is not set.
pub fn init(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LOOKOUT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for people: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
