//! A deliberately minimal raw NBD client, for sending requests that real clients never send
//! (bad magic, oversized lengths). Fixed newstyle handshake with OPT_GO, simple replies.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_FLAG_FUA: u16 = 1;

pub struct RawClient {
    pub s: UnixStream,
    pub size: u64,
}

fn read_exact(s: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

/// The fixed-newstyle handshake with OPT_GO for export `name` on any stream (Unix or TCP);
/// returns the export size. Errors if the server refuses (e.g. a Secondary: no export).
pub fn negotiate(s: &mut (impl Read + Write), name: &str) -> std::io::Result<u64> {
    let greeting = read_exact(s, 18)?;
    if &greeting[..8] != b"NBDMAGIC" || &greeting[8..16] != b"IHAVEOPT" {
        return Err(std::io::Error::other("not a fixed-newstyle NBD server"));
    }
    s.write_all(&1u32.to_be_bytes())?; // NBD_FLAG_C_FIXED_NEWSTYLE
    let mut opt = Vec::new();
    opt.extend_from_slice(b"IHAVEOPT");
    opt.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
    let payload_len = 4 + name.len() + 2;
    opt.extend_from_slice(&(payload_len as u32).to_be_bytes());
    opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
    opt.extend_from_slice(name.as_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt)?;
    let mut size = 0;
    loop {
        let h = read_exact(s, 20)?;
        let typ = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as usize;
        if len > 64 * 1024 {
            return Err(std::io::Error::other(format!(
                "option reply of {len} bytes"
            )));
        }
        let body = read_exact(s, len)?;
        if typ == 3 && body.len() >= 12 && body[0..2] == [0, 0] {
            size = u64::from_be_bytes(body[2..10].try_into().expect("8 bytes"));
        }
        if typ == 1 {
            return Ok(size);
        }
        if typ & 0x8000_0000 != 0 {
            return Err(std::io::Error::other(format!(
                "server refused GO: {:#x} {}",
                typ,
                String::from_utf8_lossy(&body)
            )));
        }
    }
}

impl RawClient {
    /// Connect and negotiate export `name` with OPT_GO. Errors if the server refuses.
    pub fn connect(sock: &Path, name: &str) -> std::io::Result<RawClient> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let size = negotiate(&mut s, name)?;
        Ok(RawClient { s, size })
    }

    pub fn send_request(
        &mut self,
        magic: u32,
        cmd: u16,
        cookie: u64,
        offset: u64,
        len: u32,
    ) -> std::io::Result<()> {
        let mut r = Vec::with_capacity(28);
        r.extend_from_slice(&magic.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&cmd.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&r)
    }

    /// One well-formed request with `flags` and, for a write, its `data`; waits for the simple
    /// reply and returns its error (0 = success) and, for a successful read, the bytes read.
    pub fn request(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> std::io::Result<(u32, Vec<u8>)> {
        let mut r = Vec::with_capacity(28 + data.len());
        r.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&cmd.to_be_bytes());
        r.extend_from_slice(&0x5eed_u64.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        self.s.write_all(&r)?;
        let (err, _) = self.read_reply()?;
        let body = if cmd == CMD_READ && err == 0 {
            read_exact(&mut self.s, len as usize)?
        } else {
            Vec::new()
        };
        Ok((err, body))
    }

    /// Send one well-formed request without waiting for its reply (pipelining): `data` is a
    /// write's payload (empty for other commands), `len` its length field.
    pub fn send_cmd(
        &mut self,
        cmd: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut r = Vec::with_capacity(28 + data.len());
        r.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&cmd.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        self.s.write_all(&r)
    }

    /// Read one simple reply: (error, cookie).
    pub fn read_reply(&mut self) -> std::io::Result<(u32, u64)> {
        let h = read_exact(&mut self.s, 16)?;
        let magic = u32::from_be_bytes(h[0..4].try_into().expect("4"));
        assert_eq!(magic, SIMPLE_REPLY_MAGIC, "expected a simple reply");
        let err = u32::from_be_bytes(h[4..8].try_into().expect("4"));
        let cookie = u64::from_be_bytes(h[8..16].try_into().expect("8"));
        Ok((err, cookie))
    }

    /// True once the server has closed the connection (read returns EOF or reset); false if
    /// it sends something else or keeps the connection open past the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// A background load of 4 KiB writes at random blocks of an export, as a test's application.
#[derive(Debug, Clone, Copy)]
pub struct WriteLoad {
    /// Requests kept in flight.
    pub depth: u32,
    /// A pause after each reply (an application, not a benchmark); zero for none.
    pub pause: Duration,
    /// Seeds the offsets; with `random_data` also the bytes written (else 0x5a).
    pub seed: u64,
    pub random_data: bool,
    /// The load stops by itself after this long.
    pub limit: Duration,
}

impl WriteLoad {
    /// Run until `stop` (or `limit`) through export `name` at `sock` of `usable` bytes, on a
    /// thread; joined, it gives the number of writes done. Every write must succeed.
    pub fn spawn(
        self,
        sock: &Path,
        name: &str,
        usable: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        let (sock, name) = (sock.to_path_buf(), name.to_string());
        std::thread::spawn(move || {
            let mut c = RawClient::connect(&sock, &name).expect("NBD connect for the load");
            let mut x = self.seed | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let (blocks, started) = (usable / 4096, std::time::Instant::now());
            let (mut inflight, mut done) = (0u32, 0u64);
            let mut buf = vec![0x5au8; 4096];
            let running = |started: std::time::Instant| {
                !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < self.limit
            };
            while running(started) {
                while inflight < self.depth {
                    if self.random_data {
                        for w in buf.chunks_mut(8) {
                            w.copy_from_slice(&next().to_le_bytes());
                        }
                    }
                    let off = (next() % blocks) * 4096;
                    c.send_cmd(CMD_WRITE, 0, done + u64::from(inflight), off, 4096, &buf)
                        .expect("NBD write");
                    inflight += 1;
                }
                let (err, _) = c.read_reply().expect("NBD reply");
                assert_eq!(err, 0, "a load write failed");
                inflight -= 1;
                done += 1;
                if !self.pause.is_zero() {
                    std::thread::sleep(self.pause);
                }
            }
            while inflight > 0 {
                let (err, _) = c.read_reply().expect("NBD reply");
                assert_eq!(err, 0, "a load write failed");
                inflight -= 1;
                done += 1;
            }
            let _ = c.send_cmd(CMD_DISC, 0, 0, 0, 0, &[]);
            done
        })
    }
}
