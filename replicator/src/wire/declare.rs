//! The macros that turn the packet table (`packet.rs`) into the `Packet` enum and its codec.
//! Each packet is declared once, as its fields in wire order with the codec of each
//! (`field.rs`); encode, decode, the split decode of block packets and the proptest strategy
//! all follow from that one line, so they cannot disagree.

/// `packets! { /// doc
///     NAME = code, Variant { field: Codec, ..., #[data] block: Block } => Channel;
///     NAME = code, Variant(binding: Record) => Channel;
///     NAME = code, Variant => Channel; }`
///
/// Generates the command codes (`cmd::NAME`), `COMMANDS`, `Packet` with `channel`, `name`,
/// `command`, `encode`, `decode`, one borrowing encoder per packet (`encode::Variant`),
/// `data_prefix_len`/`MAX_DATA_PREFIX`/`decode_with_data` for packets whose last field is a
/// `#[data]` block, and (in tests) `arb_packet`.
macro_rules! packets {
    ($(
        $(#[doc = $doc:literal])*
        $CMD:ident = $code:literal, $V:ident
        $({ $($f:ident : $F:ty),* $(, #[data] $blk:ident : $B:ty)? $(,)? })?
        $(( $tf:ident : $T:ty ))?
        => $chan:ident;
    )*) => {
        /// Command codes: the frame header's `command`.
        pub mod cmd {
            $(pub const $CMD: u16 = $code;)*
        }

        /// Every command code, in table order.
        pub const COMMANDS: &[u16] = &[$(cmd::$CMD),*];

        fn command_name(c: u16) -> Option<&'static str> {
            match c {
                $(cmd::$CMD => Some(stringify!($CMD)),)*
                _ => None,
            }
        }

        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Packet {
            $(
                $(#[doc = $doc])*
                $V
                $({ $($f: <$F as Field>::Value,)* $($blk: <$B as Field>::Value,)? })?
                $(( <$T as Field>::Value ))?,
            )*
        }

        /// One encoder per packet that borrows its fields: the hot path encodes a `Data`
        /// frame straight from the write's buffer, without building a `Packet`.
        #[allow(non_snake_case)]
        pub mod encode {
            use super::*;
            $(
                pub fn $V(
                    out: &mut Vec<u8>
                    $($(, $f: &<$F as Field>::Ref)* $(, $blk: &<$B as Field>::Ref)?)?
                    $(, $tf: &<$T as Field>::Ref)?
                ) {
                    let start = begin_frame(out, cmd::$CMD);
                    $(
                        $(<$F as Field>::put(out, $f);)*
                        $(<$B as Field>::put(out, $blk);)?
                    )?
                    $(<$T as Field>::put(out, $tf);)?
                    end_frame(out, start);
                }
            )*
        }

        impl Packet {
            pub fn channel(&self) -> Channel {
                match self {
                    $(Packet::$V { .. } => Channel::$chan,)*
                }
            }

            pub fn name(&self) -> &'static str {
                command_name(self.command()).unwrap_or("?")
            }

            pub fn command(&self) -> u16 {
                match self {
                    $(Packet::$V { .. } => cmd::$CMD,)*
                }
            }

            /// Appends header + payload to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $(
                        Packet::$V $({ $($f,)* $($blk,)? })? $(($tf))? => encode::$V(
                            out $($(, $f)* $(, $blk)?)? $(, $tf)?
                        ),
                    )*
                }
            }

            pub fn decode(h: &FrameHeader, payload: &[u8]) -> Result<Packet, WireError> {
                let name = command_name(h.command).ok_or(WireError::UnknownCommand(h.command))?;
                let mut r = Reader::new(payload, name);
                let p = match h.command {
                    $(
                        cmd::$CMD => Packet::$V
                        $({
                            $($f: <$F as Field>::take(&mut r)?,)*
                            $($blk: <$B as Field>::take(&mut r)?,)?
                        })?
                        $((<$T as Field>::take(&mut r)?))?,
                    )*
                    other => return Err(WireError::UnknownCommand(other)),
                };
                r.finish()?;
                Ok(p)
            }
        }

        /// The bytes before the block of a packet that carries one (its `#[data]` field), up
        /// to and including the block's length field; `None` for every other command. The
        /// socket reader takes these first and then reads the block straight into its own
        /// buffer (`decode_with_data`).
        pub const fn data_prefix_len(command: u16) -> Option<usize> {
            match command {
                $(cmd::$CMD => data_prefix!([$($($F),*)?] $($($B)?)?),)*
                _ => None,
            }
        }

        /// The longest `data_prefix_len` (evaluating it checks every prefix at compile time).
        pub const MAX_DATA_PREFIX: usize = {
            let mut m = 0;
            $(
                if let Some(n) = data_prefix_len(cmd::$CMD) {
                    if n > m {
                        m = n;
                    }
                }
            )*
            m
        };

        /// Decodes a block-carrying packet from its prefix (`data_prefix_len(h.command)`
        /// bytes) and the rest of its payload, which becomes the packet's block without a
        /// copy. Accepts and refuses exactly what `Packet::decode` does with `prefix ++ data`
        /// as the payload.
        pub fn decode_with_data(
            h: &FrameHeader,
            prefix: &[u8],
            data: bytes::Bytes,
        ) -> Result<Packet, WireError> {
            let name = command_name(h.command).ok_or(WireError::UnknownCommand(h.command))?;
            if data_prefix_len(h.command) != Some(prefix.len()) {
                let mut payload = prefix.to_vec();
                payload.extend_from_slice(&data);
                return Packet::decode(h, &payload);
            }
            let mut r = Reader::new(prefix, name);
            let p = match h.command {
                $(cmd::$CMD => with_data!(r, data, $V [$($($f: $F),*)?] $($($blk: $B)?)?),)*
                _ => None,
            };
            // Only block commands get here (their prefix length matched).
            p.unwrap_or(Err(WireError::UnknownCommand(h.command)))
        }

        /// Every packet, every field over its valid values.
        #[cfg(test)]
        pub fn arb_packet() -> proptest::strategy::BoxedStrategy<Packet> {
            use proptest::prelude::*;
            proptest::strategy::Union::new(vec![$(
                (
                    Just(()),
                    $($(<$F as Field>::arb(),)* $(<$B as Field>::arb(),)?)?
                    $(<$T as Field>::arb(),)?
                )
                    .prop_map(|((), $($($f,)* $($blk,)?)? $($tf,)?)| {
                        Packet::$V $({ $($f,)* $($blk,)? })? $(($tf))?
                    })
                    .boxed(),
            )*])
            .boxed()
        }
    };
}

macro_rules! data_prefix {
    ([$($F:ty),*]) => {
        None
    };
    ([$($F:ty),*] $B:ty) => {
        // The block's own u32 length ends the prefix.
        Some(0 $(+ fixed(<$F as Field>::FIXED))* + 4)
    };
}

macro_rules! with_data {
    ($r:ident, $data:ident, $V:ident [$($f:ident: $F:ty),*]) => {
        None
    };
    ($r:ident, $data:ident, $V:ident [$($f:ident: $F:ty),*] $blk:ident: $B:ty) => {
        Some((|| -> Result<Packet, WireError> {
            $(let $f = <$F as Field>::take(&mut $r)?;)*
            let $blk = <$B>::adopt(&mut $r, $data)?;
            Ok(Packet::$V { $($f,)* $blk })
        })())
    };
}

/// A struct that travels as one field (`Params`): its fields in wire order, each with its
/// codec.
macro_rules! record {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $S:ident { $($(#[doc = $doc:literal])* $f:ident : $F:ty),* $(,)? }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $S {
            $($(#[doc = $doc])* pub $f: <$F as Field>::Value,)*
        }

        impl Field for $S {
            type Value = $S;
            type Ref = $S;
            const FIXED: Option<usize> = None;
            fn put(out: &mut Vec<u8>, v: &$S) {
                $(<$F as Field>::put(out, &v.$f);)*
            }
            fn take(r: &mut Reader<'_>) -> Result<$S, WireError> {
                Ok($S {
                    $($f: <$F as Field>::take(r)?,)*
                })
            }
            #[cfg(test)]
            fn arb() -> proptest::strategy::BoxedStrategy<$S> {
                use proptest::prelude::*;
                (Just(()), $(<$F as Field>::arb(),)*)
                    .prop_map(|((), $($f,)*)| $S { $($f,)* })
                    .boxed()
            }
        }
    };
}
