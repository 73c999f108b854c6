//! What the driver keeps of the peer link (`Driver::link`): where it dials and listens, the
//! link that is up, the pairs being set up. Plain data, so that `driver/` can hold it without
//! importing the link machinery (`link/mod.rs`), which drives it through `Driver`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use rep_nbd::server::stream::{Reader, Stream};

use crate::core::LinkId;
use crate::runtime::send_queue::SendQueue;
use crate::runtime::tls::PeerStream;

pub struct LinkSettings {
    pub my_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub node: String,
    pub connect_int: Duration,
}

impl LinkSettings {
    /// This node has the lower address: its own pair wins when both nodes dial at once, and it
    /// plays the connecting side in the engine whoever dialled (so the peer holds
    /// RESOLVE_CONFLICTS, and its tie-breaks fall the same way on every connect).
    pub fn wins_crossing(&self) -> bool {
        (self.my_addr.ip(), self.my_addr.port()) < (self.peer_addr.ip(), self.peer_addr.port())
    }
}

pub(crate) struct Active {
    pub(crate) id: LinkId,
    /// What the data socket's writer has to send; its unwritten bytes are what `max-buffers`
    /// bounds.
    pub(crate) data_q: Rc<SendQueue>,
    pub(crate) meta_q: Rc<SendQueue>,
    pub(crate) data: Rc<PeerStream>,
    pub(crate) meta: Rc<PeerStream>,
}

impl Drop for Active {
    /// The writers stop with the link.
    fn drop(&mut self) {
        self.data_q.close();
        self.meta_q.close();
    }
}

pub(crate) type HalfLink = (Rc<PeerStream>, Reader<PeerStream>);

/// A complete pair the peer dialled, not answered yet.
pub(crate) struct Incoming {
    pub(crate) data: HalfLink,
    pub(crate) meta: HalfLink,
    pub(crate) node: String,
    pub(crate) session: u64,
}

impl Incoming {
    pub(crate) fn close(&self) {
        self.data.0.close();
        self.meta.0.close();
    }
}

#[derive(Default)]
pub struct LinkState {
    /// The engine asked for a connection (`Output::Connect`) and has none.
    pub(crate) wanted: bool,
    /// A dial loop runs (it ends once a link is up or none is wanted).
    pub(crate) dialing: bool,
    /// One of our own attempts is under way: its sockets may already be at the peer.
    pub(crate) attempt: bool,
    /// On the node whose pair wins a crossing: the peer's pair that arrived during our own
    /// attempt, taken if that attempt fails, dropped if it succeeds.
    pub(crate) held: Option<Incoming>,
    /// Rung by `connect` and `disconnect`: a dial loop sleeping out connect-int looks again.
    pub(crate) redial: Rc<tokio::sync::Notify>,
    pub(crate) active: Option<Active>,
    pub(crate) next_id: LinkId,
    /// Accepted sockets waiting for their partner, by session id.
    pub(crate) half_open: HashMap<u64, (Option<HalfLink>, Option<HalfLink>)>,
    /// Accepted sockets still waiting for their Hello.
    pub(crate) awaiting_hello: usize,
}

/// The listener accepting the peer on our address, and the bell that retires it (`adjust`
/// moved this node's address).
pub struct PeerListener {
    pub(crate) retire: Rc<tokio::sync::Notify>,
}

/// Shared state of the link machinery, kept by the driver.
pub type SharedLink = RefCell<LinkState>;
