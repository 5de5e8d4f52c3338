//! Title and body templates: the first line is the template, the rest the JSON fields it
//! renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::template::Template;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (src, rest) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Ok(t) = Template::parse(src) else {
        return;
    };
    let fields = serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
    let _ = t.render(&fields, "lookout/edge-1/alarms/cpu", rest.as_bytes());
});
