#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, then the whole test suite (unit tests and
# integration tests against the real binary and real guest components built from source).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
scripts/build-guests.sh
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
