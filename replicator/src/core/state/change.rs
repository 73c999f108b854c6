//! The one path by which the visible state changes (DRBD's `drbd_state.c`): role, peer role,
//! connection state, disk and peer disk. A change is a [`ChangeSet`]; `change_state` completes
//! it with the implied changes (`sanitize`, docs/drbd-semantics.md §1.4), refuses it if the result
//! breaks a rule (`is_valid_state`, §1.3) when an admin asked for it, logs it the way DRBD does
//! (`role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )`), persists the metadata
//! flags that follow from it, and marks the status for publication.
//!
//! The fields of `NodeState` are private to node_state.rs: no other code can assign them, so
//! every change passes the rules here (the compiler enforces it).

use crate::core::contract::io::IoId;
use crate::core::contract::refusal::Refusal;
use crate::core::engine::Engine;
use crate::core::policy::quorum;
use crate::core::request::client::eio;
use crate::core::state::node_state::{ChangeSet, NodeState};
use crate::core::state::promotion;
use crate::core::state::{ConnState, DiskState, Role};
use rep_resources::quorum::OnNoQuorum;

impl Engine {
    /// Apply a change the engine itself decided (a lost link, a finished resync, a failed disk):
    /// implied changes are added, the result is not checked against the admin rules. Returns
    /// the superblock write issued for it, if any.
    pub(crate) fn change_state(&mut self, cs: ChangeSet) -> Option<IoId> {
        let ns = self.with_quorum(self.st.apply(&cs));
        self.commit_state(ns, cs)
    }

    /// Apply a change an admin asked for, unless it breaks a rule.
    pub(crate) fn request_state(&mut self, cs: ChangeSet) -> Result<Option<IoId>, Refusal> {
        let ns = self.with_quorum(self.st.apply(&cs));
        self.is_valid_state(&ns)?;
        Ok(self.commit_state(ns, cs))
    }

    /// Whether an admin request for this change would be refused now (for commands that
    /// decide before they act, e.g. `primary` asks the peer first).
    pub(crate) fn check_state(&self, cs: &ChangeSet) -> Result<(), Refusal> {
        self.is_valid_state(&self.with_quorum(self.st.apply(cs)))
    }

    /// `ns` with its quorum (docs/quorum.md): what `policy::quorum` says of the members as
    /// `ns` sees them, enforced only when quorum is on (off: always quorate, never frozen).
    pub(crate) fn with_quorum(&self, ns: NodeState) -> NodeState {
        let conf = self.cfg.quorum;
        if !conf.enabled() {
            return ns.with_quorum(true, false);
        }
        let verdict = quorum::calc(&self.quorum_inputs(&ns));
        // Only a Primary has application I/O to hold; demoted, what was held fails.
        let suspend = !verdict.quorum
            && conf.on_no_quorum == OnNoQuorum::SuspendIo
            && ns.role() == Role::Primary;
        ns.with_quorum(verdict.quorum, suspend)
    }

    pub(crate) fn quorum_inputs(&self, ns: &NodeState) -> quorum::Inputs {
        quorum::Inputs {
            quorum: self.cfg.quorum.quorum,
            minimum_redundancy: self.cfg.quorum.minimum_redundancy,
            disk: ns.disk(),
            diskless_by_config: false,
            members: ns
                .peers()
                .map(|(id, p)| quorum::Member {
                    diskless_by_config: Some(id) == self.peers.witness(),
                    connected: p.cstate() >= ConnState::Connected,
                    disk: p.pdsk(),
                })
                .collect(),
            had_quorum: self.st.quorum(),
        }
    }

    fn commit_state(&mut self, ns: NodeState, cs: ChangeSet) -> Option<IoId> {
        let os = std::mem::replace(&mut self.st, ns.clone());
        if os != ns {
            crate::core::state::node_state::log_change(&self.cfg.resource, &os, &ns, cs.reason());
            self.status_changed();
        }
        let old_flags = self.dev.gen.flags();
        self.after_state_change(&os, &ns);
        self.sync_flags_from_state();
        let written = if cs.persists() || self.dev.gen.flags() != old_flags {
            self.persist_superblock()
        } else {
            None
        };
        if os.susp_quorum() && !ns.susp_quorum() && !ns.susp_fen() {
            self.thaw_after_quorum(ns.quorum());
        }
        if os.quorum() && !ns.quorum() && !self.fence_running() {
            self.fence_yields_to_quorum();
        }
        written
    }

    /// I/O frozen for lack of quorum goes on: quorum is back (held replies go, waiting requests
    /// start), or the node was demoted (they fail as on any Secondary).
    fn thaw_after_quorum(&mut self, quorum: bool) {
        tracing::info!(
            resource = %self.cfg.resource,
            "{}: frozen I/O resumes",
            if quorum { "quorum regained" } else { "demoted without quorum" }
        );
        if !quorum {
            // Held replies of writes that reached only this disk: not acknowledged.
            for (req, result) in self.freeze.take_replies() {
                let result = result.and_then(|()| {
                    Err(eio(format!(
                        "resource {} was demoted without quorum: the request is not acknowledged",
                        self.cfg.resource
                    )))
                });
                self.emit(crate::core::contract::io::Output::ClientReply { req, result });
            }
        }
        self.release_replies(None);
        for (req, op) in self.freeze.take_queued() {
            self.client_request(req, op);
        }
    }

    /// The handlers a change calls for (DRBD's after_state_ch): `pri-on-incon-degr` when a
    /// Primary is left without access to UpToDate data, `unfence-peer` when a peer we had
    /// fenced is UpToDate again (the resync after the fencing is done).
    fn after_state_change(&mut self, os: &NodeState, ns: &NodeState) {
        let data = |s: &NodeState| promotion::has_uptodate_data(&self.promotion_facts(s));
        if ns.role() == Role::Primary && !data(ns) && (os.role() != Role::Primary || data(os)) {
            tracing::error!(resource = %self.cfg.resource, "Primary without access to UpToDate data (disk {}, peer {} {})", ns.disk(), ns.peer(self.data_id()).cstate(), ns.peer(self.data_id()).pdsk());
            self.emit(crate::core::contract::io::Output::Handler {
                name: "pri-on-incon-degr",
            });
        }
        if ns.role() == Role::Primary && os.quorum() && !ns.quorum() {
            tracing::error!(resource = %self.cfg.resource, "Primary lost quorum (peer {} {}): on-no-quorum {}", ns.peer(self.data_id()).cstate(), ns.peer(self.data_id()).pdsk(), self.cfg.quorum.on_no_quorum);
            self.emit(crate::core::contract::io::Output::Handler {
                name: "quorum-lost",
            });
        }
        // Remembered past the handshake, which takes the peer from Outdated to Inconsistent
        // (and clears the persisted flag) before the resync brings it back.
        for ((id, o), (_, n)) in os.peers().zip(ns.peers()) {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if n.pdsk() == DiskState::Outdated {
                peer.fenced = true;
            }
            let peer_back = o.pdsk() != DiskState::UpToDate && n.pdsk() == DiskState::UpToDate;
            if peer_back
                && std::mem::take(&mut peer.fenced)
                && self.cfg.fencing != rep_resources::Fencing::DontCare
            {
                self.emit(crate::core::contract::io::Output::Handler {
                    name: "unfence-peer",
                });
            }
        }
    }

    /// DRBD's `is_valid_state` for the rules an admin request can break (docs/drbd-semantics.md
    /// §1.3): a Primary may not be demoted under its users, and the rules for being Primary
    /// (`promotion::check`) hold.
    fn is_valid_state(&self, ns: &NodeState) -> Result<(), Refusal> {
        let os = &self.st;
        if os.role() == Role::Primary
            && ns.role() == Role::Secondary
            && self.requests.open_clients > 0
        {
            return Err(Refusal::DeviceInUse {
                open: self.requests.open_clients,
            });
        }
        // A change that leaves a rule broken that was broken before is let through (DRBD's
        // is_valid_state(os) == rv): a Primary waiting for its fence-peer handler must still
        // take other commands.
        match promotion::check(&self.promotion_facts(ns)) {
            Err(e) => match promotion::check(&self.promotion_facts(os)) {
                Err(old) if std::mem::discriminant(&old) == std::mem::discriminant(&e) => Ok(()),
                _ => Err(e),
            },
            Ok(()) => Ok(()),
        }
    }

    /// The facts the promotion rules look at, for state `ns`.
    pub(crate) fn promotion_facts(&self, ns: &NodeState) -> promotion::Facts {
        promotion::Facts {
            role: ns.role(),
            peer_role: if ns.any_peer_primary() {
                Role::Primary
            } else {
                ns.peer(self.data_id()).role()
            },
            cstate: ns.peer(self.data_id()).cstate(),
            disk: ns.disk(),
            pdsk: ns.peer(self.data_id()).pdsk(),
            fencing: self.cfg.fencing,
            allow_two_primaries: self.cfg.allow_two_primaries,
            // The counts for the refusal's message; the verdict is the state's own.
            quorum: self.cfg.quorum.enabled().then(|| quorum::Verdict {
                quorum: ns.quorum(),
                ..quorum::calc(&self.quorum_inputs(ns))
            }),
        }
    }
}
