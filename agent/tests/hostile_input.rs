//! Hostile input never panics: arbitrary bytes as a replay CSV, arbitrary text as a config
//! file and as `--set` overrides. Bounded (proptest's case count, set below), so it runs in
//! CI; failures print the smallest input that breaks.

use std::io::BufReader;

use lookout_agent::config;
use lookout_agent::decide::Detector;
use lookout_shared::config::Source;
use proptest::prelude::*;

fn detector() -> Detector {
    Detector::default()
}

/// CSV-ish lines: timestamps, numbers, junk, wrong widths, empty fields, NaN, huge values.
fn csvish() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        any::<f64>().prop_map(|v| v.to_string()),
        "-?[0-9]{1,6}(\\.[0-9]{1,4})?",
        Just(String::new()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("1e308".to_string()),
        ".{0,8}",
    ];
    let line = prop::collection::vec(field, 0..5).prop_map(|f| f.join(","));
    prop::collection::vec(line, 0..300).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replay_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), skip in any::<bool>()) {
        let d = detector();
        let mut out = Vec::new();
        let _ = lookout_agent::replay::replay_collecting(
            BufReader::new(&bytes[..]), &mut out, &d, "fuzz.csv", None, None, skip,
        );
    }

    #[test]
    fn replay_never_panics_on_csv_like_input(text in csvish(), skip in any::<bool>()) {
        let d = detector();
        let mut out = Vec::new();
        let r = lookout_agent::replay::replay_collecting(
            BufReader::new(text.as_bytes()), &mut out, &d, "fuzz.csv", None, None, skip,
        );
        if skip {
            // Skipping never fails on content; only output errors could, and Vec never does.
            prop_assert!(r.is_ok(), "{r:?}");
        }
    }

    #[test]
    fn config_parsing_never_panics(text in ".{0,400}") {
        let src = Source::builtin("fuzz.toml", &text);
        let _ = config::load(&src, &[]);
    }

    #[test]
    fn detector_tables_never_panic(
        key in prop::sample::select(vec![
            "n_smoothing", "n_lags", "n_clusters", "train.window", "train.every",
            "alarm.threshold", "train.ensemble", "train.min_points", "context.levels",
            "context.length", "context.window", "alarm.t2", "alarm.step", "train.decay",
            "scale_quantile", "anomaly_score_cap", "saturation.limit", "upper_limit",
            "down_limit", "alarm.suppress", "alarm.for", "alarm.resolve_after",
            // The names before the nested tables, still accepted.
            "train_data_size", "threshold", "context_levels", "limit", "for",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_filter("TOML floats", |v| v.is_finite()).prop_map(|v| format!("{v:?}")),
            Just("\"x\"".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
        ],
    ) {
        let text = format!("[models.m]\nmetrics = {{ \"a\" = [\"b\"] }}\n{key} = {value}\n");
        let src = Source::builtin("fuzz.toml", &text);
        let _ = config::load(&src, &[]);
    }

    #[test]
    fn overrides_never_panic(set in "[a-z_.]{0,30}=.{0,20}") {
        let _ = config::load(&Source::empty(), &[set]);
    }
}
