//! What the link does with scores and metrics while its broker is away: kept in a
//! [`Ring`] on disk, sent again oldest first, at a bounded rate, once it is back.
//!
//! While the ring holds anything not yet handed out, new scores and metrics go behind it
//! rather than straight out, so each topic's messages reach the broker in order (a
//! subscriber sees that order within each QoS only: MQTT promises no more, and the
//! broker may hand it a live QoS 0 message before replayed ones still queued for it).
//! Replayed records go out with QoS 1 (the link learns which arrived); the ring is told
//! what arrived at most every [`ACK_EVERY`], because it syncs its cursor each time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ring::{Entry, Ring, RingStats};

/// Replayed records on the wire at most.
pub const WINDOW: usize = 64;

/// Records read from the ring at once, ahead of sending them: a peek opens and reads a
/// file, so it is done once per batch, not once per message.
const READ_AHEAD: usize = 256;

/// Acknowledgements reach the ring (each an fsync of its cursor) at most this often, or
/// every [`READ_AHEAD`] records.
const ACK_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Buffer {
    ring: Ring,
    rate: f64,
    budget: f64,
    refilled: Instant,
    /// Read from the ring, not sent yet, oldest first.
    ahead: VecDeque<Entry>,
    /// Handed out on this connection, oldest first, and whether each arrived.
    in_flight: VecDeque<(u64, bool)>,
    /// The newest id handed out (or read ahead).
    sent: u64,
    /// Arrived through this id, and how many since the ring was last told.
    acked: Option<u64>,
    unflushed: usize,
    flushed: Instant,
}

impl Buffer {
    pub fn new(ring: Ring, replay_rate: u32) -> Self {
        let now = Instant::now();
        Self {
            ring,
            rate: f64::from(replay_rate.max(1)),
            budget: 0.0,
            refilled: now,
            ahead: VecDeque::new(),
            in_flight: VecDeque::new(),
            sent: 0,
            acked: None,
            unflushed: 0,
            flushed: now,
        }
    }

    /// Everything kept has been handed out: new messages may go straight out. (What is
    /// still on the wire is sent again after a reconnect, and may then arrive after newer
    /// messages: the price of leaving the slow path as soon as the backlog is out.)
    pub fn idle(&self) -> bool {
        self.ahead.is_empty() && (self.ring.is_empty() || self.ring.newest_id() <= self.sent)
    }

    pub fn keep(&mut self, topic: &str, payload: &[u8], at_ms: i64) {
        self.ring.push(topic, payload, at_ms);
    }

    /// The next records to send now, within the window and the rate; each counts as on
    /// the wire until [`Buffer::arrived`] or [`Buffer::reconnected`].
    pub fn next(&mut self, now: Instant) -> Vec<Entry> {
        if self.unflushed > 0 && now.duration_since(self.flushed) >= ACK_EVERY {
            self.flush(now);
        }
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.budget = (self.budget + self.rate * dt).min(self.rate.max(WINDOW as f64));
        let room = WINDOW
            .saturating_sub(self.in_flight.len())
            .min(self.budget as usize);
        if room == 0 {
            return Vec::new();
        }
        if self.ahead.is_empty() {
            let after = self.sent;
            let skip = self.in_flight.len() + self.unflushed;
            self.ahead = self
                .ring
                .peek(skip + READ_AHEAD)
                .into_iter()
                .filter(|e| e.id > after)
                .collect();
        }
        let n = room.min(self.ahead.len());
        let batch: Vec<Entry> = self.ahead.drain(..n).collect();
        for e in &batch {
            self.in_flight.push_back((e.id, false));
            self.sent = e.id;
        }
        self.budget -= batch.len() as f64;
        batch
    }

    /// Record `id` and those after it in the last batch could not be handed over: they
    /// are read again next time.
    pub fn unsend(&mut self, id: u64) {
        while self.in_flight.back().is_some_and(|(i, _)| *i >= id) {
            self.in_flight.pop_back();
        }
        self.ahead.clear();
        self.sent = self
            .in_flight
            .back()
            .map_or(self.acked.unwrap_or(0), |(i, _)| *i);
    }

    /// The broker acknowledged record `id`; the ring forgets everything up to the oldest
    /// record still on the wire.
    pub fn arrived(&mut self, id: u64, now: Instant) {
        if let Some(e) = self.in_flight.iter_mut().find(|(i, _)| *i == id) {
            e.1 = true;
        }
        while let Some(&(i, true)) = self.in_flight.front() {
            self.acked = Some(i);
            self.unflushed += 1;
            self.in_flight.pop_front();
        }
        if now.duration_since(self.flushed) >= ACK_EVERY || self.unflushed >= READ_AHEAD {
            self.flush(now);
        }
    }

    pub fn flush(&mut self, now: Instant) {
        if let Some(t) = self.acked {
            self.ring.ack(t);
        }
        self.unflushed = 0;
        self.flushed = now;
    }

    /// A new connection: nothing is on the wire any more; what was not acknowledged goes
    /// out again, oldest first.
    pub fn reconnected(&mut self, now: Instant) {
        self.flush(now);
        self.ahead.clear();
        self.in_flight.clear();
        self.sent = 0;
    }

    pub fn stats(&self) -> RingStats {
        self.ring.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ring::RingSettings;

    fn buffer(dir: &std::path::Path, rate: u32) -> Buffer {
        let ring = Ring::open(RingSettings::new(
            dir.to_owned(),
            1 << 20,
            Duration::from_secs(3600),
        ))
        .unwrap();
        Buffer::new(ring, rate)
    }

    #[test]
    fn kept_messages_go_out_in_order_at_the_rate_and_again_after_a_reconnect() {
        let d = tempfile::tempdir().unwrap();
        let mut b = buffer(d.path(), 10);
        for i in 0..30 {
            b.keep("t", format!("{i}").as_bytes(), i * 1000);
        }
        assert!(!b.idle());
        let t0 = Instant::now();
        assert!(b.next(t0).is_empty(), "no budget yet");
        let first = b.next(t0 + Duration::from_millis(500));
        assert_eq!(first.len(), 5, "10 a second for half a second");
        assert_eq!(first[0].payload, b"0");
        b.arrived(first[0].id, t0 + Duration::from_millis(600));
        // The connection drops before the rest arrived: they go out again.
        b.reconnected(t0 + Duration::from_millis(700));
        let again = b.next(t0 + Duration::from_secs(2));
        assert_eq!(again[0].payload, b"1");
        for e in &again {
            b.arrived(e.id, t0 + Duration::from_secs(2));
        }
        let mut rest = Vec::new();
        for s in 3..10 {
            for e in b.next(t0 + Duration::from_secs(s)) {
                b.arrived(e.id, t0 + Duration::from_secs(s));
                rest.push(e.payload);
            }
        }
        assert_eq!(rest.last().map(Vec::as_slice), Some(&b"29"[..]));
        b.next(t0 + Duration::from_secs(11));
        assert_eq!(b.stats().records, 0, "the ring is told in the end");
        assert!(b.idle(), "everything handed out and arrived");
        b.keep("t", b"30", 30_000);
        assert!(!b.idle());
    }

    #[test]
    fn a_record_that_could_not_be_handed_over_goes_out_next_time() {
        let d = tempfile::tempdir().unwrap();
        let mut b = buffer(d.path(), 100);
        b.keep("t", b"a", 0);
        b.keep("t", b"b", 1000);
        let t0 = Instant::now() + Duration::from_secs(1);
        let batch = b.next(t0);
        assert_eq!(batch.len(), 2);
        assert!(b.idle(), "all handed out");
        b.unsend(batch[1].id);
        assert!(!b.idle());
        b.arrived(batch[0].id, t0);
        let again = b.next(t0 + Duration::from_secs(1));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload, b"b");
    }
}
