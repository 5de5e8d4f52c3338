//! `lookout-bridge ack ID`: publishes an acknowledgement on `<prefix>/bridge/ack` with the
//! bridge config's broker settings (URL, TLS, login) and waits for the running bridge's
//! reply on `<prefix>/bridge/ack/reply`.
//!
//! The reply topic is subscribed before the request goes out, so a fast bridge's answer
//! is not missed; replies to other requests (other ids) are skipped.

use std::time::Duration;

use lookout_shared::mqtt::Session;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;

use crate::Error;
use crate::ack::{MAX_REQUEST, Reply};
use crate::config::Settings;

/// What to acknowledge.
#[derive(Clone, Debug)]
pub struct AckArgs {
    pub id: String,
    pub by: String,
    /// `"2h"` or an RFC 3339 time, passed on as written: the bridge checks it.
    pub until: Option<String>,
    pub comment: Option<String>,
    /// How long to wait for the reply.
    pub wait: Duration,
}

/// Sends the acknowledgement and returns the bridge's reply.
pub async fn send(settings: &Settings, args: &AckArgs) -> Result<Reply, Error> {
    let client_cfg = settings.mqtt.client.with_client_id(format!(
        "{}-ack-{}",
        settings.mqtt.client.client_id,
        std::process::id()
    ));
    let session = Session {
        max_incoming: MAX_REQUEST + 4096,
        ..Session::default()
    };
    let (client, mut eventloop) = AsyncClient::new(client_cfg.options(&session), 16);
    let reply_topic = lookout_shared::topics::bridge_ack_reply(&settings.prefix);
    let request =
        json!({"id": args.id, "by": args.by, "until": args.until, "comment": args.comment});
    let broker = client_cfg.url.display();
    let wait = async {
        loop {
            let event = eventloop
                .poll()
                .await
                .map_err(|e| Error::Mqtt(format!("{broker}: {e}")))?;
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(reply_topic.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| Error::Mqtt(e.to_string()))?;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    client
                        .publish(
                            lookout_shared::topics::bridge_ack(&settings.prefix),
                            QoS::AtLeastOnce,
                            false,
                            request.to_string(),
                        )
                        .await
                        .map_err(|e| Error::Mqtt(e.to_string()))?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == reply_topic => {
                    if let Ok(r) = serde_json::from_slice::<Reply>(&p.payload)
                        && r.id.as_deref() == Some(args.id.as_str())
                    {
                        return Ok(r);
                    }
                }
                _ => {}
            }
        }
    };
    let result = tokio::time::timeout(args.wait, wait).await;
    let _ = client.try_disconnect();
    result.unwrap_or_else(|_| {
        Err(Error::Mqtt(format!(
            "no reply on {reply_topic} within {:?}: is a lookout-bridge with bridge.prefix = {:?} connected to {broker}?",
            args.wait, settings.prefix
        )))
    })
}
