//! Refcount blocks (qcow2.txt, "Host cluster management"): a cluster of big-endian entries of
//! `refcount_bits` = 1 << refcount_order bits each; sub-byte widths are packed from the least
//! significant bit of each byte, as qemu packs them.

/// Entries in one refcount block of `cluster_size` bytes.
pub(crate) fn entries_per_block(cluster_size: u64, order: u32) -> u64 {
    (cluster_size * 8) >> order
}

/// The largest refcount an entry of this width holds.
pub(crate) fn max_value(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// The byte range of `block` that holds entry `idx` (what must be rewritten after a change).
pub(crate) fn byte_span(idx: u64, order: u32) -> (usize, usize) {
    let bits = 1u64 << order;
    if bits < 8 {
        let at = (idx * bits / 8) as usize;
        (at, at + 1)
    } else {
        let at = (idx * bits / 8) as usize;
        (at, at + (bits / 8) as usize)
    }
}

/// Reads entry `idx`; `idx` must be below `entries_per_block`.
pub(crate) fn get(block: &[u8], idx: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let byte = block[(idx * bits / 8) as usize];
        let shift = (idx * bits) % 8;
        u64::from(byte >> shift) & max_value(order)
    } else {
        let (a, b) = byte_span(idx, order);
        block[a..b]
            .iter()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    }
}

/// Writes entry `idx` (the value must fit: callers check against `max_value`).
pub(crate) fn set(block: &mut [u8], idx: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let at = (idx * bits / 8) as usize;
        let shift = (idx * bits) % 8;
        let mask = (max_value(order) as u8) << shift;
        block[at] = (block[at] & !mask) | (((value as u8) << shift) & mask);
    } else {
        let (a, b) = byte_span(idx, order);
        let bytes = value.to_be_bytes();
        block[a..b].copy_from_slice(&bytes[8 - (b - a)..]);
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
