//! Which topics cross to an upstream broker, under which names, and the check that keeps
//! a forwarding from feeding itself.
//!
//! Going up, a local topic gets the upstream's `remote_prefix` (the site's name) in front,
//! then the first `out` rewrite whose `from` it starts with. Coming down, the first `in`
//! rewrite applies, then the `remote_prefix` is taken off when the topic starts with it, so
//! the centre can address one site (`site/berlin-3/lookout/rules`) or every site
//! (`lookout/rules`) and the agent sees `lookout/rules` either way.

use serde::{Deserialize, Serialize};

/// One literal prefix replacement in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// `out` (local → upstream) or `in` (upstream → local).
    pub direction: Direction,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
}

/// The names a topic has on each side.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// Ends with `/` when not empty.
    prefix: String,
    out: Vec<(String, String)>,
    into: Vec<(String, String)>,
}

impl Route {
    pub fn new(remote_prefix: &str, rewrites: &[Rewrite]) -> Self {
        let prefix = match remote_prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let pick = |d: Direction| {
            rewrites
                .iter()
                .filter(|r| r.direction == d)
                .map(|r| (r.from.clone(), r.to.clone()))
                .collect()
        };
        Self {
            prefix,
            out: pick(Direction::Out),
            into: pick(Direction::In),
        }
    }

    /// The upstream name of a local topic (or filter).
    pub fn up(&self, local: &str) -> String {
        let named = format!("{}{local}", self.prefix);
        replace_first(&self.out, named)
    }

    /// The local name of an upstream topic (or filter).
    pub fn down(&self, remote: &str) -> String {
        let t = replace_first(&self.into, remote.to_owned());
        match t.strip_prefix(&self.prefix) {
            Some(rest) if !self.prefix.is_empty() && !rest.is_empty() => rest.to_owned(),
            _ => t,
        }
    }
}

impl Route {
    /// The local name of a topic this route sent up: the `out` rewrite undone (the first
    /// whose `to` the topic starts with), then the `remote_prefix` taken off. Used for
    /// the MQTT 5 user properties, which name the host and model of the local topic.
    pub fn local_of(&self, up: &str) -> String {
        let mut t = up.to_owned();
        for (from, to) in &self.out {
            if let Some(rest) = t.strip_prefix(to.as_str()) {
                t = format!("{from}{rest}");
                break;
            }
        }
        match t.strip_prefix(&self.prefix) {
            Some(rest) if !self.prefix.is_empty() => rest.to_owned(),
            _ => t,
        }
    }
}

fn replace_first(rules: &[(String, String)], topic: String) -> String {
    for (from, to) in rules {
        if let Some(rest) = topic.strip_prefix(from.as_str()) {
            return format!("{to}{rest}");
        }
    }
    topic
}

/// Whether some topic matches both filters (MQTT wildcards `+` and `#`).
pub fn overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            // A difference in depth matches only through `#` (`a/#` matches `a`), above.
            (None, Some(_)) | (Some(_), None) => return false,
        }
    }
}

/// A filter MQTT accepts: non-empty, `#` only as the last level, wildcards alone in their
/// level.
pub fn valid_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && level.len() > 1 {
            return Err(format!(
                "{filter:?}: a wildcard must stand alone in its level"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!("{filter:?}: '#' must be the last level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_prefix_goes_on_going_up_and_comes_off_coming_down() {
        let r = Route::new("site/berlin-3", &[]);
        assert_eq!(
            r.up("lookout/h1/alarms/cpu"),
            "site/berlin-3/lookout/h1/alarms/cpu"
        );
        assert_eq!(r.down("site/berlin-3/lookout/rules"), "lookout/rules");
        assert_eq!(r.down("lookout/rules"), "lookout/rules");
        let plain = Route::new("", &[]);
        assert_eq!(plain.up("lookout/h1/metrics"), "lookout/h1/metrics");
    }

    #[test]
    fn rewrites_apply_per_direction_first_match_wins() {
        let r = Route::new(
            "",
            &[
                Rewrite {
                    direction: Direction::Out,
                    from: "lookout/".into(),
                    to: "plant/edge/".into(),
                },
                Rewrite {
                    direction: Direction::Out,
                    from: "lookout/h1/".into(),
                    to: "never/".into(),
                },
                Rewrite {
                    direction: Direction::In,
                    from: "plant/control/".into(),
                    to: "lookout/".into(),
                },
            ],
        );
        assert_eq!(r.up("lookout/h1/scores/cpu"), "plant/edge/h1/scores/cpu");
        assert_eq!(r.down("plant/control/rules"), "lookout/rules");
        assert_eq!(r.down("other/x"), "other/x");
    }

    #[test]
    fn the_local_name_of_a_topic_sent_up_undoes_the_prefix_and_the_rewrite() {
        let r = Route::new(
            "site/b3",
            &[Rewrite {
                direction: Direction::Out,
                from: "site/b3/lookout/".into(),
                to: "plant/edge/".into(),
            }],
        );
        let local = "lookout/h1/scores/cpu";
        assert_eq!(r.local_of(&r.up(local)), local);
        let plain = Route::new("site/b3", &[]);
        assert_eq!(plain.local_of(&plain.up(local)), local);
        assert_eq!(Route::default().local_of(local), local);
    }

    #[test]
    fn filters_overlap_when_some_topic_matches_both() {
        for (a, b) in [
            ("lookout/#", "lookout/rules"),
            ("lookout/+/alarms/#", "lookout/h1/alarms/cpu"),
            ("lookout/+/rules", "lookout/h1/#"),
            ("a/#", "a"),
            ("#", "x/y"),
            ("+/+", "a/b"),
        ] {
            assert!(overlap(a, b), "{a} {b}");
            assert!(overlap(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("lookout/+/alarms/#", "lookout/rules"),
            ("lookout/+/scores/#", "lookout/+/alarms/#"),
            ("a/+", "a"),
            ("a/b", "a/b/c"),
            ("lookout/+/metrics", "lookout/rules"),
        ] {
            assert!(!overlap(a, b), "{a} {b}");
            assert!(!overlap(b, a), "{b} {a}");
        }
    }

    #[test]
    fn topics_match_filters_as_mqtt_says() {
        use crate::link::sweep::matches;
        assert!(matches("lookout/+/alarms/#", "lookout/h/alarms/cpu"));
        assert!(matches("lookout/#", "lookout"));
        assert!(!matches("lookout/+/metrics", "lookout/h/metrics/x"));
        assert!(!matches("a/b", "a"));
    }

    #[test]
    fn malformed_filters_are_refused() {
        assert!(valid_filter("lookout/#").is_ok());
        assert!(valid_filter("lookout/+/x").is_ok());
        for bad in ["", "a/#/b", "a/b#", "a+/b"] {
            assert!(valid_filter(bad).is_err(), "{bad}");
        }
    }
}
