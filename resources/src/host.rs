//! A host of a resource (an `on` or `floating` section) with its volumes, and an address as
//! written: what the model (model.rs) builds and the connections (topology.rs) join.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::error::ParseError;
use crate::tree::{words_text, Stmt, Word};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MetaDisk {
    Internal,
    /// `meta-disk PATH;` (flexible) or `meta-disk PATH [IDX];` (128 MiB slot IDX).
    External {
        path: std::path::PathBuf,
        index: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub number: u32,
    pub device: String,
    pub minor: u32,
    /// The backing device; `None` for `disk none;`, a diskless node (DRBD 9's witness).
    pub disk: Option<String>,
    /// `None` on a diskless volume: it has no metadata (a `meta-disk` there is ignored, as
    /// drbdadm 9 ignores it).
    pub meta_disk: Option<MetaDisk>,
}

impl Volume {
    pub fn diskless(&self) -> bool {
        self.disk.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Names of an `on` section; empty for `floating`.
    pub names: Vec<String>,
    pub floating: bool,
    /// DRBD 9's `node-id N;` (0..31), `None` where not written.
    pub node_id: Option<u32>,
    pub address: Option<SocketAddr>,
    pub nbd_listen: Option<SocketAddr>,
    /// rep extension: serve Prometheus metrics at `http://ADDR:PORT/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// rep extension: `busy-poll USEC;`, the I/O thread's busy-poll window (0: off).
    pub busy_poll_us: Option<u32>,
    pub volumes: Vec<Volume>,
    /// rep extensions: TLS and socket groups (docs/security.md).
    pub security: crate::security::HostSecurity,
}

impl Host {
    /// Every volume is `disk none;`: the node holds no data (a witness).
    pub fn diskless(&self) -> bool {
        !self.volumes.is_empty() && self.volumes.iter().all(Volume::diskless)
    }

    /// The name connections use for it (the first of `on NAME...`, the address of `floating`).
    pub fn label(&self) -> String {
        match (self.names.first(), self.address) {
            (Some(n), _) => n.clone(),
            (None, Some(a)) => a.to_string(),
            (None, None) => "floating".into(),
        }
    }
}

/// `[ipv4|ipv6|ssocks|sdp|sci] ADDR:PORT`, the address a literal IP (no host names, as drbdadm).
pub(crate) fn address(f: &Stmt, vals: &[Word]) -> Result<SocketAddr, ParseError> {
    let (family, rest) = match vals.first().map(|w| w.text.as_str()) {
        // `sci` is DRBD 8.3's name of `ssocks`.
        Some(af @ ("ipv4" | "ipv6" | "ssocks" | "sdp" | "sci")) => (Some(af), &vals[1..]),
        _ => (None, vals),
    };
    let Some(first) = rest.first() else {
        return Err(f.err("address needs IP:PORT, e.g. address 10.0.0.1:7789;"));
    };
    if family == Some("ipv4") && first.text == "[" {
        return Err(f.err_at(
            first,
            "'ipv4' with an IPv6 address; write `address ipv6 [ADDR]:PORT;`",
        ));
    }
    let text = words_text(rest);
    if let Ok(sa) = text.parse::<SocketAddr>() {
        if family == Some("ipv6") && sa.is_ipv4() {
            return Err(f.err_at(first, format!("'ipv6' with an IPv4 address '{text}'")));
        }
        return Ok(sa);
    }
    let host = text.rsplit_once(':').map_or(text.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        return Err(f.err_at(first, format!("'{text}' is not an IP address with a port; host names are not allowed, write address IP:PORT;")));
    }
    if !text.contains("]:")
        && (text.matches(':').count() == 0 || (text.contains('[') && !text.contains("]:")))
    {
        return Err(f.err_at(
            first,
            format!("':' expected: address '{text}' has no port; write {text}:7789"),
        ));
    }
    Err(f.err_at(first, format!("'{text}' is not a valid IP:PORT address")))
}
