//! Runlists ("mapping pairs"): how a non-resident attribute's virtual clusters map to logical
//! clusters of the volume. Each pair is a header byte (low nibble: bytes of the run length,
//! high nibble: bytes of the signed LCN delta, 0 = a sparse run), the length, then the delta
//! from the previous run's LCN (Linux-NTFS documentation, "Data Runs").

/// Runs accepted in one attribute (all its extents together): a file fragmented into more
/// runs than this is taken as damage rather than allowed to grow memory without bound.
pub const MAX_RUNS: usize = 1 << 20;

/// `len` clusters from virtual cluster `vcn`, stored from logical cluster `lcn` (None: a
/// sparse run, which reads as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

impl Run {
    /// The VCN after the run (`decode` checked that it fits).
    pub fn end(&self) -> u64 {
        self.vcn.saturating_add(self.len)
    }
}

/// A little-endian integer of `n` <= 8 bytes, sign-extended when `signed`.
fn int(b: &[u8], signed: bool) -> i128 {
    let fill = if signed && b.last().is_some_and(|&x| x & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut v = [fill; 16];
    if let Some(low) = v.get_mut(..b.len()) {
        low.copy_from_slice(b);
    }
    i128::from_le_bytes(v)
}

/// Decodes the mapping pairs in `b` (from the attribute's mapping-pairs offset to its end),
/// starting at virtual cluster `lowest_vcn`, appending to `out`. Every run must lie inside
/// the volume's `clusters`.
pub fn decode(b: &[u8], lowest_vcn: u64, clusters: u64, out: &mut Vec<Run>) -> Result<(), String> {
    let mut rest = b;
    let mut vcn = lowest_vcn;
    // The previous run's LCN: in 0..clusters once set, so adding a delta of at most 8 bytes
    // cannot overflow an i128.
    let mut lcn: i128 = 0;
    while let Some((&h, tail)) = rest.split_first() {
        let pos = b.len().saturating_sub(rest.len());
        if h == 0 {
            return Ok(());
        }
        let lb = usize::from(h & 0x0f);
        let ob = usize::from(h >> 4);
        if lb == 0 || lb > 8 || ob > 8 {
            return Err(format!("mapping pair header {h:#04x} at byte {pos}"));
        }
        let (len_bytes, lcn_bytes, next) = tail
            .split_at_checked(lb)
            .and_then(|(l, t)| t.split_at_checked(ob).map(|(o, n)| (l, o, n)))
            .ok_or_else(|| format!("mapping pair at byte {pos} runs past the attribute"))?;
        let raw_len = int(len_bytes, true);
        let len = u64::try_from(raw_len)
            .ok()
            .filter(|&l| l > 0 && l <= clusters.max(1))
            .ok_or_else(|| format!("run length {raw_len} at byte {pos}"))?;
        let run_lcn = if ob == 0 {
            None
        } else {
            lcn = lcn.saturating_add(int(lcn_bytes, true));
            let inside = u64::try_from(lcn)
                .ok()
                .filter(|l| l.checked_add(len).is_some_and(|e| e <= clusters));
            if inside.is_none() {
                return Err(format!(
                    "run of {len} clusters at LCN {lcn} (byte {pos}) is outside the volume's \
                     {clusters} clusters"
                ));
            }
            inside
        };
        if out.len() >= MAX_RUNS {
            return Err(format!("more than {MAX_RUNS} runs"));
        }
        out.push(Run {
            vcn,
            len,
            lcn: run_lcn,
        });
        vcn = vcn
            .checked_add(len)
            .ok_or_else(|| format!("VCN overflows at byte {pos}"))?;
        rest = next;
    }
    Err("mapping pairs without a terminating zero".into())
}

/// The run of `runs` (sorted by VCN, contiguous) that holds `vcn`.
pub fn find(runs: &[Run], vcn: u64) -> Option<&Run> {
    let i = runs.partition_point(|r| r.end() <= vcn);
    runs.get(i).filter(|r| r.vcn <= vcn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sparse_and_negative_deltas() {
        // 0x30 clusters at 0x1000, 0x10 sparse, 8 at 0x1000 - 0x800.
        let b = [
            0x21, 0x30, 0x00, 0x10, 0x01, 0x10, 0x21, 0x08, 0x00, 0xf8, 0x00,
        ];
        let mut runs = Vec::new();
        decode(&b, 0, 1 << 20, &mut runs).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    len: 0x30,
                    lcn: Some(0x1000)
                },
                Run {
                    vcn: 0x30,
                    len: 0x10,
                    lcn: None
                },
                Run {
                    vcn: 0x40,
                    len: 8,
                    lcn: Some(0x800)
                },
            ]
        );
        assert_eq!(find(&runs, 0x41).map(|r| r.vcn), Some(0x40));
        assert!(find(&runs, 0x48).is_none());
        assert!(decode(&b, 0, 0x1000, &mut Vec::new()).is_err());
        assert!(decode(&b[..3], 0, 1 << 20, &mut Vec::new()).is_err());
    }
}
