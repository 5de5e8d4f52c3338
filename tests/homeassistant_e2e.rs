//! End-to-end: Home Assistant MQTT discovery (docs/homeassistant.md). The real agent, two
//! simulated hosts, a real mosquitto; every discovery config is checked against the option
//! names Home Assistant documents for its component, and against what the agent really
//! publishes. Then the agent restarts with discovery off and must leave no config behind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::Value;

const HOSTS: [&str; 2] = ["sim-1", "sim-2"];

/// Options of Home Assistant's MQTT sensor (integrations/sensor.mqtt, "Configuration
/// variables"), plus `origin`, which every discovery payload may carry
/// (integrations/mqtt, "Discovery payload").
const SENSOR_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "last_reset_value_template",
    "name",
    "object_id",
    "options",
    "payload_available",
    "payload_not_available",
    "platform",
    "suggested_display_precision",
    "qos",
    "state_class",
    "state_topic",
    "unique_id",
    "unit_of_measurement",
    "value_template",
    "origin",
];

/// Options of Home Assistant's MQTT binary sensor (integrations/binary_sensor.mqtt), plus
/// `origin`.
const BINARY_SENSOR_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "off_delay",
    "payload_available",
    "payload_not_available",
    "payload_off",
    "payload_on",
    "platform",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
    "origin",
];

/// The `device` map's keys (the same in both components' documentation).
const DEVICE_OPTIONS: &[&str] = &[
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
];

/// The `origin` map's keys (integrations/mqtt, "Discovery payload").
const ORIGIN_OPTIONS: &[&str] = &["name", "sw_version", "support_url"];

/// Documented abbreviations (integrations/mqtt, "Supported abbreviations in MQTT discovery
/// messages") of the options above: a payload may use either form.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("e", "encoding"),
    ("en", "enabled_by_default"),
    ("ent_cat", "entity_category"),
    ("ent_pic", "entity_picture"),
    ("exp_aft", "expire_after"),
    ("frc_upd", "force_update"),
    ("ic", "icon"),
    ("json_attr_t", "json_attributes_topic"),
    ("json_attr_tpl", "json_attributes_template"),
    ("lrst_val_tpl", "last_reset_value_template"),
    ("o", "origin"),
    ("obj_id", "object_id"),
    ("off_dly", "off_delay"),
    ("ops", "options"),
    ("p", "platform"),
    ("pl_avail", "payload_available"),
    ("pl_not_avail", "payload_not_available"),
    ("pl_off", "payload_off"),
    ("pl_on", "payload_on"),
    ("stat_cla", "state_class"),
    ("stat_t", "state_topic"),
    ("sug_dsp_prc", "suggested_display_precision"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("val_tpl", "value_template"),
];

const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("cu", "configuration_url"),
    ("cns", "connections"),
    ("ids", "identifiers"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("mdl_id", "model_id"),
    ("hw", "hw_version"),
    ("sw", "sw_version"),
    ("sa", "suggested_area"),
    ("sn", "serial_number"),
];

const ORIGIN_ABBREVIATIONS: &[(&str, &str)] = &[("sw", "sw_version"), ("url", "support_url")];

/// A config written by an earlier run for a model that is gone: the agent must clear it.
const STALE: &str = "homeassistant/sensor/lookout_sim-1/retired_model_score/config";

/// Configs of other devices, one with a node id that merely starts like ours: untouched.
const FOREIGN: [&str; 2] = [
    "homeassistant/sensor/other_device/temperature/config",
    "homeassistant/sensor/lookout_sim-10/cpu_util_score/config",
];

/// `payload` with every documented abbreviation spelled out; fails on a key that is
/// neither an option nor an abbreviation.
fn full_keys(
    what: &str,
    payload: &Value,
    options: &[&str],
    abbreviations: &[(&str, &str)],
) -> BTreeMap<String, Value> {
    let map = payload
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object: {payload}"));
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let full = abbreviations
            .iter()
            .find(|(short, _)| short == k)
            .map_or(k.as_str(), |(_, long)| long);
        assert!(
            options.contains(&full),
            "{what}: {k:?} is not a documented option"
        );
        assert!(
            out.insert(full.to_owned(), v.clone()).is_none(),
            "{what}: {full} given twice"
        );
    }
    out
}

/// The payload fields a template reads (`value_json.<field>`).
fn template_fields(template: &str) -> Vec<String> {
    template
        .match_indices("value_json.")
        .map(|(i, m)| {
            template[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The simulated hosts' models, from the shipped config the agent runs.
fn sim_models() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("configs/agent.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["sim_models"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// One discovery config, checked for shape.
struct Discovered {
    topic: String,
    component: String,
    host: String,
    config: BTreeMap<String, Value>,
}

/// Checks everything that can be checked on one config message alone.
fn check_config(m: &Msg) -> Discovered {
    let levels: Vec<&str> = m.topic.split('/').collect();
    assert!(
        levels.len() == 5 && levels[0] == "homeassistant" && levels[4] == "config",
        "topic shape <prefix>/<component>/<node_id>/<object_id>/config: {}",
        m.topic
    );
    let (component, node, object) = (levels[1], levels[2], levels[3]);
    assert!(
        id_ok(node) && id_ok(object),
        "node and object ids in [a-zA-Z0-9_-]: {}",
        m.topic
    );
    let host = node
        .strip_prefix("lookout_")
        .unwrap_or_else(|| panic!("node id lookout_<host>: {}", m.topic));
    assert!(HOSTS.contains(&host), "{}", m.topic);
    let options = match component {
        "sensor" => SENSOR_OPTIONS,
        "binary_sensor" => BINARY_SENSOR_OPTIONS,
        other => panic!("unexpected component {other}: {}", m.topic),
    };
    let payload = m.json();
    let c = full_keys(&m.topic, &payload, options, ABBREVIATIONS);
    for required in [
        "name",
        "unique_id",
        "state_topic",
        "value_template",
        "device",
        "origin",
        "availability_topic",
        "payload_available",
        "payload_not_available",
    ] {
        assert!(c.contains_key(required), "{}: no {required}", m.topic);
    }
    assert!(
        !c.contains_key("platform"),
        "platform belongs in device discovery only"
    );
    // The device: one per host, named after it.
    let d = full_keys(
        &format!("{} device", m.topic),
        &c["device"],
        DEVICE_OPTIONS,
        DEVICE_ABBREVIATIONS,
    );
    assert_eq!(d["identifiers"], serde_json::json!([node]), "{}", m.topic);
    assert_eq!(d["name"], host);
    assert_eq!(d["model"], "Lookout agent");
    assert_eq!(d["manufacturer"], "Lookout");
    assert_eq!(d["sw_version"], env!("CARGO_PKG_VERSION"));
    let o = full_keys(
        &format!("{} origin", m.topic),
        &c["origin"],
        ORIGIN_OPTIONS,
        ORIGIN_ABBREVIATIONS,
    );
    assert_eq!(o["name"], "lookout-agent");
    assert_eq!(o["sw_version"], env!("CARGO_PKG_VERSION"));
    // Availability is the agent's own status, with its payloads.
    assert_eq!(c["availability_topic"], format!("lookout/{host}/status"));
    assert_eq!(c["payload_available"], "online");
    assert_eq!(c["payload_not_available"], "offline");
    assert!(c["unique_id"].as_str().is_some_and(|u| !u.is_empty()));
    let state = c["state_topic"].as_str().unwrap();
    if component == "binary_sensor" {
        assert_eq!(c["device_class"], "problem", "{}", m.topic);
        // The shipped models publish a score every tick: the state is the score's
        // `alarm`, the attributes the model's latest alarm.
        assert!(
            state.starts_with(&format!("lookout/{host}/scores/")),
            "{state}"
        );
        let model = state.rsplit('/').next().unwrap();
        assert_eq!(
            c["json_attributes_topic"],
            format!("lookout/{host}/alarms/{model}"),
            "{}",
            m.topic
        );
    } else {
        assert!(
            state.starts_with(&format!("lookout/{host}/scores/"))
                || state == format!("lookout/{host}/agent/stats"),
            "{state}"
        );
    }
    if c.contains_key("entity_category") {
        assert_eq!(c["entity_category"], "diagnostic", "{}", m.topic);
    }
    Discovered {
        topic: m.topic.clone(),
        component: component.to_owned(),
        host: host.to_owned(),
        config: c,
    }
}

async fn publish_foreign(port: u16) {
    let msgs = FOREIGN
        .iter()
        .map(|t| (t.to_string(), r#"{"state_topic": "x"}"#.into(), true))
        .collect();
    publish(port, msgs).await;
}

fn run_args(port: u16, enabled: bool) -> Vec<String> {
    let enabled = format!("homeassistant.enabled={enabled}");
    sim_run_args(
        port,
        2,
        300,
        &[
            "agent.stats_interval=1s",
            // A low threshold, so that every model's alarm fires within a second or two
            // and each binary sensor's attributes topic can be seen carrying an alarm (no
            // settling time after the first fit: this test is about discovery).
            "detector.alarm.threshold=0.8",
            "detector.alarm.settle=0",
            "detector.alarm.settle_for=0s",
            &enabled,
        ],
    )
}

fn start_agent(port: u16, enabled: bool, dir: &std::path::Path) -> Proc {
    let args = run_args(port, enabled);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    agent(&args, dir)
}

fn is_config(m: &Msg) -> bool {
    m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config")
}

#[test]
fn a_bad_discovery_prefix_is_a_config_error_with_exit_2() {
    for (set, shown) in [
        ("homeassistant.prefix=ha/#", "homeassistant.prefix"),
        ("homeassistant.prefix=/ha", "homeassistant.prefix"),
        ("homeassistant.enabled=maybe", "enabled"),
    ] {
        let out = std::process::Command::new(agent_bin())
            .args([
                "check-config",
                "--config",
                "configs/agent.toml",
                "--set",
                set,
            ])
            .current_dir(repo_root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains(shown), "{set}: {err}");
    }
    let out = std::process::Command::new(agent_bin())
        .args(["check-config", "--config", "configs/agent.toml"])
        .args(["--set", "homeassistant.enabled=true"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("[homeassistant]\nenabled = true\nprefix = \"homeassistant\"\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_configs_match_home_assistant_and_what_the_agent_publishes_and_go_when_disabled()
{
    let dir = scratch("e2e-homeassistant");
    let port = free_port();
    let mut broker = mosquitto(port, dir.path());
    // What an earlier run and other devices left on the broker.
    publish(
        port,
        vec![(
            STALE.into(),
            r#"{"name": "retired", "state_topic": "lookout/sim-1/scores/retired_model"}"#.into(),
            true,
        )],
    )
    .await;
    publish_foreign(port).await;

    let mut sub = Subscriber::connect(port, &["homeassistant/#", "lookout/#"]).await;
    // The subscription is in place once a retained foreign config comes back.
    sub.wait_for("the foreign configs", Duration::from_secs(5), |m| {
        m.topic == FOREIGN[0]
    })
    .await;
    let mut agent = start_agent(port, true, dir.path());

    // Every host announces one sensor and one binary sensor per model, and two diagnostic
    // sensors of its stats: wait for all of them.
    let models = sim_models();
    let expected = HOSTS.len() * (2 * models.len() + 2);
    let ours = |m: &Msg| is_config(m) && !m.payload.is_empty() && m.topic.contains("/lookout_sim-");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        sub.drain();
        let n = sub
            .seen
            .iter()
            .filter(|m| ours(m) && !FOREIGN.contains(&m.topic.as_str()) && m.topic != STALE)
            .map(|m| m.topic.clone())
            .collect::<BTreeSet<_>>()
            .len();
        if n >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} of {expected} discovery configs after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The earlier run's config of a retired model is cleared (empty retained message).
    sub.wait_for("the stale config cleared", Duration::from_secs(10), |m| {
        m.topic == STALE && m.payload.is_empty()
    })
    .await;

    let configs: Vec<Msg> = sub
        .seen
        .iter()
        .filter(|m| {
            ours(m) && !m.retain && !FOREIGN.contains(&m.topic.as_str()) && m.topic != STALE
        })
        .cloned()
        .collect();
    let discovered: Vec<Discovered> = configs.iter().map(check_config).collect();

    // Each config once per connection, `online` first.
    let topics: BTreeSet<&str> = discovered.iter().map(|d| d.topic.as_str()).collect();
    assert_eq!(topics.len(), expected, "{topics:#?}");
    assert_eq!(discovered.len(), expected, "one message per config");
    for host in HOSTS {
        let pos = |pred: &dyn Fn(&Msg) -> bool| sub.seen.iter().position(pred);
        let online = pos(&|m| m.topic == format!("lookout/{host}/status") && m.text() == "online")
            .expect("online");
        let first =
            pos(&|m| is_config(m) && !m.retain && m.topic.contains(&format!("/lookout_{host}/")))
                .expect("config");
        assert!(online < first, "{host}: online before its configs");
    }
    let unique: BTreeSet<&str> = discovered
        .iter()
        .map(|d| d.config["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(unique.len(), discovered.len(), "unique_id unique");

    // One score sensor and one alarm binary sensor per model and host, on the model's own
    // topics, and the two stats sensors.
    for host in HOSTS {
        let of = |component: &str| -> BTreeSet<String> {
            discovered
                .iter()
                .filter(|d| d.host == host && d.component == component)
                .map(|d| d.config["state_topic"].as_str().unwrap().to_owned())
                .collect()
        };
        let scores: BTreeSet<String> = models
            .iter()
            .map(|m| format!("lookout/{host}/scores/{m}"))
            .collect();
        let mut sensors = scores.clone();
        sensors.insert(format!("lookout/{host}/agent/stats"));
        assert_eq!(of("sensor"), sensors, "{host}");
        assert_eq!(of("binary_sensor"), scores, "{host}");
        let stats_sensors = discovered
            .iter()
            .filter(|d| {
                d.host == host
                    && d.config["state_topic"]
                        .as_str()
                        .unwrap()
                        .ends_with("/stats")
            })
            .count();
        assert_eq!(stats_sensors, 2, "{host}: memory and uptime");
    }

    // Every state topic carries the agent's messages, and the templates read fields those
    // messages have.
    for d in &discovered {
        let state = d.config["state_topic"].as_str().unwrap().to_owned();
        let m = sub
            .wait_for(
                &format!("a message on {state}"),
                Duration::from_secs(10),
                |m| m.topic == state && !m.payload.is_empty(),
            )
            .await;
        let payload = m.json();
        let template = d.config["value_template"].as_str().unwrap();
        let fields = template_fields(template);
        assert!(!fields.is_empty(), "{}: {template}", d.topic);
        for f in fields {
            assert!(
                payload.get(&f).is_some(),
                "{}: value_template reads {f}, absent from {payload}",
                d.topic
            );
        }
        if let Some(attrs) = d.config.get("json_attributes_topic") {
            let attrs = attrs.as_str().unwrap().to_owned();
            let m = sub
                .wait_for(
                    &format!("a message on {attrs}"),
                    Duration::from_secs(10),
                    |m| m.topic == attrs && !m.payload.is_empty(),
                )
                .await;
            let payload = m.json();
            assert!(payload.is_object(), "attributes are a JSON dictionary");
            if let Some(t) = d.config.get("json_attributes_template") {
                for f in template_fields(t.as_str().unwrap()) {
                    assert!(
                        payload.get(&f).is_some(),
                        "{}: attributes read {f}",
                        d.topic
                    );
                }
            }
        }
        if d.component == "binary_sensor" {
            assert!(payload["alarm"].is_boolean(), "{payload}");
        }
    }

    // Retained: a newcomer gets every config, as Home Assistant does when it starts.
    let mut late = Subscriber::connect(port, &["homeassistant/#"]).await;
    for d in &discovered {
        let m = late
            .wait_for(
                &format!("retained {}", d.topic),
                Duration::from_secs(5),
                |m| m.topic == d.topic,
            )
            .await;
        assert!(m.retain, "{} retained", d.topic);
    }
    drop(late);

    // A broker restart (in memory: the retained configs are gone) is a reconnect, after
    // which the agent announces every config again.
    broker.kill();
    let _broker = mosquitto(port, dir.path());
    publish_foreign(port).await;
    let mut again = Subscriber::connect(port, &["homeassistant/#"]).await;
    for d in &discovered {
        again
            .wait_for(
                &format!("{} after the reconnect", d.topic),
                Duration::from_secs(10),
                |m| m.topic == d.topic && !m.payload.is_empty(),
            )
            .await;
    }
    drop(again);

    // Discovery off: the next run clears every config it published, and nothing else.
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0));
    sub.drain();
    let restart = sub.seen.len();
    let mut agent = start_agent(port, false, dir.path());
    for d in &discovered {
        sub.wait_for(
            &format!("{} cleared", d.topic),
            Duration::from_secs(10),
            |m| m.topic == d.topic && m.payload.is_empty(),
        )
        .await;
    }
    let mut fresh = Subscriber::connect(port, &["homeassistant/#"]).await;
    // Retained messages come right after the subscription: once the foreign ones are in,
    // give the rest a moment.
    for t in FOREIGN {
        fresh
            .wait_for(&format!("foreign {t} kept"), Duration::from_secs(5), |m| {
                m.topic == t && m.retain
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fresh.drain();
    let left: Vec<&str> = fresh
        .seen
        .iter()
        .filter(|m| !FOREIGN.contains(&m.topic.as_str()))
        .map(|m| m.topic.as_str())
        .collect();
    assert!(left.is_empty(), "configs left after disabling: {left:?}");
    sub.drain();
    let announced: Vec<&str> = sub.seen[restart..]
        .iter()
        .filter(|m| is_config(m) && !m.payload.is_empty())
        .map(|m| m.topic.as_str())
        .collect();
    assert!(
        announced.is_empty(),
        "announced with discovery off: {announced:?}"
    );
    assert!(
        agent.log_text().contains("cleared retained messages"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0));
}
