//! Pure decision rules: generation UUID comparison, after-split-brain recovery, what a
//! fence-peer exit code means.

pub(crate) mod after_sb;
pub(crate) mod fence_result;
pub(crate) mod quorum;
pub mod uuid_compare;
