//! What a structure's parser found wrong, before the filesystem places it on the device.
//!
//! The parsers of MFT records, update sequence arrays and index nodes see one buffer and
//! know only where in it the bad field is; `Ntfs::damage` knows where the buffer came from
//! and turns a `Flaw` into an `Error` whose byte position is the field's on the device.

use std::fmt;

/// A damaged field: what is wrong, where in the structure, and for a magic number or an
/// update sequence number, the value expected and the value found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaw {
    pub detail: String,
    /// Byte of the structure holding the wrong field, when the parser knows it.
    pub at: Option<usize>,
    /// (expected, found).
    pub mismatch: Option<(String, String)>,
}

impl Flaw {
    /// A flaw at byte `at` of the structure.
    pub fn at(at: usize, detail: impl Into<String>) -> Self {
        Flaw {
            detail: detail.into(),
            at: Some(at),
            mismatch: None,
        }
    }

    /// Adds the value the field must hold and the value it holds.
    pub fn expected(mut self, expected: impl fmt::Display, found: impl fmt::Display) -> Self {
        self.mismatch = Some((expected.to_string(), found.to_string()));
        self
    }

    /// The flaw of a part that starts at byte `base` of an enclosing structure: the position
    /// moves by `base` (or becomes `base` if the part's parser did not know it), and the
    /// detail is prefixed with the part's name.
    pub fn within(mut self, base: usize, part: &str) -> Self {
        self.at = Some(self.at.map_or(base, |a| a.saturating_add(base)));
        self.detail = format!("{part}: {}", self.detail);
        self
    }
}

impl From<String> for Flaw {
    fn from(detail: String) -> Self {
        Flaw {
            detail,
            at: None,
            mismatch: None,
        }
    }
}

impl From<&str> for Flaw {
    fn from(detail: &str) -> Self {
        Flaw::from(detail.to_string())
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if let Some((e, x)) = &self.mismatch {
            write!(f, ": expected {e}, found {x}")?;
        }
        Ok(())
    }
}
