//! Escalation: a route's `escalate = [{after = "15m", targets = ["email"]}, ...]` sends an
//! alarm that is still firing and not acknowledged `after` its first notification to more
//! targets, each step once.
//!
//! This file holds the steps as configured and resolved; which steps are due, and which
//! went out, is read from the firing alarms' table ([`crate::firing`]), so escalation is
//! durable across restarts: a step that went out is not sent again, and one whose time
//! passed while the bridge was down goes out when it is back.

use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use serde::Deserialize;

/// One `escalate` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRaw {
    pub after: HumanDuration,
    pub targets: Vec<String>,
}

/// One step, its targets as indices into the bridge's targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub targets: Vec<usize>,
}

impl Step {
    /// Due at `first_ms + after` (Unix ms).
    pub fn due(&self, first_ms: i64, now_ms: i64) -> bool {
        let after = i64::try_from(self.after.as_millis()).unwrap_or(i64::MAX);
        now_ms >= first_ms.saturating_add(after)
    }
}

/// Resolves a route's steps against the target `names`; an error is `(key below the
/// route, message)`, e.g. `("escalate[1].targets", "no target named ...")`.
pub fn resolve(raw: &[StepRaw], names: &[String]) -> Result<Vec<Step>, (String, String)> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            let key = format!("escalate[{i}].targets");
            if s.targets.is_empty() {
                return Err((key, "list at least one target".into()));
            }
            let targets = s
                .targets
                .iter()
                .map(|t| {
                    names.iter().position(|n| n == t).ok_or_else(|| {
                        (
                            key.clone(),
                            format!("no target named {t:?}; define [targets.{t}]"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Step {
                after: s.after.0,
                targets,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(after: u64, targets: &[&str]) -> StepRaw {
        StepRaw {
            after: HumanDuration::from_secs(after),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn steps_name_known_targets_and_fall_due_after_their_time() {
        let names = vec!["chat".to_string(), "mail".to_string()];
        let steps = resolve(&[raw(900, &["mail"]), raw(3600, &["chat", "mail"])], &names).unwrap();
        assert_eq!(steps[1].targets, [0, 1]);
        assert!(!steps[0].due(1_000, 1_000 + 899_999));
        assert!(steps[0].due(1_000, 1_000 + 900_000));
        let err = resolve(&[raw(1, &["mail"]), raw(2, &["pager"])], &names).unwrap_err();
        assert_eq!(err.0, "escalate[1].targets");
        assert!(err.1.contains("no target named \"pager\""), "{err:?}");
        assert!(resolve(&[raw(1, &[])], &names).is_err());
    }
}
