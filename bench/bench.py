#!/usr/bin/env python3
"""rep's benchmark: rep against its anchors, all in one run on this machine (bench/run.sh).

Servers, each measured with the same fio jobs (ioengine=nbd, whole export):
  nbdkit        `nbdkit file` on a unix socket: the unreplicated ceiling
  qemu-mirror   qemu-storage-daemon exporting A, `blockdev-mirror copy-mode=write-blocking` to a
                second qemu-storage-daemon's NBD export on 127.0.0.2 (QEMU's synchronous mirror)
  rep-C:BUILD   rep protocol C, Primary on 127.0.0.1, Secondary on 127.0.0.2
  rep-A:BUILD   the same pair with protocol A
  rep-SA:BUILD  the Primary disconnected (StandAlone): rep's local path alone
Each round runs nbdkit first and then every rep build, so that the baseline is measured in the
same minutes as what is compared with it; ROUNDS (default 3) such rounds give medians and
spreads, and a round whose nbdkit figure is more than 10% away from the median is flagged (the
machine changed under that round). The jobs and ratios are those of ../shared/tools/perf-ratio.sh
(mean total latency, fio's lat_ns; the round trip used in the ratios is sockperf's unpinned mean,
as there), so the two agree on the same machine.
A filesystem job (ext4 through nbdfuse and a loop device, small files each written and fsync'd:
a metadata server's pattern) runs on nbdkit and on rep C and gives files per second.
and alongside: the loopback TCP round trip (sockperf), nbdcopy between two nbdkit over TCP
(127.0.0.1 -> 127.0.0.2), rep's full sync and incremental resync, the CPU time of every daemon
around every job (/proc/PID/stat), and repd's RSS under load (/proc/PID/status).

Stdlib only, so that a fresh Debian machine runs it after scripts/deps.sh. Network: 127.0.0.1 and
127.0.0.2 only; every load is bounded by fio's runtime or a fixed size; every daemon and file it
made is removed on exit, also on failure or SIGINT/SIGTERM.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# (name, fio rw, block size, iodepth, runtime key, extra fio options); perf-ratio.sh's w32, w1,
# f1, s8 and r32.
JOBS = [
    ("randwrite-4k-qd32", "randwrite", "4k", 32, "rt_w", []),
    ("randwrite-4k-qd1", "randwrite", "4k", 1, "rt_w", []),
    # A FLUSH after every write: a metadata server's journal commit. Its latency is the write's
    # plus the FLUSH's (fio's sync latency), as in perf-ratio.sh.
    ("randwrite-4k-qd1-flush", "randwrite", "4k", 1, "rt_w", ["--fsync=1"]),
    ("seqwrite-1m-qd8", "write", "1M", 8, "rt_w", []),
    ("randread-4k-qd32", "randread", "4k", 32, "rt_r", []),
]
FIO_COMMON = ["--ioengine=nbd", "--time_based", "--norandommap", "--randrepeat=1",
              "--group_reporting", "--percentile_list=50:99:99.9", "--output-format=json"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# /proc sampling

def proc_cpu_s(pid):
    """utime + stime of the whole process (all its threads, also the exited ones), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_cpu_s():
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class RssSampler:
    """Largest VmRSS of some processes while a job runs (sampled every 100 ms)."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self.peak = {name: 0 for name in self.pids}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                v = proc_status_kib(pid, "VmRSS")
                if v:
                    self.peak[name] = max(self.peak[name], v)
            self.stop.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------------------------------
# The run: its processes, files and ports

class Run:
    def __init__(self, args):
        self.args = args
        self.work = f"/dev/shm/rep-bench.{os.getpid()}"
        self.out_dir = args.out_dir
        self.procs = []          # Popen objects we started
        self.rep_pairs = []      # (repadm, repd, config, run dirs) brought up, for cleanup
        # Ports below the kernel's ephemeral range (32768-) and above the tests' (10000-29999).
        self.port_base = args.port_base or 30000 + (os.getpid() % 270) * 10
        os.makedirs(self.work)
        os.makedirs(self.out_dir, exist_ok=True)

    def port(self, i):
        p = self.port_base + i
        for host in ("127.0.0.1", "127.0.0.2"):
            s = socket.socket()
            # As the daemons bind (std's listeners set SO_REUSEADDR): the previous round's
            # connections in TIME_WAIT do not make the port taken, a live listener does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, p))
            except OSError as e:
                raise BenchError(f"port {host}:{p} is taken ({e}); set PORT_BASE to a free range "
                                 "of 10 ports below 32768") from e
            finally:
                s.close()
        return p

    def spawn(self, cmd, log_name, **kw):
        f = open(os.path.join(self.out_dir, log_name), "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        f.close()
        self.procs.append(p)
        return p

    def stop(self, p, timeout=5.0):
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def cleanup(self):
        for pair in list(self.rep_pairs):
            try:
                pair.down()
            except Exception as e:  # cleanup goes on with the rest whatever happened
                log(f"cleanup: {pair.label}: {e}")
        for p in list(self.procs):
            try:
                self.stop(p, 3.0)
            except Exception as e:
                log(f"cleanup: pid {p.pid}: {e}")
        shutil.rmtree(self.work, ignore_errors=True)


def run_cmd(cmd, check=True, timeout=600, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def wait_until(secs, what, pred, step=0.02):
    end = time.monotonic() + secs
    while not pred():
        if time.monotonic() > end:
            raise BenchError(f"gave up after {secs} s waiting for {what}")
        time.sleep(step)


def wait_nbd(uri, secs=15):
    wait_until(secs, f"{uri} to answer",
               lambda: subprocess.run(["nbdinfo", "--size", uri], capture_output=True).returncode == 0,
               step=0.1)


def now():
    return time.monotonic()


# ------------------------------------------------------------------------------------------------
# Backing data: random bytes, every page written before any timing

def write_random(path, mib, seed):
    r = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(r.randbytes(1 << 20))


def fresh_copy(src, dst, extra_mib=0, seed=0):
    """A fully written copy (cp into new tmpfs pages writes every one of them)."""
    shutil.copyfile(src, dst)
    if extra_mib:
        with open(dst, "ab") as f:
            r = random.Random(seed)
            for _ in range(extra_mib):
                f.write(r.randbytes(1 << 20))


# ------------------------------------------------------------------------------------------------
# fio with CPU accounting

def fio_job(run, server, job, uri, pids, rss_pids=None):
    """Run one fio job against uri; CPU of every pid in `pids` (name -> pid) around it."""
    name, rw, bs, qd, rtk, extra = job
    rt = getattr(run.args, rtk)
    out = os.path.join(run.out_dir, "fio", server, name + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = ["fio", f"--name={name}", *FIO_COMMON, f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
           f"--iodepth={qd}", "--numjobs=1", f"--runtime={rt}", f"--output={out}", *extra]
    waited = wait_quiet(run.args, pids)
    before = {n: proc_cpu_s(p) for n, p in pids.items()}
    m0 = machine_cpu_s()
    with RssSampler(rss_pids or {}) as rss:
        with open(out + ".stderr", "w") as errf:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
            # wait4 gives fio's own CPU time (the client shares the two cores with the daemons).
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(out + ".stderr") as errf:
            err = errf.read()
    m1 = machine_cpu_s()
    after = {n: proc_cpu_s(pp) for n, pp in pids.items()}
    if p.returncode != 0:
        raise BenchError(f"fio {name} on {server} failed ({p.returncode}): {err.strip()}")
    with open(out) as f:
        j = json.load(f)["jobs"][0]
    side = j["read"] if rw.endswith("read") else j["write"]
    if j.get("error"):
        raise BenchError(f"fio {name} on {server}: error {j['error']}")
    ios = side["total_ios"]
    cpu = {n: after[n] - before[n] for n in pids if before[n] is not None and after[n] is not None}
    if len(cpu) != len(pids):
        raise BenchError(f"{server}: a daemon went away during {name}: {sorted(set(pids) - set(cpu))}")
    daemons = sum(cpu.values())
    fio_cpu = ru.ru_utime + ru.ru_stime
    wall = side["runtime"] / 1000 if side.get("runtime") else rt
    busy = m1[0] - m0[0]
    sync_us = j.get("sync", {}).get("lat_ns", {}).get("mean", 0) / 1e3 if extra else 0.0
    r = {
        "iops": side["iops"],
        "mbps": side["bw_bytes"] / 1e6,
        # Submission to completion (lat_ns, as perf-ratio.sh), plus the FLUSH for the f1 job.
        "lat_mean_us": side["lat_ns"]["mean"] / 1e3 + sync_us,
        "sync_lat_mean_us": sync_us,
        "lat_p50_us": side["clat_ns"]["percentile"]["50.000000"] / 1e3,
        "lat_p99_us": side["clat_ns"]["percentile"]["99.000000"] / 1e3,
        "ios": ios,
        "cpu_s": {n: round(v, 3) for n, v in cpu.items()},
        "cpu_us_per_io": daemons / ios * 1e6 if ios else None,
        "fio_cpu_us_per_io": fio_cpu / ios * 1e6 if ios else None,
        # CPU used on the machine by processes other than these daemons and fio: the noise.
        "other_cpu_pct": max(0.0, (busy - daemons - fio_cpu) / wall * 100),
        "machine_busy_pct": busy / wall * 100,
        "waited_for_quiet_s": waited,
    }
    if rss_pids:
        r["rss_peak_kib"] = rss.peak
    log(f"  {server:14} {name:18} {r['iops']:9.0f} IOPS {r['mbps']:8.1f} MB/s "
        f"{r['lat_mean_us']:7.1f} us mean  cpu/io {r['cpu_us_per_io']:5.1f} us "
        f"({' '.join(f'{n}={v:.2f}s' for n, v in cpu.items())}) other {r['other_cpu_pct']:.0f}%")
    return r


def wait_quiet(args, pids):
    """With QUIET_WAIT > 0, wait up to that many seconds until the rest of the machine uses
    less than QUIET_PCT % of one CPU (sampled over 1 s): on a shared machine, other people's
    builds are the largest source of noise. Returns the seconds waited."""
    if args.quiet_wait <= 0:
        return 0.0
    t0 = now()
    while True:
        m0, c0 = machine_cpu_s()[0], sum(proc_cpu_s(p) or 0 for p in pids.values())
        time.sleep(1.0)
        m1, c1 = machine_cpu_s()[0], sum(proc_cpu_s(p) or 0 for p in pids.values())
        other = (m1 - m0 - (c1 - c0)) * 100
        if other <= args.quiet_pct or now() - t0 >= args.quiet_wait:
            return round(now() - t0, 1)


def fio_suite(run, server, uri, pids, rss_pids=None, fs=False):
    res = {job[0]: fio_job(run, server, job, uri, pids, rss_pids) for job in JOBS}
    if fs and "fs" in run.args.only:
        res["fs-small-files"] = fs_job(run, server, uri, pids)
    return res


def fs_tools():
    """Why the filesystem job cannot run here, or None."""
    if os.geteuid() != 0:
        return "it needs root (FUSE, loop devices, mount)"
    missing = [t for t in ("nbdfuse", "losetup", "mkfs.ext4", "mount", "umount") if not shutil.which(t)]
    return f"missing {', '.join(missing)}" if missing else None


def fs_job(run, server, uri, pids):
    """ext4 through nbdfuse and a loop device; small files, each written and fsync'd (a journal
    commit each, which reaches the server as writes and a FLUSH), for RT_FS seconds or FS_FILES
    files, whichever comes first. Files per second, and the daemons' CPU per file."""
    why = fs_tools()
    if why:
        log(f"  {server:14} fs-small-files     skipped: {why}")
        return None
    fuse_dir, mnt = f"{run.work}/fuse-{server}", f"{run.work}/mnt-{server}"
    os.makedirs(fuse_dir, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    disk = f"{fuse_dir}/disk"
    sock = uri.split("socket=", 1)[1]
    fuse = run.spawn(["nbdfuse", disk, "--unix", sock], f"nbdfuse-{server}.log")
    loop = None
    mounted = False
    try:
        wait_until(20, "nbdfuse to expose the disk",
                   lambda: os.path.exists(disk) and os.path.getsize(disk) > 0, step=0.05)
        loop = run_cmd(["losetup", "-f", "--show", disk]).stdout.strip()
        # Inode tables and journal written now, not by ext4lazyinit during the timing; no
        # discard of the whole device (rep would replicate it, nbdkit would punch it).
        run_cmd(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", loop])
        run_cmd(["mount", loop, mnt])
        mounted = True
        block = random.Random(7).randbytes(4096)
        waited = wait_quiet(run.args, pids)
        before = {n: proc_cpu_s(p) for n, p in pids.items()}
        t0 = now()
        end = t0 + run.args.rt_fs
        n = 0
        while n < run.args.fs_files and now() < end:
            fd = os.open(f"{mnt}/f{n}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            n += 1
        t = now() - t0
        after = {n_: proc_cpu_s(p) for n_, p in pids.items()}
        cpu = sum(after[k] - before[k] for k in pids if before[k] is not None and after[k] is not None)
        r = {"files": n, "s": t, "files_per_s": n / t, "cpu_us_per_file": cpu / n * 1e6 if n else None,
             "waited_for_quiet_s": waited}
        log(f"  {server:14} fs-small-files     {r['files_per_s']:9.0f} files/s (4 KiB each, written and "
            f"fsync'd, ext4 via nbdfuse+loop)  cpu/file {r['cpu_us_per_file'] or 0:5.1f} us")
        return r
    finally:
        if mounted:
            run_cmd(["umount", mnt], check=False)
        if loop:
            run_cmd(["losetup", "-d", loop], check=False)
        run_cmd(["umount", fuse_dir], check=False)
        run.stop(fuse)


# ------------------------------------------------------------------------------------------------
# Anchors

def bench_nbdkit(run, seed):
    img, sock = f"{run.work}/nbdkit.img", f"{run.work}/nbdkit.sock"
    fresh_copy(seed, img)
    remove(sock)  # nbdkit refuses a socket path that exists (left by the round before)
    p = run.spawn(["nbdkit", "-f", "-U", sock, "file", img], "nbdkit.log")
    uri = f"nbd+unix:///?socket={sock}"
    try:
        wait_nbd(uri)
        return fio_suite(run, "nbdkit", uri, {"nbdkit": p.pid}, fs=True)
    finally:
        run.stop(p)
        os.unlink(img)


QMP_MIRROR = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')
json.loads(f.readline())
def cmd(name, **args):
    f.write(json.dumps({'execute': name, 'arguments': args}).encode() + b'\n'); f.flush()
    while True:
        m = json.loads(f.readline())
        if 'event' in m:
            if m['event'] == 'BLOCK_JOB_READY': return 'READY'
            continue
        if 'error' in m: raise SystemExit(f"{name}: {m['error']}")
        return m['return']
cmd('qmp_capabilities')
cmd('blockdev-add', **{'driver': 'nbd', 'node-name': 'tgt', 'export': 'b',
    'server': {'type': 'inet', 'host': '127.0.0.2', 'port': sys.argv[2]}})
t0 = time.monotonic()
cmd('blockdev-mirror', **{'job-id': 'm0', 'device': 'a1', 'target': 'tgt', 'sync': 'full',
    'copy-mode': 'write-blocking'})
s.settimeout(300)
while True:
    m = json.loads(f.readline())
    if m.get('event') == 'BLOCK_JOB_READY': break
print(f"{time.monotonic() - t0:.3f}")
"""


def bench_qemu_mirror(run, seed, seed_b):
    a, b = f"{run.work}/qA.img", f"{run.work}/qB.img"
    asock, qmp = f"{run.work}/qA.sock", f"{run.work}/qA.qmp"
    port = run.port(0)
    fresh_copy(seed, a)
    fresh_copy(seed_b, b)
    remove(asock)
    remove(qmp)
    pb = run.spawn(["qemu-storage-daemon",
                    "--blockdev", f"driver=file,node-name=b0,filename={b}",
                    "--blockdev", "driver=raw,node-name=b1,file=b0",
                    "--nbd-server", f"addr.type=inet,addr.host=127.0.0.2,addr.port={port}",
                    "--export", "type=nbd,id=eb,node-name=b1,name=b,writable=on"], "qsd-b.log")
    pa = run.spawn(["qemu-storage-daemon",
                    "--chardev", f"socket,id=qmp0,path={qmp},server=on,wait=off",
                    "--monitor", "chardev=qmp0",
                    "--blockdev", f"driver=file,node-name=a0,filename={a}",
                    "--blockdev", "driver=raw,node-name=a1,file=a0",
                    "--nbd-server", f"addr.type=unix,addr.path={asock}",
                    "--export", "type=nbd,id=ea,node-name=a1,name=a,writable=on"], "qsd-a.log")
    try:
        wait_nbd(f"nbd://127.0.0.2:{port}/b")
        uri = f"nbd+unix:///a?socket={asock}"
        wait_nbd(uri)
        log("qemu mirror: initial copy A -> B (127.0.0.2), then the fio jobs")
        t = float(run_cmd([sys.executable, "-c", QMP_MIRROR, qmp, str(port)], timeout=330).stdout)
        res = fio_suite(run, "qemu-mirror", uri, {"qsd-a": pa.pid, "qsd-b": pb.pid})
        res["_extra"] = {"initial_copy_s": t, "initial_copy_MBps": os.path.getsize(a) / t / 1e6}
        return res
    finally:
        run.stop(pa)
        run.stop(pb)
        os.unlink(a)
        os.unlink(b)


def bench_nbdcopy(run, seed, seed_b):
    """nbdcopy between two nbdkit servers over TCP 127.0.0.1 -> 127.0.0.2: the resync ceiling."""
    src, dst = f"{run.work}/ncsrc.img", f"{run.work}/ncdst.img"
    fresh_copy(seed, src)
    p1, p2 = run.port(1), run.port(2)
    pa = run.spawn(["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(p1), "file", src], "nbdkit-src.log")
    res = {"bytes": os.path.getsize(src)}
    try:
        wait_nbd(f"nbd://127.0.0.1:{p1}")
        for conns in (1, 4):
            # The destination is fully written beforehand, as rep's Secondary disk is.
            fresh_copy(seed_b, dst)
            pb = run.spawn(["nbdkit", "-f", "-i", "127.0.0.2", "-p", str(p2), "file", dst], "nbdkit-dst.log")
            try:
                wait_nbd(f"nbd://127.0.0.2:{p2}")
                c0 = {n: proc_cpu_s(x) for n, x in (("src", pa.pid), ("dst", pb.pid))}
                t0 = now()
                p = subprocess.Popen(["nbdcopy", f"--connections={conns}", "--flush",
                                      f"nbd://127.0.0.1:{p1}", f"nbd://127.0.0.2:{p2}"],
                                     stderr=subprocess.PIPE, text=True)
                _, status, ru = os.wait4(p.pid, 0)
                t = now() - t0
                if os.waitstatus_to_exitcode(status) != 0:
                    raise BenchError(f"nbdcopy failed: {p.stderr.read().strip()}")
                cpu = sum(proc_cpu_s(x) - c0[n] for n, x in (("src", pa.pid), ("dst", pb.pid)))
                cpu += ru.ru_utime + ru.ru_stime
            finally:
                run.stop(pb)
            if not same_file(src, dst):
                raise BenchError("nbdcopy: destination differs from source")
            res[f"conn{conns}_s"] = t
            res[f"conn{conns}_MBps"] = res["bytes"] / t / 1e6
            res[f"conn{conns}_cpu_s"] = cpu
            log(f"  nbdcopy --connections={conns}: {t:.3f} s = {res['bytes'] / t / 1e6:.0f} MB/s, cpu {cpu:.2f} s")
        res["best_MBps"] = max(res["conn1_MBps"], res["conn4_MBps"])
        return res
    finally:
        run.stop(pa)
        for f in (src, dst):
            if os.path.exists(f):
                os.unlink(f)


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def same_file(a, b, length=None):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        left = length
        while left is None or left > 0:
            n = 1 << 22 if left is None else min(1 << 22, left)
            x, y = fa.read(n), fb.read(n)
            if x != y:
                return False
            if not x:
                return left is None
            if left is not None:
                left -= len(x)
    return True


def measure_rtt(run):
    """Loopback TCP round trip 127.0.0.1 -> 127.0.0.2, back to back (as a QD1 write is).

    On these VMs a wakeup across CPUs costs tens of µs and one on the same CPU almost nothing,
    so an unpinned ping-pong is bimodal from run to run. The QD1 limit uses the pair pinned to
    different CPUs (stable, and the case of two busy daemons), its median: pinned, a preempted
    end cannot move to the other CPU, so the mean follows the rest of the machine's load. The
    same-CPU and unpinned figures are kept for reading.
    """
    port = run.port(3)
    if shutil.which("sockperf") and (os.cpu_count() or 1) >= 2:
        res = {"tool": "sockperf"}
        for mode, srv_cpu, cli_cpu in (("cross_cpu", "0", "1"), ("same_cpu", "0", "0"), ("unpinned", None, None)):
            pin = (lambda c: ["taskset", "-c", c] if c else [])
            srv = run.spawn([*pin(srv_cpu), "sockperf", "server", "--tcp", "-i", "127.0.0.2", "-p", str(port)],
                            "sockperf-server.log")
            try:
                time.sleep(0.5)
                r = run_cmd([*pin(cli_cpu), "sockperf", "ping-pong", "--tcp", "-i", "127.0.0.2", "-p", str(port),
                             "--client_ip", "127.0.0.1", "-t", "3", "-m", "64", "--full-rtt"],
                            check=False, timeout=30)
            finally:
                run.stop(srv)
            text = r.stdout + r.stderr
            with open(os.path.join(run.out_dir, f"sockperf-{mode}.txt"), "w") as f:
                f.write(text)
            mean = re.search(r"avg-rtt=([0-9.]+)", text)
            p50 = re.search(r"percentile 50\.000 =\s*([0-9.]+)", text)
            if r.returncode != 0 or not mean or not p50:
                log(f"sockperf ({mode}) gave no figures (see sockperf-{mode}.txt); using bench.py's own ping-pong")
                return python_pingpong(port)
            res[mode] = {"mean_us": float(mean.group(1)), "p50_us": float(p50.group(1))}
            log(f"  TCP round trip, sockperf {mode}: mean {res[mode]['mean_us']:.1f} us, "
                f"median {res[mode]['p50_us']:.1f} us")
        res["mean_us"], res["p50_us"] = res["cross_cpu"]["mean_us"], res["cross_cpu"]["p50_us"]
        return res
    return python_pingpong(port)


def python_pingpong(port, seconds=3.0):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.2", port))
    srv.listen(1)

    def echo():
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            m = c.recv(64)
            if not m:
                break
            c.sendall(m)
        c.close()

    th = threading.Thread(target=echo, daemon=True)
    th.start()
    cl = socket.socket()
    cl.bind(("127.0.0.1", 0))
    cl.connect(("127.0.0.2", port))
    cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat = []
    end = now() + seconds
    msg = b"x" * 64
    while now() < end and len(lat) < 1_000_000:
        t0 = time.perf_counter()
        cl.sendall(msg)
        got = 0
        while got < 64:
            got += len(cl.recv(64 - got))
        lat.append(time.perf_counter() - t0)
    cl.close()
    th.join(5)
    srv.close()
    res = {"tool": "python ping-pong (includes interpreter overhead)",
           "mean_us": statistics.fmean(lat) * 1e6, "p50_us": statistics.median(lat) * 1e6}
    log(f"  TCP round trip (python): mean {res['mean_us']:.1f} us, median {res['p50_us']:.1f} us")
    return res


# ------------------------------------------------------------------------------------------------
# rep

# The net section is perf-ratio.sh's (defaults but connect-int), so that the two agree.
RES_TEMPLATE = """resource r0 {{
  protocol {protocol};
  device /dev/drbd0;
  meta-disk internal;
  net {{ connect-int 1; }}
  disk {{ {resync} }}
  on node-a {{ disk {a}; address 127.0.0.1:{port}; }}
  on node-b {{ disk {b}; address 127.0.0.2:{port}; }}
}}
"""


class RepPair:
    def __init__(self, run, label, bindir, port):
        self.run, self.label, self.port = run, label, port
        self.repadm = os.path.join(bindir, "repadm")
        self.repd = os.path.join(bindir, "repd")
        for b in (self.repadm, self.repd):
            if not os.access(b, os.X_OK):
                raise BenchError(f"rep build {label}: {b} is missing or not executable; REP_BUILDS "
                                 "takes LABEL=DIR pairs, DIR holding repd and repadm")
        self.dir = f"{run.work}/rep-{label}"
        os.makedirs(self.dir)
        self.a, self.b = f"{self.dir}/a.img", f"{self.dir}/b.img"
        self.config = f"{self.dir}/r0.res"
        self.up_nodes = set()

    def write_config(self, protocol):
        # The fixed-rate resync (c-plan-ahead 0) at 4 GiB/s: the resync is limited by rep alone.
        resync = self.run.args.resync_conf
        with open(self.config, "w") as f:
            f.write(RES_TEMPLATE.format(protocol=protocol, resync=resync, a=self.a, b=self.b, port=self.port))

    def adm(self, node, *args, check=True, timeout=120):
        env = dict(os.environ, REP_CONFIG=self.config, REP_NODE=node,
                   REP_RUN_DIR=f"{self.dir}/run-{node}", REP_REPD=self.repd)
        return run_cmd([self.repadm, *args], check=check, env=env, timeout=timeout).stdout.strip()

    def up(self, node):
        self.up_nodes.add(node)
        self.adm(node, "up", "r0")

    def status(self, node):
        return json.loads(self.adm(node, "status", "--json", "r0"))[0]

    def pid(self, node):
        with open(f"{self.dir}/run-{node}/r0.pid") as f:
            return int(f.read())

    def pids(self):
        return {"repd-a": self.pid("node-a"), "repd-b": self.pid("node-b")}

    def uri(self):
        return f"nbd+unix:///r0?socket={self.dir}/run-node-a/r0.nbd"

    def uptodate(self):
        return self.adm("node-b", "dstate", "r0") == "UpToDate/UpToDate"

    def settled(self):
        return self.adm("node-b", "cstate", "r0") == "Connected" and self.uptodate()

    def down(self):
        for node in sorted(self.up_nodes):
            pid = None
            try:
                pid = self.pid(node)
            except (OSError, ValueError):
                pass
            self.adm(node, "down", "r0", check=False, timeout=30)
            # A repd that did not go down with `down` is ended by its pid, never by name.
            if pid and os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # The daemons' logs go with the results (a link lost under load shows there).
            logf = f"{self.dir}/run-{node}/r0.log"
            if os.path.exists(logf):
                with open(logf, "rb") as src, open(os.path.join(
                        self.run.out_dir, f"repd-{self.label}-{node}.log"), "ab") as dst:
                    shutil.copyfileobj(src, dst)
        self.up_nodes.clear()


def bench_rep(run, label, bindir, seed, seed_b, size_mib):
    pair = RepPair(run, label, bindir, run.port(4 + list(run.args.builds).index(label) % 5))
    run.rep_pairs.append(pair)
    res = {}
    try:
        # Internal metadata lives at the end of the file: the 64 MiB past the data are random too.
        fresh_copy(seed, pair.a, extra_mib=64, seed=11)
        fresh_copy(seed_b, pair.b, extra_mib=64, seed=12)
        pair.write_config("C")
        for n in ("node-a", "node-b"):
            pair.adm(n, "create-md", "r0")
            pair.up(n)
        pair.adm("node-a", "wait-connect", "--timeout", "20", "r0")
        pids = pair.pids()
        size = pair.status("node-a")["size_bytes"]
        # Full sync: primary --force on node-a to UpToDate/UpToDate on node-b.
        log(f"rep {label}: full sync of {size / 2**30:.2f} GiB, 127.0.0.1 -> 127.0.0.2")
        c0 = {n: proc_cpu_s(p) for n, p in pids.items()}
        t0 = now()
        pair.adm("node-a", "primary", "--force", "r0")
        wait_until(300, "the full sync", pair.uptodate, step=0.01)
        t = now() - t0
        cpu = {n: proc_cpu_s(p) - c0[n] for n, p in pids.items()}
        if not same_file(pair.a, pair.b, length=size):
            raise BenchError(f"rep {label}: after the full sync node-b's data differs from node-a's")
        res["full_sync"] = {"bytes": size, "s": t, "MBps": size / t / 1e6, "cpu_s": cpu}
        log(f"  full sync {t:.3f} s = {size / t / 1e6:.0f} MB/s, cpu {sum(cpu.values()):.2f} s")

        res["C"] = fio_suite(run, f"rep-C:{label}", pair.uri(), pids, rss_pids=pids, fs=True)
        res["rss"] = {n: {"hwm_kib": proc_status_kib(p, "VmHWM"), "rss_kib": proc_status_kib(p, "VmRSS")}
                      for n, p in pids.items()}
        res["rss"]["device_gib"] = size / 2**30
        res["incremental"] = incremental_resync(run, pair, size)

        # Protocol A: the same pair, restarted with the other protocol (their data is in sync).
        log(f"rep {label}: protocol A")
        pair.down()
        pair.write_config("A")
        for n in ("node-a", "node-b"):
            pair.up(n)
        wait_until(60, "protocol A pair connected and in sync", pair.settled)
        pair.adm("node-a", "primary", "r0")
        pids = pair.pids()
        res["A"] = fio_suite(run, f"rep-A:{label}", pair.uri(), pids)

        # StandAlone Primary: the link is cut by `disconnect` on node-a.
        log(f"rep {label}: disconnected (StandAlone Primary)")
        pair.adm("node-a", "disconnect", "r0")
        wait_until(10, "node-a StandAlone", lambda: pair.adm("node-a", "cstate", "r0") == "StandAlone")
        res["SA"] = fio_suite(run, f"rep-SA:{label}", pair.uri(), {"repd-a": pids["repd-a"]})
        return res
    finally:
        pair.down()
        run.rep_pairs.remove(pair)
        shutil.rmtree(pair.dir, ignore_errors=True)


def incremental_resync(run, pair, size):
    """node-b away while 1% of the 4 KiB blocks are written at random, then back."""
    log(f"rep {pair.label}: incremental resync (1% of the blocks dirtied while disconnected)")
    wait_until(120, "a settled pair before the incremental resync", pair.settled)
    pair.adm("node-b", "disconnect", "r0")
    wait_until(10, "node-a to see the link down",
               lambda: pair.adm("node-a", "cstate", "r0") != "Connected")
    r = random.Random(99)
    blocks = size // 4096
    chosen = r.sample(range(blocks), blocks // 100)
    script = "".join(f"write -P 0x5c {blk * 4096} 4k\n" for blk in chosen)
    run_cmd(["qemu-io", "-f", "raw", pair.uri()], input=script, timeout=300)
    dirtied = len(chosen) * 4096
    st = pair.status("node-a")
    oos = st["oos_kib"] * 1024
    ns0 = st["counters"]["ns_kib"]
    t0 = now()
    pair.adm("node-b", "connect", "r0")
    wait_until(300, "the incremental resync", pair.uptodate, step=0.01)
    t = now() - t0
    sent = (pair.status("node-a")["counters"]["ns_kib"] - ns0) * 1024
    if not same_file(pair.a, pair.b, length=size):
        raise BenchError(f"rep {pair.label}: after the incremental resync node-b's data differs")
    res = {"dirtied_bytes": dirtied, "oos_bytes": oos, "resynced_bytes": sent, "s": t,
           "ratio": sent / dirtied}
    log(f"  dirtied {dirtied / 2**20:.1f} MiB, out of sync {oos / 2**20:.1f} MiB, resynced "
        f"{sent / 2**20:.1f} MiB in {t:.3f} s")
    return res


# ------------------------------------------------------------------------------------------------
# One round, and the whole run

def one_round(run, seed, seed_b, size_mib):
    a = run.args
    res = {"rep": {}}
    if "rtt" in a.only:
        log("loopback TCP round trip")
        res["rtt"] = measure_rtt(run)
    if "nbdkit" in a.only:
        log("nbdkit file")
        res["nbdkit"] = bench_nbdkit(run, seed)
    for label, bindir in a.builds.items():
        if "rep" in a.only:
            res["rep"][label] = bench_rep(run, label, bindir, seed, seed_b, size_mib)
    if "mirror" in a.only:
        res["qemu-mirror"] = bench_qemu_mirror(run, seed, seed_b)
    if "nbdcopy" in a.only:
        log("nbdcopy nbdkit(127.0.0.1) -> nbdkit(127.0.0.2)")
        res["nbdcopy"] = bench_nbdcopy(run, seed, seed_b)
    return res


def versions(builds):
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    v = {"kernel": os.uname().release, "cpus": os.cpu_count(),
         "fio": first(["fio", "--version"]), "nbdkit": first(["nbdkit", "--version"]),
         "nbdcopy": first(["nbdcopy", "--version"]),
         "qemu-storage-daemon": first(["qemu-storage-daemon", "--version"]),
         "sockperf": first(["sockperf", "--version"])}
    for label, d in builds.items():
        commit = None
        cf = os.path.join(d, "COMMIT")
        if os.path.exists(cf):
            commit = open(cf).read().strip()
        v[f"rep:{label}"] = {"dir": os.path.abspath(d), "commit": commit}
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.environ.get("OUT_DIR"))
    ap.add_argument("--json", default=os.environ.get("BENCH_JSON"), help="where the JSON goes (default OUT_DIR/bench.json)")
    args = ap.parse_args()
    env = os.environ
    args.rt_w = int(env.get("RT_W", "15"))
    args.rt_r = int(env.get("RT_R", "10"))
    args.rounds = int(env.get("ROUNDS", "3"))
    args.rt_fs = int(env.get("RT_FS", "10"))
    args.fs_files = int(env.get("FS_FILES", "20000"))
    args.port_base = int(env.get("PORT_BASE", "0"))
    args.quiet_wait = float(env.get("QUIET_WAIT", "0"))
    args.quiet_pct = float(env.get("QUIET_PCT", "25"))
    size_mib = int(env.get("SIZE_MIB", "1024"))
    args.only = set(env.get("ONLY", "rtt nbdkit rep fs mirror nbdcopy").split())
    args.resync_conf = env.get("REP_RESYNC", "c-plan-ahead 0; resync-rate 4G;")
    builds = {}
    for item in env.get("REP_BUILDS", "this=target/release").split():
        label, sep, d = item.partition("=")
        if not sep or not label or not d:
            raise SystemExit(f"REP_BUILDS: {item!r} is not LABEL=DIR (e.g. REP_BUILDS=\"base=/work/baseline new=target/release\")")
        if label in builds:
            raise SystemExit(f"REP_BUILDS: label {label!r} given twice")
        builds[label] = d
    args.builds = builds
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out_dir = args.out_dir or os.path.join(os.getcwd(), "target", "bench", f"run-{stamp}")
    args.json = args.json or os.path.join(args.out_dir, "bench.json")

    run = Run(args)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    doc = {"schema": 1, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "config": {"rt_w": args.rt_w, "rt_r": args.rt_r, "rt_fs": args.rt_fs, "size_mib": size_mib, "rounds": args.rounds,
                      "builds": builds, "only": sorted(args.only), "rep_resync": args.resync_conf,
                      "quiet_wait": args.quiet_wait, "quiet_pct": args.quiet_pct},
           "versions": versions(builds), "rounds": []}
    try:
        # First touch of a tmpfs page is slow on these VMs (400 MB/s against 5.8 GB/s for pages
        # touched before): warm the memory the backing files will take, so that no timed copy
        # measures the hypervisor.
        warm_mib = int(env.get("WARM_MIB", str(4 * size_mib + 512)))
        log(f"warming {warm_mib} MiB of /dev/shm, writing the random seeds ({size_mib} MiB each)")
        with open(f"{run.work}/warm", "wb") as f:
            z = bytes(1 << 20)
            for _ in range(warm_mib):
                f.write(z)
        os.unlink(f"{run.work}/warm")
        seed, seed_b = f"{run.work}/seed-a.img", f"{run.work}/seed-b.img"
        write_random(seed, size_mib, 1234)
        write_random(seed_b, size_mib, 5678)
        for i in range(args.rounds):
            log(f"=== round {i + 1} of {args.rounds}")
            doc["rounds"].append(one_round(run, seed, seed_b, size_mib))
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
    finally:
        run.cleanup()
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import report
    report.finish(doc)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    table = report.render(doc)
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write(table)
    print(table)
    log(f"JSON: {args.json}  (compare: bench/run.sh --compare OLD.json {args.json})")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log(f"bench: {e}")
        sys.exit(1)
    except KeyboardInterrupt as e:
        log(f"bench: interrupted ({e}); daemons and files removed")
        sys.exit(130)
