//! Broker URLs as users write them in config files: `mqtt://host:port` for plain TCP,
//! `mqtts://host:port` for TLS. One parser for every MQTT connection of both binaries, so
//! they agree on defaults (1883 plain, 8883 TLS) and on what they refuse.

/// A parsed broker URL. `host` has no brackets (`::1`, not `[::1]`), as rumqttc and the TLS
/// server name want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttUrl {
    /// `mqtts://`: connect with TLS (see [`crate::tls`]).
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
    /// `mqtt[s]://host:port` again, for logs (IPv6 hosts in brackets).
    pub fn display(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `mqtt://host[:port]` (also `tcp://`) and `mqtts://host[:port]` (also `ssl://`).
/// User names, passwords, paths and queries are refused: credentials have keys of their own,
/// so they never end up in a URL that is logged.
pub fn parse(url: &str) -> Result<MqttUrl, String> {
    let (tls, rest) = if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (false, r)
    } else if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (true, r)
    } else {
        return Err(format!(
            "{url:?} must start with mqtt:// (plain) or mqtts:// (TLS)"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        // Not echoed: what stands before '@' is likely a password.
        return Err(
            "a broker URL must not hold user:password@ (username and password \
                    have keys of their own)"
                .into(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{url:?}: write only mqtt[s]://host:port (no path or query)"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: expected ':port' after ']'"))?,
            ),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None if tls => 8883,
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?}: port {p:?} is not a number 1-65535")),
        },
    };
    Ok(MqttUrl {
        tls,
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_parse_with_their_default_ports() {
        let u = parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.local", 1883)
        );
        let u = parse("mqtts://broker.local").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "broker.local", 8883)
        );
        let u = parse("mqtts://broker.local:8884/").unwrap();
        assert_eq!((u.tls, u.port), (true, 8884));
        let u = parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.display(), "mqtt://[::1]:1884");
        let u = parse("mqtts://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
        assert_eq!(parse("tcp://h:1").unwrap().port, 1);
    }

    #[test]
    fn urls_with_credentials_paths_or_bad_ports_are_refused() {
        for bad in [
            "http://x",
            "broker:1883",
            "mqtt://user:pw@broker",
            "mqtt://broker/topic",
            "mqtt://:1883",
            "mqtt://broker:0",
            "mqtt://broker:99999",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse("mqtt://user:hunter2@broker").unwrap_err();
        assert!(err.contains("username and password have keys"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
