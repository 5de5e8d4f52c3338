//! The pipeline's side of escalation ([`crate::escalate`]): on every timer tick, the
//! steps that have fallen due for alarms still firing and not acknowledged go to their
//! targets; when such an alarm resolves, the targets it was escalated to hear it too.
//!
//! Exactly once across restarts: each step's notifications carry a dedup key
//! `(target, id, "escalate:<route>:<step>")` that the notification log writes with them,
//! and the step is then marked sent in the firing alarms' table. A crash between the two
//! leaves the step unmarked but its keys known: the step is marked, not sent again.

use super::{Message, Pipeline};
use crate::firing::{Entry, Sent};

impl Pipeline<'_> {
    /// Sends the escalation steps that are due.
    pub(super) async fn escalations(&mut self) {
        let settings = self.settings;
        if settings.routes.iter().all(|r| r.escalate.is_empty()) {
            return;
        }
        let now = self.clock.now_ms();
        let mut due = Vec::new();
        for (id, e) in self.firing.iter() {
            if e.acked(now) {
                continue;
            }
            let mut routes: Vec<usize> = e.sent.iter().map(|s| s.route).collect();
            routes.sort_unstable();
            routes.dedup();
            for ri in routes {
                let Some(route) = settings.routes.get(ri) else {
                    continue;
                };
                for (si, step) in route.escalate.iter().enumerate() {
                    if !e.steps.contains(&(ri, si)) && step.due(e.first_ms, now) {
                        due.push((id.clone(), ri, si));
                    }
                }
            }
        }
        for (id, ri, si) in due {
            self.escalate(&id, ri, si).await;
        }
    }

    /// Step `si` of route `ri` for alarm `id`: the firing, rendered by the route, to each
    /// of the step's targets.
    async fn escalate(&mut self, id: &str, ri: usize, si: usize) {
        let settings = self.settings;
        let Some(entry) = self.firing.get(id).cloned() else {
            return;
        };
        let step = &settings.routes[ri].escalate[si];
        let mut sent = Vec::new();
        for &t in &step.targets {
            let target = &settings.targets[t];
            let k = crate::dedup::key(target, id, &format!("escalate:{ri}:{si}"));
            sent.push(Sent {
                route: ri,
                target: target.clone(),
            });
            if !self.log.first(k) {
                continue; // sent before a crash that came before the step was marked
            }
            if let Some(n) = self.render_entry(ri, t, id, &entry, None) {
                self.enqueue(t, n, &[k]).await;
            }
        }
        self.stats.escalated.inc();
        tracing::info!(id, route = ri, step = si, targets = ?step.targets.iter().map(|&t| &settings.targets[t]).collect::<Vec<_>>(), "alarm escalated");
        self.firing.step_sent(id, (ri, si), &sent);
    }

    /// The alarm of `entry` resolved: the targets it was escalated to (not on the route
    /// that sends the resolution anyway) hear it, once, when the route sends resolutions.
    pub(super) async fn resolve_escalated(&mut self, m: &Message<'_>, entry: Entry) {
        let settings = self.settings;
        let Some((id, _)) = &m.decoded.alarm else {
            return;
        };
        for s in &entry.sent {
            let (Some(route), Some(t)) =
                (settings.routes.get(s.route), self.target_index(&s.target))
            else {
                continue;
            };
            if route.targets.contains(&t) || !route.send_resolved {
                continue;
            }
            let k = crate::dedup::key(&s.target, id, "resolved");
            if self.log.first(k) {
                let n = self.render(route, t, m);
                self.enqueue(t, n, &[k]).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{Bench, alarm, message};
    use crate::firing::Firing;
    use crate::source::Incoming;

    const TOPIC: &str = "lookout/edge-1/alarms/cpu";
    const MIN: Duration = Duration::from_secs(60);

    /// `chat` on the route; `mail` after 15 minutes, `pager` after an hour.
    const CONFIG: &str = r#"
        [bridge]
        state_dir = ""
        [targets.chat]
        type = "log"
        [targets.mail]
        type = "log"
        [targets.pager]
        type = "log"
        [[routes]]
        topic = "lookout/+/alarms/#"
        targets = ["chat"]
        escalate = [{after = "15m", targets = ["mail"]}, {after = "1h", targets = ["pager", "mail"]}]
    "#;
    const CHAT: usize = 0;
    const MAIL: usize = 1;
    const PAGER: usize = 2;

    fn states(bench: &Bench, t: usize) -> Vec<String> {
        bench
            .queued(t)
            .iter()
            .map(|n| n.fields["state"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_firing_alarm_reaches_each_step_once_after_its_time_and_its_resolution_too() {
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        p.handle(message(TOPIC, &alarm("edge-1", "firing"))).await;
        tokio::time::advance(14 * MIN).await;
        p.timers().await;
        assert!(p.firing.get("edge-1:cpu:1").unwrap().steps.is_empty());
        tokio::time::advance(2 * MIN).await;
        p.timers().await;
        p.timers().await;
        tokio::time::advance(45 * MIN).await;
        p.timers().await;
        p.timers().await;
        p.handle(message(TOPIC, &alarm("edge-1", "resolved"))).await;
        drop(p);
        assert_eq!(states(&bench, CHAT), ["firing", "resolved"]);
        assert_eq!(
            states(&bench, MAIL),
            ["firing", "firing", "resolved"],
            "each step once, one resolution"
        );
        assert_eq!(states(&bench, PAGER), ["firing", "resolved"]);
        assert_eq!(bench.stats.escalated.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_escalation_for_an_alarm_acknowledged_or_resolved_before_its_time() {
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        p.handle(message(TOPIC, &alarm("edge-1", "firing"))).await;
        p.handle(message(
            "lookout/edge-2/alarms/cpu",
            &alarm("edge-2", "firing"),
        ))
        .await;
        tokio::time::advance(10 * MIN).await;
        p.handle(Incoming::Ack {
            payload: br#"{"id": "edge-1:cpu:1", "by": "alice"}"#,
        })
        .await;
        p.handle(message(
            "lookout/edge-2/alarms/cpu",
            &alarm("edge-2", "resolved"),
        ))
        .await;
        tokio::time::advance(120 * MIN).await;
        p.timers().await;
        drop(p);
        assert!(bench.queued(MAIL).is_empty() && bench.queued(PAGER).is_empty());
        assert_eq!(bench.stats.escalated.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_neither_repeats_a_step_sent_nor_loses_one_that_fell_due_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Firing::open(dir.path(), 100, Duration::ZERO).unwrap().0;
        let bench = Bench::with(CONFIG);
        let mut p = bench.pipeline();
        p.restore(open());
        p.handle(message(TOPIC, &alarm("edge-1", "firing"))).await;
        tokio::time::advance(16 * MIN).await;
        p.timers().await;
        drop(p);
        assert_eq!(states(&bench, MAIL), ["firing"]);

        // The next run: the first step is not sent again; the second, due while the
        // bridge was away, goes out.
        let mut p = bench.pipeline();
        p.restore(open());
        p.timers().await;
        assert!(p.firing.get("edge-1:cpu:1").unwrap().steps == [(0, 0)]);
        tokio::time::advance(61 * MIN).await;
        p.timers().await;
        drop(p);
        assert_eq!(states(&bench, MAIL), ["firing"]);
        assert_eq!(states(&bench, PAGER), ["firing"]);

        // A step whose notifications went out but was not marked (a crash in between) is
        // marked from the notification log's keys, not sent again.
        let mut p = bench.pipeline();
        let f = open();
        assert_eq!(f.get("edge-1:cpu:1").unwrap().steps, [(0, 0), (0, 1)]);
        p.restore(f);
        p.firing
            .entries_mut_for_test("edge-1:cpu:1")
            .steps
            .retain(|s| *s != (0, 1));
        tokio::time::advance(61 * MIN).await;
        p.timers().await;
        assert!(
            p.firing
                .get("edge-1:cpu:1")
                .unwrap()
                .steps
                .contains(&(0, 1))
        );
        drop(p);
        assert!(bench.queued(PAGER).is_empty(), "not sent twice");
        assert!(bench.queued(MAIL).is_empty(), "not sent twice");
    }

    #[test]
    fn unknown_escalation_targets_are_config_errors_naming_the_key() {
        let text = CONFIG.replace(r#"targets = ["pager", "mail"]"#, r#"targets = ["sms"]"#);
        let err = crate::config::resolve(
            &lookout_shared::config::Source::builtin("test.toml", &text),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("routes[0].escalate[1].targets: no target named \"sms\""),
            "{err}"
        );
    }
}
