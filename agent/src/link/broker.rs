//! The embedded broker (rumqttd), sized for an edge device rather than a server.
//!
//! rumqttd has no stop API: the broker lives until the process ends, which is what an
//! agent wants anyway.

use std::collections::HashMap;
use std::net::TcpListener;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

use super::config::BrokerSettings;
use crate::Error;

/// Starts the broker on its own thread. The address is bound once here first, so a port
/// already in use is reported as a clear error instead of a log line from a thread.
pub fn start(settings: &BrokerSettings) -> Result<(), Error> {
    let listen = settings.listen;
    let err = |message: String| Error::Broker {
        listen: listen.to_string(),
        message,
    };
    TcpListener::bind(listen).map_err(|e| {
        err(format!(
            "cannot listen ({e}); is another broker running there?"
        ))
    })?;

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
    let mut servers = HashMap::from([(
        "1".to_string(),
        ServerSettings {
            name: "lookout-v4".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: connections.clone(),
        },
    )]);
    if let Some(tls) = &settings.tls {
        TcpListener::bind(tls.listen).map_err(|e| Error::Broker {
            listen: tls.listen.to_string(),
            message: format!("cannot listen for TLS ({e})"),
        })?;
        servers.insert(
            "2".to_string(),
            ServerSettings {
                name: "lookout-v4-tls".into(),
                listen: tls.listen,
                tls: Some(TlsConfig::Rustls {
                    capath: None,
                    certpath: tls.cert.clone(),
                    keypath: tls.key.clone(),
                }),
                next_connection_delay_ms: 1,
                connections,
            },
        );
    }
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
        v4: Some(servers),
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
    while std::net::TcpStream::connect(listen).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(err("not accepting connections 5 s after start".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::info!(listen = %listen, "embedded MQTT broker listening");
    Ok(())
}
