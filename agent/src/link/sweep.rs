//! Clearing retained messages that an earlier run published and this one no longer does:
//! Home Assistant discovery configs of models that are gone, or all of them once discovery
//! is turned off (crate::homeassistant).
//!
//! The broker is the only record of what an earlier run published (the agent may have run
//! with another state directory, or on another machine under the same host name), so the
//! link asks it: on connect it subscribes to one filter that covers only this host's own
//! topics, collects the retained messages the broker replays, and after a short quiet
//! window following the SUBACK publishes an empty retained message on every topic it saw
//! that is not in the current set, then unsubscribes. This is the state machine; the link
//! (link/client.rs) feeds it messages and acknowledgements and acts on its verdict.
//!
//! Bounds: at most [`CAP`] topics are remembered per sweep (further ones are counted and
//! left for the next run), a sweep gives up when the SUBACK does not come within
//! [`SUBACK_TIMEOUT`], and it runs at most [`ATTEMPTS`] times per process: once, unless a
//! lost connection cut it short. The configs only change when the agent restarts, so one
//! completed sweep per process is enough, and the limit keeps a broker that drops
//! connections on a refused SUBSCRIBE (some can be configured so) from causing a reconnect
//! loop.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Topics remembered per sweep; beyond it retained messages are counted and skipped.
pub const CAP: usize = 1024;

/// How long retained messages are collected after the SUBACK. The broker sends them right
/// after it (mosquitto: in the same write), so this only has to cover the network.
pub const WINDOW: Duration = Duration::from_secs(2);

/// A sweep whose SUBACK has not come by then is abandoned.
pub const SUBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Sweeps started per process, at most.
pub const ATTEMPTS: u8 = 3;

/// What a sweep in progress should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep collecting.
    Wait,
    /// Another connection took over, or the SUBACK never came: do nothing more.
    Abandon,
    /// Clear these topics (empty retained messages), then unsubscribe. `skipped` retained
    /// messages did not fit under [`CAP`].
    Clear { topics: Vec<String>, skipped: u64 },
}

#[derive(Debug)]
pub struct Sweep {
    filter: String,
    keep: BTreeSet<String>,
    attempts: u8,
    done: bool,
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    /// The connection it belongs to.
    epoch: u64,
    started: Instant,
    acked: Option<Instant>,
    stale: BTreeSet<String>,
    skipped: u64,
}

impl Sweep {
    /// Sweeps `filter`, keeping the retained messages on the `keep` topics.
    pub fn new(filter: String, keep: impl IntoIterator<Item = String>) -> Self {
        Self {
            filter,
            keep: keep.into_iter().collect(),
            attempts: 0,
            done: false,
            run: None,
        }
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// A connection (`epoch`) is up: `true` when a sweep starts on it (subscribe to
    /// [`Sweep::filter`] then). A sweep still running on an earlier connection ends.
    pub fn begin(&mut self, epoch: u64, now: Instant) -> bool {
        if self.done || self.attempts >= ATTEMPTS {
            self.run = None;
            return false;
        }
        self.attempts += 1;
        self.run = Some(Run {
            epoch,
            started: now,
            acked: None,
            stale: BTreeSet::new(),
            skipped: 0,
        });
        true
    }

    /// A SUBACK on connection `epoch`; the first one counts. The sweep subscribes before
    /// anything else on a connection, so that is its own, unless a request left over from
    /// the previous connection went first, which [`WINDOW`] covers.
    pub fn on_suback(&mut self, epoch: u64, now: Instant) {
        if let Some(run) = &mut self.run
            && run.epoch == epoch
            && run.acked.is_none()
        {
            run.acked = Some(now);
        }
    }

    /// A message arrived; `true` when its topic is under the sweep's filter (whether or not
    /// a sweep is running), so that the link does not hand it on as if it were subscribed
    /// for something else. Only retained, non-empty messages on topics outside the kept
    /// set are stale: a live message is our own publish coming back.
    pub fn offer(&mut self, topic: &str, retain: bool, empty: bool) -> bool {
        if !matches(&self.filter, topic) {
            return false;
        }
        if let Some(run) = &mut self.run
            && retain
            && !empty
            && !self.keep.contains(topic)
            && !run.stale.contains(topic)
        {
            if run.stale.len() < CAP {
                run.stale.insert(topic.to_owned());
            } else {
                run.skipped += 1;
            }
        }
        true
    }

    /// What the sweep started on connection `epoch` should do at `now`.
    pub fn poll(&mut self, epoch: u64, now: Instant) -> Verdict {
        let Some(run) = &mut self.run else {
            return Verdict::Abandon;
        };
        if run.epoch != epoch {
            return Verdict::Abandon;
        }
        match run.acked {
            Some(at) if now.duration_since(at) >= WINDOW => {
                let topics = std::mem::take(&mut run.stale).into_iter().collect();
                let skipped = run.skipped;
                self.run = None;
                self.done = true;
                Verdict::Clear { topics, skipped }
            }
            Some(_) => Verdict::Wait,
            None if now.duration_since(run.started) >= SUBACK_TIMEOUT => {
                self.run = None;
                Verdict::Abandon
            }
            None => Verdict::Wait,
        }
    }
}

/// MQTT topic matching: `+` is one level, a trailing `#` any number (zero included).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "ha/+/lookout_h/+/config";

    fn sweep() -> Sweep {
        Sweep::new(
            F.into(),
            ["ha/sensor/lookout_h/cpu_score/config".to_owned()],
        )
    }

    #[test]
    fn topic_filters_match_like_mqtt() {
        assert!(matches(F, "ha/sensor/lookout_h/x/config"));
        assert!(!matches(F, "ha/sensor/lookout_h2/x/config"));
        assert!(!matches(F, "ha/sensor/lookout_h/x/config/more"));
        assert!(!matches(F, "ha/sensor/lookout_h/config"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/#", "b/c"));
        assert!(matches("a/+", "a/"));
    }

    #[test]
    fn clears_retained_topics_outside_the_kept_set_after_the_window() {
        let mut s = sweep();
        let t0 = Instant::now();
        assert!(s.begin(1, t0));
        assert!(s.offer("ha/sensor/lookout_h/cpu_score/config", true, false));
        assert!(s.offer("ha/sensor/lookout_h/gone_score/config", true, false));
        // Our own publish coming back live, an empty one, a foreign host's.
        assert!(s.offer("ha/sensor/lookout_h/live/config", false, false));
        assert!(s.offer("ha/sensor/lookout_h/cleared/config", true, true));
        assert!(!s.offer("ha/sensor/lookout_other/x/config", true, false));
        assert_eq!(s.poll(1, t0 + Duration::from_secs(5)), Verdict::Wait);
        s.on_suback(1, t0 + Duration::from_secs(1));
        assert_eq!(s.poll(1, t0 + Duration::from_secs(2)), Verdict::Wait);
        assert_eq!(
            s.poll(1, t0 + Duration::from_secs(3)),
            Verdict::Clear {
                topics: vec!["ha/sensor/lookout_h/gone_score/config".into()],
                skipped: 0
            }
        );
        // Done for this process.
        assert!(!s.begin(2, t0));
        assert!(s.offer("ha/sensor/lookout_h/later/config", true, false));
        assert_eq!(s.poll(2, t0), Verdict::Abandon);
    }

    #[test]
    fn a_new_connection_takes_over_and_attempts_are_limited() {
        let mut s = sweep();
        let t0 = Instant::now();
        assert!(s.begin(1, t0));
        s.offer("ha/sensor/lookout_h/old/config", true, false);
        assert!(s.begin(2, t0));
        assert_eq!(s.poll(1, t0), Verdict::Abandon);
        s.on_suback(1, t0);
        assert_eq!(s.poll(2, t0 + WINDOW * 2), Verdict::Wait, "not acked yet");
        assert_eq!(s.poll(2, t0 + SUBACK_TIMEOUT), Verdict::Abandon);
        assert!(s.begin(3, t0));
        assert!(!s.begin(4, t0), "at most {ATTEMPTS} sweeps");
    }

    #[test]
    fn remembers_at_most_cap_topics() {
        let mut s = Sweep::new(F.into(), []);
        let t0 = Instant::now();
        s.begin(1, t0);
        for i in 0..CAP + 10 {
            s.offer(&format!("ha/sensor/lookout_h/{i}/config"), true, false);
        }
        s.on_suback(1, t0);
        match s.poll(1, t0 + WINDOW) {
            Verdict::Clear { topics, skipped } => {
                assert_eq!((topics.len(), skipped), (CAP, 10));
            }
            v => panic!("{v:?}"),
        }
    }
}
