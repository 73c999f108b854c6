//! Pure encoding and decoding of NBD messages: no I/O, so it can be fuzzed and unit-tested.
//! The server reads bytes, hands them here, and writes back what this module produces.

use crate::proto::*;

/// A request header as it came off the wire (28 bytes, compact form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("bad request magic {0:#010x} (expected {REQUEST_MAGIC:#010x}); framing is lost")]
    BadRequestMagic(u32),
    #[error("bad option magic {0:#018x} (expected IHAVEOPT)")]
    BadOptionMagic(u64),
    #[error("{0}")]
    BadOption(&'static str),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

pub fn decode_request(b: &[u8; REQUEST_HEADER_BYTES]) -> Result<RequestHeader, CodecError> {
    let magic = be32(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(CodecError::BadRequestMagic(magic));
    }
    Ok(RequestHeader {
        flags: be16(b, 4),
        kind: be16(b, 6),
        cookie: be64(b, 8),
        offset: be64(b, 16),
        len: be32(b, 24),
    })
}

pub fn encode_request(h: &RequestHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.extend_from_slice(&h.kind.to_be_bytes());
    out.extend_from_slice(&h.cookie.to_be_bytes());
    out.extend_from_slice(&h.offset.to_be_bytes());
    out.extend_from_slice(&h.len.to_be_bytes());
}

/// What the export looks like to request validation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub size: u64,
    pub max_payload: u32,
    pub read_only: bool,
    pub structured: bool,
    pub block_status: bool,
}

/// The outcome of validating one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated {
    Read {
        offset: u64,
        len: u32,
    },
    /// The payload (`len` bytes) still has to be read from the socket.
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
        no_hole: bool,
    },
    Cache {
        offset: u64,
        len: u32,
    },
    BlockStatus {
        offset: u64,
        len: u32,
    },
    Disconnect,
    /// Reply `errno` after skipping `drain` payload bytes (a rejected WRITE still sends its data).
    Reject {
        errno: u32,
        drain: u32,
        why: String,
    },
    /// The request cannot be answered without losing framing: drop the connection.
    Hangup {
        why: String,
    },
}

fn in_range(offset: u64, len: u32, size: u64) -> bool {
    offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= size)
}

/// Validates a header against the export, in nbdkit's order: command, flags, range, size.
pub fn validate(h: &RequestHeader, lim: &Limits) -> Validated {
    let fua = h.flags & CMD_FLAG_FUA != 0;
    let allowed_flags = match h.kind {
        CMD_READ if lim.structured => CMD_FLAG_FUA | CMD_FLAG_DF,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
        _ => CMD_FLAG_FUA,
    };
    let drain = if h.kind == CMD_WRITE { h.len } else { 0 };
    let reject = |errno: u32, why: String| {
        if drain > MAX_WRITE_DRAIN_BYTES {
            Validated::Hangup {
                why: format!("{why}; payload of {drain} bytes is too large to skip"),
            }
        } else {
            Validated::Reject { errno, drain, why }
        }
    };
    if h.kind == CMD_DISC {
        return Validated::Disconnect;
    }
    if !matches!(
        h.kind,
        CMD_READ
            | CMD_WRITE
            | CMD_FLUSH
            | CMD_TRIM
            | CMD_CACHE
            | CMD_WRITE_ZEROES
            | CMD_BLOCK_STATUS
    ) {
        return reject(EINVAL, format!("unknown command {}", h.kind));
    }
    if h.flags & !allowed_flags != 0 {
        return reject(
            EINVAL,
            format!("flags {:#06x} not valid for command {}", h.flags, h.kind),
        );
    }
    if h.kind == CMD_FLUSH {
        if h.offset != 0 || h.len != 0 {
            return reject(EINVAL, "FLUSH with non-zero offset or length".into());
        }
        return Validated::Flush;
    }
    let writes = matches!(h.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && lim.read_only {
        return reject(EPERM, "export is read-only".into());
    }
    if !in_range(h.offset, h.len, lim.size) {
        let errno = if matches!(h.kind, CMD_WRITE | CMD_WRITE_ZEROES) {
            ENOSPC
        } else {
            EINVAL
        };
        return reject(
            errno,
            format!(
                "offset {} + length {} is beyond the end of the export ({} bytes)",
                h.offset, h.len, lim.size
            ),
        );
    }
    if matches!(h.kind, CMD_READ | CMD_WRITE) && h.len > lim.max_payload {
        let errno = if h.kind == CMD_READ && h.flags & CMD_FLAG_DF != 0 {
            EOVERFLOW
        } else {
            EINVAL
        };
        return reject(
            errno,
            format!(
                "length {} exceeds the maximum payload {}",
                h.len, lim.max_payload
            ),
        );
    }
    let (offset, len) = (h.offset, h.len);
    match h.kind {
        CMD_READ => Validated::Read { offset, len },
        CMD_WRITE => Validated::Write { offset, len, fua },
        CMD_TRIM => Validated::Trim { offset, len, fua },
        CMD_WRITE_ZEROES => Validated::WriteZeroes {
            offset,
            len,
            fua,
            no_hole: h.flags & CMD_FLAG_NO_HOLE != 0,
        },
        CMD_CACHE => Validated::Cache { offset, len },
        _ if lim.structured && lim.block_status => Validated::BlockStatus { offset, len },
        _ => reject(
            EINVAL,
            "BLOCK_STATUS needs structured replies and a selected meta context".into(),
        ),
    }
}

pub fn encode_simple_reply(out: &mut Vec<u8>, errno: u32, cookie: u64) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&errno.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

pub fn encode_chunk_header(out: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, len: u32) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

/// Header of a final OFFSET_DATA chunk; the caller appends `data_len` bytes of data.
pub fn encode_read_chunk_header(out: &mut Vec<u8>, cookie: u64, offset: u64, data_len: u32) {
    encode_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        data_len.saturating_add(8),
    );
    out.extend_from_slice(&offset.to_be_bytes());
}

pub fn encode_error_chunk(out: &mut Vec<u8>, cookie: u64, errno: u32, message: &str) {
    let msg = truncate_utf8(message, MAX_STRING_BYTES);
    let msg_len = u16::try_from(msg.len()).unwrap_or(0);
    encode_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + u32::from(msg_len),
    );
    out.extend_from_slice(&errno.to_be_bytes());
    out.extend_from_slice(&msg_len.to_be_bytes());
    out.extend_from_slice(&msg.as_bytes()[..usize::from(msg_len)]);
}

/// One extent covering the whole request, flags 0 ("allocated data"): always a truthful answer.
pub fn encode_block_status(out: &mut Vec<u8>, cookie: u64, len: u32) {
    encode_chunk_header(out, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, 12);
    out.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
    out.extend_from_slice(&len.max(1).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---- handshake ----

pub fn encode_greeting(out: &mut Vec<u8>) {
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
}

/// Client flags we understand; anything else means the client speaks a dialect we do not.
pub fn check_client_flags(flags: u32) -> Result<bool, CodecError> {
    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(CodecError::BadOption("client set unknown handshake flags"));
    }
    Ok(flags & FLAG_C_NO_ZEROES != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

pub fn decode_option_header(b: &[u8; OPTION_HEADER_BYTES]) -> Result<OptionHeader, CodecError> {
    let magic = be64(b, 0);
    if magic != IHAVEOPT {
        return Err(CodecError::BadOptionMagic(magic));
    }
    Ok(OptionHeader {
        option: be32(b, 8),
        len: be32(b, 12),
    })
}

pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply: u32, payload: &[u8]) {
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

fn take_string(p: &[u8], at: &mut usize, len: usize) -> Result<String, CodecError> {
    if len > MAX_STRING_BYTES {
        return Err(CodecError::BadOption("string longer than 4096 bytes"));
    }
    let end = at
        .checked_add(len)
        .filter(|e| *e <= p.len())
        .ok_or(CodecError::BadOption("string runs past the option"))?;
    let s = std::str::from_utf8(&p[*at..end])
        .map_err(|_| CodecError::BadOption("string is not UTF-8"))?;
    *at = end;
    Ok(s.to_owned())
}

fn take_u32(p: &[u8], at: &mut usize) -> Result<u32, CodecError> {
    if p.len() < *at + 4 {
        return Err(CodecError::BadOption("option payload too short"));
    }
    let v = be32(p, *at);
    *at += 4;
    Ok(v)
}

/// NBD_OPT_INFO / NBD_OPT_GO payload: export name and the info types asked for.
pub fn decode_info_request(p: &[u8]) -> Result<(String, Vec<u16>), CodecError> {
    let mut at = 0;
    let name_len = take_u32(p, &mut at)? as usize;
    let name = take_string(p, &mut at, name_len)?;
    if p.len() < at + 2 {
        return Err(CodecError::BadOption(
            "INFO/GO payload lacks the info request count",
        ));
    }
    let n = usize::from(be16(p, at));
    at += 2;
    if p.len() != at + 2 * n {
        return Err(CodecError::BadOption(
            "INFO/GO info request count does not match the payload length",
        ));
    }
    Ok((name, (0..n).map(|i| be16(p, at + 2 * i)).collect()))
}

/// NBD_OPT_LIST/SET_META_CONTEXT payload: export name and the queries.
pub fn decode_meta_context_request(p: &[u8]) -> Result<(String, Vec<String>), CodecError> {
    let mut at = 0;
    let name_len = take_u32(p, &mut at)? as usize;
    let name = take_string(p, &mut at, name_len)?;
    let n = take_u32(p, &mut at)?;
    let mut queries = Vec::new();
    for _ in 0..n {
        let len = take_u32(p, &mut at)? as usize;
        queries.push(take_string(p, &mut at, len)?);
    }
    if at != p.len() {
        return Err(CodecError::BadOption(
            "trailing bytes after the meta context queries",
        ));
    }
    Ok((name, queries))
}

pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = INFO_EXPORT.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend_from_slice(truncate_utf8(s, MAX_STRING_BYTES).as_bytes());
    v
}

pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut v = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for x in [min, preferred, max] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let name = truncate_utf8(name, MAX_STRING_BYTES);
    let mut v = u32::try_from(name.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(truncate_utf8(description, MAX_STRING_BYTES).as_bytes());
    v
}

pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v
}

/// Which queries select `base:allocation`. LIST with no queries lists everything, and
/// the bare namespace `base:` lists (but does not select) its contexts.
pub fn selects_base_allocation(queries: &[String], listing: bool) -> bool {
    (listing && queries.is_empty())
        || queries
            .iter()
            .any(|q| q == BASE_ALLOCATION || (listing && q == "base:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            size: 1 << 20,
            max_payload: 32 << 20,
            read_only: false,
            structured: true,
            block_status: true,
        }
    }
    fn hdr(kind: u16, flags: u16, offset: u64, len: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: 7,
            offset,
            len,
        }
    }

    #[test]
    fn request_roundtrip_and_bad_magic() {
        let h = hdr(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        let mut v = Vec::new();
        encode_request(&h, &mut v);
        let arr: [u8; 28] = v.clone().try_into().unwrap();
        assert_eq!(decode_request(&arr).unwrap(), h);
        v[0] ^= 1;
        let arr: [u8; 28] = v.try_into().unwrap();
        assert!(matches!(
            decode_request(&arr),
            Err(CodecError::BadRequestMagic(_))
        ));
    }

    #[test]
    fn range_errors_follow_nbdkit() {
        let l = lim();
        assert!(matches!(
            validate(&hdr(CMD_READ, 0, 1 << 20, 1), &l),
            Validated::Reject {
                errno: EINVAL,
                drain: 0,
                ..
            }
        ));
        assert!(matches!(
            validate(&hdr(CMD_WRITE, 0, 1 << 20, 9), &l),
            Validated::Reject {
                errno: ENOSPC,
                drain: 9,
                ..
            }
        ));
        assert!(matches!(
            validate(&hdr(CMD_WRITE_ZEROES, 0, 1 << 20, 9), &l),
            Validated::Reject {
                errno: ENOSPC,
                drain: 0,
                ..
            }
        ));
        assert!(matches!(
            validate(&hdr(CMD_TRIM, 0, u64::MAX, 9), &l),
            Validated::Reject { errno: EINVAL, .. }
        ));
        assert_eq!(
            validate(&hdr(CMD_READ, 0, (1 << 20) - 512, 512), &l),
            Validated::Read {
                offset: (1 << 20) - 512,
                len: 512
            }
        );
    }

    #[test]
    fn flags_and_unknown_commands_are_einval() {
        let l = lim();
        assert!(matches!(
            validate(&hdr(99, 0, 0, 0), &l),
            Validated::Reject { errno: EINVAL, .. }
        ));
        assert!(matches!(
            validate(&hdr(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 4), &l),
            Validated::Reject {
                errno: EINVAL,
                drain: 4,
                ..
            }
        ));
        assert!(matches!(
            validate(&hdr(CMD_FLUSH, 0, 1, 0), &l),
            Validated::Reject { errno: EINVAL, .. }
        ));
        assert_eq!(validate(&hdr(CMD_DISC, 0, 0, 0), &l), Validated::Disconnect);
        let simple = Limits {
            structured: false,
            ..l
        };
        assert!(matches!(
            validate(&hdr(CMD_READ, CMD_FLAG_DF, 0, 4), &simple),
            Validated::Reject { errno: EINVAL, .. }
        ));
        assert!(matches!(
            validate(&hdr(CMD_BLOCK_STATUS, 0, 0, 4), &simple),
            Validated::Reject { errno: EINVAL, .. }
        ));
    }

    #[test]
    fn oversized_payloads() {
        let l = Limits {
            size: u64::MAX,
            max_payload: 1 << 20,
            ..lim()
        };
        assert!(matches!(
            validate(&hdr(CMD_WRITE, 0, 0, 2 << 20), &l),
            Validated::Reject {
                errno: EINVAL,
                drain: 0x20_0000,
                ..
            }
        ));
        assert!(matches!(
            validate(&hdr(CMD_WRITE, 0, 0, u32::MAX), &l),
            Validated::Hangup { .. }
        ));
        assert!(matches!(
            validate(&hdr(CMD_READ, CMD_FLAG_DF, 0, 2 << 20), &l),
            Validated::Reject {
                errno: EOVERFLOW,
                ..
            }
        ));
        let ro = Limits {
            read_only: true,
            ..lim()
        };
        assert!(matches!(
            validate(&hdr(CMD_TRIM, 0, 0, 4), &ro),
            Validated::Reject { errno: EPERM, .. }
        ));
    }

    #[test]
    fn info_request_decoding() {
        let mut p = 2u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"r0");
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(&INFO_NAME.to_be_bytes());
        p.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            decode_info_request(&p).unwrap(),
            ("r0".into(), vec![INFO_NAME, INFO_BLOCK_SIZE])
        );
        assert!(decode_info_request(&p[..p.len() - 1]).is_err());
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(b"xx");
        assert!(decode_info_request(&huge).is_err());
    }

    #[test]
    fn meta_context_decoding() {
        let mut p = 0u32.to_be_bytes().to_vec();
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
        p.extend_from_slice(BASE_ALLOCATION.as_bytes());
        let (name, q) = decode_meta_context_request(&p).unwrap();
        assert_eq!(name, "");
        assert!(selects_base_allocation(&q, false));
        assert!(!selects_base_allocation(&["base:".into()], false));
        assert!(selects_base_allocation(&[], true));
        p.push(0);
        assert!(decode_meta_context_request(&p).is_err());
    }

    #[test]
    fn error_chunk_layout() {
        let mut v = Vec::new();
        encode_error_chunk(&mut v, 9, EIO, "disk gone");
        assert_eq!(v.len(), 20 + 6 + 9);
        assert_eq!(be32(&v, 16), 6 + 9);
        assert_eq!(be32(&v, 20), EIO);
    }
}
