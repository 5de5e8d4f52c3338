//! The bridge watched from outside, and its broker link watched from inside.
//!
//! - **Heartbeat** (`[heartbeat]`): an HTTP request to `url` every `every`, only while the
//!   bridge is connected to its broker, as healthchecks.io, Uptime Kuma's push monitors or
//!   Cronitor expect: when the pings stop (the bridge died, hangs, or lost its broker),
//!   that service pages someone. One request at a time; a failed one is logged (at most
//!   every 60 s) and the next beat tries again.
//! - **Broker lost** (`bridge.broker_lost_after`, `bridge.broker_lost_targets`): when the
//!   bridge has been without its broker for longer than the threshold, one notice goes to
//!   the listed targets, straight into their queues (the broker is the one thing that
//!   cannot carry it), and one more when the link is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::Error;
use crate::notify::Notification;
use crate::stats::RateLimited;

/// `[heartbeat]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRaw {
    /// The ping URL (a secret: such URLs carry the check's token).
    pub url: Secret,
    #[serde(default = "every")]
    pub every: HumanDuration,
    /// `GET` (default) or `POST` (an empty body).
    #[serde(default = "get")]
    pub method: String,
    #[serde(default = "crate::notify::http::default_timeout")]
    pub timeout: HumanDuration,
}

fn every() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn get() -> String {
    "GET".into()
}

/// The heartbeat, built.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    url: reqwest::Url,
    every: Duration,
    post: bool,
    client: reqwest::Client,
}

impl Heartbeat {
    /// Builds `[heartbeat]`; errors name the key (`heartbeat.url`).
    pub fn build(raw: &HeartbeatRaw) -> Result<Self, Error> {
        let err = |key: &str, message: String| Error::Config {
            path: format!("heartbeat.{key}"),
            message,
        };
        let url = crate::notify::http::parse_url("heartbeat", "url", raw.url.expose())
            .map_err(|e| err("url", e.to_string()))?;
        let post = match raw.method.to_ascii_uppercase().as_str() {
            "GET" => false,
            "POST" => true,
            _ => return Err(err("method", "must be GET or POST".into())),
        };
        if raw.every.0 < Duration::from_secs(1) {
            return Err(err("every", "must be at least 1s".into()));
        }
        let client = crate::notify::http::client("heartbeat", raw.timeout)
            .map_err(|e| err("timeout", e.to_string()))?;
        Ok(Self {
            url,
            every: raw.every.0,
            post,
            client,
        })
    }
}

/// The broker-lost notice's settings: after how long, to which targets (indices).
#[derive(Clone, Debug, Default)]
pub struct BrokerLost {
    pub after: Duration,
    pub targets: Vec<usize>,
}

/// The run-time side of both.
#[derive(Debug)]
pub struct Watchdog {
    heartbeat: Option<Heartbeat>,
    next_beat: Instant,
    in_flight: Arc<AtomicBool>,
    failures: Arc<RateLimited>,
    lost: BrokerLost,
    /// Since when the link is down (`None`: up), with its Unix ms.
    down_since: Option<(Instant, i64)>,
    notified: bool,
}

/// A change of the broker link worth telling people.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkNews {
    Lost { since_ms: i64 },
    Back { since_ms: i64 },
}

impl Watchdog {
    pub fn new(heartbeat: Option<Heartbeat>, lost: BrokerLost, now_ms: i64) -> Self {
        Self {
            heartbeat,
            next_beat: Instant::now(),
            in_flight: Arc::new(AtomicBool::new(false)),
            failures: Arc::new(RateLimited::new(Duration::from_secs(60))),
            lost,
            // Not connected yet: a broker that never answers counts from the start.
            down_since: Some((Instant::now(), now_ms)),
            notified: false,
        }
    }

    /// Called often (every timer tick) with the link's state: sends the heartbeat when
    /// due and connected; returns news about the link for the broker-lost targets.
    pub fn check(&mut self, connected: bool, now_ms: i64) -> Option<LinkNews> {
        let now = Instant::now();
        if connected {
            self.beat(now);
        }
        match (connected, self.down_since) {
            (true, Some((_, since_ms))) => {
                self.down_since = None;
                std::mem::take(&mut self.notified).then_some(LinkNews::Back { since_ms })
            }
            (false, None) => {
                self.down_since = Some((now, now_ms));
                None
            }
            (false, Some((since, since_ms)))
                if !self.notified
                    && !self.lost.targets.is_empty()
                    && now.duration_since(since) >= self.lost.after =>
            {
                self.notified = true;
                Some(LinkNews::Lost { since_ms })
            }
            _ => None,
        }
    }

    pub fn lost_targets(&self) -> &[usize] {
        &self.lost.targets
    }

    fn beat(&mut self, now: Instant) {
        let Some(hb) = &self.heartbeat else { return };
        if now < self.next_beat || self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        self.next_beat = now + hb.every;
        let hb = hb.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let failures = Arc::clone(&self.failures);
        tokio::spawn(async move {
            let req = if hb.post {
                hb.client.post(hb.url.clone()).body(Vec::new())
            } else {
                hb.client.get(hb.url.clone())
            };
            let endpoint = crate::notify::http::endpoint(&hb.url);
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(%endpoint, "heartbeat sent");
                }
                Ok(resp) => failures.hit(|suppressed| {
                    tracing::warn!(%endpoint, status = %resp.status(), suppressed, "heartbeat refused")
                }),
                Err(e) => failures.hit(|suppressed| {
                    tracing::warn!(%endpoint, error = %e.without_url(), suppressed, "heartbeat failed")
                }),
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// The notice for `target` about the broker link of bridge `id`.
pub fn link_notice(
    target: &str,
    id: &str,
    prefix: &str,
    news: &LinkNews,
    now_ms: i64,
) -> Notification {
    let (state, since_ms, title) = match news {
        LinkNews::Lost { since_ms } => (
            "firing",
            *since_ms,
            format!("lookout-bridge {id} cannot reach its MQTT broker"),
        ),
        LinkNews::Back { since_ms } => (
            "resolved",
            *since_ms,
            format!("lookout-bridge {id} reaches its MQTT broker again"),
        ),
    };
    let minutes = (now_ms - since_ms).max(0) / 60_000;
    let fields = json!({
        "id": format!("{id}:broker:{since_ms}"),
        "host": id,
        "source": "broker_lost",
        "state": state,
        "severity": 4,
        "ts": now_ms,
        "started_at": since_ms,
        "summary": format!("{title} (down for {minutes} min); alarms wait on the broker until then"),
        "labels": {},
    });
    let body = fields.to_string();
    Notification {
        target: target.to_owned(),
        topic: format!("{prefix}/bridge/{id}/broker"),
        title,
        raw: body.clone().into_bytes(),
        body,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_link_lost_for_longer_than_the_threshold_is_news_once_and_its_return_too() {
        let lost = BrokerLost {
            after: Duration::from_secs(120),
            targets: vec![0],
        };
        let mut w = Watchdog::new(None, lost, 0);
        assert_eq!(w.check(true, 0), None, "connected at start: nothing to say");
        assert_eq!(w.check(false, 1000), None);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(w.check(false, 120_000), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            w.check(false, 121_000),
            Some(LinkNews::Lost { since_ms: 1000 })
        );
        assert_eq!(w.check(false, 122_000), None, "once");
        assert_eq!(
            w.check(true, 200_000),
            Some(LinkNews::Back { since_ms: 1000 })
        );
        assert_eq!(w.check(true, 201_000), None);
        // A short outage says nothing, neither lost nor back.
        w.check(false, 300_000);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(w.check(true, 330_000), None);
    }

    #[test]
    fn the_notice_names_the_bridge_and_pairs_lost_with_back() {
        let lost = link_notice(
            "mail",
            "b1",
            "lookout",
            &LinkNews::Lost { since_ms: 0 },
            180_000,
        );
        let back = link_notice(
            "mail",
            "b1",
            "lookout",
            &LinkNews::Back { since_ms: 0 },
            240_000,
        );
        assert_eq!(lost.fields["id"], back.fields["id"]);
        assert_eq!(
            (lost.fields["state"].as_str(), back.fields["state"].as_str()),
            (Some("firing"), Some("resolved"))
        );
        assert!(lost.title.contains("b1"), "{}", lost.title);
        assert!(lost.fields["summary"].as_str().unwrap().contains("3 min"));
    }
}
