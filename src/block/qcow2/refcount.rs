//! Refcount blocks (qcow2.txt, "Host cluster management"): a cluster of big-endian entries of
//! `refcount_bits` = 1 << refcount_order bits each; sub-byte widths are packed from the least
//! significant bit of each byte, as qemu packs them.

use super::table::low_bits;

/// Entries in one refcount block of `cluster_size` bytes (at most 2 MiB: no overflow).
pub(crate) fn entries_per_block(cluster_size: u64, order: u32) -> u64 {
    cluster_size.saturating_mul(8) >> order
}

/// The largest refcount an entry of this width holds.
pub(crate) fn max_value(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        low_bits(1u32 << order)
    }
}

/// The first bit of entry `idx` in its block (`idx` is below `entries_per_block`, so the
/// product is below the block's bit count).
fn first_bit(idx: u64, order: u32) -> u64 {
    idx.saturating_mul(1u64 << order)
}

/// The byte range of `block` that holds entry `idx` (what must be rewritten after a change).
pub(crate) fn byte_span(idx: u64, order: u32) -> (usize, usize) {
    let at = usize::try_from(first_bit(idx, order) / 8).unwrap_or(usize::MAX);
    // Entries narrower than a byte share one; wider ones take 1 << order / 8 bytes (at most 8).
    let width = if order < 3 {
        1
    } else {
        1usize << order.saturating_sub(3)
    };
    (at, at.saturating_add(width))
}

/// Reads entry `idx`; `idx` must be below `entries_per_block` (an entry past the block reads
/// as 0).
pub(crate) fn get(block: &[u8], idx: u64, order: u32) -> u64 {
    let (a, b) = byte_span(idx, order);
    if order < 3 {
        let byte = block.get(a).copied().unwrap_or(0);
        let shift = first_bit(idx, order) % 8;
        u64::from(byte >> shift) & max_value(order)
    } else {
        block.get(a..b).map_or(0, |bytes| {
            bytes.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        })
    }
}

/// Writes entry `idx` (the value must fit: callers check against `max_value`; an entry past
/// the block is not written).
pub(crate) fn set(block: &mut [u8], idx: u64, order: u32, value: u64) {
    let (a, b) = byte_span(idx, order);
    if order < 3 {
        let shift = first_bit(idx, order) % 8;
        let mask = u8::try_from(max_value(order)).unwrap_or(u8::MAX) << shift;
        let [low, ..] = value.to_le_bytes();
        if let Some(byte) = block.get_mut(a) {
            *byte = (*byte & !mask) | ((low << shift) & mask);
        }
    } else {
        let bytes = value.to_be_bytes();
        let tail = bytes.get(8usize.saturating_sub(b.saturating_sub(a))..);
        if let (Some(dst), Some(src)) = (block.get_mut(a..b), tail) {
            dst.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_without_touching_neighbours() {
        for order in 0..=6 {
            let n = entries_per_block(512, order);
            let mut blk = vec![0u8; 512];
            for i in 0..n {
                set(&mut blk, i, order, (i * 7 + 1) & max_value(order));
            }
            for i in 0..n {
                assert_eq!(
                    get(&blk, i, order),
                    (i * 7 + 1) & max_value(order),
                    "order {order} idx {i}"
                );
            }
        }
        // 16-bit entries are big-endian, as qemu writes them.
        let mut blk = vec![0u8; 8];
        set(&mut blk, 1, 4, 0x1234);
        assert_eq!(blk, [0, 0, 0x12, 0x34, 0, 0, 0, 0]);
        // 1-bit entries start at the least significant bit.
        let mut blk = vec![0u8; 1];
        set(&mut blk, 0, 0, 1);
        set(&mut blk, 3, 0, 1);
        assert_eq!(blk, [0b1001]);
    }
}
