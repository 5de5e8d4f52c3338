use std::path::Path;
use std::time::Duration;

use super::*;
use crate::rules::Limits;

fn src(text: &str) -> Source {
    Source::builtin("test.toml", text)
}

fn load_text(text: &str, sets: &[&str]) -> Result<Settings, Error> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    load(&src(text), &sets)
}

fn err_text(text: &str, sets: &[&str]) -> String {
    load_text(text, sets).unwrap_err().to_string()
}

#[test]
fn alarm_keys_are_checked_with_the_key_named() {
    // The line of the key, or of its table when the key is missing.
    let bad = [
        ("alarm = { t2 = 0.5 }", "models.m.alarm.t2", 3),
        ("alarm = { step = 0.0 }", "models.m.alarm.step", 3),
        (
            "alarm = { direction = \"sideways\" }",
            "models.m.alarm.direction",
            3,
        ),
        (
            "alarm = { kind = \"saturation\" }",
            "models.m.saturation.limit",
            1,
        ),
        ("alarm = { kind = \"weird\" }", "models.m.alarm.kind", 3),
        (
            "down_limit = 5.0\nupper_limit = 1.0",
            "models.m.upper_limit",
            4,
        ),
        ("train = { decay = 2.0 }", "models.m.train.decay", 3),
    ];
    for (line, key, at) in bad {
        let text = format!("[models.m]\nmetrics = {{ \"a\" = [\"b\"] }}\n{line}\n");
        let err = err_text(&text, &[]);
        assert!(err.contains(key), "{line}: {err}");
        assert!(
            err.starts_with(&format!("test.toml:{at}: ")),
            "{line}: {err}"
        );
    }
    let s = load_text(
        "[detector]\nupper_limit = 100.0\n[detector.alarm]\nkind = \"saturation\"\ndirection = \"up\"\n[detector.saturation]\nlimit = 100.0\n[models.m]\nmetrics = { \"a\" = [\"b\"] }\n",
        &[],
    )
    .unwrap();
    let d = &s.models[0].detector;
    assert_eq!(d.alarm.saturation.map(|p| p.limit), Some(100.0));
    assert_eq!(d.alarm.direction, crate::alarm::Direction::Up);
    assert!(d.valid(100.0) && !d.valid(100.5));
}

#[test]
fn shipped_config_loads_and_its_detector_is_the_builtin_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
    let source = Source::read(&path).unwrap();
    let parsed = parse(&source, &[]).unwrap();
    assert!(
        parsed.renamed.is_empty(),
        "the shipped config uses no deprecated key: {:?}",
        parsed.renamed
    );
    let s = parsed.resolve().unwrap();
    assert!(!s.models.is_empty() && !s.sim_models.is_empty());
    // The shipped file writes spans as times, the built-in defaults as ticks: at the
    // shipped interval they must be the same detector.
    assert_eq!(
        parsed.detector().unwrap().resolve_at(s.interval).unwrap(),
        crate::decide::Detector::default_at(s.interval),
        "configs/agent.toml [detector] must equal the built-in default"
    );
    assert!(s.broker.is_some());
}

#[test]
fn an_old_flat_config_loads_the_same_as_its_nested_form_and_says_what_moved() {
    let old = "[detector]\nthreshold = 2.5\ntrain_data_size = 500\ncontext_levels = 4\n\
               [models.mem]\nmetrics = { \"system.ram\" = [\"used_pct\"] }\nkind = \"saturation\"\n\
               limit = 100.0\nsaturation_window = \"2m\"\nfor = 3\n";
    let new = "[detector]\n[detector.alarm]\nthreshold = 2.5\n[detector.train]\nwindow = 500\n\
               [detector.context]\nlevels = 4\n\
               [models.mem]\nmetrics = { \"system.ram\" = [\"used_pct\"] }\n\
               alarm = { kind = \"saturation\", for = 3 }\n\
               saturation = { limit = 100.0, window = \"2m\" }\n";
    let (o, n) = (src(old), src(new));
    let po = parse(&o, &[]).unwrap();
    let pn = parse(&n, &[]).unwrap();
    assert_eq!(po.resolve().unwrap().models, pn.resolve().unwrap().models);
    let moved: Vec<(&str, &str)> = po
        .renamed
        .iter()
        .map(|r| (r.old.as_str(), r.new.as_str()))
        .collect();
    assert!(moved.contains(&("detector.threshold", "detector.alarm.threshold")));
    assert!(moved.contains(&("models.mem.limit", "models.mem.saturation.limit")));
    assert_eq!(moved.len(), 7, "{moved:?}");
    assert!(pn.renamed.is_empty());
    // An old key's mistake is reported at its own line, under its old name.
    let err = err_text("[detector]\n\nthreshold = \"high\"\n", &[]);
    assert!(
        err.starts_with("test.toml:3: detector.threshold: "),
        "{err}"
    );
    assert!(err.contains("(now detector.alarm.threshold)"), "{err}");
    // And an old --set still wins over the file.
    let s = load_text(new, &["models.mem.for=7"]).unwrap();
    assert_eq!(s.models[0].detector.alarm.for_ticks, 7);
}

#[test]
fn unknown_keys_are_errors_with_file_line_and_a_suggestion() {
    let err = err_text("[mqtt]\nurl = \"mqtt://h:1\"\nbogus = 1\n", &[]);
    assert!(
        err.starts_with("test.toml:3: mqtt.bogus: unknown key"),
        "{err}"
    );
    let err = err_text("[detector.alarm]\nthreshhold = 2\n", &[]);
    assert!(
        err.starts_with(
            "test.toml:2: detector.alarm.threshhold: unknown key; did you mean `threshold`?"
        ),
        "{err}"
    );
    let err = err_text(
        "[models.m]\nmetrics = { \"a\" = [\"b\"] }\nresolve_aftr = 2\n",
        &[],
    );
    assert!(
        err.starts_with("test.toml:3: models.m.resolve_aftr: unknown key"),
        "{err}"
    );
}

#[test]
fn validation_errors_name_the_key_and_line() {
    let err = err_text(
        "[models.cpu]\nmetrics = { \"system.cpu\" = [\"user\"] }\nn_clusters = 0\n",
        &[],
    );
    assert!(
        err.contains("test.toml:3") && err.contains("models.cpu.n_clusters"),
        "{err}"
    );
}

#[test]
fn set_overrides_any_key_by_dotted_path() {
    let s = load_text(
        "[mqtt]\nurl = \"mqtt://a:1\"\n",
        &[
            "mqtt.url=mqtt://127.0.0.1:18830",
            "detector.alarm.threshold=4.5",
            "agent.host=box",
        ],
    )
    .unwrap();
    let url = &s.mqtt.client.url;
    assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 18830));
    assert_eq!(s.host, "box");
    let err = err_text("", &["nonsense"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn model_tables_override_the_detector_defaults() {
    let s = load_text(
        "[detector.alarm]\nthreshold = 3.0\n[models.a]\nmetrics = { \"system.cpu\" = [\"user\", \"system\"] }\nn_lags = 3\ntrain = { window = 700 }\n",
        &[],
    )
    .unwrap();
    let m = &s.models[0];
    assert_eq!(m.detector.alarm.threshold, 3.0);
    assert_eq!(m.detector.params.n_lags, 3);
    assert_eq!(m.detector.params.train_data_size, 700);
    assert_eq!(
        m.detector.params.train_every_n,
        crate::scorer::TrainConfig::default()
            .every
            .ticks(std::time::Duration::from_secs(1)),
        "a table sets only what it names"
    );
    assert_eq!(
        m.metrics,
        vec![
            ("system.cpu".into(), "user".into()),
            ("system.cpu".into(), "system".into())
        ]
    );
}

#[test]
fn durations_are_human() {
    let s = load_text("[agent]\ninterval = \"250ms\"\n", &[]).unwrap();
    assert_eq!(s.interval, Duration::from_millis(250));
    let err = err_text("[agent]\ninterval = \"fast\"\n", &[]);
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn rules_and_ingest_default_to_no_file_and_off() {
    let s = load_text("", &[]).unwrap();
    assert!(s.rules.file.is_none() && s.rules.initial.is_empty());
    assert_eq!(s.rules.limits, Limits::default());
    assert!(!s.ingest.enabled);
}

#[test]
fn rules_file_is_read_at_start_and_its_errors_name_config_line_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("rules.json");
    std::fs::write(
        &good,
        r#"[{"ruleId": "hot", "deviceId": "*", "metricName": "t", "alertName": "a",
             "operator": "AVGGREATEROREQUAL", "value": 1}]"#,
    )
    .unwrap();
    let text = format!(
        "[rules]\nfile = {:?}\ngroups_per_window = 8\n\n[ingest]\nenabled = true\n",
        good.display().to_string()
    );
    let s = load_text(&text, &[]).unwrap();
    assert_eq!(s.rules.file.as_deref(), Some(good.as_path()));
    assert_eq!(s.rules.initial.len(), 1);
    assert_eq!(s.rules.limits.groups_per_window, 8);
    assert!(s.ingest.enabled);

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"ruleId": 7, "deviceId": "*", "metricName": "t", "alertName": "a",
             "operator": "AVGMORE", "value": 1}]"#,
    )
    .unwrap();
    let text = format!(
        "[agent]\n\n[rules]\nfile = {:?}\n",
        bad.display().to_string()
    );
    let err = err_text(&text, &[]);
    assert!(
        err.starts_with("test.toml:4: rules.file: ")
            && err.contains("bad.json: rules[0] (ruleId 7): operator"),
        "{err}"
    );
    let err = err_text("[rules]\nfile = \"/nonexistent/rules.json\"\n", &[]);
    assert!(
        err.contains("test.toml:2: rules.file: /nonexistent/rules.json"),
        "{err}"
    );
    // `--set rules.file=` turns a configured file off.
    let s = load_text(
        "[rules]\nfile = \"/nonexistent/rules.json\"\n",
        &["rules.file="],
    )
    .unwrap();
    assert!(s.rules.file.is_none());
}

#[test]
fn rules_and_ingest_tables_are_checked() {
    let err = err_text("[rules]\ngroups_per_window = 0\n", &[]);
    assert!(
        err.contains("test.toml:2: rules.groups_per_window: must be 1 to"),
        "{err}"
    );
    let err = err_text("[ingest]\nenabled = true\ntopic = \"x\"\n", &[]);
    assert!(err.contains("test.toml:3: ingest.topic"), "{err}");
    let err = err_text("[agent]\nhost = \"ingest\"\n", &[]);
    assert!(
        err.contains("test.toml:2: agent.host") && err.contains("reserved"),
        "{err}"
    );
}

#[test]
fn homeassistant_is_off_by_default_and_its_prefix_is_checked() {
    let s = load_text("", &[]).unwrap();
    assert_eq!(s.homeassistant, HomeAssistantConfig::default());
    assert!(!s.homeassistant.enabled && s.homeassistant.prefix == "homeassistant");
    let s = load_text(
        "[homeassistant]\nprefix = \"ha/disc\"\n",
        &["homeassistant.enabled=true"],
    )
    .unwrap();
    assert!(s.homeassistant.enabled && s.homeassistant.prefix == "ha/disc");
    for bad in ["", "ha/#", "ha/+/x", "/ha", "ha/", "a//b"] {
        let text = format!("[agent]\n\n[homeassistant]\nprefix = {bad:?}\n");
        let err = err_text(&text, &[]);
        assert!(
            err.starts_with("test.toml:4: homeassistant.prefix: "),
            "{bad:?}: {err}"
        );
    }
    let err = err_text("[homeassistant]\nenabled = \"yes\"\n", &[]);
    assert!(err.contains("enabled"), "{err}");
}

#[test]
fn with_homeassistant_on_model_names_must_stay_distinct_as_ids() {
    let text = "[models.\"disk.io\"]\nmetrics = { \"a\" = [\"b\"] }\n\
                [models.disk_io]\nmetrics = { \"a\" = [\"b\"] }\n";
    assert!(load_text(text, &[]).is_ok(), "fine while off");
    let err = err_text(text, &["homeassistant.enabled=true"]);
    assert!(
        err.contains("models.disk_io") && err.contains("\"disk_io\""),
        "{err}"
    );
}

#[test]
fn the_effective_config_prints_in_the_nested_shape_and_loads_back_the_same() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
    let source = Source::read(&path).unwrap();
    let sets = vec!["mqtt.password=s3cret".to_string(), "mqtt.username=u".into()];
    let parsed = parse(&source, &sets).unwrap();
    let text = parsed.effective_toml().unwrap();
    assert!(
        text.contains("[detector.alarm]") && text.contains("[detector.train]"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(text.contains("[models.memory.saturation]"), "{text}");
    let again = Source::builtin("effective.toml", &text);
    let reparsed = parse(&again, &sets).unwrap();
    assert!(reparsed.renamed.is_empty());
    assert_eq!(
        reparsed.resolve().unwrap().models,
        parsed.resolve().unwrap().models
    );
}

#[test]
fn a_model_table_with_device_is_a_device_model_with_its_own_keys_checked() {
    let text = "[models.cpu]\nmetrics = { \"system.cpu\" = [\"user\"] }\n\n\
                [models.requests]\ndevice = \"shop-*\"\nmetrics = [\"requests\"]\n\
                aggregate = \"sum\"\nmax_instances = 16\nalarm = { direction = \"down\" }\n";
    let s = load_text(text, &[]).unwrap();
    assert_eq!(names(&s.models), ["cpu"]);
    assert_eq!(s.devices.len(), 1);
    let d = &s.devices[0];
    assert_eq!(
        (d.name.as_str(), d.device.as_str(), d.max_instances),
        ("requests", "shop-*", 16)
    );
    assert_eq!(
        d.metrics,
        [(
            "requests".to_owned(),
            crate::devices::bucket::Aggregate::Sum
        )]
    );
    assert_eq!(d.detector.alarm.direction, crate::alarm::Direction::Down);
    // The detector's keys may be set per device model like any model's.
    let s = load_text(text, &["models.requests.train.window=100"]).unwrap();
    assert_eq!(s.devices[0].detector.params.train_data_size, 100);
    let err = err_text(&text.replace("\"sum\"", "\"median\""), &[]);
    assert!(err.contains("models.requests.aggregate"), "{err}");
    let err = err_text(
        &text.replace("max_instances = 16", "max_instances = 0"),
        &[],
    );
    assert!(err.contains("models.requests.max_instances"), "{err}");
    let err = err_text(&text.replace("max_instances = 16", "max_devices = 16"), &[]);
    assert!(err.contains("max_devices"), "{err}");
    let err = err_text("[sim_models.r]\ndevice = \"*\"\nmetrics = [\"x\"]\n", &[]);
    assert!(err.contains("sim_models.r"), "{err}");
    // The effective config shows the device keys.
    let shown = parse(&src(text), &[]).unwrap().effective_toml().unwrap();
    assert!(shown.contains("device = \"shop-*\""), "{shown}");
}
