// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).
use rep_replicator::meta::{al::AlTransaction, bitmap::Bitmap, superblock::Superblock};

pub fn check(data: &[u8]) {
    let _ = Superblock::decode(data, 0);
    let _ = AlTransaction::decode(data, 0);
    let bits = u64::from(data.first().copied().unwrap_or(0)) * 977;
    let _ = Bitmap::decode_rle(data, bits);
}
