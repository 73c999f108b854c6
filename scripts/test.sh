#!/usr/bin/env bash
# The whole test suite. Installs the system packages the tests use, then: formatting, lints,
# unit/property/simulation/integration tests (real repd processes, real NBD clients), and the
# .res conformance corpus checked against drbdadm's own parser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The tests drive repd's test-only fault hook (`repadm fault`), so the binaries they run and the
# tests themselves are built with it; clippy checks the crates both with and without it.
FAULT=(--features rep-replicator/fault-injection)
cargo clippy --workspace --all-targets "${FAULT[@]}" -- -D warnings
cargo build --workspace --release --bins "${FAULT[@]}"
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --release --no-fail-fast "${FAULT[@]}" -- --test-threads=2
REPADM_BIN="${CARGO_TARGET_DIR:-target}/release/repadm"
bash resources/tests/res-corpus/check.sh "$REPADM_BIN" resources/tests/res-corpus
bash resources/tests/res-corpus/check.sh "$REPADM_BIN" resources/tests/res-corpus/v9
