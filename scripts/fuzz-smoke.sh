#!/usr/bin/env bash
# fuzz-smoke.sh — run every cargo-fuzz target for FUZZ_SECONDS (default 30) on stable Rust
# (libFuzzer without a sanitizer: panics, debug assertions and overflow checks still fire).
# Not part of scripts/test.sh (too slow for CI); crashes land in fuzz/artifacts/TARGET/ and are
# then replayed by tests/tests/fuzz_replay.rs in the normal test run. Exits non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH=/tmp/fuzztools/bin:$PATH
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --root /tmp/fuzztools
secs=${FUZZ_SECONDS:-30}
status=0
for t in res_parser nbd_request meta_decode peer_packet control_request engine_stateful; do
  mkdir -p "corpus/$t"
  if cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" 2> "/tmp/fuzz-$t.log"; then
    echo "$t: $(grep -Eo '#[0-9]+' "/tmp/fuzz-$t.log" | tail -1 | tr -d '#') runs, no crash"
  else
    echo "$t: CRASH (see /tmp/fuzz-$t.log and fuzz/artifacts/$t/)"; status=1
  fi
done
exit $status
