//! This node's peers, keyed by node id: for each, DRBD 9's connection (the link and its
//! handshake, the transfer log towards it, the operations received from it) and peer device
//! (resync and verify with it, whether we fenced it, a split brain found with it). Everything
//! the engine knows about one peer lives in its [`Peer`] (docs/architecture.md §13).
//!
//! The visible state of each peer (`cstate`, its role, its disk) is in `NodeState`, keyed by the
//! same ids, so that one state change covers them all (state/node_state.rs).

use super::handshake::Link;
pub(crate) use crate::core::contract::ids::NodeId;
use crate::core::contract::io::LinkId;
use crate::core::contract::split_brain::PeerAtSplit;
use crate::core::receiver::peer_rx::PeerRx;
use crate::core::request::transfer_log::TransferLog;
use crate::core::sync::resync_machine::ResyncMachine;
use crate::core::sync::verify_machine::VerifyMachine;
use crate::meta::bitmap::Bitmap;

/// What this node keeps for one peer.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    /// The peer's host name in the `.res` file.
    pub(crate) name: String,
    /// The current link to the peer and what its handshake learned (absent while StandAlone
    /// or waiting for a connection).
    pub(crate) link: Option<Link>,
    /// Our writes sent to the peer, by epoch, until its barrier acks.
    pub(crate) tl: TransferLog,
    /// The peer's operations received and not yet completed here.
    pub(crate) rx: PeerRx,
    /// `connect --discard-my-data`: this node volunteers to lose a split brain with this peer.
    pub(crate) discard_my_data: bool,
    /// The peer's side of an unresolved split brain, from the handshake that found it.
    pub(crate) at_split: Option<PeerAtSplit>,
    /// The peer was Outdated (by fencing, or found so at attach): `unfence-peer` is due when it
    /// is UpToDate again.
    pub(crate) fenced: bool,
    /// Links established with this peer (DRBD's connect_cnt): a fence-peer result from before
    /// the latest one is stale (`Engine::fence_done`).
    pub(crate) connects: u64,
    /// The bitmap kept for this peer (DRBD 9's per-peer-device bitmap): the blocks where our
    /// disk and this peer's may differ. Present while our disk is attached, for a peer with a
    /// disk; the metadata's one bitmap slot is the data peer's (`Peers::attach_bitmap`), and
    /// a diskless witness keeps none.
    pub(crate) bitmap: Option<Bitmap>,
    /// Resync with this peer: the running one, if any.
    pub(crate) resync: ResyncMachine,
    /// Online verify with this peer: the running one and what the last one found.
    pub(crate) verify: VerifyMachine,
    /// Equal generations met set bits and no side may be taken as the source: what the
    /// operator must settle, shown in status until a resync starts or the link goes.
    pub(crate) oos_notice: Option<String>,
}

impl Peer {
    /// Blocks out of sync with this peer (0 while no bitmap is kept for it).
    pub(crate) fn oos_bits(&self) -> u64 {
        self.bitmap.as_ref().map_or(0, Bitmap::count_ones)
    }

    fn new(id: NodeId, name: String) -> Peer {
        Peer {
            id,
            name,
            link: None,
            tl: TransferLog::default(),
            rx: PeerRx::default(),
            discard_my_data: false,
            at_split: None,
            fenced: false,
            connects: 0,
            bitmap: None,
            resync: ResyncMachine::default(),
            verify: VerifyMachine::default(),
            oos_notice: None,
        }
    }
}

/// The peers of this node, by node id. Today exactly one has a disk (the data peer, whose disk
/// mirrors ours); a diskless witness (quorum) joins as another. The data peer is reached
/// without a search, as the write path wants.
#[derive(Debug)]
pub(crate) struct Peers {
    /// In node-id order.
    all: Vec<Peer>,
    /// Index of the data peer in `all`.
    data: usize,
    /// The diskless witness, if the resource has one: it holds no data and takes no writes;
    /// its presence counts for quorum, and the data peer is outdated through it.
    witness: Option<NodeId>,
}

impl Peers {
    /// The peers of a configuration with one data peer.
    pub(crate) fn new(data_id: NodeId, data_name: String) -> Peers {
        Peers {
            all: vec![Peer::new(data_id, data_name)],
            data: 0,
            witness: None,
        }
    }

    /// With a diskless witness `id` as well.
    pub(crate) fn with_witness(mut self, id: NodeId, name: String) -> Peers {
        self.all.push(Peer::new(id, name));
        self.all.sort_by_key(|p| p.id);
        self.data = self.all.iter().position(|p| p.id != id).unwrap_or(0);
        self.witness = Some(id);
        self
    }

    /// Our disk attached: its bitmap is kept for the peer whose disk mirrors ours (the
    /// metadata holds one bitmap slot; a second data peer would be given the next slot).
    pub(crate) fn attach_bitmap(&mut self, bitmap: Bitmap) {
        self.data_mut().bitmap = Some(bitmap);
    }

    /// Our disk is gone: no bitmap is kept for anyone.
    pub(crate) fn detach_bitmaps(&mut self) {
        for p in &mut self.all {
            p.bitmap = None;
        }
    }

    /// Every bitmap kept, for what concerns all peers alike: a block our own disk lost or
    /// missed, a write no peer received, a bitmap cleared by the operator.
    pub(crate) fn bitmaps_mut(&mut self) -> impl Iterator<Item = &mut Bitmap> {
        self.all.iter_mut().filter_map(|p| p.bitmap.as_mut())
    }

    /// Mark `[start, start+len)` out of sync towards every peer (see `bitmaps_mut`).
    pub(crate) fn mark_all(&mut self, start: u64, len: u64) {
        for bm in self.bitmaps_mut() {
            bm.set_range(start, len);
        }
    }

    /// The witness's node id, if there is one.
    pub(crate) fn witness(&self) -> Option<NodeId> {
        self.witness
    }

    /// The peer our writes are replicated to.
    pub(crate) fn data(&self) -> &Peer {
        &self.all[self.data]
    }
    pub(crate) fn data_mut(&mut self) -> &mut Peer {
        &mut self.all[self.data]
    }

    /// Peer `id`, if it is one of ours.
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Peer> {
        self.all.iter_mut().find(|p| p.id == id)
    }

    /// Every peer, in node-id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.all.iter()
    }
    pub(crate) fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.all.iter().map(|p| p.id)
    }

    /// The peer whose current link is `link`, if any (a packet or loss of an older link
    /// belongs to nobody).
    pub(crate) fn by_link(&self, link: LinkId) -> Option<NodeId> {
        self.iter()
            .find(|p| p.link.as_ref().is_some_and(|l| l.id == link))
            .map(|p| p.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_link_belongs_to_the_peer_it_was_made_with() {
        let mut peers = Peers::new(NodeId(1), "beta".into());
        assert_eq!(peers.data().id, NodeId(1));
        assert_eq!(peers.data().name, "beta");
        assert_eq!(peers.by_link(LinkId(3)), None);
        peers.data_mut().link = Some(Link::new(
            LinkId(3),
            true,
            "beta".into(),
            true,
            Instant::now(),
        ));
        assert_eq!(peers.by_link(LinkId(3)), Some(NodeId(1)));
        assert_eq!(peers.by_link(LinkId(2)), None, "an older link is nobody's");
        assert_eq!(
            peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![NodeId(1)]
        );
    }

    #[test]
    fn the_bitmap_is_kept_for_the_data_peer_and_never_for_the_witness() {
        let mut peers = Peers::new(NodeId(1), "beta".into()).with_witness(NodeId(0), "w".into());
        assert_eq!(peers.data().id, NodeId(1));
        peers.attach_bitmap(Bitmap::new(1 << 20));
        peers.mark_all(8192, 4096);
        let kept: Vec<_> = peers.iter().map(|p| (p.id, p.oos_bits())).collect();
        assert_eq!(kept, vec![(NodeId(0), 0), (NodeId(1), 1)]);
        assert!(peers
            .iter()
            .all(|p| (p.id == NodeId(0)) == p.bitmap.is_none()));
        assert_eq!(peers.bitmaps_mut().count(), 1);
        peers.detach_bitmaps();
        assert!(peers.iter().all(|p| p.bitmap.is_none()));
        peers.mark_all(0, 4096);
        assert_eq!(peers.data().oos_bits(), 0, "no disk, nothing to mark");
    }
}
