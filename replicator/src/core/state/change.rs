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
use crate::core::state::node_state::{ChangeSet, NodeState};
use crate::core::state::promotion;
use crate::core::state::{DiskState, Role};

impl Engine {
    /// Apply a change the engine itself decided (a lost link, a finished resync, a failed disk):
    /// implied changes are added, the result is not checked against the admin rules. Returns
    /// the superblock write issued for it, if any.
    pub(crate) fn change_state(&mut self, cs: ChangeSet) -> Option<IoId> {
        let ns = self.st.apply(&cs);
        self.commit_state(ns, cs)
    }

    /// Apply a change an admin asked for, unless it breaks a rule.
    pub(crate) fn request_state(&mut self, cs: ChangeSet) -> Result<Option<IoId>, Refusal> {
        let ns = self.st.apply(&cs);
        self.is_valid_state(&ns)?;
        Ok(self.commit_state(ns, cs))
    }

    /// Whether an admin request for this change would be refused now (for commands that
    /// decide before they act, e.g. `primary` asks the peer first).
    pub(crate) fn check_state(&self, cs: &ChangeSet) -> Result<(), Refusal> {
        self.is_valid_state(&self.st.apply(cs))
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
        if cs.persists() || self.dev.gen.flags() != old_flags {
            self.persist_superblock()
        } else {
            None
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
        }
    }
}
