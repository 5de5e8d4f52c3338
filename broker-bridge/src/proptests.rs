//! Property tests for what a publisher controls: payload decoding, `when` conditions and
//! title/body templates. Whatever bytes arrive and whatever a config says, nothing panics,
//! and what comes out keeps its promises. This stands in for cargo-fuzz targets: it runs
//! in the normal `cargo test`, in bounded time, on a stable toolchain.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::expr::Expr;
use crate::message::{Rejected, decode};
use crate::template::Template;

/// Any JSON value, nested a few levels deep, with keys the templates below ask for.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_string()),
        Just("state".to_string()),
        Just("ts".to_string()),
        Just("labels".to_string()),
        Just("host".to_string()),
        "[a-z.{}]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Text that is mostly template syntax: braces, dots, names, escapes.
fn template_source() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                Just("{".to_string()),
                Just("}".to_string()),
                Just("{{".to_string()),
                Just("}}".to_string()),
                Just("{id}".to_string()),
                Just("{labels.site}".to_string()),
                Just("{ts}".to_string()),
                Just("{payload}".to_string()),
                Just("{topic}".to_string()),
                Just(".".to_string()),
                "[a-z ]{0,4}",
            ],
            0..12
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Text that is mostly condition syntax.
fn expr_source() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                Just("severity".to_string()),
                Just("labels.site".to_string()),
                Just(" == ".to_string()),
                Just(" >= ".to_string()),
                Just(" && ".to_string()),
                Just(" || ".to_string()),
                Just("!".to_string()),
                Just("(".to_string()),
                Just(")".to_string()),
                Just("'firing'".to_string()),
                Just("\"x".to_string()),
                Just("2".to_string()),
                Just("-1e999".to_string()),
                Just("null".to_string()),
            ],
            0..10
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_any_bytes_never_panics_and_keeps_its_promises(
        raw in prop::collection::vec(any::<u8>(), 0..2048),
        limit in 0usize..4096,
    ) {
        match decode(&raw, limit) {
            Ok(None) => prop_assert!(raw.is_empty()),
            Ok(Some(d)) => {
                prop_assert!(raw.len() <= limit);
                prop_assert!(d.fields.is_object(), "fields are always an object");
                if let Some((id, state)) = &d.alarm {
                    prop_assert_eq!(d.fields["id"].as_str(), Some(id.as_str()));
                    prop_assert_eq!(d.fields["state"].as_str(), Some(state.as_str()));
                }
            }
            Err(Rejected::TooLarge { size, limit: l }) => prop_assert!(size > l),
            Err(Rejected::NotUtf8) => prop_assert!(std::str::from_utf8(&raw).is_err()),
            Err(Rejected::BrokenJson(_)) => {}
        }
    }

    #[test]
    fn decoding_any_json_text_never_panics(v in json(), cut in 0usize..64) {
        let text = v.to_string();
        prop_assert!(decode(text.as_bytes(), usize::MAX).is_ok(), "valid JSON decodes");
        // The same document cut short: broken JSON is rejected, never a panic.
        let mut end = text.len().saturating_sub(cut);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = decode(&text.as_bytes()[..end], usize::MAX);
    }

    #[test]
    fn templates_parse_and_render_anything_without_panicking(
        src in template_source(),
        fields in json(),
        topic in any::<String>(),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(t) = Template::parse(&src)
            && let Ok(out) = t.render(&fields, &topic, &raw)
            && !src.contains('{')
            && !src.contains('}')
        {
            // Literal text survives: a template without fields renders as itself.
            prop_assert_eq!(out, src);
        }
    }

    #[test]
    fn rendering_decoded_messages_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..1024),
        src in template_source(),
    ) {
        if let (Ok(Some(d)), Ok(t)) = (decode(&raw, 4096), Template::parse(&src)) {
            let _ = t.render(&d.fields, "lookout/h/alarms/cpu", &raw);
            let _ = crate::template::Template::parse(crate::config::DEFAULT_TITLE)
                .map(|t| t.render(&d.fields, "t", &raw));
        }
    }

    #[test]
    fn conditions_parse_and_evaluate_anything_without_panicking(
        src in expr_source(),
        fields in json(),
    ) {
        if let Ok(e) = Expr::parse(&src) {
            let _ = e.eval(&fields);
        }
    }

    #[test]
    fn readable_times_accept_any_number(ms in any::<i64>()) {
        let s = crate::template::readable_ms(ms);
        prop_assert!(s.ends_with(" UTC"));
    }
}
