//! The layering of docs/ARCHITECTURE.md, kept true by reading the source (issue 16): imports
//! go down only, block → volume → fs → guest → {mount, fix, convert, forensics} → v2v → cli,
//! and nothing outside `block` names one of its format modules. Every `crate::` path of every
//! file under src/ (in `use` trees and in expressions) and every `super::` path that climbs out
//! of its top module is checked against the rules below; a failure names file, line and the
//! path that breaks the rule.

use std::path::{Path, PathBuf};

/// The top modules of src/lib.rs (and the binary's src/cli/) with the top modules each may
/// use. A module not listed here fails the test, so a new one must be placed explicitly.
const LAYERS: &[(&str, &[&str])] = &[
    // Shared utility: little/big-endian field reads, usable by every layer, using none.
    ("bytes", &[]),
    // Image formats: know nothing above them.
    ("block", UTIL),
    // Partition tables and LVM: devices of `block`.
    ("volume", &["bytes", "block"]),
    // Filesystems over volumes.
    ("fs", &["bytes", "block", "volume"]),
    // Windows registry hives: a file format read from byte slices, used from `guest` up.
    ("regf", UTIL),
    // The guest as a whole.
    ("guest", &["bytes", "block", "volume", "fs", "regf"]),
    // Source VM descriptions: use nothing above `block` (DESIGN.md, ARCHITECTURE.md).
    ("meta", &["bytes", "block"]),
    // The consumers of a guest, peers that do not use each other.
    ("mount", BELOW_TOP),
    ("fix", BELOW_TOP),
    ("convert", BELOW_TOP),
    ("forensics", BELOW_TOP),
    // The whole move: descriptions, fix and convert together.
    (
        "v2v",
        &[
            "bytes",
            "block",
            "volume",
            "fs",
            "regf",
            "guest",
            "meta",
            "mount",
            "fix",
            "convert",
            "forensics",
        ],
    ),
    // The binary: any of the library.
    (
        "cli",
        &[
            "bytes",
            "block",
            "volume",
            "fs",
            "regf",
            "guest",
            "meta",
            "mount",
            "fix",
            "convert",
            "forensics",
            "v2v",
        ],
    ),
];
const UTIL: &[&str] = &["bytes"];
const BELOW_TOP: &[&str] = &["bytes", "block", "volume", "fs", "regf", "guest"];

/// `block`'s format modules and their hidden parser re-exports: private behind `block::open`,
/// `block::create` and `block::Describe`, so nothing outside `block` names them (a copy goes
/// through the `BlockDevice` and `ImageWriter` faces only).
const FORMAT_MODULES: &[&str] = &["qcow2", "vmdk", "raw", "gzip", "zstream", "fuzzing"];

/// One file under src/: its top module and its module path below the crate root.
struct Source {
    path: PathBuf,
    top: String,
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("read src/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src/");
        let mut module: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let last = module.pop().expect("a file name");
        let stem = last.trim_end_matches(".rs");
        // The binary's root: src/cli/main.rs is the crate root of `ferry`, its files its modules.
        let in_bin = module.first().is_some_and(|m| m == "cli");
        if stem != "mod" && stem != "lib" && !(in_bin && stem == "main") {
            module.push(stem.to_string());
        }
        let Some(top) = module.first().cloned() else {
            continue; // src/lib.rs only declares the top modules
        };
        let text = std::fs::read_to_string(&path).expect("read a source file");
        out.push(Source {
            path: Path::new("src").join(rel),
            top,
            module,
            text: code_only(&text),
        });
    }
    out
}

/// The source with comments, string and char literals blanked (newlines kept, so line numbers
/// stay): a path in a doc comment or a message is not an import.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                    continue;
                }
                if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if !ident_before && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) {
            // A raw string r"…", r#"…"#, br"…", or an identifier starting with r.
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match c.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(&ch) => {
                        blank(&mut out, ch);
                        j += 1;
                    }
                }
            }
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a) left as it is.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 3..c.len().min(i + 12)).find(|&k| c[k] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => i = e + 1,
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Every path that starts at `at` in `text` (just after `crate::` or a `super::` chain),
/// expanded through `{…}` use trees, as segment lists.
fn paths_at(text: &[char], at: usize) -> Vec<Vec<String>> {
    fn skip_ws(t: &[char], mut i: usize) -> usize {
        while i < t.len() && t[i].is_whitespace() {
            i += 1;
        }
        i
    }
    fn tree(t: &[char], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
        let mut i = skip_ws(t, i);
        if t.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_ws(t, i);
                match t.get(i) {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(',') => i += 1,
                    Some(_) => {
                        let next = tree(t, i, prefix, out);
                        if next == i {
                            return i; // not a use tree after all
                        }
                        i = next;
                    }
                }
            }
        }
        let start = i;
        while i < t.len() && (t[i].is_alphanumeric() || t[i] == '_' || t[i] == '*') {
            i += 1;
        }
        if i == start {
            if !prefix.is_empty() {
                out.push(prefix.to_vec());
            }
            return i;
        }
        let mut path = prefix.to_vec();
        path.push(t[start..i].iter().collect());
        let j = skip_ws(t, i);
        if t.get(j) == Some(&':') && t.get(j + 1) == Some(&':') {
            return tree(t, j + 2, &path, out);
        }
        out.push(path);
        // `as alias` in a use tree.
        if t[j..].starts_with(&['a', 's', ' ']) {
            let mut k = skip_ws(t, j + 2);
            while k < t.len() && (t[k].is_alphanumeric() || t[k] == '_') {
                k += 1;
            }
            return k;
        }
        i
    }
    let mut out = Vec::new();
    tree(text, at, &[], &mut out);
    out
}

/// The crate-level paths a file names: `crate::…`, and `super::…` chains that climb out of
/// the file's top module (which name a crate-level item).
fn crate_paths(src: &Source) -> Vec<(usize, Vec<String>)> {
    let t: Vec<char> = src.text.chars().collect();
    let line_of = |pos: usize| 1 + t[..pos].iter().filter(|&&c| c == '\n').count();
    let word_at = |i: usize, w: &str| {
        let w: Vec<char> = w.chars().collect();
        t[i..].starts_with(&w)
            && (i == 0 || !(t[i - 1].is_alphanumeric() || t[i - 1] == '_' || t[i - 1] == ':'))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if word_at(i, "crate::") {
            for p in paths_at(&t, i + "crate::".len()) {
                out.push((line_of(i), p));
            }
            i += "crate::".len();
        } else if word_at(i, "super::") {
            let mut j = i;
            let mut ups = 0;
            while t[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                ups += 1;
                j += "super::".len();
            }
            // From src/a/b.rs (module a::b), `super::super::x` is crate::x.
            if ups >= src.module.len() {
                let keep = ups - src.module.len();
                for p in paths_at(&t, j) {
                    if keep == 0 {
                        out.push((line_of(i), p));
                    }
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn allowed(top: &str) -> Option<&'static [&'static str]> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, a)| *a)
}

/// The top modules that src/lib.rs declares, and the binary's cli.
fn declared_tops() -> Vec<String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let text = code_only(&std::fs::read_to_string(lib).expect("read src/lib.rs"));
    let mut tops: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    tops.push("cli".to_string());
    tops
}

#[test]
fn every_top_module_has_a_layer() {
    let missing: Vec<String> = declared_tops()
        .into_iter()
        .filter(|m| allowed(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "top modules with no place in the layering (add them to LAYERS as \
         docs/ARCHITECTURE.md places them): {missing:?}"
    );
}

#[test]
fn imports_go_down_only() {
    let tops = declared_tops();
    let sources = sources();
    assert!(
        sources.len() > 100,
        "found only {} files under src/",
        sources.len()
    );
    let mut bad = Vec::new();
    for src in &sources {
        let Some(may) = allowed(&src.top) else {
            bad.push(format!(
                "{}: top module `{}` has no layer",
                src.path.display(),
                src.top
            ));
            continue;
        };
        for (line, path) in crate_paths(src) {
            let used = &path[0];
            if used == &src.top || !tops.contains(used) {
                continue; // its own layer, or a crate-root item
            }
            if !may.contains(&used.as_str()) {
                bad.push(format!(
                    "{}:{line}: `{}` uses `crate::{}`: {} may use only {may:?}",
                    src.path.display(),
                    src.top,
                    path.join("::"),
                    src.top,
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn format_modules_stay_inside_block() {
    let mut bad = Vec::new();
    let mut named = 0;
    for src in sources() {
        let reach = |line: usize, path: &[String], bad: &mut Vec<String>| {
            bad.push(format!(
                "{}:{line}: `{}` names block's format module: `{}`",
                src.path.display(),
                src.top,
                path.join("::")
            ));
        };
        if src.top == "block" {
            // The format modules are there, and block's facade names them.
            named += crate_paths(&src)
                .iter()
                .filter(|(_, p)| p.len() > 1 && p[0] == "block")
                .count();
            continue;
        }
        for (line, path) in crate_paths(&src) {
            if path.len() > 1 && path[0] == "block" && FORMAT_MODULES.contains(&path[1].as_str()) {
                reach(line, &path, &mut bad);
            }
        }
        // Through an imported `block` (use crate::block; … block::qcow2::…) or `ferry::block`.
        let t: Vec<char> = src.text.chars().collect();
        for i in 0..t.len() {
            let at_word = i == 0 || !(t[i - 1].is_alphanumeric() || t[i - 1] == '_');
            let preceded_by_crate = i >= 7 && t[i - 7..i].iter().collect::<String>() == "crate::";
            if at_word
                && !preceded_by_crate
                && t[i..].starts_with(&['b', 'l', 'o', 'c', 'k', ':', ':'])
            {
                let line = 1 + t[..i].iter().filter(|&&c| c == '\n').count();
                for p in paths_at(&t, i + "block::".len()) {
                    if FORMAT_MODULES.contains(&p[0].as_str()) {
                        let mut full = vec!["block".to_string()];
                        full.extend(p);
                        reach(line, &full, &mut bad);
                    }
                }
            }
        }
    }
    assert!(
        named > 0,
        "no crate:: path inside block: the scanner reads nothing"
    );
    assert!(
        bad.is_empty(),
        "block's format modules named outside block:\n{}",
        bad.join("\n")
    );
}

/// The scanner itself, on text that holds what it must find and what it must not.
#[test]
fn scanner_finds_paths_and_skips_text() {
    let src = Source {
        path: PathBuf::from("fs/ext4/x.rs"),
        top: "fs".into(),
        module: vec!["fs".into(), "ext4".into(), "x".into()],
        text: code_only(concat!(
            "use crate::{bytes, guest::{self, Guest as G}};\n",
            "// use crate::fix;\n",
            "let s = \"crate::mount\"; let c = '\"'; let r = r#\"crate::v2v\"#;\n",
            "fn f<'a>(x: &'a str) -> crate::convert::Error { super::super::super::meta::X }\n",
            "use super::super::Filesystem;\n",
        )),
    };
    let found: Vec<(usize, String)> = crate_paths(&src)
        .into_iter()
        .map(|(l, p)| (l, p.join("::")))
        .collect();
    let want: Vec<(usize, String)> = [
        (1, "bytes"),
        (1, "guest::self"),
        (1, "guest::Guest"),
        (4, "convert::Error"),
        (4, "meta::X"),
    ]
    .into_iter()
    .map(|(l, p)| (l, p.to_string()))
    .collect();
    assert_eq!(found, want);
}
