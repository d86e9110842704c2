//! The ext4 metadata parsers on arbitrary bytes, without a filesystem around them: xattr
//! entry tables (in-inode and block), ACL conversion, htree hashes and index blocks, checksum
//! tails, fscrypt no-key names and directory records. The first byte picks the parser.
#![no_main]

use ferry::fs::ext4::superblock::Superblock;
use ferry::fs::ext4::{acl, csum, dir, fscrypt, htree, xattr};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A valid superblock with ea_inode on, so that entries naming EA inodes are checked too.
fn sb() -> &'static Superblock {
    static SB: OnceLock<Superblock> = OnceLock::new();
    SB.get_or_init(|| {
        let mut b = vec![0u8; 1024];
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0x0, 1024);
        put(&mut b, 0x4, 8192);
        put(&mut b, 0x18, 2);
        put(&mut b, 0x20, 32768);
        put(&mut b, 0x28, 1024);
        put(&mut b, 0x4c, 1);
        put(&mut b, 0x54, 11);
        put(&mut b, 0x60, 0x2 | 0x400);
        b[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        b[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
        Superblock::parse(&b).expect("the fuzz target's superblock is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(entries) = xattr::parse_ibody(rest, sb(), 12) {
                for e in &entries {
                    let _ = e.full_name();
                }
            }
        }
        1 => {
            if let Ok(entries) = xattr::parse_block(rest, sb(), 12, 100) {
                for e in &entries {
                    if let Some(n) = e.full_name() {
                        if let Some((i, s)) = xattr::split_name(&n) {
                            let _ = xattr::find_sorted(&entries, i, s);
                            let _ = xattr::find_unsorted(&entries, i, s);
                        }
                    }
                }
            }
            let _ = csum::xattr_block_ok(1, 100, rest);
        }
        2 => {
            let _ = acl::to_xattr(rest);
        }
        3 => {
            let seed = [1, 2, 3, 4];
            for v in 0..8 {
                let _ = htree::hash(v, &rest[..rest.len().min(255)], &seed);
            }
        }
        4 => {
            let _ = htree::count_offset(rest);
            let _ = htree::is_interior(rest, 1);
            let _ = htree::check_interior(7, rest);
            let _ = csum::dir_leaf(7, rest);
        }
        5 => {
            if let Some(k) = fscrypt::NoKey::parse(rest) {
                let _ = k.matches(rest);
            }
            let _ = fscrypt::symlink_target(rest);
            let _ = fscrypt::nokey_name(&rest[..rest.len().min(255)], 1, 2);
        }
        6 => {
            let _ = csum::inode_ok(9, rest);
            let _ = csum::extent_block_ok(9, rest, usize::from(rest.first().copied().unwrap_or(0)));
            let _ = csum::group_desc_ok(rest, 3, Some(5), &[0; 16]);
            let _ = csum::group_desc_ok(rest, 3, None, &[0; 16]);
            let _ = csum::superblock_ok(rest);
        }
        _ => {
            let _ = dir::for_each_entry(rest, true, 2, 9, |_| Ok(true));
        }
    }
});
