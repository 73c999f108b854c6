#!/usr/bin/env python3
"""Where rep's CPU goes under 4k randwrite QD32, protocol C (bench/run.sh --profile).

Brings up the two-node pair as bench.py does (fully written random backing files on /dev/shm,
full sync), then runs the same fio job several times, each time watched differently:
  0. nbdkit under `perf record`, for the same buckets of the unreplicated ceiling
  1. plain: IOPS, and per thread of each repd the CPU time and context switches
     (/proc/PID/task/TID/{stat,status}) per I/O
  2. `perf stat` of syscall, scheduler and io_uring tracepoints on both daemons, and the
     io_uring opcodes submitted: all per I/O
  3. `perf record` (DWARF call graphs) on both daemons: the samples sorted into buckets by
     their call chains (bench/perf_buckets.py), and the top symbols by self time
Writes everything under OUT_DIR and prints a summary. Env: PROFILE_SECONDS (10),
REP_BUILDS (first build only), OUT_DIR, PERF_FREQ (499). Network: 127.0.0.1/127.0.0.2 only.
"""
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import BenchError, log  # noqa: E402

# PROFILE_JOB picks any of bench.py's jobs by name (default 4k randwrite QD32; e.g.
# seqwrite-1m-qd8 for where a MiB of replicated writes goes).
JOB = next((j for j in bench.JOBS if j[0] == os.environ.get("PROFILE_JOB", "randwrite-4k-qd32")), None)
if JOB is None:
    sys.exit(f"profile.py: PROFILE_JOB must be one of {', '.join(j[0] for j in bench.JOBS)}")


def threads(pid):
    """{tid: (name, cpu seconds, voluntary, involuntary context switches)}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            rest = raw.rsplit(")", 1)[1].split()
            cpu = (int(rest[11]) + int(rest[12])) / bench.CLK_TCK
            vol = invol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol = int(line.split()[1])
            out[tid] = (name, cpu, vol, invol)
        except (OSError, ValueError):
            continue
    return out


def thread_delta(before, after):
    d = {}
    for tid, (name, cpu, vol, invol) in after.items():
        b = before.get(tid, (name, 0.0, 0, 0))
        d[tid] = (name, cpu - b[1], vol - b[2], invol - b[3])
    return d


def buckets(run, data):
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "perf_buckets.py"),
                        os.path.join(run.out_dir, data)], capture_output=True, text=True)
    return r.stdout.splitlines()


def watched_fio(run, pair, pids, tag, watchers, server="rep-C"):
    """One fio job with `watchers` (command lists) started on the daemons just before it."""
    procs = []
    for cmd, out in watchers:
        f = open(os.path.join(run.out_dir, out), "w")
        procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), f))
    time.sleep(1.0)  # perf needs a moment to attach
    try:
        r = bench.fio_job(run, f"{server}:{tag}", JOB, pair.uri(), pids)
    finally:
        for p, f in procs:
            p.send_signal(2)  # SIGINT: perf writes its summary / data file and exits
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            f.close()
    return r


STAT_EVENTS = [
    "task-clock", "context-switches", "cpu-migrations",
    "sched:sched_wakeup", "sched:sched_switch",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_io_uring_enter", "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_pwrite64", "syscalls:sys_enter_write", "syscalls:sys_enter_futex",
    "io_uring:io_uring_submit_req", "io_uring:io_uring_complete", "io_uring:io_uring_poll_arm",
    "io_uring:io_uring_queue_async_work", "io_uring:io_uring_task_add",
]


def perf_stat_counts(path):
    """{event: count} from `perf stat -x ,` output."""
    out = {}
    for line in open(path, errors="replace"):
        f = line.strip().split(",")
        if len(f) >= 3 and f[0].replace(".", "").isdigit():
            out[f[2].replace("syscalls:sys_enter_", "sys:").replace("io_uring:io_uring_", "uring:")] = float(f[0])
    return out


def uring_opcodes(data):
    r = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True, errors="replace")
    return collections.Counter(m.group(1) for m in re.finditer(r"opcode ([A-Z_]+)", r.stdout))


def perf_top(data, out_txt, limit=40):
    """perf report, self time by symbol (with the DSO), into out_txt; returns the top lines."""
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,sym",
                        "-g", "none", "--percent-limit", "0.3"], capture_output=True, text=True)
    with open(out_txt, "w") as f:
        f.write(r.stdout + r.stderr)
    top = [ln for ln in r.stdout.splitlines() if re.match(r"\s+[0-9.]+%", ln)]
    # The callers of the hottest symbols, for the notes.
    r2 = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio", "--sort", "sym",
                         "-g", "caller,0.5,callee", "--percent-limit", "2"], capture_output=True, text=True)
    with open(out_txt.replace(".txt", "-callgraph.txt"), "w") as f:
        f.write(r2.stdout)
    r3 = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "comm,dso"],
                        capture_output=True, text=True)
    with open(out_txt.replace(".txt", "-by-thread.txt"), "w") as f:
        f.write(r3.stdout)
    return top[:limit]


def main():
    env = os.environ
    seconds = int(env.get("PROFILE_SECONDS", "10"))
    freq = env.get("PERF_FREQ", "499")
    label, _, bindir = env.get("REP_BUILDS", "this=target/release").split()[0].partition("=")

    class Args:
        pass
    args = Args()
    args.rt_w = args.rt_r = seconds
    args.port_base = int(env.get("PORT_BASE", "0"))
    args.quiet_wait = float(env.get("QUIET_WAIT", "0"))
    args.quiet_pct = float(env.get("QUIET_PCT", "25"))
    args.builds = {label: bindir}
    args.resync_conf = "c-plan-ahead 0; resync-rate 4G;"
    args.out_dir = env.get("OUT_DIR") or os.path.join(
        os.getcwd(), "target", "bench", "profile-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    run = bench.Run(args)
    size_mib = int(env.get("SIZE_MIB", "1024"))
    summary = []
    try:
        seed, seed_b = f"{run.work}/seed-a.img", f"{run.work}/seed-b.img"
        bench.write_random(seed, size_mib, 1234)
        bench.write_random(seed_b, size_mib, 5678)
        # nbdkit under the same job first: the same buckets for the unreplicated ceiling show
        # which kernel work is common to both (the unix socket, the tmpfs write).
        img, sock = f"{run.work}/nbdkit.img", f"{run.work}/nbdkit.sock"
        bench.fresh_copy(seed, img)
        kit = run.spawn(["nbdkit", "-f", "-U", sock, "file", img], "nbdkit.log")
        try:
            uri = f"nbd+unix:///?socket={sock}"
            bench.wait_nbd(uri)

            class Kit:
                pass
            kpair = Kit()
            kpair.uri = lambda: uri
            kr = watched_fio(run, kpair, {"nbdkit": kit.pid}, "nbdkit+perf", [
                (["perf", "record", "-F", freq, "--call-graph", "dwarf,16384", "-o",
                  os.path.join(run.out_dir, "perf-nbdkit.data"), "-p", str(kit.pid)], "perf-record-nbdkit.log")],
                server="nbdkit")
        finally:
            run.stop(kit)
            os.unlink(img)
        summary.append(f"nbdkit under perf record: {kr['iops']:.0f} IOPS, {kr['cpu_us_per_io']:.2f} µs CPU per write")
        summary += [f"    {ln}" for ln in buckets(run, "perf-nbdkit.data")]
        perf_top(os.path.join(run.out_dir, "perf-nbdkit.data"), os.path.join(run.out_dir, "perf-report-nbdkit.txt"))

        pair = bench.RepPair(run, label, bindir, run.port(4))
        run.rep_pairs.append(pair)
        bench.fresh_copy(seed, pair.a, extra_mib=64, seed=11)
        bench.fresh_copy(seed_b, pair.b, extra_mib=64, seed=12)
        pair.write_config("C")
        for n in ("node-a", "node-b"):
            pair.adm(n, "create-md", "r0")
            pair.up(n)
        pair.adm("node-a", "wait-connect", "--timeout", "20", "r0")
        pair.adm("node-a", "primary", "--force", "r0")
        bench.wait_until(300, "the full sync", pair.uptodate)
        pids = pair.pids()

        # 1. plain, with per-thread CPU and context switches
        t0 = {n: threads(p) for n, p in pids.items()}
        plain = bench.fio_job(run, f"rep-C:{label}", JOB, pair.uri(), pids)
        t1 = {n: threads(p) for n, p in pids.items()}
        ios = plain["ios"]
        summary.append(f"plain: {plain['iops']:.0f} IOPS, daemons {plain['cpu_us_per_io']:.2f} µs CPU per write "
                       f"({', '.join(f'{n} {v / ios * 1e6:.2f}' for n, v in plain['cpu_s'].items())}), "
                       f"fio {plain['fio_cpu_us_per_io']:.2f} µs, machine busy {plain['machine_busy_pct']:.0f}% of one CPU")
        summary.append("per thread: name  CPU µs/write  voluntary cs/write  involuntary cs/write")
        for n in pids:
            d = thread_delta(t0[n], t1[n])
            for tid, (name, cpu, vol, invol) in sorted(d.items(), key=lambda x: -x[1][1]):
                if cpu > 0 or vol > ios / 100:
                    summary.append(f"  {n} {name:16} {cpu / ios * 1e6:6.2f}  {vol / ios:6.3f}  {invol / ios:6.3f}")
            tot_v = sum(x[2] for x in d.values())
            tot_i = sum(x[3] for x in d.values())
            summary.append(f"  {n} total context switches per write: {tot_v / ios:.3f} voluntary, {tot_i / ios:.3f} involuntary")

        # 2. syscalls, wakeups and io_uring requests per I/O: perf stat counts tracepoints in
        # the daemons' context (cheap: no records), perf record of one tracepoint gives the
        # io_uring opcodes.
        events = ",".join(STAT_EVENTS)
        tr = watched_fio(run, pair, pids, f"{label}+stat", [
            (["perf", "stat", "-x", ",", "-e", events, "-p", str(pids["repd-a"])], "perf-stat-a.txt"),
            (["perf", "stat", "-x", ",", "-e", events, "-p", str(pids["repd-b"])], "perf-stat-b.txt"),
            (["perf", "record", "-e", "io_uring:io_uring_submit_req", "-o",
              os.path.join(run.out_dir, "uring-a.data"), "-p", str(pids["repd-a"])], "uring-record-a.log"),
            (["perf", "record", "-e", "io_uring:io_uring_submit_req", "-o",
              os.path.join(run.out_dir, "uring-b.data"), "-p", str(pids["repd-b"])], "uring-record-b.log")])
        summary.append(f"under perf stat: {tr['iops']:.0f} IOPS ({tr['ios']} writes); events per write:")
        for n, tag in (("repd-a", "a"), ("repd-b", "b")):
            counts = perf_stat_counts(os.path.join(run.out_dir, f"perf-stat-{tag}.txt"))
            summary.append(f"  {n}: " + ", ".join(f"{k} {v / tr['ios']:.3f}" for k, v in counts.items()))
            ops = uring_opcodes(os.path.join(run.out_dir, f"uring-{tag}.data"))
            summary.append(f"  {n} io_uring requests per write: " + ", ".join(
                f"{k} {v / tr['ios']:.3f}" for k, v in ops.most_common(8)))

        # 3. perf record
        rec = watched_fio(run, pair, pids, f"{label}+perf", [
            (["perf", "record", "-F", freq, "--call-graph", "dwarf,16384", "-o",
              os.path.join(run.out_dir, "perf-a.data"), "-p", str(pids["repd-a"])], "perf-record-a.log"),
            (["perf", "record", "-F", freq, "--call-graph", "dwarf,16384", "-o",
              os.path.join(run.out_dir, "perf-b.data"), "-p", str(pids["repd-b"])], "perf-record-b.log")])
        summary.append(f"under perf record: {rec['iops']:.0f} IOPS")
        for n, tag in (("repd-a", "a"), ("repd-b", "b")):
            top = perf_top(os.path.join(run.out_dir, f"perf-{tag}.data"),
                           os.path.join(run.out_dir, f"perf-report-{tag}.txt"))
            summary.append(f"  {n} samples by what they were doing (bench/perf_buckets.py):")
            summary += [f"    {ln}" for ln in buckets(run, f"perf-{tag}.data")]
            summary.append(f"  {n} top self time (perf-report-{tag}.txt):")
            summary += [f"    {ln.strip()}" for ln in top[:25]]
    finally:
        run.cleanup()
    text = "\n".join(summary) + "\n"
    with open(os.path.join(run.out_dir, "summary.txt"), "w") as f:
        f.write(text)
    print(text)
    log(f"profile data and reports in {run.out_dir}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log(f"profile: {e}")
        sys.exit(1)
