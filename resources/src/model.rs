//! The typed model: what the statement tree means, checked the way drbdadm checks it
//! (keywords per section, value types and ranges, required host fields, duplicates).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::error::{did_you_mean, Location, ParseError};
use crate::host::{address, Host, MetaDisk, Volume};
use crate::keywords::{self, Kind};
use crate::quorum::Quorum;
use crate::tree::{words_text, Stmt, Word, WordKind};

/// One `keyword value;` as written (value text kept verbatim, e.g. `40M`).
#[derive(Debug, Clone, Serialize)]
pub struct Opt {
    pub name: String,
    /// `None` for a bare flag (`allow-two-primaries;` = yes).
    pub value: Option<String>,
    /// Where it was written, for errors found after parsing (a value rep does not implement).
    #[serde(skip)]
    pub at: Location,
}

/// Two options are the same setting wherever they were written (a dump read back is equal).
impl PartialEq for Opt {
    fn eq(&self, other: &Opt) -> bool {
        self.name == other.name && self.value == other.value
    }
}
impl Eq for Opt {}

/// The option sections of `common`, a resource, or (disk only) a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sections {
    pub net: Vec<Opt>,
    pub disk: Vec<Opt>,
    pub startup: Vec<Opt>,
    pub options: Vec<Opt>,
    pub handlers: Vec<Opt>,
}

impl Sections {
    fn get_mut(&mut self, name: &str) -> Option<&mut Vec<Opt>> {
        Some(match name {
            "net" => &mut self.net,
            "disk" => &mut self.disk,
            "startup" => &mut self.startup,
            "options" => &mut self.options,
            "handlers" => &mut self.handlers,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub name: String,
    pub sections: Sections,
    pub hosts: Vec<Host>,
    /// Every pair of hosts that connects: the implicit one of a two-host resource, each pair
    /// of a `connection-mesh`, and each explicit `connection` (crate::topology).
    pub connections: Vec<crate::topology::Connection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    pub global: Vec<Opt>,
    pub common: Sections,
    pub resources: Vec<Resource>,
}

/// Partial volume fields while walking resource- and host-level statements.
#[derive(Debug, Clone, Default)]
struct VolDraft {
    device: Option<(String, u32)>,
    disk: Option<String>,
    meta_disk: Option<MetaDisk>,
}

impl VolDraft {
    fn overlay(&self, over: &VolDraft) -> VolDraft {
        VolDraft {
            device: over.device.clone().or_else(|| self.device.clone()),
            disk: over.disk.clone().or_else(|| self.disk.clone()),
            meta_disk: over.meta_disk.clone().or_else(|| self.meta_disk.clone()),
        }
    }
}

type Drafts = BTreeMap<u32, VolDraft>;

pub fn build(stmts: &[Stmt]) -> Result<Model, ParseError> {
    let mut m = Model {
        global: Vec::new(),
        common: Sections::default(),
        resources: Vec::new(),
    };
    let (mut seen_global, mut seen_common): (Option<&Stmt>, Option<&Stmt>) = (None, None);
    let mut names: BTreeMap<String, &Stmt> = BTreeMap::new();
    for s in stmts {
        match s.keyword() {
            "global" => {
                let block = need_block(s, 1)?;
                if let Some(first) = seen_global {
                    return Err(s.err(format!(
                        "conflicting use of global section (first used at line {})",
                        first.line
                    )));
                }
                seen_global = Some(s);
                m.global = options(block, "global")?;
            }
            "common" => {
                let block = need_block(s, 1)?;
                if let Some(first) = seen_common {
                    return Err(s.err(format!(
                        "conflicting use of common section (first used at line {})",
                        first.line
                    )));
                }
                seen_common = Some(s);
                let mut seen = BTreeMap::new();
                for c in block {
                    if c.keyword() == "protocol" {
                        protocol_into(c, "common", &mut m.common, &mut seen)?;
                    } else {
                        section_into(c, "common", &mut m.common, &mut seen)?;
                    }
                }
            }
            "resource" => {
                let block = s
                    .block
                    .as_ref()
                    .ok_or_else(|| s.err("'resource NAME { ... }' needs a block"))?;
                let [_, name] = s.words.as_slice() else {
                    return Err(s.err("resource needs exactly one name: resource NAME { ... }"));
                };
                if name.kind == WordKind::Bracket {
                    return Err(s.err("resource needs a name: resource NAME { ... }"));
                }
                if let Some(first) = names.get(&name.text) {
                    return Err(s.err(format!(
                        "conflicting use of resource section '{}' (first used at {}:{}); resource names must be unique",
                        name.text, first.file, first.line
                    )));
                }
                names.insert(name.text.clone(), s);
                m.resources.push(resource(s, &name.text, block)?);
            }
            "skip" => {}
            other => {
                let hint = did_you_mean(other, ["global", "common", "resource", "include"]);
                return Err(s.err(format!("unknown top-level keyword '{other}': expected global, common, resource or include{hint}")));
            }
        }
    }
    check_unique_minors(&m, stmts)?;
    check_unique_addresses(&m, stmts)?;
    check_reachable_quorum(&m)?;
    Ok(m)
}

fn need_block(s: &Stmt, words: usize) -> Result<&Vec<Stmt>, ParseError> {
    if s.words.len() > words {
        let w = &s.words[words];
        return Err(s.err_at(
            w,
            format!(
                "';' expected after '{}', but got '{}'",
                words_text(&s.words[..words]),
                w.text
            ),
        ));
    }
    s.block.as_ref().ok_or_else(|| {
        s.err(format!(
            "'{}' needs a block: {} {{ ... }}",
            s.keyword(),
            s.keyword()
        ))
    })
}

/// `keyword value;` statements of one section, validated against its table, under their 8.4
/// names; the 8.3 options drbdadm ignores are checked and left out.
fn options(block: &[Stmt], section: &str) -> Result<Vec<Opt>, ParseError> {
    let mut out = Vec::new();
    for s in block {
        out.extend(option(s, section)?);
    }
    Ok(out)
}

/// The statement must be `word;` with no value and no block (an 8.3 `no-` switch).
fn bare(s: &Stmt) -> Result<(), ParseError> {
    if let Some(w) = s.words.get(1) {
        return Err(s.err_at(
            w,
            format!(
                "';' expected after '{}', but got '{}'; the 8.3 switch takes no value (or write `{} no;`)",
                s.keyword(),
                w.text,
                s.keyword().trim_start_matches("no-")
            ),
        ));
    }
    if s.block.is_some() {
        return Err(s.err(format!(
            "';' expected after '{}', but got '{{'",
            s.keyword()
        )));
    }
    Ok(())
}

fn option(s: &Stmt, section: &str) -> Result<Option<Opt>, ParseError> {
    let written = s.keyword();
    if section != "global" && keywords::DEPRECATED.contains(&written) {
        // drbdadm 8.4 reads `delay-probe-volume 16384;` and drops it: 8.3.x's old resync
        // controller, replaced by the c-* options.
        match (s.words.as_slice(), &s.block) {
            ([_, _], None) => return Ok(None),
            ([_], None) => return Err(s.err(format!("{written} needs a value: {written} VALUE;"))),
            _ => {
                return Err(s.err(format!(
                    "{written} (ignored since DRBD 8.4) takes one value: {written} VALUE;"
                )))
            }
        }
    }
    if let Some(flag) = keywords::no_flag(section, written) {
        bare(s)?;
        return Ok(Some(Opt {
            name: flag.into(),
            value: Some("no".into()),
            at: location(s, None),
        }));
    }
    if written == "discard-my-data" && section == "net" {
        return Err(s.err(
            "discard-my-data is not a configuration option (drbdadm rejects it in a file); run `repadm connect --discard-my-data RES` on the node whose changes are to be dropped",
        ));
    }
    let name = keywords::canonical(section, written);
    let Some(kw) = keywords::lookup(section, name) else {
        let names = keywords::table(section)
            .unwrap_or(&[])
            .iter()
            .map(|k| k.name);
        let hint = did_you_mean(name, names);
        return Err(s.err(format!(
            "unknown keyword '{name}' in {section} section{hint}"
        )));
    };
    if s.block.is_some() {
        let w = s.words.get(2).or(s.words.get(1)).unwrap_or(&s.words[0]);
        return Err(s.err_at(
            w,
            format!(
                "';' expected after '{}', but got '{{'",
                words_text(&s.words)
            ),
        ));
    }
    let values = &s.words[1..];
    if name == "become-primary-on" && !values.is_empty() {
        // drbdadm reads a list of host names here (`become-primary-on alice bob;`).
        return Ok(Some(Opt {
            name: name.into(),
            value: Some(
                values
                    .iter()
                    .map(|w| w.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            at: location(s, values.first()),
        }));
    }
    if values.len() > 1 {
        return Err(s.err_at(
            &values[1],
            format!(
                "';' expected after '{} {}', but got '{}'",
                name, values[0].text, values[1].text
            ),
        ));
    }
    let value = values.first();
    // drbdadm upper-cases the protocol letter: `protocol c;` is protocol C.
    if let Some(v) =
        value.filter(|v| name == "protocol" && matches!(v.text.as_str(), "a" | "b" | "c"))
    {
        return Ok(Some(Opt {
            name: name.into(),
            value: Some(v.text.to_ascii_uppercase()),
            at: location(s, Some(v)),
        }));
    }
    match (kw.kind, value) {
        (Kind::Bool, None) => {
            return Ok(Some(Opt {
                name: name.into(),
                value: None,
                at: location(s, None),
            }))
        }
        (Kind::Bool, Some(v)) if matches!(v.text.as_str(), "yes" | "no") => {}
        (Kind::Bool, Some(v)) => {
            return Err(s.err_at(v, format!("{name} takes yes or no, not '{}'", v.text)))
        }
        (_, None) => return Err(s.err(format!("{name} needs a value: {name} VALUE;"))),
        (Kind::Enum(allowed), Some(v))
            if !allowed.contains(&v.text.as_str())
                && !crate::keywords::takes_prefixed_value(name, &v.text) =>
        {
            let hint = did_you_mean(&v.text, allowed.iter().copied());
            let what = if name == "protocol" {
                "protocol".to_owned()
            } else {
                format!("value for {name}")
            };
            return Err(s.err_at(
                v,
                format!(
                    "unknown {what} '{}', should be one of {}{hint}",
                    v.text,
                    allowed.join(", ")
                ),
            ));
        }
        (Kind::EnumOrInt { names, min, max }, Some(v)) if !names.contains(&v.text.as_str()) => {
            let allowed = format!(
                "{} or a number of nodes in [{min}..{max}]",
                names.join(", ")
            );
            // Digits only: drbdadm reads no suffix, sign or case variant here.
            let n = v
                .text
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.text.parse::<u64>().ok())
                .flatten();
            match n {
                Some(n) if (min..=max).contains(&n) => {}
                Some(_) => {
                    return Err(s.err_at(
                        v,
                        format!("{name} {} is out of range; use {allowed}", v.text),
                    ))
                }
                None => {
                    let hint = did_you_mean(&v.text, names.iter().copied());
                    return Err(s.err_at(
                        v,
                        format!("unknown value for {name} '{}'; use {allowed}{hint}", v.text),
                    ));
                }
            }
        }
        (Kind::Int { unit, min, max }, Some(v)) => {
            let n = keywords::parse_number(&v.text, unit)
                .map_err(|e| s.err_at(v, format!("{e} for '{name}'")))?;
            if n < min || n > max {
                let u = if unit == keywords::Unit::Kib { "k" } else { "" };
                return Err(s.err_at(
                    v,
                    format!("{name} {} => {n}{u} out of range [{min}..{max}]{u}", v.text),
                ));
            }
        }
        (Kind::Str, Some(v)) if name == "shared-secret" && v.text.len() > 64 => {
            return Err(s.err_at(v, "shared-secret is longer than 64 characters"));
        }
        _ => {}
    }
    Ok(Some(Opt {
        name: name.into(),
        value: value.map(|v| v.text.clone()),
        at: location(s, value),
    }))
}

/// The value's position if there is one, else the statement's.
fn location(s: &Stmt, value: Option<&Word>) -> Location {
    let (line, col) = value.map_or((s.line, s.col), |w| (w.line, w.col));
    Location {
        file: s.file.clone(),
        line,
        col,
    }
}

/// A section statement (`net { }` …, or legacy `syncer { }`) merged into `into`.
fn section_into<'a>(
    s: &'a Stmt,
    scope: &str,
    into: &mut Sections,
    seen: &mut BTreeMap<&'a str, u32>,
) -> Result<(), ParseError> {
    let name = s.keyword();
    let known = ["net", "disk", "startup", "options", "handlers", "syncer"];
    if !known.contains(&name) {
        let hint = did_you_mean(name, known);
        return Err(s.err(format!(
            "unknown section '{name}' in {scope}; expected one of {}{hint}",
            known.join(", ")
        )));
    }
    let block = need_block(s, 1)?;
    if let Some(first) = seen.insert(name, s.line) {
        return Err(s.err(format!("conflicting use of {name} section '{scope}:{name}' (first used at line {first}); merge them into one")));
    }
    if name == "syncer" {
        for o in block {
            let Some(&(_, target, new)) = keywords::SYNCER
                .iter()
                .find(|(old, _, _)| *old == o.keyword())
            else {
                let hint = did_you_mean(o.keyword(), keywords::SYNCER.iter().map(|x| x.0));
                return Err(o.err(format!(
                    "unknown keyword '{}' in syncer section (DRBD 8.3 syntax){hint}",
                    o.keyword()
                )));
            };
            let mut renamed = o.clone();
            renamed.words[0].text = new.to_owned();
            let opt = option(&renamed, target)?;
            if let Some(v) = into.get_mut(target) {
                v.extend(opt);
            }
        }
        return Ok(());
    }
    let opts = options(block, name)?;
    if let Some(v) = into.get_mut(name) {
        v.extend(opts);
    }
    Ok(())
}

/// DRBD 8.3's `protocol X;` outside `net`, in a resource or in `common`: once per scope, and a
/// net option in file order (drbdadm passes both to drbdsetup when `net` names one too, so the
/// later one counts).
fn protocol_into<'a>(
    st: &'a Stmt,
    scope: &str,
    into: &mut Sections,
    seen: &mut BTreeMap<&'a str, u32>,
) -> Result<(), ParseError> {
    if st.block.is_some() {
        let w = st.words.get(2).unwrap_or(&st.words[0]);
        return Err(st.err_at(
            w,
            format!(
                "';' expected after '{}', but got '{}'",
                words_text(&st.words[..st.words.len().min(2)]),
                if st.words.len() > 2 {
                    w.text.as_str()
                } else {
                    "{"
                }
            ),
        ));
    }
    if let Some(first) = seen.insert("protocol", st.line) {
        return Err(st.err(format!(
            "conflicting use of protocol statement '{scope}: protocol' (first used at line {first}); write it once"
        )));
    }
    into.net.extend(option(st, "net")?);
    Ok(())
}

fn resource(s: &Stmt, name: &str, block: &[Stmt]) -> Result<Resource, ParseError> {
    let mut sections = Sections::default();
    let mut seen = BTreeMap::new();
    let mut defaults = Drafts::new();
    let mut hosts: Vec<(&Stmt, Host, Drafts)> = Vec::new();
    let mut links = crate::topology::Draft::default();
    for st in block {
        match st.keyword() {
            "protocol" => protocol_into(st, name, &mut sections, &mut seen)?,
            "connection" | "connection-mesh" => links.take(st)?,
            "device" | "disk" | "meta-disk" | "flexible-meta-disk" if st.block.is_none() => {
                volume_field(st, defaults.entry(0).or_default())?;
            }
            "volume" => {
                let (n, d) = volume(st)?;
                defaults.insert(n, d);
            }
            "on" => {
                let b = st
                    .block
                    .as_ref()
                    .ok_or_else(|| st.err("'on HOST { ... }' needs a block"))?;
                let names: Vec<String> = st.words[1..].iter().map(|w| w.text.clone()).collect();
                if names.is_empty() {
                    return Err(st.err("'on' needs a host name: on HOST { ... }"));
                }
                let (host, drafts) = host_body(st, b, names, None)?;
                hosts.push((st, host, drafts));
            }
            "floating" => {
                let addr = address(st, &st.words[1..])?;
                let b = st.block.clone().unwrap_or_default();
                let (host, drafts) = host_body(st, &b, Vec::new(), Some(addr))?;
                hosts.push((st, host, drafts));
            }
            "stacked-on-top-of" => {
                return Err(st.err("stacked resources (stacked-on-top-of) are not supported by rep; use a two-node resource"));
            }
            // Deprecated in 8.3 already; drbdadm 8.4 warns and ignores it (its "must precede
            // any host section" check never fires while parsing).
            "ignore-on" => {
                if st.words.len() != 2 || st.block.is_some() {
                    return Err(st.err("ignore-on takes one host name: ignore-on HOST;"));
                }
            }
            _ if st.block.is_some() => section_into(st, name, &mut sections, &mut seen)?,
            other => {
                let expected = [
                    "protocol",
                    "on",
                    "floating",
                    "volume",
                    "device",
                    "disk",
                    "meta-disk",
                    "connection",
                    "connection-mesh",
                    "net",
                    "syncer",
                    "startup",
                    "options",
                    "handlers",
                ];
                let hint = did_you_mean(other, expected);
                return Err(st.err(format!(
                    "unknown keyword '{other}' in resource {name}; expected one of {}{hint}",
                    expected.join(", ")
                )));
            }
        }
    }
    if hosts.is_empty() {
        return Err(s.err(format!("resource {name} has no host sections; add `on HOST {{ address IP:PORT; ... }}` for both nodes")));
    }
    let mut out = Vec::new();
    let mut host_stmts = Vec::new();
    for (st, mut host, drafts) in hosts {
        let label = if host.floating {
            "floating".to_owned()
        } else {
            format!("on {}", host.names.join(" "))
        };
        if host.address.is_none() {
            return Err(st.err(format!(
                "in resource {name}, {label} {{ ... }}: 'address' keyword missing."
            )));
        }
        let mut numbers: Vec<u32> = defaults.keys().chain(drafts.keys()).copied().collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.is_empty() {
            numbers.push(0);
        }
        for n in numbers {
            let base = defaults.get(&n).cloned().unwrap_or_default();
            let v = base.overlay(&drafts.get(&n).cloned().unwrap_or_default());
            let missing = |what: &str| {
                st.err(format!(
                    "in resource {name}, {label} {{ ... }}: '{what}' keyword missing."
                ))
            };
            let (device, minor) = v.device.ok_or_else(|| missing("device"))?;
            let disk = v.disk.ok_or_else(|| missing("disk"))?;
            // DRBD 9: `disk none;` is a diskless volume, which needs no meta-disk.
            let (disk, meta_disk) = if disk == "none" {
                (None, None)
            } else {
                (
                    Some(disk),
                    Some(v.meta_disk.ok_or_else(|| missing("meta-disk"))?),
                )
            };
            host.volumes.push(Volume {
                number: n,
                device,
                minor,
                disk,
                meta_disk,
            });
        }
        out.push(host);
        host_stmts.push(st);
    }
    let connections = links.resolve(s, name, &out, &host_stmts)?;
    Ok(Resource {
        name: name.into(),
        sections,
        hosts: out,
        connections,
    })
}

fn volume(st: &Stmt) -> Result<(u32, VolDraft), ParseError> {
    let b = st
        .block
        .as_ref()
        .ok_or_else(|| st.err("'volume N { ... }' needs a block"))?;
    let [_, n] = st.words.as_slice() else {
        return Err(st.err("volume needs a number: volume N { ... }"));
    };
    let n: u32 = n
        .text
        .parse()
        .map_err(|_| st.err_at(n, format!("volume number '{}' is not a number", n.text)))?;
    let mut d = VolDraft::default();
    let mut seen = BTreeMap::new();
    let mut sections = Sections::default();
    for f in b {
        match f.keyword() {
            "device" | "disk" | "meta-disk" | "flexible-meta-disk" if f.block.is_none() => {
                volume_field(f, &mut d)?
            }
            // A per-volume disk section is accepted (drbdadm 8.4 does not use it either).
            "disk" => section_into(f, "volume", &mut sections, &mut seen)?,
            other => {
                let hint = did_you_mean(other, ["device", "disk", "meta-disk"]);
                return Err(f.err(format!("unknown keyword '{other}' in volume {n}; expected device, disk or meta-disk{hint}")));
            }
        }
    }
    Ok((n, d))
}

fn host_body(
    st: &Stmt,
    b: &[Stmt],
    names: Vec<String>,
    floating: Option<SocketAddr>,
) -> Result<(Host, Drafts), ParseError> {
    let mut host = Host {
        names,
        floating: floating.is_some(),
        node_id: None,
        address: floating,
        nbd_listen: None,
        metrics_listen: None,
        busy_poll_us: None,
        volumes: Vec::new(),
        security: Default::default(),
    };
    let mut drafts = Drafts::new();
    for f in b {
        if host.security.take(f)? {
            continue;
        }
        match f.keyword() {
            "address" if f.block.is_none() => {
                if host.address.is_some() {
                    return Err(f.err("conflicting use of address; give one address per host"));
                }
                host.address = Some(address(f, &f.words[1..])?);
            }
            "node-id" if f.block.is_none() => {
                if host.node_id.is_some() {
                    return Err(f.err(
                        "conflicting use of node-id statement: a host has one node-id; remove one",
                    ));
                }
                host.node_id = Some(crate::topology::node_id(f)?);
            }
            "nbd-listen" if f.block.is_none() => {
                host.nbd_listen = Some(address(f, &f.words[1..])?);
            }
            "metrics-listen" if f.block.is_none() => {
                host.metrics_listen = Some(address(f, &f.words[1..])?);
            }
            "busy-poll" if f.block.is_none() => {
                host.busy_poll_us = Some(busy_poll(f)?);
            }
            "device" | "disk" | "meta-disk" | "flexible-meta-disk" if f.block.is_none() => {
                volume_field(f, drafts.entry(0).or_default())?;
            }
            "volume" => {
                let (n, d) = volume(f)?;
                drafts.insert(n, d);
            }
            other => {
                let expected = [
                    "address",
                    "device",
                    "disk",
                    "meta-disk",
                    "node-id",
                    "volume",
                    "nbd-listen",
                    "metrics-listen",
                    "busy-poll",
                ];
                let hint = did_you_mean(
                    other,
                    expected
                        .iter()
                        .chain(crate::security::HOST_KEYWORDS)
                        .copied(),
                );
                return Err(f.err(format!(
                    "unknown keyword '{other}' in a host section; expected one of {}{hint}",
                    expected.join(", ")
                )));
            }
        }
    }
    host.security.check(st)?;
    Ok((host, drafts))
}

fn volume_field(f: &Stmt, d: &mut VolDraft) -> Result<(), ParseError> {
    let vals = &f.words[1..];
    match f.keyword() {
        "device" => d.device = Some(device(f, vals)?),
        "disk" => {
            let [v] = vals else {
                return Err(f.err("disk takes one value: disk /dev/sdX;"));
            };
            d.disk = Some(v.text.clone());
        }
        _ => d.meta_disk = Some(meta_disk(f, vals)?),
    }
    Ok(())
}

fn minor_of(path: &str) -> Option<u32> {
    let name = path.strip_prefix("/dev/").unwrap_or(path);
    name.strip_prefix("drbd")?.parse().ok()
}

fn device(f: &Stmt, vals: &[Word]) -> Result<(String, u32), ParseError> {
    let minor_num = |w: &Word| {
        w.text
            .parse::<u32>()
            .map_err(|_| f.err_at(w, format!("minor '{}' is not a number", w.text)))
    };
    match vals {
        [m, n] if m.text == "minor" => {
            let minor = minor_num(n)?;
            Ok((format!("minor {minor}"), minor))
        }
        [p] => {
            if !p.text.trim_start_matches("/dev/").starts_with("drbd") {
                return Err(f.err_at(p, format!(
                    "device name must start with /dev/drbd (/dev/ is optional, but drbd is required), got '{}'; or write `device minor N;`",
                    p.text
                )));
            }
            let minor = minor_of(&p.text).ok_or_else(|| f.err_at(p, format!("no minor given nor device name '{}' contains a minor number; write `device {} minor N;`", p.text, p.text)))?;
            Ok((p.text.clone(), minor))
        }
        [p, m, n] if m.text == "minor" => {
            if !p.text.trim_start_matches("/dev/").starts_with("drbd") {
                return Err(f.err_at(
                    p,
                    format!("device name must start with /dev/drbd, got '{}'", p.text),
                ));
            }
            Ok((p.text.clone(), minor_num(n)?))
        }
        _ => Err(f.err("device takes /dev/drbdN, `minor N`, or /dev/drbdN minor N")),
    }
}

fn meta_disk(f: &Stmt, vals: &[Word]) -> Result<MetaDisk, ParseError> {
    match vals {
        [v] if v.text == "internal" => Ok(MetaDisk::Internal),
        [p] if p.kind != WordKind::Bracket => Ok(MetaDisk::External { path: p.text.clone().into(), index: None }),
        [p, l, i, r] if l.text == "[" && r.text == "]" && l.kind == WordKind::Bracket && r.kind == WordKind::Bracket => {
            let idx = i.text.parse().map_err(|_| f.err_at(i, format!("meta-disk index '{}' is not a number", i.text)))?;
            Ok(MetaDisk::External { path: p.text.clone().into(), index: Some(idx) })
        }
        [_, l, _] if l.text == "[" => Err(f.err(format!("']' expected after '{}', but got ';'", words_text(vals)))),
        _ => Err(f.err("meta-disk takes internal, a device, or a device and an index: meta-disk /dev/sdc1 [0];")),
    }
}

/// The longest busy-poll window: a spinning I/O thread costs a core while it lasts.
pub const BUSY_POLL_MAX_US: u32 = 10_000;
/// Without `busy-poll`: long enough to cover a client's turnaround between two requests at
/// queue depth 1 (20 µs is not; README, "Latency").
pub const BUSY_POLL_DEFAULT_US: u32 = 100;

/// `busy-poll USEC;`: microseconds, 0 (off) to `BUSY_POLL_MAX_US`.
fn busy_poll(f: &Stmt) -> Result<u32, ParseError> {
    let [_, value] = f.words.as_slice() else {
        return Err(f.err("busy-poll takes one value: microseconds, e.g. `busy-poll 100;`"));
    };
    match value.text.parse::<u32>() {
        Ok(us) if us <= BUSY_POLL_MAX_US => Ok(us),
        _ => Err(f.err(format!(
            "busy-poll {}: expected microseconds from 0 (off) to {BUSY_POLL_MAX_US}, e.g. `busy-poll 100;`",
            value.text
        ))),
    }
}

/// An address:port may be used once per host, across all resources (drbdadm: "conflicting use
/// of IP 'NODE:IP:PORT'"): two resources cannot listen on the same socket.
fn check_unique_addresses(m: &Model, stmts: &[Stmt]) -> Result<(), ParseError> {
    let mut seen: BTreeMap<String, (ParseError, String)> = BTreeMap::new();
    for r in &m.resources {
        let rs = stmts.iter().find(|s| {
            s.keyword() == "resource" && s.words.get(1).is_some_and(|w| w.text == r.name)
        });
        for h in &r.hosts {
            let Some(addr) = h.address else { continue };
            let node = h
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| addr.ip().to_string());
            let key = format!("{node}:{}:{}", addr.ip(), addr.port());
            let at = |msg: String| -> ParseError {
                let host_stmt = rs.and_then(|rs| {
                    rs.block.iter().flatten().find(|s| {
                        (s.keyword() == "on" && s.words.iter().skip(1).any(|w| w.text == node))
                            || (s.keyword() == "floating" && h.floating)
                    })
                });
                let addr_stmt = host_stmt
                    .and_then(|hs| hs.block.iter().flatten().find(|s| s.keyword() == "address"));
                match addr_stmt.or(host_stmt).or(rs) {
                    Some(s) => s.err(msg),
                    None => ParseError::new("", 0, 0, msg),
                }
            };
            if let Some((first, _)) = seen.get(&key) {
                return Err(at(format!(
                    "conflicting use of IP '{key}' (first used at {}:{}, resource {} uses it again); give every resource its own port",
                    first.file, first.line, r.name
                )));
            }
            seen.insert(key, (at(String::new()), r.name.clone()));
        }
        // A connection's own address (`host A address IP:PORT;`) is a socket of host A too,
        // so another resource may not use it (drbdadm 9: "is also used").
        for e in r
            .connections
            .iter()
            .flat_map(|c| &c.hosts)
            .filter(|e| e.own_address)
        {
            let Some(addr) = e.address else { continue };
            let key = format!("{}:{}:{}", e.host, addr.ip(), addr.port());
            match seen.get(&key) {
                Some((first, res)) if *res != r.name => {
                    return Err(e.at.err(format!(
                        "conflicting use of IP '{key}' (first used at {}:{} by resource {res}, resource {} uses it again); give every resource its own port",
                        first.file, first.line, r.name
                    )));
                }
                Some(_) => {}
                None => {
                    seen.insert(key, (e.at.err(String::new()), r.name.clone()));
                }
            }
        }
    }
    Ok(())
}

/// A minor may be used once per host, across all resources.
fn check_unique_minors(m: &Model, stmts: &[Stmt]) -> Result<(), ParseError> {
    let mut seen: BTreeMap<(String, u32), String> = BTreeMap::new();
    for r in &m.resources {
        for h in &r.hosts {
            let key = h
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| h.address.map(|a| a.to_string()).unwrap_or_default());
            for v in &h.volumes {
                if let Some(other) = seen.insert((key.clone(), v.minor), r.name.clone()) {
                    let st = stmts.iter().find(|s| {
                        s.keyword() == "resource"
                            && s.words.get(1).is_some_and(|w| w.text == r.name)
                    });
                    let msg = format!(
                        "conflicting use of device-minor 'device-minor:{key}:{}' (resource {other} and resource {}); every volume needs its own minor",
                        v.minor, r.name
                    );
                    return Err(match st {
                        Some(s) => s.err(msg),
                        None => ParseError::new("", 0, 0, msg),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A numeric `quorum` above the number of hosts can never be reached, and a numeric
/// `quorum-minimum-redundancy` above the number of hosts with a disk can never be met: the
/// resource could never write. drbdadm only range-checks 1..32; rep knows the host count.
fn check_reachable_quorum(m: &Model) -> Result<(), ParseError> {
    for r in &m.resources {
        let voters = r.hosts.len() as u32;
        let with_disk = r.hosts.iter().filter(|h| !h.diskless()).count() as u32;
        // The resource's own option wins over common's (drbdadm's expand_opts).
        let find = |name: &str| {
            r.sections
                .options
                .iter()
                .rev()
                .find(|o| o.name == name)
                .or_else(|| m.common.options.iter().find(|o| o.name == name))
        };
        for (name, limit, what) in [
            ("quorum", voters, "hosts"),
            ("quorum-minimum-redundancy", with_disk, "hosts with a disk"),
        ] {
            let Some(opt) = find(name) else { continue };
            let value = opt.value.as_deref().and_then(Quorum::parse);
            if let Some(Quorum::Nodes(n)) = value {
                if n > limit {
                    return Err(opt.at.err(format!(
                        "{name} {n} can never be reached in resource {}: it has {limit} {what}; use majority, all or a number up to {limit}",
                        r.name
                    )));
                }
            }
        }
    }
    Ok(())
}
