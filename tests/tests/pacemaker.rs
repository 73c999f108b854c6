//! Goal: rep drops into a Pacemaker + Corosync stack the way DRBD does with ocf:linbit:drbd
//! and crm-fence-peer.sh (seed 001's BeeGFS runbook), and recovers from a failure in well
//! under 2 s.
//!
//! Method: a real two-node rep pair (node-a 127.0.0.1, node-b 127.0.0.2) and a real one-node
//! Pacemaker cluster (tests/src/pacemaker.rs) whose only node is node-a; node-b's repd is run
//! by the test as the Secondary Pacemaker does not see. The agent (ha/ocf/rep) and handlers
//! are installed from this checkout.
//! - `ocf_tester_passes_with_promote_and_demote`: resource-agents' ocf-tester against the live
//!   pair (meta-data lint with the DTD, every action, promote/demote twice).
//! - `score_policy`: ha/tests/score-test.sh, the promotion-score table.
//! - `promotable_clone_under_pacemaker`: the documented crm configuration; Pacemaker promotes
//!   node-a with score 10000; a `kill -9` of node-a's repd and a demotion behind Pacemaker's
//!   back are detected by monitor and recovered (the time from the failure to Primary again
//!   is printed as `pacemaker: ...`); the fence-peer handler's constraint keeps Pacemaker from
//!   promoting the fenced node, and unfence releases it; with `fencing resource-only` the
//!   promote (repd, through `repadm primary`) runs fence-peer first and refuses when this
//!   node is the fenced one.
//! - `filesystem_and_service_follow_the_primary`: the guide's full stack — ocf:rep:nbd (the
//!   export as a block device), ocf:heartbeat:Filesystem (ext4) and a service
//!   (ocf:heartbeat:Dummy keeping its state file on that filesystem) in a group colocated
//!   with the Promoted role and ordered after the promotion: it comes up on the Primary, goes
//!   down in order when the clone is demoted (node-a Secondary, nothing mounted) and comes
//!   back with the data; after a `kill -9` of repd under the mounted filesystem the whole
//!   stack is recovered.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rep_tests::pacemaker::{exclusive, ha_dir, InstalledAgent, Pacemaker, NODE};
use rep_tests::{
    bin, require_root, require_tool, run, run_ok, wait_for, Cluster, ClusterOpts, FuseMount, Node,
};

const CLONE: &str = "rep-clone";
const PRIMITIVE: &str = "rep-r0";
/// The issue's target for automatic failover, asserted on the median of the kills: one
/// recovery on a loaded 2-core CI machine may be slower (Pacemaker throttles under CPU load).
const FAILOVER_MEDIAN_BOUND: Duration = Duration::from_secs(2);
/// Any single recovery: detection (one 1 s monitor interval) plus a slow recovery.
const FAILOVER_MAX_BOUND: Duration = Duration::from_secs(5);
const KILLS: usize = 5;

fn pair(test: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 64,
            extra: "  net {\n    connect-int 1;\n    ping-int 1;\n  }\n".into(),
            ..Default::default()
        },
    );
    for n in &c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    c.b()
        .wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    c.a().ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    for n in &c.nodes {
        n.wait_state("Connected", "UpToDate", "UpToDate", 20);
    }
    c
}

fn role(n: &Node) -> String {
    let out = n.repadm(&["role", "r0"]);
    String::from_utf8_lossy(&out.stdout)
        .split('/')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn wait_role(n: &Node, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    wait_for(timeout, &format!("{} to be {want}", n.name), || {
        (role(n) == want).then_some(())
    });
    t0.elapsed()
}

/// wait_role that, on timeout, shows what Pacemaker and both daemons were doing.
fn wait_role_in(c: &Cluster, pm: &Pacemaker, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while role(c.a()) != want {
        if t0.elapsed() > timeout {
            let state = |n: &Node| text(&n.repadm(&["--json", "cstate", "r0"]));
            panic!(
                "timed out after {timeout:?} waiting for node-a to be {want}\n{}\nnode-a: {}\n{}\nnode-b: {}\n{}\n{}",
                pm.crm_mon(),
                state(c.a()),
                c.a().log_tail(),
                state(c.b()),
                c.b().log_tail(),
                pm.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// node-a Primary, both connected and UpToDate: the state each scenario starts from.
fn wait_settled(c: &Cluster, pm: &Pacemaker) {
    wait_role(c.a(), "Primary", Duration::from_secs(30));
    c.a().wait_state("Connected", "UpToDate", "UpToDate", 30);
    // Not wait_for: a timeout shows what Pacemaker reported instead (seen once in a full
    // suite run, with node-a Primary and UpToDate/UpToDate).
    let t0 = Instant::now();
    while !pm.crm_mon().contains("Promoted: [ node-a ]") {
        if t0.elapsed() > Duration::from_secs(20) {
            panic!(
                "timed out after 20s waiting for Pacemaker to report node-a Promoted\n{}\n{}",
                pm.crm_mon(),
                pm.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The guide's crm configuration (docs/failover-pacemaker.md) with this test's paths and one
/// clone instance (node-b is not a cluster node here), loaded with `crm configure load update`.
fn configure_clone(pm: &Pacemaker, a: &Node) {
    let crm = format!(
        "primitive {PRIMITIVE} ocf:rep:rep \\\n\
         \tparams resource=r0 config={config} node={node} run_dir={run} repadm={repadm} \\\n\
         \top monitor interval=1s role=Promoted timeout=20s \\\n\
         \top monitor interval=2s role=Unpromoted timeout=20s \\\n\
         \top start timeout=90s op stop timeout=100s \\\n\
         \top promote timeout=90s op demote timeout=90s\n\
         clone {CLONE} {PRIMITIVE} \\\n\
         \tmeta promotable=true promoted-max=1 promoted-node-max=1 clone-max=1 clone-node-max=1 notify=true\n",
        config = a.config.display(),
        node = a.name,
        run = a.run_dir.display(),
        repadm = bin("repadm").display()
    );
    let file = pm.dir.join("rep.crm");
    std::fs::write(&file, crm).expect("write the crm configuration");
    pm.crm(&["configure", "load", "update", &file.display().to_string()]);
}

fn fence_script(which: &str) -> std::path::PathBuf {
    Path::new("/usr/lib/rep").join(which)
}

/// Run a handler the way repd runs it for node `n` (DRBD_* and REP_* environment).
fn run_handler(n: &Node, peer: &str, script: &str, args: &[&str]) -> Output {
    run(Command::new(fence_script(script))
        .args(args)
        .env("DRBD_RESOURCE", "r0")
        .env("DRBD_PEERS", peer)
        .env("DRBD_PEER", peer)
        .env("DRBD_CONF", &n.config)
        .env("REP_NODE", &n.name)
        .env("REP_RUN_DIR", &n.run_dir)
        .env("REP_REPADM", bin("repadm")))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CONSTRAINT_ID: &str = "rep-fence-by-handler-r0-rep-clone";

/// The node named in the fencing constraint's `#uname ne NODE` expression, if it exists.
fn constraint_owner(pm: &Pacemaker) -> Option<String> {
    let xml = pm.constraints();
    let start = xml.find(&format!("id=\"{CONSTRAINT_ID}\""))?;
    let rest = &xml[start..];
    let expr = rest.find("<expression")?;
    let v = rest[expr..].find("value=\"")? + expr + 7;
    let end = rest[v..].find('"')? + v;
    Some(rest[v..end].to_owned())
}

fn report(line: &str) {
    use std::io::Write;
    // Past the harness's capture, so that the numbers show in CI logs for a passing test.
    let _ = writeln!(std::io::stderr(), "pacemaker: {line}");
}

#[test]
fn score_policy() {
    let out = run(Command::new("bash").arg(ha_dir().join("tests/score-test.sh")));
    assert!(
        out.status.success(),
        "score-test.sh failed:\n{}",
        text(&out)
    );
    report(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    );
}

#[test]
fn ocf_tester_passes_with_promote_and_demote() {
    require_root("the agent starts repd with root's run dirs");
    require_tool("ocf-tester", "resource-agents");
    require_tool("xmllint", "libxml2-utils");
    // No Pacemaker may run meanwhile: the agent's score updates must find no cluster.
    let _held = exclusive();
    let c = pair("ocf-tester");
    let a = c.a();
    let agent = ha_dir().join("ocf/rep");
    let out = run(Command::new("ocf-tester")
        .args(["-v", "-n", "rep1"])
        .arg("-o")
        .arg("resource=r0")
        .arg("-o")
        .arg(format!("config={}", a.config.display()))
        .arg("-o")
        .arg(format!("node={}", a.name))
        .arg("-o")
        .arg(format!("run_dir={}", a.run_dir.display()))
        .arg("-o")
        .arg(format!("repadm={}", bin("repadm").display()))
        .arg(&agent));
    let all = text(&out);
    assert!(
        out.status.success() && all.contains("passed all tests"),
        "ocf-tester failed ({}):\n{all}\nnode-a log:\n{}",
        out.status,
        a.log_tail()
    );
    for step in [
        "Testing: promote",
        "Testing: demote",
        "Testing: demotion of demoted resource",
        "Testing: promotion of promoted resource",
        "Testing: stopping a stopped resource",
    ] {
        assert!(
            all.contains(step),
            "ocf-tester did not run '{step}':\n{all}"
        );
    }
    assert!(
        !all.contains("Validation failed"),
        "meta-data failed the DTD lint:\n{all}"
    );
    let tests: Vec<&str> = all.lines().filter(|l| l.starts_with("Testing:")).collect();
    report(&format!(
        "ocf-tester: {} ({} actions tested)",
        all.lines()
            .find(|l| l.contains("passed all tests"))
            .unwrap_or_default()
            .trim(),
        tests.len()
    ));
    // ocf-tester leaves the resource stopped; the pair is still usable.
    assert_eq!(role(a), "", "ocf-tester must leave node-a's repd stopped");
}

#[test]
fn promotable_clone_under_pacemaker() {
    let held = exclusive();
    let _agent = InstalledAgent::install(&held);
    let c = pair("pacemaker");
    let pm = Pacemaker::start("pacemaker", &held);
    let (a, b) = (c.a(), c.b());
    assert_eq!(NODE, a.name, "the cluster node is the rep node it manages");
    configure_clone(&pm, a);

    // Promotion: the clone is started on node-a (already up: start is a no-op) and promoted
    // because its score is the highest one.
    wait_role_in(&c, &pm, "Primary", Duration::from_secs(60));
    wait_settled(&c, &pm);
    wait_for(Duration::from_secs(10), "the promotion score 10000", || {
        (pm.promotion_score(PRIMITIVE) == Some(10000)).then_some(())
    });
    assert_eq!(role(b), "Secondary");

    // A crash of node-a's repd: monitor (1 s, role Promoted) finds it not running, Pacemaker
    // recovers (demote, stop, start, promote).
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let t0 = Instant::now();
        a.kill9();
        wait_role_in(&c, &pm, "Primary", Duration::from_secs(30));
        kills.push(t0.elapsed());
        let mon = pm.crm_mon();
        assert!(
            mon.contains("monitor") && mon.contains("not running"),
            "Pacemaker must have recorded the failed monitor:\n{mon}"
        );
        wait_settled(&c, &pm);
        pm.crm(&["resource", "cleanup", CLONE]);
        wait_settled(&c, &pm);
    }
    // A demotion behind Pacemaker's back: the Promoted monitor sees a Secondary (rc 0, not 8).
    let t0 = Instant::now();
    a.ok(&["secondary", "r0"]);
    wait_role_in(&c, &pm, "Primary", Duration::from_secs(30));
    let demoted = t0.elapsed();
    assert!(
        pm.crm_mon().contains("returned 'ok'"),
        "Pacemaker must have recorded the unexpected monitor result:\n{}",
        pm.crm_mon()
    );
    pm.crm(&["resource", "cleanup", CLONE]);
    wait_settled(&c, &pm);
    let ms = |d: &Duration| d.as_millis();
    report(&format!(
        "failover kill -9 -> Primary again: {:?} ms; secondary behind Pacemaker's back -> Primary: {} ms",
        kills.iter().map(ms).collect::<Vec<_>>(),
        ms(&demoted)
    ));
    let mut sorted = kills.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    report(&format!(
        "failover median {} ms over {KILLS} kills (bound {FAILOVER_MEDIAN_BOUND:?})",
        median.as_millis()
    ));
    assert!(
        median < FAILOVER_MEDIAN_BOUND,
        "median recovery {median:?} exceeds {FAILOVER_MEDIAN_BOUND:?}: {kills:?}"
    );
    for d in kills.iter().chain([&demoted]) {
        assert!(
            *d < FAILOVER_MAX_BOUND,
            "a recovery took {d:?}, more than {FAILOVER_MAX_BOUND:?}"
        );
    }

    // Fencing, case 1: node-a (Primary) lost node-b, which is not a cluster member: the
    // handler places the constraint for node-a and answers 5 (peer unreachable); node-a stays
    // Promoted. Unfence leaves it while node-b is away and removes it after the resync.
    b.ok(&["down", "r0"]);
    a.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    let o = run_handler(a, "node-b", "rep-fence-peer.sh", &[]);
    assert_eq!(code(&o), 5, "fence-peer with node-b gone:\n{}", text(&o));
    assert_eq!(constraint_owner(&pm).as_deref(), Some("node-a"));
    let o = run_handler(a, "node-b", "rep-fence-peer.sh", &[]);
    assert_eq!(
        code(&o),
        4,
        "fence-peer again (constraint in place):\n{}",
        text(&o)
    );
    let o = run_handler(a, "node-b", "rep-unfence-peer.sh", &["--timeout", "1"]);
    assert_eq!(code(&o), 1, "unfence while node-b is away:\n{}", text(&o));
    assert!(constraint_owner(&pm).is_some(), "the constraint must stay");
    assert_eq!(role(a), "Primary");
    b.ok(&["up", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    let o = run_handler(b, "node-a", "rep-unfence-peer.sh", &[]);
    assert_eq!(code(&o), 0, "unfence after the resync:\n{}", text(&o));
    assert_eq!(
        constraint_owner(&pm),
        None,
        "unfence must remove the constraint"
    );

    // Fencing, case 2: node-b, cut off from node-a, fences it (node-a is a reachable cluster
    // member: exit 4). Pacemaker must demote node-a and not promote it again although its
    // score allows it; unfence after reconnecting lets Pacemaker promote it again.
    b.ok(&["disconnect", "r0"]);
    a.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    let o = run_handler(b, "node-a", "rep-fence-peer.sh", &["--node-name", "node-b"]);
    assert_eq!(code(&o), 4, "node-b fencing node-a:\n{}", text(&o));
    assert_eq!(constraint_owner(&pm).as_deref(), Some("node-b"));
    wait_role(a, "Secondary", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        assert_eq!(role(a), "Secondary", "Pacemaker promoted the fenced node");
        std::thread::sleep(Duration::from_millis(100));
    }
    let score = pm.promotion_score(PRIMITIVE);
    assert!(
        score.is_some_and(|s| s > 0),
        "the fenced node keeps its score ({score:?}); the constraint is what forbids promotion"
    );
    assert!(
        pm.crm_mon().contains("Unpromoted: [ node-a ]"),
        "{}",
        pm.crm_mon()
    );
    b.ok(&["connect", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    let o = run_handler(a, "node-b", "rep-unfence-peer.sh", &[]);
    assert_eq!(code(&o), 0, "unfence:\n{}", text(&o));
    assert_eq!(constraint_owner(&pm), None);
    let t0 = Instant::now();
    wait_role(a, "Primary", Duration::from_secs(20));
    report(&format!(
        "fenced node-a stayed Unpromoted with score {score:?}; promoted {} ms after unfence",
        t0.elapsed().as_millis()
    ));
    wait_settled(&c, &pm);

    // Fencing at promotion: with `fencing resource-only` in the resource, promoting a
    // disconnected Secondary runs the fence-peer handler first (DRBD's rule for a peer that is
    // not known Outdated). The clone is unmanaged and the agent's promote is run directly.
    pm.crm(&["resource", "unmanage", CLONE]);
    let original = std::fs::read_to_string(&a.config).expect("read the resource file");
    let fenced = original.replacen(
        "  net {",
        &format!(
            "  disk {{\n    fencing resource-only;\n  }}\n  handlers {{\n    fence-peer \"{} --repadm {}\";\n  }}\n  net {{",
            fence_script("rep-fence-peer.sh").display(),
            bin("repadm").display()
        ),
        1,
    );
    std::fs::write(&a.config, fenced).expect("write the resource file");
    // The running repd takes fencing and the handler from the changed file (drbdadm adjust).
    a.ok(&["adjust", "r0"]);
    b.ok(&["down", "r0"]);
    a.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    a.ok(&["secondary", "r0"]);
    let promote = || run(Command::new("crm_resource").args(["-r", PRIMITIVE, "--force-promote"]));
    let o = promote();
    assert!(
        o.status.success(),
        "promote with node-b gone:\n{}",
        text(&o)
    );
    assert_eq!(role(a), "Primary");
    assert_eq!(
        constraint_owner(&pm).as_deref(),
        Some("node-a"),
        "promote must have fenced node-b first"
    );
    // This node is the fenced one (node-b's constraint): promote must refuse. node-a knows
    // node-b Outdated now (the handler's exit 5, persisted), and with that known DRBD and rep
    // promote without asking; so node-b comes back, resyncs and goes away again while node-a
    // is Secondary (a Secondary losing its peer fences nothing): node-b's disk is unknown to
    // node-a again, and promotion must ask the handler, which finds node-b's constraint.
    a.ok(&["secondary", "r0"]);
    b.ok(&["up", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    b.ok(&["down", "r0"]);
    a.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    run_ok(Command::new("cibadmin").args([
        "-D",
        "-X",
        &format!("<rsc_location id=\"{CONSTRAINT_ID}\" rsc=\"{CLONE}\"/>"),
    ]));
    run_ok(Command::new("cibadmin").args([
        "-C",
        "-o",
        "constraints",
        "-X",
        &format!("<rsc_location rsc=\"{CLONE}\" id=\"{CONSTRAINT_ID}\"><rule role=\"Promoted\" score=\"-INFINITY\" id=\"rep-fence-by-handler-r0-rule-{CLONE}\"><expression attribute=\"#uname\" operation=\"ne\" value=\"node-b\" id=\"rep-fence-by-handler-r0-expr-{CLONE}\"/></rule></rsc_location>"),
    ]));
    let o = promote();
    assert!(
        !o.status.success(),
        "promote must refuse on the fenced node:\n{}",
        text(&o)
    );
    assert_eq!(role(a), "Secondary", "the fenced node must stay Secondary");
    std::fs::write(&a.config, original).expect("restore the resource file");
    a.ok(&["adjust", "r0"]);
}

fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*dir.to_string_lossy()))
}

fn stack_up(pm: &Pacemaker, mnt: &Path) -> bool {
    let mon = pm.crm_mon();
    mounted(mnt)
        && mon.contains("svc-r0")
        && !mon.contains("Stopped")
        && mnt.join("dummy.state").exists()
}

fn wait_stack_up(pm: &Pacemaker, mnt: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stack_up(pm, mnt) {
        assert!(
            Instant::now() < deadline,
            "timed out after 60 s waiting for {what}:\n{}\n{}",
            pm.crm_mon(),
            pm.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn filesystem_and_service_follow_the_primary() {
    require_tool("nbdfuse", "libnbd-bin");
    require_tool("mkfs.ext4", "e2fsprogs");
    // ocf:heartbeat:Filesystem checks for modprobe even where the kernel has no modules.
    require_tool("modprobe", "kmod");
    let held = exclusive();
    let _agent = InstalledAgent::install(&held);
    let c = pair("pacemaker-fs");
    let a = c.a();
    // ext4 on the replicated device, made through node-a's export while it is Primary.
    a.ok(&["primary", "r0"]);
    let mut fm = FuseMount::attach(&c.dir.join("mkfs"), &a.nbd_socket());
    fm.mkfs();
    fm.detach();
    drop(fm);
    a.ok(&["secondary", "r0"]);

    let pm = Pacemaker::start("pacemaker-fs", &held);
    let mnt = c.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir mnt");
    let dev = c.dir.join("r0.dev");
    let crm = format!(
        "primitive {PRIMITIVE} ocf:rep:rep \\\n\
         \tparams resource=r0 config={config} node=node-a run_dir={run} repadm={repadm} \\\n\
         \top monitor interval=1s role=Promoted timeout=20s \\\n\
         \top monitor interval=2s role=Unpromoted timeout=20s\n\
         clone {CLONE} {PRIMITIVE} \\\n\
         \tmeta promotable=true promoted-max=1 promoted-node-max=1 clone-max=1 clone-node-max=1 notify=true\n\
         primitive nbd-r0 ocf:rep:nbd \\\n\
         \tparams resource=r0 run_dir={run} device={dev} state_dir={state} \\\n\
         \top monitor interval=5s timeout=20s\n\
         primitive fs-r0 Filesystem \\\n\
         \tparams device={dev} directory={mnt} fstype=ext4 \\\n\
         \top monitor interval=5s timeout=40s\n\
         primitive svc-r0 Dummy \\\n\
         \tparams state={mnt}/dummy.state \\\n\
         \top monitor interval=5s timeout=20s\n\
         group g-r0 nbd-r0 fs-r0 svc-r0\n\
         colocation col-g-r0-with-primary inf: g-r0 {CLONE}:Promoted\n\
         order ord-g-r0-after-promote Mandatory: {CLONE}:promote g-r0:start\n",
        config = a.config.display(),
        run = a.run_dir.display(),
        repadm = bin("repadm").display(),
        dev = dev.display(),
        state = c.dir.join("nbd-state").display(),
        mnt = mnt.display(),
    );
    let file = pm.dir.join("stack.crm");
    std::fs::write(&file, crm).expect("write the crm configuration");
    let verify = run(Command::new("crm_verify").args(["-L", "-V"]));
    assert!(verify.status.success(), "crm_verify -L: {}", text(&verify));
    pm.crm(&["configure", "load", "update", &file.display().to_string()]);

    wait_stack_up(&pm, &mnt, "the stack to start on the Primary");
    assert_eq!(role(a), "Primary");
    std::fs::write(mnt.join("payload"), b"written through Pacemaker's stack\n")
        .expect("write a file on the mounted filesystem");
    run_ok(Command::new("sync").arg("-f").arg(mnt.join("payload")));

    // Demote the clone: the group stops first (service, filesystem, export), then rep.
    pm.crm(&["resource", "demote", CLONE]);
    wait_role(a, "Secondary", Duration::from_secs(60));
    assert!(
        !mounted(&mnt),
        "the filesystem must be unmounted before the demotion"
    );
    assert!(!dev.exists(), "the device link must be gone");
    pm.crm(&["resource", "promote", CLONE]);
    wait_stack_up(&pm, &mnt, "the stack to come back after promotion");
    assert_eq!(
        std::fs::read(mnt.join("payload")).expect("read the file back"),
        b"written through Pacemaker's stack\n"
    );

    // A crash of repd under the mounted filesystem: the monitor sees it, Pacemaker stops the
    // group (the filesystem's I/O fails meanwhile), restarts rep, promotes, starts the group.
    let t0 = Instant::now();
    a.kill9();
    wait_role(a, "Primary", Duration::from_secs(60));
    wait_stack_up(&pm, &mnt, "the stack to run again after the crash");
    report(&format!(
        "filesystem stack recovered {} ms after kill -9 (rep Primary, ext4 mounted, service running)",
        t0.elapsed().as_millis()
    ));
    assert_eq!(
        std::fs::read(mnt.join("payload")).expect("read the file after the crash"),
        b"written through Pacemaker's stack\n"
    );
    // Stop the stack while Pacemaker runs, so that nothing stays mounted on teardown.
    pm.crm(&["resource", "stop", CLONE]);
    wait_for(Duration::from_secs(60), "the stack to stop", || {
        (!mounted(&mnt) && role(a).is_empty()).then_some(())
    });
}
