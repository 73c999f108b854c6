//! A DRBD 8.3-era `.res` drives repd exactly as its 8.4 spelling does: the parser's normalised
//! values are what the engine is configured with at start (`EngineConfig::from_view`) and what `adjust`
//! compares, so rewriting a file from one spelling to the other changes nothing.

use std::path::Path;

use rep_resources::{DigestAlg, NodeView, OnNoDataAccessible, Protocol};

use crate::control::adjust;
use crate::core::EngineConfig;

const HOSTS: &str = "  on node-a { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.1:7789; meta-disk internal; }\n  on node-b { device /dev/drbd0; disk /dev/sdb1; address 127.0.0.2:7789; meta-disk internal; }\n";

fn view(text: &str) -> NodeView {
    let c = rep_resources::parse_str(text, "t.res", Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.node_view("r0", "node-a")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const OLD: &str = "common {\n  protocol A;\n  syncer { c-max-rate 200M; }\n}\nresource r0 {\n  syncer { rate 10M; al-extents 3389; verify-alg sha1; csums-alg md5; c-plan-ahead 0; on-no-data-accessible suspend-io; }\n  disk { no-disk-flushes; no-md-flushes; fencing resource-only; delay-probe-volume 16384; }\n  net { no-tcp-cork; }\n  handlers { outdate-peer \"/usr/lib/drbd/crm-fence-peer.sh\"; }\n";

const NEW: &str = "common {\n  net { protocol A; }\n  disk { c-max-rate 200M; }\n}\nresource r0 {\n  options { on-no-data-accessible suspend-io; }\n  net { verify-alg sha1; csums-alg md5; tcp-cork no; }\n  disk { resync-rate 10M; al-extents 3389; c-plan-ahead 0; disk-flushes no; md-flushes no; fencing resource-only; }\n  handlers { fence-peer \"/usr/lib/drbd/crm-fence-peer.sh\"; }\n";

#[test]
fn an_eight_three_file_configures_the_engine_as_its_eight_four_spelling() {
    let (old, new) = (
        view(&format!("{OLD}{HOSTS}}}\n")),
        view(&format!("{NEW}{HOSTS}}}\n")),
    );
    let cfg = EngineConfig::from_view(&old);
    assert_eq!(
        format!("{cfg:?}"),
        format!("{:?}", EngineConfig::from_view(&new))
    );
    // `syncer { rate 10M; }` is the fixed resync rate repd paces with (c-plan-ahead 0 turns
    // the dynamic controller off), common's syncer reaches the resource.
    assert_eq!(cfg.peer.pace.resync_rate_kib, 10 * 1024);
    assert_eq!(cfg.peer.pace.c_plan_ahead_ds, 0);
    assert_eq!(cfg.peer.pace.c_max_rate_kib, 200 * 1024);
    assert_eq!(cfg.protocol, Protocol::A);
    assert_eq!(cfg.al_extents, 3389);
    assert_eq!(cfg.peer.verify_alg, Some(DigestAlg::Sha1));
    assert_eq!(cfg.peer.csums_alg, Some(DigestAlg::Md5));
    assert_eq!(cfg.fencing, rep_resources::Fencing::ResourceOnly);
    assert_eq!(
        old.options.on_no_data_accessible,
        OnNoDataAccessible::SuspendIo
    );
    // `outdate-peer` is the fence-peer handler repd runs.
    assert!(super::handlers::configured(&old, "fence-peer"));
    assert!(!old.disk_conf.disk_flushes && !old.disk_conf.md_flushes);
    // `adjust` from one spelling to the other: nothing to do; from the defaults: the 8.3
    // values, under their 8.4 names.
    assert_eq!(adjust::diff(&new, &old), Ok(Vec::new()));
    let plain = view(&format!("resource r0 {{\n{HOSTS}}}\n"));
    let lines: Vec<String> = adjust::diff(&plain, &old)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(adjust::Change::line)
        .collect();
    for want in [
        "disk resync-rate 250k -> 10M (live)",
        "handlers fence-peer none -> /usr/lib/drbd/crm-fence-peer.sh (live)",
        "net protocol C -> A (reconnect)",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} not in {lines:#?}");
    }
}
