#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, then the whole test suite (unit tests and
# integration tests against the real binary and real guest components built from source).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# No crate depends on itself through others, and no module inside a crate does.
python3 scripts/structure.py --quiet
# deploy/kubernetes renders and validates against the Kubernetes API schemas, and the node
# installer script installs and uninstalls the shim on fake nodes (docs/kubernetes.md).
scripts/check-kubernetes.sh
scripts/build-guests.sh
# Every cargo command below selects the whole workspace, so that cargo resolves the same features
# for all of them and builds wasmtime, tokio and the rest once. A `-p CRATE` selection resolves
# features for that crate alone and rebuilds the whole dependency tree under other hashes: three
# such commands here once cost three more builds and ran a CI machine out of disk.
# The containerd tests run the shim's binary, which they find beside skiff's; no test target
# depends on it, so it is built here with the tests.
cargo build --workspace --bins --tests --quiet
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The acceptance suite again with the guests on wasmtime's interpreter (`--engine pulley`): the
# same sandbox, limits and answers without native code (about two minutes).
if command -v cargo-nextest >/dev/null; then
  acceptance="serve run up limits hostile wasi_0_3 state schedules folders polyglot gateway queues"
  filter="$(printf 'binary_id(skiff::%s) | ' $acceptance)"
  SKIFF_ENGINE=pulley cargo nextest run --workspace --no-fail-fast -E "${filter% | }"
fi
# The benchmarks are never timed here (machines are noisy), only kept working: the criterion
# bench runs each benchmark once in the test profile, and the suite's scripts must parse.
cargo test --workspace --bench sandbox --quiet
python3 -m py_compile bench/bench.py bench/cluster.py bench/density.py bench/distribution.py bench/gateway.py bench/queues.py bench/shim.py bench/size.py bench/startup.py
