//! Sorted lists of byte (or block) ranges: what `Filesystem::touched` and `guest::changed`
//! combine (a set of changed ranges less what is accounted for, intersected with what each
//! side of a comparison could not account for).

use std::ops::Range;

/// The bytes `r` covers, counted as given (overlaps twice; normalize first).
pub fn total(r: &[Range<u64>]) -> u64 {
    r.iter()
        .map(|r| r.end.saturating_sub(r.start))
        .fold(0, u64::saturating_add)
}

/// `r` sorted, empty ranges dropped, overlapping and adjacent ones merged.
pub fn normalize(r: Vec<Range<u64>>) -> Vec<Range<u64>> {
    merge_within(r, 0)
}

/// `r` sorted, empty ranges dropped, and ranges merged where they overlap or lie at most
/// `gap` apart (the fewest ranges that cover them all, gaps of up to `gap` included).
pub fn merge_within(mut r: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    r.retain(|x| x.start < x.end);
    r.sort_by_key(|x| x.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(last) if x.start <= last.end.saturating_add(gap) => last.end = last.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
}

/// What of `a` lies in no range of `b` (both normalized); normalized.
pub fn subtract(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        let mut start = x.start;
        // j and k index `b`: they stop at its length.
        while b.get(j).is_some_and(|y| y.end <= start) {
            j = j.saturating_add(1);
        }
        let mut k = j;
        while start < x.end {
            match b.get(k) {
                Some(y) if y.start < x.end => {
                    if y.start > start {
                        out.push(start..y.start);
                    }
                    start = start.max(y.end);
                    k = k.saturating_add(1);
                }
                _ => {
                    out.push(start..x.end);
                    break;
                }
            }
        }
    }
    out
}

/// What lies in both `a` and `b` (both normalized); normalized.
pub fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    let mut out = Vec::new();
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        let s = x.start.max(y.start);
        let e = x.end.min(y.end);
        if s < e {
            out.push(s..e);
        }
        if x.end < y.end {
            a.next();
        } else {
            b.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = normalize(vec![10..20, 0..5, 4..8, 30..30, 20..25]);
        assert_eq!(a, vec![0..8, 10..25]);
        let b = normalize(vec![2..3, 6..12, 24..40]);
        assert_eq!(subtract(&a, &b), vec![0..2, 3..6, 12..24]);
        assert_eq!(intersect(&a, &b), vec![2..3, 6..8, 10..12, 24..25]);
        assert_eq!(subtract(&a, &[]), a);
        assert!(intersect(&a, &[]).is_empty());
        let whole = std::slice::from_ref(&(0..100));
        assert_eq!(subtract(whole, &[0..10, 90..100]), vec![10..90]);
    }
}
