//! What the driver keeps of the link to the witness (its tasks are in `mod.rs`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::wire::Packet;

/// The witness's answer to one of our relay requests: (reached, role code, disk code).
pub(crate) type RelayAnswer = (bool, u8, u8);

#[derive(Default)]
pub struct WitnessLink {
    /// The witness's host name.
    pub(crate) name: String,
    /// Frames to the witness while a link is up.
    pub(crate) tx: RefCell<Option<mpsc::UnboundedSender<Packet>>>,
    /// Our relay requests waiting for the witness's answer, by id.
    pub(crate) pending: RefCell<HashMap<u64, oneshot::Sender<RelayAnswer>>>,
    pub(crate) next_id: Cell<u64>,
    /// Role and disk last announced on this link (a `State` goes only when they change).
    pub(crate) announced: Cell<Option<(u8, u8)>>,
}

impl WitnessLink {
    pub(crate) fn new(name: String) -> WitnessLink {
        WitnessLink {
            name,
            ..WitnessLink::default()
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Queue `p` to the witness; false without a link.
    pub(crate) fn send(&self, p: Packet) -> bool {
        self.tx
            .borrow()
            .as_ref()
            .is_some_and(|tx| tx.send(p).is_ok())
    }

    /// Tell the witness our role and disk, if they changed since the last time.
    pub(crate) fn announce(&self, role: u8, disk: u8) {
        if self.announced.get() == Some((role, disk)) || !self.connected() {
            return;
        }
        if self.send(Packet::State {
            role,
            disk,
            susp: false,
        }) {
            self.announced.set(Some((role, disk)));
        }
    }

    /// The link went: requests waiting for an answer fail (their senders drop).
    pub(crate) fn gone(&self) {
        self.tx.borrow_mut().take();
        self.pending.borrow_mut().clear();
        self.announced.set(None);
    }
}
