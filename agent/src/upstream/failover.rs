//! Which of an upstream's brokers to use, as a pure state machine, so the timing rules are
//! tested without sockets.
//!
//! The first URL is the primary. While the broker in use is unreachable for
//! `failover_after`, the next URL is tried (round the list). On a secondary, the primary is
//! probed (a full MQTT connect, so a primary that takes TCP but refuses the login does not
//! count as healthy); once every probe has succeeded for `failback_after`, the link goes
//! back to it. A failback that fails is just another outage: the failover clock takes
//! over again.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Failover {
    urls: usize,
    current: usize,
    failover_after: Duration,
    failback_after: Duration,
    /// Since when the broker in use has been unreachable (or not yet reached).
    down_since: Option<Instant>,
    /// Since when every probe of the primary has succeeded.
    primary_ok_since: Option<Instant>,
    switches: u64,
}

/// What the forwarder should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Stay,
    /// Drop the connection in use and connect to URL `n`.
    SwitchTo(usize),
}

impl Failover {
    pub fn new(
        urls: usize,
        failover_after: Duration,
        failback_after: Duration,
        now: Instant,
    ) -> Self {
        Self {
            urls: urls.max(1),
            current: 0,
            failover_after,
            failback_after,
            down_since: Some(now),
            primary_ok_since: None,
            switches: 0,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn switches(&self) -> u64 {
        self.switches
    }

    pub fn connected(&mut self) {
        self.down_since = None;
    }

    pub fn disconnected(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
    }

    /// Whether the primary should be probed now (only from a secondary that works).
    pub fn wants_probe(&self) -> bool {
        self.current != 0 && self.down_since.is_none()
    }

    /// The outcome of one probe of the primary.
    pub fn probed(&mut self, ok: bool, now: Instant) {
        if ok {
            self.primary_ok_since.get_or_insert(now);
        } else {
            self.primary_ok_since = None;
        }
    }

    pub fn decide(&mut self, now: Instant) -> Decision {
        if let Some(since) = self.down_since {
            if self.urls > 1 && now.duration_since(since) >= self.failover_after {
                return self.switch((self.current + 1) % self.urls, now);
            }
            return Decision::Stay;
        }
        match self.primary_ok_since {
            Some(since)
                if self.current != 0 && now.duration_since(since) >= self.failback_after =>
            {
                self.switch(0, now)
            }
            _ => Decision::Stay,
        }
    }

    fn switch(&mut self, to: usize, now: Instant) -> Decision {
        self.current = to;
        self.switches += 1;
        self.down_since = Some(now);
        self.primary_ok_since = None;
        Decision::SwitchTo(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_unreachable_primary_fails_over_after_the_configured_time_and_not_before() {
        let t0 = Instant::now();
        let mut f = Failover::new(2, s(10), s(60), t0);
        assert_eq!(f.decide(t0 + s(9)), Decision::Stay);
        assert_eq!(f.decide(t0 + s(10)), Decision::SwitchTo(1));
        assert_eq!(f.current(), 1);
        // The secondary gets its own ten seconds.
        assert_eq!(f.decide(t0 + s(15)), Decision::Stay);
        assert_eq!(f.decide(t0 + s(20)), Decision::SwitchTo(0));
        assert_eq!(f.switches(), 2);
    }

    #[test]
    fn a_broker_that_answers_in_time_is_kept() {
        let t0 = Instant::now();
        let mut f = Failover::new(2, s(10), s(60), t0);
        f.connected();
        assert_eq!(f.decide(t0 + s(100)), Decision::Stay);
        f.disconnected(t0 + s(100));
        f.connected();
        assert_eq!(f.decide(t0 + s(200)), Decision::Stay);
        assert_eq!(f.current(), 0);
    }

    #[test]
    fn fails_back_only_when_the_primary_was_healthy_for_the_whole_failback_time() {
        let t0 = Instant::now();
        let mut f = Failover::new(2, s(10), s(60), t0);
        assert_eq!(f.decide(t0 + s(10)), Decision::SwitchTo(1));
        f.connected();
        assert!(f.wants_probe());
        f.probed(true, t0 + s(20));
        f.probed(false, t0 + s(50));
        f.probed(true, t0 + s(55));
        assert_eq!(f.decide(t0 + s(100)), Decision::Stay);
        f.probed(true, t0 + s(110));
        assert_eq!(f.decide(t0 + s(115)), Decision::SwitchTo(0));
        assert!(!f.wants_probe());
    }

    #[test]
    fn a_single_broker_is_never_switched_away_from() {
        let t0 = Instant::now();
        let mut f = Failover::new(1, s(10), s(60), t0);
        assert_eq!(f.decide(t0 + s(1000)), Decision::Stay);
        assert_eq!(f.switches(), 0);
    }
}
