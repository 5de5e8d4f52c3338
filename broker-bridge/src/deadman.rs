//! The dead-man alarm: a host that was heard from and then publishes nothing (no stats,
//! no scores, no metrics, no alarms) for its silence limit raises a host alarm with source
//! `silent` (topic `<prefix>/<host>/alarms/silent`, severity 3), routed like any other,
//! and resolved when the host publishes again. It catches what a last will cannot: a
//! power cut behind a NAT, a broker that never noticed, a hung agent that keeps its
//! connection.
//!
//! The silence limit is 3 × the host's stats interval when its `agent/stats` says it
//! (`stats_interval_s`, docs/topics.md), else `bridge.silent_after`. A host that announces
//! `offline` is not watched until it is back (the offline alarm speaks for it; a silent
//! alarm already sent is resolved). A host is watched from the first stats, metrics or
//! scores the bridge hears from it live: alarms come only when something changes, so a
//! host whose agent publishes no stats (`agent.stats_interval = "0s"`) and whose metrics
//! the bridge does not follow is never called silent for being quiet. Once watched, any
//! live message keeps it alive. Times use tokio's clock, so tests drive them with paused
//! time.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// How many stats intervals of silence make a host silent.
const INTERVALS: u32 = 3;
const SEVERITY: u8 = 3;

#[derive(Debug)]
struct Watch {
    last: Instant,
    /// From the host's stats: 3 × its interval.
    limit: Option<Duration>,
    /// Unix ms of the last message, when the alarm fired (the episode's id).
    fired: Option<i64>,
    last_ms: i64,
}

/// Every watched host.
#[derive(Debug)]
pub struct Silent {
    default_limit: Duration,
    hosts: HashMap<String, Watch>,
    capacity: usize,
}

impl Silent {
    /// `default_limit`: `bridge.silent_after`; zero turns the alarm off.
    pub fn new(default_limit: Duration, capacity: usize) -> Self {
        Self {
            default_limit,
            hosts: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.default_limit.is_zero()
    }

    /// The host published live; `regular`: the message is one it sends all the time
    /// (stats, metrics, scores), which starts the watch; `stats_interval` when it was its
    /// stats and said it. Returns the resolve of a silent alarm that had fired.
    pub fn heard(
        &mut self,
        host: &str,
        regular: bool,
        stats_interval: Option<Duration>,
        now: Instant,
        now_ms: i64,
    ) -> Option<Value> {
        if !self.enabled() {
            return None;
        }
        if !self.hosts.contains_key(host) && (!regular || self.hosts.len() >= self.capacity) {
            return None;
        }
        let w = self.hosts.entry(host.to_owned()).or_insert(Watch {
            last: now,
            limit: None,
            fired: None,
            last_ms: now_ms,
        });
        w.last = now;
        w.last_ms = now_ms;
        if let Some(every) = stats_interval.filter(|d| !d.is_zero()) {
            w.limit = Some(every * INTERVALS);
        }
        let since = w.fired.take()?;
        Some(silent_alarm(
            host,
            "resolved",
            since,
            now_ms,
            "published again",
        ))
    }

    /// The host announced `offline`: no longer watched; an alarm already sent is resolved.
    pub fn offline(&mut self, host: &str, now_ms: i64) -> Option<Value> {
        let since = self.hosts.remove(host)?.fired?;
        Some(silent_alarm(
            host,
            "resolved",
            since,
            now_ms,
            "reported offline now",
        ))
    }

    /// The hosts whose silence reached their limit, now firing.
    pub fn due(&mut self, now: Instant, now_ms: i64) -> Vec<Value> {
        let default_limit = self.default_limit;
        let mut out = Vec::new();
        for (host, w) in &mut self.hosts {
            let limit = w.limit.unwrap_or(default_limit);
            if w.fired.is_none() && now.duration_since(w.last) >= limit {
                w.fired = Some(w.last_ms);
                let why = format!(
                    "published nothing for {}s",
                    now.duration_since(w.last).as_secs()
                );
                out.push(silent_alarm(host, "firing", w.last_ms, now_ms, &why));
            }
        }
        out
    }
}

/// The `stats_interval_s` of an `agent/stats` payload, if it has one.
pub fn stats_interval(payload: &[u8]) -> Option<Duration> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.get("stats_interval_s")?.as_u64().map(Duration::from_secs)
}

fn silent_alarm(host: &str, state: &str, since: i64, now_ms: i64, why: &str) -> Value {
    json!({
        "id": format!("{host}:silent:{since}"),
        "host": host,
        "source": "silent",
        "state": state,
        "severity": SEVERITY,
        "ts": now_ms,
        "started_at": since,
        "score": null,
        "threshold": null,
        "summary": format!("{host} {why}"),
        "labels": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_host_fires_after_its_limit_and_resolves_when_it_publishes_again() {
        let mut s = Silent::new(Duration::from_secs(180), 10);
        assert!(s.heard("h1", false, None, Instant::now(), 0).is_none());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(
            s.due(Instant::now(), 0).is_empty(),
            "an alarm alone starts no watch"
        );
        assert!(s.heard("h1", true, None, Instant::now(), 0).is_none());
        tokio::time::advance(Duration::from_secs(179)).await;
        assert!(s.due(Instant::now(), 179_000).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let fired = s.due(Instant::now(), 180_000);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0]["source"], "silent");
        assert_eq!(fired[0]["state"], "firing");
        assert!(s.due(Instant::now(), 181_000).is_empty(), "once");
        // Any live message, an alarm too, says it is back.
        let resolved = s.heard("h1", false, None, Instant::now(), 200_000).unwrap();
        assert_eq!(
            (&resolved["id"], resolved["state"].as_str()),
            (&fired[0]["id"], Some("resolved"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_is_three_stats_intervals_when_the_stats_say_it() {
        let mut s = Silent::new(Duration::from_secs(3600), 10);
        let every = stats_interval(br#"{"ts": 1, "stats_interval_s": 10}"#);
        assert_eq!(every, Some(Duration::from_secs(10)));
        s.heard("h1", true, every, Instant::now(), 0);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(s.due(Instant::now(), 0).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.due(Instant::now(), 0).len(), 1);
        assert_eq!(stats_interval(br#"{"ts": 1}"#), None, "an older agent");
        assert_eq!(stats_interval(b"not json"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_announced_offline_is_not_watched() {
        let mut s = Silent::new(Duration::from_secs(60), 10);
        s.heard("h1", true, None, Instant::now(), 0);
        assert!(s.offline("h1", 1).is_none(), "nothing was sent");
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(s.due(Instant::now(), 0).is_empty());
        // Silent first, then its last will: the silent alarm gives way.
        s.heard("h2", true, None, Instant::now(), 0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(s.due(Instant::now(), 0).len(), 1);
        assert_eq!(s.offline("h2", 1).unwrap()["state"], "resolved");
        let off = Silent::new(Duration::ZERO, 10);
        assert!(!off.enabled());
    }
}
