//! Shell-style patterns for one path component (`*`, `?`, `[a-z]`, `[!x]`), as fnmatch(3)
//! with FNM_PERIOD: a leading `.` is matched only by a literal `.`.

/// Whether a path component holds pattern characters.
pub fn is_pattern(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// Matches `name` against `pat`. Iterative with one backtrack point per `*`, so the time
/// is bounded by len(pat) × len(name) whatever the input.
pub fn matches(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if n.first() == Some(&'.') && p.first() != Some(&'.') {
        return false;
    }
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, n[ni]) {
                        if ok {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Evaluates the bracket expression starting at `p[start]` (`[`) against `c`: whether it
/// matches and the index after the closing `]`; `None` if there is no closing `]`.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
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
    }
}
