//! The pipeline's side of firing alarms ([`crate::firing`]): noting who was sent each
//! firing alarm, acknowledgements from `<prefix>/bridge/ack` and the notices they send,
//! holding back repeats of acknowledged alarms, and picking all of it up again after a
//! restart.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Message, Pipeline};
use crate::ack::Reply;
use crate::firing::{Ack, Acked, Entry, Firing, Noted, Sent};
use crate::message::Decoded;
use crate::notify::Notification;

pub(crate) use crate::notify::alarm::ACKNOWLEDGED;

/// Wall-clock Unix ms that advance with tokio's clock: the wall time at start plus tokio's
/// monotonic time since. Acknowledgement expiry and escalation read it, so tests can
/// pause and advance time, and a wall-clock step does not fire an escalation early.
pub(super) struct Clock {
    wall0: i64,
    t0: tokio::time::Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            wall0: lookout_shared::time::now_ms(),
            t0: tokio::time::Instant::now(),
        }
    }

    pub(super) fn now_ms(&self) -> i64 {
        let since = i64::try_from(self.t0.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall0.saturating_add(since)
    }
}

impl Pipeline<'_> {
    /// Failed writes to the firing alarms' state (a full disk), for the stats.
    pub fn state_errors(&self) -> u64 {
        self.firing.errors()
    }

    /// Takes over the firing alarms a previous run left (`bridge.state_dir`), and starts
    /// repeating those on routes with `repeat_interval` again, as before the restart.
    pub fn restore(&mut self, firing: Firing) {
        self.firing = firing;
        let now = Instant::now();
        let mut armed = Vec::new();
        for (id, e) in self.firing.iter() {
            for s in &e.sent {
                let Some(route) = self.settings.routes.get(s.route) else {
                    continue;
                };
                let (Some(every), Some(t)) = (route.repeat_interval, self.target_index(&s.target))
                else {
                    continue;
                };
                if route.targets.contains(&t)
                    && let Some(n) = self.render_entry(s.route, t, id, e, None)
                {
                    armed.push((s.route, t, id.clone(), every, n));
                }
            }
        }
        for (ri, t, id, every, n) in armed {
            self.repeats.firing(ri, t, &id, every, n, now);
        }
    }

    /// Replies to acknowledgements since the last call, as `(topic, payload)`.
    pub fn take_replies(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.replies)
    }

    /// A firing alarm was routed to `sent` (or was already, for a redelivery).
    pub(super) fn note_firing(&mut self, m: &Message<'_>, sent: &[Sent]) {
        let Some((id, state)) = &m.decoded.alarm else {
            return;
        };
        if state != "firing" || sent.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        if self.firing.firing(id, m.topic, &m.raw_text, sent, now) == Noted::Full {
            self.stats.firing_full.inc();
        }
    }

    /// Drops a resolved alarm from the table; what was known of it.
    pub(super) fn firing_resolved(&mut self, id: &str) -> Option<Entry> {
        self.firing.resolved(id)
    }

    /// False for a repeat whose alarm is acknowledged: it waits for the next interval.
    pub(super) fn acked(&self, n: &Notification) -> bool {
        n.fields
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| self.firing.acked(id, self.clock.now_ms()))
    }

    /// Acknowledgements whose time ran out (repeats resume), and the periodic fsync.
    pub(super) fn ack_timers(&mut self) {
        for id in self.firing.expire(self.clock.now_ms()) {
            self.stats.ack_expired.inc();
            tracing::info!(id, "acknowledgement expired; the alarm is still firing");
        }
        self.firing.sync_if_due();
    }

    /// One request from `<prefix>/bridge/ack`: checked, applied, notified, answered.
    pub(super) async fn acknowledge(&mut self, payload: &[u8]) -> Reply {
        let now = self.clock.now_ms();
        match crate::ack::parse(payload, now) {
            Ok(r) => self.apply_ack(r).await,
            Err(refused) => self.refuse(refused.id, refused.reason),
        }
    }

    /// A press of a chat's "Ack" button ([`crate::ack::ChatAck`]): the alarm named by
    /// its id or its short key, acknowledged by the person who pressed it, until it
    /// resolves. Answered like a request on `<prefix>/bridge/ack`, and published there.
    pub async fn acknowledge_chat(&mut self, press: &crate::ack::ChatPress) -> Reply {
        let id = match &press.alarm {
            crate::ack::Alarm::Id(id) => Some(id.clone()),
            crate::ack::Alarm::Key(k) => self
                .firing
                .iter()
                .map(|(id, _)| id)
                .find(|id| crate::ack::short_key(id) == *k)
                .cloned(),
        };
        let Some(id) = id else {
            return self.refuse(None, "the alarm is no longer firing (or unknown)".into());
        };
        let payload =
            serde_json::json!({"id": id, "by": press.by, "comment": format!("via {}", press.via)});
        self.acknowledge(payload.to_string().as_bytes()).await
    }

    async fn apply_ack(&mut self, request: crate::ack::Request) -> Reply {
        let now = self.clock.now_ms();
        let id = request.id.clone();
        match self.firing.acknowledge(&request, now) {
            Acked::Now(entry) => {
                self.stats.acknowledged.inc();
                let reason = match request.until {
                    Some(u) => format!("acknowledged by {} until {}", request.by, rfc3339(u)),
                    None => format!("acknowledged by {} until it resolves", request.by),
                };
                tracing::info!(id, by = %request.by, until = ?request.until, "alarm acknowledged");
                self.ack_notices(&id, &entry).await;
                self.reply(Some(id), true, reason)
            }
            Acked::Again => self.reply(Some(id), true, "already acknowledged so".into()),
            Acked::AlreadyResolved => {
                self.refuse(Some(id), "the alarm has already resolved".into())
            }
            Acked::Unknown => self.refuse(
                Some(id),
                "unknown alarm id: not firing, or never notified by this bridge".into(),
            ),
        }
    }

    fn refuse(&mut self, id: Option<String>, reason: String) -> Reply {
        self.stats.ack_rejected.inc();
        self.ack_log.hit(|suppressed| {
            let id: Option<String> = id.as_deref().map(|i| i.chars().take(200).collect());
            tracing::warn!(id, reason = %reason, suppressed, "acknowledgement refused");
        });
        self.reply(id, false, reason)
    }

    fn reply(&mut self, id: Option<String>, ok: bool, reason: String) -> Reply {
        let topic = lookout_shared::topics::bridge_ack_reply(&self.settings.prefix);
        let reply = Reply { id, ok, reason };
        self.replies.push((topic, reply.to_json()));
        reply
    }

    /// "acknowledged by ..." to every target that was sent the firing, rendered by the
    /// route that sent it, once per acknowledgement (the dedup key carries it).
    async fn ack_notices(&mut self, id: &str, entry: &Entry) {
        let Some(ack) = &entry.ack else { return };
        let what = format!(
            "{ACKNOWLEDGED}:{}:{:?}:{:?}",
            ack.by, ack.until, ack.comment
        );
        for s in &entry.sent {
            let Some(t) = self.target_index(&s.target) else {
                continue;
            };
            let Some(n) = self.render_entry(s.route, t, id, entry, Some(ack)) else {
                continue;
            };
            let k = crate::dedup::key(&s.target, id, &what);
            if self.log.first(k) {
                self.enqueue(t, n, &[k]).await;
            }
        }
    }

    pub(super) fn target_index(&self, name: &str) -> Option<usize> {
        self.settings.targets.iter().position(|t| t == name)
    }

    /// The alarm of `entry` rendered by route `ri` for target `t`: its firing state, or
    /// with `ack` its acknowledgement notice. `None` when the route is gone (the config
    /// changed since) or the stored payload no longer decodes.
    pub(super) fn render_entry(
        &self,
        ri: usize,
        t: usize,
        id: &str,
        entry: &Entry,
        ack: Option<&Ack>,
    ) -> Option<Notification> {
        let route = self.settings.routes.get(ri)?;
        let mut decoded = crate::message::decode(entry.raw.as_bytes(), usize::MAX)
            .ok()
            .flatten()?;
        let mut raw = entry.raw.clone();
        if let Some(ack) = ack {
            decoded = Decoded {
                fields: notice_fields(decoded.fields, ack),
                alarm: Some((id.to_owned(), ACKNOWLEDGED.into())),
            };
            raw = decoded.fields.to_string();
        }
        let m = Message {
            topic: &entry.topic,
            payload: raw.as_bytes(),
            decoded,
            raw_text: std::borrow::Cow::Borrowed(&raw),
        };
        Some(self.render(route, t, &m))
    }
}

/// The alarm's fields as an acknowledgement notice: `state = "acknowledged"`, `summary`
/// saying who and why, `ack = {by, comment, until, at}` for templates.
fn notice_fields(mut fields: Value, ack: &Ack) -> Value {
    let text = match &ack.comment {
        Some(c) => format!("acknowledged by {}: {c}", ack.by),
        None => format!("acknowledged by {}", ack.by),
    };
    if let Some(o) = fields.as_object_mut() {
        o.insert("state".into(), ACKNOWLEDGED.into());
        o.insert("summary".into(), text.into());
        o.insert(
            "ack".into(),
            json!({"by": ack.by, "comment": ack.comment, "until": ack.until, "at": ack.at}),
        );
    }
    fields
}

/// Unix ms as `2026-12-07T06:00:00Z`, for replies.
fn rfc3339(ms: i64) -> String {
    let c = lookout_shared::time::Civil::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Bench, alarm, message};
    use crate::source::Incoming;

    const TOPIC: &str = "lookout/edge-1/alarms/cpu";

    /// `a` and `b` on one route with repeats, `c` on no route.
    const CONFIG: &str = r#"
        [bridge]
        state_dir = ""
        [targets.a]
        type = "log"
        [targets.b]
        type = "log"
        [targets.c]
        type = "log"
        [[routes]]
        topic = "lookout/+/alarms/#"
        targets = ["a", "b"]
        repeat_interval = "1h"
    "#;

    fn replies(p: &mut super::Pipeline<'_>) -> Vec<serde_json::Value> {
        p.take_replies()
            .into_iter()
            .map(|(topic, body)| {
                assert_eq!(topic, "lookout/bridge/ack/reply");
                serde_json::from_slice(&body).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_acknowledgement_notifies_the_targets_that_had_the_firing_and_stops_repeats() {
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        let firing = alarm("edge-1", "firing");
        p.handle(message(TOPIC, &firing)).await;
        let ack = br#"{"id": "edge-1:cpu:1", "by": "alice", "comment": "on it"}"#;
        p.handle(Incoming::Ack { payload: ack }).await;
        let r = replies(&mut p);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (&r[0]["id"], &r[0]["ok"]),
            (&"edge-1:cpu:1".into(), &true.into())
        );
        assert!(
            r[0]["reason"].as_str().unwrap().contains("by alice"),
            "{r:?}"
        );

        // The same request again (a redelivery) sends nothing more.
        p.handle(Incoming::Ack { payload: ack }).await;
        assert_eq!(replies(&mut p)[0]["ok"], true);
        let repeat = p
            .repeats
            .due(std::time::Instant::now() + std::time::Duration::from_secs(3601));
        assert_eq!(repeat.len(), 2, "both targets have a repeat due");
        assert!(
            repeat.iter().all(|(_, _, n)| p.acked(n)),
            "and both are held back"
        );
        drop(p);

        for t in [0, 1] {
            let q = bench.queued(t);
            assert_eq!(q.len(), 2, "firing, then one notice: {q:?}");
            assert_eq!(q[1].title, "[acknowledged] edge-1: cpu (severity 2)");
            assert_eq!(q[1].fields["state"], "acknowledged");
            assert_eq!(q[1].fields["summary"], "acknowledged by alice: on it");
            assert_eq!(q[1].fields["ack"]["by"], "alice");
        }
        assert!(bench.queued(2).is_empty(), "c never had the firing");
        assert_eq!(bench.stats.acknowledged.get(), 1);
    }

    #[tokio::test]
    async fn bad_unknown_and_resolved_ids_get_a_reply_that_says_why() {
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        p.handle(Incoming::Ack {
            payload: b"{not json",
        })
        .await;
        p.handle(Incoming::Ack {
            payload: br#"{"id": "nope", "by": "bob"}"#,
        })
        .await;
        p.handle(message(TOPIC, &alarm("edge-1", "firing"))).await;
        p.handle(message(TOPIC, &alarm("edge-1", "resolved"))).await;
        p.handle(Incoming::Ack {
            payload: br#"{"id": "edge-1:cpu:1", "by": "bob"}"#,
        })
        .await;
        let r = replies(&mut p);
        let got: Vec<(String, bool, String)> = r
            .iter()
            .map(|r| {
                (
                    r["id"].to_string(),
                    r["ok"].as_bool().unwrap(),
                    r["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(got[0].0, "null");
        assert!(got[0].2.starts_with("bad request"), "{got:?}");
        assert_eq!((got[1].0.as_str(), got[1].1), ("\"nope\"", false));
        assert!(got[1].2.starts_with("unknown alarm id"), "{got:?}");
        assert_eq!((got[2].0.as_str(), got[2].1), ("\"edge-1:cpu:1\"", false));
        assert!(got[2].2.contains("already resolved"), "{got:?}");
        assert_eq!(bench.stats.ack_rejected.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_resume_when_the_acknowledgement_runs_out_while_still_firing() {
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        p.handle(message(TOPIC, &alarm("edge-1", "firing"))).await;
        p.handle(Incoming::Ack {
            payload: br#"{"id": "edge-1:cpu:1", "by": "alice", "until": "30m"}"#,
        })
        .await;
        let due = p
            .repeats
            .due(std::time::Instant::now() + std::time::Duration::from_secs(3601));
        assert!(due.iter().all(|(_, _, n)| p.acked(n)));
        tokio::time::advance(std::time::Duration::from_secs(1801)).await;
        p.ack_timers();
        assert!(
            due.iter().all(|(_, _, n)| !p.acked(n)),
            "repeats go out again"
        );
        assert_eq!(bench.stats.ack_expired.get(), 1);
        assert!(p.firing.get("edge-1:cpu:1").unwrap().ack.is_none());
    }
}
