#!/usr/bin/env bash
# syscalls.sh — what one synchronous 4 KiB write costs rep, counted rather than timed: system
# calls, context switches, wake-ups and io_uring requests per write, per daemon and per thread.
# ctx_switches = times a thread went to sleep (each one a wake-up later); wakes_given = wake-ups
# a thread did to others (or to itself through the kernel). Counts do not depend on how busy the
# machine is, so they can be compared between builds on a shared machine where latencies cannot
# (issue 20; the timed figures come from perf-ratio.sh).
#
#   bench/syscalls.sh [MODE...]     MODE: sa (StandAlone Primary), c (protocol C),
#                                   cf (protocol C, a FLUSH after every write: perf-ratio's f1),
#                                   c32 (protocol C at QD32: how well bursts batch)
#   N=4000 (writes per mode), REPADM/REPD (default target/release), STRACE=1 adds strace -f -c's
#   per-syscall table (strace slows every call down; the counts stay the same).
# Same setup as perf-ratio.sh: backing files on /dev/shm written in full first, fio's nbd
# engine over the Unix socket, QD1, 4k random writes, the pair on 127.0.0.1/127.0.0.2. Needs
# fio, perf (linux-perf); every daemon and file is removed at exit.
set -u
cd "$(dirname "$0")/.."
REPADM=${REPADM:-$PWD/target/release/repadm}
[ -x "$REPADM" ] || { echo "no $REPADM: build first (cargo build --release)"; exit 2; }
for t in fio perf python3; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
N=${N:-4000}; MODES=${*:-sa c cf}
T=$(mktemp -d /tmp/repsys.XXXXXX); D=/dev/shm/$(basename "$T"); mkdir -p "$D" "$T/run-node-a" "$T/run-node-b"
PORT=$((19900 + RANDOM % 90))
adm() { local n=$1; shift; REP_RUN_DIR=$T/run-$n timeout 60 "$REPADM" -c "$T/r0.res" --node "$n" "$@"; }
cleanup() { for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done
  for f in "$T"/run-node-*/r0.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done; rm -rf "$T" "$D"; }
trap cleanup EXIT
. bench/pair.sh
EVENTS=raw_syscalls:sys_enter,sched:sched_switch,sched:sched_wakeup,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work

up_pair() { # protocol standalone(0/1)
  head -c 300M /dev/zero > "$D/disk-a"; head -c 300M /dev/zero > "$D/disk-b"
  pair_up "$1" "$2"
  sleep 0.5
}
# voluntary (it slept: one wake-up each) and involuntary (preempted: the machine's load) context
# switches of each daemon, summed over its threads.
ctxsw() { for p in "$@"; do cat /proc/$p/task/*/status 2>/dev/null | awk -v p=$p \
  '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print p, v, n}'; done; }
down_pair() { for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done; rm -f "$D/disk-a" "$D/disk-b" "$T"/perf-*.txt; }

# fio: N 4k random writes at QD1 (plus a FLUSH after each with $1 = 1).
fio_n() { fio --name=w --ioengine=nbd --uri="nbd+unix:///r0?socket=$T/run-node-a/r0.nbd" --rw=randwrite --bs=4k \
  --iodepth="${QD:-1}" --size=200M --number_ios="$N" $([ "$1" = 1 ] && echo --fsync=1) --output-format=json --output="$T/fio.json" >/dev/null 2>&1; }

measure() { # label protocol standalone fsync
  local label=$1; up_pair "$2" "$3"
  local pa pb; pa=$(cat "$T/run-node-a/r0.pid"); pb=$(cat "$T/run-node-b/r0.pid")
  perf stat -e "$EVENTS" --per-thread -p "$pa" -x, -o "$T/perf-a.txt" & local perfa=$! perfb=
  [ "$3" = 1 ] || { perf stat -e "$EVENTS" --per-thread -p "$pb" -x, -o "$T/perf-b.txt" & perfb=$!; }
  sleep 0.5; ctxsw "$pa" "$pb" > "$T/ctx0"; fio_n "$4"; ctxsw "$pa" "$pb" > "$T/ctx1"; sleep 0.2
  kill -INT $perfa $perfb; wait $perfa $perfb 2>/dev/null
  if [ "${STRACE:-0}" = 1 ]; then
    strace -f -c -o "$T/strace-a.txt" -p "$pa" & local st=$!; sleep 0.5
    fio_n "$4"; sleep 0.2; kill -INT $st; wait $st 2>/dev/null
    echo "== $label: strace -f -c on repd node-a, $N writes"; sed -n '1,40p' "$T/strace-a.txt"
  fi
  python3 - "$N" "$label" "$T/ctx0" "$T/ctx1" "$pa" "$T"/perf-*.txt <<'PY'
import sys, collections, os
n, label = int(sys.argv[1]), sys.argv[2]
c0 = {l.split()[0]: l.split()[1:] for l in open(sys.argv[3])}
c1 = {l.split()[0]: l.split()[1:] for l in open(sys.argv[4])}
pa = sys.argv[5]
sys.argv[3:] = sys.argv[6:]
per = collections.defaultdict(collections.Counter)
for path in sys.argv[3:]:
    node = os.path.basename(path)[5]  # perf-a.txt / perf-b.txt
    for line in open(path):
        p = line.strip().split(",")
        if len(p) < 4 or not p[0] or p[0].startswith("#"): continue
        try: v = int(p[1])
        except ValueError: continue
        per[f"{node}:{p[0]}"][p[3].split(":")[1]] += v
print(f"== {label}: per write ({n} writes), by thread (comm-tid; events under 0.05 per write left out)")
short = {"sys_enter": "syscalls", "sched_switch": "ctx_switches", "sched_wakeup": "wakes_given",
         "io_uring_submit_req": "uring_reqs", "io_uring_poll_arm": "uring_poll_arm",
         "io_uring_queue_async_work": "uring_async"}
sums = collections.Counter()
for thread, c in sorted(per.items()):
    row = {short[k]: v / n for k, v in c.items() if v / n >= 0.05}
    for k, v in c.items(): sums[short[k]] += v / n
    if row: print(f"  {thread:28} " + "  ".join(f"{k}={v:.2f}" for k, v in sorted(row.items())))
print(f"  {'TOTAL':28} " + "  ".join(f"{k}={v:.2f}" for k, v in sorted(sums.items())))
for pid in c0:
    if pid in c1:
        v, inv = (int(c1[pid][i]) - int(c0[pid][i]) for i in (0, 1))
        print(f"  node {'a' if pid == pa else 'b'}: voluntary switches (sleeps) {v / n:.2f}, involuntary (preempted) {inv / n:.2f} per write")
PY
  down_pair
}
for m in $MODES; do case $m in
  sa) measure "StandAlone QD1 4k write" C 1 0;;
  c) measure "protocol C QD1 4k write" C 0 0;;
  cf) measure "protocol C QD1 4k write + FLUSH" C 0 1;;
  c32) QD=32 measure "protocol C QD32 4k write" C 0 0;;
  *) echo "unknown mode $m (sa c cf c32)"; exit 2;;
esac; done
