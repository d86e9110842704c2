//! Encrypted directories and symlinks (fscrypt, Documentation/filesystems/fscrypt.rst) seen
//! without the key, as the kernel shows them then: file contents are refused (ENOKEY), names
//! are "no-key names" (fs/crypto/fname.c): base64url without padding of the directory hash
//! (two little-endian u32, or zeros where the filesystem gives none), then the ciphertext name,
//! abbreviated past 149 bytes to those 149 bytes and the SHA-256 of the rest. A lookup by a
//! no-key name decodes it and compares ciphertexts.

use sha2::{Digest, Sha256};

/// Ciphertext bytes a no-key name carries in full (FSCRYPT_FNAME_UNDIGESTED_SIZE).
const UNDIGESTED: usize = 149;
/// Bytes before the ciphertext: two dirhash words.
const HASH_LEN: usize = 8;
/// A no-key name of an abbreviated ciphertext, decoded (FSCRYPT_NOKEY_NAME_MAX).
const NOKEY_MAX: usize = HASH_LEN + UNDIGESTED + 32;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len().div_ceil(3).saturating_mul(4));
    for chunk in src.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // One character per 6 bits, as many as cover the chunk's bytes.
        for shift in [18u32, 12, 6, 0].iter().take(chunk.len().saturating_add(1)) {
            out.push(ALPHABET[usize::try_from((n >> shift) & 63).unwrap_or(0)]);
        }
    }
    out
}

/// Decodes unpadded base64url; None for a character outside the alphabet or a dangling one.
fn unbase64url(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len().saturating_mul(3) / 4);
    // acc holds the `bits` (< 8 between characters) not yet output.
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in src {
        let v = u32::try_from(ALPHABET.iter().position(|&a| a == c)?).ok()?;
        acc = (acc << 6) | v;
        bits = bits.saturating_add(6);
        if bits >= 8 {
            bits = bits.saturating_sub(8);
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
            acc &= !(u32::MAX << bits);
        }
    }
    // Leftover bits must be zero padding of the last character.
    (bits < 6 && acc == 0).then_some(out)
}

/// The no-key name of ciphertext `name` with directory hash (`hash`, `minor`).
pub fn nokey_name(name: &[u8], hash: u32, minor: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(NOKEY_MAX);
    raw.extend_from_slice(&hash.to_le_bytes());
    raw.extend_from_slice(&minor.to_le_bytes());
    if name.len() <= UNDIGESTED {
        raw.extend_from_slice(name);
    } else {
        raw.extend_from_slice(&name[..UNDIGESTED]);
        raw.extend_from_slice(&Sha256::digest(&name[UNDIGESTED..]));
    }
    base64url(&raw)
}

/// A decoded no-key name, to match against the ciphertext names of a directory.
pub struct NoKey {
    hash: u32,
    minor: u32,
    /// The ciphertext, or its first 149 bytes when `digest` is set.
    bytes: Vec<u8>,
    digest: Option<[u8; 32]>,
}

impl NoKey {
    /// Decodes a name given to lookup; None if it cannot be a no-key name (the kernel then
    /// answers ENOENT).
    pub fn parse(name: &[u8]) -> Option<Self> {
        let raw = unbase64url(name)?;
        if raw.len() <= HASH_LEN || raw.len() > NOKEY_MAX {
            return None;
        }
        let word = |at: usize| crate::bytes::le32(&raw, at);
        let (hash, minor) = (word(0), word(4));
        if raw.len() == NOKEY_MAX {
            let mut d = [0u8; 32];
            d.copy_from_slice(&raw[HASH_LEN + UNDIGESTED..]);
            return Some(NoKey {
                hash,
                minor,
                bytes: raw[HASH_LEN..HASH_LEN + UNDIGESTED].to_vec(),
                digest: Some(d),
            });
        }
        if raw.len() > HASH_LEN + UNDIGESTED {
            return None;
        }
        Some(NoKey {
            hash,
            minor,
            bytes: raw[HASH_LEN..].to_vec(),
            digest: None,
        })
    }

    /// The whole ciphertext, when the name was not abbreviated.
    pub fn ciphertext(&self) -> Option<&[u8]> {
        self.digest.is_none().then_some(&self.bytes[..])
    }

    /// The (major, minor) directory hash the name carries (zeros when readdir had none).
    pub fn dirhash(&self) -> (u32, u32) {
        (self.hash, self.minor)
    }

    /// Whether ciphertext name `disk` is the one this no-key name stands for.
    pub fn matches(&self, disk: &[u8]) -> bool {
        match &self.digest {
            None => disk == self.bytes,
            Some(d) => {
                disk.len() > UNDIGESTED
                    && disk[..UNDIGESTED] == self.bytes[..]
                    && Sha256::digest(&disk[UNDIGESTED..])[..] == d[..]
            }
        }
    }
}

/// The target readlink shows for an encrypted symlink without the key: the stored
/// `fscrypt_symlink_data` (le16 length, ciphertext) as a no-key name with zero hashes.
/// `stored` is the symlink's raw content (i_block or its first block).
pub fn symlink_target(stored: &[u8]) -> Result<Vec<u8>, String> {
    if stored.len() < 2 {
        return Err("encrypted symlink shorter than its length field".into());
    }
    let len = usize::from(u16::from_le_bytes([stored[0], stored[1]]));
    // stored.len() >= 2 (just checked).
    let room = stored.len().saturating_sub(2);
    if len == 0 || len > room {
        return Err(format!("encrypted symlink of {len} bytes in {room} stored"));
    }
    Ok(nokey_name(&stored[2..2 + len], 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trip() {
        // RFC 4648 test vectors, without padding.
        for (plain, enc) in [
            (&b""[..], &b""[..]),
            (b"f", b"Zg"),
            (b"fo", b"Zm8"),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg"),
            (b"fooba", b"Zm9vYmE"),
            (b"foobar", b"Zm9vYmFy"),
            (b"\xfb\xff", b"-_8"),
        ] {
            assert_eq!(base64url(plain), enc);
            assert_eq!(unbase64url(enc).unwrap(), plain);
        }
        assert!(unbase64url(b"Zg=").is_none());
        assert!(unbase64url(b"Zh").is_none(), "non-zero padding bits");
        assert!(unbase64url(b"Z").is_none());
    }

    #[test]
    fn nokey_names_match_their_ciphertext() {
        for len in [16usize, 32, 149, 150, 255] {
            let ct: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(7).wrapping_add(3).to_le_bytes()[0])
                .collect();
            let n = nokey_name(&ct, 0x1234, 0x5678);
            assert!(n.len() <= 255, "{len}: {} chars", n.len());
            let k = NoKey::parse(&n).unwrap();
            assert!(k.matches(&ct));
            let mut other = ct.clone();
            *other.last_mut().unwrap() ^= 1;
            assert!(!k.matches(&other));
        }
        assert!(NoKey::parse(b"hello.txt").is_none());
    }
}
