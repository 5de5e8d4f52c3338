//! The topic scheme, `<prefix>/<host>/<kind>[/<name>]`, written and read only here so the
//! agent, the bridge and the tests cannot drift apart. See `docs/topics.md`.
//!
//! Two kinds of topic carry no host, because they are addressed to every agent at once:
//! `<prefix>/rules` (the fleet's rules document) and `<prefix>/ingest/<device>[/...]`
//! (events of devices that cannot run the agent). `ingest` is therefore not a usable host
//! name.

use crate::Error;

pub const DEFAULT_PREFIX: &str = "lookout";

/// What a topic below `<prefix>/<host>/` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Status,
    Metrics,
    Score {
        model: &'a str,
    },
    Alarm {
        source: &'a str,
    },
    SimTruth,
    /// `agent/stats`: the agent's own health, retained.
    AgentStats,
    /// The host's own rules document, retained.
    Rules,
    /// Why the host rejected its latest rules document, retained; empty when none was.
    RulesError,
    /// `cmd/relearn`: an operator's order that models accept what they see as normal.
    Relearn,
    /// `cmd/relearn/result`: the agent's answer to it.
    RelearnResult,
}

/// The first level under the prefix that holds ingested events instead of a host.
pub const INGEST: &str = "ingest";

pub fn status(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/status")
}

/// `<prefix>/<host>/agent/stats`: the agent's own health, retained.
pub fn agent_stats(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/agent/stats")
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

/// `<prefix>/<host>/anomaly_rate`: the share of the host's models anomalous at once.
pub fn anomaly_rate(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/anomaly_rate")
}

pub fn sim_truth(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/sim/truth")
}

/// A host's own rules document (retained); it wins over the fleet's.
pub fn rules(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/rules")
}

/// The rules document of every agent under `prefix` (retained).
pub fn fleet_rules(prefix: &str) -> String {
    format!("{prefix}/rules")
}

/// Where a host says why it rejected a rules document (retained; emptied once fixed).
pub fn rules_error(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/rules/error")
}

/// `<prefix>/<host>/cmd/relearn`: an operator orders models of the host to take what they
/// see now as normal (not retained). Only operators may write `<prefix>/+/cmd/#` (the
/// broker's ACL, docs/topics.md), and the agent checks a token of its own as well.
pub fn relearn(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/cmd/relearn")
}

/// `<prefix>/<host>/cmd/relearn/result`: the agent's answer to each relearn command.
pub fn relearn_result(prefix: &str, host: &str) -> String {
    format!("{prefix}/{host}/cmd/relearn/result")
}

/// The filter an agent with ingest enabled subscribes to.
pub fn ingest_filter(prefix: &str) -> String {
    format!("{prefix}/{INGEST}/#")
}

/// `Some(device)` for `<prefix>/ingest/<device>[/...]`, `Some("")` for `<prefix>/ingest`
/// itself or an empty device level (the event must then name its device), `None` for a
/// topic outside ingest.
pub fn ingest_device<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(INGEST)?;
    if rest.is_empty() {
        return Some("");
    }
    let rest = rest.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(""))
}

/// The alarm name (what follows `alarms/`) of one threshold rule's alarm for one group:
/// `rule/<ruleId>/<device>[/dimN=<value>...]`, one level per included dimension (`dimN`
/// alone when the events lacked it). A rule fires separately per group, and each group
/// needs a topic of its own so that the retained states of groups do not overwrite each
/// other. Levels are escaped with [`escape_level`], so distinct groups never share a topic.
pub fn rule_alarm_name<'a>(
    rule_id: &str,
    device: &str,
    dims: impl IntoIterator<Item = (usize, Option<&'a str>)>,
) -> String {
    let mut name = format!("{}/{}", rule_source(rule_id), escape_level(device));
    for (n, value) in dims {
        match value {
            Some(v) => name.push_str(&format!("/dim{n}={}", escape_level(v))),
            None => name.push_str(&format!("/dim{n}")),
        }
    }
    name
}

/// An alarm's `source` for a threshold rule: `rule/<ruleId>`.
pub fn rule_source(rule_id: &str) -> String {
    format!("rule/{}", escape_level(rule_id))
}

/// Percent-escapes what cannot stand in one topic level (`/`, `+`, `#`, NUL) and `%`
/// itself, so that, unlike [`sanitize_level`], different names stay different topics.
/// Ordinary names come through unchanged.
pub fn escape_level(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains(['/', '+', '#', '\0', '%']) {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '+' => out.push_str("%2B"),
            '#' => out.push_str("%23"),
            '\0' => out.push_str("%00"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out.into()
}

/// `<prefix>/bridge/ack`: acknowledgements of firing alarms, read by the bridge.
pub fn bridge_ack(prefix: &str) -> String {
    format!("{prefix}/bridge/ack")
}

/// `<prefix>/bridge/ack/reply`: the bridge's answer to each acknowledgement.
pub fn bridge_ack_reply(prefix: &str) -> String {
    format!("{prefix}/bridge/ack/reply")
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
        Some(("agent", "stats")) => Kind::AgentStats,
        None if rest == "rules" => Kind::Rules,
        Some(("rules", "error")) => Kind::RulesError,
        Some(("cmd", "relearn")) => Kind::Relearn,
        Some(("cmd", "relearn/result")) => Kind::RelearnResult,
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
        assert_eq!(
            parse(p, &agent_stats(p, "h1")).unwrap(),
            ("h1", Kind::AgentStats)
        );
    }

    #[test]
    fn rules_topics_parse_back_and_ingest_topics_name_their_device() {
        let p = DEFAULT_PREFIX;
        assert_eq!(parse(p, &rules(p, "h1")).unwrap(), ("h1", Kind::Rules));
        assert_eq!(
            parse(p, &rules_error(p, "h1")).unwrap(),
            ("h1", Kind::RulesError)
        );
        assert_eq!(fleet_rules(p), "lookout/rules");
        assert_eq!(relearn(p, "h1"), "lookout/h1/cmd/relearn");
        assert_eq!(parse(p, &relearn(p, "h1")).unwrap(), ("h1", Kind::Relearn));
        assert_eq!(
            parse(p, &relearn_result(p, "h1")).unwrap(),
            ("h1", Kind::RelearnResult)
        );
        assert_eq!(ingest_filter(p), "lookout/ingest/#");
        assert_eq!(
            ingest_device(p, "lookout/ingest/sensor-7"),
            Some("sensor-7")
        );
        assert_eq!(
            ingest_device(p, "lookout/ingest/sensor-7/temp"),
            Some("sensor-7")
        );
        assert_eq!(ingest_device(p, "lookout/ingest"), Some(""));
        assert_eq!(ingest_device(p, "lookout/ingest//x"), Some(""));
        assert_eq!(ingest_device(p, "lookout/ingestion/x"), None);
        assert_eq!(ingest_device(p, "lookout/h1/rules"), None);
        assert_eq!(ingest_device(p, "other/ingest/x"), None);
    }

    #[test]
    fn rule_alarm_names_keep_groups_apart() {
        assert_eq!(
            rule_alarm_name("1234", "978648", [(2, Some("N024"))]),
            "rule/1234/978648/dim2=N024"
        );
        assert_eq!(rule_alarm_name("disk", "edge-1", []), "rule/disk/edge-1");
        // A dimension the events lacked differs from an empty one.
        assert_ne!(
            rule_alarm_name("r", "d", [(0, None)]),
            rule_alarm_name("r", "d", [(0, Some(""))])
        );
        // Escaping keeps names apart that sanitizing would merge, and topics valid.
        let a = rule_alarm_name("r", "a/b", [(1, Some("x+y#"))]);
        let b = rule_alarm_name("r", "a_b", [(1, Some("x_y_"))]);
        assert_ne!(a, b);
        assert_eq!(a, "rule/r/a%2Fb/dim1=x%2By%23");
        assert_eq!(escape_level("50%"), "50%25");
        assert_eq!(rule_source("hot"), "rule/hot");
        let topic = alarm("lookout", "h1", &a);
        assert_eq!(
            parse("lookout", &topic).unwrap(),
            ("h1", Kind::Alarm { source: &a })
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
