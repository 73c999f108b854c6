//! One node's effective view of one resource: `common` merged under the resource's sections,
//! DRBD's defaults filled in, values converted to the units the daemon uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::host::{Host, MetaDisk};
use crate::keywords::{parse_number, Unit};
use crate::model::{Model, Opt, Resource};
use crate::policy::{
    AfterSb0, AfterSb1, AfterSb2, DigestAlg, Fencing, HmacAlg, OnIoError, OnNoDataAccessible,
    RrConflict,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    A,
    B,
    #[default]
    C,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetConf {
    pub protocol: Protocol,
    pub timeout_ds: u32,
    pub connect_int_s: u32,
    pub ping_int_s: u32,
    pub ping_timeout_ds: u32,
    pub ko_count: u32,
    pub max_buffers: u32,
    pub max_epoch_size: u32,
    pub sndbuf_size: u64,
    pub rcvbuf_size: u64,
    pub shared_secret: Option<String>,
    pub cram_hmac_alg: Option<HmacAlg>,
    pub verify_alg: Option<DigestAlg>,
    pub csums_alg: Option<DigestAlg>,
    pub after_sb_0pri: AfterSb0,
    pub after_sb_1pri: AfterSb1,
    pub after_sb_2pri: AfterSb2,
    pub rr_conflict: RrConflict,
    pub allow_two_primaries: bool,
    pub always_asbp: bool,
    pub data_integrity_alg: Option<DigestAlg>,
    pub use_rle: bool,
}

impl Default for NetConf {
    fn default() -> Self {
        NetConf {
            protocol: Protocol::C,
            timeout_ds: 60,
            connect_int_s: 10,
            ping_int_s: 10,
            ping_timeout_ds: 5,
            ko_count: 7,
            max_buffers: 2048,
            max_epoch_size: 2048,
            sndbuf_size: 0,
            rcvbuf_size: 0,
            shared_secret: None,
            cram_hmac_alg: None,
            verify_alg: None,
            csums_alg: None,
            after_sb_0pri: AfterSb0::Disconnect,
            after_sb_1pri: AfterSb1::Disconnect,
            after_sb_2pri: AfterSb2::Disconnect,
            rr_conflict: RrConflict::Disconnect,
            allow_two_primaries: false,
            always_asbp: false,
            data_integrity_alg: None,
            use_rle: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskConf {
    pub fencing: Fencing,
    pub on_io_error: OnIoError,
    /// `size` limit in bytes (`None` = use the whole device).
    pub size_bytes: Option<u64>,
    pub al_extents: u32,
    pub resync_rate_kib: u64,
    pub resync_after: Option<String>,
    pub c_plan_ahead_ds: u32,
    pub c_fill_target_sectors: u64,
    pub c_delay_target_ds: u32,
    pub c_max_rate_kib: u64,
    pub c_min_rate_kib: u64,
    pub disk_barrier: bool,
    pub disk_flushes: bool,
    pub md_flushes: bool,
}

impl Default for DiskConf {
    fn default() -> Self {
        DiskConf {
            fencing: Fencing::DontCare,
            on_io_error: OnIoError::Detach,
            size_bytes: None,
            al_extents: 1237,
            resync_rate_kib: 250,
            resync_after: None,
            c_plan_ahead_ds: 20,
            c_fill_target_sectors: 100,
            c_delay_target_ds: 10,
            c_max_rate_kib: 102400,
            c_min_rate_kib: 250,
            disk_barrier: false,
            disk_flushes: true,
            md_flushes: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StartupConf {
    pub wfc_timeout_s: u32,
    pub degr_wfc_timeout_s: u32,
    pub outdated_wfc_timeout_s: u32,
    pub wait_after_sb: bool,
    pub become_primary_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionsConf {
    pub cpu_mask: Option<String>,
    pub on_no_data_accessible: OnNoDataAccessible,
}

impl Default for OptionsConf {
    fn default() -> Self {
        OptionsConf {
            cpu_mask: None,
            on_no_data_accessible: OnNoDataAccessible::IoError,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub resource: String,
    pub node: String,
    pub peer_node: Option<String>,
    pub minor: u32,
    pub device: String,
    pub disk: PathBuf,
    pub meta_disk: MetaDisk,
    pub address: Option<SocketAddr>,
    pub peer_address: Option<SocketAddr>,
    /// rep extension (`nbd-listen IP:PORT;` in the host section): also export over TCP.
    pub nbd_listen: Option<SocketAddr>,
    /// rep extension (`metrics-listen IP:PORT;` in the host section): Prometheus `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// rep extension (`busy-poll USEC;` in the host section): the I/O thread polls this long
    /// after each input instead of sleeping (0: off).
    pub busy_poll_us: u32,
    pub net: NetConf,
    pub disk_conf: DiskConf,
    pub startup: StartupConf,
    pub options: OptionsConf,
    pub handlers: BTreeMap<String, String>,
    pub volume: u32,
    /// rep extensions: TLS and socket groups (docs/security.md).
    #[serde(default)]
    pub security: crate::security::SecurityConf,
    /// DRBD 9's `node-id`, where written.
    pub node_id: Option<u32>,
    /// `disk none;`: this node holds no data (a witness); `disk`/`meta_disk` are then unused.
    pub diskless: bool,
    /// Every host this node connects to (one for a two-host resource; `peer_node` and
    /// `peer_address` are the first of them). Not serialized: `adjust` compares serialized
    /// views, and for two hosts this repeats `peer_node`/`peer_address`, whose changes it
    /// already classifies.
    #[serde(skip)]
    pub peers: Vec<PeerView>,
    /// How many hosts the resource has (voters, for quorum). Serialized only above two, so
    /// that `adjust` refuses (as a field it does not know) a config that grew a third host,
    /// and classifies a lost peer as before.
    #[serde(skip_serializing_if = "at_most_two")]
    pub hosts: u32,
    pub quorum: crate::quorum::QuorumConf,
}

fn at_most_two(n: &u32) -> bool {
    *n <= 2
}

/// One connection of this node, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    pub node: String,
    pub node_id: Option<u32>,
    /// Where the peer is reached on this connection.
    pub address: Option<SocketAddr>,
    /// This node's own end of this connection.
    pub my_address: Option<SocketAddr>,
    pub diskless: bool,
}

impl NodeView {
    /// Why rep cannot run this resource, if it cannot: it runs two data nodes (a disk each),
    /// optionally with one diskless witness (docs/quorum.md). `repadm up` refuses anything
    /// else instead of running it as something it is not.
    pub fn not_runnable(&self) -> Option<String> {
        let res = &self.resource;
        let shape = "rep runs two hosts with a disk each, plus at most one diskless witness (`disk none;`, docs/quorum.md)";
        let data_peers = self.peers.iter().filter(|p| !p.diskless).count();
        let witnesses = self.peers.iter().filter(|p| p.diskless).count();
        if self.hosts > 3 {
            return Some(format!("resource {res} has {} hosts: {shape}", self.hosts));
        }
        if witnesses + usize::from(self.diskless) > 0 && self.security.link_tls.is_some() {
            return Some(format!(
                "resource {res}: `net {{ tls yes; }}` with a witness: the witness links do not speak TLS yet (use `shared-secret` to authenticate them, docs/quorum.md)"
            ));
        }
        if self.diskless {
            if data_peers != 2 || self.peers.len() != 2 {
                return Some(format!(
                    "resource {res}: this node ({}) is diskless, so it is a witness, which needs connections to exactly two hosts with a disk (it has {data_peers}): {shape}",
                    self.node
                ));
            }
            if !self.quorum.enabled() {
                return Some(format!(
                    "resource {res}: this node ({}) is a witness (`disk none;`), which only serves quorum: set `options {{ quorum majority; }}`",
                    self.node
                ));
            }
            return None;
        }
        if data_peers != 1 || witnesses > 1 {
            return Some(format!(
                "resource {res}: this node ({}) connects to {data_peers} hosts with a disk and {witnesses} diskless ones: {shape}",
                self.node
            ));
        }
        if witnesses == 1 && !self.quorum.enabled() {
            return Some(format!(
                "resource {res} has a witness but quorum is off: a witness only serves quorum; set `options {{ quorum majority; }}` or remove the witness host"
            ));
        }
        None
    }

    /// The witness (the diskless host) this data node connects to, if any.
    pub fn witness(&self) -> Option<&PeerView> {
        if self.diskless {
            return None;
        }
        self.peers.iter().find(|p| p.diskless)
    }
}

fn matches(h: &Host, node: &str) -> bool {
    h.names.iter().any(|n| n == node)
        || (h.floating
            && h.address
                .is_some_and(|a| a.to_string() == node || a.ip().to_string() == node))
}

fn host_label(h: &Host) -> String {
    if h.floating {
        h.address
            .map_or_else(|| "floating".into(), |a| a.to_string())
    } else {
        h.names.join(" ")
    }
}

/// What drbdadm hands the kernel: every option of the resource, in file order, so of a name
/// written twice (say in `syncer` and again in `disk`) the later one counts; an option of
/// `common` only where the resource has none of that name, and then its first one
/// (drbdadm's expand_opts).
fn settings<'a>(common: &'a [Opt], res: &'a [Opt]) -> BTreeMap<&'a str, &'a Opt> {
    let mut m: BTreeMap<&str, &Opt> = res.iter().map(|o| (o.name.as_str(), o)).collect();
    for o in common {
        m.entry(o.name.as_str()).or_insert(o);
    }
    m
}

type Settings<'a> = BTreeMap<&'a str, &'a Opt>;

fn flag(v: Option<&&Opt>, default: bool) -> bool {
    match v.map(|o| o.value.as_deref()) {
        None => default,
        Some(None) => true,
        Some(Some(x)) => x == "yes",
    }
}

/// Values were range-checked at parse time, so conversion failures cannot happen; the
/// default is kept if they did.
fn num<T: TryFrom<u64>>(v: Option<&&Opt>, unit: Unit, default: T) -> T {
    v.and_then(|o| o.value.as_deref())
        .and_then(|s| parse_number(s, unit).ok())
        .and_then(|n| T::try_from(n).ok())
        .unwrap_or(default)
}

fn string(v: Option<&&Opt>) -> Option<String> {
    v.and_then(|o| o.value.clone())
}

/// A typed value of `name` (the default when unset). The parser checked enumerated keywords
/// against the same names, so for them this cannot fail; algorithms are checked here, where
/// rep implements fewer than DRBD's kernel offers, with the place in the file.
fn typed<T>(
    sets: &Settings<'_>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, crate::policy::UnknownValue>,
) -> Result<Option<T>, ConfigError> {
    let Some(opt) = sets.get(name) else {
        return Ok(None);
    };
    let Some(text) = opt.value.as_deref() else {
        return Ok(None);
    };
    parse(text).map(Some).map_err(|e| {
        ConfigError::Value(opt.at.err(format!(
            "{name} '{}' is not implemented by rep; use one of {}",
            e.value,
            e.expected.join(", ")
        )))
    })
}

pub fn node_view(model: &Model, r: &Resource, node: &str) -> Result<NodeView, ConfigError> {
    let me = r.hosts.iter().find(|h| matches(h, node)).ok_or_else(|| {
        ConfigError::NotDefinedForHost {
            resource: r.name.clone(),
            node: node.into(),
            hosts: r.hosts.iter().map(host_label).collect(),
        }
    })?;
    let me_label = me.label();
    let find = |label: &str| r.hosts.iter().find(|h| h.label() == label);
    let peers: Vec<PeerView> = r
        .connections
        .iter()
        .filter_map(|c| c.peer_of(&me_label))
        .map(|(mine, theirs)| {
            let h = find(&theirs.host);
            PeerView {
                node: theirs.host.clone(),
                node_id: h.and_then(|h| h.node_id),
                address: theirs.address,
                my_address: mine.address,
                diskless: h.is_some_and(Host::diskless),
            }
        })
        .collect();
    // The data peer (the one our writes are replicated to) comes first in `peer_node` and
    // `peer_address`; a witness (`disk none;`) is only in `peers`.
    let data_peer = peers.iter().find(|p| !p.diskless).or(peers.first());
    let peer = match data_peer {
        Some(p) => find(&p.node),
        None => r.hosts.iter().find(|h| !std::ptr::eq(*h, me)),
    };
    let vol = me
        .volumes
        .iter()
        .min_by_key(|v| v.number)
        .ok_or_else(|| ConfigError::Invalid {
            resource: r.name.clone(),
            message: format!("no volume defined for host {node}"),
        })?;
    let n = settings(&model.common.net, &r.sections.net);
    let d = settings(&model.common.disk, &r.sections.disk);
    let s = settings(&model.common.startup, &r.sections.startup);
    let o = settings(&model.common.options, &r.sections.options);
    let dn = NetConf::default();
    let net = NetConf {
        protocol: match n.get("protocol").and_then(|o| o.value.as_deref()) {
            Some("A") => Protocol::A,
            Some("B") => Protocol::B,
            _ => Protocol::C,
        },
        timeout_ds: num(n.get("timeout"), Unit::One, dn.timeout_ds),
        connect_int_s: num(n.get("connect-int"), Unit::One, dn.connect_int_s),
        ping_int_s: num(n.get("ping-int"), Unit::One, dn.ping_int_s),
        ping_timeout_ds: num(n.get("ping-timeout"), Unit::One, dn.ping_timeout_ds),
        ko_count: num(n.get("ko-count"), Unit::One, dn.ko_count),
        max_buffers: num(n.get("max-buffers"), Unit::One, dn.max_buffers),
        max_epoch_size: num(n.get("max-epoch-size"), Unit::One, dn.max_epoch_size),
        sndbuf_size: num(n.get("sndbuf-size"), Unit::Bytes, 0),
        rcvbuf_size: num(n.get("rcvbuf-size"), Unit::Bytes, 0),
        shared_secret: string(n.get("shared-secret")),
        cram_hmac_alg: typed(&n, "cram-hmac-alg", HmacAlg::parse)?,
        verify_alg: typed(&n, "verify-alg", DigestAlg::parse)?,
        csums_alg: typed(&n, "csums-alg", DigestAlg::parse)?,
        after_sb_0pri: typed(&n, "after-sb-0pri", str::parse)?.unwrap_or(dn.after_sb_0pri),
        after_sb_1pri: typed(&n, "after-sb-1pri", str::parse)?.unwrap_or(dn.after_sb_1pri),
        after_sb_2pri: typed(&n, "after-sb-2pri", str::parse)?.unwrap_or(dn.after_sb_2pri),
        rr_conflict: typed(&n, "rr-conflict", str::parse)?.unwrap_or(dn.rr_conflict),
        allow_two_primaries: flag(n.get("allow-two-primaries"), false),
        always_asbp: flag(n.get("always-asbp"), false),
        data_integrity_alg: typed(&n, "data-integrity-alg", DigestAlg::parse)?,
        use_rle: flag(n.get("use-rle"), true),
    };
    let dd = DiskConf::default();
    let size_sectors: u64 = num(d.get("size"), Unit::Sectors, 0);
    let disk_conf = DiskConf {
        fencing: typed(&d, "fencing", str::parse)?.unwrap_or(dd.fencing),
        on_io_error: typed(&d, "on-io-error", str::parse)?.unwrap_or(dd.on_io_error),
        size_bytes: (size_sectors > 0).then(|| size_sectors * 512),
        al_extents: num(d.get("al-extents"), Unit::One, dd.al_extents),
        resync_rate_kib: num(d.get("resync-rate"), Unit::Kib, dd.resync_rate_kib),
        resync_after: string(d.get("resync-after")),
        c_plan_ahead_ds: num(d.get("c-plan-ahead"), Unit::One, dd.c_plan_ahead_ds),
        c_fill_target_sectors: num(
            d.get("c-fill-target"),
            Unit::Sectors,
            dd.c_fill_target_sectors,
        ),
        c_delay_target_ds: num(d.get("c-delay-target"), Unit::One, dd.c_delay_target_ds),
        c_max_rate_kib: num(d.get("c-max-rate"), Unit::Kib, dd.c_max_rate_kib),
        c_min_rate_kib: num(d.get("c-min-rate"), Unit::Kib, dd.c_min_rate_kib),
        disk_barrier: flag(d.get("disk-barrier"), false),
        disk_flushes: flag(d.get("disk-flushes"), true),
        md_flushes: flag(d.get("md-flushes"), true),
    };
    let startup = StartupConf {
        wfc_timeout_s: num(s.get("wfc-timeout"), Unit::One, 0),
        degr_wfc_timeout_s: num(s.get("degr-wfc-timeout"), Unit::One, 0),
        outdated_wfc_timeout_s: num(s.get("outdated-wfc-timeout"), Unit::One, 0),
        wait_after_sb: flag(s.get("wait-after-sb"), false),
        become_primary_on: string(s.get("become-primary-on")),
    };
    let options = OptionsConf {
        cpu_mask: string(o.get("cpu-mask")),
        on_no_data_accessible: typed(&o, "on-no-data-accessible", str::parse)?
            .unwrap_or(OnNoDataAccessible::IoError),
    };
    // drbdadm runs the first handler of a name (`outdate-peer` and `fence-peer` are one name).
    let mut handlers = BTreeMap::new();
    for h in r.sections.handlers.iter().chain(&model.common.handlers) {
        if let Some(v) = &h.value {
            handlers.entry(h.name.clone()).or_insert_with(|| v.clone());
        }
    }
    let device = if vol.device.starts_with("minor ") {
        format!("/dev/drbd{}", vol.minor)
    } else {
        vol.device.clone()
    };
    let security = security_conf(r, me, &n)?;
    Ok(NodeView {
        resource: r.name.clone(),
        node: node.into(),
        peer_node: peer.map(host_label),
        minor: vol.minor,
        device,
        disk: PathBuf::from(vol.disk.as_deref().unwrap_or("none")),
        meta_disk: vol.meta_disk.clone().unwrap_or(MetaDisk::Internal),
        // A connection section may give this pair its own addresses (`host A address …;`).
        address: data_peer.map_or(me.address, |p| p.my_address),
        peer_address: data_peer.map_or_else(|| peer.and_then(|p| p.address), |p| p.address),
        nbd_listen: me.nbd_listen,
        metrics_listen: me.metrics_listen,
        busy_poll_us: me
            .busy_poll_us
            .unwrap_or(crate::model::BUSY_POLL_DEFAULT_US),
        net,
        disk_conf,
        startup,
        options,
        handlers,
        volume: vol.number,
        security,
        node_id: me.node_id,
        diskless: me.diskless(),
        peers,
        hosts: r.hosts.len() as u32,
        quorum: quorum_conf(&o),
    })
}

/// The parser checked the values against the same names, so parsing cannot fail here.
fn quorum_conf(o: &Settings<'_>) -> crate::quorum::QuorumConf {
    use crate::quorum::{OnNoQuorum, Quorum, QuorumConf};
    let get = |name: &str| o.get(name).and_then(|opt| opt.value.as_deref());
    QuorumConf {
        quorum: get("quorum").and_then(Quorum::parse).unwrap_or_default(),
        on_no_quorum: get("on-no-quorum")
            .and_then(OnNoQuorum::parse)
            .unwrap_or_default(),
        minimum_redundancy: get("quorum-minimum-redundancy")
            .and_then(Quorum::parse)
            .unwrap_or_default(),
    }
}

fn security_conf(
    r: &Resource,
    me: &Host,
    n: &BTreeMap<&str, &Opt>,
) -> Result<crate::security::SecurityConf, ConfigError> {
    use crate::security::{LinkTls, SecurityConf};
    let h = &me.security;
    let link_tls = if flag(n.get("tls"), false) {
        let pick = |own: &Option<PathBuf>, key: &str| {
            own.clone()
                .or_else(|| string(n.get(key)).map(PathBuf::from))
                .ok_or_else(|| ConfigError::Invalid {
                    resource: r.name.clone(),
                    message: format!(
                        "net {{ tls yes; }} needs {key} (in net, or in this node's on section)"
                    ),
                })
        };
        Some(LinkTls {
            certificate: pick(&h.tls_certificate, "tls-certificate")?,
            privkey: pick(&h.tls_privkey, "tls-privkey")?,
            ca: pick(&h.tls_ca, "tls-ca")?,
        })
    } else {
        None
    };
    Ok(SecurityConf {
        nbd_tls: h.nbd_tls.unwrap_or_default(),
        nbd_tls_certificate: h.nbd_tls_certificate.clone(),
        nbd_tls_privkey: h.nbd_tls_privkey.clone(),
        nbd_tls_ca: h.nbd_tls_ca.clone(),
        nbd_socket_group: h.nbd_socket_group.clone(),
        control_socket_group: h.control_socket_group.clone(),
        link_tls,
    })
}
