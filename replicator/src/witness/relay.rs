//! The witness's one decision (docs/quorum.md, "Losing the data link"): relaying "have my
//! data peer outdated" from one data node to the other, one request at a time.
//!
//! When the link between the two data nodes breaks while both still see the witness, both
//! keep quorum through it, so something must stop both from writing. A Primary that loses its
//! data peer freezes I/O and asks, through the witness, to have the peer outdated; a node to
//! be promoted without its data peer asks the same. The witness forwards each request to the
//! target over the target's own witness link and passes the target's answer back (Outdated
//! is durable on the target by then; a Primary refuses, and then the asker is the one whose
//! data is outdated). Requests are relayed strictly one after the other, so of two nodes that
//! ask at once exactly one gets its peer outdated: the target of the first answers before the
//! second is forwarded, and a node whose own promotion request is waiting refuses to be
//! outdated (core/fencing/fence_peer.rs).
//!
//! A target the witness has no link to is reported unreachable (`reached: false`); that node
//! sees neither its data peer nor the witness, so it has no quorum and can neither write nor
//! be promoted. A target that is linked is waited for: its link's pings bound the wait, and a
//! slow answer is never taken for an absent one (the target may be Primary).

use std::collections::{BTreeSet, VecDeque};

use crate::wire::Packet;

/// What the witness sends, to which data node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub to: String,
    pub packet: Packet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    from: String,
    /// The requester's id for it (its `RelayReply` carries it back).
    id: u64,
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    req: Request,
    /// The id the witness gave the forwarded request.
    relay_id: u64,
}

/// The relay: which data nodes are linked, the requests waiting, the one forwarded.
#[derive(Debug, Default)]
pub struct Relay {
    linked: BTreeSet<String>,
    queue: VecDeque<Request>,
    in_flight: Option<InFlight>,
    next_id: u64,
}

fn unreached(req: &Request) -> Send {
    Send {
        to: req.from.clone(),
        packet: Packet::RelayReply {
            id: req.id,
            reached: false,
            role: 0,
            disk: 0,
        },
    }
}

impl Relay {
    /// Data node `node` completed its greeting.
    pub fn linked(&mut self, node: &str) {
        self.linked.insert(node.to_owned());
    }

    pub fn is_linked(&self, node: &str) -> bool {
        self.linked.contains(node)
    }

    /// Data node `node`'s link went away: its waiting requests go with it; a request
    /// forwarded to it is answered "not reached".
    pub fn unlinked(&mut self, node: &str) -> Vec<Send> {
        self.linked.remove(node);
        self.queue.retain(|r| r.from != node);
        let mut out = Vec::new();
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.req.target == node)
        {
            if let Some(f) = self.in_flight.take() {
                if self.linked.contains(&f.req.from) {
                    out.push(unreached(&f.req));
                }
            }
            out.extend(self.pump());
        }
        out
    }

    /// `RelayOutdate { id, node: target }` from data node `from`.
    pub fn request(&mut self, from: &str, id: u64, target: &str) -> Vec<Send> {
        self.queue.push_back(Request {
            from: from.to_owned(),
            id,
            target: target.to_owned(),
        });
        self.pump()
    }

    /// `RelayReply` from data node `from` to a forwarded request. An answer that matches
    /// nothing forwarded (a late one, from a link that was replaced) is dropped.
    pub fn reply(&mut self, from: &str, relay_id: u64, role: u8, disk: u8) -> Vec<Send> {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.relay_id == relay_id && f.req.target == from);
        if !matches {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(f) = self.in_flight.take() {
            if self.linked.contains(&f.req.from) {
                out.push(Send {
                    to: f.req.from,
                    packet: Packet::RelayReply {
                        id: f.req.id,
                        reached: true,
                        role,
                        disk,
                    },
                });
            }
        }
        out.extend(self.pump());
        out
    }

    /// Forward the next request, unless one is forwarded already.
    fn pump(&mut self) -> Vec<Send> {
        let mut out = Vec::new();
        while self.in_flight.is_none() {
            let Some(req) = self.queue.pop_front() else {
                break;
            };
            if !self.linked.contains(&req.target) || req.target == req.from {
                out.push(unreached(&req));
                continue;
            }
            self.next_id += 1;
            out.push(Send {
                to: req.target.clone(),
                packet: Packet::RelayOutdate {
                    id: self.next_id,
                    node: req.from.clone(),
                },
            });
            self.in_flight = Some(InFlight {
                req,
                relay_id: self.next_id,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Relay {
        let mut r = Relay::default();
        r.linked("a");
        r.linked("b");
        r
    }

    fn forwarded(s: &[Send]) -> (String, u64, String) {
        match s {
            [Send {
                to,
                packet: Packet::RelayOutdate { id, node },
            }] => (to.clone(), *id, node.clone()),
            other => panic!("expected one forwarded request, got {other:?}"),
        }
    }

    fn answer(s: &[Send]) -> (String, u64, bool, u8) {
        match s.first() {
            Some(Send {
                to,
                packet:
                    Packet::RelayReply {
                        id, reached, role, ..
                    },
            }) => (to.clone(), *id, *reached, *role),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_forwarded_to_the_target_and_its_answer_returned() {
        let mut r = both();
        let (to, rid, asker) = forwarded(&r.request("a", 7, "b"));
        assert_eq!((to.as_str(), asker.as_str()), ("b", "a"));
        let out = r.reply("b", rid, 2, 4);
        assert_eq!(answer(&out), ("a".into(), 7, true, 2));
    }

    #[test]
    fn requests_at_once_are_relayed_one_after_the_other() {
        let mut r = both();
        let (_, first, _) = forwarded(&r.request("a", 1, "b"));
        assert!(
            r.request("b", 9, "a").is_empty(),
            "b's request waits while a's is with b"
        );
        let out = r.reply("b", first, 2, 4);
        assert_eq!(answer(&out[..1]), ("a".into(), 1, true, 2));
        let (to, _, asker) = forwarded(&out[1..]);
        assert_eq!((to.as_str(), asker.as_str()), ("a", "b"));
    }

    #[test]
    fn an_unlinked_target_is_reported_unreached_at_once_or_when_its_link_goes() {
        let mut r = Relay::default();
        r.linked("a");
        assert_eq!(answer(&r.request("a", 3, "b")), ("a".into(), 3, false, 0));
        r.linked("b");
        let (_, rid, _) = forwarded(&r.request("a", 4, "b"));
        let out = r.unlinked("b");
        assert_eq!(answer(&out), ("a".into(), 4, false, 0));
        assert!(
            r.reply("b", rid, 2, 4).is_empty(),
            "a late answer is dropped"
        );
    }

    #[test]
    fn a_slow_target_is_waited_for_and_a_gone_requester_is_not_answered() {
        let mut r = both();
        let (_, rid, _) = forwarded(&r.request("a", 5, "b"));
        assert!(r.request("a", 6, "b").is_empty());
        assert!(
            r.unlinked("a").is_empty(),
            "nothing to tell a gone requester"
        );
        assert!(
            r.reply("b", rid, 2, 4).is_empty(),
            "a's second request went with its link"
        );
        assert!(r.in_flight.is_none() && r.queue.is_empty());
    }

    #[test]
    fn a_request_to_outdate_oneself_is_not_relayed() {
        let mut r = both();
        assert_eq!(answer(&r.request("a", 8, "a")), ("a".into(), 8, false, 0));
    }
}
