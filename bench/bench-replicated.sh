#!/usr/bin/env bash
# bench-replicated.sh — rep's replicated export (protocol C, two repd on 127.0.0.1 / 127.0.0.2)
# against `nbdkit file` (unreplicated ceiling) and QEMU's synchronous active mirror
# (qemu-storage-daemon blockdev-mirror copy-mode=write-blocking to an NBD target on 127.0.0.2),
# in the same run, with the same fio jobs (bench/anchors.sh), printing the ratio table.
# Also times rep's initial full sync of 1 GiB of random data (the "full resync" number).
# Targets (issue 4): randwrite-4k-qd32 >= 0.5x nbdkit IOPS and ahead of qsd-mirror.
# The extras include nbdcopy of 1 GiB between two nbdkit on 127.0.0.1/127.0.0.2: the anchor
# for the full-resync figure (issue 5 target: rep >= 0.8x nbdcopy).
#
# Usage: bench/bench-replicated.sh     Env: RT_W (15), RT_R (10), OUT_DIR, ANCHORS (which of
# anchors.sh's suites to run; default "nbdkit qsd-mirror rep extras")
# Network: 127.0.0.1 and 127.0.0.2 only; every load is bounded by fio's runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --bins -q
BIN=$PWD/target/release
W=/dev/shm/rep-bench-repl.$$
mkdir -p "$W"
export REP_CONFIG=$W/r0.res REP_REPD=$BIN/repd
on() { local node=$1; shift; REP_NODE=$node REP_RUN_DIR=$W/run-$node "$BIN/repadm" "$@"; }
cleanup() {
  for n in node-a node-b; do on $n down r0 >/dev/null 2>&1 || true; done
  # The daemons' logs go with the results (link losses under load show up there).
  [ -n "${OUT_DIR:-}" ] && for n in node-a node-b; do cp "$W/run-$n/r0.log" "$OUT_DIR/repd-$n.log" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT INT TERM
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# wait_until SECS WHAT CMD...: poll CMD every 20 ms, give up loudly after SECS.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "bench-replicated: gave up after ${secs}s waiting for $what" >&2; exit 1; }
    sleep 0.02
  done
}
uptodate() { [ "$(on node-b dstate r0)" = "UpToDate/UpToDate" ]; }
settled() { [ "$(on node-b cstate r0)" = "Connected" ] && uptodate; }

PORT=$((21000 + $$ % 1000))
# Warm the machine's memory first: on these VMs the first touch of a page is slow (dd into new
# /dev/shm pages ran at 400 MB/s, into pages touched before at 5.8 GB/s), and the nbdcopy anchor
# runs late, on warm memory. Without this the initial sync measures the hypervisor.
dd if=/dev/zero of="$W/warm" bs=1M count=2560 status=none && rm -f "$W/warm"

# 1 GiB of random data + room for internal metadata, on node-a; node-b starts empty.
python3 - "$W/a.img" <<'PY'
import random, sys
r = random.Random(4321)
with open(sys.argv[1], 'wb') as f:
    for _ in range(1024):
        f.write(r.randbytes(1 << 20))
PY
truncate -s +64M "$W/a.img"
truncate -s "$(stat -c %s "$W/a.img")" "$W/b.img"
cat > "$REP_CONFIG" <<RES
resource r0 {
  protocol C;
  device /dev/drbd0;
  meta-disk internal;
  net { connect-int 1; ping-int 2; max-buffers 8000; }
  disk { c-plan-ahead 0; resync-rate 4G; }
  on node-a { disk $W/a.img; address 127.0.0.1:$PORT; }
  on node-b { disk $W/b.img; address 127.0.0.2:$PORT; }
}
RES
for n in node-a node-b; do on $n create-md r0 >/dev/null; on $n up r0; done
on node-a wait-connect --timeout 20 r0 >/dev/null
log "initial full sync of 1 GiB from node-a to node-b"
t0=$(date +%s.%N)
on node-a primary --force r0
wait_until 300 "the initial sync" uptodate
t1=$(date +%s.%N)
SYNC_S=$(python3 -c "print(f'{$t1-$t0:.3f}')")
log "initial full sync: ${SYNC_S} s ($(python3 -c "print(f'{1073.741824/($t1-$t0):.0f}')") MB/s)"

OUT_DIR=${OUT_DIR:-$PWD/target/bench/replicated-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"
echo -e "rep_initial_full_sync_1GiB_s\t$SYNC_S\ts" > "$OUT_DIR/rep-sync.tsv"
REP_URI="nbd+unix:///r0?socket=$W/run-node-a/r0.nbd" OUT_DIR=$OUT_DIR SKIP_NBD_SERVER=1 \
  bash bench/anchors.sh ${ANCHORS:-nbdkit qsd-mirror rep extras}
# Incremental resync: node-b away while 1% of the 4 KiB blocks are written, then back.
log "incremental resync: disconnect node-b, dirty 1% at random 4 KiB offsets, reconnect"
# Start from a settled pair (the anchors' load may have cost the link a ping-timeout).
wait_until 120 "a settled pair" settled
on node-b disconnect r0
python3 - "$W/dirty.qemu-io" <<'PY'
import random, sys
r = random.Random(99)
blocks = (1 << 30) // 4096
with open(sys.argv[1], "w") as f:
    for b in r.sample(range(blocks), blocks // 100):
        f.write(f"write -P 0x5c {b * 4096} 4k\n")
PY
qemu-io -f raw "nbd+unix:///r0?socket=$W/run-node-a/r0.nbd" < "$W/dirty.qemu-io" > /dev/null
OOS=$(on node-a status --json r0 | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['oos_kib'])")
t0=$(date +%s.%N)
on node-b connect r0
wait_until 300 "the incremental resync" uptodate
t1=$(date +%s.%N)
INC_S=$(python3 -c "print(f'{$t1-$t0:.3f}')")
echo
echo "rep initial full sync, 1 GiB random data, protocol C, 127.0.0.1 -> 127.0.0.2: ${SYNC_S} s"
echo "rep incremental resync of 1% of 1 GiB (${OOS} KiB out of sync), reconnect to UpToDate: ${INC_S} s"
