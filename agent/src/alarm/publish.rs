//! Alarm payloads, built one way for learned models and threshold rules: the same
//! fields, the same episode ids, the same labels. A bridge, Home Assistant or a script
//! that reads one kind of alarm reads the other.

use lookout_shared::codec::to_json;
use lookout_shared::payload::{Alarm, AlarmState, Dimension, Labels, Window};
use lookout_shared::topics;

use crate::out::Out;

/// One change of an alarm episode, as its owner (a model's decision, a rule's window)
/// describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// The alarm's name under `<prefix>/<host>/alarms/`: a model's name, or a rule's
    /// `rule/<ruleId>/<device>[/...]`. With the host and the start it makes the id.
    pub name: String,
    /// What raised it: the model's name, or `rule/<ruleId>`.
    pub source: String,
    pub state: AlarmState,
    pub severity: u8,
    pub ts: i64,
    /// The episode's first anomalous tick: a firing state, its level changes and its
    /// resolution share it, and so share the id.
    pub started_at: i64,
    pub score: f64,
    pub threshold: f64,
    pub summary: String,
    /// Labels of this alarm beside the host's (they win over the host's on a clash).
    pub labels: Labels,
    /// Which dimensions made a model's alarm fire, largest share first; empty for rules,
    /// the host alarm and resolutions.
    pub dimensions: Vec<Dimension>,
    /// The top dimension as one line for people, with `dimensions`.
    pub explain: Option<String>,
    /// What a learned model saw up to its firing tick, for a picture.
    pub window: Option<Window>,
}

/// One host's alarms: where they go and what every payload carries.
#[derive(Clone, Debug)]
pub struct Publisher {
    prefix: String,
    host: String,
    labels: Labels,
}

impl Publisher {
    pub fn new(prefix: &str, host: &str, labels: &Labels) -> Self {
        Self {
            prefix: prefix.to_owned(),
            host: host.to_owned(),
            labels: labels.clone(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The retained topic of the alarm called `name`.
    pub fn topic(&self, name: &str) -> String {
        topics::alarm(&self.prefix, &self.host, name)
    }

    pub fn payload(&self, e: Episode) -> Alarm {
        let mut labels = self.labels.clone();
        labels.extend(e.labels);
        Alarm {
            id: Alarm::episode_id(&self.host, &e.name, e.started_at),
            host: self.host.clone(),
            source: e.source,
            state: e.state,
            severity: e.severity,
            ts: e.ts,
            started_at: e.started_at,
            score: e.score,
            threshold: e.threshold,
            summary: e.summary,
            labels,
            dimensions: e.dimensions,
            explain: e.explain,
            window: e.window,
        }
    }

    /// The episode's state as a message for the link; logged, since an alarm is what an
    /// operator looks for in the log.
    pub fn publish(&self, e: Episode) -> Out {
        tracing::info!(
            host = %self.host,
            alarm = %e.name,
            source = %e.source,
            state = e.state.as_str(),
            severity = e.severity,
            score = e.score,
            started_at = e.started_at,
            explain = e.explain.as_deref().unwrap_or_default(),
            "alarm {}",
            e.state.as_str()
        );
        let topic = self.topic(&e.name);
        Out::Alarm {
            topic,
            payload: to_json(&self.payload(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_keeps_the_firing_id_and_alarm_labels_win_over_the_host_labels() {
        let host_labels = Labels::from([
            ("site".to_string(), "p3".to_string()),
            ("ip".to_string(), "10.0.0.1".to_string()),
        ]);
        let p = Publisher::new("lookout", "edge-1", &host_labels);
        let fired = Episode {
            name: "rule/hot/s-7".into(),
            source: "rule/hot".into(),
            state: AlarmState::Firing,
            severity: 2,
            ts: 2_000,
            started_at: 1_000,
            score: 32.0,
            threshold: 30.0,
            summary: "hot".into(),
            labels: Labels::from([("site".to_string(), "rack".to_string())]),
            dimensions: Vec::new(),
            explain: None,
            window: None,
        };
        let resolved = Episode {
            state: AlarmState::Resolved,
            ts: 9_000,
            ..fired.clone()
        };
        let (a, b) = (p.payload(fired), p.payload(resolved));
        assert_eq!(a.id, b.id);
        assert_eq!(a.id, Alarm::episode_id("edge-1", "rule/hot/s-7", 1_000));
        assert_eq!(a.labels["site"], "rack");
        assert_eq!(a.labels["ip"], "10.0.0.1");
        assert_eq!(p.topic("cpu"), "lookout/edge-1/alarms/cpu");
    }
}
