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

/// After a refusal, how long to wait for another bridge's acceptance: in a share group
/// every bridge answers, and only the one that notified the alarm knows it.
const OTHERS_WAIT: Duration = Duration::from_secs(1);

/// Sends the acknowledgement and returns the bridge's reply: the first acceptance, else
/// the first refusal.
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
    let mut refused: Option<(Reply, tokio::time::Instant)> = None;
    let wait = async {
        loop {
            let poll = match &refused {
                Some((_, at)) => tokio::time::timeout_at(*at + OTHERS_WAIT, eventloop.poll()).await,
                None => Ok(eventloop.poll().await),
            };
            let Ok(event) = poll else {
                return Ok(refused.take().map(|(r, _)| r));
            };
            let event = event.map_err(|e| Error::Mqtt(format!("{broker}: {e}")))?;
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
                        if r.ok {
                            return Ok(Some(r));
                        }
                        refused.get_or_insert((r, tokio::time::Instant::now()));
                    }
                }
                _ => {}
            }
        }
    };
    let result = tokio::time::timeout(args.wait, wait).await;
    let _ = client.try_disconnect();
    match result {
        Ok(Ok(Some(r))) => return Ok(r),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) | Err(_) => {}
    }
    if let Some((r, _)) = refused {
        return Ok(r); // the wait ran out while waiting for other bridges
    }
    Err(Error::Mqtt(format!(
        "no reply on {reply_topic} within {:?}: is a lookout-bridge with bridge.prefix = {:?} connected to {broker}?",
        args.wait, settings.prefix
    )))
}
