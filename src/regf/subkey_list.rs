//! Subkey lists: lf and lh (offset + name hint/hash), li (offsets only) and ri (a list of
//! those lists, for keys with very many subkeys).

use super::{Error, Hive, Result, MAX_LIST_DEPTH};
use crate::bytes::{le32, try_le16};

/// The key cell offsets the list at `off` holds, ri lists flattened.
pub(crate) fn read(hive: &Hive, off: u32, depth: usize) -> Result<Vec<u32>> {
    let c = hive.cell(off, "subkey list")?;
    let at = Hive::record_offset(off);
    let err = |m: String| Error::new("subkey list", at, m);
    let sig = c.get(..2).ok_or_else(|| err("record too short".into()))?;
    let n = usize::from(try_le16(c, 2).ok_or_else(|| err("record too short".into()))?);
    let stride = match sig {
        b"lf" | b"lh" => 8,
        b"li" | b"ri" => 4,
        _ => {
            return Err(err(format!(
                "signature {sig:02x?}, expected lf, lh, li or ri"
            )))
        }
    };
    // n is a u16 and stride at most 8: the product cannot overflow.
    let Some(list) = n.checked_mul(stride).and_then(|l| c.get(4..)?.get(..l)) else {
        return Err(err(format!(
            "{n} entries do not fit a cell of {} bytes",
            c.len()
        )));
    };
    let entries = list.chunks_exact(stride).map(|e| le32(e, 0));
    if sig != b"ri" {
        return Ok(entries.collect());
    }
    if depth >= MAX_LIST_DEPTH {
        return Err(err(format!("ri lists nested deeper than {MAX_LIST_DEPTH}")));
    }
    let mut out = Vec::new();
    for e in entries {
        out.extend(read(hive, e, depth.saturating_add(1))?);
    }
    Ok(out)
}
