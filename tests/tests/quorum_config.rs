//! Goal: DRBD 9's quorum/witness configuration (docs/quorum.md, "Configuration") is parsed and
//! validated, and a resource of a shape rep does not run (a witness without quorum, three hosts
//! with a disk) is refused by `up` and `create-md` before anything starts, never run as a plain
//! two-node resource (two data nodes and a witness: quorum_witness.rs). Two-node files
//! using the new syntax keep running (their quorum: quorum_two_node.rs). Method: the real repadm/repd on such files.

use std::net::TcpListener;

use rep_tests::{free_port, Cluster, ClusterOpts};

/// The cluster's config with `node-id`s on both hosts, plus `extra` before the final `}`.
fn rewrite(c: &Cluster, extra: &str) {
    c.edit_config(|text| {
        let text = text
            .replacen("  on node-a {\n", "  on node-a {\n    node-id 0;\n", 1)
            .replacen("  on node-b {\n", "  on node-b {\n    node-id 1;\n", 1);
        let end = text.rfind('}').expect("resource end");
        format!("{}{extra}\n}}\n", &text[..end])
    });
}

#[test]
fn unrunnable_shapes_are_refused_by_up_and_create_md_and_start_nothing() {
    let c = Cluster::new("quorum-witness", ClusterOpts::default());
    let port = free_port();
    // A witness serves quorum only: without `quorum`, the file is refused.
    rewrite(
        &c,
        &format!("  on witness {{\n    node-id 2;\n    disk none;\n    address 127.0.0.3:{port};\n  }}\n  connection-mesh {{ hosts node-a node-b witness; }}\n"),
    );
    let a = c.a();
    let dump = a.ok(&["dump", "all"]);
    assert!(
        dump.contains("hosts            node-a node-b witness;"),
        "{dump}"
    );
    let refused = |why: &str| {
        for cmd in [&["up", "r0"][..], &["create-md", "r0"], &["up", "all"]] {
            let (code, err) = a.fails(cmd);
            assert_eq!(code, 10, "{cmd:?}: {err}");
            assert!(err.contains(why), "{cmd:?}: {err}");
        }
        assert!(a.pid().is_none(), "no daemon may start");
        let md = std::fs::read(&a.disk).expect("backing file");
        assert!(
            md.iter().all(|&b| b == 0),
            "create-md must not have written metadata"
        );
    };
    refused("a witness only serves quorum");
    // Three hosts with a disk each.
    c.edit_config(|t| {
        t.replace(
            "disk none;",
            &format!("disk {};", c.dir.join("c.img").display()),
        )
        .replace(
            "connection-mesh",
            "options { quorum majority; }\n  connection-mesh",
        )
    });
    refused("connects to 2 hosts with a disk");
}

#[test]
fn two_node_files_in_drbd9_syntax_run() {
    let c = Cluster::new("quorum-two-node", ClusterOpts::default());
    rewrite(&c, "  options { quorum majority; }\n");

    // Same two hosts with node-ids, quorum off and an explicit connection that gives the pair
    // its own port: a plain two-node resource. The `on` port is held by someone else, so the
    // pair can only connect if both ends use the connection's addresses.
    let own = free_port();
    let text = std::fs::read_to_string(&c.a().config).expect("config");
    let text = text.replace("quorum majority;", "quorum off;");
    let end = text.rfind('}').expect("end");
    let text = format!(
        "{}  connection {{\n    host node-a address 127.0.0.1:{own};\n    host node-b address 127.0.0.2:{own};\n  }}\n}}\n",
        &text[..end]
    );
    std::fs::write(&c.a().config, &text).expect("write");
    let on_port: u16 = text
        .split("address 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|p| p.parse().ok())
        .expect("on-section port");
    let _squatter = TcpListener::bind(("127.0.0.1", on_port)).expect("hold the on-section port");
    for n in [c.a(), c.b()] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    c.a()
        .wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    c.b()
        .wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    for n in [c.a(), c.b()] {
        n.ok(&["down", "r0"]);
    }
}
