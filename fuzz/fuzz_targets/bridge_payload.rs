//! Alarm and score payloads as the bridge decodes them, then routed through a `when`
//! condition and rendered by the default title and body templates.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lookout_bridge::config::DEFAULT_TITLE;
use lookout_bridge::expr::Expr;
use lookout_bridge::message::decode;
use lookout_bridge::template::Template;

struct Compiled {
    title: Template,
    body: Template,
    when: Expr,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| Compiled {
        title: Template::parse(DEFAULT_TITLE).expect("default title parses"),
        body: Template::parse("{host} {source} {labels.site} {ts} {value} {topic}\n{payload}")
            .expect("body parses"),
        when: Expr::parse("severity >= 2 && labels.site == 'plant' || state != 'resolved'")
            .expect("condition parses"),
    })
}

fuzz_target!(|data: &[u8]| {
    let c = compiled();
    if let Ok(Some(d)) = decode(data, 256 * 1024) {
        let _ = c.when.eval(&d.fields);
        let _ = c.title.render(&d.fields, "lookout/edge-1/alarms/cpu", data);
        let _ = c.body.render(&d.fields, "lookout/edge-1/alarms/cpu", data);
    }
});
