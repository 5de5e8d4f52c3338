//! `lookout-agent watch`: an ordinary MQTT client that shows the fleet, live in the
//! terminal or as one plain snapshot (`--once`). It only reads (status, scores, alarms and
//! agent stats of every host under the prefix) and publishes nothing.
//!
//! Layout:
//! - this file: the resolved options, the MQTT loop, the terminal set-up.
//! - [`fleet`]: the state model (pure, bounded): messages in, host and alarm rows out.
//! - `live.rs` and `tui.rs`: the live view (ratatui), with the cargo feature `live-view`
//!   (on by default; `--no-default-features` leaves it out, about 730 KiB, for devices
//!   that only need `--once`).
//! - [`snapshot`]: the plain-text view of `--once`.
//!
//! The connection is made as the agent's own: the same `[mqtt]` keys of a `--config`
//! (URL, TLS, username and password), resolved by the same code ([`crate::config`]).

pub mod fleet;
#[cfg(feature = "live-view")]
mod live;
pub mod snapshot;
#[cfg(feature = "live-view")]
pub mod tui;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use lookout_shared::config::Source;
use lookout_shared::mqtt::{ClientConfig, Session};
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
};
use tokio::time::Instant;

use lookout_shared::time::now_ms;
use lookout_shared::topics;

use crate::Error;
use fleet::{Fleet, HostFilter, Limits};

/// How long the first connection may take before `--once` gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first reconnect delay (`--once` waits this long after a dropped connection; the
/// live view starts its [`lookout_shared::time::Backoff`] here, doubling up to
/// `live::RETRY_MAX`).
const RETRY_MIN: Duration = Duration::from_millis(250);

/// What `watch` runs on: resolved and validated.
#[derive(Clone, Debug)]
pub struct Options {
    /// The broker connection, as the agent's `[mqtt]` would make it.
    pub client: ClientConfig,
    pub prefix: String,
    pub filter: Option<HostFilter>,
    /// Print one snapshot after `wait` and exit, instead of the live view.
    pub once: bool,
    pub wait: Duration,
}

impl Options {
    /// Resolves the flags against the agent config `source` (the file of `--config`, or
    /// built-in defaults): `url` and `prefix` win over its `[mqtt]` table, whose TLS keys
    /// and login apply as they would for the agent. A plain `url` drops the config's TLS
    /// keys, which only go with `mqtts://`.
    pub fn resolve(
        source: &Source,
        url: Option<String>,
        prefix: Option<String>,
        filter: Option<HostFilter>,
        once: bool,
        wait: Duration,
    ) -> Result<Self, Error> {
        let flag = |flag: &str, message: String| Error::Config {
            path: flag.into(),
            message,
        };
        let mut parsed = crate::config::parse(source, &[])?;
        if let Some(url) = url {
            let parsed_url = lookout_shared::url::parse(&url).map_err(|m| flag("--url", m))?;
            let m = &mut parsed.raw.mqtt;
            if !parsed_url.tls {
                (m.ca_file, m.cert_file, m.key_file) = (None, None, None);
                m.insecure_skip_verify = false;
            }
            m.url = url;
        }
        if let Some(prefix) = prefix {
            if prefix.is_empty() || prefix.contains(['+', '#']) {
                return Err(flag(
                    "--prefix",
                    format!("{prefix:?} must be non-empty and free of MQTT wildcards"),
                ));
            }
            parsed.raw.mqtt.prefix = prefix;
        }
        let (client, prefix) = parsed.client()?;
        Ok(Self {
            client,
            prefix,
            filter,
            once,
            wait,
        })
    }

    /// The subscriptions: every host's topics, or one host's when the filter names one.
    fn filters(&self) -> Vec<SubscribeFilter> {
        let p = &self.prefix;
        let host = self
            .filter
            .as_ref()
            .and_then(HostFilter::literal)
            .unwrap_or("+");
        vec![
            SubscribeFilter::new(topics::status(p, host), QoS::AtLeastOnce),
            SubscribeFilter::new(topics::score(p, host, "+"), QoS::AtMostOnce),
            SubscribeFilter::new(topics::alarm(p, host, "#"), QoS::AtLeastOnce),
            SubscribeFilter::new(topics::agent_stats(p, host), QoS::AtMostOnce),
        ]
    }

    fn mqtt_options(&self) -> MqttOptions {
        // Unique enough that two watches (or a restarted one) never take over each
        // other's session: the pid and the clock's nanoseconds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = format!(
            "lookout-watch-{}-{:04x}",
            std::process::id(),
            nanos & 0xffff
        );
        // Generous, as for the agent's own subscribing link: a packet over the limit would
        // drop the connection, and a retained one would do so on every reconnect. The
        // fleet judges payload sizes itself.
        let session = Session {
            max_incoming: lookout_shared::mqtt::SUBSCRIBER_PACKET_LIMIT,
            ..Session::default()
        };
        self.client.with_client_id(id).options(&session)
    }
}

/// Runs `watch` until the user quits (live view) or the snapshot is printed (`--once`).
pub async fn run(opts: Options) -> Result<(), Error> {
    if opts.once {
        return once(&opts).await;
    }
    #[cfg(feature = "live-view")]
    return live::run(&opts).await;
    #[cfg(not(feature = "live-view"))]
    Err(Error::Config {
        path: "watch".into(),
        message: "this lookout-agent was built without the live view (cargo feature \
                  `live-view`); use --once for a plain-text snapshot"
            .into(),
    })
}

fn new_fleet(opts: &Options) -> Fleet {
    Fleet::new(&opts.prefix, opts.filter.clone(), Limits::default())
}

fn why(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused: {code:?}"),
        e => e.to_string(),
    }
}

/// `--once`: connect (or fail naming the URL), collect for `wait`, print one snapshot.
async fn once(opts: &Options) -> Result<(), Error> {
    let url = opts.client.url.display();
    let (client, mut events) = AsyncClient::new(opts.mqtt_options(), 16);
    let connect_error = |message: String| Error::Connect {
        url: url.clone(),
        message,
    };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(connect_error(why(&e))),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
        }
    }
    let filters = opts.filters();
    let _ = client.try_subscribe_many(filters.clone());
    let mut fleet = new_fleet(opts);
    let mut lost = None;
    let end = Instant::now() + opts.wait;
    loop {
        match tokio::time::timeout_at(end, events.poll()).await {
            Err(_) => break,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                fleet.apply(&p.topic, &p.payload, p.retain, now_ms());
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                let _ = client.try_subscribe_many(filters.clone());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                lost.get_or_insert_with(|| why(&e));
                tokio::time::sleep_until(end.min(Instant::now() + RETRY_MIN)).await;
            }
        }
    }
    if let Some(e) = lost {
        tracing::warn!(
            url,
            error = e,
            "the connection dropped while collecting; the snapshot may be incomplete"
        );
    } else {
        // Say goodbye, briefly: a clean disconnect instead of a dropped socket.
        let _ = client.try_disconnect();
        let bye = Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(bye, events.poll()).await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    }
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let text = snapshot::render(&fleet, now_ms(), &url, color);
    let mut out = stdout.lock();
    // A reader that went away (`| head`) is not an error worth a panic.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Terminal(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, url: Option<&str>, prefix: Option<&str>) -> Result<Options, Error> {
        let source = Source::builtin("test.toml", text);
        Options::resolve(
            &source,
            url.map(str::to_owned),
            prefix.map(str::to_owned),
            None,
            true,
            Duration::from_secs(3),
        )
    }

    #[test]
    fn flags_win_over_the_config_and_the_config_over_defaults() {
        let o = resolve("", None, None).unwrap();
        assert_eq!(o.client.url.display(), "mqtt://127.0.0.1:1883");
        assert_eq!(o.prefix, "lookout");
        let cfg = "[mqtt]\nurl = \"mqtt://broker:1884\"\nprefix = \"plant\"\nusername = \"u\"\npassword = \"p\"\n";
        let o = resolve(cfg, None, None).unwrap();
        assert_eq!(o.client.url.display(), "mqtt://broker:1884");
        assert_eq!(o.prefix, "plant");
        assert_eq!(o.client.login.as_ref().unwrap().0, "u");
        let o = resolve(cfg, Some("mqtt://other:1"), Some("x")).unwrap();
        assert_eq!(o.client.url.display(), "mqtt://other:1");
        assert_eq!(o.prefix, "x");
        assert!(o.client.login.is_some(), "the login still applies");
    }

    #[test]
    fn a_plain_url_drops_the_configs_tls_keys() {
        let cfg = "[mqtt]\nurl = \"mqtts://broker\"\ninsecure_skip_verify = true\n";
        let o = resolve(cfg, Some("mqtt://127.0.0.1:1883"), None).unwrap();
        assert!(!o.client.url.tls);
        assert!(o.client.tls.is_empty());
        let o = resolve(cfg, None, None).unwrap();
        assert!(o.client.url.tls);
    }

    #[test]
    fn bad_flags_name_themselves() {
        let e = resolve("", Some("http://x"), None).unwrap_err().to_string();
        assert!(e.starts_with("--url: "), "{e}");
        let e = resolve("", None, Some("a/#")).unwrap_err().to_string();
        assert!(e.starts_with("--prefix: "), "{e}");
    }

    #[test]
    fn a_literal_filter_subscribes_to_that_host_only() {
        let mut o = resolve("", None, None).unwrap();
        let all: Vec<String> = o.filters().into_iter().map(|f| f.path).collect();
        assert_eq!(
            all,
            [
                "lookout/+/status",
                "lookout/+/scores/+",
                "lookout/+/alarms/#",
                "lookout/+/agent/stats"
            ]
        );
        o.filter = HostFilter::new("sim-1").ok();
        assert_eq!(o.filters()[0].path, "lookout/sim-1/status");
        o.filter = HostFilter::new("sim-*").ok();
        assert_eq!(o.filters()[0].path, "lookout/+/status");
    }
}
