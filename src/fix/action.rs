//! The text edits: pure functions from old bytes to new bytes, each idempotent (the engine
//! checks that too: it runs every edit twice and refuses one whose second run changes the
//! file again).

use super::rule::{KeyFormat, SetValue};
use super::text::{indent, lines, Lines};
use regex::bytes::Regex;

/// `replace` per line: the regex never sees a line terminator.
pub fn replace_lines(data: &[u8], re: &Regex, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (content, eol) in lines(data) {
        out.extend_from_slice(&re.replace_all(content, with));
        out.extend_from_slice(eol);
    }
    out
}

/// `replace` over the whole file.
pub fn replace_file(data: &[u8], re: &Regex, with: &[u8]) -> Vec<u8> {
    re.replace_all(data, with).into_owned()
}

fn is_commented(content: &[u8], prefix: &[u8]) -> bool {
    content[indent(content)..].starts_with(prefix)
}

/// `comment`: prefixes lines that match and are not commented already.
pub fn comment(data: &[u8], re: &Regex, prefix: &str) -> Vec<u8> {
    let p = prefix.as_bytes();
    let mut l = Lines::new(data);
    for (content, _) in &mut l.lines {
        if !is_commented(content, p) && re.is_match(content) {
            content.splice(0..0, p.iter().copied());
        }
    }
    l.into_bytes()
}

/// `uncomment`: for commented lines whose text after the prefix (and blanks) matches,
/// removes the prefix and those blanks, keeping the indentation before it.
pub fn uncomment(data: &[u8], re: &Regex, prefix: &str) -> Vec<u8> {
    let p = prefix.as_bytes();
    let mut l = Lines::new(data);
    for (content, _) in &mut l.lines {
        let ind = indent(content);
        let Some(mut rest) = content[ind..].strip_prefix(p) else {
            continue;
        };
        while let Some((b' ' | b'\t', r)) = rest.split_first() {
            rest = r;
        }
        if !rest.is_empty() && re.is_match(rest) {
            let mut new = content[..ind].to_vec();
            new.extend_from_slice(rest);
            *content = new;
        }
    }
    l.into_bytes()
}

/// `ensure-line`: each wanted line present once. A line counts as present when an existing
/// line equals it (trailing blanks aside) or matches `matching`. Missing lines go after the
/// last line matching `after` (in order), or at the end.
pub fn ensure_lines(
    data: &[u8],
    wanted: &[Vec<u8>],
    after: Option<&Regex>,
    matching: Option<&Regex>,
) -> Vec<u8> {
    let mut l = Lines::new(data);
    let mut insert_at = after.and_then(|re| {
        l.lines
            .iter()
            .rposition(|(c, _)| re.is_match(c))
            .map(|i| i.saturating_add(1)) // a line's index: below the line count
    });
    for w in wanted {
        let present = l.lines.iter().any(|(c, _)| {
            c.trim_ascii_end() == w.trim_ascii_end() || matching.is_some_and(|m| m.is_match(c))
        });
        if present {
            continue;
        }
        let at = insert_at.unwrap_or(l.lines.len());
        l.insert(at, w.clone());
        if let Some(i) = &mut insert_at {
            *i = i.saturating_add(1); // at most the line count before this insert
        }
    }
    l.into_bytes()
}

/// The value a shell assignment's right-hand side `rhs` starts with: the unquoted text, the
/// quote character used, and what follows the value on the line (after its closing quote).
fn shell_value(rhs: &[u8]) -> (Vec<u8>, Option<u8>, &[u8]) {
    match rhs.split_first() {
        Some((&q @ (b'"' | b'\''), mut rest)) => {
            let mut val = Vec::new();
            while let Some((&c, r)) = rest.split_first() {
                rest = r;
                match (c, r.split_first()) {
                    (c, _) if c == q => break,
                    (b'\\', Some((&escaped, r))) if q == b'"' => {
                        val.push(escaped);
                        rest = r;
                    }
                    (c, _) => val.push(c),
                }
            }
            (val, Some(q), rest)
        }
        _ => {
            let n = rhs
                .iter()
                .position(|c| c.is_ascii_whitespace())
                .unwrap_or(rhs.len());
            let (val, rest) = rhs.split_at(n);
            (val.to_vec(), None, rest)
        }
    }
}

/// Quotes a shell value as needed, keeping the file's quote style when it had one.
fn shell_quote(v: &[u8], style: Option<u8>) -> Vec<u8> {
    let plain = !v.is_empty()
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_-./:,=+@%".contains(c));
    match style {
        None if plain => v.to_vec(),
        Some(b'\'') if !v.contains(&b'\'') => [&b"'"[..], v, b"'"].concat(),
        _ => {
            let mut out = vec![b'"'];
            for &c in v {
                if matches!(c, b'"' | b'\\' | b'$' | b'`') {
                    out.push(b'\\');
                }
                out.push(c);
            }
            out.push(b'"');
            out
        }
    }
}

/// The new value given the old one (`None`: the key is absent); `None` result: no change.
fn new_value(old: Option<&[u8]>, value: &SetValue, filled: &[u8]) -> Option<Vec<u8>> {
    match value {
        SetValue::To(_) => (old != Some(filled)).then(|| filled.to_vec()),
        SetValue::Words { add, remove } => {
            let words: Vec<&[u8]> = old
                .unwrap_or_default()
                .split(|c| c.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .collect();
            let mut out: Vec<&[u8]> = words
                .iter()
                .copied()
                .filter(|w| !remove.iter().any(|r| r.as_bytes() == *w))
                .collect();
            for a in add {
                if !out.contains(&a.as_bytes()) {
                    out.push(a.as_bytes());
                }
            }
            if old.is_some() && out == words {
                return None;
            }
            if old.is_none() && out.is_empty() {
                return None;
            }
            Some(out.join(&b' '))
        }
    }
}

/// `set-key`: sets (or edits the word list of) `key` on every line that assigns it, in the
/// given section for INI files; adds the key when absent and `create`.
pub fn set_key(
    data: &[u8],
    key: &str,
    value: &SetValue,
    filled: &[u8],
    format: KeyFormat,
    section: Option<&str>,
    create: bool,
) -> Vec<u8> {
    let key = key.as_bytes();
    let mut l = Lines::new(data);
    let mut current: Option<Vec<u8>> = None; // INI section of the line being looked at
    let in_section = |cur: &Option<Vec<u8>>| match (section, cur) {
        (Some("*"), Some(_)) => true,
        (Some(s), Some(c)) => s.as_bytes() == c.as_slice(),
        (None, None) => true,
        _ => false,
    };
    let mut found = false;
    // Where to add the key: after the last non-blank line of the wanted section.
    let mut section_end: Option<usize> = None;
    let mut seen_section = false;
    for (i, after) in (0..l.lines.len()).zip(1..) {
        let content = l.lines[i].0.clone();
        let ind = indent(&content);
        let t = &content[ind..];
        if format == KeyFormat::Ini && t.starts_with(b"[") {
            if let Some(end) = t.iter().position(|c| *c == b']') {
                current = Some(t[1..end].to_vec());
                seen_section = true;
                if in_section(&current) {
                    section_end = Some(after);
                }
                continue;
            }
        }
        if format == KeyFormat::Ini && !in_section(&current) {
            continue;
        }
        if !t.is_empty() && !t.starts_with(b"#") && !t.starts_with(b";") && format == KeyFormat::Ini
        {
            section_end = Some(after);
        }
        let after_key = match format {
            KeyFormat::Shell => {
                let t2 = t.strip_prefix(b"export ").map_or(t, |r| &r[indent(r)..]);
                t2.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(b"="))
                    .and_then(|r| content.len().checked_sub(r.len()))
            }
            KeyFormat::Kv | KeyFormat::Ini => t.strip_prefix(key).and_then(|r| {
                let r2 = &r[indent(r)..];
                r2.strip_prefix(b"=").and_then(|r3| {
                    let r4 = &r3[indent(r3)..];
                    content.len().checked_sub(r4.len())
                })
            }),
        };
        let Some(vstart) = after_key else { continue };
        found = true;
        match format {
            KeyFormat::Shell => {
                let (head, rhs) = content.split_at(vstart);
                let (old, quote, tail) = shell_value(rhs);
                if let Some(v) = new_value(Some(&old), value, filled) {
                    let mut new = head.to_vec();
                    new.extend_from_slice(&shell_quote(&v, quote));
                    new.extend_from_slice(tail);
                    l.lines[i].0 = new;
                }
            }
            KeyFormat::Kv | KeyFormat::Ini => {
                let old = content[vstart..].trim_ascii_end();
                if let Some(v) = new_value(Some(old), value, filled) {
                    let mut new = content[..vstart].to_vec();
                    new.extend_from_slice(&v);
                    l.lines[i].0 = new;
                }
            }
        }
    }
    if found || !create {
        return l.into_bytes();
    }
    let Some(v) = new_value(None, value, filled) else {
        return l.into_bytes();
    };
    let line = match format {
        KeyFormat::Shell => [key, b"=", &shell_quote(&v, None)].concat(),
        KeyFormat::Kv | KeyFormat::Ini => [key, b" = ", &v].concat(),
    };
    match (format, section) {
        (KeyFormat::Ini, Some("*")) => {}
        (KeyFormat::Ini, Some(s)) => match section_end {
            Some(at) => l.insert(at, line),
            None => {
                l.insert(l.lines.len(), format!("[{s}]").into_bytes());
                l.insert(l.lines.len(), line);
            }
        },
        (KeyFormat::Ini, None) => {
            // Before the first section header, after the leading lines of the file.
            let at = if !seen_section {
                l.lines.len()
            } else {
                l.lines
                    .iter()
                    .position(|(c, _)| c[indent(c)..].starts_with(b"["))
                    .unwrap_or(0)
            };
            l.insert(at, line);
        }
        _ => {
            let n = l.lines.len();
            l.insert(n, line);
        }
    }
    l.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::template::Template;

    fn re(s: &str) -> Regex {
        crate::fix::rule::compile(s).unwrap()
    }

    fn to(v: &str) -> SetValue {
        SetValue::To(Template::literal(v))
    }

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn comment_uncomment() {
        let d = b"DEVICE=eth0\nHWADDR=00:0c:29:aa:bb:cc\n#HWADDR=old\n";
        let c = comment(d, &re("^HWADDR="), "#");
        assert_eq!(
            s(c.clone()),
            "DEVICE=eth0\n#HWADDR=00:0c:29:aa:bb:cc\n#HWADDR=old\n"
        );
        assert_eq!(comment(&c, &re("HWADDR="), "#"), c);
        let d = b"#1:2345:respawn:/sbin/mingetty tty1\n# 2:2345:respawn:/sbin/mingetty tty2\n# a comment about getty\n";
        let u = uncomment(d, &re(r"^[1-6]:\d+:respawn:.*getty"), "#");
        assert_eq!(
            s(u),
            "1:2345:respawn:/sbin/mingetty tty1\n2:2345:respawn:/sbin/mingetty tty2\n# a comment about getty\n"
        );
    }

    #[test]
    fn ensure() {
        let d = b"# modules\nloop";
        let w = vec![
            b"virtio_blk".to_vec(),
            b"loop".to_vec(),
            b"virtio_net".to_vec(),
        ];
        let e = ensure_lines(d, &w, None, None);
        assert_eq!(s(e.clone()), "# modules\nloop\nvirtio_blk\nvirtio_net\n");
        assert_eq!(ensure_lines(&e, &w, None, None), e);
        let e = ensure_lines(
            b"a\nexit 0\nb\n",
            &[b"x".to_vec(), b"y".to_vec()],
            Some(&re("^a")),
            None,
        );
        assert_eq!(s(e), "a\nx\ny\nexit 0\nb\n");
    }

    #[test]
    fn set_shell() {
        let d = b"GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"rd.lvm.lv=a console=hvc0\"\n";
        let n = set_key(
            d,
            "GRUB_TIMEOUT",
            &to("10"),
            b"10",
            KeyFormat::Shell,
            None,
            true,
        );
        assert_eq!(
            s(n),
            "GRUB_TIMEOUT=10\nGRUB_CMDLINE_LINUX=\"rd.lvm.lv=a console=hvc0\"\n"
        );
        let words = SetValue::Words {
            add: vec!["console=ttyS0".into()],
            remove: vec!["console=hvc0".into()],
        };
        let n = set_key(
            d,
            "GRUB_CMDLINE_LINUX",
            &words,
            b"",
            KeyFormat::Shell,
            None,
            true,
        );
        assert_eq!(
            s(n.clone()),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"rd.lvm.lv=a console=ttyS0\"\n"
        );
        assert_eq!(
            set_key(
                &n,
                "GRUB_CMDLINE_LINUX",
                &words,
                b"",
                KeyFormat::Shell,
                None,
                true
            ),
            n
        );
        let n = set_key(
            b"A=1",
            "B",
            &to("x y"),
            b"x y",
            KeyFormat::Shell,
            None,
            true,
        );
        assert_eq!(s(n), "A=1\nB=\"x y\"\n");
        let n = set_key(
            b"export A='1' # c\n",
            "A",
            &to("2"),
            b"2",
            KeyFormat::Shell,
            None,
            true,
        );
        assert_eq!(s(n), "export A='2' # c\n");
    }

    #[test]
    fn set_ini() {
        let d = b"[vmware]\nname=VMware\nbaseurl=http://packages.vmware.com/x\nenabled=1\n\n[other]\nenabled=1\n";
        let n = set_key(
            d,
            "enabled",
            &to("0"),
            b"0",
            KeyFormat::Ini,
            Some("vmware"),
            true,
        );
        assert_eq!(s(n.clone()), "[vmware]\nname=VMware\nbaseurl=http://packages.vmware.com/x\nenabled=0\n\n[other]\nenabled=1\n");
        let n = set_key(
            &n,
            "gpgcheck",
            &to("1"),
            b"1",
            KeyFormat::Ini,
            Some("vmware"),
            true,
        );
        assert_eq!(s(n), "[vmware]\nname=VMware\nbaseurl=http://packages.vmware.com/x\nenabled=0\ngpgcheck = 1\n\n[other]\nenabled=1\n");
        let n = set_key(
            d,
            "enabled",
            &to("0"),
            b"0",
            KeyFormat::Ini,
            Some("*"),
            true,
        );
        assert!(!s(n).contains("enabled=1"));
    }
}
