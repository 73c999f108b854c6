//! The server against a raw client over a real Unix socket: handshake, pipelining,
//! out-of-order replies, structured replies, and errors that must not kill the daemon.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rep_nbd::codec::{encode_request, RequestHeader};
use rep_nbd::proto::*;
use rep_nbd::server::{
    serve_unix, BlockBackend, Command, Completion, ExportInfo, Responder, Unavailable,
};

const SIZE: u64 = 1 << 20;

struct Mem {
    data: Rc<RefCell<Vec<u8>>>,
    secondary: bool,
}

/// The test export "r0": SIZE bytes, writable, blocks up to 1 MiB.
fn export_info(description: &str) -> ExportInfo {
    ExportInfo {
        name: "r0".into(),
        description: description.into(),
        size_bytes: SIZE,
        read_only: false,
        can_multi_conn: true,
        min_block: 1,
        preferred_block: 4096,
        max_block: 1 << 20,
    }
}

impl BlockBackend for Mem {
    fn export(&self, name: &str) -> Result<ExportInfo, Unavailable> {
        if self.secondary {
            return Err(Unavailable {
                message: "rep: node is Secondary".into(),
            });
        }
        if !name.is_empty() && name != "r0" {
            return Err(Unavailable {
                message: format!("unknown export {name:?}"),
            });
        }
        Ok(export_info("test"))
    }
    fn submit(&self, cmd: Command, done: Responder) {
        // A backend that loses a request (drops its responder): the client still gets an answer.
        if let Command::Trim { offset: 8192, .. } = cmd {
            drop(done);
            return;
        }
        let data = Rc::clone(&self.data);
        tokio_uring::spawn(async move {
            let c = match cmd {
                // Reads at offset 0 are slow so that later requests overtake them.
                Command::Read { offset, len } => {
                    if offset == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let d = data.borrow();
                    Completion::Data(d[offset as usize..offset as usize + len as usize].to_vec())
                }
                Command::Write {
                    offset, data: buf, ..
                } => {
                    data.borrow_mut()[offset as usize..offset as usize + buf.len()]
                        .copy_from_slice(&buf);
                    Completion::Done
                }
                Command::WriteZeroes { offset, len, .. } => {
                    data.borrow_mut()[offset as usize..(offset + u64::from(len)) as usize].fill(0);
                    Completion::Done
                }
                Command::Trim { offset: 4096, .. } => Completion::Error {
                    errno: EIO,
                    message: "injected".into(),
                },
                _ => Completion::Done,
            };
            done.complete(c);
        });
    }
}

fn start(secondary: bool) -> PathBuf {
    start_with(move || {
        Rc::new(Mem {
            data: Rc::new(RefCell::new(vec![0; SIZE as usize])),
            secondary,
        })
    })
}

/// Serves the backend `make` builds (on the server's thread) on a fresh socket.
fn start_with(make: impl FnOnce() -> Rc<dyn BlockBackend> + Send + 'static) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rep-nbd-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let _ = std::fs::remove_file(&sock);
    let path = sock.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio_uring::start(async move {
            let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
            ready_tx.send(()).unwrap();
            serve_unix(l, make()).await.unwrap();
        })
    });
    ready_rx.recv().unwrap();
    sock
}

struct Client {
    s: UnixStream,
}

impl Client {
    fn connect(sock: &PathBuf) -> Client {
        let mut s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; 18];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(
            u16::from_be_bytes([g[16], g[17]]),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        Client { s }
    }
    fn option(&mut self, opt: u32, payload: &[u8]) {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        self.s.write_all(&v).unwrap();
    }
    /// Reads option replies until a final one; returns (type, payload) of each.
    fn replies(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 20];
            self.s.read_exact(&mut h).unwrap();
            assert_eq!(&h[..8], &OPT_REPLY_MAGIC.to_be_bytes());
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut p = vec![0; len as usize];
            self.s.read_exact(&mut p).unwrap();
            out.push((kind, p));
            if kind != REP_INFO && kind != REP_SERVER && kind != REP_META_CONTEXT {
                return out;
            }
        }
    }
    fn go(&mut self, structured: bool) -> (u64, u16) {
        if structured {
            self.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.replies()[0].0, REP_ACK);
        }
        let mut p = 0u32.to_be_bytes().to_vec();
        p.extend_from_slice(&0u16.to_be_bytes());
        self.option(OPT_GO, &p);
        let r = self.replies();
        assert_eq!(r.last().unwrap().0, REP_ACK, "{r:?}");
        let export = r
            .iter()
            .find(|(k, p)| *k == REP_INFO && p[..2] == [0, 0])
            .expect("INFO_EXPORT");
        let size = u64::from_be_bytes(export.1[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(export.1[10..12].try_into().unwrap());
        assert!(r
            .iter()
            .any(|(k, p)| *k == REP_INFO && p[..2] == INFO_BLOCK_SIZE.to_be_bytes()));
        (size, flags)
    }
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut v = Vec::new();
        encode_request(
            &RequestHeader {
                flags,
                kind,
                cookie,
                offset,
                len,
            },
            &mut v,
        );
        v.extend_from_slice(payload);
        self.s.write_all(&v).unwrap();
    }
    fn simple_reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }
    /// One structured chunk: (flags, type, cookie, payload).
    fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut p = vec![0; len as usize];
        self.s.read_exact(&mut p).unwrap();
        (
            u16::from_be_bytes([h[4], h[5]]),
            u16::from_be_bytes([h[6], h[7]]),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
            p,
        )
    }
}

#[test]
fn go_write_read_structured_and_out_of_order() {
    let sock = start(false);
    let mut c = Client::connect(&sock);
    let (size, flags) = c.go(true);
    assert_eq!(size, SIZE);
    for f in [
        TF_HAS_FLAGS,
        TF_SEND_FLUSH,
        TF_SEND_FUA,
        TF_SEND_TRIM,
        TF_SEND_WRITE_ZEROES,
        TF_CAN_MULTI_CONN,
        TF_SEND_DF,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x} missing from {flags:#x}");
    }
    c.request(CMD_WRITE, CMD_FLAG_FUA, 1, 8192, 4, b"abcd");
    assert_eq!(c.simple_reply(), (0, 1));
    // Pipelined: a slow read at 0, then a fast one at 8192; the fast one must be answered first.
    c.request(CMD_READ, 0, 2, 0, 4, &[]);
    c.request(CMD_READ, 0, 3, 8192, 4, &[]);
    let (fl, ty, cookie, p) = c.chunk();
    assert_eq!(
        (fl, ty, cookie),
        (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 3)
    );
    assert_eq!(&p[..8], &8192u64.to_be_bytes());
    assert_eq!(&p[8..], b"abcd");
    assert_eq!(c.chunk().2, 2);
    // Errors on a read go as an error chunk with a message; on other commands as a simple reply.
    c.request(CMD_READ, 0, 4, SIZE, 1, &[]);
    let (_, ty, cookie, p) = c.chunk();
    assert_eq!((ty, cookie), (REPLY_TYPE_ERROR, 4));
    assert_eq!(u32::from_be_bytes(p[..4].try_into().unwrap()), EINVAL);
    c.request(CMD_TRIM, 0, 5, 4096, 10, &[]);
    assert_eq!(c.simple_reply(), (EIO, 5));
    c.request(CMD_TRIM, 0, 55, 8192, 10, &[]);
    assert_eq!(c.simple_reply(), (EIO, 55), "a dropped request is answered");
    c.request(CMD_WRITE, 0, 6, SIZE - 2, 4, b"wxyz"); // beyond the end: payload drained
    assert_eq!(c.simple_reply(), (ENOSPC, 6));
    c.request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 7, 8192, 2, &[]);
    assert_eq!(c.simple_reply(), (0, 7));
    c.request(CMD_READ, 0, 8, 8192, 4, &[]);
    assert_eq!(&c.chunk().3[8..], b"\0\0cd");
    c.request(CMD_DISC, 0, 9, 0, 0, &[]);
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn simple_replies_bad_magic_and_other_clients_unaffected() {
    let sock = start(false);
    let mut good = Client::connect(&sock);
    good.go(false);
    let mut bad = Client::connect(&sock);
    bad.go(false);
    bad.s.write_all(&[0xde; 28]).unwrap();
    let mut rest = Vec::new();
    bad.s.read_to_end(&mut rest).unwrap(); // the server hung up on the bad client only
    assert!(rest.is_empty());
    good.request(CMD_WRITE, 0, 1, 100, 3, b"xyz");
    assert_eq!(good.simple_reply(), (0, 1));
    good.request(CMD_READ, 0, 2, 100, 3, &[]);
    assert_eq!(good.simple_reply(), (0, 2));
    let mut d = [0u8; 3];
    good.s.read_exact(&mut d).unwrap();
    assert_eq!(&d, b"xyz");
    good.request(99, 0, 3, 0, 0, &[]);
    assert_eq!(good.simple_reply(), (EINVAL, 3));
}

#[test]
fn secondary_refuses_go_with_a_message_and_unknown_options_are_unsup() {
    let sock = start(true);
    let mut c = Client::connect(&sock);
    c.option(42, b"junk");
    let r = c.replies();
    assert_eq!(r[0].0, REP_ERR_UNSUP);
    let mut p = 0u32.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    c.option(OPT_GO, &p);
    let r = c.replies();
    assert_eq!(r.len(), 1, "no INFO before the error");
    assert_eq!(r[0].0, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&r[0].1).contains("Secondary"));
    c.option(OPT_ABORT, &[]);
    assert_eq!(c.replies()[0].0, REP_ACK);
}

#[test]
fn meta_context_and_block_status() {
    let sock = start(false);
    let mut c = Client::connect(&sock);
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.replies()[0].0, REP_ACK);
    let mut p = 0u32.to_be_bytes().to_vec();
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
    p.extend_from_slice(BASE_ALLOCATION.as_bytes());
    c.option(OPT_SET_META_CONTEXT, &p);
    let r = c.replies();
    assert_eq!(r[0].0, REP_META_CONTEXT);
    assert_eq!(&r[0].1[4..], BASE_ALLOCATION.as_bytes());
    let mut g = 0u32.to_be_bytes().to_vec();
    g.extend_from_slice(&0u16.to_be_bytes());
    c.option(OPT_GO, &g);
    assert_eq!(c.replies().last().unwrap().0, REP_ACK);
    c.request(CMD_BLOCK_STATUS, 0, 11, 0, 65536, &[]);
    let (fl, ty, cookie, p) = c.chunk();
    assert_eq!(
        (fl, ty, cookie, p.len()),
        (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 11, 12)
    );
    assert_eq!(u32::from_be_bytes(p[4..8].try_into().unwrap()), 65536);
}

/// A backend that only queues in `submit` and does the work in `run_submitted`, as rep's does
/// (one pass of its engine for the requests one read brought). Counts the passes that found work,
/// and the writes whose payload starts one request header after the previous one's end: lent
/// from the server's read buffer (`Reader::read_bytes`), not copied out of it.
struct Deferring {
    data: RefCell<Vec<u8>>,
    queued: RefCell<Vec<(Command, Responder)>>,
    passes: Arc<AtomicUsize>,
    previous_end: std::cell::Cell<usize>,
    lent: Arc<AtomicUsize>,
}

impl BlockBackend for Deferring {
    fn export(&self, _name: &str) -> Result<ExportInfo, Unavailable> {
        Ok(export_info("deferring"))
    }
    fn submit(&self, cmd: Command, done: Responder) {
        self.queued.borrow_mut().push((cmd, done));
    }
    fn run_submitted(&self) {
        let queued = std::mem::take(&mut *self.queued.borrow_mut());
        if !queued.is_empty() {
            self.passes.fetch_add(1, Ordering::Relaxed);
        }
        for (cmd, done) in queued {
            let mut d = self.data.borrow_mut();
            let c = match cmd {
                Command::Write { offset, data, .. } => {
                    d[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                    let at = data.as_ptr() as usize;
                    if at == self.previous_end.get() + 28 {
                        self.lent.fetch_add(1, Ordering::Relaxed);
                    }
                    self.previous_end.set(at + data.len());
                    Completion::Done
                }
                Command::Read { offset, len } => Completion::Data(
                    d[offset as usize..(offset + u64::from(len)) as usize].to_vec(),
                ),
                _ => Completion::Done,
            };
            done.complete(c);
        }
    }
}

/// A backend that starts requests only in `run_submitted` is called before the server waits for
/// anything: requests pipelined far past the 256 in flight a connection may hold (the reader
/// then waits for replies, which only the backend's pass produces), writes whose payload is
/// not all in the read buffer, and a read-back. Every request is answered, the data is right,
/// and requests that arrived together were started together (fewer passes than requests);
/// most small writes' payloads reach the backend as slices of the read buffer.
#[test]
fn a_deferring_backend_runs_every_request_before_the_server_waits() {
    let passes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&passes);
    let lent = Arc::new(AtomicUsize::new(0));
    let lent_counted = Arc::clone(&lent);
    let sock = start_with(move || {
        Rc::new(Deferring {
            data: RefCell::new(vec![0; SIZE as usize]),
            queued: RefCell::new(Vec::new()),
            passes: counted,
            previous_end: std::cell::Cell::new(0),
            lent: lent_counted,
        })
    });
    let mut c = Client::connect(&sock);
    c.go(false);
    let mut burst = Vec::new();
    // Small writes, so that one read brings more of them than the 256 a connection may hold.
    let small = 1500u64;
    for i in 0..small {
        let payload = vec![(i % 251) as u8; 64];
        encode_request(
            &RequestHeader {
                flags: 0,
                kind: CMD_WRITE,
                cookie: i,
                offset: i * 64,
                len: 64,
            },
            &mut burst,
        );
        burst.extend_from_slice(&payload);
    }
    // A write larger than the server's read buffer (256 KiB): its payload is read past it.
    let big: Vec<u8> = (0..(300u32 << 10)).map(|x| (x % 253) as u8).collect();
    encode_request(
        &RequestHeader {
            flags: 0,
            kind: CMD_WRITE,
            cookie: small,
            offset: 700 << 10,
            len: big.len() as u32,
        },
        &mut burst,
    );
    burst.extend_from_slice(&big);
    let mut writer = c.s.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || writer.write_all(&burst).expect("send the burst"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..=small {
        let (errno, cookie) = c.simple_reply();
        assert_eq!(errno, 0, "request {cookie} failed");
        assert!(seen.insert(cookie), "request {cookie} answered twice");
    }
    sender.join().expect("sender");
    for (i, offset, len) in [(0u64, 0u64, 64u32), (small - 1, (small - 1) * 64, 64)] {
        c.request(CMD_READ, 0, 1000 + i, offset, len, &[]);
        assert_eq!(c.simple_reply(), (0, 1000 + i));
        let mut got = vec![0u8; len as usize];
        c.s.read_exact(&mut got).expect("read data");
        assert!(
            got.iter().all(|&b| b == (i % 251) as u8),
            "write {i} read back wrong"
        );
    }
    c.request(CMD_READ, 0, 2000, 700 << 10, big.len() as u32, &[]);
    assert_eq!(c.simple_reply(), (0, 2000));
    let mut got = vec![0u8; big.len()];
    c.s.read_exact(&mut got).expect("read data");
    assert!(got == big, "the large write read back wrong");
    let passes = passes.load(Ordering::Relaxed);
    assert!(
        passes < small as usize / 2,
        "{passes} passes for {small} pipelined writes: requests that arrive together are not batched"
    );
    let lent = lent.load(Ordering::Relaxed);
    assert!(
        lent > small as usize / 2,
        "{lent} of {small} small writes were lent from the read buffer: payloads are copied"
    );
}
