#!/usr/bin/env bash
# Full sync of a sparse image: time, and bytes node-a put on the wire (issue 24, item 4).
# A 10 GiB sparse backing file (in $DIR, default /tmp: ext4 here) holding 200 MiB of random
# data in 200 pieces of 1 MiB at scattered offsets; create-md, up, `primary --force` on
# node-a; timed until both nodes are Connected UpToDate/UpToDate.
# Wire bytes: the sum of tcpi_bytes_sent (ss -ti) over node-a's repd sockets, after minus
# before `primary --force` (binary-independent: works for old builds without the link
# counter); ns_kib from `status --json` as well.
# usage: bench/sparse-sync.sh [REPADM] [REPD dir is REPADM's]   e.g. /work/main/target/release/repadm
set -u
REPADM=${1:-$PWD/target/release/repadm}
DIR=${DIR:-/tmp}
[ -x "$REPADM" ] || { echo "no $REPADM"; exit 2; }
W=$(mktemp -d "$DIR/sparse-bench.XXXXXX"); mkdir -p "$W/run-node-a" "$W/run-node-b"
PORT=$((19900 + RANDOM % 90))
adm() { local n=$1; shift; REP_RUN_DIR=$W/run-$n timeout 60 "$REPADM" -c "$W/r0.res" --node "$n" "$@"; }
cleanup() { for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done; rm -rf "$W"; }
trap cleanup EXIT
truncate -s 10G "$W/a" "$W/b"
python3 - "$W/a" <<'PY'
import os, random, sys
r = random.Random(24004)
fd = os.open(sys.argv[1], os.O_WRONLY)
for slot in range(200):
    off = slot * 48 * 2**20 + r.randrange(47 * 256) * 4096
    os.pwrite(fd, r.randbytes(2**20), off)
os.fsync(fd)
PY
cat >"$W/r0.res" <<RES
resource r0 { protocol C; device /dev/drbd0; meta-disk internal;
  net { connect-int 1; ping-int 1; }
  disk { c-plan-ahead 0; resync-rate 4G; }
  on node-a { disk $W/a; address 127.0.0.1:$PORT; }
  on node-b { disk $W/b; address 127.0.0.2:$PORT; } }
RES
for n in node-a node-b; do adm $n create-md r0 >/dev/null 2>&1; adm $n up r0 >/dev/null 2>&1; done
for i in $(seq 300); do adm node-a cstate r0 2>/dev/null | grep -q '^Connected' && break; sleep 0.1; done
apid=$(pgrep -f "repd.*$W.*node-a" | head -1)
[ -n "$apid" ] || apid=$(for p in $(pgrep repd); do grep -qa "$W" /proc/$p/cmdline 2>/dev/null && grep -qa node-a /proc/$p/cmdline && echo $p; done | head -1)
# ss prints the process on the socket line and the tcp_info on the next one.
sent() { ss -tinpH 2>/dev/null | awk -v pid="pid=$apid," '
  { if (index($0, "users:") > 0) { keep = index($0, pid) > 0 }
    if (keep) for (i = 1; i <= NF; i++) if ($i ~ /^bytes_sent:/) { split($i, a, ":"); s += a[2] } }
  END { print s + 0 }'; }
s0=$(sent); t0=$(date +%s.%N)
adm node-a primary --force r0 >/dev/null
until adm node-b dstate r0 2>/dev/null | grep -q '^UpToDate/UpToDate' && adm node-a dstate r0 2>/dev/null | grep -q '^UpToDate/UpToDate'; do sleep 0.05; done
t1=$(date +%s.%N); s1=$(sent)
ns=$(adm node-a status --json r0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["counters"]["ns_kib"])')
alloc_b=$(( $(stat -c %b "$W/b") * 512 / 1048576 ))
printf 'full sync of 10 GiB holding 200 MiB: %.2f s, %.1f MiB on the wire (ss bytes_sent of node-a), ns_kib %s, target allocates %s MiB\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "($s1 - $s0) / 1048576" | bc -l)" "$ns" "$alloc_b"
