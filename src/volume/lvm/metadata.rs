//! The LVM2 text metadata format (LVM2 `lib/config/config.c` reads it; `lib/format_text/
//! export.c` writes it): `key = value` lines, `name { ... }` sections, values that are integers,
//! quoted strings (with `\"` and `\\` escapes) or flat arrays `[ "a", 1 ]`, and `#` comments.
//!
//! The text comes from the disk, so the parser is bounded: the nesting depth is capped (the
//! recursion is one level per section), as are the text size and the number of nodes.

use nom::branch::alt;
use nom::bytes::complete::{take_till, take_while1};
use nom::character::complete::{char, digit0, digit1, multispace1};
use nom::combinator::{opt, recognize, value};
use nom::multi::many0_count;
use nom::sequence::preceded;
use nom::{IResult, Parser};
use std::borrow::Cow;
use std::cell::Cell;

/// Texts larger than this are refused before parsing. LVM's own default metadata area is 1 MiB;
/// 16 MiB leaves room for huge VGs and bounds memory.
pub const MAX_TEXT: usize = 16 << 20;
/// LVM writes at most 4 levels (VG / logical_volumes / LV / segment); 64 is generous and keeps
/// the recursion (one frame per level) far from the stack limit.
pub const MAX_DEPTH: usize = 64;
/// Values, array items and sections in one text: bounds the tree's memory (each node is tens
/// of bytes) whatever the text holds.
pub const MAX_NODES: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    /// LVM arrays are flat: only integers, floats and strings inside.
    Array(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Value(Value),
    Section(Section),
}

/// One `{ ... }` block (or the whole text): its items in text order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    pub items: Vec<(String, Item)>,
}

impl Section {
    /// The first value named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().find_map(|(k, v)| match v {
            Item::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    /// The first subsection named `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.items.iter().find_map(|(k, v)| match v {
            Item::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// All subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Item::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// An array of strings (`status = ["READ", "WRITE"]`); None if absent or not all strings.
    pub fn strings(&self, key: &str) -> Option<Vec<&str>> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// A syntax error: `offset` is the byte offset in the text, `line` 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub offset: usize,
    pub line: usize,
    pub detail: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.detail)
    }
}

/// The parser's error: where (the rest of the input) and what.
#[derive(Debug)]
struct PErr<'a> {
    at: &'a [u8],
    msg: Cow<'static, str>,
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(at: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        PErr {
            at,
            msg: "syntax error".into(),
        }
    }

    fn append(_: &'a [u8], _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a [u8], T, PErr<'a>>;

fn fail<'a, T>(at: &'a [u8], msg: impl Into<Cow<'static, str>>) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        msg: msg.into(),
    }))
}

/// Whitespace and `#` comments.
fn ws(i: &[u8]) -> PResult<'_, ()> {
    value(
        (),
        many0_count(alt((
            multispace1,
            preceded(char('#'), take_till(|c| c == b'\n')),
        ))),
    )
    .parse(i)
}

/// Key and section names: LVM allows letters, digits and `_+.-` in VG/LV names.
fn ident(i: &[u8]) -> PResult<'_, &[u8]> {
    take_while1(|c: u8| c.is_ascii_alphanumeric() || b"_+.-".contains(&c)).parse(i)
}

/// A quoted string; `\x` stands for `x` (LVM escapes `"` and `\` this way).
fn string(i: &[u8]) -> PResult<'_, String> {
    let (rest, quote) = alt((char('"'), char('\''))).parse(i)?;
    let quote = if quote == '"' { b'"' } else { b'\'' };
    let mut out = Vec::new();
    let mut bytes = rest.iter();
    loop {
        match bytes.next() {
            None => return fail(i, "unterminated string"),
            Some(&c) if c == quote => break,
            Some(b'\\') => match bytes.next() {
                Some(&e) => out.push(e),
                None => return fail(i, "unterminated string"),
            },
            Some(&c) => out.push(c),
        }
    }
    let s = String::from_utf8_lossy(&out).into_owned();
    Ok((bytes.as_slice(), s))
}

/// An integer (possibly negative) or a float (`1.5`).
fn number(i: &[u8]) -> PResult<'_, Value> {
    let (rest, text) = recognize((opt(char('-')), digit1, opt((char('.'), digit0)))).parse(i)?;
    // OK: recognize() only matched ASCII digits, '-' and '.'.
    let s = std::str::from_utf8(text).unwrap_or("");
    if s.contains('.') {
        match s.parse::<f64>() {
            Ok(f) => Ok((rest, Value::Float(f))),
            Err(_) => fail(i, "bad number"),
        }
    } else {
        match s.parse::<i64>() {
            Ok(n) => Ok((rest, Value::Int(n))),
            Err(_) => fail(i, format!("integer {s} out of range")),
        }
    }
}

fn scalar(i: &[u8]) -> PResult<'_, Value> {
    alt((string.map(Value::Str), number)).parse(i)
}

struct TextParser {
    nodes: Cell<usize>,
}

impl TextParser {
    fn count<'a>(&self, at: &'a [u8]) -> PResult<'a, ()> {
        let n = self.nodes.get().saturating_add(1);
        if n > MAX_NODES {
            return fail(at, format!("more than {MAX_NODES} values and sections"));
        }
        self.nodes.set(n);
        Ok((at, ()))
    }

    /// `[ scalar, scalar, ... ]`, trailing comma allowed.
    fn array<'a>(&self, i: &'a [u8]) -> PResult<'a, Vec<Value>> {
        let (mut i, _) = char('[').parse(i)?;
        let mut out = Vec::new();
        loop {
            (i, _) = ws(i)?;
            if let Some(rest) = i.strip_prefix(b"]") {
                return Ok((rest, out));
            }
            self.count(i)?;
            let (r, v) = match scalar(i) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => {
                    return fail(i, "expected a string, a number or ']' in an array")
                }
                Err(e) => return Err(e),
            };
            out.push(v);
            let (r, _) = ws(r)?;
            i = match r.first() {
                Some(b',') => &r[1..],
                Some(b']') => r,
                _ => return fail(r, "expected ',' or ']' in an array"),
            };
        }
    }

    fn value<'a>(&self, i: &'a [u8]) -> PResult<'a, Value> {
        if i.first() == Some(&b'[') {
            return self.array(i).map(|(r, a)| (r, Value::Array(a)));
        }
        match scalar(i) {
            Err(nom::Err::Error(_)) => fail(i, "expected a value (string, number or array)"),
            r => r,
        }
    }

    /// The items of a section up to its `}` (or of the whole text up to its end, `top`).
    fn body<'a>(&self, mut i: &'a [u8], depth: usize, top: bool) -> PResult<'a, Section> {
        let mut sec = Section::default();
        loop {
            (i, _) = ws(i)?;
            match i.first() {
                None if top => return Ok((i, sec)),
                None => return fail(i, "unexpected end of text: a section lacks its '}'"),
                Some(b'}') if top => return fail(i, "'}' without a section to close"),
                Some(b'}') => return Ok((&i[1..], sec)),
                _ => {}
            }
            let (r, name) = match ident(i) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(i, "expected a name"),
                Err(e) => return Err(e),
            };
            let name = String::from_utf8_lossy(name).into_owned();
            self.count(i)?;
            let (r, _) = ws(r)?;
            match r.first() {
                Some(b'=') => {
                    let (r, _) = ws(&r[1..])?;
                    let (r, v) = self.value(r)?;
                    sec.items.push((name, Item::Value(v)));
                    i = r;
                }
                Some(b'{') => {
                    if depth >= MAX_DEPTH {
                        return fail(r, format!("sections nested deeper than {MAX_DEPTH}"));
                    }
                    let (r, s) = self.body(&r[1..], depth.saturating_add(1), false)?;
                    sec.items.push((name, Item::Section(s)));
                    i = r;
                }
                _ => return fail(r, format!("expected '=' or '{{' after '{name}'")),
            }
        }
    }
}

/// Parses a metadata text (as stored: trailing NULs are ignored).
pub fn parse(text: &[u8]) -> Result<Section, Error> {
    let err = |offset: usize, detail: String| Error {
        offset,
        line: text[..offset.min(text.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            .saturating_add(1),
        detail,
    };
    if text.len() > MAX_TEXT {
        return Err(err(
            0,
            format!(
                "text of {} bytes exceeds the limit of {MAX_TEXT}",
                text.len()
            ),
        ));
    }
    let end = text
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |p| p.saturating_add(1));
    let p = TextParser {
        nodes: Cell::new(0),
    };
    match p.body(&text[..end], 0, true) {
        Ok((_, s)) => Ok(s),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            // `e.at` is the unparsed rest of `text[..end]`.
            Err(err(end.saturating_sub(e.at.len()), e.msg.into_owned()))
        }
        Err(nom::Err::Incomplete(_)) => Err(err(end, "incomplete text".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let t = b"# c\nvg {\n a = 1 # x\n b = -5\n s = \"q\\\"\\\\z\"\n arr = [\"x\", 2, ]\n e = []\n sub { f = 1.5 }\n}\nv = 1\n\0\0";
        let s = parse(t).unwrap();
        let vg = s.section("vg").unwrap();
        assert_eq!(vg.int("a"), Some(1));
        assert_eq!(vg.int("b"), Some(-5));
        assert_eq!(vg.str("s"), Some("q\"\\z"));
        assert_eq!(
            vg.get("arr"),
            Some(&Value::Array(vec![Value::Str("x".into()), Value::Int(2)]))
        );
        assert_eq!(vg.get("e"), Some(&Value::Array(vec![])));
        assert_eq!(
            vg.section("sub").unwrap().get("f"),
            Some(&Value::Float(1.5))
        );
        assert_eq!(s.int("v"), Some(1));
    }

    #[test]
    fn errors_have_offsets() {
        let e = parse(b"a = 1\nb = \"abc").unwrap_err();
        assert_eq!((e.offset, e.line), (10, 2));
        assert!(e.detail.contains("unterminated string"), "{e}");
        let e = parse(b"a {\n b = 1\n").unwrap_err();
        assert!(e.detail.contains("'}'"), "{e}");
        let e = parse(b"a = 99999999999999999999").unwrap_err();
        assert!(e.detail.contains("out of range"), "{e}");
        let e = parse(b"a = [1 2]").unwrap_err();
        assert_eq!(e.offset, 7);
        assert!(parse(b"}").is_err());
        assert!(parse(b"a = ").is_err());
        assert!(parse(b"a b").is_err());
        assert!(parse(b"= 1").is_err());
        assert!(parse(b"a = [[1]]").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let mut t = Vec::new();
        for _ in 0..100_000 {
            t.extend_from_slice(b"a {");
        }
        let e = parse(&t).unwrap_err();
        assert!(e.detail.contains("nested deeper"), "{e}");
        let mut ok = Vec::new();
        for _ in 0..MAX_DEPTH {
            ok.extend_from_slice(b"a {");
        }
        ok.extend(std::iter::repeat_n(b'}', MAX_DEPTH));
        parse(&ok).unwrap();
    }

    #[test]
    fn node_limit() {
        let t = "a = 1\n".repeat(MAX_NODES + 1);
        let e = parse(t.as_bytes()).unwrap_err();
        assert!(e.detail.contains("more than"), "{e}");
    }
}
