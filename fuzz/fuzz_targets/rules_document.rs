//! The retained `lookout/rules` document: JSON bytes to a rule set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lookout_agent::rules::RuleSet;

fuzz_target!(|data: &[u8]| {
    let _ = RuleSet::parse("lookout/rules", data);
});
