//! `lookout-bridge`: the command line. anyhow lives only at this edge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lookout_bridge::Error;
use lookout_bridge::ack_client::{AckArgs, send};
use lookout_bridge::config::{Built, load};

#[derive(Parser)]
#[command(
    name = "lookout-bridge",
    version,
    about = "Fans Lookout alarms out from MQTT to notifier plugins (log, file, exec, HTTP, Slack, Telegram, SMTP, MQTT, ntfy, PagerDuty, Opsgenie, Discord, Gotify, Pushover, Teams)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Subscribe and deliver until SIGINT/SIGTERM, then drain the queues.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Override any config key by dotted path, e.g. --set mqtt.url=mqtt://127.0.0.1:18830
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Acknowledge a firing alarm: publish on <prefix>/bridge/ack with the config's broker
    /// settings and print the running bridge's reply (exit 0 when it took it, 1 when not).
    Ack {
        /// The alarm's id, as in its payload (`<host>:<source>:<started_at>`).
        id: String,
        /// Who is on it; default: $USER.
        #[arg(long)]
        by: Option<String>,
        /// Until when: a duration ("2h") or an RFC 3339 time; default: until it resolves.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long, short, default_value = "configs/bridge.toml")]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// How long to wait for the bridge's reply.
        #[arg(long, default_value = "5s")]
        wait: lookout_shared::duration::HumanDuration,
    },
    /// Clear a host that is gone for good: publish an empty retained message on each of
    /// its retained topics (status, alarms, stats, rules, Home Assistant configs), using
    /// the config's broker settings. Prints each topic cleared.
    Decommission {
        /// The host, as in `<prefix>/<host>/...`.
        host: String,
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Home Assistant's discovery prefix (the agent's `homeassistant.prefix`).
        #[arg(long, default_value = "homeassistant")]
        ha_prefix: String,
    },
    /// Draw the picture a firing alarm's notification carries: read an alarm payload (JSON,
    /// as on <prefix>/<host>/alarms/<source>), write the PNG, print the text sparkline.
    /// Exit 2 when the alarm has no window that can be drawn.
    Picture {
        /// The alarm's JSON; `-` for standard input.
        alarm: PathBuf,
        /// Where to write the PNG.
        #[arg(long, short)]
        output: PathBuf,
        /// Draw it as a chat client shows it: in a message bubble, with the default caption
        /// (title, explain line, summary) and an Ack button.
        #[arg(long)]
        chat: bool,
    },
    /// Check a config file (including every target's settings); exit 2 on any error.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lookout_shared::logging::init("info,rumqttc=warn");
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = matches!(
                e.downcast_ref::<Error>(),
                Some(
                    Error::Config { .. }
                        | Error::Target { .. }
                        | Error::Secret { .. }
                        | Error::Io { .. }
                        | Error::Picture { .. }
                )
            );
            eprintln!("lookout-bridge: {e:#}");
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    // One thread: the work per message is microseconds, and on a 2-core device the
    // broker and the publishers need the other core more than we need a second worker.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run { config, set } => {
            let resolved = load(&config, &set)?;
            rt.block_on(lookout_bridge::run::run(resolved))?;
        }
        Command::Ack {
            id,
            by,
            until,
            comment,
            config,
            set,
            wait,
        } => {
            let resolved = load(&config, &set)?;
            let args = AckArgs {
                id,
                by: by
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "lookout-bridge ack".into()),
                until,
                comment,
                wait: wait.0,
            };
            let reply = rt.block_on(send(&resolved.settings, &args))?;
            println!("{}", String::from_utf8_lossy(&reply.to_json()));
            if !reply.ok {
                anyhow::bail!("not acknowledged: {}", reply.reason);
            }
        }
        Command::Decommission {
            host,
            config,
            set,
            ha_prefix,
        } => {
            let settings = load(&config, &set)?.settings;
            let cleared = rt.block_on(lookout_bridge::decommission::decommission(
                &settings, &host, &ha_prefix,
            ))?;
            for t in &cleared {
                println!("cleared {t}");
            }
            println!("{host}: {} retained topics cleared", cleared.len());
        }
        Command::Picture {
            alarm,
            output,
            chat,
        } => {
            let line = lookout_bridge::picture::write_file(&alarm, &output, chat)?;
            println!("{}", line.unwrap_or_default());
        }
        Command::CheckConfig { config, set } => {
            let resolved = load(&config, &set)?;
            // Build every plugin (inside the runtime: some start connections) so that a
            // bad target is caught here, not at the first alarm.
            rt.block_on(async {
                let built = resolved.build()?;
                print_check(&config, &built);
                Ok::<(), Error>(())
            })?;
        }
    }
    Ok(())
}

/// What `check-config` found, secrets redacted.
fn print_check(path: &std::path::Path, built: &Built) {
    let settings = &built.settings;
    println!("{}: OK", path.display());
    let m = &settings.mqtt;
    let c = &m.client;
    println!("  mqtt    {} {:?}", c.url.display(), m.filters);
    if c.url.tls {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("-".to_string(), |p| p.display().to_string())
        };
        println!(
            "  tls     ca_file {} (system roots when -), cert_file {}, key_file {}, verify {}",
            show(&c.tls.ca_file),
            show(&c.tls.cert_file),
            show(&c.tls.key_file),
            if c.tls.insecure_skip_verify {
                "OFF (insecure_skip_verify)"
            } else {
                "on"
            }
        );
    }
    if let Some((user, password)) = &c.login {
        // The password is a Secret: it prints as <redacted>. A login without one has an
        // empty password.
        let pw = if password.expose().is_empty() {
            "none".to_string()
        } else {
            password.to_string()
        };
        println!("  login   {user} (password {pw})");
    }
    match &settings.state_dir {
        Some(dir) => println!("  state   {}", dir.display()),
        None => println!("  state   in memory only (bridge.state_dir = \"\")"),
    }
    for ((name, n), fallback) in settings
        .targets
        .iter()
        .zip(&built.notifiers)
        .zip(&settings.fallbacks)
    {
        match fallback {
            Some(f) => println!(
                "  target  {name} ({}), fallback {} after {:?}",
                n.kind(),
                settings.targets[f.target],
                f.after
            ),
            None => println!("  target  {name} ({})", n.kind()),
        }
    }
    if let Some(h) = &settings.ack_http {
        println!(
            "  ack     Slack buttons on http://{}/slack/actions (signed)",
            h.listen
        );
    }
    println!("  routes  {}", settings.routes.len());
}
