//! Line diffs for `--dry-run` and for the lines-changed counts of the report: Myers' O(ND)
//! algorithm ("An O(ND) Difference Algorithm and Its Variations", 1986) on the lines left
//! after the common prefix and suffix, printed as `diff -u` prints them.

use super::text::lines;

/// Above this many differing lines the middle is shown as one replacement: the trace of
/// the search needs O(D²) memory.
const MAX_D: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal(usize, usize),
    Delete(usize),
    Insert(usize),
}

/// The edit script turning `a` into `b`.
fn script<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Op> {
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut ops: Vec<Op> = (0..pre).map(|i| Op::Equal(i, i)).collect();
    match myers(am, bm) {
        Some(mid) => ops.extend(mid.into_iter().map(|o| match o {
            Op::Equal(i, j) => Op::Equal(i + pre, j + pre),
            Op::Delete(i) => Op::Delete(i + pre),
            Op::Insert(j) => Op::Insert(j + pre),
        })),
        None => {
            ops.extend((0..am.len()).map(|i| Op::Delete(i + pre)));
            ops.extend((0..bm.len()).map(|j| Op::Insert(j + pre)));
        }
    }
    let (ae, be) = (a.len() - suf, b.len() - suf);
    ops.extend((0..suf).map(|i| Op::Equal(ae + i, be + i)));
    ops
}

/// Myers' greedy forward search with the trace kept for backtracking; `None` past [`MAX_D`].
fn myers<T: PartialEq>(a: &[T], b: &[T]) -> Option<Vec<Op>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (a.len() + b.len()).min(MAX_D) as isize;
    let off = max + 1;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = None;
    for d in 0..=max {
        let mut k = -d;
        while k <= d {
            let mut x =
                if k == -d || (k != d && v[(off + k - 1) as usize] < v[(off + k + 1) as usize]) {
                    v[(off + k + 1) as usize]
                } else {
                    v[(off + k - 1) as usize] + 1
                };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[(off + k) as usize] = x;
            if x >= n && y >= m {
                found = Some(d);
                break;
            }
            k += 2;
        }
        trace.push(v[(off - d) as usize..=(off + d) as usize].to_vec());
        if found.is_some() {
            break;
        }
    }
    let dmax = found?;
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=dmax).rev() {
        let prev = &trace[(d - 1) as usize];
        let at = |k: isize| prev[(k + d - 1) as usize];
        let k = x - y;
        let pk = if k == -d || (k != d && at(k - 1) < at(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let px = at(pk);
        let py = px - pk;
        while x > px && y > py {
            x -= 1;
            y -= 1;
            ops.push(Op::Equal(x as usize, y as usize));
        }
        if x == px {
            y -= 1;
            ops.push(Op::Insert(y as usize));
        } else {
            x -= 1;
            ops.push(Op::Delete(x as usize));
        }
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        ops.push(Op::Equal(x as usize, y as usize));
    }
    ops.reverse();
    Some(ops)
}

/// Lines added and removed between two texts.
pub fn count(a: &[u8], b: &[u8]) -> (usize, usize) {
    let (la, lb) = (lines(a), lines(b));
    let mut added = 0;
    let mut removed = 0;
    for o in script(&la, &lb) {
        match o {
            Op::Insert(_) => added += 1,
            Op::Delete(_) => removed += 1,
            Op::Equal(..) => {}
        }
    }
    (added, removed)
}

/// `start,len` of a hunk side as diff -u writes it (`len` omitted when 1; an empty side
/// names the line before it).
fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// The hunks of a unified diff (`@@` lines onwards) with `context` lines around changes.
pub fn unified(a: &[u8], b: &[u8], context: usize) -> String {
    let (la, lb) = (lines(a), lines(b));
    let ops = script(&la, &lb);
    let mut out = String::new();
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Equal(..)))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        // Extend the hunk while the next change is within 2*context equal lines.
        let first = changed[i];
        let mut last = first;
        while i + 1 < changed.len() && changed[i + 1] - last <= 2 * context + 1 {
            i += 1;
            last = changed[i];
        }
        i += 1;
        let lo = first.saturating_sub(context);
        let hi = (last + context + 1).min(ops.len());
        let hunk = &ops[lo..hi];
        // Where each side starts: the first op's position on that side.
        let (mut a0, mut b0) = (None, None);
        let (mut na, mut nb) = (0, 0);
        for o in hunk {
            match *o {
                Op::Equal(x, y) => {
                    a0.get_or_insert(x);
                    b0.get_or_insert(y);
                    na += 1;
                    nb += 1;
                }
                Op::Delete(x) => {
                    a0.get_or_insert(x);
                    na += 1;
                }
                Op::Insert(y) => {
                    b0.get_or_insert(y);
                    nb += 1;
                }
            }
        }
        // An empty side starts after the lines before the hunk on that side.
        let before = |side_a: bool| -> usize {
            ops[..lo]
                .iter()
                .filter(|o| match o {
                    Op::Equal(..) => true,
                    Op::Delete(_) => side_a,
                    Op::Insert(_) => !side_a,
                })
                .count()
        };
        let a_start = a0.unwrap_or_else(|| before(true));
        let b_start = b0.unwrap_or_else(|| before(false));
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a_start, na),
            range(b_start, nb)
        ));
        for o in hunk {
            let (mark, (content, eol)) = match *o {
                Op::Equal(x, _) => (' ', la[x]),
                Op::Delete(x) => ('-', la[x]),
                Op::Insert(y) => ('+', lb[y]),
            };
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(a: &[&str], b: &[&str]) {
        let ops = script(a, b);
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        for o in ops {
            match o {
                Op::Equal(x, y) => {
                    assert_eq!(a[x], b[y]);
                    got_a.push(x);
                    got_b.push(y);
                }
                Op::Delete(x) => got_a.push(x),
                Op::Insert(y) => got_b.push(y),
            }
        }
        assert_eq!(got_a, (0..a.len()).collect::<Vec<_>>());
        assert_eq!(got_b, (0..b.len()).collect::<Vec<_>>());
    }

    #[test]
    fn scripts_cover_both_sides() {
        apply(&["a", "b", "c"], &["a", "x", "c"]);
        apply(&[], &["a"]);
        apply(&["a"], &[]);
        apply(
            &["a", "b", "c", "a", "b", "b", "a"],
            &["c", "b", "a", "b", "a", "c"],
        );
        let a: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        let b: Vec<String> = (0..3000).map(|i| (i * 7).to_string()).collect();
        let ar: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let br: Vec<&str> = b.iter().map(|s| s.as_str()).collect();
        apply(&ar, &br);
    }

    #[test]
    fn minimal_counts() {
        assert_eq!(count(b"a\nb\nc\n", b"a\nB\nc\n"), (1, 1));
        assert_eq!(count(b"", b"x\n"), (1, 0));
        assert_eq!(count(b"a\nb\n", b"a\nb\n"), (0, 0));
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
    }
}
