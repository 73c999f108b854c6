//! Reads and digests of our own copy, for online verify (`Aux::VerifyMine`, and the peer's
//! `OvRequest`: `Aux::VerifyPeer`) and for a csums-alg SyncTarget (`Aux::CsumsMine`): the read
//! goes to the disk, the data to the hashing pool, and the digests to whoever asked, if the
//! link they were asked on is still the current one (docs/architecture.md §8.2, §8.3).

use crate::core::contract::io::{Output, PeerDiskOp};
use crate::core::engine::Engine;
use crate::core::io_table::IoOwner;
use crate::core::sync::verify_state::{Aux, Whose};
use crate::wire::Packet;

impl Engine {
    /// Read `len` bytes at `offset` for `aux`; the data then goes to the hashing pool.
    pub(crate) fn aux_read(&mut self, aux: Aux, offset: u64, len: u32) {
        let io = self.ios.start(IoOwner::AuxRead(aux));
        self.emit(Output::PeerDisk {
            io,
            op: PeerDiskOp::Read { offset, len },
        });
    }

    /// A verify/csums read completed: hash it (a failed read: verify counts the chunk as out
    /// of sync, csums falls back to sending the data).
    pub(crate) fn aux_read_done(&mut self, aux: Aux, data: Option<Vec<u8>>) {
        let alg = match &aux {
            Aux::VerifyMine { .. } | Aux::VerifyPeer { .. } => {
                self.peers.data().verify.hash_alg(self.cfg.peer.verify_alg)
            }
            Aux::CsumsMine { .. } => self.cfg.peer.csums_alg,
        };
        let (Some(data), Some(alg)) = (data, alg) else {
            self.aux_hashed(aux, None);
            return;
        };
        let io = self.ios.start(IoOwner::AuxHash(aux));
        self.emit(Output::Hash { io, alg, data });
    }

    pub(crate) fn aux_hashed(&mut self, aux: Aux, digests: Option<Vec<u8>>) {
        let digests = digests.unwrap_or_default();
        match aux {
            Aux::VerifyMine { id, link } => {
                if self.link_id() == Some(link) {
                    let (ctx, mut out) = (self.verify_ctx(), Vec::new());
                    let verify = &mut self.peers.data_mut().verify;
                    verify.digests(id, Whose::Mine, digests, &ctx, &mut out);
                    self.apply_verify(out);
                }
            }
            Aux::VerifyPeer {
                id,
                offset,
                len,
                link,
            } => {
                if self.link_id() == Some(link) {
                    self.send(Packet::OvReply {
                        id,
                        offset,
                        len,
                        digest: digests,
                    });
                }
            }
            Aux::CsumsMine {
                id,
                offset,
                len,
                link,
            } => {
                if self.link_id() == Some(link) && self.peers.data().resync.running() {
                    self.send(Packet::RsRequest {
                        id,
                        offset,
                        len,
                        digest: digests,
                    });
                }
            }
        }
    }
}
