//! A node's life: the cluster built (create-md on each metadata device, engines configured
//! through the daemon's path), a node losing power (writes in flight torn, caches lost) and
//! restarted with a fresh engine.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::world::{Cluster, Ev, Node};
use crate::core::rng::Rng;
use crate::core::{
    AdminCmd, AdminId, ConnState, DiskOpKind, DiskState, Engine, LinkId, PeerDiskOp, Refusal,
    ReqId, Role,
};
use crate::meta::layout::MetaDiskKind;
use crate::meta::store::create_md;
use crate::sim::config::{SimConfig, SimStats, Workload};
use crate::sim::disk::{SimDisk, SimMetaDev};
use crate::sim::model::Model;
use crate::sim::res::engine_config_for;
use crate::sim::watch::LogWatch;
use rep_resources::{DigestAlg, Protocol};

/// External metadata device: superblocks, AL ring and bitmap of a 64 MiB device fit easily.
const META_DEV_BYTES: usize = 256 * 1024;

impl Cluster {
    pub fn new(seed: u64, protocol: Protocol, device_bytes: u64) -> Cluster {
        Cluster::with_config(seed, SimConfig::new(protocol, device_bytes))
    }

    /// A cluster whose resyncs use `csums_alg` (`None`: plain resync).
    pub fn with_csums(
        seed: u64,
        protocol: Protocol,
        device_bytes: u64,
        csums_alg: Option<DigestAlg>,
    ) -> Cluster {
        let mut cfg = SimConfig::new(protocol, device_bytes);
        cfg.csums_alg = csums_alg;
        Cluster::with_config(seed, cfg)
    }

    pub fn with_config(seed: u64, cfg: SimConfig) -> Cluster {
        let base = Instant::now();
        let mk = |i: usize| {
            let name = ["node-a", "node-b"][i].to_owned();
            let meta_dev = SimMetaDev::new(META_DEV_BYTES, seed ^ (0x3e7a << i));
            // create-md writes through the device and flushes: the result is durable.
            let data_stub = SimMetaDev::new(0, 0);
            if let Err(e) = create_md(
                &data_stub,
                Some(&meta_dev),
                cfg.device_bytes,
                MetaDiskKind::ExternalFlex,
                cfg.al_extents,
                seed ^ i as u64,
                true,
            ) {
                panic!("create-md for the simulated node failed: {e}");
            }
            Node {
                engine: Engine::new(
                    engine_config_for(&name, &cfg),
                    seed.wrapping_mul(31).wrapping_add(i as u64),
                ),
                name,
                disk: SimDisk::new(cfg.device_bytes as usize, seed ^ (0xd15c << i)),
                meta_dev,
                meta: None,
                up: true,
                gen: 0,
                wants_link: false,
                clients: HashMap::new(),
                admin_replies: HashMap::new(),
                disk_failing: false,
                failed_replies: 0,
                next_admin: AdminId(1),
                dying: false,
                die_on_link_loss: false,
                meta_free_at: Duration::ZERO,
                claim_pending: None,
                seen: (Role::Secondary, DiskState::Diskless, ConnState::StandAlone),
                bits_check_in: None,
                unreliable: 0,
                last_timer: Duration::ZERO,
                disk_delay: Duration::ZERO,
            }
        };
        let watch = LogWatch::new(std::env::var("REP_SIM_LOG").is_ok());
        let guard = tracing::subscriber::set_default(watch.clone());
        let mut c = Cluster {
            nodes: [mk(0), mk(1)],
            model: Model::new(cfg.protocol, cfg.device_bytes),
            cfg,
            workload: Workload::default(),
            base,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            link: None,
            next_link: LinkId(1),
            hold: [false; 2],
            held: [Vec::new(), Vec::new()],
            last_delivery: HashMap::new(),
            next_req: ReqId(1),
            stats: SimStats::default(),
            trace: Vec::new(),
            handlers_run: Vec::new(),
            owes_unfence: [false; 2],
            fence_waits: HashMap::new(),
            watch,
            watch_sector: std::env::var("REP_SIM_WATCH_SECTOR")
                .ok()
                .and_then(|v| v.parse().ok()),
            _watch_guard: guard,
            protocol_errors_seen: 0,
            generations: Default::default(),
            wit: Default::default(),
        };
        for i in 0..2 {
            c.maybe_witness_link(i);
        }
        c
    }

    /// Power loss on node `i` (now).
    pub fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.log(format!("crash {}", self.nodes[i].name));
        self.power_loss(i);
    }

    pub(super) fn power_loss(&mut self, i: usize) {
        // A fence-peer waiting for this node's answer hears that it is gone (unreachable).
        let waiting: Vec<(usize, AdminId)> = self
            .fence_waits
            .keys()
            .filter(|k| k.0 == i)
            .copied()
            .collect();
        for key in waiting {
            if let Some((from, from_gen, hio)) = self.fence_waits.remove(&key) {
                self.schedule(
                    Duration::from_millis(1),
                    Ev::HandlerDone {
                        node: from,
                        gen: from_gen,
                        io: hio,
                        exit: Some(5),
                    },
                );
            }
        }
        let seed = self.rng.next_u64();
        let gen = self.nodes[i].gen;
        // Writes in flight reached the cache in part.
        let mut partial = Rng::new(seed ^ 0x9a27);
        let disk = &mut self.nodes[i].disk;
        for ev in self.queue.values() {
            match ev {
                Ev::Disk {
                    node,
                    gen: g,
                    op: DiskOpKind::Write { offset, .. },
                    data: Some(d),
                    ..
                } if *node == i && *g == gen => {
                    disk.write_partial(&d.bytes(), *offset, &mut partial)
                }
                Ev::PeerDisk {
                    node,
                    gen: g,
                    op: PeerDiskOp::Write { offset, data, .. },
                    ..
                } if *node == i && *g == gen => disk.write_partial(data, *offset, &mut partial),
                _ => {}
            }
        }
        let n = &mut self.nodes[i];
        n.up = false;
        n.dying = false;
        n.die_on_link_loss = false;
        n.gen += 1;
        n.meta_free_at = Duration::ZERO;
        n.claim_pending = None;
        n.disk.crash(seed);
        if let Some(s) = self.watch_sector {
            let line = format!(
                "sector {s} on node {i} after the crash: {:?}",
                n.disk.durable(s)
            );
            self.log(line);
        }
        let n = &mut self.nodes[i];
        n.meta_dev.crash(seed.rotate_left(17));
        n.meta = None;
        n.clients.clear();
        n.admin_replies.clear();
        n.wants_link = false;
        n.unreliable += 1;
        n.seen = (Role::Secondary, DiskState::Diskless, ConnState::StandAlone);
        if self.link.is_some() {
            self.drop_link(i);
        }
        self.witness_node_lost(i);
        self.model.crashed(i);
    }

    /// Restart node `i` after a crash: a fresh engine, attach, connect.
    pub fn restart(&mut self, i: usize) -> Result<(), Refusal> {
        self.log(format!("restart {}", self.nodes[i].name));
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[i];
        n.engine = Engine::new(engine_config_for(&n.name, &self.cfg), seed);
        n.up = true;
        n.bits_check_in = None;
        n.last_timer = self.now;
        self.maybe_witness_link(i);
        self.admin(i, AdminCmd::Attach)?;
        self.admin(
            i,
            AdminCmd::Connect {
                discard_my_data: false,
            },
        )?;
        Ok(())
    }
}
