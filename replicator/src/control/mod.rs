//! The control socket protocol between `repadm` and `repd` (`$RUN/RES.ctl`): one JSON object
//! per line each way. Shared by both binaries so they cannot drift apart.
//!
//! One answer carries more than its line: `data` (the answer to `read-data`) is followed by
//! exactly `len` raw bytes. Data stays binary so that a MiB costs a MiB on the socket, not the
//! 4/3 of base64 or the 2 of hex, and the JSON line stays small.

pub mod adjust;
pub mod fault;
pub mod md_dump;
pub mod render;

use serde::{Deserialize, Serialize};

use crate::core::{AdminCmd, ConnState, Counters, DiskState, Refusal, Role};

/// Upper bound of one control line; a longer line is a protocol error (closes that client).
pub const CONTROL_LINE_BYTES_MAX: usize = 64 * 1024;

/// Most bytes one `read-data` request may ask for: the daemon holds them in memory while it
/// answers, so a client wanting more asks again.
pub const READ_DATA_BYTES_MAX: u32 = 1 << 20;

/// Queries and daemon-level commands (not state changes of the engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Query {
    Status,
    /// Demote, disconnect, detach, then exit the daemon (`repadm down`).
    Down,
    /// Keep the connection open and stream one `Event` line per state change.
    Events,
    /// `repadm fault`: the test-only fault hook (refused unless repd has `fault-injection`).
    Fault {
        fault: fault::FaultCmd,
    },
    /// `repadm adjust`: re-read the configuration (`config`, or the file repd was started
    /// with) and apply what changed; with `dry_run` only report it.
    Adjust {
        #[serde(default)]
        config: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
    /// `repadm split-brain show`: both sides of a split brain as this node knows them.
    SplitBrain,
    /// `repadm verify --report`: the ranges the last verify found out of sync.
    VerifyReport,
    /// `len` bytes (at most `READ_DATA_BYTES_MAX`) of this node's data area at `offset`, as
    /// its backing device holds them (`split-brain resolve --save` on either node). Refused
    /// unless the node is Secondary: a Primary's application may be writing them.
    ReadData {
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Request {
    Query(Query),
    Admin(AdminCmd),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok {
        message: String,
        status: Box<Status>,
    },
    /// The engine refused: `rendered` is the drbdsetup-style line, `exit_code` drbdadm's code.
    Refused {
        refusal: Refusal,
        rendered: String,
        exit_code: i32,
        status: Box<Status>,
    },
    Error {
        message: String,
        exit_code: i32,
    },
    /// The answer to `adjust`: every changed option and how it was (or would be) applied.
    Adjusted {
        report: adjust::Report,
        status: Box<Status>,
    },
    /// The answer to `verify-report`: `[offset, length]` byte ranges, ascending.
    VerifyReport {
        ranges: Vec<[u64; 2]>,
        status: Box<Status>,
    },
    /// The answer to `split-brain`.
    SplitBrain {
        view: Box<SplitBrainInfo>,
        status: Box<Status>,
    },
    /// The answer to `read-data`: the line is followed by exactly `len` raw bytes, the data
    /// area from `offset`.
    Data {
        offset: u64,
        len: u32,
    },
}

/// `repadm split-brain show` from one node: the engine's view plus what only the daemon knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitBrainInfo {
    #[serde(flatten)]
    pub view: crate::core::split_brain::SbView,
    /// Unix seconds of this node's last application write since repd started (none yet: null).
    pub last_write_unix: Option<u64>,
}

/// Version of the `status --json` and `events --json` objects (docs/json.md). Fields are only
/// ever added; a rename or removal would raise it.
pub const JSON_VERSION: u32 = 1;

fn yes() -> bool {
    true
}

fn json_version() -> u32 {
    JSON_VERSION
}

/// One line of the `events` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `JSON_VERSION`.
    #[serde(default = "json_version")]
    pub version: u32,
    /// `exists` for the initial dump, `change` afterwards (drbdsetup events2 vocabulary).
    pub kind: String,
    pub status: Box<Status>,
}

/// One peer of this node, as `status` lists every peer (DRBD 9's `drbdadm status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: String,
    pub node_id: u32,
    pub role: Role,
    pub cstate: ConnState,
    pub disk: DiskState,
    /// Configured without a disk (`disk none;`): the witness.
    pub witness: bool,
}

/// Progress of a resync or verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub total_kib: u64,
    pub left_kib: u64,
    /// Speed over the last few seconds and average since start, KiB/s.
    pub speed_kib_s: u64,
    pub avg_kib_s: u64,
    pub want_kib_s: Option<u64>,
    pub eta_s: u64,
    /// What limits a resync now and the setting to change (none for a verify, and in a
    /// resync's first second).
    #[serde(default)]
    pub limit: Option<crate::core::LimitInfo>,
}

impl SyncProgress {
    /// A running resync: the average rate since it started, and the time left at that rate.
    pub fn of_resync(r: &crate::core::ResyncInfo) -> SyncProgress {
        let done_kib = (r.total_bits - r.left_bits.min(r.total_bits)) * 4;
        let ms = u64::try_from(r.elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        let avg = done_kib.saturating_mul(1000) / ms;
        // The ETA follows the current rate, as DRBD's does; the average until there is one.
        let speed = r.current_kib.unwrap_or(avg);
        SyncProgress {
            total_kib: r.total_bits * 4,
            left_kib: r.left_bits * 4,
            speed_kib_s: speed,
            avg_kib_s: avg,
            want_kib_s: Some(r.rate_kib),
            eta_s: (r.left_bits * 4).checked_div(speed).unwrap_or(0),
            limit: r.limit.clone(),
        }
    }

    /// A running online verify: `done` of `total` bytes compared.
    pub fn of_verify(done: u64, total: u64) -> SyncProgress {
        SyncProgress {
            total_kib: total / 1024,
            left_kib: (total - done.min(total)) / 1024,
            speed_kib_s: 0,
            avg_kib_s: 0,
            want_kib_s: None,
            eta_s: 0,
            limit: None,
        }
    }

    /// Done in per-mille, as DRBD computes it for the bar.
    pub fn permille(&self) -> u64 {
        if self.total_kib == 0 {
            return 1000;
        }
        1000 - (self.left_kib.min(self.total_kib) * 1000 / self.total_kib)
    }
}

/// Everything `status`, `role`, `cstate`, `dstate` and the status file show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `JSON_VERSION`.
    #[serde(default = "json_version")]
    pub version: u32,
    pub resource: String,
    pub node: String,
    pub peer_node: Option<String>,
    pub minor: u32,
    pub device: String,
    pub pid: u32,
    pub role: Role,
    pub peer_role: Role,
    pub cstate: ConnState,
    pub disk: DiskState,
    pub peer_disk: DiskState,
    pub protocol: String,
    pub suspended: bool,
    /// Quorum is on for this resource (`options { quorum …; }`, docs/quorum.md).
    #[serde(default)]
    pub quorum_enabled: bool,
    /// This node has quorum (always true while quorum is off, as DRBD 9 reports it).
    #[serde(default = "yes")]
    pub quorum: bool,
    /// I/O is frozen for lack of quorum (`on-no-quorum suspend-io`).
    #[serde(default)]
    pub suspended_quorum: bool,
    pub size_bytes: u64,
    pub backing_disk: String,
    pub nbd_socket: String,
    pub nbd_uri: String,
    pub nbd_listen: Option<String>,
    pub address: Option<String>,
    pub peer_address: Option<String>,
    pub open_clients: u32,
    pub counters: Counters,
    pub oos_kib: u64,
    /// Out-of-sync 4 KiB blocks found by the last online verify (either side started it).
    #[serde(default)]
    pub verify_oos_blocks: Option<u64>,
    /// Blocks out of sync that no resync will repair by itself, and what to run about it.
    #[serde(default)]
    pub oos_notice: Option<String>,
    /// A split brain was detected and not resolved yet (sticky; survives a restart).
    #[serde(default)]
    pub split_brain: bool,
    /// Generation UUIDs: current, bitmap, history[0], history[1].
    pub uuids: [u64; 4],
    pub md_flags: u32,
    pub sync: Option<SyncProgress>,
    /// Every peer, in node-id order: the data peer (also in `peer_*`, `cstate`) and the
    /// witness, if the resource has one; on a witness, both data nodes.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

impl Status {
    /// This process's status as a node without a disk (the witness): Secondary and Diskless,
    /// no peer or connection yet, and every data-path field empty (no size, backing disk, NBD
    /// export, counters, UUIDs or resync).
    pub fn without_disk(resource: String, node: String, minor: u32, device: String) -> Status {
        Status {
            version: JSON_VERSION,
            resource,
            node,
            peer_node: None,
            minor,
            device,
            pid: std::process::id(),
            role: Role::Secondary,
            peer_role: Role::Unknown,
            cstate: ConnState::StandAlone,
            disk: DiskState::Diskless,
            peer_disk: DiskState::DUnknown,
            protocol: String::new(),
            suspended: false,
            quorum_enabled: false,
            quorum: true,
            suspended_quorum: false,
            size_bytes: 0,
            backing_disk: "none".into(),
            nbd_socket: String::new(),
            nbd_uri: String::new(),
            nbd_listen: None,
            address: None,
            peer_address: None,
            open_clients: 0,
            counters: Counters::default(),
            oos_kib: 0,
            verify_oos_blocks: None,
            oos_notice: None,
            split_brain: false,
            uuids: [0; 4],
            md_flags: 0,
            sync: None,
            peers: Vec::new(),
        }
    }
}

/// Build a request line (without the newline).
pub fn encode_line<T: Serialize>(msg: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(msg)
}

/// Decode one control line (without its newline) as repd reads it from a client: `Ok(None)`
/// for a blank line, an error naming the problem for anything else that is not a request.
/// Pure, so that the fuzzer and repd share it.
pub fn decode_request_line(line: &[u8]) -> Result<Option<Request>, String> {
    if line.len() > CONTROL_LINE_BYTES_MAX {
        return Err(format!(
            "control line longer than {CONTROL_LINE_BYTES_MAX} bytes"
        ));
    }
    let text = String::from_utf8_lossy(line);
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str::<Request>(&text)
        .map(Some)
        .map_err(|e| format!("bad control request {text:?}: {e}"))
}

/// A process that exists and is not a zombie: a killed daemon that nobody reaped yet (a
/// container's init may never reap) is dead for `up` and `down`.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json() {
        for (line, want) in [
            (r#"{"cmd":"status"}"#, Request::Query(Query::Status)),
            (r#"{"cmd":"down"}"#, Request::Query(Query::Down)),
            (
                r#"{"cmd":"primary","force":true}"#,
                Request::Admin(AdminCmd::Primary { force: true }),
            ),
            (
                r#"{"cmd":"primary"}"#,
                Request::Admin(AdminCmd::Primary { force: false }),
            ),
            (
                r#"{"cmd":"secondary"}"#,
                Request::Admin(AdminCmd::Secondary),
            ),
            (
                r#"{"cmd":"read-data","offset":4096,"len":65536}"#,
                Request::Query(Query::ReadData {
                    offset: 4096,
                    len: 65536,
                }),
            ),
            (
                r#"{"cmd":"connect","discard_my_data":true}"#,
                Request::Admin(AdminCmd::Connect {
                    discard_my_data: true,
                }),
            ),
        ] {
            let got: Request = serde_json::from_str(line).expect("valid request line");
            assert_eq!(got, want, "{line}");
            let again: Request =
                serde_json::from_str(&encode_line(&got).expect("encodes")).expect("decodes");
            assert_eq!(again, want);
        }
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }
}
