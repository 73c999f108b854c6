//! The SyncSource's view of a sparse read (`PeerDiskOp::ReadSparse`): the driver reports which
//! blocks read as zeroes, and those travel as `RsZero` ranges instead of data. With csums-alg
//! the whole block is hashed (the target's digests cover every byte), so the read is
//! flattened first and the zero runs are kept beside it.

use crate::core::contract::io::Extent;

/// The bytes of a sparse read at `offset`, zeroes filled in, and its zero runs as absolute
/// `[start, end)` ranges in order.
pub(crate) fn flatten(offset: u64, extents: &[Extent]) -> (Vec<u8>, Vec<(u64, u64)>) {
    let total: u64 = extents.iter().map(Extent::len).sum();
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    for x in extents {
        let at = offset + data.len() as u64;
        match x {
            Extent::Data(d) => data.extend_from_slice(d),
            Extent::Zero(n) => {
                let end = at + u64::from(*n);
                match zeros.last_mut() {
                    Some(last) if last.1 == at => last.1 = end,
                    _ => zeros.push((at, end)),
                }
                data.resize(data.len() + *n as usize, 0);
            }
        }
    }
    zeros.retain(|(a, b)| a < b);
    (data, zeros)
}

/// `[start, end)` cut at the edges of `zeros` (sorted, disjoint): `(from, to, is_zero)` pieces
/// in order, covering the range exactly.
pub(crate) fn pieces(start: u64, end: u64, zeros: &[(u64, u64)]) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(z0, z1) in zeros {
        if z1 <= at {
            continue;
        }
        if z0 >= end {
            break;
        }
        if z0 > at {
            out.push((at, z0, false));
        }
        let to = z1.min(end);
        out.push((at.max(z0), to, true));
        at = to;
    }
    if at < end {
        out.push((at, end, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::contract::io::split_zero_blocks;

    #[test]
    fn zero_blocks_split_at_device_aligned_4k_boundaries_and_merge() {
        // Starts 512 bytes before a 4 KiB boundary: that partial block is a block of its own.
        let mut data = vec![0u8; 512 + 3 * 4096];
        data[512 + 4096 + 7] = 1;
        let mut out = Vec::new();
        split_zero_blocks(4096 - 512, data.clone(), &mut out);
        assert_eq!(
            out,
            vec![
                Extent::Zero(512 + 4096),
                Extent::Data(data[512 + 4096..512 + 8192].to_vec()),
                Extent::Zero(4096),
            ]
        );
        let (flat, zeros) = flatten(4096 - 512, &out);
        assert_eq!(flat, data);
        assert_eq!(zeros, vec![(3584, 8192), (12288, 16384)]);
        let mut all_data = Vec::new();
        split_zero_blocks(0, vec![7; 8192], &mut all_data);
        assert_eq!(all_data, vec![Extent::Data(vec![7; 8192])]);
        let mut none = Vec::new();
        split_zero_blocks(0, Vec::new(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn pieces_cover_the_range_and_follow_the_zero_runs() {
        let zeros = [(4096, 8192), (12288, 20480)];
        assert_eq!(
            pieces(0, 16384, &zeros),
            vec![
                (0, 4096, false),
                (4096, 8192, true),
                (8192, 12288, false),
                (12288, 16384, true)
            ]
        );
        assert_eq!(pieces(5000, 6000, &zeros), vec![(5000, 6000, true)]);
        assert_eq!(pieces(0, 4096, &[]), vec![(0, 4096, false)]);
    }
}
