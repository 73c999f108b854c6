//! Online verify (docs/drbd-semantics.md §8.5): the VerifyS side walks the device in chunks, both
//! sides hash each 4 KiB block with `verify-alg` (off the I/O thread), and blocks whose digests
//! differ are marked out of sync on both nodes. Nothing is repaired here: as in DRBD, a
//! disconnect/connect (or `verify --fix`) resyncs what verify found.
//!
//! Unlike DRBD, a mismatch in a block that an application write touched while its chunk was
//! being checked (a write in flight when the reads were issued completes, or a new one starts,
//! here or arriving from the peer, before both digests are in) is not counted: the two reads
//! may have seen the data before and after that write. Such a block is checked again on its
//! own, until a check no write disturbed agrees or disagrees (issue 24 §2). The single ordered
//! link makes this complete: a write the peer applied before its read was sent to us before
//! its digests.
//!
//! The decisions live in `VerifyMachine` (sync/verify_machine.rs) and `verify --fix`'s in
//! sync/verify_fix.rs; this is the engine's glue: it gives them what they need and applies
//! what they ask for, in order.

use crate::core::contract::io::{FixSource, Output};
use crate::core::contract::refusal::Refusal;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::ConnState;
use crate::core::sync::verify_fix::{self, Fix, Sides};
use crate::core::sync::verify_machine::{Ctx, VerifyMachine, VerifyOut};
use crate::wire::Packet;

impl Engine {
    /// What a verify step needs to know, read now.
    pub(super) fn verify_ctx(&self) -> Ctx {
        Ctx {
            usable: self.dev.usable_bytes,
            now: self.last_now,
            link: self.link_id(),
            alg: self.cfg.peer.verify_alg,
        }
    }

    fn verify_sides(&self) -> Sides {
        Sides {
            cstate: self.data_st().cstate(),
            disk: self.st.disk(),
            pdsk: self.data_st().pdsk(),
            me: self.st.role(),
            peer: self.data_st().role(),
        }
    }

    /// Do what the verify machine asked for, in its order.
    pub(super) fn apply_verify(&mut self, out: Vec<VerifyOut>) {
        for o in out {
            match o {
                VerifyOut::Send(packet) => self.send(packet),
                VerifyOut::Read { aux, offset, len } => self.aux_read(aux, offset, len),
                VerifyOut::Found { offset, len } => {
                    tracing::warn!(resource = %self.cfg.resource, "Out of sync: start={}, size={} (sectors)", offset / 512, len / 512);
                    if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                        bm.set_range(offset, len);
                    }
                }
                VerifyOut::Mark { offset, len } => {
                    if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                        bm.set_range(offset, len);
                    }
                }
                // DRBD's out-of-sync helper: verify found blocks that differ.
                VerifyOut::OutOfSyncHandler => self.emit(Output::Handler {
                    name: "out-of-sync",
                }),
                VerifyOut::Done { why } => {
                    let _ = self.change_state(
                        ChangeSet::new()
                            .cstate(self.data_id(), ConnState::Connected)
                            .why(why)
                            .persist(),
                    );
                }
                VerifyOut::BecomeTarget => {
                    let _ = self
                        .change_state(ChangeSet::new().cstate(self.data_id(), ConnState::VerifyT));
                }
                VerifyOut::ProtocolError(why) => self.protocol_error(why),
            }
        }
    }

    pub(crate) fn cmd_verify(&mut self) -> Result<Option<String>, Refusal> {
        verify_fix::in_sync_and_connected(&self.verify_sides())?;
        let alg = VerifyMachine::alg_to_start(self.cfg.peer.verify_alg)?;
        let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::VerifyS));
        let (ctx, mut out) = (self.verify_ctx(), Vec::new());
        self.peers.data_mut().verify.start(alg, &ctx, &mut out);
        tracing::info!(resource = %self.cfg.resource, "Online verify started ({} bytes, {:?})", ctx.usable, alg);
        self.apply_verify(out);
        Ok(Some("online verify started".into()))
    }

    pub(crate) fn on_ov_request(&mut self, id: u64, offset: u64, len: u32) {
        let connected = self.data_st().cstate() == ConnState::Connected;
        let (ctx, mut out) = (self.verify_ctx(), Vec::new());
        let verify = &mut self.peers.data_mut().verify;
        verify.on_request(id, offset, len, connected, &ctx, &mut out);
        self.apply_verify(out);
    }

    pub(crate) fn on_ov_reply(&mut self, id: u64, digest: Vec<u8>) {
        let (ctx, mut out) = (self.verify_ctx(), Vec::new());
        self.peers
            .data_mut()
            .verify
            .on_reply(id, digest, &ctx, &mut out);
        self.apply_verify(out);
    }

    pub(crate) fn on_ov_result(&mut self, offset: u64, len: u32, in_sync: bool) {
        let (usable, mut out) = (self.dev.usable_bytes, Vec::new());
        let verify = &mut self.peers.data_mut().verify;
        verify.on_result(offset, len, in_sync, usable, &mut out);
        self.apply_verify(out);
    }

    pub(crate) fn on_ov_done(&mut self, oos_blocks: u64) {
        let why = self.peers.data_mut().verify.on_done(oos_blocks);
        let mut cs = ChangeSet::new().why(why).persist();
        if self.data_st().cstate() == ConnState::VerifyT {
            cs = cs.cstate(self.data_id(), ConnState::Connected);
        }
        let _ = self.change_state(cs);
        self.status_changed();
    }

    /// An application write (ours or the peer's) started or completed over `[offset,
    /// offset+len)`: a running verify must not trust a mismatch there.
    pub(crate) fn verify_note_write(&mut self, offset: u64, len: u64) {
        self.peers.data_mut().verify.note_write(offset, len);
    }

    pub(crate) fn cmd_resync_out_of_sync(
        &mut self,
        from: Option<FixSource>,
    ) -> Result<Option<String>, Refusal> {
        let bits = self.peers.data().oos_bits();
        let (fix, answer) = verify_fix::plan(from, &self.verify_sides(), bits)?;
        match fix {
            Fix::Nothing => {}
            Fix::PeerIsSource => self.send(Packet::SyncStart {
                source: false,
                full: false,
            }),
            Fix::ThisIsSource => self.start_sync_source(false),
        }
        Ok(Some(answer))
    }

    pub(crate) fn abort_verify(&mut self) {
        self.peers.data_mut().verify.abort();
    }

    /// The ranges the last verify found out of sync (on either side of it), merged.
    pub fn last_verify_ranges(&self) -> &[(u64, u64)] {
        self.peers.data().verify.ranges()
    }

    /// (done bytes, total bytes) of a running verify, for the progress bar.
    pub fn verify_progress(&self) -> Option<(u64, u64)> {
        self.peers.data().verify.progress(self.dev.usable_bytes)
    }

    pub fn last_verify_oos(&self) -> Option<u64> {
        self.peers.data().verify.last_oos()
    }
}
