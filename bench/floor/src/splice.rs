//! The floor with `--splice`: write data never enters either daemon's memory. The Primary
//! splices each write's data from the NBD socket into a pipe, `tee`s it into a second pipe,
//! splices one to the peer's socket and the other into its file; the Secondary splices from
//! its socket through a pipe into its file. Each daemon then copies a write's bytes once (into
//! the page cache) where the read/write floor copies them two or three times (socket to
//! buffer, buffer to page cache, buffer to socket). One request at a time, blocking sockets:
//! a floor for large writes (s8), not for 4 KiB ones, whose headers here cost a system call
//! each.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, splice, tee, FcntlArg, SpliceFFlags};
use rep_nbd::codec;
use rep_nbd::proto::*;

use crate::{be64, parse_head, push_head, wait, Protocol, KIND_FLUSH, KIND_WRITE, PEER_HEAD};

/// The most a pipe holds here (the default /proc/sys/fs/pipe-max-size): one 1 MiB write.
const PIPE_BYTES: usize = 1 << 20;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> Result<Pipe> {
        let (r, w) = nix::unistd::pipe().context("pipe")?;
        fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32))
            .context("F_SETPIPE_SZ (raise /proc/sys/fs/pipe-max-size to 1 MiB)")?;
        Ok(Pipe { r, w })
    }
}

/// Moves what has arrived of at most `len` bytes from `from` into the pipe (at least one byte).
/// A pipe holds a number of buffers, not of bytes, and a socket's buffers can be small: asking
/// for a whole 1 MiB before draining any of it would wait forever on a full pipe.
fn fill(from: impl AsFd, pipe: &Pipe, len: usize) -> Result<usize> {
    let n = splice(&from, None, &pipe.w, None, len, SpliceFFlags::SPLICE_F_MOVE)
        .context("splice from a socket")?;
    if n == 0 {
        bail!("the sender closed its socket in the middle of a write");
    }
    Ok(n)
}

/// Moves exactly `len` bytes out of the pipe into `to` (at `offset` for a file).
fn drain(pipe: &Pipe, to: impl AsFd, mut offset: Option<i64>, len: usize) -> Result<()> {
    let mut left = len;
    while left > 0 {
        let n = splice(
            &pipe.r,
            None,
            &to,
            offset.as_mut(),
            left,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE,
        )
        .context("splice out of a pipe")?;
        left -= n;
    }
    Ok(())
}

pub fn secondary(file: &File, mut sock: TcpStream, protocol: Protocol) -> Result<()> {
    let pipe = Pipe::new()?;
    let mut head = [0u8; PEER_HEAD];
    loop {
        match sock.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("reading from the Primary"),
        }
        let (cookie, offset, len, kind) = parse_head(&head);
        if kind == KIND_FLUSH {
            file.sync_data().context("fdatasync")?;
        } else {
            let mut done = 0;
            while done < len {
                let n = fill(&sock, &pipe, len - done)?;
                drain(&pipe, file, Some((offset + done as u64) as i64), n)?;
                done += n;
            }
            if protocol != Protocol::C {
                continue;
            }
        }
        sock.write_all(&cookie.to_be_bytes())
            .context("acknowledging")?;
    }
}

pub fn serve(
    file: &File,
    client: &mut UnixStream,
    mut peer: Option<&mut TcpStream>,
    protocol: Protocol,
) -> Result<()> {
    let (a, b) = (Pipe::new()?, Pipe::new()?);
    let mut replies = Vec::new();
    let mut acks = [0u8; 64 << 10];
    let mut ack_have = 0;
    loop {
        let (client_ready, peer_ready, _) = wait(client, false, peer.as_deref(), false, None)?;
        if let (true, Some(p)) = (peer_ready, peer.as_deref_mut()) {
            let n = p
                .read(&mut acks[ack_have..])
                .context("reading acknowledgements")?;
            if n == 0 {
                bail!("the Secondary closed the link");
            }
            ack_have += n;
            let whole = ack_have / 8 * 8;
            for ack in acks[..whole].chunks_exact(8) {
                codec::encode_simple_reply(&mut replies, 0, be64(ack));
            }
            acks.copy_within(whole..ack_have, 0);
            ack_have -= whole;
        }
        if client_ready
            && !request(
                file,
                client,
                peer.as_deref_mut(),
                protocol,
                &a,
                &b,
                &mut replies,
            )?
        {
            return Ok(());
        }
        if !replies.is_empty() {
            match client.write_all(&replies) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                r => r.context("answering the client")?,
            }
            replies.clear();
        }
    }
}

/// A peer frame's head, alone (its data follows by splice).
fn send_head(p: &mut TcpStream, cookie: u64, offset: u64, len: u32, kind: u32) -> Result<()> {
    let mut head = Vec::with_capacity(PEER_HEAD);
    push_head(&mut head, cookie, offset, len, kind);
    p.write_all(&head).context("sending to the Secondary")
}

/// One NBD request, read exactly (its data stays in the kernel). False at the end.
fn request(
    file: &File,
    client: &mut UnixStream,
    peer: Option<&mut TcpStream>,
    protocol: Protocol,
    a: &Pipe,
    b: &Pipe,
    replies: &mut Vec<u8>,
) -> Result<bool> {
    let mut hb = [0u8; REQUEST_HEADER_BYTES];
    match client.read_exact(&mut hb) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e).context("reading the NBD socket"),
    }
    let h = codec::decode_request(&hb)?;
    let len = h.len as usize;
    let answer_now = peer.is_none() || protocol == Protocol::A;
    match h.kind {
        CMD_WRITE => {
            if let Some(p) = peer {
                send_head(p, h.cookie, h.offset, h.len, KIND_WRITE)?;
                let mut done = 0;
                while done < len {
                    let n = fill(&*client, a, len - done)?;
                    let at = h.offset + done as u64;
                    done += n;
                    let mut teed = 0;
                    while teed < n {
                        teed += tee(&a.r, &b.w, n - teed, SpliceFFlags::empty()).context("tee")?;
                    }
                    drain(a, &*p, None, n)?;
                    drain(b, file, Some(at as i64), n)?;
                }
            } else {
                let mut done = 0;
                while done < len {
                    let n = fill(&*client, a, len - done)?;
                    drain(a, file, Some((h.offset + done as u64) as i64), n)?;
                    done += n;
                }
            }
            if answer_now {
                codec::encode_simple_reply(replies, 0, h.cookie);
            }
        }
        CMD_READ => {
            codec::encode_simple_reply(replies, 0, h.cookie);
            let from = replies.len();
            replies.resize(from + len, 0);
            file.read_exact_at(&mut replies[from..], h.offset)
                .context("pread")?;
        }
        CMD_FLUSH => {
            file.sync_data().context("fdatasync")?;
            if let Some(p) = peer {
                send_head(p, h.cookie, 0, 0, KIND_FLUSH)?;
            } else {
                codec::encode_simple_reply(replies, 0, h.cookie);
            }
        }
        CMD_DISC => return Ok(false),
        _ => codec::encode_simple_reply(replies, 22, h.cookie),
    }
    Ok(true)
}
