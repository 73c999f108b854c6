#!/usr/bin/env bash
# bench.sh — rep's benchmark against its anchors, on the same machine in the same run.
#
# Runs the same fio jobs (reference/ANCHORS.md job set: 4k random write QD32, 4k random write
# QD1 latency, 1 MiB sequential write QD8, 4k random read QD32) against
#   nbdkit   `nbdkit file` over a unix socket (unreplicated ceiling)
#   rep      rep's single-node export (repadm up + primary --force) over its unix socket
# on 1 GiB backing files on /dev/shm filled with the same random data, and prints a table and
# the ratios rep/nbdkit. Targets (issue 3): W32 >= 0.9x nbdkit IOPS, QD1 mean latency <= 1.2x.
#
# Usage: bench/bench.sh            (builds release binaries first)
# Env:   RT_W (seconds per write job, 15), RT_R (read job, 10), SIZE_MIB (1024), OUT_DIR
# Network: unix sockets only. Every load is bounded by fio's runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
RT_W=${RT_W:-15}
RT_R=${RT_R:-10}
SIZE_MIB=${SIZE_MIB:-1024}
OUT_DIR=${OUT_DIR:-$PWD/target/bench/run-$(date -u +%Y%m%dT%H%M%SZ)}
WORK=/dev/shm/rep-bench.$$
mkdir -p "$OUT_DIR" "$WORK"
bash scripts/deps.sh
cargo build --release --bins -q
REPADM=$PWD/target/release/repadm
export REP_REPD=$PWD/target/release/repd

PIDS=()
cleanup() {
  REP_CONFIG=$WORK/bench.res REP_NODE=node-a REP_RUN_DIR=$WORK/run "$REPADM" down r0 >/dev/null 2>&1 || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

wait_nbd() {
  for _ in $(seq 150); do nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "ERROR: $1 did not come up"; return 1
}

log "creating ${SIZE_MIB} MiB random seed on /dev/shm"
python3 - "$WORK/seed.img" "$SIZE_MIB" <<'PY'
import random, sys
r = random.Random(1234)
with open(sys.argv[1], 'wb') as f:
    for _ in range(int(sys.argv[2])):
        f.write(r.randbytes(1 << 20))
PY

FIO_COMMON=(--ioengine=nbd --time_based --norandommap --randrepeat=1 --group_reporting
            --percentile_list=50:99:99.9 --output-format=json)
run_fio_suite() {
  local name=$1 uri=$2 d="$OUT_DIR/$1"
  mkdir -p "$d"
  log "fio suite on $name ($uri)"
  fio --name=randwrite-4k-qd32 "${FIO_COMMON[@]}" --uri="$uri" --rw=randwrite --bs=4k --iodepth=32 --runtime="$RT_W" --output="$d/randwrite-4k-qd32.json" >/dev/null
  fio --name=randwrite-4k-qd1  "${FIO_COMMON[@]}" --uri="$uri" --rw=randwrite --bs=4k --iodepth=1  --runtime="$RT_W" --output="$d/randwrite-4k-qd1.json" >/dev/null
  fio --name=seqwrite-1m-qd8   "${FIO_COMMON[@]}" --uri="$uri" --rw=write     --bs=1M --iodepth=8  --runtime="$RT_W" --output="$d/seqwrite-1m-qd8.json" >/dev/null
  fio --name=randread-4k-qd32  "${FIO_COMMON[@]}" --uri="$uri" --rw=randread  --bs=4k --iodepth=32 --runtime="$RT_R" --output="$d/randread-4k-qd32.json" >/dev/null
}

# --- nbdkit file (the unreplicated ceiling)
cp --sparse=never "$WORK/seed.img" "$WORK/nbdkit.img"
nbdkit -f -U "$WORK/nbdkit.sock" file "$WORK/nbdkit.img" & PIDS+=($!)
wait_nbd "nbd+unix:///?socket=$WORK/nbdkit.sock"
run_fio_suite nbdkit "nbd+unix:///?socket=$WORK/nbdkit.sock"
kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
rm -f "$WORK/nbdkit.img"

# --- rep, single node (internal metadata at the end of the same-size file + md area)
cp --sparse=never "$WORK/seed.img" "$WORK/rep.img"
truncate -s +64M "$WORK/rep.img"
cat > "$WORK/bench.res" <<RES
resource r0 {
  protocol C;
  device /dev/drbd0;
  meta-disk internal;
  on node-a { disk $WORK/rep.img; address 127.0.0.1:7789; }
  on node-b { disk $WORK/rep-b.img; address 127.0.0.2:7789; }
}
RES
export REP_CONFIG=$WORK/bench.res REP_NODE=node-a REP_RUN_DIR=$WORK/run
"$REPADM" create-md r0 >/dev/null
"$REPADM" up r0
"$REPADM" primary --force r0
REP_URI="nbd+unix:///r0?socket=$WORK/run/r0.nbd"
wait_nbd "$REP_URI"
run_fio_suite rep "$REP_URI"
"$REPADM" down r0

python3 - "$OUT_DIR" <<'PY'
import json, os, sys
out = sys.argv[1]
jobs = ["randwrite-4k-qd32", "randwrite-4k-qd1", "seqwrite-1m-qd8", "randread-4k-qd32"]
def load(server, job):
    with open(os.path.join(out, server, job + ".json")) as f:
        j = json.load(f)["jobs"][0]
    side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
    clat = side["clat_ns"]
    return {"iops": side["iops"], "mbps": side["bw_bytes"] / 1e6,
            "lat": clat["mean"] / 1000, "p99": clat["percentile"]["99.000000"] / 1000}
rows = {(s, j): load(s, j) for s in ("nbdkit", "rep") for j in jobs}
print("| server | job | IOPS | MB/s | clat mean µs | clat p99 µs |")
print("|---|---|---:|---:|---:|---:|")
for (s, j), r in rows.items():
    print(f"| {s} | {j} | {r['iops']:.0f} | {r['mbps']:.1f} | {r['lat']:.1f} | {r['p99']:.1f} |")
k, r = lambda j: rows[("nbdkit", j)], lambda j: rows[("rep", j)]
w32 = r("randwrite-4k-qd32")["iops"] / k("randwrite-4k-qd32")["iops"]
l1 = r("randwrite-4k-qd1")["lat"] / k("randwrite-4k-qd1")["lat"]
s = r("seqwrite-1m-qd8")["mbps"] / k("seqwrite-1m-qd8")["mbps"]
r32 = r("randread-4k-qd32")["iops"] / k("randread-4k-qd32")["iops"]
print()
print(f"W32  rep/nbdkit randwrite-4k-qd32 IOPS      = {w32:.3f}  (target >= 0.9)  {'OK' if w32 >= 0.9 else 'BELOW TARGET'}")
print(f"L1   rep/nbdkit randwrite-4k-qd1 mean clat  = {l1:.3f}  (target <= 1.2)  {'OK' if l1 <= 1.2 else 'ABOVE TARGET'}")
print(f"S    rep/nbdkit seqwrite-1m-qd8 MB/s        = {s:.3f}")
print(f"R32  rep/nbdkit randread-4k-qd32 IOPS       = {r32:.3f}")
PY
log "raw fio JSON in $OUT_DIR"
