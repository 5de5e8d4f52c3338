//! Inhibition by host availability. The agent's retained `<prefix>/<host>/status` says
//! `online` or `offline` (its last will). While a host is offline its own alarms are held
//! back (a dead host's metrics say nothing new, and the operator needs one message, not a
//! storm), and one synthetic alarm, source `offline`, is routed like any other: firing when
//! the host goes offline, resolved when it is back. When it reconnects the agent re-sends
//! its retained alarm states, so nothing held back is lost for good.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Hosts currently offline, and since when.
#[derive(Debug)]
pub struct Hosts {
    offline: HashMap<String, i64>,
    capacity: usize,
}

impl Hosts {
    pub fn new(capacity: usize) -> Self {
        Self {
            offline: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn is_offline(&self, host: &str) -> bool {
        self.offline.contains_key(host)
    }

    /// Applies a status payload; returns the synthetic alarm when the host changed state.
    pub fn update(&mut self, host: &str, payload: &[u8], now_ms: i64) -> Option<Value> {
        match payload {
            b"offline" => {
                if self.offline.contains_key(host) || self.offline.len() >= self.capacity {
                    return None;
                }
                self.offline.insert(host.to_owned(), now_ms);
                Some(offline_alarm(host, "firing", now_ms, now_ms))
            }
            b"online" => {
                let since = self.offline.remove(host)?;
                Some(offline_alarm(host, "resolved", since, now_ms))
            }
            _ => None,
        }
    }
}

fn offline_alarm(host: &str, state: &str, since: i64, now_ms: i64) -> Value {
    let summary = if state == "firing" {
        format!("{host} is offline; its other alarms are held back until it is back")
    } else {
        format!(
            "{host} is back online after {}s",
            (now_ms - since).max(0) / 1000
        )
    };
    json!({
        "id": format!("{host}:offline:{since}"),
        "host": host,
        "source": "offline",
        "state": state,
        "severity": 4,
        "ts": now_ms,
        "started_at": since,
        "score": null,
        "threshold": null,
        "summary": summary,
        "labels": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_fires_once_and_online_resolves_the_same_episode() {
        let mut h = Hosts::new(10);
        let fired = h.update("h1", b"offline", 1000).unwrap();
        assert_eq!(
            (fired["state"].as_str(), fired["source"].as_str()),
            (Some("firing"), Some("offline"))
        );
        assert!(h.is_offline("h1"));
        assert!(
            h.update("h1", b"offline", 2000).is_none(),
            "already offline"
        );
        let resolved = h.update("h1", b"online", 61_000).unwrap();
        assert_eq!(resolved["id"], fired["id"]);
        assert_eq!(resolved["state"], "resolved");
        assert!(resolved["summary"].as_str().unwrap().contains("60s"));
        assert!(
            h.update("h1", b"online", 62_000).is_none(),
            "online was never news"
        );
        assert!(h.update("h1", b"garbage", 0).is_none());
    }
}
