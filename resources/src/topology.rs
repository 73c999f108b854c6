//! DRBD 9's multi-node syntax: `node-id`, `connection-mesh { hosts …; }` and explicit
//! `connection { host A; host B; }` sections, resolved to the list of host pairs that connect.
//! Checked the way drbdadm 9's post-parse checks them (hosts exist, two endpoints, node-ids
//! unique and present), plus what drbdadm only warns about or leaves to `drbdsetup` (a pair
//! connected twice, three hosts with no connection at all), because rep has no later step
//! that would catch them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::error::{did_you_mean, Location, ParseError};
use crate::host::{address, Host};
use crate::tree::{words_text, Stmt, Word, WordKind};

/// Node ids run 0..31 (DRBD_NODE_ID_MAX is 32 nodes; drbdadm's range check lets 32 through,
/// the kernel's per-node arrays do not).
pub const MAX_NODE_ID: u32 = 31;

/// How a connection came to be: it decides whether node-ids may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The one connection of a two-host resource without connection sections (DRBD 8.4).
    Implicit,
    /// One pair of a `connection-mesh`.
    Mesh,
    /// A `connection { host A; host B; }` section.
    Explicit,
}

/// One end of a connection.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// The host's label (first name of its `on` section).
    pub host: String,
    /// The address this end uses: the `on` section's, or the connection's own
    /// (`host A address IP:PORT;`, `host A port N;`).
    pub address: Option<SocketAddr>,
    /// Whether the connection section set the address or port itself.
    pub own_address: bool,
    #[serde(skip)]
    pub at: Location,
}

/// Equal wherever it was written (a dump read back is equal).
impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        (&self.host, self.address, self.own_address)
            == (&other.host, other.address, other.own_address)
    }
}
impl Eq for Endpoint {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub hosts: [Endpoint; 2],
    pub origin: Origin,
}

impl Connection {
    /// The far end seen from `host` (a label), if `host` is one end.
    pub fn peer_of(&self, host: &str) -> Option<(&Endpoint, &Endpoint)> {
        let [a, b] = &self.hosts;
        if a.host == host {
            Some((a, b))
        } else if b.host == host {
            Some((b, a))
        } else {
            None
        }
    }
}

/// `node-id N;`: digits only, 0..31.
pub(crate) fn node_id(f: &Stmt) -> Result<u32, ParseError> {
    let [_, v] = f.words.as_slice() else {
        return Err(f.err(format!(
            "node-id takes one number: node-id N; (0..{MAX_NODE_ID}, unique in the resource)"
        )));
    };
    let n = (v.kind == WordKind::Bare
        && !v.text.is_empty()
        && v.text.bytes().all(|b| b.is_ascii_digit()))
    .then(|| v.text.parse::<u64>().ok())
    .flatten();
    match n {
        Some(n) if n <= u64::from(MAX_NODE_ID) => Ok(n as u32),
        Some(_) => Err(f.err_at(
            v,
            format!("node-id {} => out of range [0..{MAX_NODE_ID}]; number the hosts of a resource from 0", v.text),
        )),
        None => Err(f.err_at(
            v,
            format!("node-id '{}' is not a number; write node-id N; (0..{MAX_NODE_ID})", v.text),
        )),
    }
}

/// An endpoint as written: `host NAME;`, `host NAME address [AF] IP:PORT;`, `host NAME port N;`.
#[derive(Debug)]
enum Own {
    None,
    Address(SocketAddr),
    Port(u16),
}

#[derive(Debug)]
struct HostLine<'a> {
    stmt: &'a Stmt,
    name: &'a Word,
    own: Own,
}

/// The connection statements of one resource, as read, before the hosts are known.
#[derive(Debug, Default)]
pub(crate) struct Draft<'a> {
    explicit: Vec<(&'a Stmt, [HostLine<'a>; 2])>,
    meshes: Vec<(&'a Stmt, Vec<&'a Word>)>,
}

const UNSUPPORTED_IN_CONNECTION: &str =
    "rep reads only `host NAME [address IP:PORT | port N];` lines here";

fn host_line(f: &Stmt) -> Result<HostLine<'_>, ParseError> {
    if f.block.is_some() {
        return Err(f.err("';' expected after the host line, but got '{'"));
    }
    let Some(name) = f.words.get(1).filter(|w| w.kind != WordKind::Bracket) else {
        return Err(f.err("host needs a name: host NAME;"));
    };
    let own = match &f.words[2..] {
        [] => Own::None,
        [k, rest @ ..] if k.text == "address" => Own::Address(address(f, rest)?),
        [k, p] if k.text == "port" => {
            let port = (p.text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.text.parse::<u16>().ok())
                .flatten()
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    f.err_at(
                        p,
                        format!("port '{}' is not a port number (1..65535)", p.text),
                    )
                })?;
            Own::Port(port)
        }
        [k, ..] if k.text == "via" => {
            return Err(f.err_at(k, "DRBD Proxy (`via proxy`) is not supported by rep"))
        }
        [k, ..] => {
            return Err(f.err_at(
                k,
                format!(
                    "'address', 'port' or ';' expected after 'host {}', but got '{}'",
                    name.text, k.text
                ),
            ))
        }
    };
    Ok(HostLine { stmt: f, name, own })
}

impl<'a> Draft<'a> {
    /// Reads one `connection` or `connection-mesh` statement of a resource.
    pub(crate) fn take(&mut self, st: &'a Stmt) -> Result<(), ParseError> {
        let Some(block) = &st.block else {
            return Err(st.err(format!("'{} {{ ... }}' needs a block", st.keyword())));
        };
        if st.keyword() == "connection-mesh" {
            if let Some(w) = st.words.get(1) {
                return Err(st.err_at(
                    w,
                    format!(
                        "'{{' expected after 'connection-mesh', but got '{}'",
                        w.text
                    ),
                ));
            }
            let mut names = Vec::new();
            for f in block {
                match f.keyword() {
                    "hosts" if f.block.is_none() => {
                        if f.words.len() < 2 {
                            return Err(f.err("hosts needs host names: hosts alpha beta witness;"));
                        }
                        names.extend(f.words[1..].iter());
                    }
                    "net" => {
                        return Err(f.err("per-connection net options are not supported by rep; put them in the resource's net section"))
                    }
                    other => {
                        return Err(f.err(format!(
                            "unknown keyword '{other}' in connection-mesh; expected hosts NAME...;{}",
                            did_you_mean(other, ["hosts"])
                        )))
                    }
                }
            }
            self.meshes.push((st, names));
            return Ok(());
        }
        // `connection NAME {`: drbdadm 9 warns that names are deprecated and ignores it.
        if let Some(w) = st.words.get(2) {
            return Err(st.err_at(
                w,
                format!(
                    "'{{' expected after '{}', but got '{}'",
                    words_text(&st.words[..2]),
                    w.text
                ),
            ));
        }
        let mut lines = Vec::new();
        for f in block {
            match f.keyword() {
                "host" => {
                    if lines.len() == 2 {
                        return Err(f.err("only two 'host' keywords per connection allowed; a connection joins two hosts (use connection-mesh for more)"));
                    }
                    lines.push(host_line(f)?);
                }
                "net" | "disk" | "volume" => {
                    return Err(f.err(format!(
                        "per-connection {} options are not supported by rep; put them in the resource's sections",
                        f.keyword()
                    )))
                }
                "path" => {
                    return Err(f.err(format!(
                        "multiple paths per connection are not supported by rep; {UNSUPPORTED_IN_CONNECTION}"
                    )))
                }
                other => {
                    return Err(f.err(format!(
                        "unknown keyword '{other}' in connection; {UNSUPPORTED_IN_CONNECTION}{}",
                        did_you_mean(other, ["host"])
                    )))
                }
            }
        }
        let Ok(pair) = <[HostLine; 2]>::try_from(lines) else {
            return Err(
                st.err("connection needs to have two endpoints: connection { host A; host B; }")
            );
        };
        self.explicit.push((st, pair));
        Ok(())
    }

    /// The connections of resource `name` (statement `res`), given its hosts (and their `on`
    /// statements, for error locations).
    pub(crate) fn resolve(
        self,
        res: &Stmt,
        name: &str,
        hosts: &[Host],
        host_stmts: &[&Stmt],
    ) -> Result<Vec<Connection>, ParseError> {
        let known: Vec<&str> = hosts
            .iter()
            .flat_map(|h| h.names.iter().map(String::as_str))
            .collect();
        let find = |st: &Stmt, w: &Word, what: &str| -> Result<usize, ParseError> {
            hosts
                .iter()
                .position(|h| h.names.contains(&w.text))
                .ok_or_else(|| {
                    st.err_at(
                        w,
                        format!(
                            "in resource {name}: there is no 'on {}' section for the host named in {what} (hosts: {}); add `on {} {{ node-id N; address IP:PORT; ... }}` or fix the name{}",
                            w.text,
                            known.join(", "),
                            w.text,
                            did_you_mean(&w.text, known.iter().copied())
                        ),
                    )
                })
        };
        let endpoint = |i: usize, line: Option<&HostLine>| {
            let h = &hosts[i];
            let (address, own_address) = match line.map(|l| &l.own) {
                Some(Own::Address(a)) => (Some(*a), true),
                Some(Own::Port(p)) => (
                    h.address.map(|mut a| {
                        a.set_port(*p);
                        a
                    }),
                    true,
                ),
                _ => (h.address, false),
            };
            let at = line.map_or_else(Location::default, |l| Location {
                file: l.stmt.file.clone(),
                line: l.stmt.line,
                col: l.stmt.col,
            });
            Endpoint {
                host: h.label(),
                address,
                own_address,
                at,
            }
        };
        let mut out: Vec<Connection> = Vec::new();
        let mut seen: BTreeMap<(usize, usize), (String, u32)> = BTreeMap::new();
        let mut add = |st: &Stmt, a: usize, b: usize, c: Connection| -> Result<(), ParseError> {
            let key = (a.min(b), a.max(b));
            if let Some((file, line)) = seen.get(&key) {
                return Err(st.err(format!(
                    "in resource {name}: hosts {} and {} are connected twice (first at {file}:{line}); remove one of the two",
                    c.hosts[0].host, c.hosts[1].host
                )));
            }
            seen.insert(key, (st.file.clone(), st.line));
            out.push(c);
            Ok(())
        };
        for (st, [l0, l1]) in &self.explicit {
            let (a, b) = (
                find(l0.stmt, l0.name, "this connection")?,
                find(l1.stmt, l1.name, "this connection")?,
            );
            if a == b {
                return Err(st.err(format!(
                    "in resource {name}: the connection names host {} at both ends; a connection joins two different hosts",
                    hosts[a].label()
                )));
            }
            let c = Connection {
                hosts: [endpoint(a, Some(l0)), endpoint(b, Some(l1))],
                origin: Origin::Explicit,
            };
            if let (Some(x), Some(y)) = (c.hosts[0].address, c.hosts[1].address) {
                if x == y {
                    return Err(st.err(format!(
                        "in resource {name}: {x} is used for both endpoints; give each host its own address"
                    )));
                }
            }
            add(st, a, b, c)?;
        }
        for (st, names) in &self.meshes {
            let mut idx: Vec<usize> = Vec::new();
            for w in names {
                let i = find(st, w, "the connection-mesh")?;
                // `hosts a a b` (or two names of one host) meshes the host once, as drbdadm
                // makes no connection of a host to itself.
                if !idx.contains(&i) {
                    idx.push(i);
                }
            }
            for (i, &a) in idx.iter().enumerate() {
                for &b in &idx[i + 1..] {
                    let c = Connection {
                        hosts: [endpoint(a, None), endpoint(b, None)],
                        origin: Origin::Mesh,
                    };
                    add(st, a, b, c)?;
                }
            }
        }
        if out.is_empty() {
            match hosts.len() {
                2 => out.push(Connection {
                    hosts: [endpoint(0, None), endpoint(1, None)],
                    origin: Origin::Implicit,
                }),
                n if n > 2 => {
                    let labels: Vec<String> = hosts.iter().map(Host::label).collect();
                    return Err(res.err(format!(
                        "resource {name} has {n} hosts ({}) but no connection between them; add `connection-mesh {{ hosts {}; }}` or explicit `connection {{ host A; host B; }}` sections",
                        labels.join(", "),
                        labels.join(" ")
                    )));
                }
                _ => {}
            }
        }
        check_node_ids(name, hosts, host_stmts, &out)?;
        Ok(out)
    }
}

/// Node-ids are unique, and present on every host, except where DRBD 9 makes them up itself:
/// two hosts joined by their implicit (or meshed) connection with none written, which is
/// every DRBD 8.4 file.
fn check_node_ids(
    name: &str,
    hosts: &[Host],
    host_stmts: &[&Stmt],
    conns: &[Connection],
) -> Result<(), ParseError> {
    let node_id_stmt = |i: usize| -> &Stmt {
        host_stmts[i]
            .block
            .iter()
            .flatten()
            .find(|f| f.keyword() == "node-id")
            .unwrap_or(host_stmts[i])
    };
    let mut by_id: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let Some(id) = h.node_id else { continue };
        if let Some(&first) = by_id.get(&id) {
            let f = node_id_stmt(i);
            return Err(f.err(format!(
                "conflicting use of node-id {id} in resource {name}: on {} (line {}) and on {}; every host needs its own node-id",
                hosts[first].label(),
                node_id_stmt(first).line,
                h.label()
            )));
        }
        by_id.insert(id, i);
    }
    let any = !by_id.is_empty();
    let explicit = conns.iter().any(|c| c.origin == Origin::Explicit);
    if !(any || explicit || hosts.len() > 2) {
        return Ok(());
    }
    let why = if hosts.len() > 2 {
        format!("a resource with {} hosts", hosts.len())
    } else if explicit {
        "a resource with connection sections".to_owned()
    } else {
        "a resource where another host has one".to_owned()
    };
    for (i, h) in hosts.iter().enumerate() {
        if h.node_id.is_none() {
            let label = if h.floating {
                "floating".to_owned()
            } else {
                format!("on {}", h.names.join(" "))
            };
            return Err(host_stmts[i].err(format!(
                "in resource {name}, {label} {{ ... }}: 'node-id' keyword missing; {why} needs `node-id N;` (0..{MAX_NODE_ID}, unique) in every host section"
            )));
        }
    }
    Ok(())
}
