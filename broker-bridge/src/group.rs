//! Grouping, as Alertmanager does it: a route with `group_by` collects the notifications
//! whose fields agree on those labels into one, sent `group_wait` after the first of
//! them arrived, and later ones of the same group at most every `group_interval`. Twenty
//! hosts failing at once become one message per group instead of twenty.
//!
//! Bounded: at most `max_groups` open groups and `MAX_MEMBERS` notifications per batch;
//! what does not fit is counted, never buffered without limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::dedup::Key;
use crate::expr::lookup;
use crate::notify::Notification;

pub const MAX_MEMBERS: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    pub by: Vec<Vec<String>>,
    pub wait: Duration,
    pub interval: Duration,
}

#[derive(Debug)]
struct Group {
    target: usize,
    key: Map<String, Value>,
    members: Vec<Notification>,
    /// The members' dedup keys, written to the notification log with the batch (not
    /// before: a batch still waiting is in memory only).
    keys: Vec<Key>,
    /// When the pending batch goes out.
    due: Option<Instant>,
    /// When the last batch went out, for `group_interval`.
    last_sent: Option<Instant>,
    interval: Duration,
}

#[derive(Debug)]
pub struct Groups {
    open: HashMap<(usize, usize, String), Group>,
    max_groups: usize,
}

/// What happened to a notification offered to a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    Buffered,
    /// Too many groups or members: not buffered (the caller counts it).
    Full,
}

impl Groups {
    pub fn new(max_groups: usize) -> Self {
        Self {
            open: HashMap::new(),
            max_groups: max_groups.max(1),
        }
    }

    pub fn add(
        &mut self,
        route: usize,
        target: usize,
        spec: &GroupSpec,
        n: Notification,
        dedup_keys: impl IntoIterator<Item = Key>,
        now: Instant,
    ) -> Added {
        let mut key = Map::new();
        for path in &spec.by {
            let v = lookup(&n.fields, path).cloned().unwrap_or(Value::Null);
            key.insert(path.join("."), v);
        }
        let key_text = Value::Object(key.clone()).to_string();
        let id = (route, target, key_text);
        if !self.open.contains_key(&id) && self.open.len() >= self.max_groups {
            return Added::Full;
        }
        let g = self.open.entry(id).or_insert_with(|| Group {
            target,
            key,
            members: Vec::new(),
            keys: Vec::new(),
            due: None,
            last_sent: None,
            interval: spec.interval,
        });
        if g.members.len() >= MAX_MEMBERS {
            return Added::Full;
        }
        g.members.push(n);
        g.keys.extend(dedup_keys);
        if g.due.is_none() {
            g.due = Some(match g.last_sent {
                None => now + spec.wait,
                Some(last) => (last + g.interval).max(now),
            });
        }
        Added::Buffered
    }

    /// Batches due now, as one notification per group, with their targets and their
    /// members' dedup keys. Groups with nothing pending and nothing sent for a while are
    /// closed.
    pub fn due(&mut self, now: Instant) -> Vec<(usize, Notification, Vec<Key>)> {
        let mut out = Vec::new();
        for g in self.open.values_mut() {
            if g.due.is_some_and(|d| d <= now) && !g.members.is_empty() {
                out.push((
                    g.target,
                    merge(&g.key, std::mem::take(&mut g.members)),
                    std::mem::take(&mut g.keys),
                ));
                g.due = None;
                g.last_sent = Some(now);
            }
        }
        self.open.retain(|_, g| {
            !g.members.is_empty()
                || g.last_sent
                    .is_some_and(|t| now.duration_since(t) < g.interval)
        });
        out
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// One notification for a batch: the title names the group and the count, the body has
/// one line per member, `fields` holds `{group, count, alerts: [fields...]}`.
fn merge(key: &Map<String, Value>, members: Vec<Notification>) -> Notification {
    let first = &members[0];
    let label: Vec<String> = key
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    let title = if members.len() == 1 {
        first.title.clone()
    } else {
        format!("{} notifications for {}", members.len(), label.join(", "))
    };
    let body = members
        .iter()
        .map(|m| m.body.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let fields = serde_json::json!({
        "group": Value::Object(key.clone()),
        "count": members.len(),
        "alerts": members.iter().map(|m| m.fields.clone()).collect::<Vec<_>>(),
    });
    Notification {
        target: first.target.clone(),
        topic: first.topic.clone(),
        title,
        body,
        fields,
        raw: first.raw.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(host: &str, id: &str) -> Notification {
        Notification {
            target: "t".into(),
            topic: format!("lookout/{host}/alarms/cpu"),
            title: format!("{id} firing"),
            body: format!("{{\"id\":\"{id}\"}}"),
            fields: json!({"host": host, "id": id, "labels": {"site": "s1"}}),
            raw: vec![],
        }
    }

    fn spec(wait: u64, interval: u64) -> GroupSpec {
        GroupSpec {
            by: vec![vec!["labels".into(), "site".into()]],
            wait: Duration::from_secs(wait),
            interval: Duration::from_secs(interval),
        }
    }

    #[test]
    fn a_burst_becomes_one_notification_after_group_wait() {
        let t0 = Instant::now();
        let mut g = Groups::new(10);
        for (h, id) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(
                g.add(0, 0, &spec(5, 60), n(h, id), Some(7), t0),
                Added::Buffered
            );
        }
        assert!(g.due(t0 + Duration::from_secs(4)).is_empty());
        let out = g.due(t0 + Duration::from_secs(5));
        assert_eq!(out.len(), 1);
        let (_, m, keys) = &out[0];
        assert_eq!(keys, &vec![7, 7, 7]);
        assert_eq!(m.title, "3 notifications for labels.site=s1");
        assert_eq!(m.body.lines().count(), 3);
        assert_eq!(m.fields["count"], 3);
        assert_eq!(m.fields["group"]["labels.site"], "s1");
    }

    #[test]
    fn later_members_wait_for_group_interval() {
        let t0 = Instant::now();
        let mut g = Groups::new(10);
        g.add(0, 0, &spec(1, 60), n("a", "1"), None, t0);
        assert_eq!(g.due(t0 + Duration::from_secs(1)).len(), 1);
        g.add(
            0,
            0,
            &spec(1, 60),
            n("b", "2"),
            None,
            t0 + Duration::from_secs(2),
        );
        assert!(
            g.due(t0 + Duration::from_secs(30)).is_empty(),
            "not before group_interval"
        );
        let out = g.due(t0 + Duration::from_secs(61));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1.title, "2 firing",
            "a batch of one keeps its own title"
        );
    }

    #[test]
    fn groups_are_bounded() {
        let t0 = Instant::now();
        let mut g = Groups::new(1);
        assert_eq!(
            g.add(0, 0, &spec(1, 1), n("a", "1"), None, t0),
            Added::Buffered
        );
        let mut other = n("b", "2");
        other.fields["labels"]["site"] = json!("s2");
        assert_eq!(g.add(0, 0, &spec(1, 1), other, None, t0), Added::Full);
    }
}
