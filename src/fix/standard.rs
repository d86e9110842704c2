//! The standard rule set, `fixers/*.toml`, built into the binary so `ferry fix` needs no
//! installed data files. A test checks that this list and the directory agree.

use super::error::Result;
use super::rule::{self, Rule};

/// (file name, contents) of every standard rule, in run order.
pub const FILES: &[(&str, &str)] = &[];

/// The standard rules, parsed (a broken built-in rule is a bug the tests catch).
pub fn rules() -> Result<Vec<Rule>> {
    FILES
        .iter()
        .map(|(name, text)| rule::parse(&format!("builtin:fixers/{name}"), text))
        .collect()
}
