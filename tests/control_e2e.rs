//! End-to-end: an operator's relearn command (`<prefix>/<host>/cmd/relearn`, docs/topics.md)
//! to simulated hosts on mosquitto. With the `[control]` token it resolves the model's
//! firing alarm with reason `relearned`; with a wrong token, or on an agent that has no
//! token, it is refused and the alarm keeps firing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "e2e-control-token-7f3a9c";

/// Simulated hosts whose injected level shifts fire alarms within seconds and outlast the
/// test ([`LEVEL_SHIFTS_ONLY`]), with no refit that could learn the shifted level meanwhile.
fn sim_args(port: u16, hosts: usize, extra: &[&str]) -> Vec<String> {
    let mut sets = LEVEL_SHIFTS_ONLY.to_vec();
    sets.push("agent.stats_interval=1s");
    sets.extend_from_slice(extra);
    sim_run_args(port, hosts, 60, &sets)
}

/// The first firing alarm of an injected anomaly (its ground truth on `sim/truth`): alarms
/// a fresh model raises on its own may resolve within ticks, these last.
async fn injected_firing_alarm(sub: &mut Subscriber) -> Value {
    let mut seen_ids = Vec::new();
    loop {
        let a = sub
            .wait_for("a firing alarm", Duration::from_secs(60), |m| {
                m.topic.contains("/alarms/")
                    && !m.topic.ends_with("/alarms/host")
                    && !m.payload.is_empty()
                    && m.json()["state"] == "firing"
                    && !seen_ids.contains(&m.json()["id"])
            })
            .await
            .json();
        seen_ids.push(a["id"].clone());
        let injected = sub
            .seen
            .iter()
            .filter(|t| t.topic.ends_with("/sim/truth"))
            .map(Msg::json)
            .any(|t| {
                t["host"] == a["host"]
                    && t["metric"] == a["source"]
                    && a["started_at"].as_i64() >= t["start"].as_i64()
            });
        if injected {
            return a;
        }
    }
}

fn command(host: &str, model: &str, token: &str) -> (String, String, bool) {
    (
        format!("lookout/{host}/cmd/relearn"),
        json!({"model": model, "token": token}).to_string(),
        false,
    )
}

/// Every message seen so far that resolves the alarm episode `id`.
fn resolutions(sub: &mut Subscriber, id: &Value) -> Vec<Value> {
    sub.drain();
    sub.seen
        .iter()
        .filter(|m| m.topic.contains("/alarms/") && !m.payload.is_empty())
        .map(Msg::json)
        .filter(|a| a["id"] == *id && a["state"] == "resolved")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relearn_with_the_token_resolves_the_firing_alarm_and_other_commands_are_refused() {
    let dir = scratch("control-e2e");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/status",
            "lookout/+/alarms/#",
            "lookout/+/sim/truth",
            "lookout/+/cmd/relearn/result",
            "lookout/+/agent/stats",
        ],
    )
    .await;
    let token = format!("control.token={TOKEN}");
    let args = sim_args(port, 2, &[&token]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    agent
        .wait_log("relearn command on", Duration::from_secs(20))
        .await;

    let alarm = injected_firing_alarm(&mut sub).await;
    let (host, model, id) = (
        alarm["host"].as_str().unwrap().to_owned(),
        alarm["source"].as_str().unwrap().to_owned(),
        alarm["id"].clone(),
    );
    let result_topic = format!("lookout/{host}/cmd/relearn/result");

    // Refused: a wrong token, none, not JSON, an unknown model. Each is answered, in order.
    let refused = [
        (
            command(&host, &model, "not-the-token-at-all"),
            "wrong token",
        ),
        (
            (
                format!("lookout/{host}/cmd/relearn"),
                json!({ "model": model }).to_string(),
                false,
            ),
            "no token",
        ),
        (
            (
                format!("lookout/{host}/cmd/relearn"),
                "{not json".into(),
                false,
            ),
            "not a command",
        ),
        (command(&host, "no_such_model", TOKEN), "no model"),
    ];
    for (msg, error) in refused {
        let sent = std::time::Instant::now();
        publish(port, vec![msg]).await;
        let r = sub
            .wait_for(
                &format!("a refusal saying {error:?}"),
                Duration::from_secs(10),
                |m| m.topic == result_topic && m.at >= sent,
            )
            .await
            .json();
        assert_eq!(r["ok"], false, "{r}");
        let text = r["error"].as_str().unwrap_or_default();
        assert!(text.contains(error), "{r}");
        assert!(!text.contains(TOKEN), "the token never comes back: {r}");
    }
    assert!(
        resolutions(&mut sub, &id).is_empty(),
        "refused commands leave the alarm firing"
    );

    // Obeyed: the model's alarm resolves at once, saying why.
    let sent = std::time::Instant::now();
    publish(port, vec![command(&host, &model, TOKEN)]).await;
    let r = sub
        .wait_for("the relearn's answer", Duration::from_secs(10), |m| {
            m.topic == result_topic && m.at >= sent
        })
        .await
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["models"], json!([model]), "{r}");
    assert_eq!(r["resolved"], json!([model]), "{r}");
    let resolved = sub
        .wait_for("the relearned alarm", Duration::from_secs(10), |m| {
            m.topic == format!("lookout/{host}/alarms/{model}")
                && !m.payload.is_empty()
                && m.json()["id"] == id
                && m.json()["state"] == "resolved"
        })
        .await
        .json();
    assert_eq!(resolved["labels"]["reason"], "relearned", "{resolved}");
    assert!(
        resolved["summary"].as_str().unwrap().contains("relearned"),
        "{resolved}"
    );

    // Counted in the host's own health report.
    let stats = format!("lookout/{host}/agent/stats");
    sub.wait_for("the commands counted", Duration::from_secs(10), |m| {
        m.topic == stats
            && m.json()["commands"]["refused"] == 4
            && m.json()["commands"]["accepted"] == 1
    })
    .await;
    let log = agent.log_text();
    assert!(log.contains("relearn command refused"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_agent_does_not_listen_and_the_alarm_keeps_firing() {
    let dir = scratch("control-e2e-off");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/alarms/#",
            "lookout/+/sim/truth",
            "lookout/+/cmd/relearn/result",
        ],
    )
    .await;
    let args = sim_args(port, 1, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = agent(&args, dir.path());
    agent
        .wait_log(
            "relearn command off: no [control] token configured",
            Duration::from_secs(20),
        )
        .await;
    let alarm = injected_firing_alarm(&mut sub).await;
    let (host, model, id) = (
        alarm["host"].as_str().unwrap().to_owned(),
        alarm["source"].as_str().unwrap().to_owned(),
        alarm["id"].clone(),
    );
    publish(
        port,
        vec![
            command(&host, &model, TOKEN),
            command(&host, "*", "anything"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sub.drain();
    assert!(
        !sub.seen
            .iter()
            .any(|m| m.topic.contains("/cmd/relearn/result")),
        "an agent without a token does not answer commands"
    );
    assert!(
        resolutions(&mut sub, &id).is_empty(),
        "the alarm keeps firing"
    );
}
