//! The simulated nodes' configuration: written as the `.res` file an operator would write,
//! parsed by `rep_resources` and turned into the engine's configuration by the function the
//! daemon uses (`EngineConfig::from_view`). A setting the daemon reads differently from what
//! the simulator exercises cannot hide in a second, hand-built configuration.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::config::SimConfig;
use crate::core::EngineConfig;

/// The range a `.res` file may give `al-extents` (DRBD 8.4's limits, as the parser checks).
const AL_EXTENTS_RES: std::ops::RangeInclusive<u32> = 67..=65534;

/// The simulator's resource, as a `.res` file. Faster than DRBD's defaults (ping-timeout
/// 500 ms, timeout 6 s) so that partitions cost little simulated time; ping-timeout stays well
/// above the simulated round trip. A fixed resync rate (`c-plan-ahead 0`).
pub fn res_text(cfg: &SimConfig) -> String {
    let mut net = String::from("ping-timeout 3; timeout 10; ko-count 4; max-epoch-size 64;");
    let mut disk = format!(
        "resync-rate {}k; c-plan-ahead 0; fencing {}; on-io-error detach;",
        cfg.resync_rate_kib,
        cfg.fencing.as_str()
    );
    if AL_EXTENTS_RES.contains(&cfg.al_extents) {
        let _ = write!(disk, " al-extents {};", cfg.al_extents);
    }
    if let Some(alg) = cfg.verify_alg {
        let _ = write!(net, " verify-alg {};", alg.as_str());
    }
    if let Some(alg) = cfg.csums_alg {
        let _ = write!(net, " csums-alg {};", alg.as_str());
    }
    // With a witness, every host has its node id and the witness has no disk (docs/quorum.md).
    let host = |name: &str, ip: &str, id: u32| {
        let node_id = if cfg.witness {
            format!(" node-id {id};")
        } else {
            String::new()
        };
        format!(
            "  on {name} {{{node_id} device /dev/drbd0 minor 0; disk /dev/sim-data; \
             meta-disk /dev/sim-meta; address {ip}:7789; }}\n"
        )
    };
    let witness = if cfg.witness {
        "  on witness { node-id 2; device /dev/drbd0 minor 0; disk none; address 127.0.0.3:7789; }\n  connection-mesh { hosts node-a node-b witness; }\n"
    } else {
        ""
    };
    let options = if cfg.quorum.enabled() {
        format!(
            "  options {{ quorum {}; on-no-quorum {}; }}\n",
            cfg.quorum.quorum, cfg.quorum.on_no_quorum
        )
    } else {
        String::new()
    };
    format!(
        "resource r0 {{\n  protocol {};\n  net {{ {net} }}\n  disk {{ {disk} }}\n{options}{}{}{witness}}}\n",
        cfg.protocol,
        host("node-a", "127.0.0.1", 0),
        host("node-b", "127.0.0.2", 1),
    )
}

/// Node `node`'s engine configuration, through the daemon's path.
pub fn engine_config_for(node: &str, cfg: &SimConfig) -> EngineConfig {
    let text = res_text(cfg);
    let parsed = rep_resources::parse_str(&text, "sim.res", Path::new("/"))
        .unwrap_or_else(|e| panic!("the simulator's .res does not parse: {e}\n{text}"));
    let view = parsed
        .node_view("r0", node)
        .unwrap_or_else(|e| panic!("the simulator's .res has no view for {node}: {e}\n{text}"));
    let mut engine = EngineConfig::from_view(&view);
    // `ping-int` is whole seconds in a `.res` file; half a second keeps partitions cheap in
    // simulated time, and the engine itself takes any duration.
    engine.peer.ping_int = Duration::from_millis(500);
    // The simulated devices are small, and a small activity log (below DRBD's minimum of 67
    // extents) makes eviction and AL transactions frequent: the simulator goes below what a
    // `.res` file may say, the engine takes it.
    engine.al_extents = cfg.al_extents;
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use rep_resources::{DigestAlg, Fencing, Protocol};

    #[test]
    fn the_simulators_settings_reach_the_engine_through_the_daemons_path() {
        let mut cfg = SimConfig::new(Protocol::A, 1 << 20);
        cfg.fencing = Fencing::ResourceOnly;
        cfg.csums_alg = Some(DigestAlg::Sha1);
        cfg.resync_rate_kib = 4096;
        let e = engine_config_for("node-b", &cfg);
        assert_eq!(e.node, "node-b");
        assert!(e.has_peer);
        assert_eq!(e.protocol, Protocol::A);
        assert_eq!(e.fencing, Fencing::ResourceOnly);
        assert_eq!(e.al_extents, cfg.al_extents);
        assert_eq!(e.peer.csums_alg, Some(DigestAlg::Sha1));
        assert_eq!(e.peer.verify_alg, cfg.verify_alg);
        assert_eq!(e.peer.ping_timeout, Duration::from_millis(300));
        assert_eq!(e.peer.timeout, Duration::from_secs(1));
        assert_eq!(e.peer.ko_count, 4);
        assert_eq!(e.peer.max_epoch_size, 64);
        assert_eq!(e.peer.pace.resync_rate_kib, 4096);
        assert_eq!(e.peer.pace.c_plan_ahead_ds, 0);
        cfg.al_extents = 1237;
        assert!(res_text(&cfg).contains("al-extents 1237;"));
        assert_eq!(engine_config_for("node-a", &cfg).al_extents, 1237);
    }

    #[test]
    fn a_witness_reaches_the_engine_with_quorum_and_resource_and_stonith() {
        let mut cfg = SimConfig::new(Protocol::C, 1 << 20);
        cfg.quorum =
            rep_resources::quorum::QuorumConf::majority(rep_resources::quorum::OnNoQuorum::IoError);
        cfg.witness = true;
        for node in ["node-a", "node-b"] {
            let e = engine_config_for(node, &cfg);
            assert_eq!(
                e.witness,
                Some((crate::core::NodeId(2), "witness".to_string()))
            );
            assert_eq!(e.fencing, Fencing::ResourceAndStonith);
            assert!(e.quorum.enabled());
        }
    }
}
