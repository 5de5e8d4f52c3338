//! `lookout-agent`: the command line. Flags are parsed here, resolved into settings by
//! `config`, and handed to `run`, `replay`, `rules::offline` or `watch`; anyhow lives only
//! at this edge.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lookout_agent::config;
use lookout_agent::decide::Detector;
use lookout_agent::rules::{Limits, RuleSet, offline};
use lookout_agent::watch::{self, fleet::HostFilter};
use lookout_agent::{Error, replay, run};
use lookout_shared::config::Source;
use lookout_shared::duration::HumanDuration;

/// The config shipped in `configs/agent.toml`, used when `--config` is not given so that
/// `lookout-agent run` alone behaves exactly like the documented quick start.
const SHIPPED_CONFIG: &str = include_str!("../../configs/agent.toml");

#[derive(Parser)]
#[command(
    name = "lookout-agent",
    version,
    about = "Samples a host, scores it with lagged k-means and publishes metrics, scores and alarms over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample this host (or simulated hosts), score, and publish until SIGINT/SIGTERM.
    Run {
        /// TOML config; without it, the shipped configs/agent.toml built into the binary.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override any config key by dotted path, e.g. --set mqtt.url=mqtt://127.0.0.1:18830
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Simulate N hosts (sim-1 ... sim-N) with injected anomalies instead of sampling this one.
        #[arg(long, value_name = "N")]
        simulate: Option<usize>,
        /// Run simulated time X times faster than real time.
        #[arg(long, value_name = "X")]
        speed: Option<f64>,
    },
    /// Work with config files: `config check`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The same as `config check`.
    CheckConfig(CheckArgs),
    /// Stream a CSV (timestamp,value[,value...]) through the scorer offline and write
    /// timestamp,score,alarm,firing,severity.
    Replay(ReplayArgs),
    /// Record this host's metrics, sampled as `run` samples them, to a CSV (ts in Unix ms,
    /// one column per chart|dimension) for replaying through the models later
    /// (`simulate --recording`). Stops after --duration or on SIGINT/SIGTERM.
    Record {
        #[arg(long, short)]
        output: PathBuf,
        #[arg(long, value_name = "DURATION", default_value = "1s")]
        interval: HumanDuration,
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        duration: HumanDuration,
    },
    /// Run a simulated fleet offline through the agent's tick loop, as fast as the machine
    /// goes (fits inline: the same result on every run), and write every injected anomaly
    /// and every alarm change as one JSON line. For the fleet benchmark (bench/fleet/).
    Simulate {
        /// TOML config whose [sim_models], [simulate] and [detector] to use; default: the
        /// shipped one.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Simulated hosts (sim-1 ... sim-N).
        #[arg(long, default_value_t = 8)]
        hosts: usize,
        /// Simulated time.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        duration: HumanDuration,
        /// Seed of the simulated data and anomalies (simulate.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Simulated start, Unix ms (default 2026-01-05 00:00 UTC, a Monday).
        #[arg(long, default_value_t = 1_767_571_200_000)]
        start_ms: i64,
        /// Where the JSON lines go; - for stdout.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// Instead of simulated hosts: play back a CSV written by `record` through the
        /// config's [models] (a real host's), writing its alarm changes.
        #[arg(long, value_name = "CSV")]
        recording: Option<PathBuf>,
    },
    /// Evaluate a rules document against events offline, windowed by their eventTime; print
    /// each output event as one JSON line. Exit 2 on a bad rules file.
    TestRules {
        /// A rule or a JSON array of rules (docs/rules.md).
        #[arg(long, short)]
        rules: PathBuf,
        /// Events: a JSON array, one object per line, or concatenated objects; - for stdin.
        #[arg(long, short)]
        events: PathBuf,
        /// Open groups per rule and window; events of further groups are dropped and counted.
        #[arg(long, value_name = "N", default_value_t = Limits::default().groups_per_window as u64,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_groups: u64,
    },
    /// Show the fleet: every host's status, last sign of life, latest scores and firing
    /// alarms, live in the terminal (q quits). --once prints one plain snapshot instead.
    /// Exit 1 when the broker cannot be reached, 2 on bad arguments.
    Watch {
        /// Broker; default: the --config's [mqtt] url, else mqtt://127.0.0.1:1883.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Show only hosts whose name matches this shell glob (edge-*, sim-?, rack-[12]-*).
        #[arg(long, value_name = "GLOB", value_parser = HostFilter::new)]
        filter: Option<HostFilter>,
        /// Topic prefix; default: the --config's mqtt.prefix, else lookout.
        #[arg(long)]
        prefix: Option<String>,
        /// Print one plain-text snapshot after --wait and exit (docs/watch.md has the format).
        #[arg(long)]
        once: bool,
        /// How long --once listens before printing (retained states arrive at once,
        /// scores every tick).
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        wait: HumanDuration,
        /// Agent config whose [mqtt] table (url, prefix, TLS, username/password) to use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ReplayArgs {
    #[arg(long, short)]
    input: PathBuf,
    #[arg(long, short)]
    output: PathBuf,
    /// Take the detector from this config ([detector], or the model named by --model).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A model of the config (from [models] or [sim_models]) whose detector to use.
    #[arg(long, requires = "config")]
    model: Option<String>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Also draw an SVG (1200x600): the input with alarm rows in red above, score and
    /// threshold below, on one time axis.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
    /// Shade the labelled anomaly windows for the input from this NAB
    /// labels/combined_windows.json in the plot.
    #[arg(long, value_name = "FILE", requires = "plot")]
    windows: Option<PathBuf>,
    /// Pass over malformed rows (counted, the first 10 logged, written as
    /// `timestamp,,0,F,S` with the alarm's state unchanged) instead of stopping at the
    /// first with its line number.
    #[arg(long)]
    skip_bad_rows: bool,
    /// The input's field delimiter, one character: `;` for semicolon-separated files, `\t`
    /// for tabs. The output is comma-separated whatever this is.
    #[arg(long, value_name = "CHAR", default_value = ",",
          value_parser = replay::Format::parse_delimiter)]
    delimiter: char,
    /// Input columns, named in the header, that are not model dimensions (labels, ids):
    /// read past, never parsed. Comma-separated or repeated.
    #[arg(long, value_name = "NAME,NAME", value_delimiter = ',')]
    ignore_columns: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file (- for stdin) and print the effective config: every table with
    /// its defaults, in the current shape (old key names are moved and warned about).
    /// Exit 2 on any error, naming the file, line and key.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The live view owns the terminal: a log line would tear it.
        Command::Watch { once: false, .. } => {}
        Command::Watch { once: true, .. } => lookout_shared::logging::init("warn,rumqttc=off"),
        // Every alarm of a simulated week would be a log line; the output has them all.
        Command::Simulate { .. } => lookout_shared::logging::init("warn"),
        _ => lookout_shared::logging::init("info,rumqttd=off,rumqttc=warn"),
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<Error>() {
                Some(Error::Config { .. } | Error::Rule { .. } | Error::RulesDocument { .. }) => 2,
                Some(Error::Io { .. }) if is_rules_read(&e) => 2,
                _ => 1,
            };
            eprintln!("lookout-agent: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn is_rules_read(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.to_string().starts_with("reading rules"))
}

/// The `--config` file, or the shipped config built into the binary.
fn load_source(config: Option<&PathBuf>) -> Result<Source, Error> {
    match config {
        Some(p) => Ok(Source::read(p)?),
        None => Ok(Source::builtin(
            "(built-in configs/agent.toml)",
            SHIPPED_CONFIG,
        )),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            set,
            simulate,
            speed,
        } => run(config, set, simulate, speed),
        Command::Config(ConfigCommand::Check(args)) | Command::CheckConfig(args) => {
            check_config(&args)
        }
        Command::Replay(args) => replay_command(args),
        Command::Watch {
            url,
            filter,
            prefix,
            once,
            wait,
            config,
        } => {
            let source = match &config {
                Some(_) => load_source(config.as_ref())?,
                None => Source::empty(),
            };
            let opts = watch::Options::resolve(&source, url, prefix, filter, once, wait.0)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(watch::run(opts))?;
            Ok(())
        }
        Command::TestRules {
            rules,
            events,
            max_groups,
        } => test_rules(&rules, &events, max_groups),
        Command::Record {
            output,
            interval,
            duration,
        } => record(&output, interval.0, duration.0),
        Command::Simulate {
            config,
            mut set,
            hosts,
            duration,
            seed,
            start_ms,
            output,
            recording,
        } => {
            if let Some(seed) = seed {
                set.push(format!("simulate.seed={seed}"));
            }
            let settings = config::load(&load_source(config.as_ref())?, &set)?;
            let plan = lookout_agent::sim_fleet::Plan {
                hosts,
                duration_ms: i64::try_from(duration.0.as_millis()).unwrap_or(i64::MAX),
                start_ms,
            };
            match recording {
                Some(input) => write_lines(&output, |out| {
                    lookout_agent::record::playback(&settings, &input, out).map(|_| ())
                }),
                None => simulate_fleet(&settings, &plan, &output),
            }
        }
    }
}

/// `replay`: the arguments checked (a bad one exits 2 before any work), the detector
/// resolved at the input's own interval, then the replay.
fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let ReplayArgs {
        input,
        output,
        config,
        model,
        set,
        plot,
        windows,
        skip_bad_rows,
        delimiter,
        ignore_columns,
    } = args;
    replay::Format::check_ignore(&ignore_columns).map_err(|message| Error::Config {
        path: input.display().to_string(),
        message,
    })?;
    let format = replay::Format {
        delimiter,
        ignore: ignore_columns,
        skip_bad_rows,
    };
    let interval = replay::interval::of_file(&input, delimiter).unwrap_or(Duration::from_secs(1));
    let detector = replay_detector(config.as_ref(), model.as_deref(), &set, interval)?;
    // Read the windows before the replay, so that a bad file fails before any work.
    let plot = match plot {
        Some(path) => Some(replay::PlotSpec {
            path,
            windows: match &windows {
                Some(file) => replay::windows::for_input(file, &input)?,
                None => Vec::new(),
            },
        }),
        None => None,
    };
    let summary = replay::replay_files(&input, &output, &detector, plot.as_ref(), &format)?;
    if summary.skipped > 0 {
        tracing::warn!(skipped = summary.skipped, "malformed rows skipped");
    }
    tracing::debug!(?summary, "replay finished");
    Ok(())
}

fn record(output: &Path, interval: Duration, duration: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(lookout_agent::record::record(output, interval, duration))?;
    tracing::info!(rows, output = %output.display(), "recorded");
    Ok(())
}

/// `simulate`: the offline fleet, as JSON lines to `output` (`-` for stdout).
fn simulate_fleet(
    settings: &config::Settings,
    plan: &lookout_agent::sim_fleet::Plan,
    output: &Path,
) -> anyhow::Result<()> {
    write_lines(output, |out| {
        lookout_agent::sim_fleet::simulate(settings, plan, out).map(|_| ())
    })
}

/// Runs `write` on `output` (`-` for stdout), buffered.
fn write_lines(
    output: &Path,
    write: impl Fn(&mut dyn std::io::Write) -> Result<(), Error>,
) -> anyhow::Result<()> {
    if output == Path::new("-") {
        write(&mut std::io::stdout().lock())?;
    } else {
        let file = std::fs::File::create(output).map_err(|source| Error::Io {
            path: output.to_path_buf(),
            source,
        })?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        std::io::Write::flush(&mut w).map_err(|source| Error::Io {
            path: output.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn run(
    config: Option<PathBuf>,
    mut set: Vec<String>,
    simulate: Option<usize>,
    speed: Option<f64>,
) -> anyhow::Result<()> {
    if let Some(n) = simulate {
        set.push(format!("simulate.hosts={n}"));
    }
    if let Some(x) = speed {
        set.push(format!("simulate.speed={x}"));
    }
    let settings = config::load(&load_source(config.as_ref())?, &set)?;
    if speed.is_some() && settings.simulate.hosts == 0 {
        tracing::warn!(
            "--speed only applies to simulated hosts (--simulate N); sampling this host in real time"
        );
    }
    // One thread runs the ticks and the MQTT links (a tick is microseconds of work); fits
    // have their own thread. Fewer threads, fewer malloc arenas: the footprint is part of
    // the contract on small devices.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run::run(settings))?;
    Ok(())
}

/// `config check`: validates everything (as `run` would), then prints the effective
/// config. The first line says which file is OK, for scripts that grep for it.
fn check_config(args: &CheckArgs) -> anyhow::Result<()> {
    let source = load_source(Some(&args.config))?;
    let parsed = config::parse(&source, &args.set)?;
    let settings = parsed.resolve()?;
    let effective = parsed.effective_toml()?;
    println!(
        "# {}: OK (host {}, {} models, {} simulated-host models)",
        source.origin,
        settings.host,
        settings.models.len(),
        settings.sim_models.len()
    );
    print!("{effective}");
    Ok(())
}

/// The detector `replay` runs: the built-in default without `--config`; with it, the
/// config's `[detector]`, or the model `--model` names. Its times (`train.long`) become
/// ticks at the series' own `interval`, whatever `agent.interval` the config has.
fn replay_detector(
    config: Option<&PathBuf>,
    model: Option<&str>,
    set: &[String],
    interval: Duration,
) -> anyhow::Result<Detector> {
    let source = match config {
        Some(_) => load_source(config)?,
        None => Source::empty(),
    };
    let mut set = set.to_vec();
    set.push(format!("agent.interval={}ms", interval.as_millis().max(1)));
    let parsed = config::parse(&source, &set)?;
    let Some(name) = model else {
        let d = parsed
            .detector()?
            .resolve_at(interval)
            .map_err(|e| parsed.invalid("detector", e))?;
        return Ok(d);
    };
    let s = parsed.resolve()?;
    let found = s
        .models
        .iter()
        .chain(&s.sim_models)
        .find(|m| m.name == name)
        .map(|m| m.detector.clone());
    Ok(found.ok_or_else(|| Error::Config {
        path: source.origin.clone(),
        message: format!("--model {name}: no such model in [models] or [sim_models]"),
    })?)
}

fn test_rules(rules: &Path, events: &Path, max_groups: u64) -> anyhow::Result<()> {
    // An unreadable rules file is a bad rules file (exit 2); an unreadable events file is
    // a failed run (exit 1), as for replay's input.
    let set = RuleSet::read(rules).map_err(|e| match e {
        Error::Io { .. } => anyhow::Error::new(e).context("reading rules"),
        e => e.into(),
    })?;
    let limits = Limits {
        groups_per_window: usize::try_from(max_groups).unwrap_or(usize::MAX),
    };
    let summary = offline::test_rules_files(
        set,
        events,
        limits,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    tracing::debug!(?summary, "test-rules finished");
    Ok(())
}
