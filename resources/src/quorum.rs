//! DRBD 9's quorum options (`options { quorum …; on-no-quorum …; quorum-minimum-redundancy …; }`)
//! as typed values. The keyword table (keywords.rs) checks their syntax, the model
//! (`model::check_reachable_quorum`) that a number of nodes can be reached.

use serde::Serialize;

/// DRBD_PEERS_MAX: the largest number of nodes of one resource, and of a numeric quorum.
pub const MAX_NODES: u64 = 32;

/// `quorum` and `quorum-minimum-redundancy`: off, majority, all, or a number of nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quorum {
    #[default]
    Off,
    Majority,
    All,
    Nodes(u32),
}

impl Quorum {
    pub const NAMES: &'static [&'static str] = &["off", "majority", "all"];

    /// The value as the parser checked it (a name, or digits in range).
    pub fn parse(text: &str) -> Option<Quorum> {
        Some(match text {
            "off" => Quorum::Off,
            "majority" => Quorum::Majority,
            "all" => Quorum::All,
            n => Quorum::Nodes(n.parse().ok()?),
        })
    }

    /// How many votes out of `voters` this setting needs (`None` when off).
    pub fn needed(self, voters: u32) -> Option<u32> {
        match self {
            Quorum::Off => None,
            Quorum::Majority => Some(voters / 2 + 1),
            Quorum::All => Some(voters),
            Quorum::Nodes(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::Off => f.write_str("off"),
            Quorum::Majority => f.write_str("majority"),
            Quorum::All => f.write_str("all"),
            Quorum::Nodes(n) => write!(f, "{n}"),
        }
    }
}

/// `on-no-quorum`: what a Primary does with I/O once it has lost quorum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnNoQuorum {
    /// DRBD 9's default: fail new I/O with EIO.
    #[default]
    IoError,
    /// Freeze I/O until quorum returns or the node is demoted.
    SuspendIo,
}

impl OnNoQuorum {
    pub const NAMES: &'static [&'static str] = &["io-error", "suspend-io"];

    pub fn parse(text: &str) -> Option<OnNoQuorum> {
        match text {
            "io-error" => Some(OnNoQuorum::IoError),
            "suspend-io" => Some(OnNoQuorum::SuspendIo),
            _ => None,
        }
    }
}

impl std::fmt::Display for OnNoQuorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnNoQuorum::IoError => "io-error",
            OnNoQuorum::SuspendIo => "suspend-io",
        })
    }
}

/// The effective quorum options of one resource (`common` merged under the resource's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QuorumConf {
    pub quorum: Quorum,
    pub on_no_quorum: OnNoQuorum,
    pub minimum_redundancy: Quorum,
}

impl QuorumConf {
    /// `quorum majority;` with `on-no-quorum`, no minimum redundancy.
    pub fn majority(on_no_quorum: OnNoQuorum) -> QuorumConf {
        QuorumConf {
            quorum: Quorum::Majority,
            on_no_quorum,
            minimum_redundancy: Quorum::Off,
        }
    }

    /// Whether any option asks for behaviour the engine does not have yet. `on-no-quorum`
    /// alone changes nothing while quorum is off.
    pub fn enabled(&self) -> bool {
        self.quorum != Quorum::Off || self.minimum_redundancy != Quorum::Off
    }
}
