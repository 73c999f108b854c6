#!/usr/bin/env bash
# Soak the real-process fault suite (tests/tests/power_loss.rs, kill9.rs, ext4_faults.rs) for
# about SECONDS (default 600) with new seeds, outside the normal test run.
#
#   scripts/soak.sh [SECONDS]
#
# Each pass runs every fault-suite test binary with REP_FAULT_SEED set to a fresh base seed and
# REP_FAULT_ROUNDS schedules per test (default 8; each test's schedules use seeds BASE..BASE+N-1),
# then moves the base on. The first base seed is REP_FAULT_SEED if set, else derived from the
# clock (printed, so a whole soak can be repeated). A pass already started finishes, so the soak
# may overrun SECONDS by one test binary's run. Logs of every run go to a directory under /tmp
# (printed); failing seeds are listed at the end, each replayable with
#   REP_FAULT_SEED=S REP_FAULT_ROUNDS=1 cargo test --release -p rep-tests \
#     --features rep-replicator/fault-injection --test <test> -- --nocapture
# Needs root and the packages of scripts/deps.sh, like the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-600}
[[ "$SECS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
ROUNDS=${REP_FAULT_ROUNDS:-8}
SEED=${REP_FAULT_SEED:-$(( ($(date +%s) % 100000) * 1000 + 100000 ))}
TESTS=(power_loss kill9 ext4_faults)
FEATURES=(--features rep-replicator/fault-injection)

cargo build --release --workspace --bins "${FEATURES[@]}"
cargo test --release -p rep-tests "${FEATURES[@]}" --no-run $(printf -- '--test %s ' "${TESTS[@]}")

LOGDIR=$(mktemp -d /tmp/rep-soak.XXXXXX)
echo "soak: ${SECS}s, ${ROUNDS} schedules per test per pass, first seed ${SEED}, logs in ${LOGDIR}"

start=$SECONDS
deadline=$(( start + SECS ))
passes=0
failed=()
while (( SECONDS < deadline )); do
  for t in "${TESTS[@]}"; do
    (( SECONDS < deadline )) || break
    log="${LOGDIR}/${t}-${SEED}.log"
    if ! REP_FAULT_SEED=$SEED REP_FAULT_ROUNDS=$ROUNDS \
        cargo test --release -p rep-tests "${FEATURES[@]}" --test "$t" -- --nocapture --test-threads=2 \
        >"$log" 2>&1; then
      failed+=("$t REP_FAULT_SEED=${SEED}..$(( SEED + ROUNDS - 1 )) (${log})")
      echo "soak: FAILED ${t} with seeds from ${SEED}: $(grep -h -m3 '^REP_FAULT_SEED=[0-9]*: ' "$log" | tr '\n' ' ')"
    fi
    grep -h '^fault-suite: [^ ]* runs=' "$log" | sed 's/^/soak: /' || true
  done
  passes=$(( passes + 1 ))
  SEED=$(( SEED + ROUNDS ))
done

echo "soak: ${passes} passes (the last one may be partial) in $(( SECONDS - start ))s"
# Totals per kind and overall, from every run's summary lines.
cat "${LOGDIR}"/*.log | grep -h '^fault-suite: [^ ]* runs=' | awk '
  {
    kind = $2
    for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kind, kv[1]] += kv[2]; t[kv[1]] += kv[2] }
    kinds[kind] = 1
  }
  END {
    for (k in kinds)
      printf "soak: %-14s runs=%d faults=%d writes_checked=%d writes_lost=%d\n", k,
        v[k, "runs"], v[k, "faults"], v[k, "writes_checked"], v[k, "writes_lost"]
    printf "soak: total          runs=%d faults=%d writes_checked=%d writes_lost=%d\n",
      t["runs"], t["faults"], t["writes_checked"], t["writes_lost"]
  }'
if (( ${#failed[@]} > 0 )); then
  echo "soak: ${#failed[@]} failing runs:"
  printf 'soak:   %s\n' "${failed[@]}"
  exit 1
fi
echo "soak: no failures"
