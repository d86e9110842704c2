//! Case-insensitive directories (EXT4_CASEFOLD_FL with the casefold feature, s_encoding
//! UTF-8 12.1). The kernel keeps names as created, but compares and hashes them after
//! utf8_casefold: NFD decomposition and full Unicode case folding (fs/unicode). Names that are
//! not valid UTF-8 are compared and hashed as raw bytes.
//!
//! ferry carries no Unicode tables, so it is exact only for ASCII:
//! - a lookup by an ASCII name (or by non-UTF-8 bytes) hashes exactly what the kernel hashes
//!   and goes through the htree index;
//! - a lookup by any other UTF-8 name scans the directory linearly and compares with Rust's
//!   `to_lowercase` per character. That differs from casefolding for multi-character folds
//!   ("ß" against "SS"), for some special cases (Turkish dotless i, final sigma, Cherokee) and
//!   ignores normalization: a precomposed "é" does not match a decomposed "e\u{301}", which the
//!   kernel treats as the same name. Such lookups may miss a name the kernel finds; they never
//!   find a name that differs in more than case.

use std::borrow::Cow;

/// What the kernel hashes for `name` in a casefolded directory, when ferry can compute it:
/// ASCII folded to lower case, non-UTF-8 bytes as they are. None for other UTF-8 names.
pub fn hash_name(name: &[u8]) -> Option<Cow<'_, [u8]>> {
    if name.is_ascii() {
        return Some(Cow::Owned(name.to_ascii_lowercase()));
    }
    match std::str::from_utf8(name) {
        Ok(_) => None,
        Err(_) => Some(Cow::Borrowed(name)),
    }
}

/// Whether directory entry `entry` is the name `sought` in a casefolded directory (see the
/// module comment for where this is an approximation).
pub fn matches(sought: &[u8], entry: &[u8]) -> bool {
    if sought == entry {
        return true;
    }
    if sought.is_ascii() && entry.is_ascii() {
        return sought.eq_ignore_ascii_case(entry);
    }
    match (std::str::from_utf8(sought), std::str::from_utf8(entry)) {
        (Ok(a), Ok(b)) => a
            .chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase)),
        // Invalid UTF-8 on either side: only the exact bytes match.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert_eq!(hash_name(b"README.Txt").unwrap().as_ref(), b"readme.txt");
        assert_eq!(hash_name(b"a\xff").unwrap().as_ref(), b"a\xff");
        assert!(hash_name("Ärger".as_bytes()).is_none());
        assert!(matches(b"Hello", b"hELLO"));
        assert!(!matches(b"Hello", b"Hell0"));
        assert!(matches("ÄRGER".as_bytes(), "ärger".as_bytes()));
        assert!(!matches(b"a\xff", b"A\xff"));
        assert!(matches(b"a\xff", b"a\xff"));
    }
}
