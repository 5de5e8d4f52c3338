//! A tiny HTTP/1.1 server for the HTTP plugins' tests (`http`, `slack`, `telegram`): it
//! records each request and answers from a script, one connection per request
//! (`Connection: close`). One server for all three, so they test against the same reading
//! of the protocol. The end-to-end tests, outside this crate, use `tests/common`'s
//! `HttpCapture`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::notify::Notification;

/// One request as the server saw it.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }

    /// The body decoded as `application/x-www-form-urlencoded`.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!("x:?{}", self.text())).expect("form body");
        url.query_pairs().into_owned().collect()
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// A status, a content type and a body.
    Status(u16, &'static str, String),
    /// Read the request, then say nothing until the client gives up.
    Hang,
}

impl Reply {
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Reply::Status(status, "text/plain", body.to_owned())
    }

    pub(crate) fn json(status: u16, body: Value) -> Self {
        Reply::Status(status, "application/json", body.to_string())
    }
}

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Request>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `replies` in order, repeating the last one.
    pub(crate) async fn start(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "script at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, requests) = mpsc::unbounded_channel();
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let reply = {
                    let mut replies = replies.lock().unwrap();
                    if replies.len() > 1 {
                        replies.pop_front().unwrap()
                    } else {
                        replies[0].clone()
                    }
                };
                tokio::spawn(serve(stream, reply, tx.clone()));
            }
        });
        TestServer {
            addr,
            requests,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request received; panics after 5 s without one.
    pub(crate) async fn request(&mut self) -> Request {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("server running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, reply: Reply, tx: mpsc::UnboundedSender<Request>) {
    let mut stream = BufReader::new(stream);
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let _ = tx.send(request);
    match reply {
        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        Reply::Status(status, content_type, body) => {
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let stream = stream.get_mut();
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| {
            v.parse::<usize>().expect("numeric content-length")
        });
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// An address nothing listens on: connecting is refused.
pub(crate) async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// A firing alarm as the agent publishes it (`docs/topics.md`), already rendered.
pub(crate) fn alarm() -> Notification {
    let fields = json!({
        "id": "sim-1:cpu_util:1795457375316", "host": "sim-1", "source": "cpu_util",
        "state": "firing", "severity": 3, "ts": 1795457376316_u64, "started_at": 1795457375316_u64,
        "score": 4.1, "threshold": 2.0,
        "summary": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
        "labels": {"ip": "10.0.0.1"}
    });
    Notification {
        target: "test".into(),
        topic: "lookout/sim-1/alarms/cpu_util".into(),
        title: "[firing] sim-1 cpu_util".into(),
        body: "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)".into(),
        raw: fields.to_string().into_bytes(),
        fields,
    }
}
