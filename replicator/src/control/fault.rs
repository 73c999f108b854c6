//! `repadm fault`: the test-only fault hook's control messages (README "Testing notes").
//!
//! The request always exists in the control protocol, so `repadm` can send it to any `repd`;
//! only a `repd` built with the `fault-injection` feature acts on it (`runtime::fault`). One
//! built without it answers `not_built()`, which names the feature and the build command.

use serde::{Deserialize, Serialize};

use super::Response;

/// How to build a `repd` that honours `repadm fault`.
pub const FAULT_BUILD_COMMAND: &str =
    "cargo build --release --workspace --features rep-replicator/fault-injection";

/// Exit code of a refused fault request (drbdadm's "execution failed").
pub const FAULT_REFUSED_EXIT: i32 = 20;

/// Longest `meta-delay`: a slow metadata device, not a hung one.
pub const META_DELAY_MS_MAX: u64 = 10_000;

/// Longest `disk-delay`: a slow backing device, not a hung one.
pub const DISK_DELAY_MS_MAX: u64 = 10_000;

/// Which operations on the backing device a `disk-error` rule fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultOp {
    Read,
    Write,
    Flush,
    Any,
}

impl FaultOp {
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Flush => "flush",
            FaultOp::Any => "any",
        }
    }
}

/// One `repadm fault RES …` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultCmd {
    /// Fail the next matching operations on the backing device with EIO: `offset`/`length`
    /// (both or neither) restrict the rule to operations overlapping that byte range of the
    /// data area; `count` ends it after that many failures (none: until `clear`).
    DiskError {
        op: FaultOp,
        #[serde(default)]
        offset: Option<u64>,
        #[serde(default)]
        length: Option<u64>,
        #[serde(default)]
        count: Option<u64>,
    },
    /// Keep writes not yet covered by a completed flush in memory only (`on`); `off` writes
    /// them out first.
    VolatileCache { on: bool },
    /// Make every metadata write (superblock, activity log, bitmap) take `ms` longer: a slow
    /// metadata device. 0 = no delay.
    MetaDelay { ms: u64 },
    /// Make every data write (client, peer and resync writes, zeroing) on the backing device
    /// take `ms` longer: a slow data disk, behind which the peer's writes queue. 0 = no delay.
    DiskDelay { ms: u64 },
    /// Drop the volatile cache and end repd at once, as a power cut would.
    PowerLoss,
    /// No disk-error rules, no delays, volatile cache off (its contents written out).
    Clear,
}

/// A `disk-error` rule as validated: the byte range is `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskErrorRule {
    pub op: FaultOp,
    pub range: Option<(u64, u64)>,
    /// Failures left; `None` = until `clear`.
    pub remaining: Option<u64>,
}

/// Why a fault request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultRequestError {
    #[error("--offset and --length go together (give both or neither)")]
    HalfRange,
    #[error("--length must be at least 1 byte")]
    EmptyRange,
    #[error("--offset {offset} + --length {length} overflows")]
    RangeOverflow { offset: u64, length: u64 },
    #[error("--count must be at least 1 (leave it out to fail until `clear`)")]
    ZeroCount,
}

impl FaultCmd {
    /// The rule a `disk-error` request adds (None for the other kinds), or why it is invalid.
    pub fn disk_error_rule(&self) -> Result<Option<DiskErrorRule>, FaultRequestError> {
        let FaultCmd::DiskError {
            op,
            offset,
            length,
            count,
        } = *self
        else {
            return Ok(None);
        };
        let range = match (offset, length) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => return Err(FaultRequestError::HalfRange),
            (Some(_), Some(0)) => return Err(FaultRequestError::EmptyRange),
            (Some(offset), Some(length)) => Some((
                offset,
                offset
                    .checked_add(length)
                    .ok_or(FaultRequestError::RangeOverflow { offset, length })?,
            )),
        };
        if count == Some(0) {
            return Err(FaultRequestError::ZeroCount);
        }
        Ok(Some(DiskErrorRule {
            op,
            range,
            remaining: count,
        }))
    }
}

/// The message of a `repd` built without the feature.
pub fn not_built_message() -> String {
    format!(
        "this repd was built without the fault-injection feature; rebuild with `{FAULT_BUILD_COMMAND}`"
    )
}

/// The answer of a `repd` built without the feature to any fault request.
pub fn not_built() -> Response {
    Response::Error {
        message: not_built_message(),
        exit_code: FAULT_REFUSED_EXIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{encode_line, Query, Request};

    #[test]
    fn fault_requests_round_trip_through_json() {
        for (line, want) in [
            (
                r#"{"cmd":"fault","fault":{"kind":"disk-error","op":"write","count":1}}"#,
                FaultCmd::DiskError {
                    op: FaultOp::Write,
                    offset: None,
                    length: None,
                    count: Some(1),
                },
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"disk-error","op":"any","offset":4096,"length":512}}"#,
                FaultCmd::DiskError {
                    op: FaultOp::Any,
                    offset: Some(4096),
                    length: Some(512),
                    count: None,
                },
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"volatile-cache","on":true}}"#,
                FaultCmd::VolatileCache { on: true },
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"meta-delay","ms":250}}"#,
                FaultCmd::MetaDelay { ms: 250 },
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"disk-delay","ms":40}}"#,
                FaultCmd::DiskDelay { ms: 40 },
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"power-loss"}}"#,
                FaultCmd::PowerLoss,
            ),
            (
                r#"{"cmd":"fault","fault":{"kind":"clear"}}"#,
                FaultCmd::Clear,
            ),
        ] {
            let want = Request::Query(Query::Fault { fault: want });
            let got: Request = serde_json::from_str(line).expect("valid fault line");
            assert_eq!(got, want, "{line}");
            let again: Request =
                serde_json::from_str(&encode_line(&got).expect("encodes")).expect("decodes");
            assert_eq!(again, want);
        }
    }

    #[test]
    fn disk_error_rules_are_validated() {
        let de = |offset, length, count| FaultCmd::DiskError {
            op: FaultOp::Read,
            offset,
            length,
            count,
        };
        assert_eq!(
            de(Some(8), Some(4), Some(2)).disk_error_rule(),
            Ok(Some(DiskErrorRule {
                op: FaultOp::Read,
                range: Some((8, 12)),
                remaining: Some(2)
            }))
        );
        assert_eq!(
            de(Some(8), None, None).disk_error_rule(),
            Err(FaultRequestError::HalfRange)
        );
        assert_eq!(
            de(Some(8), Some(0), None).disk_error_rule(),
            Err(FaultRequestError::EmptyRange)
        );
        assert!(matches!(
            de(Some(u64::MAX), Some(2), None).disk_error_rule(),
            Err(FaultRequestError::RangeOverflow { .. })
        ));
        assert_eq!(
            de(None, None, Some(0)).disk_error_rule(),
            Err(FaultRequestError::ZeroCount)
        );
        assert_eq!(FaultCmd::Clear.disk_error_rule(), Ok(None));
    }

    #[test]
    fn the_refusal_names_the_feature_and_the_build_command() {
        let Response::Error { message, exit_code } = not_built() else {
            panic!("a repd without the feature answers with an error");
        };
        assert_ne!(exit_code, 0);
        assert!(message.contains("fault-injection"), "{message}");
        assert!(
            message.contains(
                "cargo build --release --workspace --features rep-replicator/fault-injection"
            ),
            "{message}"
        );
    }
}
