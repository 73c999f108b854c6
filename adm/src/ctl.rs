//! Blocking client of a daemon's control socket (`$RUN/RES.ctl`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rep_replicator::control::{encode_line, Query, Request, Response, Status};

/// How long a single control command may take before repadm gives up (a resync-free
/// state change takes milliseconds; `down` waits for in-flight I/O).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Paths {
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn ctl(&self, res: &str) -> PathBuf {
        self.run_dir.join(format!("{res}.ctl"))
    }
    pub fn pid(&self, res: &str) -> PathBuf {
        self.run_dir.join(format!("{res}.pid"))
    }
    pub fn log(&self, res: &str) -> PathBuf {
        self.run_dir.join(format!("{res}.log"))
    }
}

/// Whether a daemon answers on this control socket.
pub fn is_up(ctl: &Path) -> bool {
    UnixStream::connect(ctl).is_ok()
}

pub struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(ctl: &Path, res: &str) -> anyhow::Result<Conn> {
        let stream = UnixStream::connect(ctl).map_err(|e| {
            anyhow!(NotUp {
                message: format!(
                    "resource {res} is not up on this node (no daemon at {}: {e}); run `repadm up {res}`",
                    ctl.display()
                )
            })
        })?;
        stream
            .set_read_timeout(Some(CONTROL_TIMEOUT))
            .context("socket timeout")?;
        let reader = BufReader::new(stream.try_clone().context("clone control socket")?);
        Ok(Conn { stream, reader })
    }

    pub fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        let mut line = encode_line(req).context("encode control request")?;
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .context("write control request")
    }

    pub fn read_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("read control socket")?;
        Ok((n > 0).then_some(line))
    }

    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        self.send(req)?;
        let line = self
            .read_line()?
            .ok_or_else(|| anyhow!("daemon closed the control socket without answering"))?;
        serde_json::from_str(&line).with_context(|| format!("bad answer from daemon: {line:?}"))
    }

    pub fn status(&mut self) -> anyhow::Result<Status> {
        match self.call(&Request::Query(rep_replicator::control::Query::Status))? {
            Response::Ok { status, .. }
            | Response::Refused { status, .. }
            | Response::Adjusted { status, .. }
            | Response::SplitBrain { status, .. }
            | Response::VerifyReport { status, .. } => Ok(*status),
            Response::Error { message, .. } => Err(anyhow!(message)),
            Response::Data { .. } => bail!("the daemon answered `status` with data"),
        }
    }

    /// `len` bytes (at most `READ_DATA_BYTES_MAX`) of the daemon's data area at `offset`: the
    /// `data` line, then the bytes raw on the same socket.
    pub fn read_data(&mut self, offset: u64, len: u32) -> anyhow::Result<Vec<u8>> {
        match self.call(&Request::Query(Query::ReadData { offset, len }))? {
            Response::Data { offset: o, len: l } if (o, l) == (offset, len) => {
                let mut buf = vec![0u8; len as usize];
                self.reader
                    .read_exact(&mut buf)
                    .with_context(|| format!("read {len} bytes of data at {offset}"))?;
                Ok(buf)
            }
            // An older repd cannot decode the request at all.
            Response::Error { message, .. }
                if message.starts_with("bad control request") && message.contains("read-data") =>
            {
                bail!("the daemon does not know `read-data` (repd older than this repadm)")
            }
            Response::Error { message, .. } => Err(anyhow!(message)),
            other => bail!("unexpected answer to read-data {offset}+{len}: {other:?}"),
        }
    }
}

/// The resource has no running daemon (distinguished so callers can pick exit codes).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NotUp {
    pub message: String,
}
