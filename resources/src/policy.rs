//! Typed values of the enumerated `.res` keywords. Each enum is the single list of the values
//! the parser accepts and the engine implements: the keyword tables are built from `NAMES`, so
//! the parser cannot accept a value the engine does not know, nor reject one it implements.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A keyword value that is not one of the enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value '{value}', should be one of {}", expected.join(", "))]
pub struct UnknownValue {
    pub value: String,
    pub expected: &'static [&'static str],
}

macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, as written in a `.res` file.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { value: s.to_owned(), expected: $name::NAMES }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// `net { after-sb-0pri ...; }`: split brain with no Primary (docs/drbd-semantics.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum AfterSb0 {
    #[default]
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    /// What drbdadm turns `discard-node-NAME` into on node NAME.
    DiscardLocal,
    /// ... and on the other node.
    DiscardRemote,
    /// `discard-node-NAME`: the node called NAME loses.
    DiscardNode(String),
}

impl AfterSb0 {
    /// The fixed values; `discard-node-NAME` is accepted besides them ([`Self::NODE_PREFIX`]).
    pub const NAMES: &'static [&'static str] = &[
        "disconnect",
        "discard-younger-primary",
        "discard-older-primary",
        "discard-zero-changes",
        "discard-least-changes",
        "discard-local",
        "discard-remote",
    ];
    pub const NODE_PREFIX: &'static str = "discard-node-";
}

impl FromStr for AfterSb0 {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        Ok(match s {
            "disconnect" => AfterSb0::Disconnect,
            "discard-younger-primary" => AfterSb0::DiscardYoungerPrimary,
            "discard-older-primary" => AfterSb0::DiscardOlderPrimary,
            "discard-zero-changes" => AfterSb0::DiscardZeroChanges,
            "discard-least-changes" => AfterSb0::DiscardLeastChanges,
            "discard-local" => AfterSb0::DiscardLocal,
            "discard-remote" => AfterSb0::DiscardRemote,
            _ => match s.strip_prefix(AfterSb0::NODE_PREFIX) {
                Some(node) if !node.is_empty() => AfterSb0::DiscardNode(node.to_owned()),
                _ => {
                    return Err(UnknownValue {
                        value: s.to_owned(),
                        expected: AfterSb0::NAMES,
                    })
                }
            },
        })
    }
}

impl fmt::Display for AfterSb0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterSb0::Disconnect => "disconnect",
            AfterSb0::DiscardYoungerPrimary => "discard-younger-primary",
            AfterSb0::DiscardOlderPrimary => "discard-older-primary",
            AfterSb0::DiscardZeroChanges => "discard-zero-changes",
            AfterSb0::DiscardLeastChanges => "discard-least-changes",
            AfterSb0::DiscardLocal => "discard-local",
            AfterSb0::DiscardRemote => "discard-remote",
            AfterSb0::DiscardNode(node) => return write!(f, "{}{node}", AfterSb0::NODE_PREFIX),
        })
    }
}

impl Serialize for AfterSb0 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

keyword_enum!(
    /// `net { after-sb-1pri ...; }`: split brain with one Primary (docs/drbd-semantics.md §3.1).
    AfterSb1 {
        Disconnect = "disconnect",
        Consensus = "consensus",
        ViolentlyAs0p = "violently-as0p",
        DiscardSecondary = "discard-secondary",
        CallPriLostAfterSb = "call-pri-lost-after-sb",
    }
);

keyword_enum!(
    /// `net { after-sb-2pri ...; }`: split brain with two Primaries (docs/drbd-semantics.md §3.1).
    AfterSb2 {
        Disconnect = "disconnect",
        ViolentlyAs0p = "violently-as0p",
        CallPriLostAfterSb = "call-pri-lost-after-sb",
    }
);

keyword_enum!(
    /// `net { rr-conflict ...; }`: the handshake makes a Primary SyncTarget (docs/drbd-semantics.md §3.2).
    RrConflict {
        Disconnect = "disconnect",
        /// Run the `pri-lost` handler, then disconnect.
        CallPriLost = "call-pri-lost",
        /// Sync into the Primary anyway.
        Violently = "violently",
    }
);

keyword_enum!(
    /// `disk { fencing ...; }` (DRBD 8.4 puts it in the disk section; docs/drbd-semantics.md §9.1).
    Fencing {
        DontCare = "dont-care",
        ResourceOnly = "resource-only",
        ResourceAndStonith = "resource-and-stonith",
    }
);

// The macro derives no Default (most of its enums have none); DRBD's default is dont-care.
#[allow(clippy::derivable_impls)]
impl Default for Fencing {
    fn default() -> Self {
        Fencing::DontCare
    }
}

keyword_enum!(
    /// `disk { on-io-error ...; }` (docs/drbd-semantics.md §10.1).
    OnIoError {
        /// Keep the disk; the failed block is marked out of sync and the error reaches the client.
        PassOn = "pass_on",
        /// Run the `local-io-error` handler, then detach.
        CallLocalIoError = "call-local-io-error",
        /// Disk → Failed → Diskless; I/O continues through the peer if it is UpToDate.
        Detach = "detach",
    }
);

keyword_enum!(
    /// `options { on-no-data-accessible ...; }`: a Primary without UpToDate data anywhere.
    OnNoDataAccessible {
        IoError = "io-error",
        SuspendIo = "suspend-io",
    }
);

keyword_enum!(
    /// Digests rep implements for `verify-alg`, `csums-alg` and `data-integrity-alg`. DRBD
    /// takes any kernel crypto name; rep refuses the others when the resource is loaded.
    DigestAlg {
        Md5 = "md5",
        Sha1 = "sha1",
        Sha256 = "sha256",
        Crc32c = "crc32c",
    }
);

keyword_enum!(
    /// HMACs rep implements for `cram-hmac-alg` (written as DRBD does: `sha1`, or the kernel
    /// name `hmac(sha1)`, see [`HmacAlg::parse`]).
    HmacAlg {
        Sha1 = "sha1",
        Sha256 = "sha256",
    }
);

impl HmacAlg {
    /// Accepts the names DRBD users write: `sha1`, `SHA-256`, `hmac(sha256)`.
    pub fn parse(s: &str) -> Result<HmacAlg, UnknownValue> {
        let norm = s.to_ascii_lowercase().replace(['-', '_'], "");
        let inner = norm
            .strip_prefix("hmac(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(&norm);
        inner.parse().map_err(|_| UnknownValue {
            value: s.to_owned(),
            expected: HmacAlg::NAMES,
        })
    }
}

impl DigestAlg {
    /// Digest names are case-insensitive, as the kernel's crypto API names are.
    pub fn parse(s: &str) -> Result<DigestAlg, UnknownValue> {
        s.to_ascii_lowercase().parse().map_err(|_| UnknownValue {
            value: s.to_owned(),
            expected: DigestAlg::NAMES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for n in AfterSb0::NAMES {
            assert_eq!(
                n.parse::<AfterSb0>().map(|v| v.to_string()).as_deref(),
                Ok(*n)
            );
        }
        for n in AfterSb1::NAMES {
            assert_eq!(n.parse::<AfterSb1>().map(|v| v.as_str()), Ok(*n));
        }
        for n in AfterSb2::NAMES {
            assert_eq!(n.parse::<AfterSb2>().map(|v| v.as_str()), Ok(*n));
        }
        for n in RrConflict::NAMES {
            assert_eq!(n.parse::<RrConflict>().map(|v| v.as_str()), Ok(*n));
        }
        for n in OnIoError::NAMES {
            assert_eq!(n.parse::<OnIoError>().map(|v| v.as_str()), Ok(*n));
        }
    }

    #[test]
    fn discard_node_carries_the_name() {
        let v: AfterSb0 = "discard-node-node-a".parse().unwrap_or_default();
        assert_eq!(v, AfterSb0::DiscardNode("node-a".into()));
        assert_eq!(v.to_string(), "discard-node-node-a");
        assert!("discard-node-".parse::<AfterSb0>().is_err());
    }

    #[test]
    fn algorithm_names_as_drbd_users_write_them() {
        assert_eq!(HmacAlg::parse("hmac(sha256)"), Ok(HmacAlg::Sha256));
        assert_eq!(HmacAlg::parse("SHA1"), Ok(HmacAlg::Sha1));
        assert_eq!(DigestAlg::parse("CRC32C"), Ok(DigestAlg::Crc32c));
        let e = DigestAlg::parse("whirlpool").unwrap_err();
        assert!(e.to_string().contains("md5, sha1, sha256, crc32c"), "{e}");
    }
}
