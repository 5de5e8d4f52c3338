//! `lookout-bridge decommission HOST`: a host that is gone for good leaves retained
//! messages on the broker (its `offline` status, its last alarm states, its stats, its
//! rules, Home Assistant's discovery configs), which every new subscriber receives and
//! every restarted bridge would report. This clears them: it subscribes to the host's
//! topics (`<prefix>/<host>/#` and `<ha_prefix>/+/lookout_<host>/+/config`), collects the
//! retained messages the broker replays until it has been quiet for 2 s, and
//! publishes an empty retained message (QoS 1) on each, which deletes it. A running
//! bridge sees the empty status and forgets the host ([`crate::offline`]).

use std::collections::BTreeSet;
use std::time::Duration;

use lookout_shared::mqtt::Session;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::time::Instant;

use crate::Error;
use crate::config::Settings;

/// The broker replays retained messages right after the SUBACK; this long without one
/// means it is done.
const QUIET: Duration = Duration::from_secs(2);
/// The whole command gives up after this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// Clears every retained topic of `host`; returns the topics cleared, sorted.
pub async fn decommission(
    settings: &Settings,
    host: &str,
    ha_prefix: &str,
) -> Result<Vec<String>, Error> {
    if host.is_empty() || host.contains(['/', '+', '#']) || host == lookout_shared::topics::INGEST {
        return Err(Error::Config {
            path: "HOST".into(),
            message: format!("{host:?} is not a host name (one topic level, not `ingest`)"),
        });
    }
    let client_id = format!("{}-decommission", settings.mqtt.client.client_id);
    let options = settings
        .mqtt
        .client
        .with_client_id(client_id)
        .options(&Session {
            max_incoming: 16 * 1024 * 1024,
            ..Session::default()
        });
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let filters = [
        format!("{}/{host}/#", settings.prefix),
        format!("{ha_prefix}/+/lookout_{host}/+/config"),
    ];
    let deadline = Instant::now() + DEADLINE;
    let topics = collect(&client, &mut eventloop, &filters, deadline).await?;
    for t in &topics {
        client
            .publish(t.clone(), QoS::AtLeastOnce, true, Vec::new())
            .await
            .map_err(|e| Error::Mqtt(format!("publish on {t}: {e}")))?;
    }
    let mut acked = 0;
    while acked < topics.len() {
        if let Event::Incoming(Packet::PubAck(_)) = next(&mut eventloop, deadline).await? {
            acked += 1;
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
    Ok(topics.into_iter().collect())
}

/// Subscribes to `filters` and gathers the topics of retained, non-empty messages.
async fn collect(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    filters: &[String],
    deadline: Instant,
) -> Result<BTreeSet<String>, Error> {
    let mut topics = BTreeSet::new();
    let mut subacks = 0;
    let mut quiet_until = None;
    loop {
        let wait = quiet_until.map_or(deadline, |q: Instant| q.min(deadline));
        let event = match tokio::time::timeout_at(wait, eventloop.poll()).await {
            Err(_) if quiet_until.is_some() => return Ok(topics),
            Err(_) => return Err(Error::Mqtt("timed out waiting for the broker".into())),
            Ok(Err(e)) => return Err(Error::Mqtt(e.to_string())),
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                for f in filters {
                    client
                        .subscribe(f.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| Error::Mqtt(format!("subscribe to {f}: {e}")))?;
                }
            }
            Event::Incoming(Packet::SubAck(_)) => {
                subacks += 1;
                if subacks == filters.len() {
                    quiet_until = Some(Instant::now() + QUIET);
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.retain && !p.payload.is_empty() {
                    topics.insert(p.topic.clone());
                }
                if quiet_until.is_some() {
                    quiet_until = Some(Instant::now() + QUIET);
                }
            }
            _ => {}
        }
    }
}

async fn next(eventloop: &mut EventLoop, deadline: Instant) -> Result<Event, Error> {
    match tokio::time::timeout_at(deadline, eventloop.poll()).await {
        Err(_) => Err(Error::Mqtt("timed out waiting for the broker".into())),
        Ok(Err(e)) => Err(Error::Mqtt(e.to_string())),
        Ok(Ok(event)) => Ok(event),
    }
}
