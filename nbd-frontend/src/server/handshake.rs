//! Fixed-newstyle option haggling. Ends in transmission (GO / EXPORT_NAME), or in a clean
//! close (ABORT, EOF). Protocol violations drop only this connection.

use std::io;

use super::stream::{Reader, Stream};
use super::{BlockBackend, ExportInfo};
use crate::codec::{self, CodecError};
use crate::proto::*;

/// What transmission needs to know from the handshake.
pub struct Session {
    pub info: ExportInfo,
    pub structured: bool,
    pub block_status: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] CodecError),
    #[error("option {option} has a {len}-byte payload; refusing to read it")]
    AbsurdOption { option: u32, len: u32 },
    #[error("sent NBD_OPT_EXPORT_NAME without starting TLS, which this server requires (nbd-tls require)")]
    TlsRequired,
    #[error("export {name:?} unavailable for EXPORT_NAME: {why}")]
    ExportNameRefused { name: String, why: String },
}

pub fn transmission_flags(info: &ExportInfo, structured: bool) -> u16 {
    let mut f = TF_HAS_FLAGS
        | TF_SEND_FLUSH
        | TF_SEND_FUA
        | TF_SEND_TRIM
        | TF_SEND_WRITE_ZEROES
        | TF_SEND_CACHE;
    if structured {
        f |= TF_SEND_DF;
    }
    if info.can_multi_conn {
        f |= TF_CAN_MULTI_CONN;
    }
    if info.read_only {
        f |= TF_READ_ONLY;
    }
    f
}

async fn send<S: Stream>(stream: &S, out: Vec<u8>) -> io::Result<()> {
    stream.write_vec(out).await.0
}

fn reply(option: u32, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    codec::encode_option_reply(&mut v, option, kind, payload);
    v
}

/// Where TLS stands on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsState {
    /// The server has no TLS (`nbd-tls off`, or a Unix socket).
    Unavailable,
    /// TLS can be started; with `required`, nothing else is served until it is.
    Offered { required: bool },
    /// The options now arrive over TLS.
    Active,
}

/// How the option haggling ended.
pub enum Outcome {
    Session(Session),
    /// The client went away politely.
    Closed,
    /// STARTTLS was acknowledged: the TLS handshake comes next, then the options again.
    StartTls,
}

const TLS_REQUIRED: &[u8] = b"this server requires TLS (nbd-tls require): start TLS with \
NBD_OPT_STARTTLS, e.g. an nbds:// URI with a client certificate";

/// Sends the greeting and reads the client's flags: `Some(no_zeroes)`, or `None` if the client
/// left.
pub async fn greet<S: Stream>(
    stream: &S,
    reader: &mut Reader<S>,
) -> Result<Option<bool>, HandshakeError> {
    let mut greeting = Vec::with_capacity(18);
    codec::encode_greeting(&mut greeting);
    send(stream, greeting).await?;
    let Some(flags) = reader.read_array::<4>().await? else {
        return Ok(None);
    };
    Ok(Some(codec::check_client_flags(u32::from_be_bytes(flags))?))
}

/// The option phase, after the greeting (and again after STARTTLS, with all state negotiated
/// before it forgotten, as the spec demands).
pub async fn haggle<S: Stream>(
    stream: &S,
    reader: &mut Reader<S>,
    backend: &dyn BlockBackend,
    no_zeroes: bool,
    tls: TlsState,
) -> Result<Outcome, HandshakeError> {
    let mut structured = false;
    let mut block_status = false;
    loop {
        let Some(raw) = reader.read_array::<OPTION_HEADER_BYTES>().await? else {
            return Ok(Outcome::Closed);
        };
        let h = codec::decode_option_header(&raw)?;
        if h.len > MAX_OPTION_DRAIN_BYTES {
            return Err(HandshakeError::AbsurdOption {
                option: h.option,
                len: h.len,
            });
        }
        if h.len > MAX_OPTION_BYTES {
            reader.skip(h.len as usize).await?;
            send(
                stream,
                reply(h.option, REP_ERR_TOO_BIG, b"option payload too large"),
            )
            .await?;
            continue;
        }
        let payload = reader.read_vec(h.len as usize).await?;
        if tls == (TlsState::Offered { required: true })
            && !matches!(h.option, OPT_STARTTLS | OPT_ABORT)
        {
            // Nothing about the export (not even its name) before TLS. EXPORT_NAME cannot
            // carry an error: the spec says to close.
            if h.option == OPT_EXPORT_NAME {
                return Err(HandshakeError::TlsRequired);
            }
            send(stream, reply(h.option, REP_ERR_TLS_REQD, TLS_REQUIRED)).await?;
            continue;
        }
        match h.option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&payload).into_owned();
                // EXPORT_NAME has no way to carry an error: the spec says to close.
                let info =
                    backend
                        .export(&name)
                        .map_err(|u| HandshakeError::ExportNameRefused {
                            name: name.clone(),
                            why: u.message,
                        })?;
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&info.size_bytes.to_be_bytes());
                out.extend_from_slice(&transmission_flags(&info, false).to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                send(stream, out).await?;
                return Ok(Outcome::Session(Session {
                    info,
                    structured: false,
                    block_status: false,
                }));
            }
            OPT_ABORT => {
                // The client may already have closed; that is fine.
                let _ = send(stream, reply(h.option, REP_ACK, &[])).await;
                return Ok(Outcome::Closed);
            }
            OPT_LIST => {
                if !payload.is_empty() {
                    send(
                        stream,
                        reply(h.option, REP_ERR_INVALID, b"LIST takes no payload"),
                    )
                    .await?;
                    continue;
                }
                let mut out = Vec::new();
                for (name, description) in backend.list() {
                    codec::encode_option_reply(
                        &mut out,
                        h.option,
                        REP_SERVER,
                        &codec::rep_server(&name, &description),
                    );
                }
                codec::encode_option_reply(&mut out, h.option, REP_ACK, &[]);
                send(stream, out).await?;
            }
            OPT_STRUCTURED_REPLY => {
                if !payload.is_empty() {
                    send(
                        stream,
                        reply(
                            h.option,
                            REP_ERR_INVALID,
                            b"STRUCTURED_REPLY takes no payload",
                        ),
                    )
                    .await?;
                    continue;
                }
                structured = true;
                send(stream, reply(h.option, REP_ACK, &[])).await?;
            }
            OPT_INFO | OPT_GO => {
                let (name, wanted) = match codec::decode_info_request(&payload) {
                    Ok(x) => x,
                    Err(e) => {
                        send(
                            stream,
                            reply(h.option, REP_ERR_INVALID, e.to_string().as_bytes()),
                        )
                        .await?;
                        continue;
                    }
                };
                let info = match backend.export(&name) {
                    Ok(info) => info,
                    Err(u) => {
                        tracing::info!("nbd: refusing export {name:?}: {}", u.message);
                        send(
                            stream,
                            reply(h.option, REP_ERR_UNKNOWN, u.message.as_bytes()),
                        )
                        .await?;
                        continue;
                    }
                };
                let mut out = Vec::new();
                let flags = transmission_flags(&info, structured);
                codec::encode_option_reply(
                    &mut out,
                    h.option,
                    REP_INFO,
                    &codec::info_export(info.size_bytes, flags),
                );
                if wanted.contains(&INFO_NAME) {
                    codec::encode_option_reply(
                        &mut out,
                        h.option,
                        REP_INFO,
                        &codec::info_string(INFO_NAME, &info.name),
                    );
                }
                if wanted.contains(&INFO_DESCRIPTION) {
                    let d = codec::info_string(INFO_DESCRIPTION, &info.description);
                    codec::encode_option_reply(&mut out, h.option, REP_INFO, &d);
                }
                let bs =
                    codec::info_block_size(info.min_block, info.preferred_block, info.max_block);
                codec::encode_option_reply(&mut out, h.option, REP_INFO, &bs);
                codec::encode_option_reply(&mut out, h.option, REP_ACK, &[]);
                send(stream, out).await?;
                if h.option == OPT_GO {
                    return Ok(Outcome::Session(Session {
                        info,
                        structured,
                        block_status,
                    }));
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let setting = h.option == OPT_SET_META_CONTEXT;
                if setting && !structured {
                    let msg = b"SET_META_CONTEXT needs STRUCTURED_REPLY first";
                    send(stream, reply(h.option, REP_ERR_INVALID, msg)).await?;
                    continue;
                }
                let queries = match codec::decode_meta_context_request(&payload) {
                    Ok((_, q)) => q,
                    Err(e) => {
                        send(
                            stream,
                            reply(h.option, REP_ERR_INVALID, e.to_string().as_bytes()),
                        )
                        .await?;
                        continue;
                    }
                };
                let selected = codec::selects_base_allocation(&queries, !setting);
                if setting {
                    block_status = selected;
                }
                let mut out = Vec::new();
                if selected {
                    let id = if setting { BASE_ALLOCATION_ID } else { 0 };
                    let ctx = codec::rep_meta_context(id, BASE_ALLOCATION);
                    codec::encode_option_reply(&mut out, h.option, REP_META_CONTEXT, &ctx);
                }
                codec::encode_option_reply(&mut out, h.option, REP_ACK, &[]);
                send(stream, out).await?;
            }
            OPT_STARTTLS => {
                let refusal: Option<(u32, &[u8])> = match tls {
                    _ if !payload.is_empty() => {
                        Some((REP_ERR_INVALID, b"STARTTLS takes no payload"))
                    }
                    TlsState::Unavailable => Some((
                        REP_ERR_UNSUP,
                        b"TLS is not enabled on this export (nbd-tls off, or a Unix socket)",
                    )),
                    TlsState::Active => Some((REP_ERR_INVALID, b"TLS is already active")),
                    TlsState::Offered { .. } => None,
                };
                match refusal {
                    Some((kind, msg)) => send(stream, reply(h.option, kind, msg)).await?,
                    None => {
                        send(stream, reply(h.option, REP_ACK, &[])).await?;
                        return Ok(Outcome::StartTls);
                    }
                }
            }
            other => {
                let msg = format!("option {other} is not supported by rep");
                send(stream, reply(other, REP_ERR_UNSUP, msg.as_bytes())).await?;
            }
        }
    }
}
