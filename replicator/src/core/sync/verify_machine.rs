//! Online verify with one peer as a machine of its own (docs/drbd-semantics.md §8.5,
//! docs/architecture.md §8.3): the running verify (`Verify`, on the VerifyS side) and what the
//! last one found. It decides which chunks to ask for, what two digests say and when the walk
//! is over; it touches neither the link, the disk, the bitmap nor the state. Each step takes
//! what it needs (`Ctx`) and pushes its effects (`VerifyOut`) in the order they must happen;
//! the engine applies them (sync/verify.rs), so the packets leave in the order decided here.

use std::time::Instant;

use crate::core::contract::ids::LinkId;
use crate::core::contract::io::HashAlg;
use crate::core::contract::refusal::Refusal;
use crate::core::sync::verify_state::{len32, push_range, Aux, Verify, Whose, CHUNK_BYTES};
use crate::wire::Packet;

/// What a step needs to know about the engine, read when the input arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// The device size both sides verify.
    pub(crate) usable: u64,
    /// The engine's clock (absent before the first timed input): the verify's duration.
    pub(crate) now: Option<Instant>,
    /// The current link to the peer, if any: reads are tagged with it, and nothing is asked
    /// for without one.
    pub(crate) link: Option<LinkId>,
    /// `verify-alg` of the net section.
    pub(crate) alg: Option<HashAlg>,
}

/// What the engine does for the machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VerifyOut {
    /// Send a packet to the peer.
    Send(Packet),
    /// Read `len` bytes at `offset` and hash them for `aux` (`Engine::aux_read`).
    Read { aux: Aux, offset: u64, len: u32 },
    /// This side found `[offset, offset+len)` different: log it and mark it out of sync.
    Found { offset: u64, len: u64 },
    /// The peer found `[offset, offset+len)` different: mark it out of sync.
    Mark { offset: u64, len: u64 },
    /// Run DRBD's `out-of-sync` handler: the verify that just ended found blocks that differ.
    OutOfSyncHandler,
    /// Our verify is over: back to Connected, saying `why`, and persist (the bits it set must
    /// survive a crash).
    Done { why: String },
    /// The peer started a verify: this side becomes VerifyT.
    BecomeTarget,
    /// The peer broke the verify protocol: drop the link.
    ProtocolError(String),
}

/// Verify with one peer: the running one (VerifyS side) and what the last one found.
#[derive(Debug, Default)]
pub(crate) struct VerifyMachine {
    run: Option<Verify>,
    /// Blocks the last verify found out of sync, on either side of it: merged byte ranges.
    ranges: Vec<(u64, u64)>,
    /// How many 4 KiB blocks the last verify found out of sync.
    last_oos: Option<u64>,
}

impl VerifyMachine {
    /// The hash algorithm a verify may start with: `verify-alg` must be set.
    pub(crate) fn alg_to_start(alg: Option<HashAlg>) -> Result<HashAlg, Refusal> {
        alg.ok_or_else(|| Refusal::Unsupported {
            what: "verify without `verify-alg` in the net section (e.g. verify-alg sha1;)".into(),
        })
    }

    /// Whether this side runs a verify (VerifyS).
    pub(crate) fn running(&self) -> bool {
        self.run.is_some()
    }

    /// The algorithm a verify read is hashed with: the running verify's, else the configured
    /// one (the VerifyT side hashes with its own `verify-alg`).
    pub(crate) fn hash_alg(&self, configured: Option<HashAlg>) -> Option<HashAlg> {
        self.run.as_ref().map(|v| v.alg).or(configured)
    }

    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub(crate) fn last_oos(&self) -> Option<u64> {
        self.last_oos
    }

    /// (done bytes, total bytes) of a running verify.
    pub(crate) fn progress(&self, usable: u64) -> Option<(u64, u64)> {
        self.run.as_ref().map(|v| (v.done_bytes, usable))
    }

    /// The link went: a running verify ends without a verdict (what it marked stays marked).
    pub(crate) fn abort(&mut self) {
        self.run = None;
    }

    /// Start a verify with `alg` (the engine is now VerifyS) and ask for the first chunks.
    pub(crate) fn start(&mut self, alg: HashAlg, ctx: &Ctx, out: &mut Vec<VerifyOut>) {
        self.run = Some(Verify::new(alg, ctx.now));
        self.ranges.clear();
        self.pump(ctx, out);
    }

    /// Keep the window of chunks full: for each, ask the peer for its digests and read our
    /// own copy; once nothing is left to ask for or wait on, finish.
    fn pump(&mut self, ctx: &Ctx, out: &mut Vec<VerifyOut>) {
        let Some(link) = ctx.link else { return };
        let Some(v) = self.run.as_mut() else { return };
        for (id, offset, len) in v.next_chunks(ctx.usable) {
            let len = len32(len);
            out.push(VerifyOut::Send(Packet::OvRequest { id, offset, len }));
            out.push(VerifyOut::Read {
                aux: Aux::VerifyMine { id, link },
                offset,
                len,
            });
        }
        if v.finished(ctx.usable) {
            self.finish(ctx, out);
        }
    }

    fn finish(&mut self, ctx: &Ctx, out: &mut Vec<VerifyOut>) {
        let Some(v) = self.run.take() else { return };
        let secs = v
            .started
            .zip(ctx.now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let mut why = format!(
            "Online verify done (total {secs} sec; {} K/sec); found {} 4k block out of sync",
            v.done_bytes / 1024 / secs.max(1),
            v.found
        );
        if v.settled > 0 || v.unsettled > 0 {
            why.push_str(&format!(
                " ({} mismatches seen during writes agreed when checked again; {} blocks kept being written and were not judged)",
                v.settled, v.unsettled
            ));
        }
        self.last_oos = Some(v.found);
        out.push(VerifyOut::Send(Packet::OvDone {
            oos_blocks: v.found,
        }));
        if v.found > 0 {
            out.push(VerifyOut::OutOfSyncHandler);
        }
        out.push(VerifyOut::Done { why });
    }

    /// One side's digests of chunk `id`; once both are in, the differing blocks are found here
    /// and reported to the peer, and the window moves on. Whether the chunk was waiting.
    pub(crate) fn digests(
        &mut self,
        id: u64,
        whose: Whose,
        digests: Vec<u8>,
        ctx: &Ctx,
        out: &mut Vec<VerifyOut>,
    ) -> bool {
        let Some(v) = self.run.as_mut() else {
            return false;
        };
        if !v.record(id, whose, digests) {
            return false;
        }
        let Some(bad) = v.compare(id, ctx.usable) else {
            return true;
        };
        for (offset, len) in bad {
            out.push(VerifyOut::Found { offset, len });
            push_range(&mut self.ranges, offset, len);
            out.push(VerifyOut::Send(Packet::OvResult {
                id,
                offset,
                len: len32(len),
                in_sync: false,
            }));
        }
        self.pump(ctx, out);
        true
    }

    /// `OvReply`: the peer's digests of chunk `id`, which we must have asked for.
    pub(crate) fn on_reply(
        &mut self,
        id: u64,
        digest: Vec<u8>,
        ctx: &Ctx,
        out: &mut Vec<VerifyOut>,
    ) {
        if !self.digests(id, Whose::Theirs, digest, ctx, out) {
            out.push(VerifyOut::ProtocolError(format!(
                "verify reply {id} without a request"
            )));
        }
    }

    /// `OvRequest` (VerifyT side): the peer asks for our digests of a chunk. The first one of
    /// a verify makes this side VerifyT.
    pub(crate) fn on_request(
        &mut self,
        id: u64,
        offset: u64,
        len: u32,
        connected: bool,
        ctx: &Ctx,
        out: &mut Vec<VerifyOut>,
    ) {
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= ctx.usable);
        if end.is_none() || u64::from(len) > CHUNK_BYTES {
            out.push(VerifyOut::ProtocolError(format!(
                "verify request {offset}+{len} is invalid"
            )));
            return;
        }
        if ctx.alg.is_none() {
            out.push(VerifyOut::ProtocolError(
                "peer started online verify but verify-alg is not set here".into(),
            ));
            return;
        }
        if connected {
            self.ranges.clear();
            out.push(VerifyOut::BecomeTarget);
        }
        let Some(link) = ctx.link else { return };
        out.push(VerifyOut::Read {
            aux: Aux::VerifyPeer {
                id,
                offset,
                len,
                link,
            },
            offset,
            len,
        });
    }

    /// `OvResult` (VerifyT side): the peer found a range out of sync; mark it here too.
    pub(crate) fn on_result(
        &mut self,
        offset: u64,
        len: u32,
        in_sync: bool,
        usable: u64,
        out: &mut Vec<VerifyOut>,
    ) {
        if in_sync {
            return;
        }
        let ok = offset
            .checked_add(u64::from(len))
            .is_some_and(|e| e <= usable);
        if !ok {
            out.push(VerifyOut::ProtocolError(format!(
                "verify result {offset}+{len} is invalid"
            )));
            return;
        }
        out.push(VerifyOut::Mark {
            offset,
            len: u64::from(len),
        });
        push_range(&mut self.ranges, offset, u64::from(len));
    }

    /// `OvDone` (VerifyT side): the peer's verify is over; what to log.
    pub(crate) fn on_done(&mut self, oos_blocks: u64) -> String {
        self.last_oos = Some(oos_blocks);
        format!("Online verify done on the peer; found {oos_blocks} 4k block out of sync")
    }

    /// An application write (ours or the peer's) started or completed over `[offset,
    /// offset+len)`: a running verify must not trust a mismatch there.
    pub(crate) fn note_write(&mut self, offset: u64, len: u64) {
        if let Some(v) = self.run.as_mut() {
            v.note_write(offset, offset.saturating_add(len));
        }
    }
}

#[cfg(test)]
#[path = "verify_machine_tests.rs"]
mod tests;
