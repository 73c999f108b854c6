//! What the simulated witness is made of (`SimConfig::witness`): one link per data node, each a
//! connection that a partition cuts and that each end declares dead on its own, after its
//! pings time out (so the witness's view of a link may lag the node's, and the other way
//! round), and the witness's relay of outdate requests (`witness::relay::Relay`, the daemon's
//! own). The behaviour is in `witness.rs`; these are the types `world.rs` holds.

use std::collections::HashMap;
use std::time::Duration;

use crate::core::{AdminId, IoId};
use crate::wire::Packet;
use crate::witness::relay::Relay;

/// The end of a data node's witness link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The data node (its runtime, which tells its engine `Input::WitnessSeen`).
    Node,
    /// The witness (its relay).
    Witness,
}

/// An event on node `node`'s witness link.
#[derive(Debug)]
pub(super) enum WitnessEv {
    /// `end` has completed its greeting on connection `conn`.
    Up { node: usize, end: End, conn: u64 },
    /// `end`'s pings on connection `conn` time out if it is still cut (or was closed).
    Timeout { node: usize, end: End, conn: u64 },
    /// A frame on connection `conn`, arriving at `to`.
    Frame {
        node: usize,
        to: End,
        conn: u64,
        packet: Packet,
    },
}

/// The witness and its links to the two data nodes.
#[derive(Debug, Default)]
pub(super) struct WitnessLinks {
    pub(super) relay: Relay,
    /// Node i's link to the witness is cut by a partition.
    pub(super) cut: [bool; 2],
    /// The connection of node i's witness link, while neither end has declared it dead.
    pub(super) conn: [Option<u64>; 2],
    /// The connection each end believes in (`None`: it sees no link).
    pub(super) node_view: [Option<u64>; 2],
    pub(super) witness_view: [Option<u64>; 2],
    pub(super) next_conn: u64,
    /// Last arrival per (node, towards the witness), so each direction stays FIFO.
    pub(super) last_frame: [[Duration; 2]; 2],
    /// Node i's fence-peer requests sent to the witness: (node, id) → (its generation, the
    /// handler's I/O).
    pub(super) asked: HashMap<(usize, u64), (u64, IoId)>,
    pub(super) next_id: u64,
    /// Outdate requests the witness forwarded, carried out as `PeerOutdate` by their target:
    /// (target, admin id) → (the relay's id, the connection it came on).
    pub(super) outdating: HashMap<(usize, AdminId), (u64, u64)>,
    /// Node i can write (Primary, quorum, I/O not frozen) after the last input.
    pub(super) writer: [bool; 2],
    /// The witness's process is dead (`Cluster::crash_witness`): nobody can dial it.
    pub(super) down: bool,
}
