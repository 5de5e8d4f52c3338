//! `type = "http"`: a generic webhook. Sends each notification as JSON (the alarm's fields,
//! or the rendered body template), as a form, as plain text, or as Prometheus
//! Alertmanager's webhook JSON (`format = "alertmanager"`, `notify/alertmanager.rs`).
//!
//! Also home of what the HTTP-based plugins share ([`slack`](super::slack),
//! [`telegram`](super::telegram), [`ntfy`](super::ntfy), ...): the client settings, the
//! status classification, the redaction of secrets from error messages, one checked send.
//! Their tests talk to the test HTTP server that the end-to-end tests use too
//! (`tests/common/http.rs`).
//!
//! ```toml
//! [targets.ops-webhook]
//! type = "http"
//! url = "env:OPS_WEBHOOK_URL"
//! headers = { "X-Api-Key" = "file:/run/secrets/ops-key" }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::{Notification, Notifier, SendError, SendFuture};
use crate::Error;

/// `[targets.NAME]` with `type = "http"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to send: an `http://` or `https://` URL. Webhook URLs often carry a token, so
    /// this is a secret: a literal, `env:NAME` or `file:/path`; it is never logged.
    pub url: Secret,
    /// HTTP method: `"POST"` (default), `"PUT"`, `"PATCH"` or `"GET"`. `GET` sends no body,
    /// so it needs `format = "form"`, whose fields then go into the query string.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers, name = value. Values are secrets (literal, `env:NAME` or
    /// `file:/path`) and are never logged. A `Content-Type` here replaces the format's.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// How the notification is encoded: `"json"` (default), `"form"`
    /// (`application/x-www-form-urlencoded` of `title`, `body`, `topic` and the message's
    /// top-level scalar fields), `"text"` (the rendered body as `text/plain`) or
    /// `"alertmanager"` (Prometheus Alertmanager's webhook JSON, version 4: one alert per
    /// alarm, `receiver` the target's name; see `notify/alertmanager.rs`).
    #[serde(default)]
    pub format: Format,
    /// With `format = "json"`, what the JSON body is: `"fields"` (default: the decoded
    /// message, e.g. the alarm object) or `"template"` (the route's rendered `body`, which
    /// must then be valid JSON; a body that is not fails without retrying).
    #[serde(default)]
    pub body: JsonBody,
    /// User name for HTTP basic authentication.
    pub username: Option<String>,
    /// Password for HTTP basic authentication (needs `username`): a literal, `env:NAME` or
    /// `file:/path`.
    pub password: Option<Secret>,
    /// Time limit for one request, connecting included, e.g. `"10s"` (default) or
    /// `"500ms"`. The target's per-attempt timeout still applies around it.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "get")]
    Get,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Form,
    Text,
    Alertmanager,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JsonBody {
    #[default]
    Fields,
    Template,
}

pub(crate) fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// The generic webhook plugin, built from a validated [`Config`].
pub struct Http {
    client: reqwest::Client,
    method: Method,
    url: Url,
    /// `scheme://host:port` of `url`, the only part of it that is ever shown.
    endpoint: String,
    headers: HeaderMap,
    has_content_type: bool,
    format: Format,
    body: JsonBody,
    auth: Option<(String, Option<Secret>)>,
    redactor: Redactor,
}

impl Http {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, Error> {
        let url = parse_url(name, "url", cfg.url.expose())?;
        let method = match cfg.method {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Get => Method::GET,
        };
        if cfg.method == HttpMethod::Get && cfg.format != Format::Form {
            return Err(target_error(
                name,
                "format",
                "method = \"GET\" sends no body: use format = \"form\" to send the fields as \
                 query parameters",
            ));
        }
        if cfg.body == JsonBody::Template && cfg.format != Format::Json {
            return Err(target_error(
                name,
                "body",
                "only applies to format = \"json\" (form and text always use the rendered body, \
                 alertmanager its own JSON)",
            ));
        }

        let mut headers = HeaderMap::new();
        let mut redactor = Redactor::for_url(&url);
        for (key, secret) in &cfg.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                target_error(
                    name,
                    "headers",
                    format!("{key:?} is not a valid header name"),
                )
            })?;
            if headers.contains_key(&header) {
                return Err(target_error(
                    name,
                    "headers",
                    format!("{key:?} is given twice"),
                ));
            }
            let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                target_error(
                    name,
                    "headers",
                    format!("the value of {key:?} is not a valid header value (control characters or non-ASCII?)"),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
            redactor.add(secret.expose());
        }

        let auth = match (&cfg.username, &cfg.password) {
            (None, None) => None,
            (None, Some(_)) => return Err(target_error(name, "password", "needs a username")),
            (Some(user), password) => {
                if user.is_empty() || user.contains(':') {
                    return Err(target_error(
                        name,
                        "username",
                        "must be non-empty and contain no ':'",
                    ));
                }
                if headers.contains_key(reqwest::header::AUTHORIZATION) {
                    return Err(target_error(
                        name,
                        "username",
                        "basic auth and an Authorization header exclude each other",
                    ));
                }
                if let Some(p) = password {
                    redactor.add(p.expose());
                }
                Some((user.clone(), password.clone()))
            }
        };

        Ok(Http {
            client: client(name, cfg.timeout)?,
            method,
            endpoint: endpoint(&url),
            url,
            has_content_type: headers.contains_key(CONTENT_TYPE),
            headers,
            format: cfg.format,
            body: cfg.body,
            auth,
            redactor,
        })
    }

    async fn deliver(&self, n: &Notification) -> Result<(), SendError> {
        let mut url = self.url.clone();
        let mut content_type = None;
        let mut body = None;
        let mut form = None;
        match self.format {
            Format::Json => {
                let json = match self.body {
                    JsonBody::Fields => serde_json::to_vec(&n.fields).map_err(|e| {
                        SendError::Permanent(format!("http: cannot encode the fields: {e}"))
                    })?,
                    JsonBody::Template => {
                        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&n.body) {
                            return Err(SendError::Permanent(format!(
                                "http: the rendered body is not valid JSON ({e}); fix the route's body \
                                 template or set body = \"fields\""
                            )));
                        }
                        n.body.clone().into_bytes()
                    }
                };
                content_type = Some("application/json");
                body = Some(json);
            }
            Format::Form if self.method == Method::GET => {
                url.query_pairs_mut().extend_pairs(form_pairs(n));
            }
            Format::Form => form = Some(form_pairs(n)),
            Format::Text => {
                content_type = Some("text/plain; charset=utf-8");
                body = Some(n.body.clone().into_bytes());
            }
            Format::Alertmanager => {
                let json = serde_json::to_vec(&super::alertmanager::payload(n)).map_err(|e| {
                    SendError::Permanent(format!("http: cannot encode the alerts: {e}"))
                })?;
                content_type = Some("application/json");
                body = Some(json);
            }
        }

        let mut req = self
            .client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, password.as_ref().map(Secret::expose));
        }
        if let (Some(ct), false) = (content_type, self.has_content_type) {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        if let Some(form) = form {
            // Sets the form content type unless a `Content-Type` header was configured.
            req = req.form(&form);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error("http", e, &self.redactor))?;
        let status = resp.status();
        let body = read_body(resp, SNIPPET_READ_LIMIT).await;
        if status.is_success() {
            tracing::debug!(endpoint = %self.endpoint, %status, "http notification delivered");
            return Ok(());
        }
        Err(status_error(
            "http",
            status,
            &snippet(&body),
            &self.redactor,
        ))
    }
}

/// `title`, `body`, `topic`, then the message's top-level scalar fields (strings, numbers,
/// booleans; `null`s, arrays and objects are left out, as are fields named like the first
/// three).
fn form_pairs(n: &Notification) -> Vec<(&str, String)> {
    let mut pairs = vec![
        ("title", n.title.clone()),
        ("body", n.body.clone()),
        ("topic", n.topic.clone()),
    ];
    if let Value::Object(map) = &n.fields {
        for (key, value) in map {
            if matches!(key.as_str(), "title" | "body" | "topic") {
                continue;
            }
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null | Value::Array(_) | Value::Object(_) => continue,
            };
            pairs.push((key.as_str(), value));
        }
    }
    pairs
}

impl Notifier for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(n))
    }
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("method", &self.method)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("format", &self.format)
            .field("body", &self.body)
            .field("basic_auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

// ---- Shared by the HTTP-based plugins ----

/// How much of a response is read when only a snippet of it is shown.
pub(crate) const SNIPPET_READ_LIMIT: usize = 4 * 1024;
/// How much of a response body an error message quotes, at most.
const SNIPPET_BYTES: usize = 200;
/// Connecting may take at most this long (or the request timeout, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn target_error(target: &str, key: &str, message: impl Into<String>) -> Error {
    Error::Target {
        target: target.to_owned(),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// One client per plugin: bounded connect and request times, no redirects (a redirect
/// could carry header secrets to another host; a 3xx is reported as a permanent error).
pub(crate) fn client(target: &str, timeout: HumanDuration) -> Result<reqwest::Client, Error> {
    if timeout.0.is_zero() {
        return Err(target_error(target, "timeout", "must be more than 0s"));
    }
    lookout_shared::tls::install_default_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout.0))
        .timeout(timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lookout-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            target_error(
                target,
                "type",
                format!("cannot set up an HTTP client: {}", e.without_url()),
            )
        })
}

/// Parses an `http(s)://` URL. Errors never quote the URL, which may hold a token.
pub(crate) fn parse_url(target: &str, key: &str, url: &str) -> Result<Url, Error> {
    let parsed = Url::parse(url.trim())
        .map_err(|e| target_error(target, key, format!("not a valid URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(target_error(
            target,
            key,
            "must start with http:// or https://",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(target_error(target, key, "has no host"));
    }
    Ok(parsed)
}

/// Parses a service's `base_url` (a self-hosted server, or a test's local one): an
/// `http(s)://` URL, optionally with a path prefix, without query or fragment (the plugin
/// appends the API's own path to it).
pub(crate) fn parse_base_url(target: &str, key: &str, url: &str) -> Result<Url, Error> {
    let base = parse_url(target, key, url)?;
    if base.query().is_some() || base.fragment().is_some() {
        return Err(target_error(
            target,
            key,
            "must not have a query or fragment",
        ));
    }
    Ok(base)
}

/// `base` with `segments` appended, each percent-encoded as one path segment, so a value
/// from a message (an alert alias) cannot change the path or add a query.
pub(crate) fn join_path(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Sends one request and classifies the outcome as every HTTP-based plugin does: a 2xx
/// gives the start of the response body; anything else is a [`SendError`], retried for
/// connection errors, timeouts, 408, 429 and 5xx (`kind` prefixes the message).
pub(crate) async fn send_checked(
    kind: &'static str,
    req: reqwest::RequestBuilder,
    endpoint: &str,
    redactor: &Redactor,
    read_limit: usize,
) -> Result<Vec<u8>, SendError> {
    let resp = req
        .send()
        .await
        .map_err(|e| transport_error(kind, e, redactor))?;
    let status = resp.status();
    let body = read_body(resp, read_limit).await;
    if status.is_success() {
        tracing::debug!(kind, endpoint, %status, "notification delivered");
        return Ok(body);
    }
    let err = status_error(kind, status, &snippet(&body), redactor);
    tracing::debug!(kind, endpoint, %status, "notification refused");
    Err(err)
}

/// `scheme://host[:port]`: what may be shown of a URL that might carry a token.
pub(crate) fn endpoint(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Reads at most about `limit` bytes of a response body; errors just end the read (the
/// status has already said what matters).
pub(crate) async fn read_body(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// At most [`SNIPPET_BYTES`] of a body, cut at a character boundary, on one line.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(SNIPPET_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned();
    if end < text.len() {
        out.push('…');
    }
    out
}

/// Whether another attempt can help: timeouts (408), rate limits (429), server errors.
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// An unsuccessful status as a [`SendError`]: `kind: HTTP 503 Service Unavailable: detail`.
pub(crate) fn status_error(
    kind: &str,
    status: StatusCode,
    detail: &str,
    redactor: &Redactor,
) -> SendError {
    let mut message = format!("{kind}: HTTP {status}");
    if status.is_redirection() {
        message.push_str(" (redirects are not followed; point the URL at the final address)");
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let message = redactor.apply(&message);
    if is_retryable(status) {
        SendError::Retry(message)
    } else {
        SendError::Permanent(message)
    }
}

/// A failure to get a response at all. Connection errors and timeouts are worth another
/// attempt; a request that could not even be built is not. The URL is stripped from the
/// error first (it may hold a token) and the rest of the message redacted.
pub(crate) fn transport_error(kind: &str, e: reqwest::Error, redactor: &Redactor) -> SendError {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's own text ("error sending request") says less than `what`; its causes say
    // more ("tcp connect error: Connection refused").
    let mut message = format!("{kind}: {what}");
    let mut source = std::error::Error::source(&e);
    if source.is_none() {
        message.push_str(&format!(": {e}"));
    }
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    let message = redactor.apply(&message);
    if e.is_builder() {
        SendError::Permanent(message)
    } else {
        SendError::Retry(message)
    }
}

/// Replaces known secrets in text that came from outside (response bodies, error chains)
/// with `<redacted>`, in case a server echoes the request's path or headers back.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Too short to hide without garbling status codes and words; not worth much anyway.
    const MIN_LEN: usize = 4;
    /// Path segments and query values this long look like tokens.
    const TOKEN_LEN: usize = 16;

    /// The URL's path and query, and any part of them long enough to be a token.
    pub(crate) fn for_url(url: &Url) -> Self {
        let mut r = Redactor::default();
        let mut path_and_query = url.path().to_owned();
        if let Some(query) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        if path_and_query.len() > 1 {
            r.add(&path_and_query);
        }
        for segment in url.path_segments().into_iter().flatten() {
            if segment.len() >= Self::TOKEN_LEN {
                r.add(segment);
            }
        }
        for (_, value) in url.query_pairs() {
            if value.len() >= Self::TOKEN_LEN {
                r.add(&value);
            }
        }
        if let Some(password) = url.password() {
            r.add(password);
        }
        r
    }

    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() >= Self::MIN_LEN && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            // Longest first, so a secret containing another is hidden whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::TargetConfig;
    use crate::notify::test_server::{Reply, Request, TestServer, refused_addr};
    use crate::notify::test_support::alarm;

    fn config(toml_text: &str) -> Config {
        toml::from_str(toml_text).expect("valid config")
    }

    fn build(toml_text: &str) -> Http {
        Http::build("hook", &config(toml_text)).expect("builds")
    }

    fn build_error(toml_text: &str) -> String {
        Http::build("hook", &config(toml_text))
            .expect_err("rejected")
            .to_string()
    }

    /// The body decoded as `application/x-www-form-urlencoded`.
    fn form(req: &Request) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!("x:?{}", req.text())).expect("form body");
        url.query_pairs().into_owned().collect()
    }

    #[tokio::test]
    async fn json_format_posts_the_alarm_fields_with_custom_headers_and_basic_auth() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let http = build(&format!(
            "url = \"{}\"\nusername = \"bridge\"\npassword = \"pa55word\"\n\
             headers = {{ \"X-Api-Key\" = \"k3y-value\" }}",
            server.url("/hooks/alarms?src=lookout")
        ));
        http.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hooks/alarms?src=lookout");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("x-api-key"), Some("k3y-value"));
        // base64("bridge:pa55word")
        assert_eq!(
            req.header("authorization"),
            Some("Basic YnJpZGdlOnBhNTV3b3Jk")
        );
        assert!(
            req.header("user-agent")
                .is_some_and(|ua| ua.starts_with("lookout-bridge/"))
        );
        assert_eq!(req.json(), alarm().fields);
    }

    #[tokio::test]
    async fn json_format_can_send_the_rendered_body_template_with_put() {
        let mut server = TestServer::start(vec![Reply::text(204, "")]).await;
        let http = build(&format!(
            "url = \"{}\"\nmethod = \"PUT\"\nbody = \"template\"\n\
             headers = {{ \"Content-Type\" = \"application/vnd.ops+json\" }}",
            server.url("/put")
        ));
        let mut n = alarm();
        n.body = r#"{"content": "cpu on sim-1"}"#.into();
        http.send(&n).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "PUT");
        assert_eq!(req.header("content-type"), Some("application/vnd.ops+json"));
        assert_eq!(req.json(), json!({"content": "cpu on sim-1"}));
    }

    #[tokio::test]
    async fn a_body_template_that_is_not_json_fails_without_sending() {
        let server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let http = build(&format!(
            "url = \"{}\"\nbody = \"template\"",
            server.url("/")
        ));
        let err = http.send(&alarm()).await.expect_err("not JSON");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.contains("not valid JSON")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn form_format_encodes_title_body_topic_and_the_scalar_fields() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let http = build(&format!(
            "url = \"{}\"\nmethod = \"patch\"\nformat = \"form\"",
            server.url("/form")
        ));
        http.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "PATCH");
        assert_eq!(
            req.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(
            req.text()
                .starts_with("title=%5Bfiring%5D+sim-1+cpu_util&body=cpu_util%3A+anomaly")
        );
        let form = form(&req);
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("title"), Some("[firing] sim-1 cpu_util"));
        assert_eq!(get("body"), Some(alarm().body.as_str()));
        assert_eq!(get("topic"), Some("lookout/sim-1/alarms/cpu_util"));
        assert_eq!(get("state"), Some("firing"));
        assert_eq!(get("severity"), Some("3"));
        assert_eq!(get("score"), Some("4.1"));
        assert_eq!(get("labels"), None, "objects are not scalars");
    }

    #[tokio::test]
    async fn get_puts_the_form_fields_in_the_query_string() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let http = build(&format!(
            "url = \"{}\"\nmethod = \"GET\"\nformat = \"form\"",
            server.url("/notify?key=1")
        ));
        http.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(req.method, "GET");
        assert!(
            req.path
                .starts_with("/notify?key=1&title=%5Bfiring%5D+sim-1"),
            "{}",
            req.path
        );
        assert!(req.path.contains("&state=firing"), "{}", req.path);
        assert!(req.body.is_empty());
    }

    #[tokio::test]
    async fn text_format_sends_the_rendered_body_as_plain_text() {
        let mut server = TestServer::start(vec![Reply::text(200, "ok")]).await;
        let http = build(&format!(
            "url = \"{}\"\nformat = \"text\"",
            server.url("/text")
        ));
        http.send(&alarm()).await.expect("delivered");

        let req = server.request().await;
        assert_eq!(
            req.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(req.text(), alarm().body);
    }

    #[tokio::test]
    async fn alertmanager_format_posts_the_webhook_json_firing_then_resolved() {
        let mut server = TestServer::start(vec![Reply::text(200, "")]).await;
        let http = build(&format!(
            "url = \"{}\"\nformat = \"alertmanager\"",
            server.url("/alertmanager")
        ));
        let mut n = alarm();
        n.target = "am-receiver".into();
        http.send(&n).await.expect("delivered");
        let req = server.request().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/alertmanager");
        assert_eq!(req.header("content-type"), Some("application/json"));
        let firing = req.json();
        assert_eq!(firing["version"], "4");
        assert_eq!(firing["status"], "firing");
        assert_eq!(firing["receiver"], "am-receiver");
        assert_eq!(firing["groupKey"], "sim-1:cpu_util:1795457375316");
        assert_eq!(firing["commonLabels"]["alertname"], "cpu_util");
        let alert = &firing["alerts"][0];
        assert_eq!(alert["labels"]["host"], "sim-1");
        assert_eq!(alert["labels"]["severity"], "3");
        assert_eq!(alert["startsAt"], "2026-11-23T18:09:35.316Z");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

        n.fields["state"] = json!("resolved");
        http.send(&n).await.expect("delivered");
        let resolved = server.request().await.json();
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["endsAt"], "2026-11-23T18:09:36.316Z");
        assert_eq!(
            resolved["alerts"][0]["fingerprint"], alert["fingerprint"],
            "one episode, one fingerprint"
        );
    }

    #[tokio::test]
    async fn server_errors_rate_limits_and_timeouts_are_retried_and_client_errors_are_not() {
        let mut server = TestServer::start(vec![
            Reply::text(500, "database on fire"),
            Reply::text(429, "slow down"),
            Reply::text(408, ""),
            Reply::text(400, "missing field"),
            Reply::text(301, ""),
        ])
        .await;
        let http = build(&format!("url = \"{}\"", server.url("/")));

        let err = http.send(&alarm()).await.expect_err("500");
        assert!(matches!(err, SendError::Retry(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "http: HTTP 500 Internal Server Error: database on fire (will retry)"
        );
        assert!(
            matches!(http.send(&alarm()).await, Err(SendError::Retry(_))),
            "429"
        );
        assert!(
            matches!(http.send(&alarm()).await, Err(SendError::Retry(_))),
            "408"
        );
        let err = http.send(&alarm()).await.expect_err("400");
        assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
        assert_eq!(err.to_string(), "http: HTTP 400 Bad Request: missing field");
        let err = http.send(&alarm()).await.expect_err("301");
        assert!(
            matches!(err, SendError::Permanent(ref m) if m.contains("not followed")),
            "{err:?}"
        );
        for _ in 0..5 {
            server.request().await;
        }
    }

    #[tokio::test]
    async fn long_response_bodies_are_cut_to_a_snippet() {
        let _server = TestServer::start(vec![Reply::text(502, &"é".repeat(1000))]).await;
        let http = build(&format!("url = \"{}\"", _server.url("/")));
        let SendError::Retry(message) = http.send(&alarm()).await.expect_err("502") else {
            panic!("retry")
        };
        assert!(message.len() < 260, "{} bytes", message.len());
        assert!(message.ends_with('…'));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let addr = refused_addr().await;
        let http = build(&format!("url = \"http://{addr}/x\""));
        let err = http.send(&alarm()).await.expect_err("refused");
        assert!(
            matches!(err, SendError::Retry(ref m) if m.starts_with("http: cannot connect")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_and_is_retried() {
        let _server = TestServer::start(vec![Reply::Hang]).await;
        let http = build(&format!(
            "url = \"{}\"\ntimeout = \"200ms\"",
            _server.url("/")
        ));
        let err = http.send(&alarm()).await.expect_err("timeout");
        assert!(
            matches!(err, SendError::Retry(ref m) if m.starts_with("http: timed out")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn secrets_never_appear_in_debug_output_or_error_messages() {
        let url_token = "Zx81TokenInThePath0042";
        // The server echoes what it was sent, as some do in their error pages.
        let echo = format!("Cannot POST /hooks/{url_token} with key h3ader-s3cret and pa55word");
        let server = TestServer::start(vec![Reply::text(404, &echo)]).await;
        let http = build(&format!(
            "url = \"{}\"\nusername = \"u\"\npassword = \"pa55word\"\nheaders = {{ \"X-Key\" = \"h3ader-s3cret\" }}",
            server.url(&format!("/hooks/{url_token}"))
        ));
        let refused = build(&format!(
            "url = \"http://{}/hooks/{url_token}\"\nheaders = {{ \"X-Key\" = \"h3ader-s3cret\" }}",
            refused_addr().await
        ));
        let texts = [
            format!("{http:?}"),
            http.send(&alarm()).await.expect_err("404").to_string(),
            refused
                .send(&alarm())
                .await
                .expect_err("refused")
                .to_string(),
            build_error(&format!("url = \"ftp://h/{url_token}\"")),
            build_error(&format!(
                "url = \"http://h/{url_token}\"\nheaders = {{ \"X-Key\" = \"bad\\nh3ader-s3cret\" }}"
            )),
        ];
        for text in &texts {
            for secret in [url_token, "h3ader-s3cret", "pa55word"] {
                assert!(!text.contains(secret), "{secret:?} leaked in {text:?}");
            }
        }
        assert!(
            texts[0].contains("x-key"),
            "header names are fine to show: {}",
            texts[0]
        );
        assert!(texts[1].contains("<redacted>"), "{}", texts[1]);
    }

    #[test]
    fn the_config_is_strict_and_invalid_settings_name_their_key() {
        let parsed: TargetConfig =
            toml::from_str("type = \"http\"\nurl = \"http://h/\"\nformat = \"form\"").unwrap();
        assert!(matches!(
            parsed,
            TargetConfig::Http(Config {
                format: Format::Form,
                ..
            })
        ));
        assert!(
            toml::from_str::<TargetConfig>("type = \"http\"\nurl = \"http://h/\"\nuri = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<Config>("url = \"http://h/\"\nmethod = \"DELETE\"").is_err());

        assert_eq!(
            build_error("url = \"h/path\""),
            "targets.hook.url: not a valid URL (relative URL without a base)"
        );
        assert_eq!(
            build_error("url = \"mailto:a@b\""),
            "targets.hook.url: must start with http:// or https://"
        );
        assert!(
            build_error("url = \"http://h/\"\nmethod = \"GET\"")
                .starts_with("targets.hook.format:")
        );
        assert!(
            build_error("url = \"http://h/\"\nformat = \"text\"\nbody = \"template\"")
                .starts_with("targets.hook.body:")
        );
        assert!(
            build_error("url = \"http://h/\"\nformat = \"alertmanager\"\nbody = \"template\"")
                .starts_with("targets.hook.body:")
        );
        assert!(
            build_error("url = \"http://h/\"\nmethod = \"GET\"\nformat = \"alertmanager\"")
                .starts_with("targets.hook.format:")
        );
        assert_eq!(
            build_error("url = \"http://h/\"\npassword = \"p\""),
            "targets.hook.password: needs a username"
        );
        assert!(
            build_error("url = \"http://h/\"\nheaders = { \"Bad Name\" = \"v\" }")
                .starts_with("targets.hook.headers:")
        );
        assert!(
            build_error("url = \"http://h/\"\nheaders = { \"a\" = \"1\", \"A\" = \"2\" }")
                .contains("twice")
        );
        assert!(
            build_error("url = \"http://h/\"\nusername = \"u\"\nheaders = { \"Authorization\" = \"Bearer x\" }")
                .starts_with("targets.hook.username:")
        );
        assert_eq!(
            build_error("url = \"http://h/\"\ntimeout = \"0s\""),
            "targets.hook.timeout: must be more than 0s"
        );
    }

    #[test]
    fn snippets_stay_short_on_one_line_and_cut_at_character_boundaries() {
        assert_eq!(
            snippet(b"  {\"error\":\n\"nope\"}\n"),
            "{\"error\": \"nope\"}"
        );
        let long = "ü".repeat(150);
        let cut = snippet(long.as_bytes());
        assert!(cut.len() <= SNIPPET_BYTES + '…'.len_utf8() && cut.ends_with('…'));
        assert_eq!(snippet(b""), "");
    }
}
