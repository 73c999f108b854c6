//! Unit tests of the parser, model and node view.

use std::path::Path;

use super::*;

const TWO: &str = "resource r0 {\n  protocol C;\n  device /dev/drbd0;\n  meta-disk internal;\n  net { ping-int 3; shared-secret \"s\"; cram-hmac-alg sha1; }\n  disk { resync-rate 40M; size 1G; }\n  on node-a { disk /a.img; address 127.0.0.1:7789; nbd-listen 127.0.0.1:10809; metrics-listen 127.0.0.1:9942; }\n  on node-b { disk /b.img; address 127.0.0.2:7789; meta-disk /dev/sdc [2]; }\n}\n";

fn parse(text: &str) -> Result<Config, ParseError> {
    parse_str(text, "t.res", Path::new("/nonexistent"))
}

#[test]
fn node_view_merges_defaults_and_units() {
    let c = parse(&format!(
        "common {{ net {{ ko-count 3; protocol A; }} }}\n{TWO}"
    ))
    .unwrap();
    let a = c.node_view("r0", "node-a").unwrap();
    assert_eq!(
        a.net.protocol,
        Protocol::C,
        "the resource's protocol overrides common"
    );
    assert_eq!(a.net.ko_count, 3);
    assert_eq!(a.net.ping_int_s, 3);
    assert_eq!(a.net.timeout_ds, 60);
    assert_eq!(a.disk_conf.resync_rate_kib, 40 << 10);
    assert_eq!(a.disk_conf.size_bytes, Some(1 << 30));
    assert_eq!(a.nbd_listen, Some("127.0.0.1:10809".parse().unwrap()));
    assert_eq!(a.metrics_listen, Some("127.0.0.1:9942".parse().unwrap()));
    assert_eq!(a.peer_node.as_deref(), Some("node-b"));
    assert_eq!(a.peer_address, Some("127.0.0.2:7789".parse().unwrap()));
    assert_eq!(a.minor, 0);
    assert_eq!(a.meta_disk, MetaDisk::Internal);
    let b = c.node_view("r0", "node-b").unwrap();
    assert_eq!(
        b.meta_disk,
        MetaDisk::External {
            path: "/dev/sdc".into(),
            index: Some(2)
        }
    );
    assert!(
        matches!(c.node_view("r0", "node-c"), Err(ConfigError::NotDefinedForHost { hosts, .. }) if hosts == ["node-a", "node-b"])
    );
    assert!(matches!(
        c.node_view("r9", "node-a"),
        Err(ConfigError::UnknownResource { .. })
    ));
}

#[test]
fn dump_leaves_out_rep_keywords_and_reparses_identically() {
    let c = parse(TWO).unwrap();
    let d = c.dump(None).unwrap();
    assert!(!d.contains("nbd-listen"));
    assert!(!d.contains("metrics-listen"));
    assert!(d.contains("meta-disk        /dev/sdc [2];"), "{d}");
    let again = parse(&d).unwrap();
    assert_eq!(again.dump(None).unwrap(), d);
    assert!(c.dump(Some("nope")).is_err());
}

#[test]
fn busy_poll_is_a_host_option_in_microseconds_left_out_of_dump() {
    let with = |stmt: &str| TWO.replacen("metrics-listen 127.0.0.1:9942;", stmt, 1);
    let c = parse(TWO).unwrap();
    assert_eq!(
        c.node_view("r0", "node-a").unwrap().busy_poll_us,
        crate::model::BUSY_POLL_DEFAULT_US
    );
    for (stmt, us) in [
        ("busy-poll 0;", 0),
        ("busy-poll 250;", 250),
        ("busy-poll 10000;", 10_000),
    ] {
        let c = parse(&with(stmt)).unwrap();
        assert_eq!(
            c.node_view("r0", "node-a").unwrap().busy_poll_us,
            us,
            "{stmt}"
        );
        assert_eq!(
            c.node_view("r0", "node-b").unwrap().busy_poll_us,
            100,
            "per host"
        );
        assert!(!c.dump(None).unwrap().contains("busy-poll"));
    }
    for bad in [
        "busy-poll 10001;",
        "busy-poll -1;",
        "busy-poll 1ms;",
        "busy-poll;",
        "busy-poll 1 2;",
    ] {
        let e = parse(&with(bad)).unwrap_err();
        assert_eq!(e.line, 7, "{bad}: {e}");
        assert!(e.message.contains("busy-poll"), "{bad}: {e}");
    }
}

#[test]
fn errors_name_line_and_suggest() {
    let e = parse("resource r0 {\n  net {\n    ping-intt 5;\n  }\n}\n").unwrap_err();
    assert_eq!((e.line, e.col), (3, 5));
    assert!(
        e.to_string().starts_with(
            "t.res:3:5: unknown keyword 'ping-intt' in net section; did you mean 'ping-int'?"
        ),
        "{e}"
    );
    let e = parse("resource r0 {\n  net { timeout 601; }\n}").unwrap_err();
    assert!(e.message.contains("out of range [1..600]"), "{e}");
    let e = parse("resource r0 {\n  protocol D;\n}").unwrap_err();
    assert!(
        e.message
            .contains("unknown protocol 'D', should be one of A, B, C"),
        "{e}"
    );
    let e = parse("resource r0 {\n  protocol C\n  net { }\n}").unwrap_err();
    assert!(e.message.contains("';' expected"), "{e}");
    let e = parse("resource r0 { on a { address node-b:7789; } }").unwrap_err();
    assert!(e.message.contains("host names are not allowed"), "{e}");
    let e = parse("resource r0 {").unwrap_err();
    assert!(e.message.contains("never closed"), "{e}");
}

#[test]
fn bytes_that_are_not_utf8_are_an_error_not_a_panic() {
    assert!(parse_bytes(&[0xff, 0xfe, b'{'], "x.res", Path::new("/")).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_bytes(&bytes, "fuzz.res", Path::new("/nonexistent"));
        }

        #[test]
        fn mutated_configs_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut b = TWO.as_bytes().to_vec();
            let at = pos % b.len();
            b[at] = byte;
            if let Ok(c) = parse_bytes(&b, "fuzz.res", Path::new("/nonexistent")) {
                let d = c.dump(None).unwrap();
                let again = parse(&d).unwrap();
                prop_assert_eq!(again.dump(None).unwrap(), d);
            }
        }
    }
}

#[test]
fn policies_reach_the_node_view_typed() {
    let text = TWO.replace(
        "net { ping-int 3;",
        "net { after-sb-0pri discard-node-node-b; after-sb-1pri consensus; after-sb-2pri violently-as0p; rr-conflict call-pri-lost; verify-alg SHA1; csums-alg md5; cram-hmac-alg hmac(sha256); ping-int 3;",
    )
    .replace("cram-hmac-alg sha1;", "")
    .replace("disk { resync-rate", "disk { on-io-error pass_on; fencing resource-and-stonith; resync-rate");
    let v = parse(&text).unwrap().node_view("r0", "node-a").unwrap();
    assert_eq!(v.net.after_sb_0pri, AfterSb0::DiscardNode("node-b".into()));
    assert_eq!(v.net.after_sb_1pri, AfterSb1::Consensus);
    assert_eq!(v.net.after_sb_2pri, AfterSb2::ViolentlyAs0p);
    assert_eq!(v.net.rr_conflict, RrConflict::CallPriLost);
    assert_eq!(v.net.verify_alg, Some(DigestAlg::Sha1));
    assert_eq!(v.net.csums_alg, Some(DigestAlg::Md5));
    assert_eq!(v.net.cram_hmac_alg, Some(HmacAlg::Sha256));
    assert_eq!(v.disk_conf.on_io_error, OnIoError::PassOn);
    assert_eq!(v.disk_conf.fencing, Fencing::ResourceAndStonith);
    let d = parse(TWO).unwrap().node_view("r0", "node-a").unwrap();
    assert_eq!(d.net.after_sb_0pri, AfterSb0::Disconnect);
    assert_eq!(d.disk_conf.on_io_error, OnIoError::Detach);
    assert_eq!(d.net.verify_alg, None);
}

#[test]
fn an_algorithm_rep_does_not_implement_is_refused_at_its_place() {
    // drbdadm accepts any kernel crypto name, so `dump` does too; running it is refused.
    let text = TWO.replace(
        "net { ping-int 3;",
        "net {\n verify-alg whirlpool; ping-int 3;",
    );
    let c = parse(&text).unwrap();
    let e = c.node_view("r0", "node-a").unwrap_err().to_string();
    assert!(
        e.starts_with("t.res:6:13: verify-alg 'whirlpool' is not implemented by rep; use one of md5, sha1, sha256, crc32c"),
        "{e}"
    );
    let text = TWO.replace("cram-hmac-alg sha1;", "cram-hmac-alg md4;");
    let e = parse(&text)
        .unwrap()
        .node_view("r0", "node-b")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cram-hmac-alg 'md4' is not implemented by rep; use one of sha1, sha256"),
        "{e}"
    );
}

#[test]
fn every_engine_policy_value_is_accepted_by_the_parser() {
    for v in AfterSb0::NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(["discard-node-node-a".into()])
    {
        let text = TWO.replace(
            "net { ping-int 3;",
            &format!("net {{ after-sb-0pri {v}; ping-int 3;"),
        );
        parse(&text).unwrap_or_else(|e| panic!("after-sb-0pri {v}: {e}"));
    }
    for (kw, names) in [
        ("after-sb-1pri", AfterSb1::NAMES),
        ("after-sb-2pri", AfterSb2::NAMES),
        ("rr-conflict", RrConflict::NAMES),
    ] {
        for v in names {
            let text = TWO.replace(
                "net { ping-int 3;",
                &format!("net {{ {kw} {v}; ping-int 3;"),
            );
            parse(&text).unwrap_or_else(|e| panic!("{kw} {v}: {e}"));
        }
    }
    for (kw, names) in [
        ("on-io-error", OnIoError::NAMES),
        ("fencing", Fencing::NAMES),
    ] {
        for v in names {
            let text = TWO.replace(
                "disk { resync-rate",
                &format!("disk {{ {kw} {v}; resync-rate"),
            );
            parse(&text).unwrap_or_else(|e| panic!("{kw} {v}: {e}"));
        }
    }
}
