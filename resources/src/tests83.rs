//! DRBD 8.3-era files: what drbdadm 8.4 still reads from them, with the meaning it gives them
//! (protocol outside `net`, `syncer`, `no-` switches, `outdate-peer`, `rate`/`after` in `disk`,
//! the dropped delay-probe options, `skip` blocks), and what it rejects.

use std::path::Path;

use proptest::prelude::*;

use super::*;

const HOSTS: &str = "  on node-a { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.1:7789; meta-disk internal; }\n  on node-b { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.2:7789; meta-disk internal; }\n";

fn parse(text: &str) -> Result<Config, ParseError> {
    parse_str(text, "t.res", Path::new("/nonexistent"))
}

fn res(common: &str, body: &str) -> String {
    format!("{common}\nresource r0 {{\n{body}\n{HOSTS}}}\n")
}

fn view(text: &str) -> NodeView {
    match parse(text).and_then(|c| {
        c.node_view("r0", "node-a")
            .map_err(|e| ParseError::new("t.res", 0, 0, e.to_string()))
    }) {
        Ok(v) => v,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// The file as an 8.3 admin wrote it and as 8.4 spells it: one model, one node view.
#[test]
fn an_eight_three_file_means_what_its_eight_four_spelling_means() {
    let old = res(
        "common {\n  protocol b;\n  syncer { rate 33M; use-rle no; }\n  handlers { outdate-peer \"/usr/lib/drbd/outdate-peer.sh\"; }\n}",
        "  protocol C;\n  syncer { rate 10M; al-extents 3389; csums-alg md5; verify-alg sha1; after r1; use-rle; cpu-mask 3; c-plan-ahead 20; c-fill-target 100; c-delay-target 10; c-max-rate 100M; c-min-rate 4M; on-no-data-accessible suspend-io; }\n  disk { on-io-error detach; fencing resource-only; no-disk-flushes; no-md-flushes; no-disk-barrier; no-disk-drain; delay-probe-volume 16384; }\n  net { no-tcp-cork; throttle-threshold 20; hold-off-threshold 100; delay-probe-interval 5; }\n  startup { become-primary-on node-a node-b; }\n  handlers { outdate-peer \"/sbin/obliterate\"; }",
    );
    let new = res(
        "common {\n  net { protocol B; use-rle no; }\n  disk { resync-rate 33M; }\n  handlers { fence-peer \"/usr/lib/drbd/outdate-peer.sh\"; }\n}",
        "  options { cpu-mask 3; on-no-data-accessible suspend-io; }\n  net { protocol C; csums-alg md5; verify-alg sha1; use-rle; tcp-cork no; }\n  disk { resync-rate 10M; al-extents 3389; resync-after r1; c-plan-ahead 20; c-fill-target 100; c-delay-target 10; c-max-rate 100M; c-min-rate 4M; on-io-error detach; fencing resource-only; disk-flushes no; md-flushes no; disk-barrier no; disk-drain no; }\n  startup { become-primary-on node-a node-b; }\n  handlers { fence-peer \"/sbin/obliterate\"; }",
    );
    let (a, b) = (parse(&old).unwrap(), parse(&new).unwrap());
    assert_eq!(
        a.model, b.model,
        "8.3 spelling:\n{old}\n8.4 spelling:\n{new}"
    );
    let v = view(&old);
    assert_eq!(v, view(&new));
    assert_eq!(v.net.protocol, Protocol::C);
    assert_eq!(v.disk_conf.resync_rate_kib, 10 << 10);
    assert_eq!(v.disk_conf.al_extents, 3389);
    assert_eq!(v.disk_conf.resync_after.as_deref(), Some("r1"));
    assert_eq!(v.disk_conf.c_max_rate_kib, 100 << 10);
    assert!(!v.disk_conf.disk_flushes && !v.disk_conf.md_flushes && !v.disk_conf.disk_barrier);
    assert_eq!(v.net.verify_alg, Some(DigestAlg::Sha1));
    assert_eq!(v.net.csums_alg, Some(DigestAlg::Md5));
    assert!(v.net.use_rle);
    assert_eq!(v.options.cpu_mask.as_deref(), Some("3"));
    assert_eq!(
        v.options.on_no_data_accessible,
        OnNoDataAccessible::SuspendIo
    );
    assert_eq!(
        v.handlers.get("fence-peer").map(String::as_str),
        Some("/sbin/obliterate")
    );
    assert_eq!(
        v.startup.become_primary_on.as_deref(),
        Some("node-a node-b")
    );
    // common's 8.3 spellings reach a resource that sets nothing itself
    let bare = view(&res(
        "common {\n  protocol b;\n  syncer { rate 33M; }\n  handlers { outdate-peer /x; }\n  disk { no-disk-flushes; }\n}",
        "",
    ));
    assert_eq!(bare.net.protocol, Protocol::B);
    assert_eq!(bare.disk_conf.resync_rate_kib, 33 << 10);
    assert!(!bare.disk_conf.disk_flushes);
    assert_eq!(
        bare.handlers.get("fence-peer").map(String::as_str),
        Some("/x")
    );
    // the dump (verbatim) reads back to the same model
    let again = parse(&a.dump(None).unwrap()).unwrap();
    assert_eq!(again.model, a.model);
}

/// A name written twice means what drbdadm makes of it: every resource option goes to the
/// kernel in file order (the later counts), common adds only its first one where the resource
/// has none, and of two handlers the first runs.
#[test]
fn twice_written_options_resolve_as_drbdadm_does() {
    let v = view(&res(
        "",
        "  syncer { al-extents 3389; }\n  disk { al-extents 257; }",
    ));
    assert_eq!(v.disk_conf.al_extents, 257);
    let v = view(&res(
        "",
        "  disk { al-extents 257; }\n  syncer { al-extents 3389; }",
    ));
    assert_eq!(v.disk_conf.al_extents, 3389);
    let v = view(&res("", "  net { protocol C; }\n  protocol A;"));
    assert_eq!(v.net.protocol, Protocol::A);
    let v = view(&res("", "  protocol A;\n  net { protocol C; }"));
    assert_eq!(v.net.protocol, Protocol::C);
    let v = view(&res(
        "common { disk { resync-rate 5M; resync-rate 7M; } }",
        "",
    ));
    assert_eq!(v.disk_conf.resync_rate_kib, 5 << 10);
    let v = view(&res(
        "common { disk { resync-rate 5M; } }",
        "  disk { rate 9M; }",
    ));
    assert_eq!(v.disk_conf.resync_rate_kib, 9 << 10);
    let v = view(&res("", "  handlers { outdate-peer /a; fence-peer /b; }"));
    assert_eq!(v.handlers.get("fence-peer").map(String::as_str), Some("/a"));
}

/// What drbdadm 8.4 rejects in 8.3-style files (each checked against drbdadm-84), rejected
/// here too, naming the line.
#[test]
fn what_drbdadm_rejects_is_rejected_with_its_line() {
    let cases: &[(&str, &str, u32)] = &[
        ("", "  disk { no-disk-flushes yes; }", 3),
        ("", "  disk { no-disk-flushes no; }", 3),
        ("", "  net { no-disk-flushes; }", 3),
        ("", "  disk { no-tcp-cork; }", 3),
        ("", "  syncer { delay-probe-volume 16384; }", 3),
        ("", "  syncer { throttle-threshold 20; }", 3),
        ("", "  syncer { on-io-error detach; }", 3),
        ("", "  syncer { sndbuf-size 128k; }", 3),
        ("", "  syncer { resync-rate 10M; }", 3),
        ("", "  syncer { no-disk-flushes; }", 3),
        ("", "  syncer { rate 10M; }\n  syncer { rate 20M; }", 4),
        ("", "  syncer { rate 5000G; }", 3),
        ("", "  syncer { use-rle maybe; }", 3),
        ("", "  disk { delay-probe-volume; }", 3),
        ("", "  protocol A;\n  protocol B;", 4),
        ("", "  protocol D;", 3),
        ("common { protocol C;\n protocol A; }", "", 2),
        ("", "  net { discard-my-data; }", 3),
        ("", "  net { rate 10M; }", 3),
        ("", "  options { after r1; }", 3),
        ("", "  handlers { outdate-peer; }", 3),
        ("", "  net { timeout 60;; }", 3),
        ("global { usage-count no; };", "", 1),
        ("skip resource r9 { protocol C; }", "", 1),
        ("skip 42 { }", "", 1),
        ("skip { x } }", "", 1),
        ("skip { never closed", "", 1),
        ("", "  skip { x }", 3),
    ];
    for (common, body, line) in cases {
        let text = res(common, body);
        match parse(&text) {
            Ok(_) => panic!("accepted, drbdadm rejects:\n{text}"),
            Err(e) => assert_eq!(e.line, *line, "{e}\n{text}"),
        }
    }
    // drbdadm says `ignore-on` must precede the host sections, but never checks it in time
    let late = "resource r0 {\n  on node-a { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.1:7789; meta-disk internal; }\n  ignore-on node-c;\n  on node-b { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.2:7789; meta-disk internal; }\n}\n";
    assert!(parse(late).is_ok());
    assert_eq!(
        parse(&res("", "  ignore-on;"))
            .map(|_| ())
            .unwrap_err()
            .line,
        3
    );
}

/// drbdadm's `skip` comments out free text (only braces count, broken strings included); the
/// dump leaves it out, as drbdadm's does.
#[test]
fn skip_blocks_hold_free_text() {
    let text = res(
        "skip {\n  As you can see, you can also comment chunks of text\n  with a 'skip[optional nonsense]{ skipped text }' section.\n  <string> := (<name>|\\\"([^\\\"\\\\\\n]*|\\\\.)*\\\")+\n  an \"unterminated string\n}\nskip r9 { resource r9 { protocol X; } }\nskip \"any name\" { }",
        "  ignore-on node-c;",
    );
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.resource_names(), ["r0"]);
    let d = c.dump(None).unwrap();
    assert!(!d.contains("skip") && !d.contains("r9"), "{d}");
}

/// One 8.3-style setting and its 8.4 spelling.
#[derive(Debug, Clone)]
struct Pair {
    /// `syncer`, `disk`, `net`, `handlers` (8.3 side), or `res` for a statement of its own.
    old_section: &'static str,
    old: String,
    new_section: &'static str,
    new: String,
}

fn pair() -> impl Strategy<Value = Pair> {
    let p = |os: &'static str, o: String, ns: &'static str, n: String| Pair {
        old_section: os,
        old: o,
        new_section: ns,
        new: n,
    };
    let alg = prop::sample::select(vec!["md5", "sha1", "sha256", "crc32c"]);
    let yn = prop::sample::select(vec!["yes", "no"]);
    prop_oneof![
        (1u64..4000).prop_map(move |n| p(
            "syncer",
            format!("rate {n}M;"),
            "disk",
            format!("resync-rate {n}M;")
        )),
        (1u64..4000).prop_map(move |n| p(
            "disk",
            format!("rate {n}k;"),
            "disk",
            format!("resync-rate {n}k;")
        )),
        (67u64..65534).prop_map(move |n| p(
            "syncer",
            format!("al-extents {n};"),
            "disk",
            format!("al-extents {n};")
        )),
        alg.clone().prop_map(move |a| p(
            "syncer",
            format!("verify-alg {a};"),
            "net",
            format!("verify-alg {a};")
        )),
        alg.prop_map(move |a| p(
            "syncer",
            format!("csums-alg {a};"),
            "net",
            format!("csums-alg {a};")
        )),
        yn.prop_map(move |y| p(
            "syncer",
            format!("use-rle {y};"),
            "net",
            format!("use-rle {y};")
        )),
        (0u64..300).prop_map(move |n| p(
            "syncer",
            format!("c-plan-ahead {n};"),
            "disk",
            format!("c-plan-ahead {n};")
        )),
        (250u64..100000).prop_map(move |n| p(
            "syncer",
            format!("c-max-rate {n}k;"),
            "disk",
            format!("c-max-rate {n}k;")
        )),
        "[0-9a-f]{1,4}".prop_map(move |m| p(
            "syncer",
            format!("cpu-mask {m};"),
            "options",
            format!("cpu-mask {m};")
        )),
        prop::sample::select(vec!["io-error", "suspend-io"]).prop_map(move |x| p(
            "syncer",
            format!("on-no-data-accessible {x};"),
            "options",
            format!("on-no-data-accessible {x};")
        )),
        prop::sample::select(vec![
            "disk-flushes",
            "md-flushes",
            "disk-barrier",
            "disk-drain"
        ])
        .prop_map(move |f| p("disk", format!("no-{f};"), "disk", format!("{f} no;"))),
        Just(p(
            "net",
            "no-tcp-cork;".into(),
            "net",
            "tcp-cork no;".into()
        )),
        "[a-z/]{1,20}".prop_map(move |s| p(
            "handlers",
            format!("outdate-peer \"/{s}\";"),
            "handlers",
            format!("fence-peer \"/{s}\";")
        )),
        prop::sample::select(vec![
            "delay-probe-volume",
            "delay-probe-interval",
            "throttle-threshold",
            "hold-off-threshold"
        ])
        .prop_map(move |d| p("disk", format!("{d} 7;"), "disk", String::new())),
    ]
}

/// Renders `pairs` into one scope (`common` or the resource): the 8.3 file with protocol as a
/// statement and the 8.3 sections, the 8.4 file with the same options in the same order.
fn render(proto: Option<char>, pairs: &[Pair], old: bool) -> String {
    let mut out = String::new();
    let sections = ["syncer", "options", "net", "disk", "handlers"];
    if old {
        if let Some(c) = proto {
            out.push_str(&format!("  protocol {c};\n"));
        }
    }
    for s in sections {
        let mut body = String::new();
        if !old && s == "net" {
            if let Some(c) = proto {
                body.push_str(&format!(" protocol {};", c.to_ascii_uppercase()));
            }
        }
        // The 8.4 file lists syncer's options first in their new sections, as the 8.3 file's
        // syncer section comes first.
        let keep = |x: &Pair| {
            if old {
                x.old_section == s
            } else {
                x.new_section == s && !x.new.is_empty()
            }
        };
        let ordered: Vec<&Pair> = if old {
            pairs.iter().filter(|x| keep(x)).collect()
        } else {
            pairs
                .iter()
                .filter(|x| x.old_section == "syncer" && keep(x))
                .chain(
                    pairs
                        .iter()
                        .filter(|x| x.old_section != "syncer" && keep(x)),
                )
                .collect()
        };
        for x in ordered {
            body.push(' ');
            body.push_str(if old { &x.old } else { &x.new });
        }
        if !body.is_empty() {
            out.push_str(&format!("  {s} {{{body} }}\n"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any mix of 8.3 spellings, in `common` or in the resource, gives the model and node view
    /// of its 8.4 spelling, and its dump reads back to the same model.
    #[test]
    fn eight_three_spellings_are_their_eight_four_equivalents(
        pairs in prop::collection::vec(pair(), 0..12),
        proto in prop::option::of(prop::sample::select(vec!['a', 'B', 'c'])),
        in_common in any::<bool>(),
    ) {
        let wrap = |scope: String| if in_common {
            res(&format!("common {{\n{scope}}}"), "")
        } else {
            res("", &scope)
        };
        let old = wrap(render(proto, &pairs, true));
        let new = wrap(render(proto, &pairs, false));
        let a = parse(&old).map_err(|e| TestCaseError::fail(format!("{e}\n{old}")))?;
        let b = parse(&new).map_err(|e| TestCaseError::fail(format!("{e}\n{new}")))?;
        prop_assert_eq!(&a.model, &b.model, "8.3:\n{}\n8.4:\n{}", old, new);
        prop_assert_eq!(view(&old), view(&new));
        let again = parse(&a.dump(None).unwrap()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.model, a.model);
    }
}
