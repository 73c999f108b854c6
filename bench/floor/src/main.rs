//! rep-floor: the least a replicated NBD write can cost on this machine.
//!
//! Two bare daemons with nothing but the system calls a userspace replicator cannot avoid: the
//! Primary reads NBD requests, sends each write to the Secondary and writes it to its file; the
//! Secondary writes what it receives and (protocol C) acknowledges it; the Primary answers the
//! client on the acknowledgement. No engine, bitmap, activity log, metadata, state machine,
//! checksums, timers or logging; one thread each; every request received in one read is sent to
//! the peer in one `writev` straight from the receive buffer, and the answers to one wake-up go
//! out in one write. It is not a product: it keeps no promise a real replicator must keep after a
//! failure. It exists so that bench/floor.sh can put rep, nbdkit and this floor side by side and
//! show how much of rep's cost is the work itself (docs/architecture.md §15).

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rep_nbd::codec;
use rep_nbd::proto::*;

mod splice;

#[derive(Parser)]
#[command(about = "two bare replicating NBD daemons: the cost floor rep is measured against")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Serve NBD on a Unix socket, replicate to the Secondary (unless --protocol standalone).
    Primary {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        nbd: PathBuf,
        #[arg(long, value_enum)]
        protocol: Protocol,
        /// The Secondary's address (not with standalone).
        #[arg(long)]
        peer: Option<SocketAddr>,
        /// The address to send from.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Move write data with splice(2) and tee(2), never through memory (see splice.rs).
        #[arg(long)]
        splice: bool,
        /// Take acknowledgements on a second connection, as DRBD's and rep's meta socket
        /// (without it they come back on the data connection, riding its TCP ACKs).
        #[arg(long, conflicts_with = "splice")]
        meta: bool,
    },
    /// Receive the Primary's writes and write them to FILE.
    Secondary {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_enum)]
        protocol: Protocol,
        /// Move write data with splice(2), never through memory (see splice.rs).
        #[arg(long)]
        splice: bool,
        /// Acknowledge on a second connection (the Primary's `--meta`).
        #[arg(long, conflicts_with = "splice")]
        meta: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Answer when the write is on both files.
    C,
    /// Answer when the write is on the local file and handed to the peer's socket.
    A,
    /// No peer.
    Standalone,
}

/// Peer frame: cookie u64, offset u64, length u32, kind u32, then `length` bytes for a write.
const PEER_HEAD: usize = 24;
const KIND_WRITE: u32 = 0;
const KIND_FLUSH: u32 = 1;
/// Room for the largest request fio sends here (1 MiB) and a burst of them.
const RX_SPACE: usize = 16 << 20;

fn main() -> Result<()> {
    match Args::parse().role {
        Role::Primary {
            file,
            nbd,
            protocol,
            peer,
            bind,
            splice,
            meta,
        } => primary(&file, &nbd, protocol, peer, bind, splice, meta),
        Role::Secondary {
            file,
            listen,
            protocol,
            splice,
            meta,
        } => secondary(&file, listen, protocol, splice, meta),
    }
}

fn open(path: &PathBuf) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}

// ---- Secondary ----

fn secondary(
    path: &PathBuf,
    listen: SocketAddr,
    protocol: Protocol,
    splice: bool,
    meta: bool,
) -> Result<()> {
    let file = open(path)?;
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let (mut sock, _) = listener.accept().context("accepting the Primary")?;
    sock.set_nodelay(true)?;
    if splice {
        return splice::secondary(&file, sock, protocol);
    }
    // The Primary connects its meta socket second; acknowledgements go there.
    let mut meta_sock = match meta {
        true => {
            let (m, _) = listener
                .accept()
                .context("accepting the Primary's meta socket")?;
            m.set_nodelay(true)?;
            Some(m)
        }
        false => None,
    };
    let mut rx = vec![0u8; RX_SPACE];
    let (mut have, mut acks) = (0usize, Vec::with_capacity(64 << 10));
    loop {
        if have == rx.len() {
            rx.resize(rx.len() * 2, 0);
        }
        let n = sock
            .read(&mut rx[have..])
            .context("reading from the Primary")?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let mut at = 0;
        while have - at >= PEER_HEAD {
            let h = &rx[at..at + PEER_HEAD];
            let (cookie, offset, len, kind) = parse_head(h);
            if kind == KIND_FLUSH {
                file.sync_data().context("fdatasync")?;
                acks.extend_from_slice(&cookie.to_be_bytes());
                at += PEER_HEAD;
                continue;
            }
            if have - at < PEER_HEAD + len {
                break;
            }
            let data = &rx[at + PEER_HEAD..at + PEER_HEAD + len];
            file.write_all_at(data, offset).context("pwrite")?;
            if protocol == Protocol::C {
                acks.extend_from_slice(&cookie.to_be_bytes());
            }
            at += PEER_HEAD + len;
        }
        if !acks.is_empty() {
            match meta_sock.as_mut() {
                Some(m) => m.write_all(&acks),
                None => sock.write_all(&acks),
            }
            .context("acknowledging")?;
            acks.clear();
        }
        rx.copy_within(at..have, 0);
        have -= at;
    }
}

// ---- Primary ----

/// Bytes waiting for a non-blocking socket that would not take them all.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    sent: usize,
}

impl Out {
    fn pending(&self) -> bool {
        self.sent < self.buf.len()
    }

    fn flush(&mut self, w: &mut impl Write) -> Result<()> {
        while self.pending() {
            match w.write(&self.buf[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e).context("writing"),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(())
    }
}

fn primary(
    path: &PathBuf,
    nbd: &PathBuf,
    protocol: Protocol,
    peer: Option<SocketAddr>,
    bind: Option<SocketAddr>,
    splice: bool,
    meta: bool,
) -> Result<()> {
    let file = open(path)?;
    let size = file.metadata()?.len();
    let mut peer = match (protocol, peer) {
        (Protocol::Standalone, _) => None,
        (_, None) => bail!("--peer is needed unless --protocol standalone"),
        (_, Some(addr)) => Some(connect(addr, bind, !splice)?),
    };
    let mut meta_sock = match (&peer, meta) {
        (Some(p), true) => {
            // From the data socket's address (any port): the Secondary accepts both there.
            let from = SocketAddr::new(p.local_addr()?.ip(), 0);
            Some(connect(p.peer_addr()?, Some(from), true)?)
        }
        _ => None,
    };
    let _ = std::fs::remove_file(nbd);
    let listener = UnixListener::bind(nbd).with_context(|| format!("binding {}", nbd.display()))?;
    let mut st = State {
        file,
        protocol,
        rx: vec![0u8; RX_SPACE],
        have: 0,
        to_client: Out::default(),
        to_peer: Out::default(),
        peer_rx: vec![0u8; 1 << 20],
        peer_have: 0,
        burst: Vec::with_capacity(1024),
        heads: Vec::with_capacity(64 << 10),
    };
    loop {
        let (mut client, _) = listener.accept().context("accepting an NBD client")?;
        match handshake(&mut client, size) {
            Ok(true) => {}
            Ok(false) => continue,
            // One client's broken handshake is not the end of the export.
            Err(e) => {
                eprintln!("rep-floor: NBD handshake: {e:#}");
                continue;
            }
        }
        if splice {
            splice::serve(&st.file, &mut client, peer.as_mut(), protocol)?;
        } else {
            client.set_nonblocking(true)?;
            st.have = 0;
            st.to_client = Out::default();
            st.serve(&mut client, peer.as_mut(), meta_sock.as_mut())?;
        }
    }
}

fn connect(addr: SocketAddr, bind: Option<SocketAddr>, nonblocking: bool) -> Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    for _ in 0..200 {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if let Some(b) = bind {
            s.bind(&b.into()).with_context(|| format!("binding {b}"))?;
        }
        if s.connect(&addr.into()).is_ok() {
            let s: TcpStream = s.into();
            s.set_nodelay(true)?;
            s.set_nonblocking(nonblocking)?;
            return Ok(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("could not connect to the Secondary at {addr} in 10 s")
}

/// Fixed newstyle, NBD_OPT_GO or NBD_OPT_EXPORT_NAME, any export name, simple replies only.
/// Returns false when the client went away before transmission.
fn handshake(c: &mut UnixStream, size: u64) -> Result<bool> {
    let mut out = Vec::new();
    codec::encode_greeting(&mut out);
    c.write_all(&out)?;
    let mut flags = [0u8; 4];
    c.read_exact(&mut flags)?;
    let no_zeroes = codec::check_client_flags(u32::from_be_bytes(flags))?;
    let tflags = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA;
    loop {
        let mut h = [0u8; OPTION_HEADER_BYTES];
        if c.read_exact(&mut h).is_err() {
            return Ok(false);
        }
        let h = codec::decode_option_header(&h)?;
        let mut payload = vec![0u8; h.len as usize];
        c.read_exact(&mut payload)?;
        out.clear();
        match h.option {
            OPT_EXPORT_NAME => {
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&tflags.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                c.write_all(&out)?;
                return Ok(true);
            }
            OPT_GO | OPT_INFO => {
                let info = codec::info_export(size, tflags);
                codec::encode_option_reply(&mut out, h.option, REP_INFO, &info);
                codec::encode_option_reply(&mut out, h.option, REP_ACK, &[]);
                c.write_all(&out)?;
                if h.option == OPT_GO {
                    return Ok(true);
                }
            }
            OPT_ABORT => {
                codec::encode_option_reply(&mut out, h.option, REP_ACK, &[]);
                let _ = c.write_all(&out);
                return Ok(false);
            }
            other => {
                codec::encode_option_reply(&mut out, other, REP_ERR_UNSUP, &[]);
                c.write_all(&out)?;
            }
        }
    }
}

struct State {
    file: File,
    protocol: Protocol,
    rx: Vec<u8>,
    have: usize,
    to_client: Out,
    to_peer: Out,
    peer_rx: Vec<u8>,
    peer_have: usize,
    /// The requests of one burst and where each one's data starts in `rx`.
    burst: Vec<(codec::RequestHeader, usize)>,
    /// The peer heads of one burst, in order; the writes' data stays in `rx`.
    heads: Vec<u8>,
}

impl State {
    fn serve(
        &mut self,
        client: &mut UnixStream,
        mut peer: Option<&mut TcpStream>,
        mut meta: Option<&mut TcpStream>,
    ) -> Result<()> {
        loop {
            let (client_ready, peer_ready, meta_ready) = wait(
                client,
                self.to_client.pending(),
                peer.as_deref(),
                self.to_peer.pending(),
                meta.as_deref(),
            )?;
            if meta_ready {
                if let Some(m) = meta.as_deref_mut() {
                    self.peer_input(m)?;
                }
            }
            if peer_ready {
                if let Some(p) = peer.as_deref_mut() {
                    if meta.is_none() {
                        self.peer_input(p)?;
                    }
                    self.to_peer.flush(p)?;
                }
            }
            if client_ready {
                if self.have == self.rx.len() {
                    self.rx.resize(self.rx.len() * 2, 0);
                }
                match client.read(&mut self.rx[self.have..]) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        self.have += n;
                        if !self.requests(peer.as_deref_mut())? {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                    Err(e) => return Err(e).context("reading the NBD socket"),
                }
            }
            match self.to_client.flush(client) {
                Err(e) if is_gone(&e) => return Ok(()),
                r => r?,
            }
        }
    }

    /// Acknowledgements from the Secondary: each is a client cookie that may now be answered.
    fn peer_input(&mut self, p: &mut TcpStream) -> Result<()> {
        match p.read(&mut self.peer_rx[self.peer_have..]) {
            Ok(0) => bail!("the Secondary closed the link"),
            Ok(n) => self.peer_have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e).context("reading acknowledgements"),
        }
        let whole = self.peer_have / 8 * 8;
        for ack in self.peer_rx[..whole].chunks_exact(8) {
            codec::encode_simple_reply(&mut self.to_client.buf, 0, be64(ack));
        }
        self.peer_rx.copy_within(whole..self.peer_have, 0);
        self.peer_have -= whole;
        Ok(())
    }

    /// Every whole request in `rx`: the burst's writes go to the peer first (one `writev`), so
    /// that the Secondary's write overlaps the Primary's; then each request is served locally.
    /// Returns false on NBD_CMD_DISC.
    fn requests(&mut self, mut peer: Option<&mut TcpStream>) -> Result<bool> {
        let replicate = peer.is_some();
        let mut at = 0;
        let mut keep_going = true;
        self.burst.clear();
        self.heads.clear();
        while self.have - at >= REQUEST_HEADER_BYTES {
            let mut hb = [0u8; REQUEST_HEADER_BYTES];
            hb.copy_from_slice(&self.rx[at..at + REQUEST_HEADER_BYTES]);
            let h = codec::decode_request(&hb)?;
            let body = if h.kind == CMD_WRITE {
                h.len as usize
            } else {
                0
            };
            if self.have - at < REQUEST_HEADER_BYTES + body {
                break;
            }
            if h.kind == CMD_DISC {
                keep_going = false;
                at += REQUEST_HEADER_BYTES;
                break;
            }
            self.burst.push((h, at + REQUEST_HEADER_BYTES));
            at += REQUEST_HEADER_BYTES + body;
        }
        if let Some(p) = peer.as_mut() {
            self.send(p)?;
        }
        for &(h, data) in &self.burst {
            let len = h.len as usize;
            let out = &mut self.to_client.buf;
            match h.kind {
                CMD_WRITE => {
                    self.file
                        .write_all_at(&self.rx[data..data + len], h.offset)
                        .context("pwrite")?;
                    if !replicate || self.protocol == Protocol::A {
                        codec::encode_simple_reply(out, 0, h.cookie);
                    }
                }
                CMD_READ => {
                    codec::encode_simple_reply(out, 0, h.cookie);
                    let from = out.len();
                    out.resize(from + len, 0);
                    self.file
                        .read_exact_at(&mut out[from..], h.offset)
                        .context("pread")?;
                }
                CMD_FLUSH => {
                    self.file.sync_data().context("fdatasync")?;
                    if !replicate {
                        codec::encode_simple_reply(out, 0, h.cookie);
                    }
                }
                _ => codec::encode_simple_reply(out, 22, h.cookie),
            }
        }
        self.rx.copy_within(at..self.have, 0);
        self.have -= at;
        Ok(keep_going)
    }

    /// The burst's writes and flushes, heads and data, in one `writev` from `rx`; what the socket
    /// does not take is copied behind anything already waiting.
    fn send(&mut self, p: &mut TcpStream) -> Result<()> {
        let mut spans = Vec::with_capacity(self.burst.len());
        for &(h, data) in &self.burst {
            let (kind, len) = match h.kind {
                CMD_WRITE => (KIND_WRITE, h.len),
                CMD_FLUSH => (KIND_FLUSH, 0),
                _ => continue,
            };
            push_head(&mut self.heads, h.cookie, h.offset, len, kind);
            spans.push((data, len as usize));
        }
        if spans.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        if !self.to_peer.pending() {
            let mut iov = Vec::with_capacity(spans.len() * 2);
            for (i, &(at, len)) in spans.iter().enumerate() {
                iov.push(IoSlice::new(
                    &self.heads[i * PEER_HEAD..(i + 1) * PEER_HEAD],
                ));
                iov.push(IoSlice::new(&self.rx[at..at + len]));
            }
            match p.write_vectored(&iov[..iov.len().min(1024)]) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("sending to the Secondary"),
            }
        }
        let mut skip = written;
        for (i, &(at, len)) in spans.iter().enumerate() {
            for piece in [
                &self.heads[i * PEER_HEAD..(i + 1) * PEER_HEAD],
                &self.rx[at..at + len],
            ] {
                if skip >= piece.len() {
                    skip -= piece.len();
                } else {
                    self.to_peer.buf.extend_from_slice(&piece[skip..]);
                    skip = 0;
                }
            }
        }
        self.to_peer.flush(p)
    }
}

/// A peer frame's head: (cookie, offset, length, kind).
fn parse_head(h: &[u8]) -> (u64, u64, usize, u32) {
    (
        be64(h),
        be64(&h[8..]),
        be32(&h[16..]) as usize,
        be32(&h[20..]),
    )
}

/// Sleeps until the client or the peer is readable, or writable where something waits to be
/// written to it, or the meta socket (if any) readable: (client, peer, meta ready). With a meta
/// socket nothing is read from the data socket.
fn wait(
    client: &UnixStream,
    client_out: bool,
    peer: Option<&TcpStream>,
    peer_out: bool,
    meta: Option<&TcpStream>,
) -> Result<(bool, bool, bool)> {
    let interest = |out: bool| {
        if out {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        }
    };
    let mut fds = vec![PollFd::new(client.as_fd(), interest(client_out))];
    if let Some(p) = peer {
        let flags = match (meta.is_some(), peer_out) {
            (true, true) => PollFlags::POLLOUT,
            (true, false) => PollFlags::empty(),
            (false, out) => interest(out),
        };
        fds.push(PollFd::new(p.as_fd(), flags));
    }
    if let Some(m) = meta {
        fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
    }
    poll(&mut fds, PollTimeout::NONE).context("poll")?;
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    let peer_ready = peer.is_some() && fds.get(1).is_some_and(ready);
    let meta_ready = meta.is_some() && fds.last().is_some_and(ready);
    Ok((ready(&fds[0]), peer_ready, meta_ready))
}

fn push_head(heads: &mut Vec<u8>, cookie: u64, offset: u64, len: u32, kind: u32) {
    heads.extend_from_slice(&cookie.to_be_bytes());
    heads.extend_from_slice(&offset.to_be_bytes());
    heads.extend_from_slice(&len.to_be_bytes());
    heads.extend_from_slice(&kind.to_be_bytes());
}

fn is_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    })
}
