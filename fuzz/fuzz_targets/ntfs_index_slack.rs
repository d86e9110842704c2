//! The index-slack scan (`ferry timeline` on NTFS, fls's removed names from $I30 node
//! slack) on arbitrary bytes: the first eight bytes choose the used size, the directory's
//! record number and whether the directory is removed; the rest is taken once as an
//! $INDEX_ROOT value and once as an INDX record (fixups applied in place), then scanned. No
//! panic, no hang, no read outside the buffer, at most `MAX_SLACK_NAMES` names.
#![no_main]

use ferry::fs::ntfs::index_slack::{record_area, root_area, scan, Area, MAX_SLACK_NAMES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [u0, u1, d0, d1, flags, _, _, _, rest @ ..] = data else {
        return;
    };
    let used = usize::from(u16::from_le_bytes([*u0, *u1]));
    let dir = u64::from(u16::from_le_bytes([*d0, *d1]));
    let removed = flags & 1 != 0;
    let mut out = Vec::new();
    let whole = Area {
        start: 0,
        len: rest.len(),
        used: used.min(rest.len()),
    };
    scan(rest, whole, dir, u64::from(u32::MAX), removed, &mut out);
    if let Some(a) = root_area(rest) {
        scan(rest, a, dir, 1 << 20, removed, &mut out);
    }
    let mut rec = rest.to_vec();
    if let Some(a) = record_area(&mut rec) {
        scan(&rec, a, dir, 1 << 20, removed, &mut out);
    }
    assert!(out.len() <= MAX_SLACK_NAMES);
});
