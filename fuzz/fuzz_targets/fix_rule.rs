//! The rule-file parser on arbitrary text: a rule or a schema error, never a panic; a rule
//! that parses has templates and patterns that fill and compile for default facts.
#![no_main]

use ferry::fix::{rule, Facts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(r) = rule::parse("fuzz.toml", text) {
        let facts = Facts::default();
        for e in &r.edits {
            if let Some(p) = &e.only_if {
                let _ = p.regex(&facts);
            }
        }
    }
});
