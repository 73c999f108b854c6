"""floor_report.py — the rows and the summary of bench/floor.sh.

  floor_report.py row FIO_JSON ROUND LABEL JOB CPU_TICKS CLK_TCK   one line per fio job
  floor_report.py summary ALL_TXT                                  medians, spreads, ratios
  floor_report.py splitrow FIO_JSON ROUND LABEL JOB CLK_TCK P0 P1 S0 S1 PSTAT SSTAT
                                           one line of SPLIT=1: per daemon, per I/O
  floor_report.py split ALL_TXT            SPLIT=1's medians: floor and rep side by side

A ratio is given three times: what rep-floor reaches (the least replication can cost here, since
it makes only the system calls replication needs), what rep reaches, and rep over the floor.
"""
import collections
import json
import statistics as st
import sys


def fio_job(fio_json, job):
    """fio's job, its read or write side (the one `job` measures), and its I/O count (≥ 1)."""
    j = json.load(open(fio_json))["jobs"][0]
    side = j["read"] if job == "r32" else j["write"]
    return j, side, max(side["total_ios"], 1)


def row(fio_json, rnd, label, job, ticks, hz):
    j, side, ios = fio_job(fio_json, job)
    sync = j.get("sync", {}).get("lat_ns", {}).get("mean", 0) / 1000
    lat = side["lat_ns"]["mean"] / 1000 + (sync if job == "f1" else 0)
    cpu = int(ticks) / int(hz) * 1e6 / ios
    print(f"{rnd} {label} {job} iops={side['iops']:.0f} lat_us={lat:.1f} "
          f"MBps={side['bw_bytes'] / 1e6:.0f} cpu_us_per_io={cpu:.2f}")


# (figure, job, key, numerator server, denominator server, goal, higher is better)
TARGETS = [
    ("w32 IOPS {C} / nbdkit", "w32", "iops", "C", "nbdkit", 0.7, True),
    ("w32 CPU per write {C} / nbdkit", "w32", "cpu_us_per_io", "C", "nbdkit", 1.8, False),
    ("s8 MB/s {C} / nbdkit", "s8", "MBps", "C", "nbdkit", 0.7, True),
    ("w32 IOPS {A} / {SA}", "w32", "iops", "A", "SA", 0.9, True),
]
# Not the latency targets: the floor sleeps in poll(2) between requests, where rep spins for a
# while (runtime/busy_poll.rs), and a wake-up across CPUs costs tens of µs on these VMs, so
# rep's QD1 latency is below the floor's. The floor bounds CPU, and so throughput on a machine
# the load saturates.


def load_rows(path):
    """The rows of a run ("ROUND LABEL JOB key=value ..."), by (label, job); other lines skipped."""
    rows = collections.defaultdict(list)
    for line in open(path):
        p = line.split()
        if len(p) < 4 or "=" not in p[3]:
            continue
        rows[(p[1], p[2])].append({k: float(v) for k, v in (x.split("=") for x in p[3:])})
    return rows


def summary(path):
    rows = load_rows(path)

    def med(server, job, key):
        v = [r[key] for r in rows.get((server, job), [])]
        return st.median(v) if v else None

    print("\nmedians (server job iops lat_us MBps cpu_us_per_io; spread of iops):")
    for (s, j), v in sorted(rows.items()):
        a = [r["iops"] for r in v]
        spread = (max(a) - min(a)) / st.median(a) * 100 if len(a) > 1 and st.median(a) else 0
        flag = "  WARNING moved >10% between rounds" if s == "nbdkit" and spread > 10 else ""
        print(f"  {s:9} {j:4} {med(s, j, 'iops'):9.0f} {med(s, j, 'lat_us'):8.1f} "
              f"{med(s, j, 'MBps'):6.0f} {med(s, j, 'cpu_us_per_io'):8.2f}  ±{spread:.0f}%{flag}")

    def name(kind, side):
        if side == "nbdkit":
            return "nbdkit"
        if kind == "floorm":  # the floor with a meta socket: only protocol C differs
            return "floor-Cm" if side == "C" else name("floor", side)
        return {"C": f"{kind}-C", "A": f"{kind}-A", "SA": f"{kind}-SA" if kind == "floor" else "rep-C-SA"}[side]

    print("\nCPU per I/O (medians, µs): rep over the floor in the same mode")
    for job in ("w32", "w1", "f1", "s8", "r32"):
        for side in ("C", "A", "SA"):
            f, r = med(name("floor", side), job, "cpu_us_per_io"), med(name("rep", side), job, "cpu_us_per_io")
            if f and r:
                print(f"  {job:4} {side:3} floor {f:8.2f}  rep {r:8.2f}  rep/floor {r / f:5.2f}")

    meta = any(s == "floor-Cm" for s, _ in rows)
    print("\ntargets (medians):                         floor    rep   goal       rep/floor"
          + ("   floor with a meta socket" if meta else ""))
    for fig, job, key, num, den, goal, ge in TARGETS:
        out = []
        for kind in ("floor", "rep", "floorm"):
            n, d = med(name(kind, num), job, key), med(name(kind, den), job, key)
            out.append(n / d if n and d else None)
        f, r, fm = out
        if f is None or r is None:
            continue
        # rep over the floor, as a fraction where 1.0 means rep costs what the floor costs
        frac = r / f if ge else f / r
        label = fig.format(C="C", A="A", SA="SA")
        op = ">=" if ge else "<="
        misses = '' if (f >= goal if ge else f <= goal) else '  (the floor itself misses)'
        # The meta-socket floor matters only where protocol C's acknowledgements are measured.
        with_meta = f"   {fm:6.2f}" if meta and fm is not None and "C" in (num, den) else ""
        print(f"  {label:40} {f:6.2f} {r:6.2f}   {op} {goal:<4}   {frac:5.2f} of the floor{with_meta}{misses}")


def perf_counts(path):
    """perf stat -x, output: value,unit,event,..."""
    out = {}
    for line in open(path):
        p = line.strip().split(",")
        if len(p) >= 3 and p[0].replace(".", "").isdigit():
            out[p[2]] = float(p[0])
    return out


def splitrow(fio_json, rnd, label, job, hz, p0, p1, s0, s1, pstat, sstat):
    j, side, ios = fio_job(fio_json, job)
    hz = int(hz)

    def per_io(t0, t1):  # "utime stime" pairs in ticks -> µs per I/O
        (u0, k0), (u1, k1) = (map(int, t0.split()), map(int, t1.split()))
        return (u1 - u0) / hz * 1e6 / ios, (k1 - k0) / hz * 1e6 / ios

    pu, pk = per_io(p0, p1)
    su, sk = per_io(s0, s1)
    pc, sc = perf_counts(pstat), perf_counts(sstat)
    print(f"{rnd} {label} {job} iops={side['iops']:.0f} p_user={pu:.2f} p_kernel={pk:.2f} "
          f"s_user={su:.2f} s_kernel={sk:.2f} "
          f"p_calls={pc.get('raw_syscalls:sys_enter', 0) / ios:.2f} "
          f"s_calls={sc.get('raw_syscalls:sys_enter', 0) / ios:.2f} "
          f"p_cs={pc.get('context-switches', 0) / ios:.3f} s_cs={sc.get('context-switches', 0) / ios:.3f}")


def split(path):
    rows = load_rows(path)
    keys = [("iops", "IOPS", 0), ("p_user", "Primary user µs", 2), ("p_kernel", "Primary kernel µs", 2),
            ("s_user", "Secondary user µs", 2), ("s_kernel", "Secondary kernel µs", 2),
            ("p_calls", "Primary system calls", 2), ("s_calls", "Secondary system calls", 2),
            ("p_cs", "Primary context switches", 3), ("s_cs", "Secondary context switches", 3)]
    jobs = sorted({j for _, j in rows})
    for job in jobs:
        labels = [lb for lb in ("floor-C", "floor-Cm", "rep-C", "floor-A", "rep-A") if (lb, job) in rows]
        if not labels:
            continue
        print(f"\n{job}, per I/O, medians of {len(rows[(labels[0], job)])} rounds (CPU from "
              f"/proc/PID/stat, calls and switches from perf stat):")
        print(f"  {'':28}" + "".join(f"{lb:>10}" for lb in labels))
        for key, name, digits in keys:
            vals = [st.median(r[key] for r in rows[(lb, job)]) for lb in labels]
            print(f"  {name:28}" + "".join(f"{v:10.{digits}f}" for v in vals))
        for lb in labels:
            m = {k: st.median(r[k] for r in rows[(lb, job)]) for k, _, _ in keys}
            total = m["p_user"] + m["p_kernel"] + m["s_user"] + m["s_kernel"]
            user = m["p_user"] + m["s_user"]
            print(f"  {lb}: {total:.2f} µs per I/O over both daemons, {user:.2f} of it in user space")


if __name__ == "__main__":
    if sys.argv[1] == "row":
        row(*sys.argv[2:8])
    elif sys.argv[1] == "summary":
        summary(sys.argv[2])
    elif sys.argv[1] == "splitrow":
        splitrow(*sys.argv[2:13])
    elif sys.argv[1] == "split":
        split(sys.argv[2])
    else:
        sys.exit(f"floor_report.py: unknown command {sys.argv[1]}")
