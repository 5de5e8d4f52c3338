//! Host availability: the `offline` alarm, its grace time, stale retained states, and
//! inhibition.
//!
//! The agent's retained `<prefix>/<host>/status` says `online` or `offline` (its last
//! will, or a clean shutdown). While a host is offline its own alarms are held back (a
//! dead host's metrics say nothing new, and the operator needs one message, not a storm),
//! and one synthetic alarm, source `offline`, is routed like any other. When the host
//! reconnects the agent re-sends its retained alarm states, so nothing held back is lost.
//!
//! What is sent, per offline episode:
//! - An `offline` seen live goes out only after `bridge.offline_grace` (default 2 min),
//!   at severity 4. A host back within the grace (a reboot) produces nothing at all; one
//!   back after it gets the resolve.
//! - A retained `offline` the broker replays (at start, or after the bridge reconnects)
//!   says nothing about when the host went away: its age is taken from this module's
//!   durable record of the host (when the bridge saw it go offline, else when it last
//!   heard from it live). Younger than `bridge.offline_stale_after` (default 1 h): the
//!   grace counts from then, as if the bridge had been watching. Older, or a host never
//!   heard from: one notice at severity 1 (information, not a page), once: its id holds
//!   the time the host was last seen, so the dedup of the notification log keeps it to one
//!   notice across restarts.
//! - An empty status (a decommissioned host, `lookout-bridge decommission`) forgets the
//!   host; an alarm sent for it is resolved.
//!
//! The record (`<state_dir>/hosts.v1.json`: per host, last heard live and offline since)
//! is rewritten (temporary file, rename) at most every [`SAVE_EVERY`] and when the
//! pipeline stops; a damaged file is logged and ignored, never fatal. Grace deadlines use
//! tokio's clock, so tests drive them with paused time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

/// File name of the host record inside `state_dir`.
pub const HOSTS_FILE: &str = "hosts.v1.json";
/// The record is written at most this often (and at shutdown).
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Severity of the offline alarm of a host that went away while watched.
const PAGE: u8 = 4;
/// Severity of the notice for a stale retained offline.
const NOTICE: u8 = 1;

/// Grace and staleness, from `[bridge]`.
#[derive(Clone, Copy, Debug)]
pub struct OfflinePolicy {
    pub grace: Duration,
    pub stale_after: Duration,
}

/// What the bridge remembers of one host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Host {
    /// Unix ms the host was last heard from live (not a retained replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<i64>,
    /// Unix ms the current offline episode began; `None` while online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offline_since: Option<i64>,
    /// The severity of the alarm sent for this episode, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    announced: Option<u8>,
    /// When the grace of a not yet announced episode ends.
    #[serde(skip)]
    due: Option<Instant>,
}

/// Every host's availability.
#[derive(Debug)]
pub struct Hosts {
    policy: OfflinePolicy,
    hosts: HashMap<String, Host>,
    capacity: usize,
    path: Option<PathBuf>,
    dirty: bool,
    saved_at: Instant,
}

impl Hosts {
    /// Hosts as recorded under `state_dir` (none without one).
    pub fn new(
        policy: OfflinePolicy,
        capacity: usize,
        state_dir: Option<&std::path::Path>,
    ) -> Self {
        let path = state_dir.map(|d| d.join(HOSTS_FILE));
        let hosts = path.as_deref().map(load).unwrap_or_default();
        Self {
            policy,
            hosts,
            capacity: capacity.max(1),
            path,
            dirty: false,
            saved_at: Instant::now(),
        }
    }

    /// Offline and not yet back, announced or still in its grace.
    pub fn is_offline(&self, host: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.offline_since.is_some())
    }

    /// The host published something live (not a retained replay).
    pub fn heard(&mut self, host: &str, now_ms: i64) {
        if let Some(h) = self.entry(host) {
            h.last_seen = Some(now_ms);
            self.dirty = true;
        }
    }

    /// Applies a status payload; returns the alarm to route, if any.
    pub fn status(
        &mut self,
        host: &str,
        payload: &[u8],
        retained: bool,
        now_ms: i64,
    ) -> Option<Value> {
        let policy = self.policy;
        let out = match payload {
            b"offline" => {
                let h = self.entry(host)?;
                went_offline(h, host, retained, now_ms, policy)
            }
            b"online" => {
                let h = self.entry(host)?;
                h.last_seen = Some(now_ms);
                h.due = None;
                let since = h.offline_since.take();
                let severity = h.announced.take();
                since
                    .zip(severity)
                    .map(|(since, sev)| offline_alarm(host, "resolved", since, now_ms, sev, None))
            }
            b"" => {
                let h = self.hosts.remove(host)?;
                h.offline_since.zip(h.announced).map(|(since, sev)| {
                    let why =
                        format!("{host} was decommissioned: its retained topics were cleared");
                    offline_alarm(host, "resolved", since, now_ms, sev, Some(why))
                })
            }
            _ => return None,
        };
        self.dirty = true;
        out
    }

    /// The offline alarms whose grace is over, now firing.
    pub fn due(&mut self, now: Instant) -> Vec<Value> {
        let mut out = Vec::new();
        for (host, h) in &mut self.hosts {
            if let (Some(due), Some(since)) = (h.due, h.offline_since)
                && due <= now
            {
                h.due = None;
                h.announced = Some(PAGE);
                out.push(offline_alarm(host, "firing", since, since, PAGE, None));
            }
        }
        if !out.is_empty() {
            self.dirty = true;
        }
        out
    }

    /// Writes the record if it changed and [`SAVE_EVERY`] has passed.
    pub fn save_if_due(&mut self) {
        if self.dirty && self.saved_at.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// Writes the record if it changed (a failure is logged; the next save tries again).
    pub fn save(&mut self) {
        let Some(path) = &self.path else { return };
        if !self.dirty {
            return;
        }
        self.saved_at = Instant::now();
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(&self.hosts)
            .map_err(std::io::Error::other)
            .and_then(|data| std::fs::write(&tmp, data))
            .and_then(|()| std::fs::rename(&tmp, path));
        match res {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the host record")
            }
        }
    }

    /// The host's record, created if there is room.
    fn entry(&mut self, host: &str) -> Option<&mut Host> {
        if !self.hosts.contains_key(host) && self.hosts.len() >= self.capacity {
            return None;
        }
        Some(self.hosts.entry(host.to_owned()).or_default())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.save();
    }
}

/// A status `offline`: starts an episode (its grace running), or for a stale retained one
/// returns the notice at once.
fn went_offline(
    h: &mut Host,
    host: &str,
    retained: bool,
    now_ms: i64,
    policy: OfflinePolicy,
) -> Option<Value> {
    if h.offline_since.is_some() && (h.announced.is_some() || h.due.is_some()) {
        return None; // Known: announced, or its grace is running.
    }
    if !retained {
        h.offline_since = Some(now_ms);
        h.due = Some(Instant::now() + policy.grace);
        return None;
    }
    // A replayed state: as old as what the bridge knows of the host.
    let since = h.offline_since.or(h.last_seen);
    let age = since.map(|s| Duration::from_millis((now_ms - s).max(0) as u64));
    match age {
        Some(age) if age <= policy.stale_after => {
            h.offline_since = since;
            h.due = Some(Instant::now() + policy.grace.saturating_sub(age));
            None
        }
        _ => {
            let summary = match since {
                Some(s) => format!(
                    "{host} has been offline for {} (retained status); not paging",
                    readable_age(now_ms - s)
                ),
                None => {
                    format!("{host} is offline (retained status; this bridge never saw it online)")
                }
            };
            let since = since.unwrap_or(0);
            h.offline_since = Some(since);
            h.announced = Some(NOTICE);
            Some(offline_alarm(
                host,
                "firing",
                since,
                now_ms,
                NOTICE,
                Some(summary),
            ))
        }
    }
}

fn load(path: &std::path::Path) -> HashMap<String, Host> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "host record damaged; starting without it");
            HashMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the host record; starting without it");
            HashMap::new()
        }
    }
}

/// The synthetic alarm. Its id names the episode by when it began, so a restarted bridge
/// that meets the same episode again produces the same id (and dedup holds it back).
fn offline_alarm(
    host: &str,
    state: &str,
    since: i64,
    now_ms: i64,
    severity: u8,
    summary: Option<String>,
) -> Value {
    let summary = summary.unwrap_or_else(|| match state {
        "firing" => {
            format!("{host} is offline; its other alarms are held back until it is back")
        }
        _ => format!(
            "{host} is back online after {}s",
            (now_ms - since).max(0) / 1000
        ),
    });
    json!({
        "id": format!("{host}:offline:{since}"),
        "host": host,
        "source": "offline",
        "state": state,
        "severity": severity,
        "ts": now_ms,
        "started_at": since,
        "score": null,
        "threshold": null,
        "summary": summary,
        "labels": {},
    })
}

fn readable_age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s => format!("{}m", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn hosts() -> Hosts {
        let policy = OfflinePolicy {
            grace: Duration::from_secs(120),
            stale_after: Duration::from_secs(3600),
        };
        Hosts::new(policy, 10, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_back_within_the_grace_produces_nothing() {
        let mut h = hosts();
        assert!(h.status("h1", b"offline", false, 0).is_none());
        assert!(h.is_offline("h1"), "held back meanwhile");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(h.due(Instant::now()).is_empty());
        assert!(h.status("h1", b"online", false, 40_000).is_none());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(h.due(Instant::now()).is_empty());
        assert!(!h.is_offline("h1"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_grace_fires_then_resolves_the_same_episode() {
        let mut h = hosts();
        h.status("h1", b"offline", false, 1000);
        assert!(h.status("h1", b"offline", false, 2000).is_none(), "known");
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(h.due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let fired = h.due(Instant::now());
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0]["state"].as_str(), fired[0]["severity"].as_u64()),
            (Some("firing"), Some(4))
        );
        assert!(h.due(Instant::now()).is_empty(), "once");
        let resolved = h.status("h1", b"online", false, 5 * MIN).unwrap();
        assert_eq!(resolved["id"], fired[0]["id"]);
        assert_eq!(resolved["state"], "resolved");
        assert!(h.status("h1", b"online", false, 6 * MIN).is_none());
        assert!(h.status("h1", b"garbage", false, 0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_retained_offline_is_one_notice_at_level_1() {
        let mut h = hosts();
        h.heard("h1", 0);
        let notice = h.status("h1", b"offline", true, 3 * 3600 * 1000).unwrap();
        assert_eq!(
            (notice["state"].as_str(), notice["severity"].as_u64()),
            (Some("firing"), Some(1))
        );
        assert!(
            notice["summary"].as_str().unwrap().contains("3h"),
            "{notice}"
        );
        assert!(
            h.status("h1", b"offline", true, 4 * 3600 * 1000).is_none(),
            "a reconnect's replay"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(h.due(Instant::now()).is_empty(), "never paged");
        // A host never heard from: as stale as it gets.
        let unknown = h.status("h2", b"offline", true, 1000).unwrap();
        assert_eq!(unknown["severity"], 1);
        assert_eq!(unknown["id"], "h2:offline:0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_retained_offline_keeps_the_grace_from_when_the_host_was_last_seen() {
        let mut h = hosts();
        h.heard("h1", 0);
        assert!(h.status("h1", b"offline", true, MIN).is_none());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(h.due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let fired = h.due(Instant::now());
        assert_eq!(fired[0]["severity"], 4);
        assert_eq!(fired[0]["id"], "h1:offline:0");
    }

    #[tokio::test(start_paused = true)]
    async fn the_record_survives_a_restart_so_an_episode_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let policy = OfflinePolicy {
            grace: Duration::from_secs(120),
            stale_after: Duration::from_secs(3600),
        };
        {
            let mut h = Hosts::new(policy, 10, Some(dir.path()));
            h.status("h1", b"offline", false, 1000);
            tokio::time::advance(Duration::from_secs(120)).await;
            assert_eq!(h.due(Instant::now()).len(), 1);
        }
        let mut h = Hosts::new(policy, 10, Some(dir.path()));
        assert!(h.is_offline("h1"));
        assert!(
            h.status("h1", b"offline", true, 2 * MIN).is_none(),
            "announced before"
        );
        let resolved = h.status("h1", b"online", false, 3 * MIN).unwrap();
        assert_eq!(resolved["id"], "h1:offline:1000");
        // A decommissioned host is forgotten; its open alarm resolved.
        let notice = h.status("h2", b"offline", true, 4 * MIN).unwrap();
        let gone = h.status("h2", b"", true, 5 * MIN).unwrap();
        assert_eq!(
            (&gone["id"], gone["state"].as_str()),
            (&notice["id"], Some("resolved"))
        );
        assert!(gone["summary"].as_str().unwrap().contains("decommissioned"));
        assert!(!h.is_offline("h2"));
        assert!(h.status("h2", b"", true, 5 * MIN).is_none(), "unknown now");
    }
}
