//! The bridge's config TOML, resolved as `lookout-bridge --config` does: routes, their
//! `when` conditions and templates, time intervals (mute windows), escalation, fallbacks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_bridge::config;
use lookout_shared::config::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::resolve(&Source::builtin("bridge.toml", text), &[]);
});
