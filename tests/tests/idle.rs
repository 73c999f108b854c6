//! Goal: an idle repd sleeps. Nothing in the daemon polls on a clock (docs/architecture.md
//! §11): timers follow the engine's own deadlines, handlers' children are watched through a
//! pidfd, status files are written when the state changes, and `resync-after` follows the other
//! resource through inotify.
//! Method: the context switches of every thread of an idle daemon over a few seconds, read
//! from /proc/PID/task/*/status. A thread that sleeps in a system call until something happens
//! does not switch; one that polls every 250 ms (the old resync-after watcher) or re-arms a
//! 1 s timer does, whatever the load of the machine.

use std::collections::HashMap;
use std::time::Duration;

use rep_tests::{wait_for, Cluster, ClusterOpts, Node};

/// Context switches (voluntary + involuntary) per thread of `pid`.
fn switches(pid: i32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let n: u64 = text
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert(format!("{} {name}", t.file_name().to_string_lossy()), n);
    }
    out
}

/// Switches of every thread of `n`'s daemon during `span`, by thread, only the ones that moved
/// (a thread born meanwhile counts in full).
fn wakeups_over(n: &Node, span: Duration) -> (u64, Vec<(String, u64)>) {
    let pid = n.pid().expect("repd runs");
    let before = switches(pid);
    std::thread::sleep(span);
    let after = switches(pid);
    let mut moved: Vec<(String, u64)> = after
        .iter()
        .map(|(t, &c)| (t.clone(), c - before.get(t).copied().unwrap_or(0).min(c)))
        .filter(|(_, d)| *d > 0)
        .collect();
    moved.sort();
    (moved.iter().map(|(_, d)| d).sum(), moved)
}

/// At most this many context switches in 3 s: the odd one-off (a blocking-pool thread retiring,
/// a ping) fits, any periodic poll does not (the 250 ms resync-after poll alone made 12, the
/// timer's 1 s re-arm 3).
const IDLE_BUDGET: u64 = 4;

#[test]
fn an_idle_connected_pair_does_not_wake_up() {
    let c = Cluster::new(
        "idle-pair",
        ClusterOpts {
            disk_mib: 16,
            // Pings are the protocol's own wake-ups: far apart, to see everything else.
            extra: "  net {\n    ping-int 60;\n    connect-int 1;\n  }\n".into(),
            on_shm: true,
        },
    );
    for n in &c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    c.a().ok(&["primary", "--force", "r0"]);
    for n in &c.nodes {
        wait_for(Duration::from_secs(30), "the pair to be in sync", || {
            let s = n.status_json();
            (s["cstate"] == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate")
                .then_some(())
        });
    }
    // The blocking pool's dial threads retire 10 s after their last job; let them.
    std::thread::sleep(Duration::from_secs(11));
    for n in &c.nodes {
        let (total, moved) = wakeups_over(n, Duration::from_secs(3));
        eprintln!(
            "{}: {total} context switches in 3 s idle: {moved:?}",
            n.name
        );
        assert!(
            total <= IDLE_BUDGET,
            "{}: an idle daemon switched {total} times in 3 s (budget {IDLE_BUDGET}): {moved:?}",
            n.name
        );
        assert_eq!(n.status_json()["cstate"], "Connected", "{}", n.name);
    }
}

#[test]
fn an_idle_standalone_node_with_resync_after_does_not_wake_up() {
    // Two resources in one run dir: r1 follows r0 (resync-after), as the old watcher read
    // r0's status file every 250 ms.
    let c = Cluster::new(
        "idle-single",
        ClusterOpts {
            disk_mib: 16,
            extra: "  disk {\n    resync-after r9;\n  }\n".into(),
            on_shm: true,
        },
    );
    let a = c.a();
    a.ok(&["create-md", "r0"]);
    a.ok(&["up", "r0"]);
    a.ok(&["primary", "--force", "r0"]);
    a.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(10), "StandAlone", || {
        (a.status_json()["cstate"] == "StandAlone").then_some(())
    });
    std::thread::sleep(Duration::from_secs(11));
    let (total, moved) = wakeups_over(a, Duration::from_secs(3));
    eprintln!("node-a: {total} context switches in 3 s idle: {moved:?}");
    assert!(
        total <= IDLE_BUDGET,
        "an idle daemon switched {total} times in 3 s (budget {IDLE_BUDGET}): {moved:?}"
    );
}
