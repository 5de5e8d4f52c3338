//! `[[upstream]]`: brokers the agent forwards its broker's topics to, as written and as
//! the forwarder runs on them.

use std::path::PathBuf;
use std::time::Duration;

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use lookout_shared::mqtt::ClientConfig;
use lookout_shared::secret::Secret;
use lookout_shared::tls::TlsSettings;
use serde::{Deserialize, Serialize};

use super::route::{Rewrite, Route, overlap, valid_filter};
use crate::link::ring::RingSettings;
use crate::link::version::{Protocol, expiry_seconds};

/// One `[[upstream]]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Names the upstream in logs, `stats` and its state directory.
    pub name: String,
    /// The primary first; the others are tried in order when it is unreachable.
    pub urls: Vec<String>,
    /// Empty: `lookout-upstream-<host>-<name>`.
    pub client_id: String,
    pub keep_alive: HumanDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Local topic filters sent up; absent: the agent's alarms, scores, metrics, anomaly
    /// rates, status, stats and rules errors under its prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward: Option<Vec<String>>,
    /// Local topic filters whose messages are states, kept retained upstream and sent
    /// once each; absent: alarms, status, stats and rules errors. Whatever the local
    /// broker hands over as retained is a state too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained: Option<Vec<String>>,
    /// Upstream topic filters brought down; absent: the fleet's rules document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// Put in front of every topic sent up (`site/berlin-3`), taken off topics brought down.
    pub remote_prefix: String,
    pub rewrite: Vec<Rewrite>,
    pub failover_after: HumanDuration,
    pub failback_after: HumanDuration,
    /// Messages a second when sending what was kept during an outage.
    pub replay_rate: u32,
    /// Scores and metrics kept while the upstream is unreachable: a bound in bytes and
    /// one in age, whichever comes first.
    pub buffer_max_bytes: u64,
    pub buffer_max_age: HumanDuration,
    /// Where the buffer and the durable states live; empty: the state directory's
    /// `upstream/<name>`.
    pub dir: String,
    /// `"auto"` (MQTT 5 where the broker speaks it, else 3.1.1), `"5"` or `"3.1.1"`.
    pub protocol: Protocol,
    /// QoS of live scores and metrics: 1 (the forwarder learns what arrived) or 0 (fewer
    /// packets on a metered uplink; a message on the wire when the link drops is lost).
    /// States, and what the buffer kept, always go with QoS 1.
    pub qos: u8,
    /// MQTT 5: how long the broker may keep a score or metric for a subscriber that is
    /// away; `"0s"`: as long as it likes. States (alarms) never expire.
    pub message_expiry: HumanDuration,
    /// MQTT 5: how long the broker keeps the forwarder's session (its subscriptions and
    /// the messages they catch) after the connection ends; `"0s"`: a clean session.
    pub session_expiry: HumanDuration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            urls: Vec::new(),
            client_id: String::new(),
            keep_alive: HumanDuration::from_secs(30),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure_skip_verify: false,
            forward: None,
            retained: None,
            subscribe: None,
            remote_prefix: String::new(),
            rewrite: Vec::new(),
            failover_after: HumanDuration::from_secs(10),
            failback_after: HumanDuration::from_secs(60),
            replay_rate: 200,
            buffer_max_bytes: 64 * 1024 * 1024,
            buffer_max_age: HumanDuration::from_secs(24 * 3600),
            dir: String::new(),
            protocol: Protocol::Auto,
            qos: 1,
            message_expiry: HumanDuration::from_secs(3600),
            session_expiry: HumanDuration::from_secs(0),
        }
    }
}

/// A checked `[[upstream]]`, with the local broker it reads from.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub name: String,
    /// One per URL, primary first, all with the same identity.
    pub brokers: Vec<ClientConfig>,
    /// The agent's own broker, under the forwarder's own client id.
    pub local: ClientConfig,
    pub forward: Vec<String>,
    pub retained: Vec<String>,
    pub subscribe: Vec<String>,
    pub route: Route,
    pub failover_after: Duration,
    pub failback_after: Duration,
    pub replay_rate: u32,
    pub ring: RingSettings,
    /// The durable states (retained messages: alarms, status, stats).
    pub states_dir: PathBuf,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// The agent's topic prefix (the user properties name the host under it).
    pub prefix: String,
    pub protocol: Protocol,
    /// Seconds, for scores and metrics; `None`: no expiry.
    pub message_expiry: Option<u32>,
    /// Live scores and metrics at QoS 0.
    pub qos0: bool,
    /// Zero: a clean session, as with 3.1.1.
    pub session_expiry: Duration,
}

/// A forwarded message could come back down, and go up again, for ever.
fn check_loops(forward: &[String], subscribe: &[String], route: &Route) -> Result<(), Invalid> {
    for s in subscribe {
        let local = route.down(s);
        if let Some(f) = forward.iter().find(|f| overlap(f, &local)) {
            return Err(Invalid::new(
                "subscribe",
                format!(
                    "{s:?} comes down as {local:?}, which the forward filter {f:?} would send up again: a loop"
                ),
            ));
        }
    }
    Ok(())
}

impl UpstreamConfig {
    /// Checks the table. `local` is the agent's own broker connection (embedded or not),
    /// `prefix` its topic prefix, `host` the agent's name.
    pub fn resolve(
        &self,
        local: &ClientConfig,
        prefix: &str,
        host: &str,
        reconnect: (Duration, Duration),
    ) -> Result<UpstreamSettings, Invalid> {
        let name = self.name.trim();
        if name.is_empty() || name.contains(['/', '+', '#']) {
            return Err(Invalid::new("name", "must be set, without '/', '+' or '#'"));
        }
        let brokers = self.brokers(host, name)?;
        let (forward, retained, subscribe) = self.filters(prefix)?;
        for r in &self.rewrite {
            if r.from.is_empty() || r.from.contains(['+', '#']) || r.to.contains(['+', '#']) {
                return Err(Invalid::new(
                    "rewrite",
                    format!(
                        "{:?} -> {:?}: from must be a literal topic prefix, and neither may hold wildcards",
                        r.from, r.to
                    ),
                ));
            }
        }
        if self.remote_prefix.contains(['+', '#']) {
            return Err(Invalid::new(
                "remote_prefix",
                "must be free of MQTT wildcards",
            ));
        }
        let route = Route::new(&self.remote_prefix, &self.rewrite);
        check_loops(&forward, &subscribe, &route)?;
        if self.replay_rate == 0 {
            return Err(Invalid::new(
                "replay_rate",
                "must be at least 1 message a second",
            ));
        }
        if self.buffer_max_bytes < 1024 * 1024 {
            return Err(Invalid::new(
                "buffer_max_bytes",
                "must be at least 1 MiB (1048576)",
            ));
        }
        let message_expiry = expiry_seconds("message_expiry", self.message_expiry.0)?;
        if self.qos > 1 {
            return Err(Invalid::new(
                "qos",
                "must be 0 or 1 (states always go with QoS 1; QoS 2 is not offered)",
            ));
        }
        expiry_seconds("session_expiry", self.session_expiry.0)?;
        let dir = if self.dir.is_empty() {
            lookout_shared::config::state_dir("upstream").join(name)
        } else {
            PathBuf::from(&self.dir)
        };
        Ok(UpstreamSettings {
            name: name.to_owned(),
            brokers,
            local: local.with_client_id(format!("{}-upstream-{name}", local.client_id)),
            forward,
            retained,
            subscribe,
            route,
            failover_after: self.failover_after.0.max(Duration::from_secs(1)),
            failback_after: self.failback_after.0,
            replay_rate: self.replay_rate,
            ring: RingSettings::new(
                dir.join("buffer"),
                self.buffer_max_bytes,
                self.buffer_max_age.0,
            ),
            states_dir: dir.join("states"),
            reconnect_min: reconnect.0,
            reconnect_max: reconnect.1,
            prefix: prefix.to_owned(),
            protocol: self.protocol,
            message_expiry,
            qos0: self.qos == 0,
            session_expiry: self.session_expiry.0,
        })
    }

    /// `forward`, `retained` and `subscribe`, defaults filled in under `prefix`, checked.
    #[allow(clippy::type_complexity)]
    fn filters(&self, prefix: &str) -> Result<(Vec<String>, Vec<String>, Vec<String>), Invalid> {
        let forward = self.forward.clone().unwrap_or_else(|| {
            [
                "alarms/#",
                "scores/#",
                "metrics",
                "anomaly_rate",
                "status",
                "agent/stats",
                "rules/error",
            ]
            .iter()
            .map(|k| format!("{prefix}/+/{k}"))
            .collect()
        });
        let retained = self.retained.clone().unwrap_or_else(|| {
            ["alarms/#", "status", "agent/stats", "rules/error"]
                .iter()
                .map(|k| format!("{prefix}/+/{k}"))
                .collect()
        });
        let subscribe = self
            .subscribe
            .clone()
            .unwrap_or_else(|| vec![lookout_shared::topics::fleet_rules(prefix)]);
        if forward.is_empty() {
            return Err(Invalid::new(
                "forward",
                "lists no topic filter: nothing would be sent",
            ));
        }
        for (key, filters) in [
            ("forward", &forward),
            ("retained", &retained),
            ("subscribe", &subscribe),
        ] {
            for f in filters {
                valid_filter(f).map_err(|m| Invalid::new(key, m))?;
            }
        }
        Ok((forward, retained, subscribe))
    }

    fn brokers(&self, host: &str, name: &str) -> Result<Vec<ClientConfig>, Invalid> {
        if self.urls.is_empty() {
            return Err(Invalid::new(
                "urls",
                "list at least one broker, e.g. urls = [\"mqtts://central.example:8883\"]",
            ));
        }
        let tls_err = |e: lookout_shared::tls::TlsError| Invalid::new(e.key(), e.reason());
        let password =
            lookout_shared::tls::password(self.password.clone(), self.password_file.as_deref())
                .map_err(tls_err)?;
        if password.is_some() != self.username.is_some() {
            return Err(Invalid::new(
                "username",
                "set both username and password, or neither",
            ));
        }
        let client_id = if self.client_id.is_empty() {
            format!("lookout-upstream-{host}-{name}")
        } else {
            self.client_id.clone()
        };
        let tls = TlsSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        self.urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let url = lookout_shared::url::parse(u)
                    .map_err(|m| Invalid::new(format!("urls[{i}]"), m))?;
                ClientConfig::new(
                    url,
                    client_id.clone(),
                    self.keep_alive.0,
                    self.username.clone(),
                    password.clone(),
                    tls.clone(),
                    "upstream",
                )
                .map_err(tls_err)
            })
            .collect()
    }
}

/// Checks every `[[upstream]]` together: names must differ (they name state directories).
pub fn resolve_all(
    tables: &[UpstreamConfig],
    local: &ClientConfig,
    prefix: &str,
    host: &str,
    reconnect: (Duration, Duration),
) -> Result<Vec<UpstreamSettings>, Invalid> {
    let mut out: Vec<UpstreamSettings> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let s = t
            .resolve(local, prefix, host, reconnect)
            .map_err(|e| Invalid::new(format!("upstream[{i}].{}", e.key), e.message))?;
        if out.iter().any(|o| o.name == s.name) {
            return Err(Invalid::new(
                format!("upstream[{i}].name"),
                format!("{:?} names two upstreams", s.name),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> ClientConfig {
        ClientConfig::new(
            lookout_shared::url::parse("mqtt://127.0.0.1:1883").unwrap(),
            "lookout-agent-h".into(),
            Duration::from_secs(30),
            None,
            None,
            TlsSettings::default(),
            "agent",
        )
        .unwrap()
    }

    fn table(toml_text: &str) -> UpstreamConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn resolve(t: &UpstreamConfig) -> Result<UpstreamSettings, Invalid> {
        t.resolve(
            &local(),
            "lookout",
            "h",
            (Duration::from_millis(250), Duration::from_secs(30)),
        )
    }

    #[test]
    fn three_lines_send_a_devices_alarms_scores_and_metrics_up_and_bring_the_rules_down() {
        let s = resolve(&table(
            "name = \"central\"\nurls = [\"mqtt://10.0.0.1:1883\"]\n",
        ))
        .unwrap();
        assert!(s.forward.contains(&"lookout/+/alarms/#".to_owned()));
        assert!(s.forward.contains(&"lookout/+/scores/#".to_owned()));
        assert!(s.forward.contains(&"lookout/+/metrics".to_owned()));
        assert_eq!(s.subscribe, vec!["lookout/rules".to_owned()]);
        assert_eq!(s.brokers[0].client_id, "lookout-upstream-h-central");
        assert_eq!(s.local.client_id, "lookout-agent-h-upstream-central");
        assert_eq!(s.failover_after, Duration::from_secs(10));
        assert_eq!(s.protocol, Protocol::Auto);
        assert_eq!(s.message_expiry, Some(3600));
        assert_eq!(s.session_expiry, Duration::ZERO);
    }

    #[test]
    fn protocol_and_expiries_are_read_and_checked() {
        let s = resolve(&table(
            "name = \"c\"\nurls = [\"mqtt://a\"]\nprotocol = \"3.1.1\"\nmessage_expiry = \"0s\"\nsession_expiry = \"1d\"\n",
        ))
        .unwrap();
        assert_eq!(
            s.protocol,
            Protocol::Only(crate::link::version::Version::V311)
        );
        assert_eq!(s.message_expiry, None);
        assert_eq!(s.session_expiry, Duration::from_secs(86_400));
        for (text, key) in [
            ("message_expiry = \"1500ms\"", "message_expiry"),
            ("qos = 2", "qos"),
            ("session_expiry = \"200years\"", "session_expiry"),
        ] {
            let t = format!("name = \"c\"\nurls = [\"mqtt://a\"]\n{text}\n");
            assert_eq!(resolve(&table(&t)).unwrap_err().key, key, "{text}");
        }
        let bad = toml::from_str::<UpstreamConfig>("protocol = \"6\"").unwrap_err();
        assert!(bad.to_string().contains("protocol"), "{bad}");
    }

    #[test]
    fn a_subscription_that_would_come_back_up_is_refused_as_a_loop() {
        let t = table(
            "name = \"c\"\nurls = [\"mqtt://10.0.0.1\"]\nforward = [\"lookout/#\"]\nsubscribe = [\"lookout/rules\"]\n",
        );
        let e = resolve(&t).unwrap_err();
        assert_eq!(e.key, "subscribe");
        assert!(e.message.contains("loop"), "{}", e.message);
        // Brought down from under the site's prefix, it is the same loop.
        let t = table(
            "name = \"c\"\nurls = [\"mqtt://10.0.0.1\"]\nremote_prefix = \"site/a\"\nforward = [\"lookout/#\"]\nsubscribe = [\"site/a/lookout/rules\"]\n",
        );
        assert_eq!(resolve(&t).unwrap_err().key, "subscribe");
    }

    #[test]
    fn bad_tables_name_the_key_at_fault() {
        for (text, key) in [
            ("urls = [\"mqtt://a\"]", "name"),
            ("name = \"c\"", "urls"),
            ("name = \"c\"\nurls = [\"http://a\"]", "urls[0]"),
            (
                "name = \"c\"\nurls = [\"mqtt://a\"]\nforward = []",
                "forward",
            ),
            (
                "name = \"c\"\nurls = [\"mqtt://a\"]\nforward = [\"a/#/b\"]",
                "forward",
            ),
            (
                "name = \"c\"\nurls = [\"mqtt://a\"]\nusername = \"u\"",
                "username",
            ),
            (
                "name = \"c\"\nurls = [\"mqtt://a\"]\nreplay_rate = 0",
                "replay_rate",
            ),
            (
                "name = \"c\"\nurls = [\"mqtt://a\"]\nremote_prefix = \"a/+\"",
                "remote_prefix",
            ),
        ] {
            assert_eq!(resolve(&table(text)).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn two_upstreams_may_not_share_a_name() {
        let t = table("name = \"c\"\nurls = [\"mqtt://a\"]");
        let e = resolve_all(
            &[t.clone(), t],
            &local(),
            "lookout",
            "h",
            (Duration::from_millis(250), Duration::from_secs(30)),
        )
        .unwrap_err();
        assert_eq!(e.key, "upstream[1].name");
    }
}
