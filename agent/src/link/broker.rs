//! The embedded broker (rumqttd), sized for an edge device rather than a server.
//!
//! rumqttd has no stop API: the broker lives until the process ends, which is what an
//! agent wants anyway.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

use super::config::BrokerSettings;
use crate::Error;

/// Binds `addr` once and lets it go, so a port already in use is reported as a clear
/// error naming the listener instead of a log line from the broker's thread.
fn free(addr: SocketAddr, what: &str) -> Result<(), Error> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| Error::Broker {
            listen: addr.to_string(),
            message: format!("cannot listen for {what} ({e}); is another broker running there?"),
        })
}

/// The listeners of one protocol version: the plain one, and the TLS one when asked for.
fn servers(
    settings: &BrokerSettings,
    connections: &ConnectionSettings,
) -> (
    HashMap<String, ServerSettings>,
    Option<HashMap<String, ServerSettings>>,
) {
    let server = |name: &str, listen, tls| ServerSettings {
        name: name.into(),
        listen,
        tls,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let mut v4 = HashMap::from([("1".to_string(), server("lookout-v4", settings.listen, None))]);
    if let Some(tls) = &settings.tls {
        let config = TlsConfig::Rustls {
            capath: None,
            certpath: tls.cert.clone(),
            keypath: tls.key.clone(),
        };
        v4.insert(
            "2".to_string(),
            server("lookout-v4-tls", tls.listen, Some(config)),
        );
    }
    // MQTT 5 is served by its own listener (rumqttd keeps the versions apart), with the
    // same login and limits; both reach the same router, so a message published in one
    // version reaches subscribers of the other.
    let v5 = settings
        .listen_v5
        .map(|l| HashMap::from([("1".to_string(), server("lookout-v5", l, None))]));
    (v4, v5)
}

/// Starts the broker on its own thread. Every address is bound once here first, so a
/// port already in use is reported as a clear error instead of a log line from a thread.
pub fn start(settings: &BrokerSettings) -> Result<(), Error> {
    let listen = settings.listen;
    let err = |message: String| Error::Broker {
        listen: listen.to_string(),
        message,
    };
    free(listen, "MQTT 3.1.1")?;
    if let Some(tls) = &settings.tls {
        free(tls.listen, "TLS")?;
    }
    if let Some(l) = settings.listen_v5 {
        free(l, "MQTT 5 (broker.listen_v5)")?;
    }

    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: settings.max_payload_size,
        max_inflight_count: 100,
        auth: settings
            .auth
            .as_ref()
            .map(|(u, p)| HashMap::from([(u.clone(), p.expose().to_owned())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let (v4, v5) = servers(settings, &connections);
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: settings.max_connections,
            max_outgoing_packet_count: 200,
            // The router keeps at most count × size bytes per topic; rumqttd's examples
            // are sized for servers and grew an agent to 19 MiB over a simulated day.
            max_segment_size: settings.segment_size,
            max_segment_count: settings.segments,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5,
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("lookout-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| err(format!("cannot start its thread: {e}")))?;
    // Wait until it accepts connections, so the agent's own client does not start with
    // a "connection refused" and a backoff.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for addr in std::iter::once(listen).chain(settings.listen_v5) {
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Broker {
                    listen: addr.to_string(),
                    message: "not accepting connections 5 s after start".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    match settings.listen_v5 {
        Some(v5) => {
            tracing::info!(listen = %listen, listen_v5 = %v5, "embedded MQTT broker listening (3.1.1 and 5)")
        }
        None => tracing::info!(listen = %listen, "embedded MQTT broker listening"),
    }
    Ok(())
}
