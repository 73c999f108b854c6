//! Unit tests of DRBD 9's multi-node and quorum syntax: every accepted value, every rejection.

use std::path::Path;

use super::*;
use crate::quorum::{OnNoQuorum, Quorum, QuorumConf};
use crate::topology::Origin;

fn parse(text: &str) -> Result<Config, ParseError> {
    parse_str(text, "q.res", Path::new("/nonexistent"))
}

/// Three hosts (alpha, beta with disks; witness diskless) with `opts` in the resource body,
/// `a`/`b`/`w` inside the host sections and `tail` (connections) at the end.
fn three(opts: &str, a: &str, b: &str, w: &str, tail: &str) -> String {
    format!(
        "resource r0 {{\n  device /dev/drbd0;\n  disk /dev/sdb1;\n  meta-disk internal;\n  {opts}\n  on alpha {{ {a} address 10.0.0.1:7789; }}\n  on beta {{ {b} address 10.0.0.2:7789; }}\n  on witness {{ {w} disk none; address 10.0.0.3:7789; }}\n  {tail}\n}}\n"
    )
}

const MESH: &str = "connection-mesh { hosts alpha beta witness; }";

fn ids3(opts: &str, tail: &str) -> String {
    three(opts, "node-id 0;", "node-id 1;", "node-id 2;", tail)
}

fn err(text: &str) -> ParseError {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// The error names the line and says `needles`.
fn rejects(text: &str, line: u32, needles: &[&str]) {
    let e = err(text);
    assert_eq!(e.line, line, "{e}");
    assert!(e.to_string().starts_with(&format!("q.res:{line}:")), "{e}");
    for n in needles {
        assert!(e.message.contains(n), "'{n}' missing in: {e}");
    }
}

fn quorum_of(text: &str) -> QuorumConf {
    parse(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .node_view("r0", "alpha")
        .unwrap()
        .quorum
}

#[test]
fn every_quorum_value_is_accepted_and_typed() {
    for (text, q) in [
        ("off", Quorum::Off),
        ("majority", Quorum::Majority),
        ("all", Quorum::All),
        ("1", Quorum::Nodes(1)),
        ("2", Quorum::Nodes(2)),
        ("3", Quorum::Nodes(3)),
    ] {
        let c = quorum_of(&ids3(&format!("options {{ quorum {text}; }}"), MESH));
        assert_eq!(c.quorum, q, "{text}");
        assert_eq!(c.quorum.to_string(), text);
        // Two hosts have a disk: 3 is rejected (bad_quorum_values_are_rejected_at_their_place).
        if text != "3" {
            let c = quorum_of(&ids3(
                &format!("options {{ quorum-minimum-redundancy {text}; }}"),
                MESH,
            ));
            assert_eq!(c.minimum_redundancy, q, "{text}");
        }
    }
    for (text, v) in [
        ("io-error", OnNoQuorum::IoError),
        ("suspend-io", OnNoQuorum::SuspendIo),
    ] {
        let c = quorum_of(&ids3(&format!("options {{ on-no-quorum {text}; }}"), MESH));
        assert_eq!(c.on_no_quorum, v);
        assert_eq!(v.to_string(), text);
    }
    // Defaults: DRBD 9's.
    assert_eq!(quorum_of(&ids3("", MESH)), QuorumConf::default());
    assert_eq!(QuorumConf::default().on_no_quorum, OnNoQuorum::IoError);
    // common, overridden by the resource; a repeated option: the later one counts.
    let common = "common { options { quorum all; on-no-quorum suspend-io; } }\n";
    let c = quorum_of(&format!(
        "{common}{}",
        ids3("options { quorum 1; quorum 2; }", MESH)
    ));
    assert_eq!(c.quorum, Quorum::Nodes(2));
    assert_eq!(c.on_no_quorum, OnNoQuorum::SuspendIo);
    assert_eq!(Quorum::Majority.needed(3), Some(2));
    assert_eq!(Quorum::All.needed(3), Some(3));
    assert_eq!(Quorum::Off.needed(3), None);
}

#[test]
fn bad_quorum_values_are_rejected_at_their_place() {
    for (opt, needles) in [
        ("quorum 0;", &["quorum 0 is out of range", "[1..32]"][..]),
        ("quorum 33;", &["quorum 33 is out of range"]),
        (
            "quorum most;",
            &["unknown value for quorum 'most'", "majority"],
        ),
        ("quorum MAJORITY;", &["unknown value for quorum 'MAJORITY'"]),
        ("quorum 2k;", &["unknown value for quorum '2k'"]),
        ("quorum -1;", &["unknown value for quorum '-1'"]),
        ("quorum;", &["quorum needs a value"]),
        ("quorum majority all;", &["';' expected"]),
        (
            "quorum-minimum-redundancy 0;",
            &["quorum-minimum-redundancy 0 is out of range"],
        ),
        (
            "quorum-minimum-redundancy most;",
            &["unknown value for quorum-minimum-redundancy"],
        ),
        (
            "on-no-quorum freeze;",
            &[
                "unknown value for on-no-quorum 'freeze'",
                "io-error, suspend-io",
            ],
        ),
        ("on-no-quorum;", &["on-no-quorum needs a value"]),
        (
            "quroum majority;",
            &["unknown keyword 'quroum'", "did you mean 'quorum'"],
        ),
    ] {
        rejects(&ids3(&format!("options {{\n {opt} }}"), MESH), 6, needles);
    }
    // A number of nodes the resource does not have can never be reached.
    rejects(
        &ids3("options {\n quorum 4; }", MESH),
        6,
        &[
            "quorum 4 can never be reached in resource r0",
            "3 hosts",
            "up to 3",
        ],
    );
    rejects(
        &ids3("options {\n quorum-minimum-redundancy 3; }", MESH),
        6,
        &["can never be reached", "2 hosts with a disk"],
    );
    // ... also when it comes from common.
    let e = err(&format!(
        "common {{ options {{ quorum 3; }} }}\n{}",
        "resource r0 { device /dev/drbd0; disk /d; meta-disk internal;\n on a { address 10.0.0.1:7789; }\n on b { address 10.0.0.2:7789; } }\n"
    ));
    assert_eq!(e.line, 1, "{e}");
    assert!(e.message.contains("2 hosts"), "{e}");
}

#[test]
fn node_ids_accepted_and_rejected() {
    let c = parse(&three("", "node-id 0;", "node-id 30;", "node-id 31;", MESH)).unwrap();
    let ids: Vec<Option<u32>> = c.model.resources[0]
        .hosts
        .iter()
        .map(|h| h.node_id)
        .collect();
    assert_eq!(ids, [Some(0), Some(30), Some(31)]);
    for (bad, needles) in [
        ("node-id 32;", &["node-id 32 => out of range [0..31]"][..]),
        ("node-id 100;", &["out of range [0..31]"]),
        ("node-id 4294967296;", &["out of range"]),
        ("node-id -1;", &["'-1' is not a number"]),
        ("node-id two;", &["'two' is not a number"]),
        ("node-id 0x2;", &["'0x2' is not a number"]),
        ("node-id \"2\";", &["is not a number"]),
        ("node-id;", &["node-id takes one number"]),
        ("node-id 2 3;", &["node-id takes one number"]),
    ] {
        let text = three("", "node-id 0;", "node-id 1;", bad, MESH)
            .replace("  on witness", "  on witness\n");
        rejects(&text, 9, needles);
    }
    rejects(
        &three("", "node-id 0;", "node-id 1;", "\nnode-id 1;", MESH),
        9,
        &[
            "conflicting use of node-id 1",
            "on beta (line 7) and on witness",
        ],
    );
    rejects(
        &three(
            "",
            "node-id 0;\n node-id 0;",
            "node-id 1;",
            "node-id 2;",
            MESH,
        ),
        7,
        &["conflicting use of node-id statement"],
    );
    // Missing: on a third host, on one of two, with an explicit connection.
    rejects(
        &three("", "node-id 0;", "node-id 1;", "", MESH),
        8,
        &["on witness { ... }: 'node-id' keyword missing", "3 hosts"],
    );
    let two = |a: &str, b: &str, tail: &str| {
        format!("resource r0 {{ device /dev/drbd0; disk /d; meta-disk internal;\n on alpha {{ {a} address 10.0.0.1:7789; }}\n on beta {{ {b} address 10.0.0.2:7789; }}\n {tail} }}\n")
    };
    rejects(
        &two("node-id 0;", "", ""),
        3,
        &["on beta", "another host has one"],
    );
    rejects(
        &two("", "", "connection { host alpha; host beta; }"),
        2,
        &["on alpha", "connection sections"],
    );
    // DRBD 8.4 files and two-host meshes need none.
    parse(&two("", "", "")).unwrap();
    parse(&two("", "", "connection-mesh { hosts alpha beta; }")).unwrap();
    parse(&two(
        "node-id 3;",
        "node-id 9;",
        "connection { host alpha; host beta; }",
    ))
    .unwrap();
}

#[test]
fn disk_none_is_a_diskless_host() {
    let c = parse(&ids3("", MESH)).unwrap();
    let r = &c.model.resources[0];
    assert_eq!(
        r.hosts.iter().map(Host::diskless).collect::<Vec<_>>(),
        [false, false, true]
    );
    let w = &r.hosts[2].volumes[0];
    assert!(w.diskless() && w.disk.is_none() && w.meta_disk.is_none());
    assert_eq!(r.hosts[0].volumes[0].disk.as_deref(), Some("/dev/sdb1"));
    // meta-disk is ignored on a diskless host, and not needed there.
    parse(&three(
        "",
        "node-id 0;",
        "node-id 1;",
        "node-id 2; meta-disk /dev/x [0];",
        MESH,
    ))
    .unwrap();
    let no_meta = "resource r0 { device /dev/drbd0;\n on alpha { node-id 0; disk /a; meta-disk internal; address 10.0.0.1:7789; }\n on w { node-id 1; disk none; address 10.0.0.2:7789; } }\n";
    let c = parse(no_meta).unwrap();
    assert!(c.model.resources[0].hosts[1].diskless());
    // A host with a disk still needs its meta-disk (DRBD 8.4's rule, kept).
    rejects(
        "resource r0 { device /dev/drbd0;\n on alpha { disk /a; address 10.0.0.1:7789; }\n on w { disk none; address 10.0.0.2:7789; } }\n",
        2,
        &["'meta-disk' keyword missing"],
    );
    // Per volume: the host is diskless only if every volume is.
    let vols = "resource r0 {\n on a { node-id 0; address 10.0.0.1:7789; volume 0 { device minor 0; disk /a; meta-disk internal; } volume 1 { device minor 1; disk /b; meta-disk internal; } }\n on w { node-id 1; address 10.0.0.2:7789; volume 0 { device minor 0; disk none; } volume 1 { device minor 1; disk /c; meta-disk internal; } } }\n";
    let c = parse(vols).unwrap();
    let w = &c.model.resources[0].hosts[1];
    assert!(!w.diskless() && w.volumes[0].diskless() && !w.volumes[1].diskless());
}

fn pairs(c: &Config) -> Vec<(String, String, Origin)> {
    c.model.resources[0]
        .connections
        .iter()
        .map(|c| (c.hosts[0].host.clone(), c.hosts[1].host.clone(), c.origin))
        .collect()
}

fn p(a: &str, b: &str, o: Origin) -> (String, String, Origin) {
    (a.into(), b.into(), o)
}

#[test]
fn meshes_expand_to_pairs_and_connections_are_kept() {
    use Origin::*;
    let c = parse(&ids3("", MESH)).unwrap();
    assert_eq!(
        pairs(&c),
        [
            p("alpha", "beta", Mesh),
            p("alpha", "witness", Mesh),
            p("beta", "witness", Mesh)
        ]
    );
    // A host named twice, and `hosts` statements that add up.
    let c = parse(&ids3(
        "",
        "connection-mesh { hosts alpha beta alpha; hosts witness; }",
    ))
    .unwrap();
    assert_eq!(pairs(&c).len(), 3);
    // Explicit sections (one named, as drbdadm 9 still reads) and a mesh together.
    let c = parse(&ids3(
        "",
        "connection-mesh { hosts beta witness; }\n connection c1 { host alpha; host beta; }\n connection { host witness; host alpha; }",
    ))
    .unwrap();
    assert_eq!(
        pairs(&c),
        [
            p("alpha", "beta", Explicit),
            p("witness", "alpha", Explicit),
            p("beta", "witness", Mesh)
        ]
    );
    // Two hosts without connection sections: the implicit one (DRBD 8.4).
    let c = parse("resource r0 { device /dev/drbd0; disk /d; meta-disk internal;\n on a { address 10.0.0.1:7789; }\n on b { address 10.0.0.2:7789; } }\n").unwrap();
    assert_eq!(pairs(&c), [p("a", "b", Implicit)]);
    // A second name of a host section names the host.
    let multi = ids3("", "connection-mesh { hosts alpha beta witness; }")
        .replace("on alpha {", "on alpha alpha2 {")
        .replace("hosts alpha beta", "hosts alpha2 beta");
    assert_eq!(pairs(&parse(&multi).unwrap())[0].0, "alpha");
    // The dump reads back to the same model.
    for text in [ids3("options { quorum majority; }", MESH), ids3("", "connection { host alpha address ipv6 [fd00::1]:7790; host beta port 7791; }\n connection { host beta; host witness; }")] {
        let c = parse(&text).unwrap();
        let again = parse(&c.dump(None).unwrap()).unwrap();
        assert_eq!(again.model, c.model);
    }
}

#[test]
fn connection_addresses_and_ports() {
    let c = parse(&ids3(
        "",
        "connection { host alpha address 10.9.0.1:7800; host beta address ipv4 10.9.0.2:7800; }\n connection { host alpha port 7801; host witness; }\n connection { host beta address ipv6 [fd00::2]:7802; host witness address ipv6 [fd00::3]:7802; }",
    ))
    .unwrap();
    let r = &c.model.resources[0];
    let addr = |i: usize, j: usize| r.connections[i].hosts[j].address.unwrap().to_string();
    assert_eq!(addr(0, 0), "10.9.0.1:7800");
    assert_eq!(addr(0, 1), "10.9.0.2:7800");
    assert_eq!(
        addr(1, 0),
        "10.0.0.1:7801",
        "port only: the on section's IP"
    );
    assert_eq!(
        addr(1, 1),
        "10.0.0.3:7789",
        "nothing: the on section's address"
    );
    assert!(!r.connections[1].hosts[1].own_address);
    assert_eq!(addr(2, 0), "[fd00::2]:7802");
    let v = c.node_view("r0", "alpha").unwrap();
    assert_eq!(v.peers.len(), 2);
    assert_eq!(v.peers[0].node, "beta");
    assert_eq!(v.peers[0].my_address.unwrap().to_string(), "10.9.0.1:7800");
    assert_eq!(v.peers[1].node, "witness");
    assert!(v.peers[1].diskless);
    assert_eq!(v.peers[1].node_id, Some(2));
    // The first peer's connection gives the view's own and peer address.
    assert_eq!(v.address.unwrap().to_string(), "10.9.0.1:7800");
    assert_eq!(v.peer_address.unwrap().to_string(), "10.9.0.2:7800");
    assert_eq!(v.peer_node.as_deref(), Some("beta"));
}

#[test]
fn bad_connections_are_rejected_with_the_fix() {
    let at = |tail: &str, line: u32, needles: &[&str]| rejects(&ids3("", tail), line, needles);
    at(
        "connection-mesh { hosts alpha beta\n gama; }",
        10,
        &[
            "no 'on gama' section",
            "connection-mesh",
            "hosts: alpha, beta, witness",
        ],
    );
    at(
        "connection {\n host alpha;\n host gamma; }",
        11,
        &["no 'on gamma' section", "this connection"],
    );
    at("connection { host alpha; }", 9, &["two endpoints"]);
    at("connection { }", 9, &["two endpoints"]);
    at(
        "connection {\n host alpha;\n host beta;\n host witness; }",
        12,
        &["only two 'host' keywords"],
    );
    at(
        "connection { host alpha; host alpha; }",
        9,
        &["names host alpha at both ends"],
    );
    at(
        "connection { host alpha address 10.0.0.2:7789; host beta; }",
        9,
        &["10.0.0.2:7789 is used for both endpoints"],
    );
    at(
        "connection { host alpha address 10.0.0.9; host beta; }",
        9,
        &["no port"],
    );
    at(
        "connection { host alpha address alpha.example:7789; host beta; }",
        9,
        &["host names are not allowed"],
    );
    at(
        "connection { host alpha port 0; host beta; }",
        9,
        &["port '0' is not a port number"],
    );
    at(
        "connection { host alpha port 70000; host beta; }",
        9,
        &["port '70000'"],
    );
    at(
        "connection { host alpha port x; host beta; }",
        9,
        &["port 'x'"],
    );
    at(
        "connection { host alpha via; host beta; }",
        9,
        &["DRBD Proxy"],
    );
    at(
        "connection { host alpha bogus; host beta; }",
        9,
        &["'address', 'port' or ';' expected after 'host alpha'"],
    );
    at("connection { host; host beta; }", 9, &["host needs a name"]);
    at(
        "connection { host alpha; host beta; net { protocol A; } }",
        9,
        &["per-connection net options are not supported"],
    );
    at(
        "connection { host alpha; host beta; path { host alpha; host beta; } }",
        9,
        &["multiple paths"],
    );
    at(
        "connection { host alpha; host beta; _peer_node_id 1; }",
        9,
        &["unknown keyword '_peer_node_id' in connection"],
    );
    at("connection;", 9, &["needs a block"]);
    at(
        "connection a b { host alpha; host beta; }",
        9,
        &["'{' expected after 'connection a'"],
    );
    at("connection-mesh { hosts; }", 9, &["hosts needs host names"]);
    at(
        "connection-mesh { host alpha beta; }",
        9,
        &[
            "unknown keyword 'host' in connection-mesh",
            "did you mean 'hosts'",
        ],
    );
    at(
        "connection-mesh { hosts alpha beta; net { protocol A; } }",
        9,
        &["per-connection net options"],
    );
    at(
        "connection-mesh m { hosts alpha beta; }",
        9,
        &["'{' expected after 'connection-mesh'"],
    );
    // Twice the same pair: DRBD would refuse the second at `up`; rep says so at once.
    at(
        &format!("{MESH}\n connection {{ host beta; host alpha; }}"),
        9,
        &[
            "hosts alpha and beta are connected twice",
            "first at q.res:10",
        ],
    );
    at(
        "connection { host alpha; host beta; }\n connection { host beta; host alpha; }",
        10,
        &["connected twice"],
    );
    // Three hosts and nothing connecting them (drbdadm only warns).
    rejects(
        &ids3("", ""),
        1,
        &[
            "has 3 hosts (alpha, beta, witness) but no connection",
            "connection-mesh { hosts alpha beta witness; }",
        ],
    );
    rejects(
        &ids3("", "connection-mesh { hosts alpha; }"),
        1,
        &["no connection"],
    );
    // A connection's own address is a socket another resource may not use.
    let two = format!(
        "{}resource r1 {{ device /dev/drbd1; disk /e; meta-disk internal;\n on alpha {{ node-id 0; address 10.0.0.1:7790; }}\n on beta {{ node-id 1; address 10.0.0.2:7790; }}\n connection {{\n host alpha address 10.0.0.1:7789;\n host beta; }} }}\n",
        ids3("", MESH)
    );
    rejects(
        &two,
        15,
        &["conflicting use of IP 'alpha:10.0.0.1:7789'", "resource r0"],
    );
    // ... but its own resource may (the on section's address again).
    parse(&ids3(
        "",
        "connection { host alpha address 10.0.0.1:7789; host beta; }",
    ))
    .unwrap();
    // Unsupported host-section keywords say so.
    rejects(
        &three(
            "",
            "node-id 0;\n options { quorum majority; }",
            "node-id 1;",
            "node-id 2;",
            MESH,
        ),
        7,
        &["unknown keyword 'options' in a host section"],
    );
}

#[test]
fn runnable_only_as_two_hosts_with_disks() {
    let two = |opts: &str, b_disk: &str| {
        format!("resource r0 {{ device /dev/drbd0; meta-disk internal; {opts}\n on alpha {{ node-id 0; disk /a; address 10.0.0.1:7789; }}\n on beta {{ node-id 1; disk {b_disk}; address 10.0.0.2:7789; }} }}\n")
    };
    let why = |text: &str, node: &str| {
        parse(text)
            .unwrap()
            .node_view("r0", node)
            .unwrap()
            .not_runnable()
    };
    assert_eq!(why(&two("", "/b"), "alpha"), None);
    assert_eq!(
        why(
            &two("options { quorum off; on-no-quorum suspend-io; }", "/b"),
            "alpha"
        ),
        None
    );
    // Quorum between two data nodes is enforced (docs/quorum.md).
    assert_eq!(
        why(&two("options { quorum majority; }", "/b"), "alpha"),
        None
    );
    assert_eq!(
        why(
            &two("options { quorum-minimum-redundancy 1; }", "/b"),
            "alpha"
        ),
        None
    );
    // A diskless node needs two data nodes to serve; a data node, one data peer.
    let w = why(&two("", "none"), "alpha").unwrap();
    assert!(
        w.contains("connects to 0 hosts with a disk and 1 diskless"),
        "{w}"
    );
    let w = why(&two("", "none"), "beta").unwrap();
    assert!(
        w.contains("this node (beta) is diskless") && w.contains("exactly two hosts with a disk"),
        "{w}"
    );
    // Two data nodes and a witness run, with quorum on (a witness only serves quorum).
    for node in ["alpha", "beta", "witness"] {
        assert_eq!(
            why(&ids3("options { quorum majority; }", MESH), node),
            None,
            "{node}"
        );
        let w = why(&ids3("", MESH), node).unwrap();
        assert!(w.contains("quorum"), "{node}: {w}");
    }
    let tls = "net { tls yes; tls-ca /ca.pem; tls-certificate /c.pem; tls-privkey /k.pem; }";
    let w = why(
        &ids3(&format!("options {{ quorum majority; }} {tls}"), MESH),
        "alpha",
    )
    .unwrap();
    assert!(w.contains("TLS"), "{w}");
}

#[test]
fn a_data_node_with_a_witness_replicates_to_the_other_data_node() {
    let text = ids3("options { quorum majority; }", MESH);
    let m = parse(&text).unwrap();
    let v = m.node_view("r0", "alpha").unwrap();
    assert_eq!(v.peer_node.as_deref(), Some("beta"));
    assert_eq!(
        v.peer_address.map(|a| a.to_string()).as_deref(),
        Some("10.0.0.2:7789")
    );
    assert_eq!(v.witness().map(|w| w.node.as_str()), Some("witness"));
    let w = m.node_view("r0", "witness").unwrap();
    assert!(w.diskless && w.witness().is_none());
}

#[test]
fn two_node_files_keep_their_view() {
    let text = "resource r0 { device /dev/drbd0; meta-disk internal;\n on a { disk /a; address 10.0.0.1:7789; }\n on b { disk /b; address 10.0.0.2:7789; } }\n";
    let v = parse(text).unwrap().node_view("r0", "a").unwrap();
    assert_eq!(v.address.unwrap().to_string(), "10.0.0.1:7789");
    assert_eq!(v.peer_address.unwrap().to_string(), "10.0.0.2:7789");
    assert_eq!(v.peer_node.as_deref(), Some("b"));
    assert_eq!((v.node_id, v.diskless, v.hosts), (None, false, 2));
    assert_eq!(v.peers.len(), 1);
    assert_eq!(v.quorum, QuorumConf::default());
    // node-ids and a mesh of the same two hosts give the same connection.
    let with_ids = text
        .replace("on a {", "on a { node-id 0;")
        .replace("on b {", "on b { node-id 1;")
        .replace("} }\n", "}\n connection-mesh { hosts a b; } }\n");
    let w = parse(&with_ids).unwrap().node_view("r0", "a").unwrap();
    assert_eq!(
        (w.address, w.peer_address, &w.peer_node),
        (v.address, v.peer_address, &v.peer_node)
    );
    assert_eq!(w.node_id, Some(0));
}

/// `adjust` compares serialized views and refuses whole a field it does not know: a config
/// that grew a third host must differ there, a two-host one must look as before.
#[test]
fn serialized_view_shows_hosts_only_above_two() {
    let text = "resource r0 { device /dev/drbd0; meta-disk internal;\n on a { disk /a; address 10.0.0.1:7789; }\n on b { disk /b; address 10.0.0.2:7789; } }\n";
    let two = serde_json::to_value(parse(text).unwrap().node_view("r0", "a").unwrap()).unwrap();
    assert!(
        two.get("hosts").is_none() && two.get("peers").is_none(),
        "{two}"
    );
    let three = serde_json::to_value(
        parse(&ids3("", MESH))
            .unwrap()
            .node_view("r0", "alpha")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(three["hosts"], 3);
    assert_eq!(three["quorum"]["quorum"], "off");
}
