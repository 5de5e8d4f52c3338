//! A tiny HTTP/1.1 server on 127.0.0.1 for tests that need something at the other end of a
//! webhook, Slack or the Telegram Bot API: it answers each request from a script and records
//! every request it read, one connection per request (`Connection: close`).
//!
//! One server for every test, so all of them test against the same reading of the protocol:
//! the end-to-end tests reach it as `common::http`, and the bridge's unit tests include this
//! very file (`#[path]` in `broker-bridge/src/notify/mod.rs`). Hence it uses nothing of
//! Lookout, only std, tokio and serde_json.

// Each test binary that includes this file uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`TestServer::request`] waits, and how long a [`Reply::Hang`] says nothing.
const WAIT: Duration = Duration::from_secs(5);
const HANG: Duration = Duration::from_secs(60);

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, a content type and a body.
    Status(u16, &'static str, String),
    /// Read the request, then say nothing until the client gives up.
    Hang,
}

impl Reply {
    pub fn text(status: u16, body: &str) -> Self {
        Reply::Status(status, "text/plain", body.to_owned())
    }

    pub fn json(status: u16, body: Value) -> Self {
        Reply::Status(status, "application/json", body.to_string())
    }

    fn status(&self) -> Option<u16> {
        match self {
            Reply::Status(status, _, _) => Some(*status),
            Reply::Hang => None,
        }
    }
}

/// One request as the server read it, and the status it answered with.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status of the scripted reply; `None` for [`Reply::Hang`].
    pub answered: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// The server; it stops accepting when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Every request read so far, in the order the replies were handed out.
    log: watch::Receiver<Vec<Request>>,
    /// How many of them [`request`](Self::request) has returned.
    returned: usize,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Answers the n-th request it reads with `script[n]`; the last reply repeats.
    pub async fn start(script: Vec<Reply>) -> Self {
        assert!(!script.is_empty(), "a script of at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (log_tx, log) = watch::channel(Vec::new());
        let (script, log_tx): (Arc<[Reply]>, _) = (script.into(), Arc::new(log_tx));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&script), Arc::clone(&log_tx)));
            }
        });
        TestServer {
            addr,
            log,
            returned: 0,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request that this method has not returned yet; panics after 5 s without one.
    pub async fn request(&mut self) -> Request {
        let n = self.returned;
        let log = tokio::time::timeout(WAIT, self.log.wait_for(|log| log.len() > n))
            .await
            .expect("a request within 5 s")
            .expect("server running");
        self.returned += 1;
        log[n].clone()
    }

    /// Every request read so far, without waiting.
    pub fn requests(&self) -> Vec<Request> {
        self.log.borrow().clone()
    }

    /// The bodies of the requests answered 2xx so far, as text.
    pub fn accepted(&self) -> Vec<String> {
        self.log
            .borrow()
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on: connecting is refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

async fn serve(stream: TcpStream, script: Arc<[Reply]>, log: Arc<watch::Sender<Vec<Request>>>) {
    let mut stream = BufReader::new(stream);
    let Some(mut request) = read_request(&mut stream).await else {
        return;
    };
    // The reply is picked and the request logged under one lock, so the n-th request in
    // the log is the one that got `script[n]`.
    let mut reply = None;
    log.send_modify(|log| {
        let next = script.get(log.len()).or(script.last()).expect("a reply");
        request.answered = next.status();
        log.push(request);
        reply = Some(next.clone());
    });
    match reply.expect("picked above") {
        Reply::Hang => tokio::time::sleep(HANG).await,
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

/// The request line, the headers, and a body of `Content-Length` bytes (none without one).
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
        answered: None,
    })
}
