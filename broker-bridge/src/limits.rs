//! Limits on input, per route: the largest payload, the longest topic and a message rate
//! (a token bucket). They are checked on the topic and the payload's size, before the
//! payload is decoded, so a flood costs little; a message over a route's limits is dropped
//! for that route only (acknowledged, counted in the route's stats, logged at most once per
//! 10 s per route) and still goes to the other routes it matches. Nothing waits: a limit
//! never slows down another route.

use std::time::{Duration, Instant};

use crate::stats::{RateLimited, RouteStats};

/// A route's limits, built from `[[routes]]` (defaults from `[bridge]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_payload: usize,
    pub max_topic_length: usize,
    pub rate: Option<Rate>,
}

/// `rate_limit` messages per second on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// Why a message was over a route's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Payload { size: usize, limit: usize },
    Topic { length: usize, limit: usize },
    Rate,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Payload { size, limit } => {
                write!(
                    f,
                    "payload of {size} bytes is over the route's max_payload {limit}"
                )
            }
            Exceeded::Topic { length, limit } => write!(
                f,
                "topic of {length} bytes is over the route's max_topic_length {limit}"
            ),
            Exceeded::Rate => f.write_str("over the route's rate_limit"),
        }
    }
}

/// The run-time side of one route's [`Limits`]: its token bucket and its log limiter.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    tokens: f64,
    last: Instant,
    log: RateLimited,
}

impl Gate {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            tokens: limits.rate.map_or(0.0, |r| r.burst),
            limits,
            last: now,
            log: RateLimited::new(Duration::from_secs(10)),
        }
    }

    /// Lets a message through, or says which limit it is over. A message over the size
    /// limits takes no token.
    pub fn admit(&mut self, topic: &str, size: usize, now: Instant) -> Result<(), Exceeded> {
        let l = &self.limits;
        if topic.len() > l.max_topic_length {
            return Err(Exceeded::Topic {
                length: topic.len(),
                limit: l.max_topic_length,
            });
        }
        if size > l.max_payload {
            return Err(Exceeded::Payload {
                size,
                limit: l.max_payload,
            });
        }
        if let Some(rate) = l.rate {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
            if self.tokens < 1.0 {
                return Err(Exceeded::Rate);
            }
            self.tokens -= 1.0;
        }
        Ok(())
    }

    /// Counts a refused message in the route's stats and logs it (rate-limited): the one
    /// place both happen, so they agree.
    pub fn emit(&self, stats: &RouteStats, topic: &str, why: Exceeded) {
        match why {
            Exceeded::Payload { .. } => stats.too_large.inc(),
            Exceeded::Topic { .. } => stats.topic_too_long.inc(),
            Exceeded::Rate => stats.rate_limited.inc(),
        }
        self.log.hit(|suppressed| {
            // A topic over the limit is cut in the log line, so the log stays bounded too.
            let shown: String = topic.chars().take(200).collect();
            tracing::warn!(route = %stats.topic, topic = %shown, reason = %why, suppressed, "message over a route's limits dropped");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: Option<Rate>) -> (Gate, Instant) {
        let now = Instant::now();
        let limits = Limits {
            max_payload: 100,
            max_topic_length: 10,
            rate,
        };
        (Gate::new(limits, now), now)
    }

    #[test]
    fn sizes_and_topic_lengths_are_checked_first() {
        let (mut g, now) = gate(None);
        assert_eq!(g.admit("a/b", 100, now), Ok(()));
        assert_eq!(
            g.admit("a/b", 101, now),
            Err(Exceeded::Payload {
                size: 101,
                limit: 100
            })
        );
        assert_eq!(
            g.admit("a/bbbbbbbbbb", 1, now),
            Err(Exceeded::Topic {
                length: 12,
                limit: 10
            })
        );
    }

    #[test]
    fn the_token_bucket_allows_bursts_then_the_rate() {
        let (mut g, t0) = gate(Some(Rate {
            per_second: 10.0,
            burst: 5.0,
        }));
        let passed = (0..20).filter(|_| g.admit("a", 1, t0).is_ok()).count();
        assert_eq!(passed, 5, "the burst");
        assert_eq!(g.admit("a", 1, t0), Err(Exceeded::Rate));
        // One second later: ten more tokens, but never more than the burst.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..20).filter(|_| g.admit("a", 1, t1).is_ok()).count();
        assert_eq!(passed, 5);
        // 100 ms: one token.
        let t2 = t1 + Duration::from_millis(100);
        assert!(g.admit("a", 1, t2).is_ok());
        assert_eq!(g.admit("a", 1, t2), Err(Exceeded::Rate));
        // Oversized messages take no token.
        let t3 = t2 + Duration::from_millis(100);
        assert!(g.admit("a", 1000, t3).is_err());
        assert!(g.admit("a", 1, t3).is_ok());
    }

    #[test]
    fn over_ten_seconds_the_average_is_the_rate() {
        let (mut g, t0) = gate(Some(Rate {
            per_second: 50.0,
            burst: 10.0,
        }));
        // 1,000 messages a second for 10 s, in 1 ms steps.
        let passed = (0..10_000)
            .filter(|i| g.admit("a", 1, t0 + Duration::from_millis(*i)).is_ok())
            .count();
        assert!((500..=512).contains(&passed), "{passed}");
    }
}
