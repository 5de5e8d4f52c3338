//! Fallback targets: `fallback = "email"` and `fallback_after = "10m"` in a
//! `[targets.NAME]` table. When every delivery attempt to a target has failed for longer
//! than `fallback_after`, its worker hands what it holds and what comes next to the
//! fallback target's queue, marked "via fallback, <target> failing since <time>", instead
//! of retrying and dead-lettering it; meanwhile it tries each notification once, and the
//! first that goes through ends the outage.
//!
//! The two keys sit in the target's table beside the plugin's own keys, so they are taken
//! out of the document before the plugins' strict parsing sees it ([`take_keys`]).
//! A hand-over is one record in the notification log (the fallback's notification, naming
//! the one it replaces), so a crash never leaves both or neither queued. The outage's
//! start is kept in `<state_dir>/outage-<target>.v1` while it lasts, so a restart in the
//! middle of an outage does not start its clock again ([`Handover::durable`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::deliver::Queued;
use crate::notify::Notification;

/// `fallback_after` when a target names a fallback without it.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(600);

/// A target's fallback, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Index of the fallback target.
    pub target: usize,
    pub after: Duration,
}

/// `fallback`/`fallback_after` as written, by target name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    pub target: Option<String>,
    pub after: Option<Duration>,
}

/// Takes `fallback` and `fallback_after` out of every `[targets.NAME]` table of `doc`.
/// An error is `(dotted key, message)`.
pub fn take_keys(doc: &mut toml::Table) -> Result<BTreeMap<String, Raw>, (String, String)> {
    let mut out = BTreeMap::new();
    let Some(toml::Value::Table(targets)) = doc.get_mut("targets") else {
        return Ok(out);
    };
    for (name, table) in targets.iter_mut() {
        let Some(table) = table.as_table_mut() else {
            continue;
        };
        let key = |k: &str| format!("targets.{name}.{k}");
        let target = match table.remove("fallback") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => return Err((key("fallback"), "must be a target's name".into())),
        };
        let after = match table.remove("fallback_after") {
            None => None,
            Some(toml::Value::String(s)) => Some(
                s.parse::<lookout_shared::duration::HumanDuration>()
                    .map_err(|m| (key("fallback_after"), m))?
                    .0,
            ),
            Some(_) => {
                return Err((
                    key("fallback_after"),
                    "must be a duration like \"10m\"".into(),
                ));
            }
        };
        if target.is_some() || after.is_some() {
            out.insert(name.clone(), Raw { target, after });
        }
    }
    Ok(out)
}

/// Each target's fallback, in target index order; unknown names, `fallback_after` without
/// `fallback`, and cycles (a → b → a) are errors `(dotted key, message)`.
pub fn resolve(
    raw: &BTreeMap<String, Raw>,
    names: &[String],
) -> Result<Vec<Option<Fallback>>, (String, String)> {
    let mut out = vec![None; names.len()];
    for (name, r) in raw {
        let key = |k: &str| format!("targets.{name}.{k}");
        let Some(to) = &r.target else {
            return Err((key("fallback_after"), "needs fallback".into()));
        };
        let Some(target) = names.iter().position(|n| n == to) else {
            return Err((
                key("fallback"),
                format!("no target named {to:?}; define [targets.{to}]"),
            ));
        };
        if let Some(i) = names.iter().position(|n| n == name) {
            out[i] = Some(Fallback {
                target,
                after: r.after.unwrap_or(DEFAULT_AFTER),
            });
        }
    }
    for start in 0..names.len() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(f) = &out[at] {
            at = f.target;
            if path.contains(&at) {
                path.push(at);
                let chain: Vec<&str> = path.iter().map(|&i| names[i].as_str()).collect();
                return Err((
                    format!("targets.{}.fallback", names[start]),
                    format!("fallbacks form a cycle: {}", chain.join(" → ")),
                ));
            }
            path.push(at);
        }
    }
    Ok(out)
}

/// A target's worker's view of its fallback: the outage clock and where to hand over.
pub struct Handover {
    /// The fallback target's index and name.
    pub target: usize,
    pub name: String,
    pub after: Duration,
    pub queue: mpsc::Sender<Queued>,
    /// Since when every attempt failed: tokio time (for the threshold) and Unix ms (for
    /// the mark).
    failing_since: Option<(Instant, i64)>,
    /// Where the outage's start is kept while it lasts; `None` keeps it in memory only.
    file: Option<PathBuf>,
}

impl Handover {
    pub fn new(target: usize, name: String, after: Duration, queue: mpsc::Sender<Queued>) -> Self {
        Self {
            target,
            name,
            after,
            queue,
            failing_since: None,
            file: None,
        }
    }

    /// Keeps the outage of target `from` in `state_dir` across restarts, and takes back
    /// one a previous run left: its clock goes on from when it started, by the wall
    /// clock (a start in the future, after the clock was set back, counts from now).
    pub fn durable(mut self, state_dir: &Path, from: &str) -> Self {
        let file = state_dir.join(format!("outage-{}.v1", escape(from)));
        let saved = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        if let Some(since_ms) = saved {
            let ago = (lookout_shared::time::now_ms() - since_ms).max(0);
            let now = Instant::now();
            let start = now
                .checked_sub(Duration::from_millis(ago as u64))
                .unwrap_or(now);
            tracing::info!(
                target_name = from,
                failing_since = since_ms,
                "an outage goes on from the last run"
            );
            self.failing_since = Some((start, since_ms.min(lookout_shared::time::now_ms())));
        }
        self.file = Some(file);
        self
    }

    /// An attempt failed: the outage starts now unless it has already.
    pub fn failed(&mut self) {
        if self.failing_since.is_some() {
            return;
        }
        let since_ms = lookout_shared::time::now_ms();
        self.failing_since = Some((Instant::now(), since_ms));
        if let Some(file) = &self.file
            && let Err(e) = write_atomically(file, since_ms.to_string().as_bytes())
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot keep the outage's start; a restart would start its clock again");
        }
    }

    /// An attempt went through: the outage is over. True when there was one.
    pub fn delivered(&mut self) -> bool {
        let was = self.failing_since.take().is_some();
        if was && let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
        was
    }

    /// Failing for longer than `after`: hand notifications over.
    pub fn active(&self) -> bool {
        self.failing_since
            .is_some_and(|(t, _)| t.elapsed() >= self.after)
    }

    /// `n` for the fallback target, marked: its title says so, its fields carry
    /// `via_fallback = {target, failing_since}`, and a body that was the fields' JSON (the
    /// default) is written again with the mark.
    pub fn mark(&self, n: Notification, from: &str) -> Notification {
        let since = self.failing_since.map_or(0, |(_, ms)| ms);
        let default_body = serde_json::to_string(&n.fields).ok().as_deref() == Some(&n.body);
        let mut fields = n.fields;
        if let Value::Object(o) = &mut fields {
            o.insert(
                "via_fallback".into(),
                json!({"target": from, "failing_since": since}),
            );
        }
        let body = if default_body {
            fields.to_string()
        } else {
            n.body
        };
        Notification {
            target: self.name.clone(),
            title: format!(
                "{} (via fallback, {from} failing since {})",
                n.title,
                utc(since)
            ),
            body,
            fields,
            ..n
        }
    }
}

/// A target's name as a file name: ASCII letters, digits, `-` and `_` as they are, any
/// other byte as `%XX`.
fn escape(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn utc(ms: i64) -> String {
    let c = lookout_shared::time::Civil::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn doc(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_keys_are_taken_out_of_the_target_tables_and_resolved() {
        let mut d = doc(
            "[targets.chat]\ntype = \"log\"\nfallback = \"mail\"\nfallback_after = \"2m\"\n\
             [targets.mail]\ntype = \"log\"\nfallback = \"file\"\n[targets.file]\ntype = \"log\"\n",
        );
        let raw = take_keys(&mut d).unwrap();
        assert_eq!(
            d["targets"]["chat"]
                .as_table()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["type"]
        );
        let f = resolve(&raw, &names(&["chat", "file", "mail"])).unwrap();
        assert_eq!(
            f,
            [
                Some(Fallback {
                    target: 2,
                    after: Duration::from_secs(120)
                }),
                None,
                Some(Fallback {
                    target: 1,
                    after: DEFAULT_AFTER
                }),
            ]
        );
    }

    #[test]
    fn unknown_names_cycles_and_bad_values_are_errors_naming_the_key() {
        let err = |text: &str, n: &[&str]| {
            let mut d = doc(text);
            take_keys(&mut d)
                .and_then(|raw| resolve(&raw, &names(n)))
                .unwrap_err()
        };
        let e = err("[targets.a]\nfallback = \"zz\"\n", &["a"]);
        assert_eq!(e.0, "targets.a.fallback");
        assert!(e.1.contains("no target named \"zz\""), "{e:?}");
        let e = err(
            "[targets.a]\nfallback = \"b\"\n[targets.b]\nfallback = \"c\"\n[targets.c]\nfallback = \"a\"\n",
            &["a", "b", "c"],
        );
        assert_eq!(e.0, "targets.a.fallback");
        assert!(e.1.contains("a → b → c → a"), "{e:?}");
        let e = err("[targets.a]\nfallback = \"a\"\n", &["a"]);
        assert!(e.1.contains("cycle"), "{e:?}");
        let e = err("[targets.a]\nfallback_after = \"1m\"\n", &["a"]);
        assert_eq!(
            e,
            ("targets.a.fallback_after".into(), "needs fallback".into())
        );
        let e = err(
            "[targets.a]\nfallback = \"a\"\nfallback_after = \"soon\"\n",
            &["a"],
        );
        assert_eq!(e.0, "targets.a.fallback_after");
        let e = err("[targets.a]\nfallback = 3\n", &["a"]);
        assert_eq!(e.0, "targets.a.fallback");
    }

    /// `chat` always fails; `mail` takes nothing until `release` (or records what it gets).
    struct Failing;
    impl crate::notify::Notifier for Failing {
        fn kind(&self) -> &'static str {
            "failing"
        }
        fn send<'a>(&'a self, _: &'a Notification) -> crate::notify::SendFuture<'a> {
            Box::pin(async { Err(crate::notify::SendError::Retry("HTTP 500".into())) })
        }
    }
    struct Stuck(std::sync::Arc<std::sync::Mutex<Vec<Notification>>>);
    impl crate::notify::Notifier for Stuck {
        fn kind(&self) -> &'static str {
            "stuck"
        }
        fn send<'a>(&'a self, n: &'a Notification) -> crate::notify::SendFuture<'a> {
            Box::pin(async move {
                self.0.lock().unwrap().push(n.clone());
                std::future::pending::<()>().await;
                Ok(())
            })
        }
    }

    #[test]
    fn a_crash_after_a_hand_over_leaves_the_notification_queued_once_for_the_fallback() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["chat".to_string(), "mail".to_string()];
        let delivery = crate::config::DeliverySettings {
            queue: 8,
            retries: 1000,
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(10),
            timeout: Duration::from_secs(3600),
            dead_letter: dir.path().join("dead.jsonl"),
        };
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (log, _, _) =
                crate::dedup::NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
            let log = Arc::new(log);
            let mut stats = crate::stats::Stats::default();
            for _ in &names {
                stats.targets.push(Default::default());
            }
            let stats = Arc::new(stats);
            let fallbacks = [
                Some(Fallback {
                    target: 1,
                    after: Duration::from_millis(50),
                }),
                None,
            ];
            let notifiers: Vec<Box<dyn crate::notify::Notifier>> =
                vec![Box::new(Failing), Box::new(Stuck(Arc::clone(&got)))];
            let (queues, _workers) =
                crate::deliver::start(&names, notifiers, &delivery, &stats, &log, &fallbacks, None);
            let n = crate::notify::test_support::alarm();
            let n = Notification {
                target: "chat".into(),
                ..n
            };
            let seq = log.queued(&[], &n);
            queues[0].send(Queued { seq, n }).await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while got.lock().unwrap().is_empty() {
                assert!(std::time::Instant::now() < deadline, "never handed over");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(stats.targets[0].fallback.get(), 1);
            assert_eq!(stats.targets[0].dead_lettered.get(), 0);
            assert_eq!(log.pending(), 1, "the hand-over replaced it");
        });
        // The "crash": the runtime and its workers go, mid-delivery to the fallback.
        drop(rt);
        let handed = got.lock().unwrap()[0].clone();
        assert_eq!(handed.target, "mail");
        assert!(
            handed.title.contains("(via fallback, chat failing since "),
            "{}",
            handed.title
        );
        let (_, recovered, _) =
            crate::dedup::NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!(recovered.len(), 1, "once, not lost and not twice");
        assert_eq!(recovered[0].n, handed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_goes_on_across_a_restart_and_its_file_goes_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let new = || {
            let (tx, _rx) = mpsc::channel(1);
            Handover::new(1, "mail".into(), Duration::from_secs(600), tx)
                .durable(dir.path(), "chat room")
        };
        let mut first = new();
        first.failed();
        let file = dir.path().join("outage-chat%20room.v1");
        let since: i64 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        drop(first);
        // The last run's outage began nine minutes ago by the wall clock.
        std::fs::write(&file, (since - 540_000).to_string()).unwrap();
        let mut second = new();
        assert!(!second.active(), "nine minutes of ten");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(second.active(), "the clock went on from the last run");
        assert!(second.delivered());
        assert!(!file.exists(), "over: nothing left for the next run");
        assert!(!new().active(), "and the next run starts without an outage");
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_starts_at_the_first_failure_and_ends_at_the_first_delivery() {
        let (tx, _rx) = mpsc::channel(1);
        let mut h = Handover::new(1, "mail".into(), Duration::from_secs(600), tx);
        assert!(!h.active());
        h.failed();
        tokio::time::advance(Duration::from_secs(300)).await;
        h.failed(); // does not move the start
        assert!(!h.active());
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(h.active());
        let n = Notification {
            target: "chat".into(),
            topic: "t".into(),
            title: "[firing] h: cpu".into(),
            body: r#"{"id":"a"}"#.into(),
            fields: json!({"id": "a"}),
            raw: vec![],
        };
        let m = h.mark(n, "chat");
        assert_eq!(m.target, "mail");
        assert!(
            m.title
                .starts_with("[firing] h: cpu (via fallback, chat failing since "),
            "{}",
            m.title
        );
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body["via_fallback"]["target"], "chat");
        assert!(h.delivered());
        assert!(!h.active() && !h.delivered());
    }
}
