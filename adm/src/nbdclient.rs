//! The smallest NBD client that can write data back through a Primary's export (for
//! `repadm split-brain restore`): fixed-newstyle handshake with OPT_GO, simple replies,
//! WRITE, FLUSH, DISC. Writing through the export (not onto the backing device) is what makes
//! the restored blocks replicate to the peer and land in the bitmap like any other write.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
/// Larger option replies are not ours to read (the server's description is short).
const OPT_REPLY_MAX: usize = 64 * 1024;

pub struct NbdClient {
    s: UnixStream,
    pub size: u64,
    cookie: u64,
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl NbdClient {
    pub fn connect(sock: &Path, export: &str) -> anyhow::Result<NbdClient> {
        let mut s = UnixStream::connect(sock)
            .with_context(|| format!("connect to the NBD export {}", sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .context("socket timeout")?;
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).context("NBD greeting")?;
        if &greeting[..8] != b"NBDMAGIC" || &greeting[8..16] != b"IHAVEOPT" {
            bail!("{} is not a fixed-newstyle NBD server", sock.display());
        }
        s.write_all(&1u32.to_be_bytes())?; // NBD_FLAG_C_FIXED_NEWSTYLE
        let name = export.as_bytes();
        let name_len = u32::try_from(name.len()).context("export name too long")?;
        let mut opt = Vec::new();
        opt.extend_from_slice(b"IHAVEOPT");
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&(4 + name_len + 2).to_be_bytes());
        opt.extend_from_slice(&name_len.to_be_bytes());
        opt.extend_from_slice(name);
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt).context("send NBD_OPT_GO")?;
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).context("NBD option reply")?;
            let typ = be32(&h[12..]);
            let len = be32(&h[16..]) as usize;
            if len > OPT_REPLY_MAX {
                bail!("NBD option reply of {len} bytes");
            }
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).context("NBD option reply body")?;
            if typ == REP_INFO && body.len() >= 12 && body[0..2] == [0, 0] {
                size = Some(be64(&body[2..]));
            }
            if typ == REP_ACK {
                break;
            }
            if typ & 0x8000_0000 != 0 {
                bail!(
                    "the export refused us: {}",
                    String::from_utf8_lossy(body.get(4..).unwrap_or_default())
                );
            }
        }
        let size = size.ok_or_else(|| anyhow!("the NBD server did not say the export's size"))?;
        Ok(NbdClient { s, size, cookie: 0 })
    }

    fn request(&mut self, cmd: u16, offset: u64, data: &[u8], len: u32) -> anyhow::Result<()> {
        self.cookie += 1;
        let mut r = Vec::with_capacity(28 + data.len());
        r.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&cmd.to_be_bytes());
        r.extend_from_slice(&self.cookie.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        self.s.write_all(&r).context("send NBD request")?;
        if cmd == CMD_DISC {
            return Ok(());
        }
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).context("NBD reply")?;
        if be32(&h) != SIMPLE_REPLY_MAGIC || be64(&h[8..]) != self.cookie {
            bail!("unexpected NBD reply");
        }
        match be32(&h[4..]) {
            0 => Ok(()),
            err => bail!("NBD error {err} at offset {offset}"),
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        // 1 MiB requests: well inside the export's max_block.
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            let len = u32::try_from(chunk.len()).context("chunk length")?;
            self.request(CMD_WRITE, offset + ((i as u64) << 20), chunk, len)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.request(CMD_FLUSH, 0, &[], 0)
    }

    pub fn disconnect(mut self) -> anyhow::Result<()> {
        self.request(CMD_DISC, 0, &[], 0)
    }
}
