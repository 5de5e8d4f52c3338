//! Routes: which messages go to which targets, and how they are rendered.
//!
//! A message takes every route whose topic filter matches and whose `when` holds; a
//! target reached by several routes gets the message once (the first route's templates).

use serde_json::Value;

use crate::expr::Expr;
use crate::template::Template;

/// MQTT filter matching: `+` one level, `#` the rest (including none).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A route, built from `[[routes]]`.
#[derive(Clone, Debug)]
pub struct Route {
    pub topic: String,
    pub when: Option<Expr>,
    /// Indices into the bridge's targets.
    pub targets: Vec<usize>,
    /// `None`: the default, the alarm title for the agent's alarms and the topic for
    /// anything else (which has no `state` or `host` to fill in).
    pub title: Option<Template>,
    pub body: Option<Template>,
    pub send_resolved: bool,
    pub repeat_interval: Option<std::time::Duration>,
    pub group: Option<crate::group::GroupSpec>,
    pub limits: crate::limits::Limits,
    /// `escalate`: more targets for alarms still firing and not acknowledged.
    pub escalate: Vec<crate::escalate::Step>,
    /// Indices into the bridge's time intervals: muted while any of `mute` is active, or
    /// while none of a non-empty `active` is ([`crate::mute`]).
    pub mute: Vec<usize>,
    pub active: Vec<usize>,
}

impl Route {
    pub fn accepts(&self, topic: &str, fields: &Value) -> bool {
        topic_matches(&self.topic, topic) && self.when_holds(fields)
    }

    /// The route's `when`, true when it has none.
    pub fn when_holds(&self, fields: &Value) -> bool {
        self.when.as_ref().is_none_or(|e| e.eval(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_wildcards_match_like_a_broker() {
        assert!(topic_matches("lookout/+/alarms/#", "lookout/h1/alarms/cpu"));
        assert!(topic_matches("lookout/+/alarms/#", "lookout/h1/alarms"));
        assert!(!topic_matches(
            "lookout/+/alarms/#",
            "lookout/h1/scores/cpu"
        ));
        assert!(topic_matches("#", "a/b"));
        assert!(topic_matches("a/+", "a/b"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a"));
    }
}
