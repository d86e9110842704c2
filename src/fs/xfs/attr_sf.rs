//! Short-form attribute forks (xfs_da_format.h `xfs_attr_sf_hdr`, `xfs_attr_sf_entry`), kept
//! in the inode: a header (total size, count), then entries of name length, value length,
//! namespace flags, the name and the value.

use super::attr::{Entry, Value};
use crate::bytes::be16;

pub fn parse(fork: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    if fork.len() < 4 {
        return Err(format!("fork of {} bytes", fork.len()));
    }
    let total = usize::from(be16(fork, 0));
    let count = usize::from(fork[2]);
    if total < 4 || total > fork.len() {
        return Err(format!("total size {total} in a fork of {}", fork.len()));
    }
    // 4 <= total <= fork length (checked above).
    let mut rest = fork.get(4..total).unwrap_or_default();
    let mut p = 4usize;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let Some((&[namelen, valuelen, flags], after)) = rest.split_first_chunk::<3>() else {
            return Err(format!("entry {i} at {p} past the end"));
        };
        let size = usize::from(namelen).saturating_add(usize::from(valuelen));
        let split = after
            .split_at_checked(size)
            .and_then(|(nv, next)| Some((nv.split_at_checked(usize::from(namelen))?, next)))
            .filter(|_| namelen != 0);
        let Some(((name, value), next)) = split else {
            return Err(format!("entry {i} at {p} runs past the end"));
        };
        out.push(Entry {
            flags,
            name,
            value: Value::Local(value),
        });
        // Inside the 64 KiB fork: no overflow.
        p = p.saturating_add(3).saturating_add(size);
        rest = next;
    }
    Ok(out)
}
