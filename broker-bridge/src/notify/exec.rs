//! `type = "exec"`: runs a program once per notification, the message on its stdin.
//!
//! The program is started directly (no shell), with `LOOKOUT_TOPIC` and `LOOKOUT_TITLE` in
//! its environment. Exit status 0 means delivered; 75 (`EX_TEMPFAIL` from `sysexits.h`)
//! asks for a retry; any other status, death by a signal or a program that cannot be
//! started is permanent. A program still running at `timeout` is killed and the attempt is
//! retried. The first KiB of its stderr goes into the error message.
//!
//! Only the program itself is killed on timeout, not processes it started: a script
//! should `exec` its last long-running command.

use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{Notification, Notifier, SendError, SendFuture};

/// Exit status with which a program asks for a retry (`EX_TEMPFAIL`).
const EX_TEMPFAIL: i32 = 75;
/// How much of the program's stderr goes into an error message.
const STDERR_LIMIT: usize = 1024;
/// How long to keep reading stderr after the program exited: a process it left running in
/// the background may hold the pipe open.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// `[targets.NAME]` with `type = "exec"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Program to run: a path, or a name looked up in `PATH`. It is not run through a
    /// shell; write `command = "/bin/sh"` and `args = ["-c", "..."]` for shell syntax.
    pub command: PathBuf,
    /// Arguments. `{topic}` is replaced by the message's topic and `{target}` by this
    /// target's name; any other text, braces included, is passed as written. Topics come
    /// from whoever may publish on the broker: never splice `{topic}` into a `sh -c`
    /// script, pass it as an argument of its own (`"$1"`) or read `$LOOKOUT_TOPIC`.
    #[serde(default)]
    pub args: Vec<String>,
    /// How long the program may run before it is killed and the attempt retried, like
    /// `"10s"` or `"500ms"`. Default `"10s"`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What the program reads on stdin: `"json"` (default) for the decoded message as one
    /// line of JSON, or `"body"` for the rendered body template.
    #[serde(default)]
    pub input: Input,
}

/// What an `exec` program reads on its stdin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// The decoded message (`fields`) as one line of JSON, newline-terminated.
    #[default]
    Json,
    /// The rendered body, as is.
    Body,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// The `exec` notifier, built from a validated [`Config`].
#[derive(Debug)]
pub struct Exec {
    command: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    input: Input,
}

impl Exec {
    pub fn build(name: &str, cfg: &Config) -> Result<Self, crate::Error> {
        let invalid = |key: &str, message: String| crate::Error::Target {
            target: name.into(),
            key: key.into(),
            message,
        };
        if cfg.command.as_os_str().is_empty() {
            return Err(invalid("command", "must not be empty".into()));
        }
        if cfg.timeout.0.is_zero() {
            return Err(invalid("timeout", "must be more than zero".into()));
        }
        if let Some(arg) = cfg.args.iter().find(|a| a.contains('\0')) {
            return Err(invalid(
                "args",
                format!("{arg:?} contains a NUL byte, which no program can receive"),
            ));
        }
        Ok(Exec {
            command: cfg.command.clone(),
            args: cfg.args.clone(),
            timeout: cfg.timeout.0,
            input: cfg.input,
        })
    }

    async fn run(&self, n: &Notification) -> Result<(), SendError> {
        let program = self.command.display();
        let input = match self.input {
            Input::Json => {
                let mut line = serde_json::to_vec(&n.fields).map_err(|e| {
                    SendError::Permanent(format!("cannot encode the message as JSON: {e}"))
                })?;
                line.push(b'\n');
                line
            }
            Input::Body => n.body.as_bytes().to_vec(),
        };
        let mut child = Command::new(&self.command)
            .args(self.args.iter().map(|a| expand(a, &n.topic, &n.target)))
            .env("LOOKOUT_TOPIC", &n.topic)
            .env("LOOKOUT_TITLE", &n.title)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(&program.to_string(), &e))?;

        let mut stderr = Vec::new();
        let outcome =
            tokio::time::timeout(self.timeout, supervise(&mut child, input, &mut stderr)).await;
        let status = match outcome {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                let _ = child.kill().await;
                return Err(SendError::Retry(format!(
                    "waiting for {program} failed: {e}"
                )));
            }
            Err(_elapsed) => {
                // `kill` sends SIGKILL and reaps the child, so no zombie is left behind.
                let _ = child.kill().await;
                return Err(SendError::Retry(format!(
                    "{program} did not finish within {}; killed it{}",
                    HumanDuration(self.timeout),
                    stderr_suffix(&stderr),
                )));
            }
        };
        if status.success() {
            return Ok(());
        }
        let why = describe(status);
        let message = format!("{program} {why}{}", stderr_suffix(&stderr));
        if status.code() == Some(EX_TEMPFAIL) {
            Err(SendError::Retry(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}

impl Notifier for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.run(n))
    }
}

/// A program that is missing or not executable stays so; a busy executable (being
/// replaced) or a process limit may clear up.
fn spawn_error(program: &str, e: &io::Error) -> SendError {
    let message = format!("cannot start {program}: {e}");
    match e.kind() {
        io::ErrorKind::ExecutableFileBusy
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::OutOfMemory
        | io::ErrorKind::Interrupted => SendError::Retry(message),
        _ => SendError::Permanent(message),
    }
}

/// Feeds `input` to the child, collects its stderr into `stderr` (bounded) and waits for
/// it to exit. Cancel-safe in the sense that matters: whatever stderr was read so far is
/// already in `stderr` when the caller's timeout drops this future.
async fn supervise(
    child: &mut Child,
    input: Vec<u8>,
    stderr: &mut Vec<u8>,
) -> io::Result<ExitStatus> {
    let stdin = child.stdin.take();
    let pipe = child.stderr.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A program that does not read its input closes the pipe early (EPIPE): not an
            // error. Dropping `stdin` afterwards closes it, so the program sees EOF.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
    };
    let mut collect = pin!(async move {
        if let Some(pipe) = pipe {
            collect_bounded(pipe, stderr).await;
        }
    });
    let mut exited = pin!(async {
        let (status, ()) = tokio::join!(child.wait(), feed);
        status
    });
    let mut collected = false;
    let status = loop {
        tokio::select! {
            status = &mut exited => break status,
            () = &mut collect, if !collected => collected = true,
        }
    };
    if !collected {
        let _ = tokio::time::timeout(STDERR_GRACE, collect).await;
    }
    status
}

/// Reads `pipe` to its end, keeping the first [`STDERR_LIMIT`] bytes in `out` and
/// discarding the rest (so a chatty program never blocks on a full pipe).
async fn collect_bounded(mut pipe: impl AsyncRead + Unpin, out: &mut Vec<u8>) {
    let mut chunk = [0u8; 512];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = (STDERR_LIMIT + 1).saturating_sub(out.len());
                out.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// `": <stderr>"` for an error message, or nothing when the program said nothing.
fn stderr_suffix(stderr: &[u8]) -> String {
    let truncated = stderr.len() > STDERR_LIMIT;
    let text = String::from_utf8_lossy(&stderr[..stderr.len().min(STDERR_LIMIT)]);
    let text = text.trim();
    match (text.is_empty(), truncated) {
        (true, _) => String::new(),
        (false, false) => format!(": {text}"),
        (false, true) => format!(": {text}…"),
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    format!("failed ({status})")
}

/// Replaces `{topic}` and `{target}` in one pass, so a topic that happens to contain
/// `{target}` is not expanded twice.
fn expand(arg: &str, topic: &str, target: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{topic}") {
            out.push_str(topic);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{target}") {
            out.push_str(target);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn notification() -> Notification {
        let fields = json!({"host": "edge-42", "source": "cpu", "state": "firing"});
        Notification {
            target: "pager".into(),
            topic: "lookout/edge-42/alarms/cpu".into(),
            title: "[firing] edge-42 cpu".into(),
            body: "cpu is anomalous on edge-42".into(),
            raw: serde_json::to_vec(&fields).unwrap(),
            fields,
        }
    }

    fn config(toml_text: &str) -> Config {
        toml::from_str(toml_text).unwrap()
    }

    /// Writes a `/bin/sh` script into `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        path
    }

    fn exec_for(command: &Path, extra: &str) -> Exec {
        let cfg = config(&format!(
            "command = {:?}\n{extra}",
            command.display().to_string()
        ));
        Exec::build("pager", &cfg).unwrap()
    }

    /// Runs `script` through `/bin/sh` rather than executing it: a file just written can
    /// fail to execute with ETXTBSY while another test thread is forking.
    fn sh(script: &Path, args: &[&str], extra: &str) -> Exec {
        let mut all = vec![script.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        exec_for(Path::new("/bin/sh"), &format!("args = {all:?}\n{extra}"))
    }

    #[tokio::test]
    async fn the_program_reads_the_message_as_json_and_sees_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = script(
            dir.path(),
            "record.sh",
            &format!(
                r#"{{ cat; printf '%s|%s|%s\n' "$LOOKOUT_TOPIC" "$LOOKOUT_TITLE" "$*"; }} > '{}'"#,
                out.display()
            ),
        );
        let exec = sh(&cmd, &["--to", "{target}", "{topic}", "{x}"], "");

        exec.send(&notification()).await.unwrap();

        let written = std::fs::read_to_string(&out).unwrap();
        let (json_line, rest) = written.split_once('\n').unwrap();
        let fields: serde_json::Value = serde_json::from_str(json_line).unwrap();
        assert_eq!(fields, notification().fields);
        assert_eq!(
            rest,
            "lookout/edge-42/alarms/cpu|[firing] edge-42 cpu|\
             --to pager lookout/edge-42/alarms/cpu {x}\n"
        );
    }

    #[tokio::test]
    async fn the_program_reads_the_rendered_body_when_input_is_body() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = script(
            dir.path(),
            "record.sh",
            &format!("cat > '{}'", out.display()),
        );
        let exec = sh(&cmd, &[], r#"input = "body""#);

        exec.send(&notification()).await.unwrap();

        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "cpu is anomalous on edge-42"
        );
    }

    #[tokio::test]
    async fn a_failing_program_is_permanent_and_its_stderr_is_in_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = script(dir.path(), "fail.sh", "echo 'no such pager' >&2\nexit 1");
        let exec = sh(&cmd, &[], "");

        match exec.send(&notification()).await {
            Err(SendError::Permanent(m)) => {
                assert!(m.contains("exited with status 1"), "{m}");
                assert!(m.contains("no such pager"), "{m}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn exit_status_75_asks_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = script(dir.path(), "busy.sh", "echo 'try later' >&2\nexit 75");
        let exec = sh(&cmd, &[], "");

        match exec.send(&notification()).await {
            Err(SendError::Retry(m)) => assert!(m.contains("try later"), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stderr_in_the_message_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = script(
            dir.path(),
            "loud.sh",
            "i=0; while [ $i -lt 2000 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; i=$((i+1)); done; exit 2",
        );
        let exec = sh(&cmd, &[], "");

        match exec.send(&notification()).await {
            Err(SendError::Permanent(m)) => {
                assert!(m.len() < STDERR_LIMIT + 200, "{} bytes", m.len());
                assert!(m.ends_with('…'), "{m}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_program_past_its_timeout_is_killed_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let cmd = script(
            dir.path(),
            "slow.sh",
            &format!("echo $$ > '{}'\nexec sleep 5", pid_file.display()),
        );
        let exec = sh(&cmd, &[], r#"timeout = "200ms""#);

        let started = std::time::Instant::now();
        let result = exec.send(&notification()).await;
        let elapsed = started.elapsed();

        match result {
            Err(SendError::Retry(m)) => assert!(m.contains("did not finish within"), "{m}"),
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
        assert!(!proc_dir.exists(), "process {} is still there", pid.trim());
    }

    #[tokio::test]
    async fn a_missing_program_is_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let exec = exec_for(&dir.path().join("no-such-program"), "");

        match exec.send(&notification()).await {
            Err(SendError::Permanent(m)) => assert!(m.contains("cannot start"), "{m}"),
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_program_that_ignores_its_input_still_counts_as_delivered() {
        let exec = exec_for(Path::new("true"), "");
        let mut n = notification();
        n.fields = json!({"big": "x".repeat(1 << 20)});
        exec.send(&n).await.unwrap();
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<Config>("command = \"true\"\nshell = true").is_err());
        assert!(toml::from_str::<Config>("command = \"true\"\ninput = \"xml\"").is_err());
        let cfg = config("command = \"true\"\ntimeout = \"0s\"");
        let err = Exec::build("pager", &cfg).unwrap_err().to_string();
        assert!(err.starts_with("targets.pager.timeout:"), "{err}");
        let cfg = config("command = \"\"");
        let err = Exec::build("pager", &cfg).unwrap_err().to_string();
        assert!(err.starts_with("targets.pager.command:"), "{err}");
    }

    #[test]
    fn placeholders_expand_once_and_other_braces_stay() {
        assert_eq!(expand("{topic}", "a/{target}", "t"), "a/{target}");
        assert_eq!(expand("{\"k\": 1} {target}", "a", "t"), "{\"k\": 1} t");
        assert_eq!(expand("{", "a", "t"), "{");
        assert_eq!(expand("x{topic}y{target}z", "a", "t"), "xaytz");
    }
}
