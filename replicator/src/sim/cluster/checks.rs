//! The checks: after every input (engine invariants, never two connected Primaries, no
//! protocol error, bitmaps settled after a handshake, whole images when a node starts to claim
//! its data, durable-required writes present) and at convergence (both images identical and
//! holding every acknowledged write).

use std::time::Duration;

use super::world::Cluster;
use crate::core::{ConnState, DiskState, Role};
use crate::sim::config::{BITS_SETTLE_INPUTS, BITS_SETTLE_TIME, SECTOR};
use crate::sim::model::WriteId;
use rep_resources::{Fencing, Protocol};

impl Cluster {
    /// After every input node `i` handled.
    pub(super) fn after_input(&mut self, i: usize) {
        for n in self.nodes.iter().filter(|n| n.up) {
            n.engine.check_invariants();
        }
        let primaries = self
            .nodes
            .iter()
            .filter(|n| n.up && n.engine.role() == Role::Primary)
            .count();
        // Two Primaries can exist only while they cannot see each other (a failover during a
        // partition): never while connected.
        if primaries == 2 {
            let connected = self
                .nodes
                .iter()
                .all(|n| n.engine.cstate() >= ConnState::Connected);
            assert!(!connected, "invariant violated: two connected Primaries");
        }
        // With quorum on, at most one node can write: Primary with quorum (docs/quorum.md).
        if self.cfg.quorum.enabled() {
            let writers = self
                .nodes
                .iter()
                .filter(|n| n.up && n.engine.role() == Role::Primary && n.engine.quorum())
                .count();
            assert!(
                writers <= 1,
                "invariant violated: {writers} Primaries with quorum"
            );
        }
        let errors = self.watch.protocol_errors();
        if errors.len() > self.protocol_errors_seen {
            self.protocol_errors_seen = errors.len();
            panic!(
                "invariant violated: two honest engines dropped their link as a protocol error: {}",
                errors[errors.len() - 1]
            );
        }
        self.observe(i);
        if self.cfg.witness {
            self.check_writers();
        }
        self.check_bits_settled(i);
    }

    /// With a witness: at most one data node can write (Primary, quorum, I/O frozen neither
    /// by fencing nor by quorum), and under protocol C a node that becomes able to write while
    /// its data peer is not connected (promoted, thawed, quorum regained) holds every
    /// acknowledged write.
    fn check_writers(&mut self) {
        let can = |n: &super::world::Node| {
            n.up && n.engine.role() == Role::Primary
                && n.engine.quorum()
                && !n.engine.suspended_by_fencing()
                && !n.engine.suspended_by_quorum()
        };
        let now = [can(&self.nodes[0]), can(&self.nodes[1])];
        assert!(
            !(now[0] && now[1]),
            "invariant violated: both data nodes can write (Primary with quorum, I/O not frozen)"
        );
        for (i, &can_write) in now.iter().enumerate() {
            let e = &self.nodes[i].engine;
            if can_write
                && !self.wit.writer[i]
                && self.cfg.protocol == Protocol::C
                && e.disk() == DiskState::UpToDate
                && e.cstate() < ConnState::Connected
            {
                self.log(format!("node {i} can write, its data peer not connected"));
                if let Err(e) = self.model.check_holds_acknowledged(i, &self.nodes[i].disk) {
                    panic!("invariant violated: node {i} can write (Primary with quorum) but lacks an acknowledged write: {e}");
                }
            }
        }
        self.wit.writer = now;
    }

    /// Connected and UpToDate/UpToDate implies no bit set, or a resync running, or the
    /// operator told: checked once per handshake, `BITS_SETTLE_INPUTS` inputs after it.
    pub(super) fn check_bits_settled(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some((left, deadline)) = n.bits_check_in else {
            return;
        };
        if n.engine.cstate() < ConnState::Connected {
            n.bits_check_in = None;
            return;
        }
        if left > 0 && now < deadline {
            n.bits_check_in = Some((left - 1, deadline));
            return;
        }
        n.bits_check_in = None;
        let e = &n.engine;
        if e.cstate() == ConnState::Connected
            && e.disk() == DiskState::UpToDate
            && e.pdsk() == DiskState::UpToDate
            && e.oos_kib() > 0
            && e.oos_notice().is_none()
        {
            panic!(
                "invariant violated: node {i} is Connected and UpToDate/UpToDate {} inputs after its handshake with {} KiB marked out of sync, no resync running and nothing telling the operator",
                BITS_SETTLE_INPUTS - left,
                e.oos_kib()
            );
        }
    }

    /// Follow node `i`'s state transitions for the model, and check whole images when a node
    /// starts to claim its data.
    pub(super) fn observe(&mut self, i: usize) {
        let n = &self.nodes[i];
        let now = (n.engine.role(), n.engine.disk(), n.engine.cstate());
        let before = std::mem::replace(&mut self.nodes[i].seen, now);
        if now == before {
            return;
        }
        if now.1 != before.1 {
            self.log(format!("node {i} disk {:?} -> {:?}", before.1, now.1));
        }
        if before.2 == ConnState::WFReportParams && now.2 >= ConnState::Connected {
            self.nodes[i].bits_check_in = Some((BITS_SETTLE_INPUTS, self.now + BITS_SETTLE_TIME));
        }
        if now.2 == ConnState::SyncTarget && before.2 != ConnState::SyncTarget {
            self.model.sync_target(i);
        }
        let became_uptodate = now.1 == DiskState::UpToDate && before.1 != DiskState::UpToDate;
        if became_uptodate && before.2 == ConnState::SyncTarget && now.2 == ConnState::Connected {
            self.check_adopted_generation(i);
        }
        if became_uptodate {
            let j = 1 - i;
            let source_ok = self.nodes[j].up
                && self.nodes[j].engine.disk() == DiskState::UpToDate
                && now.2 >= ConnState::Connected;
            if before.1 == DiskState::Inconsistent && source_ok {
                self.model.resynced(i, j);
            }
            self.log(format!("node {i} reports UpToDate ({:?} before)", before.1));
            self.nodes[i].claim_pending = Some("reports UpToDate (and its superblock says so)");
        }
        if now.0 == Role::Primary && before.0 != Role::Primary {
            if now.2 < ConnState::Connected {
                self.model.failover(i);
            }
            self.log(format!("node {i} promoted, disk {:?}", now.1));
            if now.1 == DiskState::UpToDate {
                self.nodes[i].claim_pending = Some("was promoted (and its superblock says so)");
                // With fencing that freezes I/O, the fence-peer handler decides: a node it lets
                // be promoted holds every write a client got an acknowledgement for.
                // So does a node promoted with quorum (a partition cannot leave both sides
                // quorate, and a Primary without quorum acknowledges nothing alone).
                let decides = if self.cfg.quorum.enabled() {
                    Some("quorum")
                } else if self.cfg.fencing == Fencing::ResourceAndStonith {
                    Some("fencing resource-and-stonith")
                } else {
                    None
                };
                if let Some(rule) = decides.filter(|_| self.cfg.protocol == Protocol::C) {
                    if let Err(e) = self.model.check_holds_acknowledged(i, &self.nodes[i].disk) {
                        panic!("invariant violated: node {i} was promoted ({rule}) but lacks an acknowledged write: {e}");
                    }
                }
            }
        }
    }

    /// A SyncTarget that finished holds its source's data, so it must hold its source's
    /// generation too: a stale one makes the next handshake a false split brain (simulator
    /// seeds 2685 and 5195, which took a 20,000-seed sweep to meet without this check).
    pub(super) fn check_adopted_generation(&self, i: usize) {
        let j = 1 - i;
        let source = &self.nodes[j];
        if !source.up || source.engine.disk() != DiskState::UpToDate {
            return;
        }
        let (own, theirs) = (
            self.nodes[i].engine.uuids().current,
            source.engine.uuids().current,
        );
        assert!(
            own & !1 == theirs & !1,
            "invariant violated: node {i} finished its resync with current generation {own:016X}, its source node {j} has {theirs:016X}"
        );
    }

    /// Node `i`'s durable image holds every write durable-required there (if it claims
    /// UpToDate data).
    pub fn check_node(&mut self, i: usize, why: &str) {
        let n = &self.nodes[i];
        if !n.up || n.engine.disk() != DiskState::UpToDate {
            return;
        }
        let sectors = self.cfg.device_bytes / SECTOR;
        if let Err(e) = self.model.check_durable(i, &self.nodes[i].disk, 0..sectors) {
            panic!("invariant violated: node {i} {why}, but {e}");
        }
    }

    pub(super) fn check_newly_required(&mut self, newly: Vec<(usize, WriteId)>) {
        for (n, wid) in newly {
            let node = &self.nodes[n];
            if !node.up || node.engine.disk() != DiskState::UpToDate {
                continue;
            }
            if let Err(e) = self.model.check_write_durable(n, wid, &self.nodes[n].disk) {
                panic!(
                    "invariant violated: write {wid} became durable-required on node {n}, but {e}"
                );
            }
        }
    }

    /// Both nodes connected, UpToDate, no resync running.
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.up && n.engine.cstate() == ConnState::Connected
                && n.engine.disk() == DiskState::UpToDate
                && n.engine.pdsk() == DiskState::UpToDate
        })
    }

    /// The node that is Primary, if one is.
    pub fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.nodes[i].up && self.nodes[i].engine.role() == Role::Primary)
    }

    /// At convergence (settled, no client request outstanding): a FLUSH through the Primary,
    /// then both durable images must be identical and hold every acknowledged write. Returns how
    /// many acknowledged writes the check covered.
    pub fn check_converged(&mut self) -> Result<u64, String> {
        if !self.settled() {
            return Err("check_converged on a cluster that has not settled".into());
        }
        if let Some(p) = self.primary() {
            let req = self.flush(p);
            let mut waited = 0;
            while self.nodes[p].clients.contains_key(&req) {
                if waited > 10_000 {
                    return Err("the convergence FLUSH was not answered".into());
                }
                self.run_for(Duration::from_millis(1));
                waited += 1;
            }
        }
        for i in 0..2 {
            self.check_node(i, "is settled");
            if self.owes_unfence[i] && self.cfg.fencing != Fencing::DontCare {
                return Err(format!(
                    "node {i} fenced its peer, which is UpToDate again, but unfence-peer never ran"
                ));
            }
        }
        let usable = self.nodes[0].engine.usable_bytes();
        let (a, b) = (&self.nodes[0].disk, &self.nodes[1].disk);
        self.model.check_converged(a, b, usable)
    }

    /// Older name of `check_converged` for tests that only want the verdict.
    pub fn check_data(&mut self) -> Result<(), String> {
        self.check_converged().map(|_| ())
    }

    /// Both disks' caches are identical (what verify compares), ignoring the model.
    pub fn caches_identical(&self) -> bool {
        let sectors = self.nodes[0].engine.usable_bytes() / SECTOR;
        (0..sectors).all(|s| self.nodes[0].disk.cached(s) == self.nodes[1].disk.cached(s))
    }

    pub fn meta_torn_writes(&self) -> u64 {
        self.nodes.iter().map(|n| n.meta_dev.torn_writes()).sum()
    }
}
