//! Line diffs for `--dry-run`, `ferry diff` and the lines-changed counts of the report. The
//! edit script is `similar`'s Myers (with the bounded middle-snake search git and GNU diff
//! use, so a file pair with few common lines costs no quadratic time); here the lines are
//! split keeping their terminators and the hunks printed as `diff -u` prints them.

use similar::udiff::UnifiedHunkHeader;
use similar::{capture_diff_slices_deadline, group_diff_ops, Algorithm, DiffOp, DiffTag};
use std::time::{Duration, Instant};

use super::text::lines;

type Line<'a> = (&'a [u8], &'static [u8]);

/// The edit script turning `a` into `b`, line by line: a line is its content and its
/// terminator, so `x` at the end of a file differs from `x\n`, as it does for diff.
fn script(a: &[Line<'_>], b: &[Line<'_>]) -> Vec<DiffOp> {
    script_until(a, b, Instant::now().checked_add(SEARCH_TIME))
}

/// How long the search for the shortest edit script may take. Past it `similar` finishes with
/// a longer script that is still correct (a hunk replaces more lines than it needs to): the
/// diff is a report, and a pathological pair (two 4 MiB texts with few lines in common took
/// up to 12 s) must not stall `--dry-run` or `ferry diff`.
const SEARCH_TIME: Duration = Duration::from_secs(2);

fn script_until<T: Eq + std::hash::Hash>(
    a: &[T],
    b: &[T],
    deadline: Option<Instant>,
) -> Vec<DiffOp> {
    capture_diff_slices_deadline(Algorithm::Myers, a, b, deadline)
}

/// Lines added and removed between two texts.
pub fn count(a: &[u8], b: &[u8]) -> (usize, usize) {
    let (la, lb) = (lines(a), lines(b));
    let ops = script(&la, &lb);
    let added = ops
        .iter()
        .filter(|o| o.tag() != DiffTag::Equal)
        .map(|o| o.new_range().len())
        .sum();
    let removed = ops
        .iter()
        .filter(|o| o.tag() != DiffTag::Equal)
        .map(|o| o.old_range().len())
        .sum();
    (added, removed)
}

/// The hunks of a unified diff (`@@` lines onwards) with `context` lines around changes;
/// the caller writes the `---`/`+++` labels.
pub fn unified(a: &[u8], b: &[u8], context: usize) -> String {
    let (la, lb) = (lines(a), lines(b));
    let mut out = String::new();
    for hunk in group_diff_ops(script(&la, &lb), context) {
        out.push_str(&format!("{}\n", UnifiedHunkHeader::new(&hunk)));
        for op in &hunk {
            let (tag, old, new) = op.as_tag_tuple();
            if tag != DiffTag::Insert {
                let mark = if tag == DiffTag::Equal { ' ' } else { '-' };
                la.get(old)
                    .into_iter()
                    .flatten()
                    .for_each(|l| push(&mut out, mark, *l));
            }
            if matches!(tag, DiffTag::Insert | DiffTag::Replace) {
                lb.get(new)
                    .into_iter()
                    .flatten()
                    .for_each(|l| push(&mut out, '+', *l));
            }
        }
    }
    out
}

/// One hunk line: the mark, the content (lossy: the report is text), its terminator as
/// diff keeps it, and the marker diff prints after a last line without one.
fn push(out: &mut String, mark: char, (content, eol): Line<'_>) {
    out.push(mark);
    out.push_str(&String::from_utf8_lossy(content));
    if eol == b"\r\n" {
        out.push('\r');
    }
    out.push('\n');
    if eol.is_empty() {
        out.push_str("\\ No newline at end of file\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The script walks both sides in order, each line once, and pairs only equal lines: with
    /// all the time it needs, and with none left (the longer script after the deadline).
    fn covers(a: &[&str], b: &[&str]) {
        covers_until(a, b, None);
        covers_until(a, b, Some(Instant::now()));
    }

    fn covers_until(a: &[&str], b: &[&str], deadline: Option<Instant>) {
        let ops = script_until(a, b, deadline);
        let (mut x, mut y) = (0, 0);
        for o in ops {
            let (tag, old, new) = o.as_tag_tuple();
            assert_eq!((old.start, new.start), (x, y));
            if tag == DiffTag::Equal {
                assert_eq!(a[old.clone()], b[new.clone()]);
            }
            (x, y) = (old.end, new.end);
        }
        assert_eq!((x, y), (a.len(), b.len()));
    }

    #[test]
    fn scripts_cover_both_sides() {
        covers(&["a", "b", "c"], &["a", "x", "c"]);
        covers(&[], &["a"]);
        covers(&["a"], &[]);
        covers(
            &["a", "b", "c", "a", "b", "b", "a"],
            &["c", "b", "a", "b", "a", "c"],
        );
        let a: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        let b: Vec<String> = (0..3000).map(|i| (i * 7).to_string()).collect();
        let ar: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let br: Vec<&str> = b.iter().map(|s| s.as_str()).collect();
        covers(&ar, &br);
    }

    #[test]
    fn minimal_counts() {
        assert_eq!(count(b"a\nb\nc\n", b"a\nB\nc\n"), (1, 1));
        assert_eq!(count(b"", b"x\n"), (1, 0));
        assert_eq!(count(b"a\nb\n", b"a\nb\n"), (0, 0));
        assert_eq!(count(b"a\nb", b"a\nb\n"), (1, 1));
    }

    #[test]
    fn hunk_headers() {
        let d = unified(b"", b"x\ny\n", 3);
        assert_eq!(d, "@@ -0,0 +1,2 @@\n+x\n+y\n");
        let d = unified(
            b"1\n2\n3\n4\n5\n6\n7\n8\n9\n",
            b"1\n2\n3\n4\nfive\n6\n7\n8\n9",
            3,
        );
        assert_eq!(
            d,
            "@@ -2,8 +2,8 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n-9\n+9\n\\ No newline at end of file\n"
        );
        assert_eq!(unified(b"same\n", b"same\n", 3), "");
    }

    /// GNU `diff -u`'s hunks (its output without the two label lines).
    fn gnu(a: &[u8], b: &[u8], context: usize) -> String {
        let d = tempfile::tempdir().unwrap();
        let (pa, pb) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&pa, a).unwrap();
        std::fs::write(&pb, b).unwrap();
        let o = Command::new("diff")
            .arg(format!("-U{context}"))
            .arg(&pa)
            .arg(&pb)
            .output()
            .expect("GNU diff runs");
        assert!(o.status.code() != Some(2), "diff failed");
        let out = String::from_utf8(o.stdout).unwrap();
        out.split_inclusive('\n').skip(2).collect()
    }

    #[test]
    fn hunks_match_gnu_diff() {
        let lines = |n: usize| -> String { (1..=n).map(|i| format!("line {i}\n")).collect() };
        let ten = lines(10);
        let thirty = lines(30);
        let cases: Vec<(String, String)> = vec![
            (String::new(), String::new()),
            (String::new(), "x\ny\n".into()),
            ("x\ny\n".into(), String::new()),
            (String::new(), "no eol".into()),
            ("no eol".into(), String::new()),
            ("a\nb".into(), "a\nb\n".into()),
            ("a\nb\n".into(), "a\nb".into()),
            ("a\nb".into(), "a\nc".into()),
            (ten.clone(), format!("first\n{ten}")),
            (ten.clone(), format!("{ten}last\n")),
            (ten.clone(), format!("{ten}last")),
            (ten.clone(), ten.replace("line 5\n", "")),
            (ten.clone(), ten.replace("line 5\n", "five\nmore\n")),
            (
                thirty.clone(),
                thirty.replace("line 3\n", "3\n").replace("line 27\n", ""),
            ),
            (
                thirty.clone(),
                thirty
                    .replace("line 8\n", "8\n")
                    .replace("line 15\n", "15\n"),
            ),
            (
                thirty.clone(),
                thirty
                    .replace("line 8\n", "8\n")
                    .replace("line 14\n", "14\n"),
            ),
            ("a\r\nb\r\nc\r\n".into(), "a\r\nB\r\nc\r\n".into()),
            ("a\nb\nc\na\nb\nb\na\n".into(), "c\nb\na\nb\na\nc\n".into()),
            ("}\n}\n}\n".into(), "}\n}\nx\n}\n}\n".into()),
        ];
        for (a, b) in &cases {
            for context in [0, 1, 3] {
                assert_eq!(
                    unified(a.as_bytes(), b.as_bytes(), context),
                    gnu(a.as_bytes(), b.as_bytes(), context),
                    "{a:?} -> {b:?} with -U{context}"
                );
            }
        }
    }

    /// Where several shortest scripts exist, GNU diff's choice is its own (its divide and
    /// conquer breaks ties differently; about one small random pair in ten differs). Then
    /// the hunks must still be as short as GNU's and `patch` must turn `a` into `b`.
    #[test]
    fn ambiguous_scripts_apply_and_are_as_short() {
        let changed = |d: &str| -> (usize, usize) {
            let hunk_lines = || d.lines().filter(|l| !l.starts_with("@@"));
            (
                hunk_lines().filter(|l| l.starts_with('+')).count(),
                hunk_lines().filter(|l| l.starts_with('-')).count(),
            )
        };
        let mut cases = vec![("a\n\n\nb\n".to_string(), "a\n\nb\n\n\nc\n".to_string())];
        let words = ["a", "b", "}", "", "fi"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % 1000).unwrap() % m
        };
        for _ in 0..150 {
            let a: Vec<&str> = (0..rnd(12)).map(|_| words[rnd(words.len())]).collect();
            let mut b = a.clone();
            for _ in 0..=rnd(3) {
                let at = rnd(b.len() + 1);
                if rnd(2) == 0 && at < b.len() {
                    b.remove(at);
                } else {
                    b.insert(at, words[rnd(words.len())]);
                }
            }
            let join = |v: &[&str]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
            cases.push((join(&a), join(&b)));
        }
        let mut differ = 0;
        for (a, b) in &cases {
            let ours = unified(a.as_bytes(), b.as_bytes(), 3);
            let theirs = gnu(a.as_bytes(), b.as_bytes(), 3);
            if ours == theirs {
                continue;
            }
            differ += 1;
            assert_eq!(changed(&ours), changed(&theirs), "{a:?} -> {b:?}");
            assert_eq!(
                changed(&ours),
                count(a.as_bytes(), b.as_bytes()),
                "{a:?} -> {b:?}"
            );
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("f");
            std::fs::write(&f, a).unwrap();
            let mut p = Command::new("patch")
                .arg("-s")
                .arg(&f)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("patch runs");
            let mut stdin = p.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, format!("--- f\n+++ f\n{ours}").as_bytes())
                .unwrap();
            drop(stdin);
            assert!(p.wait().unwrap().success(), "{a:?} -> {b:?}: {ours}");
            assert_eq!(std::fs::read_to_string(&f).unwrap(), *b, "{ours}");
        }
        assert!(differ > 0, "no ambiguous case left to check");
    }
}
