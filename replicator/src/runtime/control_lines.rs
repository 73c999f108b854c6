//! Reading the control socket's request lines (one JSON request per line), for the data node's
//! control server and the witness's alike: a bad line gets an error answer and the connection
//! goes on; a line longer than `CONTROL_LINE_BYTES_MAX` ends it.

use tokio_uring::net::UnixStream;

use crate::control::{decode_request_line, encode_line, Request, Response, CONTROL_LINE_BYTES_MAX};

/// The bytes a client sent that do not make a whole line yet.
#[derive(Default)]
pub(crate) struct RequestLines {
    pending: Vec<u8>,
}

impl RequestLines {
    /// The next request; `None` when the client closed the connection, or after answering a
    /// line too long to be a request (the connection then ends). A line that is not a request
    /// is answered with the error (exit code 20) here, and reading goes on.
    pub(crate) async fn next(&mut self, stream: &UnixStream) -> std::io::Result<Option<Request>> {
        loop {
            while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                match decode_request_line(&line[..line.len() - 1]) {
                    Ok(None) => continue,
                    Ok(Some(req)) => return Ok(Some(req)),
                    Err(message) => refuse(stream, message).await?,
                }
            }
            if self.pending.len() > CONTROL_LINE_BYTES_MAX {
                let message = format!("control line longer than {CONTROL_LINE_BYTES_MAX} bytes");
                refuse(stream, message).await?;
                return Ok(None);
            }
            let (res, buf) = stream.read(vec![0u8; 4096]).await;
            let n = res?;
            if n == 0 {
                return Ok(None);
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// The answer to a line that is not a request: the error, with `EXIT_UNSUPPORTED`.
async fn refuse(stream: &UnixStream, message: String) -> std::io::Result<()> {
    send(
        stream,
        &Response::Error {
            message,
            exit_code: crate::core::refusal::EXIT_UNSUPPORTED,
        },
    )
    .await
}

/// One answer (or event) line.
pub(crate) async fn send<T: serde::Serialize>(stream: &UnixStream, msg: &T) -> std::io::Result<()> {
    let mut line = encode_line(msg).map_err(std::io::Error::other)?;
    line.push('\n');
    let (res, _) = stream.write_all(line.into_bytes()).await;
    res
}
