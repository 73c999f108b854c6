//! Per-block digests for `verify-alg` and `csums-alg`. Pure: used by the runtime's hashing
//! pool, the simulator and the fuzzer, so every one of them hashes the same way.

pub use rep_resources::DigestAlg;

/// Digest computation for the algorithms of [`DigestAlg`].
pub trait Digests {
    /// Digests of each 4 KiB block of `data`, concatenated.
    fn digest_blocks(self, data: &[u8]) -> Vec<u8>;
    /// Bytes of one block's digest.
    fn digest_len(self) -> usize;
}

impl Digests for DigestAlg {
    fn digest_blocks(self, data: &[u8]) -> Vec<u8> {
        use sha1::Digest;
        let mut out = Vec::with_capacity(data.len().div_ceil(4096) * self.digest_len());
        for block in data.chunks(4096) {
            match self {
                DigestAlg::Md5 => out.extend_from_slice(&md5::Md5::digest(block)),
                DigestAlg::Sha1 => out.extend_from_slice(&sha1::Sha1::digest(block)),
                DigestAlg::Sha256 => out.extend_from_slice(&sha2::Sha256::digest(block)),
                DigestAlg::Crc32c => out.extend_from_slice(&crc32c::crc32c(block).to_be_bytes()),
            }
        }
        out
    }

    fn digest_len(self) -> usize {
        match self {
            DigestAlg::Md5 => 16,
            DigestAlg::Sha1 => 20,
            DigestAlg::Sha256 => 32,
            DigestAlg::Crc32c => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_per_block_of_the_announced_length() {
        let data = vec![7u8; 4096 * 3 + 100];
        for alg in [
            DigestAlg::Md5,
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Crc32c,
        ] {
            let d = alg.digest_blocks(&data);
            assert_eq!(d.len(), 4 * alg.digest_len(), "{alg}");
            assert_eq!(
                d[..alg.digest_len()],
                d[alg.digest_len()..2 * alg.digest_len()]
            );
            assert_ne!(d[..alg.digest_len()], d[3 * alg.digest_len()..]);
        }
    }
}
