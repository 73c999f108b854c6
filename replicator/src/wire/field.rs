//! Field codecs: how one value of a packet is written and read. A packet is its fields in
//! declaration order (`packet.rs`), each through the codec named there; nothing else is on
//! the wire. Every integer is big-endian; variable fields are a u32 length and the bytes.

use super::frame::{encode_header, FrameHeader, WireError, HEADER_BYTES};
use super::frame::{MAX_DATA_BYTES, MAX_STRING_BYTES};

/// Reads one payload front to back; every read is bounds-checked against the payload.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    cmd: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8], cmd: &'static str) -> Self {
        Reader { b, at: 0, cmd }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or(WireError::Truncated {
            cmd: self.cmd,
            need: self.at.saturating_add(n),
            have: self.b.len(),
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn invalid(&self, what: String) -> WireError {
        WireError::Invalid {
            cmd: self.cmd,
            what,
        }
    }

    /// A packet is either exactly its fields or an error: no trailing bytes.
    pub fn finish(self) -> Result<(), WireError> {
        if self.at != self.b.len() {
            return Err(WireError::Trailing {
                cmd: self.cmd,
                extra: self.b.len() - self.at,
            });
        }
        Ok(())
    }
}

/// One field's wire codec. `Value` is what the packet holds, `Ref` what encoding borrows (so a
/// block is encoded from a `&[u8]` the caller owns).
pub trait Field {
    type Value;
    type Ref: ?Sized;
    /// The encoded size when it does not depend on the value.
    const FIXED: Option<usize>;
    fn put(out: &mut Vec<u8>, v: &Self::Ref);
    fn take(r: &mut Reader<'_>) -> Result<Self::Value, WireError>;
    /// Every valid value (the packet round-trip proptest draws from it).
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<Self::Value>;
}

macro_rules! int_field {
    ($($name:ident: $t:ty),*) => {$(
        pub struct $name;
        impl Field for $name {
            type Value = $t;
            type Ref = $t;
            const FIXED: Option<usize> = Some(std::mem::size_of::<$t>());
            fn put(out: &mut Vec<u8>, v: &$t) {
                out.extend_from_slice(&v.to_be_bytes());
            }
            fn take(r: &mut Reader<'_>) -> Result<$t, WireError> {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(r.take(std::mem::size_of::<$t>())?);
                Ok(<$t>::from_be_bytes(a))
            }
            #[cfg(test)]
            fn arb() -> proptest::strategy::BoxedStrategy<$t> {
                use proptest::prelude::*;
                any::<$t>().boxed()
            }
        }
    )*};
}
int_field!(U8: u8, U16: u16, U32: u32, U64: u64);

/// One byte, 0 or 1; any other byte is an error.
pub struct Bool;
impl Field for Bool {
    type Value = bool;
    type Ref = bool;
    const FIXED: Option<usize> = Some(1);
    fn put(out: &mut Vec<u8>, v: &bool) {
        out.push(u8::from(*v));
    }
    fn take(r: &mut Reader<'_>) -> Result<bool, WireError> {
        match U8::take(r)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(r.invalid(format!("boolean byte {v}"))),
        }
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<bool> {
        use proptest::prelude::*;
        any::<bool>().boxed()
    }
}

/// A byte count of a block (`len` of a request): at most `MAX_DATA_BYTES`.
pub struct Len;
impl Field for Len {
    type Value = u32;
    type Ref = u32;
    const FIXED: Option<usize> = Some(4);
    fn put(out: &mut Vec<u8>, v: &u32) {
        U32::put(out, v);
    }
    fn take(r: &mut Reader<'_>) -> Result<u32, WireError> {
        let n = U32::take(r)?;
        if n as usize > MAX_DATA_BYTES {
            return Err(r.invalid(format!("length {n} exceeds {MAX_DATA_BYTES}")));
        }
        Ok(n)
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<u32> {
        use proptest::prelude::*;
        (0..=MAX_DATA_BYTES as u32).boxed()
    }
}

/// u32 length + bytes, at most `MAX` of them.
pub struct Bytes<const MAX: usize>;
impl<const MAX: usize> Field for Bytes<MAX> {
    type Value = Vec<u8>;
    type Ref = [u8];
    const FIXED: Option<usize> = None;
    /// Callers keep strings ≤ MAX_STRING_BYTES and data ≤ MAX_DATA_BYTES.
    fn put(out: &mut Vec<u8>, v: &[u8]) {
        U32::put(out, &u32::try_from(v.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(v);
    }
    fn take(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
        let n = Self::length(r)?;
        Ok(r.take(n)?.to_vec())
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<Vec<u8>> {
        use proptest::prelude::*;
        // Short values, and now and then one at the limit.
        prop_oneof![
            9 => proptest::collection::vec(any::<u8>(), 0..=MAX.min(40)),
            1 => any::<u8>().prop_map(|b| vec![b; MAX]),
        ]
        .boxed()
    }
}

impl<const MAX: usize> Bytes<MAX> {
    fn length(r: &mut Reader<'_>) -> Result<usize, WireError> {
        let n = U32::take(r)? as usize;
        if n > MAX {
            return Err(r.invalid(format!("field of {n} bytes exceeds {MAX}")));
        }
        Ok(n)
    }

    /// The length field that ends a block packet's prefix, checked against the `have` bytes
    /// of block the socket reader already took, which become the field without a copy.
    /// Refuses what `take` would refuse on the joined payload, with the same errors.
    fn adopt_length(r: &mut Reader<'_>, have: usize) -> Result<(), WireError> {
        let n = Self::length(r)?;
        if n > have {
            return Err(WireError::Truncated {
                cmd: r.cmd,
                need: r.at + n,
                have: r.at + have,
            });
        }
        if n < have {
            return Err(WireError::Trailing {
                cmd: r.cmd,
                extra: have - n,
            });
        }
        Ok(())
    }
}

/// The block of a packet that carries one (`#[data]` in the table): on the wire a `Block`,
/// held as shared bytes, so that the socket reader can hand over a slice of its read buffer
/// (`decode_with_data`) and the disk write take it as it is.
pub struct Payload;
impl Field for Payload {
    type Value = bytes::Bytes;
    type Ref = [u8];
    const FIXED: Option<usize> = None;
    fn put(out: &mut Vec<u8>, v: &[u8]) {
        Block::put(out, v);
    }
    fn take(r: &mut Reader<'_>) -> Result<bytes::Bytes, WireError> {
        Block::take(r).map(bytes::Bytes::from)
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<bytes::Bytes> {
        use proptest::prelude::*;
        Block::arb().prop_map(bytes::Bytes::from).boxed()
    }
}

impl Payload {
    /// The block's length field, the last of the prefix, checked against `data`, which then
    /// becomes the field as it is.
    pub fn adopt(r: &mut Reader<'_>, data: bytes::Bytes) -> Result<bytes::Bytes, WireError> {
        Block::adopt_length(r, data.len())?;
        Ok(data)
    }
}

/// A block of data (a bitmap slice); `#[data]` blocks are `Payload`s.
pub type Block = Bytes<MAX_DATA_BYTES>;
/// One HMAC or nonce.
pub type Digest = Bytes<64>;
/// Per-4 KiB digests of one request (≤ 256 blocks of ≤ 64-byte digests).
pub type Digests = Bytes<{ 256 * 64 }>;

/// UTF-8, at most `MAX_STRING_BYTES` (node and algorithm names).
pub struct Str;
impl Field for Str {
    type Value = String;
    type Ref = str;
    const FIXED: Option<usize> = None;
    fn put(out: &mut Vec<u8>, v: &str) {
        Bytes::<MAX_STRING_BYTES>::put(out, v.as_bytes());
    }
    fn take(r: &mut Reader<'_>) -> Result<String, WireError> {
        let v = Bytes::<MAX_STRING_BYTES>::take(r)?;
        String::from_utf8(v).map_err(|_| r.invalid("string is not UTF-8".into()))
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<String> {
        use proptest::prelude::*;
        prop_oneof![
            9 => proptest::collection::vec(any::<char>(), 0..=16)
                .prop_map(|c| c.into_iter().collect::<String>()),
            1 => Just("x".repeat(MAX_STRING_BYTES)),
        ]
        .boxed()
    }
}

/// `N` u64s in a row.
pub struct U64s<const N: usize>;
impl<const N: usize> Field for U64s<N> {
    type Value = [u64; N];
    type Ref = [u64; N];
    const FIXED: Option<usize> = Some(8 * N);
    fn put(out: &mut Vec<u8>, v: &[u64; N]) {
        for x in v {
            U64::put(out, x);
        }
    }
    fn take(r: &mut Reader<'_>) -> Result<[u64; N], WireError> {
        let mut a = [0u64; N];
        for x in &mut a {
            *x = U64::take(r)?;
        }
        Ok(a)
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<[u64; N]> {
        use proptest::prelude::*;
        proptest::array::uniform(any::<u64>()).boxed()
    }
}

/// A field the packet keeps behind a `Box`: for a large record sent once per connection
/// (`Params`, six strings), so that `Packet`, and every engine `Input` and `Output` that carries
/// one, stays the size of the packets that travel per write (they are moved through the
/// driver's queues several times per write; 152 bytes each with `Params` inline).
pub struct Boxed<F>(std::marker::PhantomData<F>);
impl<F: Field> Field for Boxed<F>
where
    F::Value: std::fmt::Debug + 'static, // proptest's strategies need both
{
    type Value = Box<F::Value>;
    type Ref = F::Ref;
    const FIXED: Option<usize> = F::FIXED;
    fn put(out: &mut Vec<u8>, v: &F::Ref) {
        F::put(out, v);
    }
    fn take(r: &mut Reader<'_>) -> Result<Box<F::Value>, WireError> {
        F::take(r).map(Box::new)
    }
    #[cfg(test)]
    fn arb() -> proptest::strategy::BoxedStrategy<Box<F::Value>> {
        use proptest::prelude::*;
        F::arb().prop_map(Box::new).boxed()
    }
}

/// Writes a header with `command` and a zero length; `end_frame` fills the length in.
pub fn begin_frame(out: &mut Vec<u8>, command: u16) -> usize {
    let start = out.len();
    encode_header(
        out,
        FrameHeader {
            command,
            flags: 0,
            len: 0,
        },
    );
    start
}

pub fn end_frame(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start - HEADER_BYTES).unwrap_or(u32::MAX);
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
}

/// Panics (at compile time, where `data_prefix_len` is evaluated in a const) when a field
/// before a block has no fixed size.
pub const fn fixed(n: Option<usize>) -> usize {
    match n {
        Some(n) => n,
        None => panic!("a field before a #[data] block must have a fixed size"),
    }
}
