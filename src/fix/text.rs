//! Line handling shared by the text edits: files are bytes (a comment in Latin-1 must survive
//! an edit byte for byte), lines keep their own terminator, new lines take the file's.

/// Splits `data` into (content, terminator) pairs; the terminator is `\r\n`, `\n`, or empty
/// for a last line without one.
pub fn lines(data: &[u8]) -> Vec<(&[u8], &'static [u8])> {
    data.split_inclusive(|b| *b == b'\n')
        .map(|line| -> (&[u8], &'static [u8]) {
            if let Some(content) = line.strip_suffix(b"\r\n") {
                (content, b"\r\n")
            } else if let Some(content) = line.strip_suffix(b"\n") {
                (content, b"\n")
            } else {
                (line, b"")
            }
        })
        .collect()
}

/// The line terminator new lines get: the first line's, `\n` by default.
pub fn eol_of(data: &[u8]) -> &'static [u8] {
    match data.split_inclusive(|b| *b == b'\n').next() {
        Some(first) if first.ends_with(b"\r\n") => b"\r\n",
        _ => b"\n",
    }
}

/// Joins (content, terminator) pairs back into a file.
pub fn join<'a>(parts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (c, e) in parts {
        out.extend_from_slice(c);
        out.extend_from_slice(e);
    }
    out
}

/// Owned lines for edits that insert or change lines.
#[derive(Debug, Clone)]
pub struct Lines {
    pub lines: Vec<(Vec<u8>, Vec<u8>)>,
    pub eol: &'static [u8],
}

impl Lines {
    pub fn new(data: &[u8]) -> Self {
        Lines {
            lines: lines(data)
                .into_iter()
                .map(|(c, e)| (c.to_vec(), e.to_vec()))
                .collect(),
            eol: eol_of(data),
        }
    }

    /// Inserts a line at `at`, giving the previous last line a terminator if it had none.
    pub fn insert(&mut self, at: usize, content: Vec<u8>) {
        if at > 0 && at == self.lines.len() {
            if let Some(last) = self.lines.last_mut() {
                if last.1.is_empty() {
                    last.1 = self.eol.to_vec();
                }
            }
        }
        self.lines.insert(at, (content, self.eol.to_vec()));
    }

    pub fn into_bytes(self) -> Vec<u8> {
        join(self.lines.iter().map(|(c, e)| (c.as_slice(), e.as_slice())))
    }
}

/// Leading blanks of a line.
pub fn indent(line: &[u8]) -> usize {
    line.iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()
}

/// The offset of the first NUL byte, if any: such a file is not text.
pub fn nul_offset(data: &[u8]) -> Option<usize> {
    data.iter().position(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_terminators() {
        for data in [
            &b""[..],
            b"a",
            b"a\n",
            b"a\r\nb\nc",
            b"\n\n",
            b"\r\n",
            b"x\r",
        ] {
            assert_eq!(join(lines(data)), data);
            assert_eq!(Lines::new(data).into_bytes(), data);
        }
    }

    #[test]
    fn insert_after_unterminated_last_line() {
        let mut l = Lines::new(b"a\r\nb");
        l.insert(2, b"c".to_vec());
        assert_eq!(l.into_bytes(), b"a\r\nb\r\nc\r\n");
    }
}
