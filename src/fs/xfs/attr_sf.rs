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
    let b = &fork[..total];
    let mut p = 4;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if p + 3 > b.len() {
            return Err(format!("entry {i} at {p} past the end"));
        }
        let namelen = usize::from(b[p]);
        let valuelen = usize::from(b[p + 1]);
        let flags = b[p + 2];
        let name_at = p + 3;
        let end = name_at + namelen + valuelen;
        if namelen == 0 || end > b.len() {
            return Err(format!("entry {i} at {p} runs past the end"));
        }
        out.push(Entry {
            flags,
            name: &b[name_at..name_at + namelen],
            value: Value::Local(&b[name_at + namelen..end]),
        });
        p = end;
    }
    Ok(out)
}
