//! Goal: rep drops into the seeds' keepalived and ucarp stacks (ha/: the notify scripts and
//! example configurations, used as shipped) and fails over automatically: after the Primary
//! node dies (`kill -9` of its failover manager and repd at once), the other node is Primary
//! and serving NBD on the floating address in under 2 s with keepalived (VRRPv3, advert_int
//! 0.1); ucarp's floor is about 3 s (whole-second advbase × deadratio 3).
//!
//! Method: `rep_tests::ha` builds two node namespaces and a client namespace on a bridge.
//! Each round writes a marker block through the Primary (FUA), kills the Primary node, and
//! times from the kill until an NBD client in the client namespace (`nbd-probe`, retrying every
//! 10 ms) reads the marker back through the floating address — i.e. until the other node is
//! Primary, holds the address and serves the data. The notify script's log splits the time
//! into VRRP/CARP detection (kill → notify), promotion (notify → Primary) and the rest. Then
//! the dead node returns as Secondary, resyncs, and the next round kills the other node.
//! `Death::Cut` rounds also unplug the dying node's cable: no FIN reaches the survivor, whose
//! engine must notice the silence by ping-int + ping-timeout (1 s + 0.5 s here) before
//! `repadm primary` is allowed — the notify script waits for that.
//!
//! Prints `failover: <manager> <death> round=N total_ms=… detect_ms=… promote_ms=… serve_ms=…`
//! and a summary line per manager and death: `failover: <manager> <death> min_ms=… median_ms=…
//! max_ms=… rounds=N`.

use std::sync::Mutex;
use std::time::Duration;

use rep_tests::ha::{log_time_after, summary, times_of, Death, HaPair, Manager};

/// The rounds measure time: one at a time keeps the figures honest.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start both managers, node-a first: it becomes master and Primary, node-b settles as backup.
fn start(p: &mut HaPair) {
    p.start_manager(0);
    p.wait_role(0, "Primary", 20);
    p.start_manager(1);
    // Both log their start-up backup notification ("already Secondary") once settled.
    p.wait_ha_log(1, "already Secondary", 1, 20);
}

struct Round {
    total_ms: u128,
}

/// Kill the Primary node `side`, time the failover to the other, bring `side` back.
fn round(p: &mut HaPair, n: usize, side: usize, death: Death, fill: u8) -> Round {
    let other = 1 - side;
    assert_eq!(
        p.role(side),
        "Primary",
        "round {n}: node {side} should be Primary"
    );
    assert!(
        p.net.has_vip(side),
        "round {n}: node {side} should hold the floating address"
    );
    p.write_marker(side, fill);
    let log_before = p.ha_log_text(other).len();
    let promoted_before = p.ha_log_text(other).matches("Primary after").count();
    let t0 = p.kill_node(side, death);
    let served = p.probe(fill, Duration::from_secs(30));
    let served = served.unwrap_or_else(|e| {
        panic!(
            "round {n}: no NBD service on the floating address within 30 s: {e}\nnotify log of the survivor:\n{}\nmanager:\n{}\nrepd:\n{}",
            p.ha_log_tail(other),
            p.manager_log_tail(other),
            p.node(other).log_tail()
        )
    });
    // The script logs the promotion just after repadm returns: the probe can be faster.
    p.wait_ha_log(other, "Primary after", promoted_before + 1, 10);
    let log = p.ha_log_text(other);
    let new = &log[log_before.min(log.len())..];
    let notified = log_time_after(new, "master: notified", t0);
    let primary = log_time_after(new, "Primary after", t0);
    let ms = |a: u128, b: Option<u128>| {
        b.map_or("?".to_string(), |b| {
            ((b.saturating_sub(a)) / 1000).to_string()
        })
    };
    let total_ms = (served - t0) / 1000;
    println!(
        "failover: {:?} {death:?} round={n} total_ms={total_ms} detect_ms={} promote_ms={} serve_ms={}",
        p.kind,
        ms(t0, notified),
        notified.map_or("?".into(), |t| ms(t, primary)),
        primary.map_or("?".into(), |t| ms(t, Some(served))),
    );
    assert_eq!(p.role(other), "Primary");
    assert!(
        p.net.has_vip(other),
        "the survivor holds the floating address"
    );
    let settled_before = p.ha_log_text(side).matches("already Secondary").count();
    p.revive(side);
    // The returning node's manager must be settled (backup) before the next kill.
    p.wait_ha_log(side, "already Secondary", settled_before + 1, 20);
    Round { total_ms }
}

fn failover_rounds(test: &str, k: u8, kind: Manager, deaths: &[Death]) -> Vec<(Death, u128)> {
    rounds_on(HaPair::new(test, k, kind, 64, ""), deaths)
}

fn rounds_on(mut p: HaPair, deaths: &[Death]) -> Vec<(Death, u128)> {
    let kind = p.kind;
    start(&mut p);
    let mut primary = 0;
    let mut out = Vec::new();
    for (n, &death) in deaths.iter().enumerate() {
        let r = round(&mut p, n, primary, death, 0x40 + n as u8);
        out.push((death, r.total_ms));
        primary = 1 - primary;
    }
    for death in [Death::Kill, Death::Cut] {
        let ms = times_of(&out, death);
        if ms.is_empty() {
            continue;
        }
        let (min, med, max) = summary(&ms);
        println!(
            "failover: {kind:?} {death:?} min_ms={min} median_ms={med} max_ms={max} rounds={}",
            ms.len()
        );
        eprintln!(
            "failover: {kind:?} {death:?} min_ms={min} median_ms={med} max_ms={max} rounds={}",
            ms.len()
        );
    }
    out
}

/// Three rounds with the Primary's processes killed, two with its cable cut.
const KEEPALIVED_DEATHS: [Death; 5] = [
    Death::Kill,
    Death::Kill,
    Death::Kill,
    Death::Cut,
    Death::Cut,
];

#[test]
fn keepalived_fails_over_in_under_two_seconds() {
    let _s = serial();
    let deaths = KEEPALIVED_DEATHS;
    let out = failover_rounds("ha-keepalived", 0, Manager::Keepalived, &deaths);
    let kill = times_of(&out, Death::Kill);
    let cut = times_of(&out, Death::Cut);
    let (_, med, _) = summary(&kill);
    assert!(
        med < 2000,
        "keepalived failover median {med} ms (target < 2 s): {kill:?}"
    );
    let (_, med, _) = summary(&cut);
    assert!(
        med < 2500,
        "keepalived failover with the cable cut, median {med} ms: {cut:?}"
    );
}

/// With a diskless witness (docs/quorum.md), the survivor's promotion first has the dead node
/// outdated through the witness, which answers "unreachable" once its link to the dead node is
/// gone (at once after a kill, within ping-int + ping-timeout after a cut): the failover still
/// stays under 2 s.
#[test]
fn keepalived_with_a_witness_fails_over_in_under_two_seconds() {
    let _s = serial();
    let deaths = KEEPALIVED_DEATHS;
    let p = HaPair::with_witness("ha-keepalived-w", 3, Manager::Keepalived, 64, "");
    let out = rounds_on(p, &deaths);
    for death in [Death::Kill, Death::Cut] {
        let ms = times_of(&out, death);
        let (_, med, _) = summary(&ms);
        assert!(
            med < 2000,
            "keepalived failover with a witness, {death:?}: median {med} ms (target < 2 s): {ms:?}"
        );
    }
}

#[test]
fn ucarp_fails_over_in_about_three_seconds() {
    let _s = serial();
    let out = failover_rounds(
        "ha-ucarp",
        1,
        Manager::Ucarp,
        &[Death::Kill, Death::Kill, Death::Cut],
    );
    for (_, ms) in out {
        assert!(ms < 6000, "ucarp failover took {ms} ms (floor about 3 s)");
    }
}
