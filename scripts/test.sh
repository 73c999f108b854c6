#!/usr/bin/env bash
# The whole test suite. Installs the system packages the tests use, then: formatting, lints,
# unit/property/simulation/integration tests (real repd processes, real NBD clients), and the
# .res conformance corpus checked against drbdadm's own parser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --release --bins
cargo test --workspace --release -- --test-threads=2
bash resources/tests/res-corpus/check.sh target/release/repadm resources/tests/res-corpus
