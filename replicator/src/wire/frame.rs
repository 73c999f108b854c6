//! Frame header `{magic u32, command u16, flags u16, length u32}` and the named limits.

/// "REP1": changes when the framing changes incompatibly.
pub const MAGIC: u32 = 0x5245_5031;
pub const HEADER_BYTES: usize = 12;
/// Largest data block in one packet (DRBD's max BIO size) plus room for the fixed fields.
pub const MAX_DATA_BYTES: usize = 1 << 20;
pub const MAX_PAYLOAD_BYTES: usize = MAX_DATA_BYTES + 64;
/// Strings on the wire (node names, algorithm names) are short.
pub const MAX_STRING_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad frame magic {0:#010x}; the peer is not a rep daemon speaking this protocol")]
    BadMagic(u32),
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")]
    TooLong(u32),
    #[error("unknown packet command {0}")]
    UnknownCommand(u16),
    #[error("packet {cmd} truncated: needs {need} bytes, has {have}")]
    Truncated {
        cmd: &'static str,
        need: usize,
        have: usize,
    },
    #[error("packet {cmd} has {extra} trailing bytes")]
    Trailing { cmd: &'static str, extra: usize },
    #[error("packet {cmd}: {what}")]
    Invalid { cmd: &'static str, what: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub command: u16,
    pub flags: u16,
    pub len: u32,
}

pub fn decode_header(b: &[u8; HEADER_BYTES]) -> Result<FrameHeader, WireError> {
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let h = FrameHeader {
        command: u16::from_be_bytes([b[4], b[5]]),
        flags: u16::from_be_bytes([b[6], b[7]]),
        len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    };
    if h.len as usize > MAX_PAYLOAD_BYTES {
        return Err(WireError::TooLong(h.len));
    }
    Ok(h)
}

pub fn encode_header(out: &mut Vec<u8>, h: FrameHeader) {
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&h.command.to_be_bytes());
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.extend_from_slice(&h.len.to_be_bytes());
}
