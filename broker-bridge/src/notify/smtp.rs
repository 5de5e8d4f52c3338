//! `type = "smtp"`: sends each notification as a plain-text e-mail.
//!
//! Subject: the rendered title (after `subject_prefix`); body: the alarm's `explain` line,
//! if any, then the rendered body ([`Notification::body_with_explain`]), as
//! `text/plain; charset=utf-8`. The transport (server, TLS, credentials) is built once;
//! each notification opens its own connection (no pooling: alarms are rare, and a pooled
//! connection silently dropped by the server would cost a failed attempt).
//!
//! A firing alarm with a `window` (and `picture` not false) is sent with its picture
//! (`crate::picture`) inline: `multipart/alternative` of the same text as `text/plain` and
//! a `multipart/related` HTML part that shows the text, then the PNG by its `Content-ID`
//! (`cid:anomaly.png@lookout`). Mail readers that show no HTML show the text. Without a
//! picture the text gets the score sparkline.
//!
//! Failures follow the reply code: 4xx (greylisting, a full queue) and network errors are
//! retried, 5xx (unknown mailbox, rejected credentials) are permanent.

use std::net::IpAddr;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use serde::Deserialize;

use super::{Notification, Notifier, SendError, SendFuture};

/// `[targets.NAME]` with `type = "smtp"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SMTP server's host name; with TLS, the name its certificate must carry.
    pub host: String,
    /// SMTP server's port. Default by `tls`: 587 for `"starttls"`, 465 for `"tls"`, 25 for
    /// `"none"`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is encrypted: `"starttls"` (default: plain connection upgraded
    /// with STARTTLS, which must succeed), `"tls"` (TLS from the first byte, "SMTPS") or
    /// `"none"` (no encryption at all, password included: only for a relay on the same
    /// machine). Certificates are checked against the Mozilla roots built into the bridge.
    #[serde(default)]
    pub tls: Tls,
    /// User name for SMTP AUTH (PLAIN or LOGIN). Give it together with `password`, or
    /// neither for a server that needs no login.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH: a literal, `"env:NAME"` or `"file:/path"`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Sender, like `"alerts@example.com"` or `"Lookout <alerts@example.com>"`.
    pub from: String,
    /// Recipients, in the same forms as `from`; at least one.
    pub to: Vec<String>,
    /// Put before the title in the subject, separated by a space, like `"[lookout]"`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// How long to wait for the connection and for each reply of the server, like
    /// `"30s"`. Default `"30s"`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Firing alarms with a window are sent with their picture inline (default); `false`:
    /// plain text with a sparkline.
    #[serde(default = "yes")]
    pub picture: bool,
}

fn yes() -> bool {
    true
}

/// Encryption of the SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS; refuses to go on if the server cannot.
    #[default]
    Starttls,
    /// TLS from the start (implicit TLS, "SMTPS").
    Tls,
    /// No encryption.
    None,
}

impl Tls {
    fn default_port(self) -> u16 {
        match self {
            Tls::Starttls => 587,
            Tls::Tls => 465,
            Tls::None => 25,
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// The `smtp` notifier, built from a validated [`Config`].
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for error messages.
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: Option<String>,
    picture: bool,
}

impl Smtp {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, crate::Error> {
        let invalid = |key: &str, message: String| crate::Error::Target {
            target: name.into(),
            key: key.into(),
            message,
        };
        let host = cfg.host.trim();
        if host.is_empty() {
            return Err(invalid("host", "must not be empty".into()));
        }
        if cfg.port == Some(0) {
            return Err(invalid("port", "must be between 1 and 65535".into()));
        }
        if cfg.timeout.0.is_zero() {
            return Err(invalid("timeout", "must be more than zero".into()));
        }
        let from: Mailbox = cfg.from.parse().map_err(|e| {
            invalid(
                "from",
                format!("{:?} is not an e-mail address: {e}", cfg.from),
            )
        })?;
        if cfg.to.is_empty() {
            return Err(invalid("to", "needs at least one recipient".into()));
        }
        let to = cfg
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| invalid("to", format!("{a:?} is not an e-mail address: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "password",
                    "is required when username is set".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "username",
                    "is required when password is set".into(),
                ));
            }
        };

        let port = cfg.port.unwrap_or_else(|| cfg.tls.default_port());
        let builder = match cfg.tls {
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| invalid("host", format!("cannot set up TLS for {host:?}: {e}")))?;
        let mut builder = builder.port(port).timeout(Some(cfg.timeout.0));
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        if cfg.tls == Tls::None && !is_loopback(host) {
            tracing::warn!(
                target_name = name,
                host,
                "smtp target sends mail{} unencrypted (tls = \"none\") to a host that is not \
                 this machine",
                if cfg.password.is_some() {
                    " and its password"
                } else {
                    ""
                },
            );
        }

        Ok(Smtp {
            transport: builder.build(),
            server: format!("{host}:{port}"),
            from,
            to,
            subject_prefix: cfg
                .subject_prefix
                .as_deref()
                .map(str::trim_end)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
            picture: cfg.picture,
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let firing = n.fields.get("state").and_then(|s| s.as_str()) == Some("firing");
        let picture = (self.picture && firing)
            .then(|| crate::picture::attach(&n.target, &n.fields))
            .flatten();
        self.message_with(n, picture)
    }

    fn message_with(
        &self,
        n: &Notification,
        picture: Option<crate::picture::Picture>,
    ) -> Result<Message, SendError> {
        let subject = match &self.subject_prefix {
            Some(prefix) => format!("{prefix} {}", n.title),
            None => n.title.clone(),
        };
        let mut message = Message::builder().from(self.from.clone());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let text = n.body_for_people(picture.is_some()).into_owned();
        let built = match picture {
            None => message
                .subject(subject)
                .header(ContentType::TEXT_PLAIN)
                .body(text),
            Some(p) => message
                .subject(subject)
                .multipart(with_picture(&n.title, text, p)),
        };
        built.map_err(|e| SendError::Permanent(format!("cannot build the e-mail: {e}")))
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let message = self.message(n)?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| classify(&self.server, &e))
    }
}

/// The picture's `Content-ID`, which the HTML part refers to.
const PICTURE_CID: &str = "anomaly.png@lookout";

/// The text, and an HTML version of it that shows the picture under it.
fn with_picture(title: &str, text: String, picture: crate::picture::Picture) -> MultiPart {
    let html = format!(
        "<!DOCTYPE html><html><body><p><b>{}</b></p>\
         <pre style=\"font-family: inherit; white-space: pre-wrap\">{}</pre>\
         <img src=\"cid:{PICTURE_CID}\" width=\"{}\" height=\"{}\" alt=\"the anomaly: series, score and threshold\"></body></html>",
        escape_html(title),
        escape_html(&text),
        crate::picture::WIDTH,
        crate::picture::HEIGHT,
    );
    let png = ContentType::parse("image/png").expect("a valid content type");
    let image = Attachment::new_inline(PICTURE_CID.to_owned()).body(picture.png, png);
    MultiPart::alternative()
        .singlepart(SinglePart::plain(text))
        .multipart(
            MultiPart::related()
                .singlepart(SinglePart::html(html))
                .singlepart(image),
        )
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Notifier for Smtp {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

/// 4xx replies, network errors and timeouts are worth another attempt; 5xx replies and
/// what the client refuses to do (no common AUTH mechanism, no STARTTLS offered) are not.
/// lettre's messages carry the server's reply, never the credentials.
fn classify(server: &str, e: &lettre::transport::smtp::Error) -> SendError {
    let message = format!("smtp {server}: {e}");
    if e.is_permanent() || e.is_client() || e.is_tls() {
        SendError::Permanent(message)
    } else {
        // Transient (4xx), timeouts, connection and network errors, garbled replies.
        SendError::Retry(message)
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// What the fake server saw on one connection.
    #[derive(Debug, Default)]
    struct Session {
        commands: Vec<String>,
        data: String,
    }

    /// A one-connection SMTP server on 127.0.0.1 speaking just enough SMTP for lettre. It
    /// offers no 8BITMIME, so every mail it accepts is 7-bit clean.
    /// `rcpt_reply` is its answer to every RCPT TO.
    async fn fake_server(rcpt_reply: &'static str) -> (SocketAddr, oneshot::Receiver<Session>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, seen) = oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut session = Session::default();
            write
                .write_all(b"220 localhost ESMTP fake\r\n")
                .await
                .unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let command = line.trim_end().to_owned();
                let verb = command
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                session.commands.push(command);
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n",
                    "AUTH" => b"235 2.7.0 Authentication successful\r\n",
                    "MAIL" => b"250 2.1.0 Ok\r\n",
                    "RCPT" => rcpt_reply.as_bytes(),
                    "DATA" => {
                        write
                            .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                            .await
                            .unwrap();
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                break;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            session.data.push_str(&line);
                        }
                        b"250 2.0.0 Ok: queued\r\n"
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                        break;
                    }
                    "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
                    _ => b"502 5.5.2 Command not recognized\r\n",
                };
                if write.write_all(reply).await.is_err() {
                    break;
                }
            }
            let _ = done.send(session);
        });
        (addr, seen)
    }

    fn notification() -> Notification {
        let fields = json!({"host": "edge-42", "source": "cpu", "state": "firing"});
        Notification {
            target: "mail".into(),
            topic: "lookout/edge-42/alarms/cpu".into(),
            title: "[firing] edge-42 cpu".into(),
            body: "cpu is anomalous on edge-42\nscore 0.97".into(),
            raw: serde_json::to_vec(&fields).unwrap(),
            fields,
        }
    }

    fn smtp(port: u16, extra: &str) -> Smtp {
        let cfg: Config = toml::from_str(&format!(
            "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = \"5s\"\n\
             from = \"Lookout <alerts@example.com>\"\n\
             to = [\"ops@example.com\", \"Oncall <oncall@example.com>\"]\n{extra}"
        ))
        .unwrap();
        Smtp::build("mail", &cfg).unwrap()
    }

    /// How long a test waits for the fake server to report.
    const TEST_WAIT: Duration = Duration::from_secs(10);

    async fn session(seen: oneshot::Receiver<Session>) -> Session {
        tokio::time::timeout(TEST_WAIT, seen)
            .await
            .unwrap()
            .unwrap()
    }

    /// The value of header `name` in the mail's header block.
    fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
        data.split("\r\n\r\n")
            .next()
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .map(str::trim_end)
            })
    }

    #[tokio::test]
    async fn the_mail_arrives_with_sender_recipients_subject_and_body() {
        let (addr, seen) = fake_server("250 2.1.5 Ok\r\n").await;
        let smtp = smtp(addr.port(), "subject_prefix = \"[lookout]\"");

        smtp.send(&notification()).await.unwrap();

        let s = session(seen).await;
        assert!(
            s.commands
                .iter()
                .any(|c| c == "MAIL FROM:<alerts@example.com>"),
            "{s:?}"
        );
        assert!(
            s.commands.iter().any(|c| c == "RCPT TO:<ops@example.com>"),
            "{s:?}"
        );
        assert!(
            s.commands
                .iter()
                .any(|c| c == "RCPT TO:<oncall@example.com>"),
            "{s:?}"
        );
        assert!(!s.commands.iter().any(|c| c.starts_with("AUTH")), "{s:?}");
        let data = s.data.as_str();
        assert_eq!(header(data, "From"), Some("Lookout <alerts@example.com>"));
        assert_eq!(
            header(data, "To"),
            Some("ops@example.com, Oncall <oncall@example.com>")
        );
        assert_eq!(
            header(data, "Subject"),
            Some("[lookout] [firing] edge-42 cpu")
        );
        assert_eq!(
            header(data, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        let body = data.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, "cpu is anomalous on edge-42\r\nscore 0.97\r\n");
    }

    /// The base64 body of the MIME part whose headers hold `marker`.
    fn part_body(data: &str, marker: &str) -> Vec<u8> {
        let at = data
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker} in {data}"));
        let body = data[at..].split_once("\r\n\r\n").unwrap().1;
        let b64: String = body
            .lines()
            .take_while(|l| !l.starts_with("--") && !l.is_empty())
            .collect();
        crate::notify::test_support::base64_decode(&b64)
    }

    #[tokio::test]
    async fn a_windowed_alarm_is_mailed_with_its_picture_inline_referenced_from_the_html() {
        let (addr, seen) = fake_server("250 2.1.5 Ok\r\n").await;
        let mut n = notification();
        n.fields["window"] = crate::notify::test_support::windowed_alarm().fields["window"].clone();
        smtp(addr.port(), "").send(&n).await.unwrap();
        let data = session(seen).await.data;
        assert!(
            header(&data, "Content-Type")
                .unwrap()
                .starts_with("multipart/alternative"),
            "{data}"
        );
        assert!(data.contains("Content-Type: multipart/related"), "{data}");
        assert!(data.contains("Content-ID: <anomaly.png@lookout>"), "{data}");
        assert!(data.contains("Content-Disposition: inline"), "{data}");
        let html =
            String::from_utf8(part_body(&data, "Content-Type: text/html")).unwrap_or_default();
        let html = if html.is_empty() { data.clone() } else { html };
        assert!(html.contains("cid:anomaly.png@lookout"), "{html}");
        let png = part_body(&data, "Content-ID: <anomaly.png@lookout>");
        crate::notify::test_support::assert_picture(&png);
        assert!(
            !data.contains("score =E2=96=82") && !data.contains("score ▂"),
            "no sparkline beside the picture"
        );
    }

    #[test]
    fn with_picture_false_the_mail_is_plain_text_with_a_sparkline() {
        let mut n = notification();
        n.fields["window"] = crate::notify::test_support::windowed_alarm().fields["window"].clone();
        let mail = smtp(25, "picture = false").message(&n).unwrap().formatted();
        let mail = String::from_utf8(mail).unwrap();
        assert_eq!(
            header(&mail, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(!mail.contains("image/png"));
        let with = smtp(25, "").message(&n).unwrap().formatted();
        assert!(String::from_utf8(with).unwrap().contains("image/png"));
    }

    #[test]
    fn an_alarms_explain_line_opens_the_mail() {
        let mut n = notification();
        n.fields["explain"] = json!("system at 38.1, normal 2-6 (83 % of the cpu anomaly)");
        let mail = smtp(25, "").message(&n).unwrap().formatted();
        let mail = String::from_utf8(mail).unwrap();
        let body = mail.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "system at 38.1, normal 2-6 (83 % of the cpu anomaly)\r\ncpu is anomalous on edge-42\r\nscore 0.97"
        );
    }

    #[tokio::test]
    async fn non_ascii_titles_and_bodies_are_encoded_for_a_7_bit_server() {
        let (addr, seen) = fake_server("250 2.1.5 Ok\r\n").await;
        let smtp = smtp(addr.port(), "");
        let mut n = notification();
        n.title = "[firing] edge-42 température — 97 %".into();
        n.body = "la température est élevée".into();

        smtp.send(&n).await.unwrap();

        let s = session(seen).await;
        assert!(s.data.is_ascii(), "{}", s.data);
        let subject = header(&s.data, "Subject").unwrap();
        assert!(
            subject.starts_with("[firing] edge-42 =?utf-8?"),
            "{subject}"
        );
    }

    #[tokio::test]
    async fn credentials_are_sent_with_auth() {
        let (addr, seen) = fake_server("250 2.1.5 Ok\r\n").await;
        let smtp = smtp(addr.port(), "username = \"alice\"\npassword = \"s3cret\"");

        smtp.send(&notification()).await.unwrap();

        let s = session(seen).await;
        // base64("\0alice\0s3cret")
        let auth = s
            .commands
            .iter()
            .position(|c| c == "AUTH PLAIN AGFsaWNlAHMzY3JldA==");
        let mail = s.commands.iter().position(|c| c.starts_with("MAIL FROM"));
        assert!(auth.is_some() && auth < mail, "{s:?}");
    }

    #[tokio::test]
    async fn a_4xx_reply_to_rcpt_is_retried() {
        let (addr, _seen) = fake_server("451 4.7.1 Greylisted, try again later\r\n").await;
        let smtp = smtp(addr.port(), "username = \"alice\"\npassword = \"s3cret\"");

        match smtp.send(&notification()).await {
            Err(SendError::Retry(m)) => {
                assert!(m.contains("451"), "{m}");
                assert!(!m.contains("s3cret"), "{m}");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_5xx_reply_to_rcpt_is_permanent() {
        let (addr, _seen) = fake_server("550 5.1.1 No such user here\r\n").await;
        let smtp = smtp(addr.port(), "");

        match smtp.send(&notification()).await {
            Err(SendError::Permanent(m)) => {
                assert!(m.contains("550"), "{m}");
                assert!(m.contains("No such user"), "{m}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let smtp = smtp(port, "");

        match smtp.send(&notification()).await {
            Err(SendError::Retry(m)) => assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn ports_default_by_tls_mode() {
        assert_eq!(Tls::Starttls.default_port(), 587);
        assert_eq!(Tls::Tls.default_port(), 465);
        assert_eq!(Tls::None.default_port(), 25);
        let cfg: Config = toml::from_str(
            "host = \"mail.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]",
        )
        .unwrap();
        assert_eq!(cfg.tls, Tls::Starttls);
        let smtp = Smtp::build("mail", &cfg).unwrap();
        assert_eq!(smtp.server, "mail.example.com:587");
    }

    #[test]
    fn config_errors_name_the_key_and_never_the_password() {
        let build = |extra: &str| {
            let cfg: Config = toml::from_str(&format!(
                "host = \"mail.example.com\"\nfrom = \"a@example.com\"\n{extra}"
            ))
            .unwrap();
            Smtp::build("mail", &cfg).err().map(|e| e.to_string())
        };
        let err = build("to = []").unwrap();
        assert!(err.starts_with("targets.mail.to:"), "{err}");
        let err = build("to = [\"not an address\"]").unwrap();
        assert!(err.starts_with("targets.mail.to:"), "{err}");
        let err = build("to = [\"b@example.com\"]\npassword = \"s3cret\"").unwrap();
        assert!(err.starts_with("targets.mail.username:"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = build("to = [\"b@example.com\"]\nusername = \"alice\"").unwrap();
        assert!(err.starts_with("targets.mail.password:"), "{err}");
        assert!(
            toml::from_str::<Config>("host = \"h\"\nfrom = \"a@b.c\"\nto = []\ncc = []").is_err()
        );
        assert!(
            toml::from_str::<Config>("host = \"h\"\nfrom = \"a@b.c\"\nto = []\ntls = \"ssl\"")
                .is_err()
        );
    }
}
