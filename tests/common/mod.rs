//! Helpers for end-to-end tests: real processes, real brokers, loopback only, every wait
//! bounded. Each process is killed when its guard drops, so a failing test leaves nothing
//! running. [`http`] is the scripted HTTP server for notifier targets; the bridge's unit
//! tests include that file as well.

#![allow(dead_code)]

pub mod http;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port that was free a moment ago on 127.0.0.1, and never handed to another test of
/// this process. Tests stop and restart their brokers on the same port; while one is
/// down the kernel may offer its port to a test starting beside it, whose broker would
/// then take it, and both agents (`sim-1` alike) would end up publishing into one broker.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `--set`s for simulated hosts that alarm within seconds and stay alarmed: level shifts
/// only, the first after 4 simulated minutes (4 s at speed 60), each lasting 30 simulated
/// minutes, no refit that could learn the shifted level while a test looks, and alarms
/// from the first fit on (the settling hour would be a minute at speed 60).
pub const LEVEL_SHIFTS_ONLY: &[&str] = &[
    "simulate.first_anomaly_after=4m",
    "simulate.anomaly_every=1m",
    "simulate.anomaly_duration=30m",
    "simulate.kind_weights.spike=0",
    "simulate.kind_weights.drop=0",
    "simulate.kind_weights.stuck=0",
    "simulate.kind_weights.climb=0",
    "simulate.kind_weights.oscillation=0",
    "simulate.kind_weights.dropout=0",
    "detector.train.every=100000",
    "detector.alarm.settle=0",
    "detector.alarm.settle_for=0s",
];

/// `lookout-agent run` of the shipped config with `hosts` simulated hosts at `speed`×
/// real time, publishing to the broker on `port` (its embedded broker off), then a
/// `--set` for each of `sets`.
pub fn sim_run_args(port: u16, hosts: usize, speed: u32, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        "configs/agent.toml".into(),
        "--simulate".into(),
        hosts.to_string(),
        "--speed".into(),
        speed.to_string(),
        "--set".into(),
        "broker.enabled=false".into(),
        "--set".into(),
        format!("mqtt.url=mqtt://127.0.0.1:{port}"),
    ];
    for set in sets {
        args.push("--set".into());
        args.push((*set).into());
    }
    args
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; returns the exit code.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        unsafe_free_sigterm(self.child.id());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process has logged a line containing `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{} never logged {needle:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

fn spawn_logged(name: &'static str, mut cmd: Command, dir: &Path) -> Proc {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("{name}-{n}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { child, name, log }
}

/// Starts mosquitto on `port` (loopback, in memory). Fails the test, never skips, when
/// mosquitto is not installed: `.ci/run` installs it.
pub fn mosquitto(port: u16, dir: &Path) -> Proc {
    spawn_mosquitto(port, dir, "persistence false\n", "")
}

/// [`mosquitto`] with `extra` appended to its configuration: more listeners (TLS, say),
/// each followed by its own settings. Waits for `port` only; wait for the others yourself.
pub fn mosquitto_with(port: u16, dir: &Path, extra: &str) -> Proc {
    spawn_mosquitto(port, dir, "persistence false\n", extra)
}

/// mosquitto that keeps retained messages and persistent sessions in `dir` across a
/// restart (written when it is stopped with SIGTERM), as a production broker would.
pub fn mosquitto_persistent(port: u16, dir: &Path) -> Proc {
    let store = dir.join("mosquitto-db");
    std::fs::create_dir_all(&store).unwrap();
    // Started as root, mosquitto drops to its own user, which must be able to reach the
    // store (temp dirs are 0700) and write in it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    spawn_mosquitto(
        port,
        dir,
        &format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            store.display()
        ),
        "",
    )
}

fn spawn_mosquitto(port: u16, dir: &Path, global: &str, extra: &str) -> Proc {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n{global}{extra}"),
    )
    .unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is not installed (apt-get install -y mosquitto); .ci/run installs it");
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let mut p = spawn_logged("mosquitto", cmd, dir);
    wait_for_port(port, Duration::from_secs(10));
    // Something listens; make sure it is this mosquitto and not a process that took the
    // port meanwhile (a mosquitto that cannot bind exits at once, naming the port).
    std::thread::sleep(Duration::from_millis(100));
    if let Ok(Some(status)) = p.child.try_wait() {
        panic!(
            "mosquitto on 127.0.0.1:{port} exited ({status}):\n{}",
            p.log_text()
        );
    }
    p
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listening on 127.0.0.1:{port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A binary of the workspace: Cargo's path when the test belongs to the binary's package,
/// else its sibling in the same target directory (built on demand), so end-to-end tests
/// that need both binaries can live in either package.
fn workspace_bin(name: &str, from_cargo: Option<&'static str>) -> PathBuf {
    if let Some(p) = from_cargo {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "cannot build {name}");
    }
    bin
}

pub fn agent_bin() -> PathBuf {
    workspace_bin("lookout-agent", option_env!("CARGO_BIN_EXE_lookout-agent"))
}

pub fn bridge_bin() -> PathBuf {
    workspace_bin(
        "lookout-bridge",
        option_env!("CARGO_BIN_EXE_lookout-bridge"),
    )
}

/// Runs `lookout-bridge` with `args` from the repo root.
pub fn bridge(args: &[&str], dir: &Path) -> Proc {
    bridge_with_env(args, dir, &[])
}

/// [`bridge`] with extra environment variables.
pub fn bridge_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(bridge_bin());
    cmd.args(args)
        .current_dir(repo_root())
        .env("LOOKOUT_LOG", "info")
        .envs(env.iter().copied());
    spawn_logged("bridge", cmd, dir)
}

/// Runs `lookout-agent` with `args` from the repo root.
pub fn agent(args: &[&str], dir: &Path) -> Proc {
    agent_with_env(args, dir, &[])
}

/// [`agent`] with extra environment variables (secrets given as `env:NAME`).
pub fn agent_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args)
        .current_dir(repo_root())
        .env("LOOKOUT_LOG", "info")
        .envs(env.iter().copied());
    // Each test its own outbox, buffer and model snapshots: shared ones would replay one
    // test's alarms or scores in another, or start its models with another test's learning.
    if args.first() == Some(&"run") && !args.iter().any(|a| a.starts_with("outbox.dir=")) {
        cmd.arg("--set")
            .arg(format!("outbox.dir={}", dir.join("outbox").display()));
    }
    if args.first() == Some(&"run") && !args.iter().any(|a| a.starts_with("buffer.dir=")) {
        cmd.arg("--set")
            .arg(format!("buffer.dir={}", dir.join("buffer").display()));
    }
    if args.first() == Some(&"run") && !args.iter().any(|a| a.starts_with("snapshots.dir=")) {
        cmd.arg("--set")
            .arg(format!("snapshots.dir={}", dir.join("models").display()));
    }
    spawn_logged("agent", cmd, dir)
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The QoS it was delivered with: MQTT keeps order only among messages of one QoS.
    pub qos: u8,
    pub at: Instant,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                self.text()
            )
        })
    }
}

/// An ordinary MQTT client subscribed to `filters`, collecting everything it receives.
pub struct Subscriber {
    rx: mpsc::Receiver<Msg>,
    pub seen: Vec<Msg>,
    _task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(port: u16, filters: &[&str]) -> Self {
        // Ids unique within the process: a second client with the same id would take the
        // first one's session over, and the two would keep kicking each other out.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "e2e-sub-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Self::start(&id, port, filters, false).await
    }

    /// A subscriber with a persistent session (clean session off, QoS 1) under `id`: what
    /// arrives at the broker while it is away, or while a persistent broker restarts, is
    /// kept for it. It subscribes only when the broker holds no session for it (a
    /// subscription again would make the broker send the retained messages twice), and
    /// returns once the first subscription is acknowledged.
    pub async fn persistent(port: u16, id: &str, filters: &[&str]) -> Self {
        Self::start(id, port, filters, true).await
    }

    async fn start(id: &str, port: u16, filters: &[&str], persistent: bool) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_clean_session(!persistent);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let (tx, rx) = mpsc::channel(1_000_000);
        let subscribed = std::sync::Arc::new(tokio::sync::Notify::new());
        let on_suback = subscribed.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack)))
                        if !(persistent && ack.session_present) =>
                    {
                        for f in &filters {
                            let _ = client.subscribe(f.clone(), QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => on_suback.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            qos: p.qos as u8,
                            at: Instant::now(),
                        };
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        if persistent {
            tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
                .await
                .unwrap_or_else(|_| panic!("no SUBACK for {id} on port {port} within 10 s"));
        }
        Self {
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    /// Collects whatever arrives for `d`.
    pub async fn collect_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(m);
        }
    }

    /// Waits until `pred` holds for some received message; returns a copy of it.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        if let Some(m) = self.seen.iter().find(|m| pred(m)) {
            return m.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    let hit = pred(&m);
                    self.seen.push(m.clone());
                    if hit {
                        return m;
                    }
                }
                _ => panic!(
                    "timed out after {timeout:?} waiting for {what}; {} messages seen, topics: {:?}",
                    self.seen.len(),
                    self.seen
                        .iter()
                        .map(|m| m.topic.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                ),
            }
        }
    }

    /// Everything received so far, without waiting.
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
    }
}

impl Drop for Subscriber {
    /// Disconnects: a dropped subscriber's connection would otherwise live on.
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// The whole lines of a file a bridge's `file` target writes, each parsed as JSON. A last
/// line without its newline is one being written at this moment (a read may land between
/// the pages of one `write`), not yet a line; a line left torn for good keeps the count
/// short, and the test waiting for it fails.
pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text[..text.rfind('\n').map_or(0, |i| i + 1)]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("lookout-{name}-"))
        .tempdir()
        .unwrap()
}

/// Publishes `n` distinct firing alarms (ids `h:cpu:0`…) at QoS 1 and waits until sent.
pub async fn publish_alarms(port: u16, n: usize) {
    let msgs = (0..n)
        .map(|i| {
            let alarm = serde_json::json!({
                "id": format!("h:cpu:{i}"), "host": "h", "source": "cpu", "state": "firing", "severity": 2,
                "ts": i, "started_at": i, "score": 3.0, "threshold": 2.0, "summary": "test", "labels": {}
            });
            ("lookout/h/alarms/cpu".to_string(), alarm.to_string(), false)
        })
        .collect();
    publish(port, msgs).await;
}

/// Publishes `(topic, payload, retain)` at QoS 1 and waits until the broker has them all.
pub async fn publish(port: u16, msgs: Vec<(String, String, bool)>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "e2e-pub-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let n = msgs.len();
    for (topic, payload, retain) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Err(_)) | Err(_) => break,
            _ => {}
        }
    }
    assert_eq!(acks, n, "the broker acknowledged every alarm");
    client.disconnect().await.unwrap();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
        if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
}

/// Test certificates in `dir` (PEM): `ca.pem`, a server certificate for `localhost` only
/// (`server.pem`, `server.key`), a client certificate (`client.pem`, `client.key`) and a
/// second CA that signed nothing here (`other-ca.pem`).
pub fn make_test_pki(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let (ca_pem, issuer) = ca("Lookout test CA");
    let (other_pem, _) = ca("Some other CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.clone()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(
        vec!["lookout-client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    for (name, pem) in [
        ("ca.pem", ca_pem),
        ("other-ca.pem", other_pem),
        ("server.pem", server),
        ("server.key", server_key),
        ("client.pem", client),
        ("client.key", client_key),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
}
