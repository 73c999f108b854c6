//! What each section accepts: keyword, value type, unit and range (docs/drbd-semantics.md §11.1,
//! drbd_limits.h of DRBD 8.4). Ranges are checked at parse time, as drbdadm does.

/// How a bare number is scaled, and what the suffixes k/M/G mean for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count (suffixes multiply by 1024^n).
    One,
    /// KiB (resync rates): bare = KiB, `M` = 1024 KiB.
    Kib,
    /// Bytes (socket buffers): `K` = 1024.
    Bytes,
    /// 512-byte sectors (sizes): bare = sectors, `k` = 2 sectors.
    Sectors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int {
        unit: Unit,
        min: u64,
        max: u64,
    },
    Enum(&'static [&'static str]),
    /// One of the names, or a number in `min..=max` (DRBD 9's `quorum majority|3`).
    EnumOrInt {
        names: &'static [&'static str],
        min: u64,
        max: u64,
    },
    /// `keyword;` (= yes) or `keyword yes|no;`.
    Bool,
    Str,
}

use Kind::*;
use Unit::*;

pub struct Keyword {
    pub name: &'static str,
    pub kind: Kind,
}

const fn k(name: &'static str, kind: Kind) -> Keyword {
    Keyword { name, kind }
}

use crate::policy::{
    AfterSb0, AfterSb1, AfterSb2, Fencing, OnIoError, OnNoDataAccessible, RrConflict,
};

/// Values of an enum keyword that carry a name after a fixed prefix (`discard-node-NODENAME`).
const PREFIXED_VALUES: &[(&str, &str)] = &[("after-sb-0pri", AfterSb0::NODE_PREFIX)];

/// Whether `value` is a prefixed value `keyword` accepts (see `PREFIXED_VALUES`).
pub fn takes_prefixed_value(keyword: &str, value: &str) -> bool {
    PREFIXED_VALUES.iter().any(|&(k, prefix)| {
        k == keyword
            && value
                .strip_prefix(prefix)
                .is_some_and(|name| !name.is_empty())
    })
}

pub const NET: &[Keyword] = &[
    k("protocol", Enum(&["A", "B", "C"])),
    k(
        "timeout",
        Int {
            unit: One,
            min: 1,
            max: 600,
        },
    ),
    k(
        "connect-int",
        Int {
            unit: One,
            min: 1,
            max: 120,
        },
    ),
    k(
        "ping-int",
        Int {
            unit: One,
            min: 1,
            max: 120,
        },
    ),
    k(
        "ping-timeout",
        Int {
            unit: One,
            min: 1,
            max: 300,
        },
    ),
    k(
        "socket-check-timeout",
        Int {
            unit: One,
            min: 0,
            max: 300,
        },
    ),
    k(
        "ko-count",
        Int {
            unit: One,
            min: 0,
            max: 200,
        },
    ),
    k(
        "max-epoch-size",
        Int {
            unit: One,
            min: 1,
            max: 20000,
        },
    ),
    k(
        "max-buffers",
        Int {
            unit: One,
            min: 32,
            max: 131072,
        },
    ),
    k(
        "unplug-watermark",
        Int {
            unit: One,
            min: 1,
            max: 131072,
        },
    ),
    k(
        "sndbuf-size",
        Int {
            unit: Bytes,
            min: 0,
            max: 10 << 20,
        },
    ),
    k(
        "rcvbuf-size",
        Int {
            unit: Bytes,
            min: 0,
            max: 10 << 20,
        },
    ),
    k("cram-hmac-alg", Str),
    k("shared-secret", Str),
    // rep extensions (docs/security.md): TLS on the peer link.
    k("tls", Bool),
    k("tls-certificate", Str),
    k("tls-privkey", Str),
    k("tls-ca", Str),
    k("after-sb-0pri", Enum(AfterSb0::NAMES)),
    k("after-sb-1pri", Enum(AfterSb1::NAMES)),
    k("after-sb-2pri", Enum(AfterSb2::NAMES)),
    k("rr-conflict", Enum(RrConflict::NAMES)),
    k("always-asbp", Bool),
    k("allow-two-primaries", Bool),
    k("data-integrity-alg", Str),
    k("verify-alg", Str),
    k("csums-alg", Str),
    k("csums-after-crash-only", Bool),
    k("use-rle", Bool),
    k("tcp-cork", Bool),
    k(
        "on-congestion",
        Enum(&["block", "pull-ahead", "disconnect"]),
    ),
    k(
        "congestion-fill",
        Int {
            unit: Sectors,
            min: 0,
            max: 20 << 20,
        },
    ),
    k(
        "congestion-extents",
        Int {
            unit: One,
            min: 67,
            max: 65534,
        },
    ),
];

pub const DISK: &[Keyword] = &[
    k("on-io-error", Enum(OnIoError::NAMES)),
    k("fencing", Enum(Fencing::NAMES)),
    k(
        "size",
        Int {
            unit: Sectors,
            min: 0,
            max: 1 << 41,
        },
    ),
    k("disk-barrier", Bool),
    k("disk-flushes", Bool),
    k("disk-drain", Bool),
    k("md-flushes", Bool),
    // DRBD 8.3's bio-merge hint; drbdadm 8.4 still reads it. Nothing in rep to tune.
    k("use-bmbv", Bool),
    k(
        "max-bio-bvecs",
        Int {
            unit: One,
            min: 0,
            max: 128,
        },
    ),
    k(
        "al-extents",
        Int {
            unit: One,
            min: 67,
            max: 65534,
        },
    ),
    k("al-updates", Bool),
    k(
        "resync-rate",
        Int {
            unit: Kib,
            min: 1,
            max: 4194304,
        },
    ),
    k("resync-after", Str),
    k(
        "c-plan-ahead",
        Int {
            unit: One,
            min: 0,
            max: 300,
        },
    ),
    k(
        "c-fill-target",
        Int {
            unit: Sectors,
            min: 0,
            max: 1048576,
        },
    ),
    k(
        "c-delay-target",
        Int {
            unit: One,
            min: 1,
            max: 100,
        },
    ),
    k(
        "c-max-rate",
        Int {
            unit: Kib,
            min: 250,
            max: 4194304,
        },
    ),
    k(
        "c-min-rate",
        Int {
            unit: Kib,
            min: 0,
            max: 4194304,
        },
    ),
    k(
        "disk-timeout",
        Int {
            unit: One,
            min: 0,
            max: 6000,
        },
    ),
    k(
        "read-balancing",
        Enum(&[
            "prefer-local",
            "prefer-remote",
            "round-robin",
            "least-pending",
            "when-congested-remote",
            "32K-striping",
            "64K-striping",
            "128K-striping",
            "256K-striping",
            "512K-striping",
            "1M-striping",
        ]),
    ),
    k("discard-zeroes-if-aligned", Bool),
    k(
        "rs-discard-granularity",
        Int {
            unit: Bytes,
            min: 0,
            max: 1 << 20,
        },
    ),
    k("disable-write-same", Bool),
];

pub const STARTUP: &[Keyword] = &[
    k(
        "wfc-timeout",
        Int {
            unit: One,
            min: 0,
            max: 300000,
        },
    ),
    k(
        "degr-wfc-timeout",
        Int {
            unit: One,
            min: 0,
            max: 300000,
        },
    ),
    k(
        "outdated-wfc-timeout",
        Int {
            unit: One,
            min: 0,
            max: 300000,
        },
    ),
    k("wait-after-sb", Bool),
    k("become-primary-on", Str),
    k("stacked-timeouts", Bool),
];

pub const OPTIONS: &[Keyword] = &[
    k("cpu-mask", Str),
    k("on-no-data-accessible", Enum(OnNoDataAccessible::NAMES)),
    // DRBD 9 quorum (docs/quorum.md): parsed and validated, not enforced yet.
    k(
        "quorum",
        EnumOrInt {
            names: crate::quorum::Quorum::NAMES,
            min: 1,
            max: crate::quorum::MAX_NODES,
        },
    ),
    k("on-no-quorum", Enum(crate::quorum::OnNoQuorum::NAMES)),
    k(
        "quorum-minimum-redundancy",
        EnumOrInt {
            names: crate::quorum::Quorum::NAMES,
            min: 1,
            max: crate::quorum::MAX_NODES,
        },
    ),
];

pub const HANDLERS: &[Keyword] = &[
    k("pri-on-incon-degr", Str),
    k("pri-lost-after-sb", Str),
    k("pri-lost", Str),
    k("fence-peer", Str),
    k("unfence-peer", Str),
    k("local-io-error", Str),
    k("initial-split-brain", Str),
    k("split-brain", Str),
    k("before-resync-target", Str),
    k("after-resync-target", Str),
    k("before-resync-source", Str),
    k("out-of-sync", Str),
    // DRBD 9: run on a Primary that loses quorum (docs/quorum.md).
    k("quorum-lost", Str),
];

pub const GLOBAL: &[Keyword] = &[
    k("usage-count", Enum(&["yes", "no", "ask"])),
    k(
        "minor-count",
        Int {
            unit: One,
            min: 1,
            max: 255,
        },
    ),
    k(
        "dialog-refresh",
        Int {
            unit: One,
            min: 0,
            max: 1 << 30,
        },
    ),
    k("disable-ip-verification", Bool),
    k("udev-always-use-vnr", Bool),
    k(
        "cmd-timeout-short",
        Int {
            unit: One,
            min: 0,
            max: 1 << 30,
        },
    ),
    k(
        "cmd-timeout-medium",
        Int {
            unit: One,
            min: 0,
            max: 1 << 30,
        },
    ),
    k(
        "cmd-timeout-long",
        Int {
            unit: One,
            min: 0,
            max: 1 << 30,
        },
    ),
];

/// DRBD 8.3's `syncer` section: where each keyword lives in 8.4 (drbdadm maps them too).
pub const SYNCER: &[(&str, &str, &str)] = &[
    ("rate", "disk", "resync-rate"),
    ("after", "disk", "resync-after"),
    ("al-extents", "disk", "al-extents"),
    ("c-plan-ahead", "disk", "c-plan-ahead"),
    ("c-fill-target", "disk", "c-fill-target"),
    ("c-delay-target", "disk", "c-delay-target"),
    ("c-max-rate", "disk", "c-max-rate"),
    ("c-min-rate", "disk", "c-min-rate"),
    ("verify-alg", "net", "verify-alg"),
    ("csums-alg", "net", "csums-alg"),
    ("use-rle", "net", "use-rle"),
    ("cpu-mask", "options", "cpu-mask"),
    ("on-no-data-accessible", "options", "on-no-data-accessible"),
];

/// DRBD 8.3 names drbdadm 8.4 reads inside an 8.4 section, as (section, old, new).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("handlers", "outdate-peer", "fence-peer"),
    ("disk", "rate", "resync-rate"),
    ("disk", "after", "resync-after"),
];

/// DRBD 8.3's negative switches, as (section, switch, flag): `no-disk-flushes;` is
/// `disk-flushes no;`. Only the bare form exists (`no-disk-flushes yes;` is an error).
pub const NO_FLAGS: &[(&str, &str, &str)] = &[
    ("disk", "no-disk-barrier", "disk-barrier"),
    ("disk", "no-disk-flushes", "disk-flushes"),
    ("disk", "no-disk-drain", "disk-drain"),
    ("disk", "no-md-flushes", "md-flushes"),
    ("net", "no-tcp-cork", "tcp-cork"),
];

/// Resync-controller options of DRBD 8.3.x that 8.4 dropped. drbdadm 8.4 reads them with a
/// value in every option section (not in `syncer`, not in `global`) and ignores them.
pub const DEPRECATED: &[&str] = &[
    "delay-probe-volume",
    "delay-probe-interval",
    "throttle-threshold",
    "hold-off-threshold",
];

/// The 8.4 name of `name` written in `section` (an 8.3 alias renamed, anything else as is).
pub fn canonical<'a>(section: &str, name: &'a str) -> &'a str {
    ALIASES
        .iter()
        .find(|(s, old, _)| *s == section && *old == name)
        .map_or(name, |(_, _, new)| new)
}

/// The flag an 8.3 `no-X` switch of `section` turns off.
pub fn no_flag(section: &str, name: &str) -> Option<&'static str> {
    NO_FLAGS
        .iter()
        .find(|(s, sw, _)| *s == section && *sw == name)
        .map(|(_, _, flag)| *flag)
}

/// Every fixed word drbdadm 8.4's scanner turns into a keyword token (drbdadm_scanner.fl).
/// Where drbdadm wants a plain string (the name after `skip`), these are errors.
const SCANNER_WORDS: &[&str] = &[
    "on",
    "ignore-on",
    "stacked-on-top-of",
    "floating",
    "no",
    "net",
    "yes",
    "ask",
    "skip",
    "disk",
    "proxy",
    "minor",
    "inside",
    "volume",
    "cmd-timeout-short",
    "cmd-timeout-medium",
    "cmd-timeout-long",
    "syncer",
    "device",
    "global",
    "common",
    "options",
    "outside",
    "address",
    "alternate-link-address",
    "startup",
    "include",
    "handlers",
    "minor-count",
    "disable-ip-verification",
    "udev-always-use-vnr",
    "dialog-refresh",
    "resource",
    "meta-disk",
    "flexible-meta-disk",
    "usage-count",
    "_this_host",
    "_remote_host",
    "sci",
    "ssocks",
    "sdp",
    "ipv4",
    "ipv6",
    "discard-my-data",
    "memlimit",
    "read-loops",
    "compression",
    "bwlimit",
    "plugin",
];

/// Whether drbdadm 8.4 lexes `word` (written bare) as a plain string: `[a-zA-Z0-9/._-]{1,128}`
/// that is no keyword, number (`[0-9]{1,8}[MKGs]?`) or IPv4 address.
pub fn is_plain_string(word: &str) -> bool {
    let charset = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    let digits = word.trim_end_matches(['M', 'K', 'G', 's']);
    let number = !digits.is_empty()
        && digits.len() <= 8
        && word.len() - digits.len() <= 1
        && digits.chars().all(|c| c.is_ascii_digit());
    let groups: Vec<&str> = word.split('.').collect();
    let ipv4 = groups.len() == 4
        && groups
            .iter()
            .all(|g| (1..=3).contains(&g.len()) && g.chars().all(|c| c.is_ascii_digit()));
    let keyword = SCANNER_WORDS.contains(&word)
        || DEPRECATED.contains(&word)
        || NO_FLAGS.iter().any(|(_, sw, _)| *sw == word)
        || ALIASES.iter().any(|(_, old, _)| *old == word)
        || ["net", "disk", "startup", "options", "handlers", "global"]
            .iter()
            .filter_map(|s| table(s))
            .flatten()
            .any(|k| k.name == word);
    charset && !word.is_empty() && word.len() <= 128 && !number && !ipv4 && !keyword
}

/// Keywords only rep understands; `dump` leaves them out so drbdadm can read the result.
pub const REP_ONLY: &[&str] = &[
    "nbd-listen",
    "metrics-listen",
    "busy-poll",
    "nbd-tls",
    "nbd-tls-certificate",
    "nbd-tls-privkey",
    "nbd-tls-ca",
    "nbd-socket-group",
    "control-socket-group",
    "tls",
    "tls-certificate",
    "tls-privkey",
    "tls-ca",
];

pub fn table(section: &str) -> Option<&'static [Keyword]> {
    Some(match section {
        "net" => NET,
        "disk" => DISK,
        "startup" => STARTUP,
        "options" => OPTIONS,
        "handlers" => HANDLERS,
        "global" => GLOBAL,
        _ => return None,
    })
}

pub fn lookup(section: &str, name: &str) -> Option<&'static Keyword> {
    table(section)?.iter().find(|k| k.name == name)
}

/// Parses `10`, `512k`, `4g`, `20M`… into the option's unit. `Err` names what is wrong.
pub fn parse_number(text: &str, unit: Unit) -> Result<u64, String> {
    let (digits, suffix) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    };
    if digits.is_empty() {
        return Err(format!("'{text}' is not a valid number"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let shift = |bits: u32| {
        n.checked_mul(1u64 << bits)
            .ok_or_else(|| format!("'{text}' is too large"))
    };
    match (unit, suffix) {
        (_, "") => Ok(n),
        (Unit::Sectors, "s") => Ok(n),
        (Unit::Sectors, "k" | "K") => shift(1),
        (Unit::Sectors, "m" | "M") => shift(11),
        (Unit::Sectors, "g" | "G") => shift(21),
        (Unit::Sectors, "t" | "T") => shift(31),
        (Unit::Kib, "k" | "K") => Ok(n),
        (Unit::Kib, "m" | "M") => shift(10),
        (Unit::Kib, "g" | "G") => shift(20),
        (Unit::Bytes | Unit::One, "k" | "K") => shift(10),
        (Unit::Bytes | Unit::One, "m" | "M") => shift(20),
        (Unit::Bytes | Unit::One, "g" | "G") => shift(30),
        _ => Err(format!(
            "'{text}' is not a valid number (allowed suffixes: k, M, G{})",
            if unit == Unit::Sectors { ", s" } else { "" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_drbd() {
        assert_eq!(parse_number("10G", Unit::Kib), Ok(10 << 20));
        assert_eq!(parse_number("20M", Unit::Bytes), Ok(20 << 20));
        assert_eq!(parse_number("10G", Unit::Sectors), Ok(10 << 21));
        assert_eq!(parse_number("250", Unit::Kib), Ok(250));
        assert!(parse_number("10X", Unit::One).is_err());
        assert!(parse_number("-1", Unit::One).is_err());
        assert!(parse_number("forever", Unit::One).is_err());
    }
}
