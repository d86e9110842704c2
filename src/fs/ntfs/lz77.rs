//! The match copy the three LZ77-family decompressors share (LZNT1, XPRESS, LZX).

/// Copies `len` bytes to `dst[at..]` from `dst[from..]`, `from < at`: one match of an LZ77
/// stream. A match longer than its distance overlaps what it writes, and then the `at - from`
/// bytes before `at` repeat (a run). Callers have checked `from < at` and
/// `at + len <= dst.len()`; a match outside that copies nothing.
pub(super) fn copy_match(dst: &mut [u8], from: usize, at: usize, len: usize) {
    let (done, todo) = dst.split_at_mut(at.min(dst.len()));
    let (Some(pattern), Some(todo)) = (done.get(from..), todo.get_mut(..len)) else {
        return;
    };
    match pattern.get(..len) {
        Some(p) => todo.copy_from_slice(p),
        None => {
            for (d, &s) in todo.iter_mut().zip(pattern.iter().cycle()) {
                *d = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_match;

    #[test]
    fn matches_copy_and_repeat() {
        let mut b = *b"abcd____";
        copy_match(&mut b, 0, 4, 4);
        assert_eq!(&b, b"abcdabcd");
        let mut b = *b"ab______";
        copy_match(&mut b, 1, 2, 6);
        assert_eq!(&b, b"abbbbbbb");
        let mut b = *b"abc_____";
        copy_match(&mut b, 0, 3, 5);
        assert_eq!(&b, b"abcabcab");
        // Out of bounds: nothing copied.
        let mut b = *b"abcd";
        copy_match(&mut b, 0, 2, 3);
        assert_eq!(&b, b"abcd");
    }
}
