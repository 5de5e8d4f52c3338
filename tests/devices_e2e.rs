//! Device models end to end (issue 18): README's `[models.requests]` example, taken from
//! README.md itself, added to the shipped config; two shops publish request counts over
//! MQTT to a real mosquitto; the agent learns one model per shop and publishes their
//! scores, and an alarm for a drop on the shop that dropped, alone.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// README's device-model example: the TOML block that starts with `[models.requests]`.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("```toml\n[models.requests]")
        .expect("README.md has the [models.requests] example");
    let block = &readme[start + "```toml\n".len()..];
    let end = block.find("```").unwrap();
    let example = block[..end].to_owned();
    assert!(
        example.contains("device = "),
        "the example is a device model: {example}"
    );
    example
}

/// Publishes one reading per shop every `period` until told to stop; shop-2 reads
/// `dropped` once `drop` is set.
async fn shops(
    port: u16,
    period: Duration,
    drop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut opts = MqttOptions::new(format!("shops-{}", std::process::id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut tick = tokio::time::interval(period);
    let mut i: u64 = 0;
    while !stop.load(Relaxed) {
        tick.tick().await;
        i += 1;
        for shop in ["shop-1", "shop-2"] {
            // About 100 requests per interval, with a little deterministic noise.
            let mut v = 100.0 + ((i * 7919 + shop.len() as u64 * 31) % 11) as f64 - 5.0;
            if shop == "shop-2" && drop.load(Relaxed) {
                v = 5.0;
            }
            let payload = format!("{{\"metric\": \"requests\", \"value\": {v}}}");
            let _ = client
                .publish(
                    format!("lookout/ingest/{shop}"),
                    QoS::AtMostOnce,
                    false,
                    payload,
                )
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_device_example_learns_each_shop_and_alarms_on_the_one_that_dropped() {
    let dir = scratch("e2e-devices");
    let port = free_port();
    let _broker = mosquitto(port, dir.path());
    let shipped = std::fs::read_to_string(repo_root().join("configs/agent.toml")).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("{shipped}\n{}", readme_example())).unwrap();
    let mut sub = Subscriber::connect(
        port,
        &[
            "lookout/+/scores/requests/#",
            "lookout/+/alarms/#",
            "lookout/+/agent/stats",
        ],
    )
    .await;
    let url = format!("mqtt.url=mqtt://127.0.0.1:{port}");
    let snapshots = format!("snapshots.dir={}", dir.path().join("models").display());
    // Time squeezed as the other end-to-end tests do: 100 ms intervals, a model that
    // learns in 100 of them and alarms without waiting for its first day.
    let _agent = agent(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "broker.enabled=false",
            "--set",
            &url,
            "--set",
            &snapshots,
            "--set",
            "agent.host=edge-1",
            "--set",
            "agent.interval=100ms",
            "--set",
            "agent.stats_interval=1s",
            "--set",
            "models.requests.train.window=100",
            "--set",
            "models.requests.train.every=50",
            "--set",
            "models.requests.train.min_points=100",
            "--set",
            "models.requests.alarm.settle=0",
            "--set",
            "models.requests.alarm.settle_for=0s",
            "--set",
            "models.requests.alarm.young_for=0s",
        ],
        dir.path(),
    );
    let drop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn(shops(
        port,
        Duration::from_millis(100),
        drop.clone(),
        stop.clone(),
    ));

    for shop in ["shop-1", "shop-2"] {
        let topic = format!("lookout/edge-1/scores/requests/{shop}");
        let m = sub
            .wait_for(
                &format!("a score of {shop}"),
                Duration::from_secs(60),
                |m| m.topic == topic && m.json()["score"].is_number(),
            )
            .await
            .json();
        assert_eq!(m["device"], shop, "{m}");
        assert_eq!(m["model"], "requests", "{m}");
    }
    // Learned: let both run normally a while longer, then shop-2 drops.
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop.store(true, std::sync::atomic::Ordering::Relaxed);
    let alarm = sub
        .wait_for("shop-2's alarm", Duration::from_secs(30), |m| {
            m.topic == "lookout/edge-1/alarms/requests/shop-2" && m.json()["state"] == "firing"
        })
        .await
        .json();
    assert_eq!(alarm["source"], "requests", "{alarm}");
    assert_eq!(alarm["labels"]["device"], "shop-2", "{alarm}");
    assert!(
        alarm["summary"].as_str().unwrap().contains("shop-2"),
        "{alarm}"
    );
    let stats = sub
        .wait_for("stats with device models", Duration::from_secs(10), |m| {
            let s = m.json();
            m.topic == "lookout/edge-1/agent/stats"
                && s["devices"]["readings"].as_u64().is_some_and(|n| n > 200)
        })
        .await
        .json();
    assert_eq!(stats["devices"]["instances"], 2, "{stats}");
    assert_eq!(stats["devices"]["created"], 2, "{stats}");
    assert_eq!(stats["devices"]["evicted"], 0, "{stats}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = publisher.await;
    sub.drain();
    let shop1_fired: Vec<String> = sub
        .seen
        .iter()
        .filter(|m| m.topic == "lookout/edge-1/alarms/requests/shop-1")
        .map(Msg::text)
        .collect();
    assert!(
        shop1_fired.is_empty(),
        "shop-1 never dropped: {shop1_fired:?}"
    );
}
