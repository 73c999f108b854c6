//! The peer link (docs/architecture.md §9.1, docs/drbd-semantics.md §6.1): two TCP connections, *data* and *meta*, so acks never queue
//! behind data. Both nodes dial and both accept, as in DRBD, so whichever node comes up second
//! connects at once; each connection opens with `Hello` (version, node name, which socket,
//! session id pairing the two), and the accepting node answers a complete pair with its own
//! Hello on the data socket. Frames are read by one task per socket and written by one batching
//! task per socket.
//!
//! Crossed dials (both nodes dial at the same time) are settled without randomness: the node
//! with the lower address never takes the peer's pair while its own attempt is under way (it
//! holds it, and takes it only if its own attempt fails); the other node always takes the lower
//! node's pair, even during its own attempt. A node takes at most one pair (taking it makes the
//! link active at once, with no await in between), and the dialler of a pair only uses it after
//! the taker's answer, so both nodes end on the same data and meta sockets, and the engine's
//! handshake (authentication, params) runs once, on that link.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::rc::Rc;
use std::time::Duration;

use rep_nbd::server::stream::{PolledTcp, Reader, Stream};
use tokio_uring::net::TcpStream;

use super::driver::Driver;
use super::send_queue::{write_queue, SendQueue};
use crate::core::failure::LinkSocket;
use crate::core::peer::PROTOCOL_VERSION;
use crate::core::{Input, LinkId, LinkLoss, NetFailure, OsError};
use crate::runtime::tls::PeerStream;
use crate::wire::Packet;
use bytes::Bytes;

pub mod state;
pub mod wire;

use state::{Active, HalfLink, Incoming};
pub use state::{LinkSettings, LinkState, PeerListener, SharedLink};
use wire::{connect_to_peer, frame_ahead, hello, os_random, read_packet, ReadError};

/// A peer that connects but says nothing is dropped after this; so is an accepted socket whose
/// partner (the other of data and meta) does not arrive in this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Accepted peer connections not yet part of a link (waiting for Hello or for their partner).
/// The real peer needs two; beyond this, newcomers are refused, so that whoever connects from
/// the peer's address cannot make the daemon hold sockets (and file descriptors) without bound.
const MAX_PENDING_PEER_CONNS: usize = 16;
/// The peer's second socket follows its first within milliseconds; when it has not come after
/// this, the peer's attempt failed half way, and we dial it ourselves.
const PARTNER_GRACE: Duration = Duration::from_millis(200);
/// How long a link the engine dropped may take to send what was queued before (see
/// `link_close`); a peer that does not read is cut off after this.
const CLOSE_FLUSH: Duration = Duration::from_millis(250);

/// Client write pieces from this size up are sent from the client's buffer (`link_send_write`).
const SPLICE_MIN: usize = 8 << 10;

/// About how many bytes `p` encodes to (so that a frame does not grow a send chunk).
fn frame_size_hint(p: &Packet) -> usize {
    const FIXED: usize = 128;
    match p {
        Packet::Data { data, .. }
        | Packet::RsData { data, .. }
        | Packet::DataReply { data, .. } => FIXED + data.len(),
        Packet::Bitmap { rle, .. } => FIXED + rle.len(),
        Packet::RsRequest { digest, .. } | Packet::OvReply { digest, .. } => FIXED + digest.len(),
        _ => FIXED * 4,
    }
}

/// The same connection, driven by readiness instead of io_uring, with the bytes its reader had
/// read ahead. The io_uring handle is closed when its last holder drops it; the socket stays
/// open through the duplicate. A TLS connection stays as it is (rustls's state lives in it).
#[allow(unsafe_code)]
fn repoll(reader: Reader<PeerStream>) -> io::Result<HalfLink> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let (stream, buffered) = reader.into_parts();
    let PeerStream::Plain(tcp) = &*stream else {
        return Ok((Rc::clone(&stream), Reader::resume(stream, buffered)));
    };
    // SAFETY: `stream` holds the descriptor open for the whole borrow, which only duplicates it.
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) }.try_clone_to_owned()?;
    let polled = Rc::new(PeerStream::Polled(PolledTcp::new(StdTcpStream::from(fd))?));
    Ok((Rc::clone(&polled), Reader::resume(polled, buffered)))
}

/// Counts one accepted connection as waiting for its Hello while it lives.
struct AwaitingHello(Rc<Driver>);

impl AwaitingHello {
    fn new(driver: &Rc<Driver>) -> AwaitingHello {
        driver.link.borrow_mut().awaiting_hello += 1;
        AwaitingHello(Rc::clone(driver))
    }
}

impl Drop for AwaitingHello {
    fn drop(&mut self) {
        let mut st = self.0.link.borrow_mut();
        st.awaiting_hello = st.awaiting_hello.saturating_sub(1);
    }
}

impl Driver {
    /// Accept the peer's connections on `listener` (bound to this node's address), retiring
    /// the listener this replaces.
    pub fn listen_for_peer(self: &Rc<Self>, listener: std::net::TcpListener) {
        let addr = listener.local_addr().ok();
        let retire = Rc::new(tokio::sync::Notify::new());
        let old = self.peer_listener.borrow_mut().take();
        *self.peer_listener.borrow_mut() = Some(PeerListener {
            retire: Rc::clone(&retire),
        });
        let d = Rc::clone(self);
        crate::runtime::port::spawn_listener("peer listener", async move {
            let mut conns = rep_nbd::server::spawn_acceptor("peer", move || listener.accept())?;
            loop {
                tokio::select! {
                    conn = conns.recv() => {
                        let Some((stream, from)) = conn else { break };
                        tokio_uring::spawn(Rc::clone(&d).link_accepted(stream, from));
                    }
                    _ = retire.notified() => {
                        drop(conns);
                        if let Some(addr) = addr {
                            wake_acceptor(addr);
                        }
                        break;
                    }
                }
            }
            Ok(())
        });
        if let Some(old) = old {
            old.retire.notify_one();
        }
    }

    pub fn link_connect(self: &Rc<Self>) {
        if self.link_settings().is_none() {
            return;
        }
        let (spawn, redial) = {
            let mut st = self.link.borrow_mut();
            st.wanted = true;
            let spawn = !st.dialing && st.active.is_none();
            if spawn {
                st.dialing = true;
            }
            (spawn, Rc::clone(&st.redial))
        };
        if spawn {
            tokio_uring::spawn(dial_loop(Rc::clone(self)));
        } else {
            // A loop from before a `disconnect` may be sleeping out connect-int: dial now.
            redial.notify_waiters();
        }
    }

    pub fn link_disconnect(&self) {
        let redial = {
            let mut st = self.link.borrow_mut();
            st.wanted = false;
            st.half_open.clear();
            if let Some(h) = st.held.take() {
                h.close();
            }
            if let Some(a) = st.active.take() {
                a.data.close();
                a.meta.close();
            }
            Rc::clone(&st.redial)
        };
        redial.notify_waiters();
    }

    /// The engine drops the link. What it queued before (its report, above all) still goes out,
    /// for a moment: the node that dialled reads the other's report together with its Hello and
    /// may decide (a split brain, a refusal) before its own report is written; without it, the
    /// peer would see a bare broken pipe and wait for a reconnect instead of deciding too.
    pub fn link_close(&self, link: LinkId) {
        let closing = {
            let mut st = self.link.borrow_mut();
            if st.active.as_ref().is_some_and(|a| a.id == link) {
                st.active.take()
            } else {
                None
            }
        };
        let Some(a) = closing else { return };
        if a.data_q.unwritten() == 0 && a.meta_q.unwritten() == 0 {
            a.data.close();
            a.meta.close();
            return;
        }
        tokio_uring::spawn(async move {
            let t = std::time::Instant::now();
            while (a.data_q.unwritten() > 0 || a.meta_q.unwritten() > 0)
                && t.elapsed() < CLOSE_FLUSH
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            a.data.close();
            a.meta.close();
        });
    }

    /// Encode `packet` onto the socket its kind travels on.
    pub fn link_send(&self, link: LinkId, packet: &Packet) {
        let st = self.link.borrow();
        let Some(a) = st.active.as_ref().filter(|a| a.id == link) else {
            return;
        };
        let q = match packet.channel() {
            crate::wire::Channel::Data => &a.data_q,
            crate::wire::Channel::Meta => &a.meta_q,
        };
        q.push_with(frame_size_hint(packet), |buf| packet.encode(buf));
    }

    /// Bytes queued on the current link's data socket.
    pub fn link_backlog(&self) -> usize {
        self.link
            .borrow()
            .active
            .as_ref()
            .map_or(0, |a| a.data_q.unwritten())
    }

    /// Queue bytes `range` of a client write's buffer as a `Data` frame on the data socket. From
    /// `SPLICE_MIN` bytes up the head is encoded into the queue and the buffer goes out after it
    /// as it is (a reference, not a copy); a smaller piece is copied into the queue (measured
    /// on a loopback TCP sender: at 4 KiB the copy costs what one more slice in the `writev`
    /// costs; spliced, 16 KiB took 10 % less CPU and 1 MiB 8-10 % less).
    pub fn link_send_write(
        &self,
        link: LinkId,
        (id, offset, fua): (u64, u64, bool),
        buf: &Bytes,
        range: std::ops::Range<usize>,
    ) {
        let st = self.link.borrow();
        let Some(a) = st.active.as_ref().filter(|a| a.id == link) else {
            return;
        };
        let Some(piece) = buf.get(range.clone()) else {
            return;
        };
        let len = piece.len();
        if len < SPLICE_MIN {
            a.data_q.push_with(len + 64, |out| {
                crate::wire::packet::encode_data(out, id, offset, fua, piece)
            });
        } else {
            a.data_q.push_payload(
                64,
                |out| crate::wire::packet::encode_data_head(out, id, offset, fua, len),
                buf.slice(range),
            );
        }
    }

    /// Make `data` + `meta` the link, at once (no await: nothing can take another pair in
    /// between). `answer`: the pair is the peer's, dialled with this session id; our Hello,
    /// which tells the peer we took it, goes out before anything the engine sends.
    fn establish(
        self: &Rc<Self>,
        (data, data_rx): HalfLink,
        (meta, meta_rx): HalfLink,
        peer_node: String,
        answer: Option<u64>,
    ) {
        let Some(settings) = self.link_settings() else {
            data.close();
            meta.close();
            return;
        };
        let unwanted = {
            let st = self.link.borrow();
            !st.wanted || st.active.is_some()
        };
        if unwanted {
            data.close();
            meta.close();
            return;
        }
        // From here on the sockets are driven by readiness and direct system calls (see
        // `rep_nbd::server::stream::Polled`): a frame that can go out now goes out in the task
        // that queued it, and one that arrives is read in the wake-up that announced it. No
        // await between the check above and the link below: nothing can take another pair.
        // TLS connections stay on io_uring (their rustls state lives in the stream).
        let (data, data_rx, meta, meta_rx) = match (repoll(data_rx), repoll(meta_rx)) {
            (Ok((d, drx)), Ok((m, mrx))) => (d, drx, m, mrx),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("peer link: cannot register the connection with the reactor: {e}");
                drop((data, meta));
                // The peer sees the sockets close and dials again; so do we, after
                // connect-int, unless the engine gave up on the link meanwhile.
                let d = Rc::clone(self);
                tokio_uring::spawn(async move {
                    tokio::time::sleep(settings.connect_int).await;
                    if d.link.borrow().wanted {
                        d.link_connect();
                    }
                });
                return;
            }
        };
        let id = {
            let mut st = self.link.borrow_mut();
            st.next_id = st.next_id.next();
            let id = st.next_id;
            let data_q = Rc::new(SendQueue::default());
            let meta_q = Rc::new(SendQueue::default());
            if let Some(session) = answer {
                let hello = hello(&settings.node, false, session);
                data_q.push_with(frame_size_hint(&hello), |buf| hello.encode(buf));
            }
            let driver = Rc::clone(self);
            tokio_uring::spawn(write_queue(
                Rc::clone(&data),
                Rc::clone(&data_q),
                move |n| {
                    driver.metrics.link_sent(n);
                    driver.send_backlog_drained();
                },
            ));
            let driver = Rc::clone(self);
            tokio_uring::spawn(write_queue(
                Rc::clone(&meta),
                Rc::clone(&meta_q),
                move |n| driver.metrics.link_sent(n),
            ));
            tokio_uring::spawn(read_frames(Rc::clone(self), id, data_rx, true));
            tokio_uring::spawn(read_frames(Rc::clone(self), id, meta_rx, false));
            st.active = Some(Active {
                id,
                data_q,
                meta_q,
                data,
                meta,
            });
            st.half_open.clear();
            if let Some(h) = st.held.take() {
                h.close();
            }
            id
        };
        let nonce = match os_random() {
            Ok(n) => n,
            Err(e) => {
                // No challenge without entropy: refuse the link rather than weaken it.
                tracing::error!("peer link: cannot read the OS random source for the authentication challenge: {e}");
                self.link_close(id);
                return;
            }
        };
        self.feed(Input::LinkUp {
            link: id,
            dialer: settings.wins_crossing(),
            peer_node,
            nonce,
        });
    }

    /// Frames from the peer's data or meta socket end here.
    fn link_lost(self: &Rc<Self>, link: LinkId, loss: LinkLoss) {
        let was_current = {
            let mut st = self.link.borrow_mut();
            if st.active.as_ref().is_some_and(|a| a.id == link) {
                if let Some(a) = st.active.take() {
                    a.data.close();
                    a.meta.close();
                }
                true
            } else {
                false
            }
        };
        if was_current {
            self.feed(Input::LinkDown { link, loss });
            self.send_backlog_drained();
        }
    }

    /// A connection accepted on our address: check who it is, read its Hello, pair it.
    pub async fn link_accepted(self: Rc<Self>, std_stream: StdTcpStream, from: SocketAddr) {
        let Some(settings) = self.link_settings() else {
            return;
        };
        if from.ip() != settings.peer_addr.ip() {
            tracing::warn!(
                "peer link: refusing connection from {from}: the configured peer is {}",
                settings.peer_addr
            );
            return;
        }
        let pending = {
            let st = self.link.borrow();
            st.awaiting_hello + st.half_open.len()
        };
        if pending >= MAX_PENDING_PEER_CONNS {
            tracing::warn!(
                "peer link: refusing connection from {from}: {pending} connections from the peer's address are already waiting to be paired"
            );
            return;
        }
        let _ = std_stream.set_nodelay(true);
        let awaiting = AwaitingHello::new(&self);
        let stream = TcpStream::from_std(std_stream);
        // TLS (net { tls yes; }) right after accept; a mismatch is refused and logged there.
        let Some((stream, early)) =
            crate::runtime::tls::secure_accepted(stream, from, HELLO_TIMEOUT).await
        else {
            return;
        };
        let stream = Rc::new(stream);
        let mut reader = Reader::resume(Rc::clone(&stream), early);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_packet(&mut reader)).await;
        drop(awaiting);
        if let Ok(Ok(Some(Packet::OutdateRequest { node }))) = hello {
            // The peer's fence-peer (it lost the link to us): whatever our connection state.
            crate::runtime::outdater::serve_outdate_request(Rc::clone(&self), stream, reader, node)
                .await;
            return;
        }
        let wanted = {
            let st = self.link.borrow();
            st.wanted && st.active.is_none()
        };
        if !wanted {
            tracing::debug!("peer link: refusing connection from {from}: not in WFConnection");
            return;
        }
        let (node, meta_socket, session) = match hello {
            Ok(Ok(Some(Packet::Hello {
                version_min,
                version_max,
                node,
                meta_socket,
                session,
            }))) => {
                if !(version_min..=version_max).contains(&PROTOCOL_VERSION) {
                    tracing::error!("peer link: {node} speaks protocol {version_min}..{version_max}, we speak {PROTOCOL_VERSION}");
                    return;
                }
                (node, meta_socket, session)
            }
            Ok(Ok(other)) => {
                tracing::warn!(
                    "peer link: {from} did not start with Hello ({:?})",
                    other.map(|p| p.name())
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!("peer link: {from}: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "peer link: {from} sent no Hello within {} s",
                    HELLO_TIMEOUT.as_secs()
                );
                return;
            }
        };
        let pair = {
            let mut st = self.link.borrow_mut();
            let slot = st.half_open.entry(session).or_default();
            if meta_socket {
                slot.1 = Some((stream, reader));
            } else {
                slot.0 = Some((stream, reader));
            }
            if slot.0.is_some() && slot.1.is_some() {
                st.half_open.remove(&session)
            } else {
                None
            }
        };
        let Some((Some(data), Some(meta))) = pair else {
            // Give the partner socket HELLO_TIMEOUT to arrive (dialling back if it is late);
            // then forget this one.
            tokio_uring::spawn(expire_half_open(Rc::clone(&self), session, from));
            return;
        };
        let incoming = Incoming {
            data,
            meta,
            node,
            session,
        };
        let take = {
            let mut st = self.link.borrow_mut();
            if !st.wanted || st.active.is_some() {
                incoming.close();
                None
            } else if st.attempt && settings.wins_crossing() {
                // Our own pair wins, unless our attempt fails.
                tracing::info!(
                    "peer link: dials crossed: {from} dialled us during our own attempt; holding its session {session:#x} in case ours fails"
                );
                if let Some(older) = st.held.replace(incoming) {
                    older.close();
                }
                None
            } else {
                Some(incoming)
            }
        };
        if let Some(i) = take {
            self.establish(i.data, i.meta, i.node, Some(i.session));
        }
    }
}

async fn expire_half_open(driver: Rc<Driver>, session: u64, from: SocketAddr) {
    tokio::time::sleep(PARTNER_GRACE).await;
    let redial = {
        let st = driver.link.borrow();
        let waiting = st.wanted && st.active.is_none() && st.half_open.contains_key(&session);
        waiting.then(|| Rc::clone(&st.redial))
    };
    if let Some(redial) = redial {
        // The peer is there and wants us, but its other socket did not follow (its attempt
        // failed half way): dial it now rather than after connect-int.
        redial.notify_waiters();
    }
    tokio::time::sleep(HELLO_TIMEOUT.saturating_sub(PARTNER_GRACE)).await;
    let stale = driver.link.borrow_mut().half_open.remove(&session);
    if let Some((data, meta)) = stale {
        tracing::warn!(
            "peer link: {from} opened one socket of session {session:#x} but not the other within {} s; dropped it",
            HELLO_TIMEOUT.as_secs()
        );
        for (stream, _) in data.into_iter().chain(meta) {
            stream.close();
        }
    }
}

/// Feed frames from one socket to the engine. The data socket pauses while the peer's writes
/// waiting for our disk exceed `max-buffers` (the meta socket never does: acks and pings).
async fn read_frames(
    driver: Rc<Driver>,
    link: LinkId,
    mut reader: Reader<PeerStream>,
    data_socket: bool,
) {
    let socket = if data_socket {
        LinkSocket::Data
    } else {
        LinkSocket::Meta
    };
    let mut batch = Vec::with_capacity(FRAME_BATCH);
    let loss = loop {
        while data_socket && driver.peer_rx_backlog_full() {
            driver.rx_room().await;
        }
        // The first frame may wait for the socket; the frames its read brought along are taken
        // with it (`frame_ahead`: they are whole in the buffer, so no read waits) and handed
        // to the engine in one pump, with one clock reading. The backlog check above is made
        // per batch, so the peer's writes waiting for our disk may pass `max-buffers` by what
        // one read brought (at most a read chunk, 256 KiB, or one frame).
        let ended = loop {
            match read_packet(&mut reader).await {
                Ok(Some(packet)) => batch.push(Input::Packet { link, packet }),
                Ok(None) => break Some(LinkLoss::BrokenPipe),
                Err(e) => break Some(read_loss(e, socket)),
            }
            if batch.len() >= FRAME_BATCH || !frame_ahead(reader.ahead()) {
                break None;
            }
        };
        // Frames read before a failure are handled before the loss, as they came.
        if !batch.is_empty() {
            driver.feed_batch_at(std::time::Instant::now(), batch.drain(..));
        }
        if let Some(loss) = ended {
            break loss;
        }
    };
    driver.link_lost(link, loss);
}

/// Frames handed to the engine in one pump at most: a read chunk of acknowledgements holds
/// thousands, and the inputs queued at once stay few (the next batch follows at once).
const FRAME_BATCH: usize = 128;

/// Why a peer socket's reader stops.
fn read_loss(e: ReadError, socket: LinkSocket) -> LinkLoss {
    match e {
        ReadError::Wire(e) => LinkLoss::ProtocolError(e),
        ReadError::Socket(e) if e.kind() == io::ErrorKind::UnexpectedEof => LinkLoss::BrokenPipe,
        ReadError::Socket(e) => LinkLoss::NetworkFailure(net_failure(&e, socket)),
        ReadError::PeerSpeaksTls => LinkLoss::NetworkFailure(NetFailure::PeerSpeaksTls),
    }
}

/// What the engine learns of a failed socket read. The TLS layer reports a record it refuses
/// as `InvalidData` without an errno (nbd-frontend's `tls_error`), which a plain socket never
/// returns; the TLS library's words go to the log here, the engine gets the kind.
fn net_failure(e: &io::Error, socket: LinkSocket) -> NetFailure {
    if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::InvalidData {
        tracing::warn!("peer link: {socket}: {e}");
        return NetFailure::Tls { socket };
    }
    NetFailure::Socket {
        socket,
        os: OsError::from(e),
    }
}

async fn dial_once(
    settings: &LinkSettings,
    session: u64,
    meta_socket: bool,
) -> io::Result<HalfLink> {
    let stream = connect_to_peer(settings).await?;
    let mut buf = Vec::new();
    hello(&settings.node, meta_socket, session).encode(&mut buf);
    stream.write_vec(buf).await.0?;
    let stream = Rc::new(stream);
    let reader = Reader::new(Rc::clone(&stream));
    Ok((stream, reader))
}

/// A retired listener's accept thread sits in accept(); one connection wakes it, it finds
/// nobody to hand the connection to, ends, and the listening socket closes with it.
fn wake_acceptor(addr: SocketAddr) {
    let spawned = std::thread::Builder::new()
        .name("retire-listener".into())
        .spawn(move || {
            let _ = StdTcpStream::connect_timeout(&addr, Duration::from_secs(1));
        });
    if let Err(e) = spawned {
        tracing::warn!("peer link: the old listener on {addr} stays open: {e}");
    }
}

/// Dial until a link is up or none is wanted: at once, then every connect-int (or at once again
/// after a new `connect`). The peer dials too; a pair it dials that we take ends this loop.
async fn dial_loop(driver: Rc<Driver>) {
    let wanted = |d: &Driver| {
        let st = d.link.borrow();
        st.wanted && st.active.is_none()
    };
    let mut attempt = 0u64;
    // Read every round: `adjust` may have moved the peer or changed connect-int.
    while let Some(settings) = driver.link_settings() {
        if !wanted(&driver) {
            break;
        }
        if attempt > 0 {
            let redial = Rc::clone(&driver.link.borrow().redial);
            tokio::select! {
                () = tokio::time::sleep(settings.connect_int) => {}
                () = redial.notified() => {}
            }
            if !wanted(&driver) {
                break;
            }
        }
        attempt += 1;
        driver.link.borrow_mut().attempt = true;
        let ours = dial_attempt(&driver, &settings).await;
        let held = {
            let mut st = driver.link.borrow_mut();
            st.attempt = false;
            st.held.take()
        };
        match (ours, held) {
            (Some((data, meta, node)), held) => {
                if let Some(h) = held {
                    h.close();
                }
                driver.establish(data, meta, node, None);
                break;
            }
            (None, Some(i)) => {
                driver.establish(i.data, i.meta, i.node, Some(i.session));
                break;
            }
            (None, None) => {}
        }
    }
    driver.link.borrow_mut().dialing = false;
}

/// One outgoing attempt: both sockets, then the peer's Hello on the data socket, which says it
/// took them; `None` if the peer is unreachable or did not take them.
async fn dial_attempt(
    driver: &Rc<Driver>,
    settings: &LinkSettings,
) -> Option<(HalfLink, HalfLink, String)> {
    let session = driver.random_u64();
    let data = match dial_once(settings, session, false).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(
                "peer link: connecting to {} failed: {e}",
                settings.peer_addr
            );
            return None;
        }
    };
    let meta = match dial_once(settings, session, true).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(
                "peer link: meta socket to {} failed: {e}",
                settings.peer_addr
            );
            data.0.close();
            return None;
        }
    };
    let (data, mut data_rx) = data;
    let why = match tokio::time::timeout(HELLO_TIMEOUT, read_packet(&mut data_rx)).await {
        Ok(Ok(Some(Packet::Hello {
            node,
            version_min,
            version_max,
            ..
        }))) if (version_min..=version_max).contains(&PROTOCOL_VERSION) => {
            return Some(((data, data_rx), meta, node));
        }
        Ok(Ok(Some(Packet::Hello {
            node,
            version_min,
            version_max,
            ..
        }))) => {
            tracing::error!("peer link: {node} speaks protocol {version_min}..{version_max}, we speak {PROTOCOL_VERSION}");
            None
        }
        Ok(Ok(None)) => Some(
            "closed the connection (not waiting for us: StandAlone or already connected?)"
                .to_owned(),
        ),
        Ok(Ok(Some(p))) => Some(format!("answered {} instead of Hello", p.name())),
        Ok(Err(e @ ReadError::PeerSpeaksTls)) => {
            // A misconfiguration, not a transient: say so where the operator looks.
            tracing::warn!("peer link: {} {e}", settings.peer_addr);
            Some(e.to_string())
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("did not answer".to_owned()),
    };
    if let Some(why) = why {
        tracing::debug!("peer link: {} {why}", settings.peer_addr);
    }
    data.close();
    meta.0.close();
    None
}
