//! Route `when` conditions: the first line is the condition, the rest the JSON fields it
//! is evaluated on.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::expr::Expr;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (src, rest) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Ok(e) = Expr::parse(src) else {
        return;
    };
    let fields = serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
    let _ = e.eval(&fields);
});
