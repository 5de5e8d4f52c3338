//! The topic scheme, `<prefix>/<host>/<kind>[/<name>]`, written and read only here so the
//! agent, the bridge and the tests cannot drift apart. See `docs/topics.md`.

use crate::Error;

pub const DEFAULT_PREFIX: &str = "lookout";

/// What a topic below `<prefix>/<host>/` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Status,
    Metrics,
    Score { model: &'a str },
    Alarm { source: &'a str },
    SimTruth,
}

pub fn status(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/status")
}

pub fn metrics(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/metrics")
}

pub fn score(prefix: &str, host: &str, model: &str) -> String {
    format!("{prefix}/{host}/scores/{model}")
}

pub fn alarm(prefix: &str, host: &str, source: &str) -> String {
    format!("{prefix}/{host}/alarms/{source}")
}

pub fn sim_truth(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/sim/truth")
}

/// The filter a subscriber uses for every alarm of every host.
pub fn all_alarms(prefix: &str) -> String {
    format!("{prefix}/+/alarms/#")
}

/// Splits a concrete topic into `(host, kind)`.
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Result<(&'a str, Kind<'a>), Error> {
    let bad = |reason| Error::Topic {
        topic: topic.to_owned(),
        reason,
    };
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad("does not start with the configured prefix"))?;
    let (host, rest) = rest
        .split_once('/')
        .ok_or_else(|| bad("no kind after the host"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let kind = match rest.split_once('/') {
        None if rest == "status" => Kind::Status,
        None if rest == "metrics" => Kind::Metrics,
        Some(("scores", model)) if !model.is_empty() => Kind::Score { model },
        Some(("alarms", source)) if !source.is_empty() => Kind::Alarm { source },
        Some(("sim", "truth")) => Kind::SimTruth,
        _ => return Err(bad("unknown kind")),
    };
    Ok((host, kind))
}

/// Host names and model names become topic levels; MQTT forbids wildcards there and a `/`
/// would shift every level after it, so both are replaced.
pub fn sanitize_level(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_topics_parse_back() {
        let p = DEFAULT_PREFIX;
        assert_eq!(parse(p, &status(p, "h1")).unwrap(), ("h1", Kind::Status));
        assert_eq!(parse(p, &metrics(p, "h1")).unwrap(), ("h1", Kind::Metrics));
        assert_eq!(
            parse(p, &score(p, "h1", "cpu")).unwrap(),
            ("h1", Kind::Score { model: "cpu" })
        );
        assert_eq!(
            parse(p, &alarm(p, "h1", "cpu")).unwrap(),
            ("h1", Kind::Alarm { source: "cpu" })
        );
        assert_eq!(
            parse(p, &sim_truth(p, "h1")).unwrap(),
            ("h1", Kind::SimTruth)
        );
    }

    #[test]
    fn foreign_topics_are_rejected_with_the_topic_named() {
        let err = parse("lookout", "other/h/status").unwrap_err();
        assert!(err.to_string().contains("other/h/status"));
        assert!(parse("lookout", "lookout/h/whatever").is_err());
        assert!(parse("lookout", "lookout//status").is_err());
    }

    #[test]
    fn sanitize_removes_wildcards_and_separators() {
        assert_eq!(sanitize_level("a/b+c#d e"), "a_b_c_d_e");
    }
}
