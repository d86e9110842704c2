//! Shell-style patterns for one path component (`*`, `?`, `[a-z]`, `[!x]`), as fnmatch(3)
//! with FNM_PERIOD (a leading `.` is matched only by a literal `.`) and FNM_NOESCAPE (`\` is
//! a plain character: systemd unit names hold `\x2d`). POSIX's `[:alpha:]`, `[=e=]` and `[.c.]`
//! inside brackets are not supported: rules holding them are refused ([`posix_subexpression`]).
//!
//! Hand-written rather than `globset` or `glob::Pattern`: globset has no FNM_PERIOD and adds
//! `{a,b}`, `**` and `\` escapes that would have to be neutralised, and its releases that
//! build on our MSRV are old; glob's leading-dot rule lets `*.` match `.`, it rejects an
//! unclosed `[` and `**` inside a component, and it recurses once per `*`. The unit tests
//! check this matcher against glibc's fnmatch.

/// Whether a path component holds pattern characters.
pub fn is_pattern(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// Whether a bracket expression of `pat` holds a POSIX `[:class:]`, `[=e=]` or `[.c.]`,
/// which fnmatch(3) knows and [`matches`] does not (it would take them for plain members).
pub fn posix_subexpression(pat: &str) -> bool {
    let pat: Vec<char> = pat.chars().collect();
    let mut p = pat.as_slice();
    while let Some((&c, rest)) = p.split_first() {
        p = rest;
        if c != '[' {
            continue;
        }
        // The body is what `class` walks: up to the `]` it closes at.
        if let Some((_, after)) = class(rest, '\0') {
            let body = rest.get(..rest.len().saturating_sub(after.len())); // `after` is a tail of `rest`
            if body.is_some_and(|b| b.windows(2).any(|w| matches!(w, ['[', ':' | '=' | '.']))) {
                return true;
            }
            p = after;
        }
    }
    false
}

/// Matches `name` against `pat`. Iterative with one backtrack point (the last `*`), so the
/// time is bounded by len(pat) × len(name) whatever the input.
pub fn matches(pat: &str, name: &str) -> bool {
    let pat: Vec<char> = pat.chars().collect();
    let name: Vec<char> = name.chars().collect();
    if name.first() == Some(&'.') && pat.first() != Some(&'.') {
        return false;
    }
    let (mut p, mut n) = (pat.as_slice(), name.as_slice());
    // The pattern after the last `*` seen and where in the name it was last tried.
    let mut star: Option<(&[char], &[char])> = None;
    while let Some((&c, n_rest)) = n.split_first() {
        let step = match p.split_first() {
            Some(('*', rest)) => {
                star = Some((rest, n));
                p = rest;
                continue;
            }
            Some(('?', rest)) => Some(rest),
            Some(('[', rest)) => match class(rest, c) {
                Some((true, after)) => Some(after),
                Some((false, _)) => None,
                // An unclosed `[` is a literal.
                None => (c == '[').then_some(rest),
            },
            Some((&pc, rest)) if pc == c => Some(rest),
            _ => None,
        };
        if let Some(rest) = step {
            (p, n) = (rest, n_rest);
            continue;
        }
        // Let the last `*` take one more character and try again from there.
        let Some((after, tried)) = star else {
            return false;
        };
        let Some((_, from)) = tried.split_first() else {
            return false;
        };
        star = Some((after, from));
        (p, n) = (after, from);
    }
    p.iter().all(|c| *c == '*')
}

/// Evaluates the bracket expression whose body starts at `p` (just after the `[`) against
/// `c`: whether it matches and the pattern after the closing `]`; `None` when there is no
/// closing `]`. A `]` first in the body is a member, as is a `-` first or last.
fn class(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negate, mut p) = match p.split_first() {
        Some((&('!' | '^'), rest)) => (true, rest),
        _ => (false, p),
    };
    let mut hit = false;
    let mut first = true;
    loop {
        p = match p {
            [']', rest @ ..] if !first => return Some((hit != negate, rest)),
            [lo, '-', hi, rest @ ..] if *hi != ']' => {
                hit |= (*lo..=*hi).contains(&c);
                rest
            }
            [x, rest @ ..] => {
                hit |= *x == c;
                rest
            }
            [] => return None,
        };
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn fnmatch() {
        assert!(matches("ifcfg-*", "ifcfg-eth0"));
        assert!(!matches("ifcfg-*", "ifcfg"));
        assert!(matches("S??vmware*", "S19vmware-tools"));
        assert!(matches("rc[235].d", "rc3.d"));
        assert!(!matches("rc[235].d", "rc4.d"));
        assert!(matches("rc[!0-1].d", "rc5.d"));
        assert!(!matches("*", ".hidden"));
        assert!(matches(".*", ".hidden"));
        assert!(matches("a[b", "a[b"));
        assert!(matches("*x*y*z*", "aaxbbyccz"));
        assert!(!matches(&"*a".repeat(30), &"a".repeat(29)));
        // FNM_PERIOD also when `*` could match nothing or a class holds the dot.
        assert!(!matches("*.", "."));
        assert!(!matches("?x", ".x"));
        assert!(!matches("[.]x", ".x"));
        assert!(matches("[]]", "]"));
        assert!(matches("[!]]", "a"));
        assert!(matches("[a-]", "-"));
        assert!(!matches("[z-a]", "m"));
        assert!(matches("*\\x2d*", "run-vmblock\\x2dfuse.mount"));
        assert!(matches("[!", "[!"));
    }

    #[test]
    fn posix_subexpressions_are_found() {
        use super::posix_subexpression as posix;
        for yes in ["rc[[:digit:]].d", "[a[=e=]]", "x[![.-.]]y", "[[:a]"] {
            assert!(posix(yes), "{yes}");
        }
        for no in ["a[.]b", "[:digit:]", "[[]:", "*.conf", "a[b", "[]:]"] {
            assert!(!posix(no), "{no}");
        }
    }

    /// glibc's fnmatch(3) with FNM_PERIOD | FNM_NOESCAPE.
    #[allow(unsafe_code)] // the oracle: two NUL-terminated strings that outlive the call.
    fn glibc(pat: &str, name: &str) -> bool {
        let p = std::ffi::CString::new(pat).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: both pointers are valid C strings for the duration of the call.
        let r = unsafe {
            libc::fnmatch(
                p.as_ptr(),
                n.as_ptr(),
                libc::FNM_PERIOD | libc::FNM_NOESCAPE,
            )
        };
        r == 0
    }

    #[test]
    fn agrees_with_glibc() {
        let pat_chars = ['a', 'b', '.', '*', '?', '[', ']', '!', '^', '-', 'z', '\\'];
        let name_chars = ['a', 'b', '.', '[', ']', '!', '^', '-', 'z', '*', '\\'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % 1024).unwrap() % m
        };
        for _ in 0..50_000 {
            let pat: String = (0..rnd(8))
                .map(|_| pat_chars[rnd(pat_chars.len())])
                .collect();
            let name: String = (0..rnd(7))
                .map(|_| name_chars[rnd(name_chars.len())])
                .collect();
            // POSIX's `[:alpha:]`, `[=e=]` and `[.c.]` inside brackets are not supported.
            if ["[.", "[=", "[:"].iter().any(|s| pat.contains(s)) {
                continue;
            }
            assert_eq!(matches(&pat, &name), glibc(&pat, &name), "{pat:?} {name:?}");
        }
    }
}
