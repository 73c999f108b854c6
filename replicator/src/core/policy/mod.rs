//! Pure decision rules: generation UUID comparison, after-split-brain recovery, what a
//! fence-peer exit code means and which exit code a peer's outdate answer is.

pub(crate) mod after_sb;
pub mod fence_code;
pub(crate) mod fence_result;
pub(crate) mod quorum;
pub mod uuid_compare;
