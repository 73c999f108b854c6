#!/usr/bin/env bash
# run.sh — rep's benchmark: nbdkit, QEMU's synchronous mirror and rep (protocol C, protocol A,
# disconnected) with the same fio jobs in one run, plus the loopback TCP round trip, nbdcopy,
# rep's full and incremental resync, CPU per I/O of every daemon and repd's RSS, and an ext4
# small-file fsync job (nbdfuse + loop) on nbdkit and rep C. nbdkit and rep alternate within each
# of ROUNDS rounds; medians, spreads, and a warning for any round whose nbdkit figure is >10% off
# its median. Ratios are defined as in ../shared/tools/perf-ratio.sh. Prints one table of figures
# and target ratios and writes a JSON file (bench/bench.py has the details).
# bench/syscalls.sh counts system calls, sleeps and io_uring requests per QD1 write (no timing).
#
# Usage:
#   bench/run.sh                              build target/release, benchmark it
#   REP_BUILDS="base=/work/baseline new=target/release" bench/run.sh
#                                             several rep builds in the same run (LABEL=DIR, DIR
#                                             holding repd and repadm)
#   bench/run.sh --compare OLD.json[:LABEL] NEW.json[:LABEL]    compare two runs' JSON
#   bench/run.sh --report RUN.json            print a run's tables again
#   bench/run.sh --profile                    where rep's CPU goes under 4k randwrite QD32,
#                                             protocol C (perf trace, perf record; bench/profile.py)
# Env: RT_W (seconds per write job, 15), RT_R (read job, 10), ROUNDS (3), RT_FS and FS_FILES
#      (the filesystem job: 10 s or 20000 files), SIZE_MIB (1024), OUT_DIR (target/bench/run-<UTC>), BENCH_JSON (OUT_DIR/bench.json),
#      ONLY (subset of "rtt nbdkit rep fs mirror nbdcopy"), PORT_BASE, NO_BUILD=1, REP_RESYNC
#      (the .res disk options for the resyncs, default "c-plan-ahead 0; resync-rate 4G;"),
#      QUIET_WAIT (seconds to wait before each job for the rest of the machine to use less than
#      QUIET_PCT = 25 % of a CPU; 0 = do not wait).
# Network: 127.0.0.1 and 127.0.0.2 only. Every load is bounded by fio's runtime or a fixed size;
# every daemon and file is removed at exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --compare) shift; exec python3 bench/report.py "$@" ;;
  --report) shift; exec python3 bench/report.py "$1" ;;
  --profile) PROFILE=1 ;;
  "") ;;
  *) echo "run.sh: unknown argument $1 (see the header of bench/run.sh)" >&2; exit 64 ;;
esac
bash scripts/deps.sh
bash bench/deps.sh
# The default build is this worktree's; REP_BUILDS naming target/release also wants it fresh.
if [ -z "${NO_BUILD:-}" ] && { [ -z "${REP_BUILDS:-}" ] || [[ "$REP_BUILDS" == *target/release* ]]; }; then
  cargo build --release -q -p rep-replicator -p rep-adm --bins
fi
[ -n "${PROFILE:-}" ] && exec python3 bench/profile.py
exec python3 bench/bench.py
