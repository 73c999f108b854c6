//! Unit tests of the parser, model and node view.

use std::path::Path;

use super::*;

const TWO: &str = "resource r0 {\n  protocol C;\n  device /dev/drbd0;\n  meta-disk internal;\n  net { ping-int 3; shared-secret \"s\"; cram-hmac-alg sha1; }\n  disk { resync-rate 40M; size 1G; }\n  on node-a { disk /a.img; address 127.0.0.1:7789; nbd-listen 127.0.0.1:10809; }\n  on node-b { disk /b.img; address 127.0.0.2:7789; meta-disk /dev/sdc [2]; }\n}\n";

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
    assert!(d.contains("meta-disk        /dev/sdc [2];"), "{d}");
    let again = parse(&d).unwrap();
    assert_eq!(again.dump(None).unwrap(), d);
    assert!(c.dump(Some("nope")).is_err());
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
