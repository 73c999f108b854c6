//! Shared parts of the real-process fault suite (`tests/tests/power_loss.rs`, `kill9.rs`,
//! `ext4_faults.rs`): seeded schedules, a pipelined raw-NBD writer whose every 4 KiB block
//! names the write that put it there, and a model of which node each acknowledged write is
//! promised to be on.
//!
//! Schedules: `REP_FAULT_SEED=S` sets the first schedule's seed (schedule i of a test uses
//! S+i), `REP_FAULT_ROUNDS=N` how many schedules a test runs. Each schedule prints
//! `fault-suite: <kind> REP_FAULT_SEED=S …` before it starts, so `REP_FAULT_SEED=S
//! REP_FAULT_ROUNDS=1` replays it: the same scenario, workload and fault points (the
//! interleaving of two real daemons' threads is not under the seed's control). Every test
//! ends with one line `fault-suite: <kind> runs=N faults=N writes_checked=N writes_lost=N`.
//!
//! The model deliberately claims less than the daemons may do: a write counts for the peer
//! only when the Primary's status showed the peer Connected and UpToDate after the reply came
//! (so a link that dropped by itself never makes the model expect data the peer was not
//! sent), and a resync target's cached writes are not assumed durable.

use std::collections::HashMap;
use std::io::{ErrorKind, Write as _};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::nbdraw::{RawClient, CMD_DISC, CMD_FLAG_FUA, CMD_FLUSH, CMD_READ, CMD_WRITE};
use crate::pair::PairConf;
use crate::{wait_for, Cluster, Node};

pub const BLOCK: u64 = 4096;
const MAGIC: &[u8; 8] = b"REPFAULT";

// ---------------------------------------------------------------------------------------------
// Seeds and rounds

/// splitmix64: small, seedable, good enough to pick schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_fa17_0000_0001)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// The seeds of this test's schedules: `REP_FAULT_SEED` (or `default_seed`) and the next
/// `REP_FAULT_ROUNDS - 1` (or `default_rounds - 1`) numbers.
pub fn schedule_seeds(default_seed: u64, default_rounds: u64) -> Vec<u64> {
    let first = env_u64("REP_FAULT_SEED").unwrap_or(default_seed);
    let rounds = env_u64("REP_FAULT_ROUNDS").unwrap_or(default_rounds).max(1);
    (0..rounds).map(|i| first.wrapping_add(i)).collect()
}

/// What one schedule did; soft failures (a lost write, verify finding blocks out of sync) are
/// collected here so a soak run counts them all, and fail the test at the end.
#[derive(Debug, Default)]
pub struct RoundStats {
    pub faults: u64,
    pub writes_checked: u64,
    pub writes_lost: u64,
    pub failures: Vec<String>,
}

impl RoundStats {
    pub fn add_check(&mut self, what: &str, c: &CheckReport) {
        self.writes_checked += c.checked;
        self.writes_lost += c.lost;
        if !c.problems.is_empty() {
            let text = format!(
                "{what}: {} of {} guaranteed writes lost, {} blocks wrong:\n  {}",
                c.lost,
                c.checked,
                c.bad_blocks,
                c.problems.join("\n  ")
            );
            eprintln!("fault-suite: FAILURE {text}");
            self.failures.push(text);
        }
    }

    pub fn fail(&mut self, text: String) {
        eprintln!("fault-suite: FAILURE {text}");
        self.failures.push(text);
    }
}

/// Run one schedule per seed (a panicking schedule is recorded and the next one runs), print
/// the summary line, and fail if any schedule failed or lost a write.
pub fn run_schedules(kind: &str, seeds: &[u64], mut round: impl FnMut(u64) -> RoundStats) {
    let (mut runs, mut faults, mut checked, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut failed: Vec<String> = Vec::new();
    let mut failed_runs = 0u64;
    for &seed in seeds {
        eprintln!("fault-suite: {kind} REP_FAULT_SEED={seed} starting");
        let started = std::time::Instant::now();
        runs += 1;
        match catch_unwind(AssertUnwindSafe(|| round(seed))) {
            Ok(s) => {
                faults += s.faults;
                checked += s.writes_checked;
                lost += s.writes_lost;
                eprintln!(
                    "fault-suite: {kind} REP_FAULT_SEED={seed} done in {:.1}s: faults={} writes_checked={} writes_lost={}",
                    started.elapsed().as_secs_f64(),
                    s.faults,
                    s.writes_checked,
                    s.writes_lost
                );
                failed_runs += u64::from(!s.failures.is_empty());
                for f in s.failures {
                    failed.push(format!("REP_FAULT_SEED={seed}: {f}"));
                }
            }
            Err(p) => {
                failed_runs += 1;
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".into());
                failed.push(format!("REP_FAULT_SEED={seed}: {msg}"));
            }
        }
    }
    // Straight to the process's stderr, past the test harness's output capture: the summary
    // shows in CI logs for passing tests too.
    let _ = writeln!(
        std::io::stderr(),
        "fault-suite: {kind} runs={runs} faults={faults} writes_checked={checked} writes_lost={lost}"
    );
    assert!(
        failed.is_empty(),
        "{failed_runs} of {runs} {kind} schedules failed (replay one with REP_FAULT_SEED=S REP_FAULT_ROUNDS=1, keep its directories with REP_KEEP_TEST_DIRS=1):\n{}",
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Node helpers

/// The suite's pair: backing files on /dev/shm, `ping-timeout 20` (a loaded machine must not
/// drop the link by itself: every link loss is the schedule's), `verify-alg sha1` (for
/// [`verify_oos`]).
pub fn suite_pair(test: &str) -> PairConf {
    PairConf::new(test)
        .on_shm()
        .net("ping-timeout 20")
        .net("verify-alg sha1")
}

/// Both up, identical zeroed disks (initial sync skipped), node-a Primary, both disk caches
/// volatile (`repadm fault RES volatile-cache on`: a power loss drops what was not flushed).
pub fn up_volatile_pair(c: &Cluster) {
    crate::pair::up_pair_within(c, 30, 30);
    for n in &c.nodes {
        fault(n, &["volatile-cache", "on"]);
    }
}

/// The node's own status file (`$RUN/RES.status.json`, rewritten on every state change): cheap
/// enough to read after every batch, and still readable after the daemon died (it then shows
/// the last state the daemon published).
pub fn status_file(n: &Node) -> serde_json::Value {
    let path = n.run_dir.join(format!("{}.status.json", n.resource));
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Connected and UpToDate/UpToDate in the node's status file.
pub fn in_sync_now(n: &Node) -> bool {
    let s = status_file(n);
    s["cstate"] == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate"
}

/// Both nodes Connected and UpToDate/UpToDate (a resync, if any, finished).
pub fn wait_in_sync(c: &Cluster, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        "both nodes Connected and UpToDate/UpToDate",
        || {
            c.nodes
                .iter()
                .all(|n| {
                    let s = n.status_json();
                    s["cstate"] == "Connected"
                        && s["disk"] == "UpToDate"
                        && s["peer_disk"] == "UpToDate"
                })
                .then_some(())
        },
    );
}

/// Promote `ix`, retrying while a handshake or resync start makes the state transient (a
/// crashed Primary that just came back is briefly negotiating with its peer).
pub fn promote(c: &Cluster, ix: NodeIx) {
    let n = &c.nodes[ix];
    wait_for(
        Duration::from_secs(30),
        &format!("{} to accept `primary`", n.name),
        || {
            n.repadm(&["primary", &n.resource])
                .status
                .success()
                .then_some(())
        },
    );
}

/// `repadm fault RES ARGS…`, which must succeed.
pub fn fault(n: &Node, args: &[&str]) -> String {
    let mut all = vec!["fault", n.resource.as_str()];
    all.extend_from_slice(args);
    n.ok(&all)
}

/// Wait until the daemon is gone: its process (or a zombie nobody reaped) and its control
/// socket (the leader of a multi-threaded process is a zombie before the last thread closed
/// the shared file table, so the socket can outlive the leader by a moment).
pub fn wait_gone(n: &Node, pid: i32) {
    let ctl = n.run_dir.join(format!("{}.ctl", n.resource));
    wait_for(Duration::from_secs(20), "repd to end", || {
        let alive =
            std::path::Path::new(&format!("/proc/{pid}")).exists() && !crate::is_zombie(pid);
        (!alive && std::os::unix::net::UnixStream::connect(&ctl).is_err()).then_some(())
    });
}

/// A control connection opened in advance that cuts a node's power with one write of the
/// request `repadm fault RES power-loss` sends. Starting `repadm` takes milliseconds, long
/// enough for every request in flight to complete; the switch cuts within microseconds of the
/// batch sent before it, so requests are really in flight when the power goes.
pub struct PowerSwitch {
    s: std::os::unix::net::UnixStream,
    pid: i32,
}

impl PowerSwitch {
    pub fn arm(n: &Node) -> PowerSwitch {
        let ctl = n.run_dir.join(format!("{}.ctl", n.resource));
        let s = std::os::unix::net::UnixStream::connect(&ctl).expect("connect the control socket");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        PowerSwitch {
            s,
            pid: n.pid().expect("repd pid"),
        }
    }

    /// Send the power-loss request (the daemon answers, then ends at once).
    pub fn flip(&mut self) {
        self.s
            .write_all(b"{\"cmd\":\"fault\",\"fault\":{\"kind\":\"power-loss\"}}\n")
            .expect("send power-loss");
    }

    /// Check the answer and wait until the daemon is gone.
    pub fn wait(self, n: &Node) {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(&self.s).read_line(&mut line);
        assert!(
            line.contains("power-loss"),
            "{}: unexpected answer to power-loss: {line:?}",
            n.name
        );
        wait_gone(n, self.pid);
    }

    pub fn cut(mut self, n: &Node) {
        self.flip();
        self.wait(n);
    }
}

/// Cut `n`'s power (as `repadm fault RES power-loss`) and wait until the daemon is gone.
pub fn power_loss(n: &Node) {
    PowerSwitch::arm(n).cut(n);
}

/// Both nodes lose power at the same moment: two armed switches flipped back to back.
pub fn power_loss_both(c: &Cluster) {
    let mut sw: Vec<PowerSwitch> = c.nodes.iter().map(PowerSwitch::arm).collect();
    for s in &mut sw {
        s.flip();
    }
    for (s, n) in sw.into_iter().zip(&c.nodes) {
        s.wait(n);
    }
}

/// SIGKILL the daemon and wait until it is gone (process and control socket).
pub fn kill9(n: &Node) {
    let pid = n.pid().expect("repd pid");
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    wait_gone(n, pid);
}

/// Run `repadm verify` from `n`, wait for it to end, and return the blocks it found out of
/// sync (status --json `verify_oos_blocks`).
pub fn verify_oos(n: &Node) -> u64 {
    n.ok(&["verify", &n.resource]);
    wait_for(Duration::from_secs(120), "verify to finish", || {
        let s = n.status_json();
        (s["cstate"] == "Connected")
            .then(|| s["verify_oos_blocks"].as_u64())
            .flatten()
    })
}

/// Read `len` bytes from offset 0 of `n`'s export (it must be Primary).
pub fn read_export(n: &Node, len: u64) -> Vec<u8> {
    let mut c = RawClient::connect(&n.nbd_socket(), &n.resource).expect("NBD connect to read");
    c.s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut out = Vec::with_capacity(len as usize);
    let chunk = 1u64 << 20;
    let mut off = 0;
    while off < len {
        let n_bytes = chunk.min(len - off) as u32;
        let (err, data) = c.request(CMD_READ, 0, off, n_bytes, &[]).expect("NBD read");
        assert_eq!(err, 0, "NBD read at {off} failed with error {err}");
        out.extend_from_slice(&data);
        off += u64::from(n_bytes);
    }
    let _ = c.send_cmd(CMD_DISC, 0, 0, 0, 0, &[]);
    out
}

/// Wait until `n` counts no NBD client (`secondary` refuses while one is connected).
pub fn wait_no_clients(n: &Node) {
    wait_for(
        Duration::from_secs(20),
        "the NBD clients to be gone",
        || (n.status_json()["open_clients"] == 0).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------------
// Block contents

/// The 4 KiB block `block` as written by write `seq`: magic, seq, block number, then bytes
/// derived from both (a torn, misplaced or stale block cannot pass for it).
pub fn block_bytes(seq: u64, block: u64, out: &mut [u8]) {
    assert_eq!(out.len() as u64, BLOCK);
    out[0..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&block.to_le_bytes());
    let mut r = Rng::new(seq.wrapping_mul(0x1_0000_0001) ^ block);
    for c in out[24..].chunks_mut(8) {
        let v = r.next_u64().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

/// Which write a block holds: `Ok(0)` for a never-written (zero) block, `Ok(seq)`, or what is
/// wrong with it.
pub fn decode_block(data: &[u8], block: u64) -> Result<u64, String> {
    if data.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    if &data[0..8] != MAGIC {
        return Err("neither zero nor a tagged block".into());
    }
    let seq = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let tagged = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
    if tagged != block {
        return Err(format!("holds block {tagged} of write {seq} (misplaced)"));
    }
    let mut want = vec![0u8; BLOCK as usize];
    block_bytes(seq, block, &mut want);
    if want != data {
        return Err(format!("write {seq}'s header but torn or corrupt contents"));
    }
    Ok(seq)
}

// ---------------------------------------------------------------------------------------------
// The model

/// Node index in a `Cluster`: 0 = node-a, 1 = node-b.
pub type NodeIx = usize;

fn bit(n: NodeIx) -> u8 {
    1 << n
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    A,
    B,
    C,
}

impl Proto {
    pub fn letter(self) -> &'static str {
        match self {
            Proto::A => "A",
            Proto::B => "B",
            Proto::C => "C",
        }
    }
}

#[derive(Debug)]
struct Rec {
    block: u64,
    nblocks: u64,
    fua: bool,
    acked: bool,
    /// Nodes where the write is promised to be readable while the node keeps power.
    present: u8,
    /// Nodes where it is promised to survive a power cut (always a subset of `present`).
    durable: u8,
}

/// Every write sent, what each acknowledgement promised, and how faults took promises back.
///
/// What an acknowledgement promises (DRBD 8.4, docs/drbd-semantics.md §5.1; rep's README):
/// - the Primary P: the write is readable on P; with FUA it is durable on P;
/// - protocol C (P had the peer S in sync): also readable on S (S wrote it before its
///   WriteAck); with FUA durable on S (FUA travels with the data and is applied before the ack);
/// - protocol B: readable on S (S received it before its RecvAck and will write it unless it
///   loses power first); FUA promises nothing more for S (S applies FUA after acking receipt);
/// - protocol A: nothing for S (the write may still sit in P's send buffer);
/// - a FLUSH makes every write acknowledged before the FLUSH was sent durable on P; under
///   protocol C also on S (rep's FLUSH waits for the peer's barrier flush, README "Two
///   nodes": "FLUSH and FUA are durable on both before the reply"). DRBD 8.4 completes an
///   empty flush after the local flush alone (QUEUE_AS_DRBD_BARRIER), so under A and B the
///   model claims only P, whatever rep does beyond that.
///
/// A power cut of a node keeps only what was durable there; `kill -9` keeps everything (the
/// page cache survives a process crash); a finished resync makes the target read what the
/// source reads (not durably: the model does not assume the resync's writes were flushed).
#[derive(Debug)]
pub struct Model {
    proto: Proto,
    recs: Vec<Rec>,
    /// Block → seqs of the writes sent to it, in order.
    by_block: HashMap<u64, Vec<u64>>,
    /// Seqs in the order their acknowledgements were applied (a FLUSH covers a prefix).
    acked_order: Vec<u64>,
    /// Blocks of the area the workload writes (from offset 0).
    pub region_blocks: u64,
}

/// A completed request, as read from the NBD connection.
#[derive(Debug, Clone, Copy)]
pub enum Done {
    Write(u64),
    /// A FLUSH that covers the first `covered` entries of the ack order.
    Flush(usize),
}

/// The outcome of comparing an image with the model.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Acknowledged writes the checked node was promised to hold.
    pub checked: u64,
    /// Of those, writes whose data was not there (neither it nor a later write).
    pub lost: u64,
    pub bad_blocks: u64,
    pub problems: Vec<String>,
}

impl Model {
    pub fn new(proto: Proto, region_blocks: u64) -> Model {
        Model {
            proto,
            recs: Vec::new(),
            by_block: HashMap::new(),
            acked_order: Vec::new(),
            region_blocks,
        }
    }

    fn rec(&mut self, seq: u64) -> &mut Rec {
        &mut self.recs[(seq - 1) as usize]
    }

    /// A write is about to be sent (from now on its data may be on disk).
    pub fn sent(&mut self, block: u64, nblocks: u64, fua: bool) -> u64 {
        assert!(block + nblocks <= self.region_blocks);
        self.recs.push(Rec {
            block,
            nblocks,
            fua,
            acked: false,
            present: 0,
            durable: 0,
        });
        let seq = self.recs.len() as u64;
        for b in block..block + nblocks {
            self.by_block.entry(b).or_default().push(seq);
        }
        seq
    }

    pub fn acked_count(&self) -> usize {
        self.acked_order.len()
    }

    /// Apply completions read from `primary`'s export; `peer` is the in-sync peer that shared
    /// them (None: the Primary alone, or the peer cannot be counted on).
    pub fn apply(&mut self, dones: &[Done], primary: NodeIx, peer: Option<NodeIx>) {
        let proto = self.proto;
        for d in dones {
            match *d {
                Done::Write(seq) => {
                    let r = self.rec(seq);
                    r.acked = true;
                    r.present |= bit(primary);
                    if r.fua {
                        r.durable |= bit(primary);
                    }
                    if let Some(s) = peer {
                        match proto {
                            Proto::C => {
                                r.present |= bit(s);
                                if r.fua {
                                    r.durable |= bit(s);
                                }
                            }
                            Proto::B => r.present |= bit(s),
                            Proto::A => {}
                        }
                    }
                    self.acked_order.push(seq);
                }
                Done::Flush(covered) => {
                    let seqs: Vec<u64> = self.acked_order[..covered].to_vec();
                    for seq in seqs {
                        let r = self.rec(seq);
                        for n in std::iter::once(primary).chain(peer.filter(|_| proto == Proto::C))
                        {
                            if r.present & bit(n) != 0 {
                                r.durable |= bit(n);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `n` lost power: only its durable writes remain.
    pub fn power_loss(&mut self, n: NodeIx) {
        for r in &mut self.recs {
            r.present = (r.present & !bit(n)) | (r.durable & bit(n));
        }
    }

    /// A resync from `from` to `to` finished: `to` reads what `from` reads.
    pub fn synced(&mut self, from: NodeIx, to: NodeIx) {
        for r in &mut self.recs {
            r.present = (r.present & !bit(to))
                | if r.present & bit(from) != 0 {
                    bit(to)
                } else {
                    0
                };
            r.durable &= !bit(to);
        }
    }

    /// Compare `image` (the region as read from `n`'s export) with what `n` was promised: for
    /// every block, the newest write promised on `n` or a later one, and nothing else.
    pub fn check(&self, n: NodeIx, image: &[u8]) -> CheckReport {
        assert!(image.len() as u64 >= self.region_blocks * BLOCK);
        let mut rep = CheckReport::default();
        // Block → what it holds (seq) or None when it holds garbage.
        let mut holds: HashMap<u64, Option<u64>> = HashMap::new();
        for (&b, seqs) in &self.by_block {
            let data = &image[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize];
            let got = match decode_block(data, b) {
                Ok(s) if s == 0 || seqs.contains(&s) => Some(s),
                Ok(s) => {
                    rep.bad_blocks += 1;
                    rep.problems
                        .push(format!("block {b} holds write {s}, which never wrote it"));
                    None
                }
                Err(e) => {
                    rep.bad_blocks += 1;
                    rep.problems.push(format!("block {b}: {e}"));
                    None
                }
            };
            holds.insert(b, got);
        }
        // Blocks never written must still be zero (no write landed in the wrong place).
        for b in 0..self.region_blocks {
            if self.by_block.contains_key(&b) {
                continue;
            }
            let data = &image[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize];
            let problem = match decode_block(data, b) {
                Ok(0) => continue,
                Ok(s) => format!("holds write {s}, which never wrote it"),
                Err(e) => e,
            };
            rep.bad_blocks += 1;
            if rep.problems.len() < 12 {
                rep.problems
                    .push(format!("never-written block {b}: {problem}"));
            }
        }
        for (i, r) in self.recs.iter().enumerate() {
            let seq = i as u64 + 1;
            if !r.acked || r.present & bit(n) == 0 {
                continue;
            }
            rep.checked += 1;
            let mut missing = Vec::new();
            for b in r.block..r.block + r.nblocks {
                match holds[&b] {
                    Some(s) if s >= seq => {}
                    Some(s) => missing.push(format!("block {b} holds write {s}")),
                    None => missing.push(format!("block {b} is garbage")),
                }
            }
            if !missing.is_empty() {
                rep.lost += 1;
                if rep.problems.len() < 12 {
                    rep.problems.push(format!(
                        "write {seq} (blocks {}..{}, fua {}, durable on {:#b}) lost: {}",
                        r.block,
                        r.block + r.nblocks,
                        r.fua,
                        r.durable,
                        missing.join(", ")
                    ));
                }
            }
        }
        rep
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

/// The shape of the write load.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Largest write, in blocks.
    pub max_blocks: u64,
    /// Most requests sent before waiting for their replies.
    pub batch_max: u64,
    pub fua_pct: u64,
    /// Chance that a batch carries a FLUSH (at a random place among its writes).
    pub flush_pct: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            max_blocks: 16,
            batch_max: 8,
            fua_pct: 20,
            flush_pct: 20,
        }
    }
}

impl Workload {
    /// A seeded shape ("swarm testing"): some schedules never flush, some FUA everything, some
    /// send one request at a time, some large writes.
    pub fn swarm(rng: &mut Rng) -> Workload {
        let pick = |rng: &mut Rng, xs: &[u64]| xs[rng.below(xs.len() as u64) as usize];
        Workload {
            max_blocks: pick(rng, &[1, 4, 16, 64]),
            batch_max: pick(rng, &[1, 4, 8, 16]),
            fua_pct: pick(rng, &[0, 5, 20, 60]),
            flush_pct: pick(rng, &[0, 5, 20, 50]),
        }
    }
}

enum Pending {
    Write(u64),
    Flush(usize),
}

/// A raw NBD connection sending pipelined batches of tagged writes and FLUSHes, so exactly the
/// requests the model knows of reach the server (qemu-io flushes when it closes).
pub struct Writer {
    c: RawClient,
    /// The node it writes to.
    pub node: NodeIx,
    cookie: u64,
    inflight: HashMap<u64, Pending>,
    /// The server closed the connection (it died).
    pub closed: bool,
    /// Requests answered with an error.
    pub errors: u64,
}

impl Writer {
    pub fn connect(n: &Node, ix: NodeIx) -> Writer {
        let c = RawClient::connect(&n.nbd_socket(), &n.resource).expect("NBD connect");
        // A busy shared machine can be slow, a hung request must still fail the test.
        c.s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Writer {
            c,
            node: ix,
            cookie: 1,
            inflight: HashMap::new(),
            closed: false,
            errors: 0,
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Send one batch: 1..=batch_max writes on distinct blocks (so no two requests in flight
    /// overlap and every block's history is ordered), maybe a FLUSH among them.
    pub fn send_batch(&mut self, m: &mut Model, rng: &mut Rng, wl: &Workload) {
        let k = rng.range(1, wl.batch_max);
        let flush_at = rng.pct(wl.flush_pct).then(|| rng.below(k + 1));
        let mut taken: Vec<(u64, u64)> = Vec::new();
        let mut buf = vec![0u8; (wl.max_blocks * BLOCK) as usize];
        for i in 0..=k {
            if flush_at == Some(i) {
                self.send_flush(m);
            }
            if i == k {
                break;
            }
            let nblocks = rng.range(1, wl.max_blocks);
            let mut block = None;
            for _ in 0..20 {
                let b = rng.below(m.region_blocks - nblocks + 1);
                if taken.iter().all(|&(s, e)| b + nblocks <= s || b >= e) {
                    block = Some(b);
                    break;
                }
            }
            let Some(block) = block else { continue };
            taken.push((block, block + nblocks));
            let fua = rng.pct(wl.fua_pct);
            let seq = m.sent(block, nblocks, fua);
            let data = &mut buf[..(nblocks * BLOCK) as usize];
            for (j, chunk) in data.chunks_mut(BLOCK as usize).enumerate() {
                block_bytes(seq, block + j as u64, chunk);
            }
            let cookie = self.next_cookie();
            self.inflight.insert(cookie, Pending::Write(seq));
            let flags = if fua { CMD_FLAG_FUA } else { 0 };
            let len = u32::try_from(data.len()).expect("write length");
            if self
                .c
                .send_cmd(CMD_WRITE, flags, cookie, block * BLOCK, len, data)
                .is_err()
            {
                self.closed = true;
                return;
            }
        }
    }

    /// One write of `nblocks` tagged blocks at `block`, its reply awaited: the completion (None
    /// if the server answered with an error or closed the connection).
    pub fn write_one(
        &mut self,
        m: &mut Model,
        block: u64,
        nblocks: u64,
        fua: bool,
    ) -> Option<Done> {
        assert!(self.inflight.is_empty(), "write_one with a batch in flight");
        self.send_write(m, block, nblocks, fua);
        self.collect(usize::MAX).pop()
    }

    /// Send one write of `nblocks` tagged blocks at `block` without waiting for its reply
    /// (`collect` reads it); returns its sequence number.
    pub fn send_write(&mut self, m: &mut Model, block: u64, nblocks: u64, fua: bool) -> u64 {
        let seq = m.sent(block, nblocks, fua);
        let mut data = vec![0u8; (nblocks * BLOCK) as usize];
        for (j, chunk) in data.chunks_mut(BLOCK as usize).enumerate() {
            block_bytes(seq, block + j as u64, chunk);
        }
        let cookie = self.next_cookie();
        self.inflight.insert(cookie, Pending::Write(seq));
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        let len = u32::try_from(data.len()).expect("write length");
        if self
            .c
            .send_cmd(CMD_WRITE, flags, cookie, block * BLOCK, len, &data)
            .is_err()
        {
            self.closed = true;
        }
        seq
    }

    fn send_flush(&mut self, m: &Model) {
        let cookie = self.next_cookie();
        self.inflight
            .insert(cookie, Pending::Flush(m.acked_count()));
        if self.c.send_cmd(CMD_FLUSH, 0, cookie, 0, 0, &[]).is_err() {
            self.closed = true;
        }
    }

    fn next_cookie(&mut self) -> u64 {
        self.cookie += 1;
        self.cookie
    }

    /// Read up to `max` replies (all of them with `usize::MAX`); stops early when the server
    /// closed the connection. Replies with an error are counted, not returned.
    pub fn collect(&mut self, max: usize) -> Vec<Done> {
        let mut out = Vec::new();
        while out.len() < max && !self.inflight.is_empty() && !self.closed {
            match self.c.read_reply() {
                Ok((err, cookie)) => {
                    let p = self
                        .inflight
                        .remove(&cookie)
                        .unwrap_or_else(|| panic!("reply for unknown cookie {cookie}"));
                    if err != 0 {
                        self.errors += 1;
                        eprintln!("fault-suite: request answered with NBD error {err}");
                        continue;
                    }
                    out.push(match p {
                        Pending::Write(seq) => Done::Write(seq),
                        Pending::Flush(n) => Done::Flush(n),
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("{} NBD requests unanswered for 60 s", self.inflight.len())
                }
                Err(_) => self.closed = true,
            }
        }
        if self.closed {
            self.inflight.clear();
        }
        out
    }

    /// NBD_CMD_DISC and drop the connection (after every reply was read).
    pub fn close(mut self) {
        assert!(self.inflight.is_empty(), "closing with requests in flight");
        let _ = self.c.send_cmd(CMD_DISC, 0, 0, 0, 0, &[]);
    }
}

/// `batches` full batches on `w`'s node (`nodes[w.node]`): send, read every reply, apply them
/// with the peer counted only if the Primary still shows it in sync after the replies.
pub fn run_batches(
    c: &Cluster,
    w: &mut Writer,
    m: &mut Model,
    rng: &mut Rng,
    wl: &Workload,
    batches: u64,
    peer_in_sync: bool,
) {
    for _ in 0..batches {
        w.send_batch(m, rng, wl);
        let dones = w.collect(usize::MAX);
        assert!(!w.closed, "the Primary closed the NBD connection");
        let peer = credit(c, w.node, peer_in_sync);
        m.apply(&dones, w.node, peer);
    }
}

/// The peer to count acknowledgements for, if the schedule had it in sync and the Primary's
/// status file still says so.
pub fn credit(c: &Cluster, primary: NodeIx, peer_in_sync: bool) -> Option<NodeIx> {
    let peer = 1 - primary;
    if !peer_in_sync {
        return None;
    }
    if in_sync_now(&c.nodes[primary]) {
        Some(peer)
    } else {
        eprintln!(
            "fault-suite: note: {} no longer shows its peer in sync (the link dropped by itself?); not counting the peer",
            c.nodes[primary].name
        );
        None
    }
}

/// Read the region from `c.nodes[n]`'s export and compare with the model.
pub fn check_node(c: &Cluster, m: &Model, n: NodeIx) -> CheckReport {
    let image = read_export(&c.nodes[n], m.region_blocks * BLOCK);
    m.check(n, &image)
}
