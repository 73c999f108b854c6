#!/usr/bin/env bash
# floor.sh — how far rep is from the least a replicated write can cost on this machine.
# nbdkit `file`, rep (protocol C, A, StandAlone) and rep-floor (bench/floor: two bare daemons that
# make only the system calls replication needs, same three modes) alternate in one run, ROUNDS
# rounds, each job RT seconds with fio's nbd engine over the Unix socket; files on /dev/shm
# written in full first; CPU per I/O is the daemons' utime+stime from /proc/PID/stat. The method
# and job names are those of ../shared/tools/perf-ratio.sh. Prints every round, the medians, and
# for each of issue 20's targets: the floor's ratio (what a replicator with no cost of its own
# would reach here) and rep's ratio, and rep as a fraction of the floor.
#   ROUNDS=3 RT=8 bench/floor.sh [JOBS...]        (jobs: w32 w1 f1 s8 r32; default w32 w1 f1 s8)
# SPLIT=1: instead, where the CPU goes, per daemon: floor and rep alternated under protocol C and
# A (default job w32), each daemon's user and kernel CPU per I/O (utime and stime from
# /proc/PID/stat), its system calls and context switches per I/O (perf stat, counted over the fio
# job only), medians over the rounds. This is the table the README's "The floor" section shows.
# Both modes also run floor-Cm: the floor under protocol C with the acknowledgements on a second
# connection (rep-floor --meta), as DRBD's and rep's meta socket carries them.
# FLOOR_SPLICE=1 runs the floor with --splice (write data moved by splice(2)/tee(2), never through
# the daemons' memory; bench/floor/src/splice.rs).
# Env: REP_BIN (dir holding repd, repadm and rep-floor; default target/release, built unless
#      NO_BUILD=1), SIZE_MIB (1100). Network: 127.0.0.1 and 127.0.0.2 only; every daemon, socket
#      and file is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REP_BIN:-$PWD/target/release}
if [ -z "${NO_BUILD:-}" ]; then cargo build --release -p rep-replicator -p rep-adm -p rep-floor --bins; fi
for t in "$BIN/repadm" "$BIN/repd" "$BIN/rep-floor"; do [ -x "$t" ] || { echo "floor.sh: no $t (build first)" >&2; exit 2; }; done
for t in fio nbdkit python3; do command -v $t >/dev/null || { echo "floor.sh: missing $t (bash bench/deps.sh)" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-3}; RT=${RT:-8}; SIZE_MIB=${SIZE_MIB:-1100}
SPLIT=${SPLIT:-0}
if [ "$SPLIT" = 1 ]; then JOBS=${*:-w32}; command -v perf >/dev/null || { echo "floor.sh: SPLIT=1 needs perf (bash bench/deps.sh)" >&2; exit 2; }
else JOBS=${*:-w32 w1 f1 s8}; fi
T=$(mktemp -d /tmp/floor.XXXXXX); D=/dev/shm/$(basename "$T"); mkdir -p "$D" "$T/run-node-a" "$T/run-node-b"
PORT=$((21500 + RANDOM % 400)); PIDS=""
adm() { local n=$1; shift; REP_RUN_DIR=$T/run-$n timeout 60 "$BIN/repadm" -c "$T/r0.res" --node "$n" "$@"; }
stop() { for p in $PIDS; do kill "$p" 2>/dev/null; done; for p in $PIDS; do wait "$p" 2>/dev/null || true; done; PIDS=""; }
cleanup() { stop; for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1 || true; done
  # The rounds run in a pipeline's subshell: its nbdkit and rep-floor are found by their files.
  for p in $(pgrep -f "$T/r0.res|$D/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done; rm -rf "$T" "$D"; }
trap cleanup EXIT
. bench/pair.sh
fill() { head -c "${SIZE_MIB}M" /dev/zero > "$1"; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
job_args() { case $1 in
  w32) echo "--rw=randwrite --bs=4k --iodepth=32";; w1) echo "--rw=randwrite --bs=4k --iodepth=1";;
  f1) echo "--rw=randwrite --bs=4k --iodepth=1 --fsync=1";; s8) echo "--rw=write --bs=1M --iodepth=8";;
  r32) echo "--rw=randread --bs=4k --iodepth=32";; *) echo "unknown job $1" >&2; exit 2;; esac; }
run_jobs() { # label uri pid...
  local label=$1 uri=$2; shift 2; local j
  for j in $JOBS; do
    local c0; c0=$(cpu_ticks "$@")
    fio --name=$j --ioengine=nbd --uri="$uri" $(job_args $j) --size=1000M --time_based --runtime="$RT" \
        --output-format=json --output="$T/fio.json" >/dev/null 2>&1 || { echo "$round $label $j FAILED"; continue; }
    local c1; c1=$(cpu_ticks "$@")
    python3 bench/floor_report.py row "$T/fio.json" "$round" "$label" "$j" "$((c1 - c0))" "$(getconf CLK_TCK)"
  done; }
times_of() { awk '{print $14, $15}' /proc/$1/stat; }
split_jobs() { # label uri primary-pid secondary-pid
  local label=$1 uri=$2 p=$3 s=$4 j
  for j in $JOBS; do
    local a0 b0 a1 b1 sp ss
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$p" -o "$T/stat.p" & sp=$!
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$s" -o "$T/stat.s" & ss=$!
    sleep 0.5; a0=$(times_of "$p"); b0=$(times_of "$s")
    fio --name=$j --ioengine=nbd --uri="$uri" $(job_args $j) --size=1000M --time_based --runtime="$RT" \
        --output-format=json --output="$T/fio.json" >/dev/null 2>&1 || { echo "$round $label $j FAILED"; kill -INT $sp $ss; continue; }
    a1=$(times_of "$p"); b1=$(times_of "$s"); kill -INT $sp $ss; wait $sp $ss 2>/dev/null || true
    python3 bench/floor_report.py splitrow "$T/fio.json" "$round" "$label" "$j" "$(getconf CLK_TCK)" \
      "$a0" "$a1" "$b0" "$b1" "$T/stat.p" "$T/stat.s"
  done; }
nbdkit_round() { fill "$D/n.img"; rm -f "$D/n.sock"; nbdkit -f -U "$D/n.sock" file "$D/n.img" & PIDS=$!; sleep 1
  run_jobs nbdkit "nbd+unix:///?socket=$D/n.sock" $PIDS; stop; rm -f "$D/n.img"; }
SPLICE=(); [ "${FLOOR_SPLICE:-0}" = 1 ] && SPLICE=(--splice)
floor_round() { # protocol label [--meta]
  local proto=$1 label=$2; fill "$D/a"; local args=(--protocol "$proto" "${SPLICE[@]}" "${@:3}")
  if [ "$proto" != standalone ]; then fill "$D/b"
    "$BIN/rep-floor" secondary --file "$D/b" --listen 127.0.0.2:$PORT --protocol "$proto" "${SPLICE[@]}" "${@:3}" & PIDS=$!
    args+=(--peer 127.0.0.2:$PORT --bind 127.0.0.1:0); fi
  local secondary=$PIDS
  "$BIN/rep-floor" primary --file "$D/a" --nbd "$D/f.sock" "${args[@]}" & PIDS="$PIDS $!"
  local primary=$!
  for i in $(seq 50); do [ -S "$D/f.sock" ] && break; sleep 0.1; done
  if [ "$SPLIT" = 1 ]; then split_jobs "$label" "nbd+unix:///?socket=$D/f.sock" "$primary" "$secondary"
  else run_jobs "$label" "nbd+unix:///?socket=$D/f.sock" $PIDS; fi
  stop; if [ "$proto" != standalone ] && ! cmp -s "$D/a" "$D/b"; then echo "$round $label WARNING the two files differ"; fi
  rm -f "$D/a" "$D/b" "$D/f.sock"; }
rep_round() { local proto=$1 mode=$2; fill "$D/disk-a"; fill "$D/disk-b"
  pair_up "$proto" "$([ "$mode" = SA ] && echo 1 || echo 0)"
  local pids; pids=$(pgrep -f "$T/r0.res" | tr '\n' ' ')
  local uri="nbd+unix:///r0?socket=$T/run-node-a/r0.nbd"
  if [ "$SPLIT" = 1 ]; then split_jobs "rep-$proto" "$uri" "$(cat "$T/run-node-a/r0.pid")" "$(cat "$T/run-node-b/r0.pid")"
  else run_jobs "rep-$proto$([ "$mode" = SA ] && echo -SA)" "$uri" $pids; fi
  [ "$mode" = SA ] || adm node-a cstate r0 2>/dev/null | grep -q ^Connected || echo "$round rep-$proto WARNING link not Connected after the jobs"
  for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done; rm -f "$D/disk-a" "$D/disk-b"; }
if [ "$SPLIT" = 1 ]; then
  for round in $(seq 1 "$ROUNDS"); do
    floor_round c floor-C; floor_round c floor-Cm --meta; rep_round C C; floor_round a floor-A; rep_round A C
  done | tee "$T/all.txt"
  python3 bench/floor_report.py split "$T/all.txt"
  exit 0
fi
for round in $(seq 1 "$ROUNDS"); do
  nbdkit_round; floor_round c floor-C; floor_round c floor-Cm --meta; rep_round C C
  floor_round a floor-A; rep_round A C
  floor_round standalone floor-SA; rep_round C SA
done | tee "$T/all.txt"
python3 bench/floor_report.py summary "$T/all.txt"
