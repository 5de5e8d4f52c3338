//! The agent's config TOML: parsed and resolved as `lookout-agent run --config` does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_agent::config;
use lookout_shared::config::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::builtin("fuzz.toml", text);
    if let Ok(parsed) = config::parse(&source, &[]) {
        let _ = parsed.resolve();
    }
});
