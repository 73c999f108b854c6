#!/usr/bin/env python3
"""The figures, targets and tables of a bench.py run, and the comparison of two runs' JSON.

  report.py RUN.json                      print the tables of one run again
  report.py OLD.json[:LABEL] NEW.json[:LABEL]
                                          every figure of both runs side by side with the change;
                                          with :LABEL, that rep build of each run is compared as
                                          "rep" (e.g. base.json:base new.json:this)
"""
import json
import statistics
import sys

JOBS = ["randwrite-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd1-flush", "seqwrite-1m-qd8",
        "randread-4k-qd32"]
# A round whose baseline (nbdkit) figure is further than this from the median of the rounds is
# flagged: the machine changed under it, and its ratios are not to be trusted.
BASELINE_MOVE = 0.10
FIO_METRICS = ["iops", "mbps", "lat_mean_us", "lat_p50_us", "lat_p99_us", "cpu_us_per_io",
               "fio_cpu_us_per_io", "other_cpu_pct"]
# Higher is better for these; lower is better for everything else that is compared.
HIGHER_BETTER = ("iops", "mbps", "MBps", "files_per_s")

# (key, definition, limit, direction) — the targets of issues 15 and 20, evaluated per rep build,
# defined as perf-ratio.sh defines them (its round trip: sockperf's unpinned mean).
TARGETS = [
    ("W32", "rep C 4k randwrite QD32 IOPS / nbdkit", 0.7, ">="),
    ("CPU32", "rep C CPU per 4k write at QD32 (both repd) / nbdkit's", 1.8, "<="),
    ("SA1", "rep StandAlone QD1 mean latency / nbdkit's", 1.3, "<="),
    ("L1", "rep C QD1 mean latency / (nbdkit QD1 mean + TCP round trip)", 1.1, "<="),
    ("F1", "rep C QD1 write+FLUSH mean latency / (nbdkit's + 2 TCP round trips)", 1.1, "<="),
    ("S", "rep C 1 MiB seqwrite QD8 MB/s / nbdkit", 0.7, ">="),
    ("R32", "rep C 4k randread QD32 IOPS / nbdkit", 1.0, ">="),
    ("RS", "rep full sync MB/s / nbdcopy MB/s (the faster of 1 and 4 connections)", 0.9, ">="),
    ("INC", "rep incremental resync: bytes resynced / bytes dirtied", 1.05, "<="),
    ("RSS", "repd RSS under load (largest VmRSS during the C jobs), MiB per GiB of device", 32.0, "<="),
    ("A/SA", "rep protocol A QD32 IOPS / rep disconnected QD32 IOPS", 0.9, ">="),
]


def flatten(rnd):
    """One round's results as {figure key: number}."""
    f = {}

    def suite(server, res):
        others = [res[j]["other_cpu_pct"] for j in JOBS if j in res and res[j].get("other_cpu_pct") is not None]
        if others:
            f[f"{server}/all/other_cpu_pct_max"] = max(others)
        for job in JOBS:
            r = res.get(job)
            if not r:
                continue
            for m in FIO_METRICS:
                if r.get(m) is not None:
                    f[f"{server}/{job}/{m}"] = r[m]
            for proc, cpu in r.get("cpu_s", {}).items():
                if r.get("ios"):
                    f[f"{server}/{job}/cpu_us_per_io:{proc}"] = cpu / r["ios"] * 1e6
        fs = res.get("fs-small-files")
        if fs:
            f[f"{server}/fs-small-files/files_per_s"] = fs["files_per_s"]
            if fs.get("cpu_us_per_file") is not None:
                f[f"{server}/fs-small-files/cpu_us_per_file"] = fs["cpu_us_per_file"]
    if "rtt" in rnd:
        f["rtt/mean_us"] = rnd["rtt"]["mean_us"]
        f["rtt/p50_us"] = rnd["rtt"]["p50_us"]
        for mode in ("same_cpu", "unpinned"):
            if mode in rnd["rtt"]:
                f[f"rtt/{mode}_mean_us"] = rnd["rtt"][mode]["mean_us"]
    if "nbdkit" in rnd:
        suite("nbdkit", rnd["nbdkit"])
    if "qemu-mirror" in rnd:
        suite("qemu-mirror", rnd["qemu-mirror"])
        f["qemu-mirror/initial_copy_MBps"] = rnd["qemu-mirror"]["_extra"]["initial_copy_MBps"]
    if "nbdcopy" in rnd:
        for k in ("conn1_MBps", "conn4_MBps", "best_MBps", "conn1_cpu_s", "conn4_cpu_s"):
            f[f"nbdcopy/{k}"] = rnd["nbdcopy"][k]
    for label, r in rnd.get("rep", {}).items():
        for proto in ("C", "A", "SA"):
            if proto in r:
                suite(f"rep-{proto}:{label}", r[proto])
        fs = r.get("full_sync")
        if fs:
            f[f"rep:{label}/full_sync_MBps"] = fs["MBps"]
            f[f"rep:{label}/full_sync_s"] = fs["s"]
            f[f"rep:{label}/full_sync_cpu_s"] = sum(fs["cpu_s"].values())
        inc = r.get("incremental")
        if inc:
            f[f"rep:{label}/inc_ratio"] = inc["ratio"]
            f[f"rep:{label}/inc_s"] = inc["s"]
            f[f"rep:{label}/inc_dirtied_MiB"] = inc["dirtied_bytes"] / 2**20
            f[f"rep:{label}/inc_resynced_MiB"] = inc["resynced_bytes"] / 2**20
        rss = r.get("rss")
        if rss:
            gib = rss["device_gib"]
            hwm = max(v["hwm_kib"] or 0 for k, v in rss.items() if k != "device_gib")
            f[f"rep:{label}/rss_hwm_MiB_per_GiB"] = hwm / 1024 / gib
            # Under load: the largest VmRSS sampled during the protocol C fio jobs.
            load = max((v for job in r.get("C", {}).values() for v in job.get("rss_peak_kib", {}).values()),
                       default=None)
            if load:
                f[f"rep:{label}/rss_load_MiB_per_GiB"] = load / 1024 / gib
            for k, v in rss.items():
                if k != "device_gib":
                    f[f"rep:{label}/rss_hwm_MiB:{k}"] = (v["hwm_kib"] or 0) / 1024
    return f


def target_values(f, label):
    """{target key: value} for one rep build from one round's figures (missing inputs skipped)."""
    def g(k):
        return f.get(k)

    def ratio(a, b):
        x, y = g(a), g(b)
        return x / y if x is not None and y else None
    c = f"rep-C:{label}"
    v = {
        "W32": ratio(f"{c}/randwrite-4k-qd32/iops", "nbdkit/randwrite-4k-qd32/iops"),
        "CPU32": ratio(f"{c}/randwrite-4k-qd32/cpu_us_per_io", "nbdkit/randwrite-4k-qd32/cpu_us_per_io"),
        "S": ratio(f"{c}/seqwrite-1m-qd8/mbps", "nbdkit/seqwrite-1m-qd8/mbps"),
        "R32": ratio(f"{c}/randread-4k-qd32/iops", "nbdkit/randread-4k-qd32/iops"),
        "RS": ratio(f"rep:{label}/full_sync_MBps", "nbdcopy/best_MBps"),
        "INC": g(f"rep:{label}/inc_ratio"),
        "RSS": g(f"rep:{label}/rss_load_MiB_per_GiB"),
        "A/SA": ratio(f"rep-A:{label}/randwrite-4k-qd32/iops", f"rep-SA:{label}/randwrite-4k-qd32/iops"),
    }
    # perf-ratio.sh's round trip: sockperf unpinned, mean (older runs: the pinned median).
    rtt = g("rtt/unpinned_mean_us") or g("rtt/p50_us")
    lat, k1 = g(f"{c}/randwrite-4k-qd1/lat_mean_us"), g("nbdkit/randwrite-4k-qd1/lat_mean_us")
    v["L1"] = lat / (k1 + rtt) if None not in (lat, k1, rtt) else None
    fl, kf = g(f"{c}/randwrite-4k-qd1-flush/lat_mean_us"), g("nbdkit/randwrite-4k-qd1-flush/lat_mean_us")
    v["F1"] = fl / (kf + 2 * rtt) if None not in (fl, kf, rtt) else None
    v["SA1"] = ratio(f"rep-SA:{label}/randwrite-4k-qd1/lat_mean_us", "nbdkit/randwrite-4k-qd1/lat_mean_us")
    v["FS files/s rep C / nbdkit"] = ratio(f"{c}/fs-small-files/files_per_s", "nbdkit/fs-small-files/files_per_s")
    # Against QEMU's synchronous mirror and the single-node ratios (no targets, for reading).
    for job, m in (("randwrite-4k-qd32", "iops"), ("randwrite-4k-qd1", "lat_mean_us"),
                   ("seqwrite-1m-qd8", "mbps"), ("randread-4k-qd32", "iops")):
        v[f"C/mirror {job} {m}"] = ratio(f"{c}/{job}/{m}", f"qemu-mirror/{job}/{m}")
    v["C/mirror CPU per write QD32"] = ratio(f"{c}/randwrite-4k-qd32/cpu_us_per_io",
                                             "qemu-mirror/randwrite-4k-qd32/cpu_us_per_io")
    v["SA/nbdkit randwrite-4k-qd32 iops"] = ratio(f"rep-SA:{label}/randwrite-4k-qd32/iops", "nbdkit/randwrite-4k-qd32/iops")
    v["SA/nbdkit CPU per write QD32"] = ratio(f"rep-SA:{label}/randwrite-4k-qd32/cpu_us_per_io", "nbdkit/randwrite-4k-qd32/cpu_us_per_io")
    v["C/SA randwrite-4k-qd32 iops"] = ratio(f"{c}/randwrite-4k-qd32/iops", f"rep-SA:{label}/randwrite-4k-qd32/iops")
    return {k: x for k, x in v.items() if x is not None}


def median_spread(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = statistics.median(vals)
    return m, ((max(vals) - min(vals)) / m if m and len(vals) > 1 else None)


def baseline_moves(per_round):
    """[(round number, figure, change from the median)] for every nbdkit figure of a round that is
    more than BASELINE_MOVE from the median over the rounds (throughput and latency only)."""
    out = []
    # One figure per job (IOPS, or files/s): MB/s and, at QD1, the latency say the same.
    keys = [k for k in (per_round[0] if per_round else {}) if k.startswith("nbdkit/")
            and k.rsplit("/", 1)[-1] in ("iops", "files_per_s")]
    for k in keys:
        vals = [f.get(k) for f in per_round]
        m, _ = median_spread(vals)
        if not m or len([v for v in vals if v is not None]) < 2:
            continue
        for i, v in enumerate(vals):
            if v is not None and abs(v - m) / m > BASELINE_MOVE:
                out.append((i + 1, k, (v - m) / m))
    return out


def finish(doc):
    """Add the per-round flat figures, their medians and spreads, and the targets to doc."""
    per_round = [flatten(r) for r in doc["rounds"]]
    doc["baseline_moves"] = [{"round": r, "figure": k, "change": c} for r, k, c in baseline_moves(per_round)]
    keys = []
    for f in per_round:
        keys += [k for k in f if k not in keys]
    doc["figures"], doc["spread"] = {}, {}
    for k in keys:
        m, s = median_spread([f.get(k) for f in per_round])
        doc["figures"][k] = m
        if s is not None:
            doc["spread"][k] = s
    doc["targets"] = {}
    for label in doc["config"]["builds"]:
        per = [target_values(f, label) for f in per_round]
        names = []
        for p in per:
            names += [n for n in p if n not in names]
        out = {}
        for n in names:
            vals = [p.get(n) for p in per]
            m, s = median_spread(vals)
            entry = {"value": m, "per_round": vals}
            t = next((t for t in TARGETS if t[0] == n), None)
            if t:
                entry["limit"], entry["direction"] = t[2], t[3]
                entry["pass"] = m >= t[2] if t[3] == ">=" else m <= t[2]
            out[n] = entry
        doc["targets"][label] = out


def num(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(doc, key):
    v = doc["figures"].get(key)
    s = doc["spread"].get(key)
    return num(v) + (f" ±{s * 50:.0f}%" if s is not None else "")


def servers_of(doc):
    s = [x for x in ("nbdkit", "qemu-mirror") if any(k.startswith(x + "/") for k in doc["figures"])]
    for label in doc["config"]["builds"]:
        for proto in ("C", "A", "SA"):
            name = f"rep-{proto}:{label}"
            if any(k.startswith(name + "/") for k in doc["figures"]):
                s.append(name)
    return s


def render(doc):
    out = []
    cfg = doc["config"]
    rounds = cfg["rounds"]
    out.append(f"rep benchmark {doc['date']}: {cfg['size_mib']} MiB devices on /dev/shm, fio "
               f"{cfg['rt_w']} s per write job and {cfg['rt_r']} s per read job, {rounds} round(s)"
               + (" (figures are medians, ±half the max-min spread)" if rounds > 1 else ""))
    for label, d in cfg["builds"].items():
        v = doc["versions"].get(f"rep:{label}", {})
        out.append(f"rep build {label}: {v.get('dir', d)}" + (f" (commit {v['commit'][:12]})" if v.get("commit") else ""))
    out.append("")
    srv = servers_of(doc)
    rows = [
        ("randwrite-4k-qd32", "iops", "4k randwrite QD32 IOPS"),
        ("randwrite-4k-qd32", "cpu_us_per_io", "  CPU µs per write (daemons)"),
        ("randwrite-4k-qd1", "lat_mean_us", "4k randwrite QD1 mean µs"),
        ("randwrite-4k-qd1", "lat_p99_us", "  QD1 p99 µs"),
        ("randwrite-4k-qd1", "cpu_us_per_io", "  CPU µs per write (daemons)"),
        ("randwrite-4k-qd1-flush", "lat_mean_us", "4k randwrite + FLUSH QD1 mean µs (write + flush)"),
        ("fs-small-files", "files_per_s", "ext4 small files written + fsync'd, files/s"),
        ("seqwrite-1m-qd8", "mbps", "1 MiB seqwrite QD8 MB/s"),
        ("seqwrite-1m-qd8", "cpu_us_per_io", "  CPU µs per 1 MiB write"),
        ("randread-4k-qd32", "iops", "4k randread QD32 IOPS"),
        ("randread-4k-qd32", "cpu_us_per_io", "  CPU µs per read (daemons)"),
        ("randwrite-4k-qd32", "fio_cpu_us_per_io", "fio's CPU µs per I/O, W32"),
        ("all", "other_cpu_pct_max", "other processes' CPU % (noise), worst job"),
    ]
    out.append("| job | " + " | ".join(srv) + " |")
    out.append("|---|" + "---:|" * len(srv))
    for job, m, title in rows:
        out.append(f"| {title} | " + " | ".join(cell(doc, f"{s}/{job}/{m}") for s in srv) + " |")
    out.append("")
    moves = doc.get("baseline_moves") or []
    if rounds > 1 and not moves:
        out.append(f"baseline steady: no nbdkit figure of any round is more than {BASELINE_MOVE:.0%} from its median")
    for rnd in sorted({m["round"] for m in moves}):
        what = ", ".join(f"{m['figure'].split('/')[1]} {m['change']:+.0%}" for m in moves if m["round"] == rnd)
        out.append(f"WARNING round {rnd}: nbdkit moved more than {BASELINE_MOVE:.0%} from its median ({what}): "
                   "the machine changed under this round, its ratios are suspect")
    if rounds < 3:
        out.append(f"note: {rounds} round(s); ROUNDS=3 or more gives medians that a moving baseline cannot bend")
    out.append("")
    f = doc["figures"]
    out.append("| other figure | value |")
    out.append("|---|---:|")
    extras = [
        ("rtt/p50_us", "loopback TCP round trip 127.0.0.1→127.0.0.2, sockperf, the two ends on different CPUs, median µs"),
        ("rtt/mean_us", "  round trip, different CPUs, mean µs"),
        ("rtt/same_cpu_mean_us", "  round trip, both ends on one CPU, mean µs"),
        ("rtt/unpinned_mean_us", "  round trip, not pinned, mean µs"),
        ("nbdcopy/conn1_MBps", "nbdcopy nbdkit→nbdkit over TCP, 1 connection, MB/s"),
        ("nbdcopy/conn4_MBps", "nbdcopy, 4 connections, MB/s"),
        ("qemu-mirror/initial_copy_MBps", "QEMU mirror initial copy MB/s"),
    ]
    for k, title in extras:
        if k in f:
            out.append(f"| {title} | {cell(doc, k)} |")
    if "rtt/p50_us" in f and "nbdkit/randwrite-4k-qd1/lat_mean_us" in f:
        out.append(f"| QD1 limit = nbdkit QD1 mean + round trip median (different CPUs), µs | "
                   f"{num(f['nbdkit/randwrite-4k-qd1/lat_mean_us'] + f['rtt/p50_us'])} |")
    for label in cfg["builds"]:
        for k, title in ((f"rep:{label}/full_sync_MBps", "full sync MB/s"),
                         (f"rep:{label}/full_sync_s", "full sync s"),
                         (f"rep:{label}/full_sync_cpu_s", "full sync CPU s (both repd)"),
                         (f"rep:{label}/inc_dirtied_MiB", "incremental: MiB dirtied while disconnected"),
                         (f"rep:{label}/inc_resynced_MiB", "incremental: MiB resynced"),
                         (f"rep:{label}/inc_s", "incremental: reconnect to UpToDate, s"),
                         (f"rep:{label}/rss_hwm_MiB:repd-a", "repd Primary VmHWM MiB (full sync and C jobs)"),
                         (f"rep:{label}/rss_hwm_MiB:repd-b", "repd Secondary VmHWM MiB"),
                         (f"rep-C:{label}/randwrite-4k-qd32/cpu_us_per_io:repd-a", "W32 CPU µs per write, Primary"),
                         (f"rep-C:{label}/randwrite-4k-qd32/cpu_us_per_io:repd-b", "W32 CPU µs per write, Secondary")):
            if k in f:
                out.append(f"| rep {label}: {title} | {cell(doc, k)} |")
    out.append("")
    labels = list(cfg["builds"])
    out.append("| target | definition | limit | " + " | ".join(labels) + " |")
    out.append("|---|---|---:|" + "---:|" * len(labels))
    for key, definition, limit, direction in TARGETS:
        cells = []
        for label in labels:
            e = doc["targets"].get(label, {}).get(key)
            cells.append("—" if e is None else f"{e['value']:.3f} {'PASS' if e['pass'] else 'MISS'}")
        out.append(f"| {key} | {definition} | {direction} {limit} | " + " | ".join(cells) + " |")
    info = []
    for label in labels:
        info += [n for n in doc["targets"].get(label, {}) if n not in info and not any(t[0] == n for t in TARGETS)]
    for n in info:
        cells = []
        for label in labels:
            e = doc["targets"].get(label, {}).get(n)
            cells.append("—" if e is None else f"{e['value']:.3f}")
        out.append(f"| {n} | (for reading) | | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def load_as(arg):
    path, _, label = arg.partition(":")
    with open(path) as fh:
        doc = json.load(fh)
    if "figures" not in doc:
        finish(doc)
    fig = dict(doc["figures"])
    tg = {}
    if label:
        if label not in doc["config"]["builds"]:
            raise SystemExit(f"{path}: no rep build {label!r} (builds: {', '.join(doc['config']['builds'])})")
        fig = {}
        for k, v in doc["figures"].items():
            for pre in (f"rep-C:{label}/", f"rep-A:{label}/", f"rep-SA:{label}/", f"rep:{label}/"):
                if k.startswith(pre):
                    k = pre.replace(f":{label}/", ":rep/") + k[len(pre):]
                    break
            else:
                if k.startswith("rep"):
                    continue
            fig[k] = v
        tg = {"rep": doc["targets"].get(label, {})}
    else:
        tg = doc["targets"]
    return path, doc, fig, tg


def compare(old_arg, new_arg):
    po, do, fo, to = load_as(old_arg)
    pn, dn, fn, tn = load_as(new_arg)
    out = [f"old: {old_arg} ({do['date']})", f"new: {new_arg} ({dn['date']})", "",
           "| figure | old | new | change |", "|---|---:|---:|---:|"]
    for k in fo:
        if k not in fn or fo[k] is None or fn[k] is None:
            continue
        ch = (fn[k] - fo[k]) / fo[k] * 100 if fo[k] else 0.0
        better = any(h in k.rsplit("/", 1)[-1] for h in HIGHER_BETTER)
        mark = ""
        if abs(ch) >= 10 and "other_cpu" not in k:
            mark = " better" if (ch > 0) == better else " worse"
        out.append(f"| {k} | {num(fo[k])} | {num(fn[k])} | {ch:+.1f}%{mark} |")
    out += ["", "| target | build | old | new |", "|---|---|---:|---:|"]
    for label in tn:
        for key, _, limit, direction in TARGETS:
            a, b = to.get(label, {}).get(key), tn.get(label, {}).get(key)
            if a is None and b is None:
                continue

            def c(e):
                return "—" if e is None else f"{e['value']:.3f} {'PASS' if e['pass'] else 'MISS'}"
            out.append(f"| {key} ({direction} {limit}) | {label} | {c(a)} | {c(b)} |")
    out.append("")
    out.append("Changes under about 15% between runs are within this machine's noise; compare "
               "builds measured in the same run (REP_BUILDS) for smaller effects.")
    return "\n".join(out)


def main(argv):
    if len(argv) == 1:
        with open(argv[0]) as fh:
            doc = json.load(fh)
        finish(doc)
        print(render(doc))
    elif len(argv) == 2:
        print(compare(argv[0], argv[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
