//! Hash-tree directories (Documentation/filesystems/ext4/directory.rst, "Hash Tree
//! Directories"). Block 0 of an indexed directory (EXT4_INDEX_FL) is a dx_root: "." and ".."
//! records, the ".." one spanning the block and hiding an 8-byte dx_root_info and an array of
//! (hash, block) dx_entries. With one or two more levels (three with largedir) the entries point
//! to dx_node blocks (one empty record spanning the block, then entries), and finally to leaf
//! blocks, ordinary directory blocks holding the names whose hash falls in their range.
//!
//! A lookup hashes the name, binary-searches each level and reads one leaf (more when a hash
//! range continues in the next leaf: collisions). Any damage to the index is reported as
//! `Probe::BadIndex` so that the caller falls back to the linear scan, which sees every name.

use super::inode::Inode;
use super::{csum, dir, Ext4};
use crate::bytes::{le16, le32};
use crate::fs::Result;
use std::sync::Arc;

pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
pub const LEGACY_UNSIGNED: u8 = 3;
pub const HALF_MD4_UNSIGNED: u8 = 4;
pub const TEA_UNSIGNED: u8 = 5;
/// Keyed hash of casefolded+encrypted directories: the hash is stored in each dirent.
pub const SIPHASH: u8 = 6;

/// Hash value that marks the end of a directory for 32-bit readdir cookies; a name hashing to
/// it is moved just below (ext4fs_dirhash).
const EOF_32BIT: u32 = 0x7fff_ffff;
/// The bytes of a dx_root before its entries, minus dx_root_info: "." (12) and ".." (12).
pub(crate) const ROOT_DOTS: usize = 24;
pub(crate) const ROOT_INFO_LEN: usize = 8;
/// Size of a dx_entry and of the dx_tail that metadata_csum adds after the entries.
pub(crate) const ENTRY_LEN: usize = 8;
pub(crate) const TAIL_LEN: usize = 8;
/// The fake record that opens a dx_node (inode 0, rec_len = block size, no name).
pub(crate) const NODE_HEADER: usize = 8;
/// Interior levels below the root without largedir (2 levels of index) and with it (3).
pub(crate) const MAX_LEVELS: u8 = 2;
pub(crate) const MAX_LEVELS_LARGEDIR: u8 = 3;
/// Logical block numbers in dx_entries use only the low 28 bits (dx_get_block).
pub(crate) const BLOCK_MASK: u32 = 0x0fff_ffff;

const TEA_DELTA: u32 = 0x9e37_79b9;

fn tea_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let [a, b, c, d, ..] = *input;
    for _ in 0..16 {
        sum = sum.wrapping_add(TEA_DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// The cut-down MD4 of the kernel's half_md4_transform: three rounds of eight steps.
fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    let step = |fun: &dyn Fn(u32, u32, u32) -> u32, a: &mut u32, b, c, d, x: u32, s| {
        *a = a.wrapping_add(fun(b, c, d)).wrapping_add(x).rotate_left(s);
    };
    let [x0, x1, x2, x3, x4, x5, x6, x7] = *x;
    for [p, q, r, t] in [[x0, x1, x2, x3], [x4, x5, x6, x7]] {
        step(&f, &mut a, b, c, d, p, 3);
        step(&f, &mut d, a, b, c, q, 7);
        step(&f, &mut c, d, a, b, r, 11);
        step(&f, &mut b, c, d, a, t, 19);
    }
    for [p, q, r, t] in [[x1, x3, x5, x7], [x0, x2, x4, x6]] {
        step(&g, &mut a, b, c, d, p.wrapping_add(K2), 3);
        step(&g, &mut d, a, b, c, q.wrapping_add(K2), 5);
        step(&g, &mut c, d, a, b, r.wrapping_add(K2), 9);
        step(&g, &mut b, c, d, a, t.wrapping_add(K2), 13);
    }
    for [p, q, r, t] in [[x3, x7, x2, x6], [x1, x5, x0, x4]] {
        step(&h, &mut a, b, c, d, p.wrapping_add(K3), 3);
        step(&h, &mut d, a, b, c, q.wrapping_add(K3), 9);
        step(&h, &mut c, d, a, b, r.wrapping_add(K3), 11);
        step(&h, &mut b, c, d, a, t.wrapping_add(K3), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// A name byte as the kernel's hashes take it: zero-extended, or (`signed`) as a signed char
/// sign-extended to 32 bits.
fn name_char(c: u8, signed: bool) -> u32 {
    if signed {
        u32::from_ne_bytes(i32::from(i8::from_ne_bytes([c])).to_ne_bytes())
    } else {
        u32::from(c)
    }
}

/// The original ext3 hash (dx_hack_hash); `signed` takes name bytes as signed chars.
fn legacy(name: &[u8], signed: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &c in name {
        let c = name_char(c, signed);
        let mut h = h1.wrapping_add(h0 ^ c.wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// Packs up to `4 * num` bytes of `msg` into `num` words, padded with the length
/// (str2hashbuf_signed/unsigned).
fn str2hashbuf(msg: &[u8], out: &mut [u32; 8], num: usize, signed: bool) {
    // The low 32 bits of the length, as the kernel's (__u32) cast keeps (names are at most
    // 255 bytes: the length fits a byte).
    let [l0, l1, l2, l3, ..] = crate::bytes::wide(msg.len()).to_le_bytes();
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let mut words = out.iter_mut().take(num);
    for (i, &c) in msg.iter().take(num.saturating_mul(4)).enumerate() {
        let c = name_char(c, signed);
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            if let Some(w) = words.next() {
                *w = val;
            }
            val = pad;
        }
    }
    if let Some(w) = words.next() {
        *w = val;
    }
    for w in words {
        *w = pad;
    }
}

/// The (major, minor) hash of `name` with hash `version` and `seed` (s_hash_seed), as
/// ext4fs_dirhash computes it; None for an unknown version or SipHash (which needs the key).
pub fn hash(version: u8, name: &[u8], seed: &[u32; 4]) -> Option<(u32, u32)> {
    let mut buf = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&s| s != 0) {
        buf = *seed;
    }
    let mut input = [0u32; 8];
    let (major, minor) = match version {
        LEGACY | LEGACY_UNSIGNED => (legacy(name, version == LEGACY), 0),
        // Each step packs the rest of the name: the padding is its length, not the step's.
        HALF_MD4 | HALF_MD4_UNSIGNED => {
            for p in (0..name.len()).step_by(32) {
                str2hashbuf(&name[p..], &mut input, 8, version == HALF_MD4);
                half_md4_transform(&mut buf, &input);
            }
            (buf[1], buf[2])
        }
        TEA | TEA_UNSIGNED => {
            for p in (0..name.len()).step_by(16) {
                str2hashbuf(&name[p..], &mut input, 4, version == TEA);
                tea_transform(&mut buf, &input);
            }
            (buf[0], buf[1])
        }
        _ => return None,
    };
    let mut major = major & !1;
    if major == EOF_32BIT << 1 {
        major = (EOF_32BIT - 1) << 1;
    }
    Some((major, minor))
}

/// Where the (limit, count) pair of an interior block sits (get_dx_countlimit): after the
/// dx_root_info of a root (".", then ".." spanning the rest, then an 8-byte info with
/// reserved_zero 0), or after the empty record opening a dx_node. None: not an index block.
pub fn count_offset(block: &[u8]) -> Option<usize> {
    let bs = block.len();
    let rec0 = dir::rec_len_from_disk(le16(block, 4), bs);
    if rec0 == bs {
        return Some(NODE_HEADER);
    }
    if rec0 == 12
        && dir::rec_len_from_disk(le16(block, 16), bs) == bs.checked_sub(12)?
        && le32(block, ROOT_DOTS) == 0
        && usize::from(*block.get(ROOT_DOTS + 5)?) == ROOT_INFO_LEN
    {
        return Some(ROOT_DOTS + ROOT_INFO_LEN);
    }
    None
}

/// Whether logical block `lblk` of an indexed directory is an interior index block rather
/// than a leaf of names (is_dx_internal_node): block 0, or a block opening with an empty
/// record that spans it.
pub fn is_interior(block: &[u8], lblk: u64) -> bool {
    lblk == 0
        || (le32(block, 0) == 0
            && dir::rec_len_from_disk(le16(block, 4), block.len()) == block.len())
}

/// Checks the dx_tail checksum of an interior block.
pub fn check_interior(seed: u32, block: &[u8]) -> std::result::Result<(), String> {
    let off = count_offset(block).ok_or("not a dx_root or dx_node block")?;
    csum::dx_node(seed, block, off)
}

/// One level of the index on the way down: its block, where its entries start, how many are
/// used, and which one the search took.
struct Frame {
    block: Arc<[u8]>,
    off: usize,
    count: usize,
    at: usize,
}

impl Frame {
    /// The lower hash bound of entry `i` (entry 0 holds limit/count instead: bound 0).
    fn hash(&self, i: usize) -> u32 {
        if i == 0 {
            0
        } else {
            le32(&self.block, self.entry(i))
        }
    }

    fn child(&self, i: usize) -> u64 {
        u64::from(le32(&self.block, self.entry(i).saturating_add(4)) & BLOCK_MASK)
    }

    /// Where entry `i` starts. i < count <= limit, and the limit's entries fit the block (checked
    /// against the block size by `new`), so the saturating steps never saturate; a field past
    /// the block would read as 0.
    fn entry(&self, i: usize) -> usize {
        self.off.saturating_add(i.saturating_mul(ENTRY_LEN))
    }

    /// Validates the count/limit pair against the expected `limit` and picks the last entry
    /// whose bound is at or below `h` (dx_probe's binary search).
    fn new(
        block: Arc<[u8]>,
        off: usize,
        limit: usize,
        h: u32,
    ) -> std::result::Result<Self, String> {
        let got_limit = usize::from(le16(&block, off));
        let count = usize::from(le16(&block, off.saturating_add(2)));
        if got_limit != limit {
            return Err(format!("limit {got_limit}, expected {limit}"));
        }
        if count == 0 || count > limit {
            return Err(format!("count {count} (limit {limit})"));
        }
        let mut f = Frame {
            block,
            off,
            count,
            at: 0,
        };
        // 1 <= lo <= mid < hi <= count throughout: the steps below never saturate.
        let (mut lo, mut hi) = (1usize, count);
        while lo < hi {
            let mid = lo.midpoint(hi);
            if f.hash(mid) > h {
                hi = mid;
            } else {
                lo = mid.saturating_add(1);
            }
        }
        f.at = lo.saturating_sub(1);
        Ok(f)
    }
}

/// What a hashed lookup found.
pub enum Probe {
    Found(u32),
    NotFound,
    /// The index cannot be used (damaged, or a hash ferry cannot compute); says why.
    BadIndex(String),
}

/// Where the hash a lookup follows comes from.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// Hash these bytes (the name, its casefolded form, or an encrypted name's ciphertext).
    Name(&'a [u8]),
    /// A major hash known already (from a no-key name that abbreviates its ciphertext).
    Hash(u32),
}

/// Looks up a name through the index of `dir`, following the hash of `key`; `matches` decides
/// whether a record's name is the one sought. Damage to interior blocks is `BadIndex`; a
/// damaged leaf is an error (the linear scan would read the same leaf).
pub fn lookup(
    fs: &Ext4,
    dir: &Inode,
    key: Key<'_>,
    matches: &dyn Fn(&[u8]) -> bool,
) -> Result<Probe> {
    let bs = fs.block_size_usize();
    let nblocks = dir.size.div_ceil(u64::from(fs.block_size()));
    let csum = fs.superblock().metadata_csum;
    let tail = if csum { TAIL_LEN } else { 0 };
    let bad = |d: String| Ok(Probe::BadIndex(d));
    let interior = |lblk: u64| -> std::result::Result<Arc<[u8]>, String> {
        if lblk >= nblocks {
            return Err(format!(
                "index points to block {lblk}, past the directory's end"
            ));
        }
        fs.dir_index_block(dir, lblk).map_err(|e| e.to_string())
    };
    let root = match interior(0) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    if count_offset(&root) != Some(ROOT_DOTS + ROOT_INFO_LEN) {
        return bad("block 0 is not a dx_root".into());
    }
    let version = root[ROOT_DOTS + 4];
    let levels = root[ROOT_DOTS + 6];
    let flags = root[ROOT_DOTS + 7];
    let sb = fs.superblock();
    let max_levels = if sb.has_incompat(super::superblock::Incompat::LARGEDIR) {
        MAX_LEVELS_LARGEDIR
    } else {
        MAX_LEVELS
    };
    if flags & 1 != 0 {
        return bad(format!("unimplemented hash flags {flags:#x}"));
    }
    if levels >= max_levels {
        return bad(format!(
            "{} index levels (at most {max_levels})",
            levels.saturating_add(1)
        ));
    }
    let version = match version {
        LEGACY | HALF_MD4 | TEA if sb.flags & super::superblock::FLAGS_UNSIGNED_HASH != 0 => {
            // The unsigned variants are 3 higher.
            version.saturating_add(3)
        }
        LEGACY | HALF_MD4 | TEA => version,
        v => {
            return bad(format!(
                "hash version {v} (ferry computes legacy, half_md4, tea)"
            ))
        }
    };
    let h = match key {
        Key::Name(name) => match hash(version, name, &sb.hash_seed) {
            Some((h, _)) => h,
            None => return bad(format!("hash version {version}")),
        },
        Key::Hash(h) => h & !1,
    };
    // Block sizes are at least 1024 bytes (the superblock's check): no saturation.
    let root_limit = bs
        .saturating_sub(ROOT_DOTS + ROOT_INFO_LEN)
        .saturating_sub(tail)
        / ENTRY_LEN;
    let node_limit = bs.saturating_sub(NODE_HEADER).saturating_sub(tail) / ENTRY_LEN;
    let mut frames = Vec::with_capacity(usize::from(levels).saturating_add(1));
    match Frame::new(root, ROOT_DOTS + ROOT_INFO_LEN, root_limit, h) {
        Ok(f) => frames.push(f),
        Err(e) => return bad(format!("dx_root: {e}")),
    }
    let descend = |frames: &mut Vec<Frame>, from: usize| -> std::result::Result<(), String> {
        for level in from..usize::from(levels) {
            let parent = &frames[level];
            let child = parent.child(parent.at);
            let b = interior(child)?;
            if count_offset(&b) != Some(NODE_HEADER) || le32(&b, 0) != 0 {
                return Err(format!("block {child} is not a dx_node"));
            }
            let f = Frame::new(b, NODE_HEADER, node_limit, h)
                .map_err(|e| format!("dx_node {child}: {e}"))?;
            frames.truncate(level.saturating_add(1));
            frames.push(f);
        }
        Ok(())
    };
    if let Err(e) = descend(&mut frames, 0) {
        return bad(e);
    }
    loop {
        let last = frames.last().expect("the root frame is always there"); // OK: never empty
        let leaf = last.child(last.at);
        if leaf >= nblocks {
            return bad(format!("leaf block {leaf} past the directory's end"));
        }
        if let Some(ino) = fs.search_dir_block(dir, leaf, matches)? {
            return Ok(Probe::Found(ino));
        }
        // ext4_htree_next_block: the name may continue in the next leaf only if that leaf's
        // range starts at the same hash with the collision bit set.
        // frames is never empty, and each frame's `at` is below its count (at most 510).
        let mut level = frames.len().saturating_sub(1);
        loop {
            frames[level].at = frames[level].at.saturating_add(1);
            if frames[level].at < frames[level].count {
                break;
            }
            let Some(up) = level.checked_sub(1) else {
                return Ok(Probe::NotFound);
            };
            level = up;
        }
        if frames[level].hash(frames[level].at) & !1 != h {
            return Ok(Probe::NotFound);
        }
        // Below the level that advanced, start again at the first entry of the new child.
        if let Err(e) = descend(&mut frames, level) {
            return bad(e);
        }
        for f in frames.iter_mut().skip(level.saturating_add(1)) {
            f.at = 0;
        }
    }
}
