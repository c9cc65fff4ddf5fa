#!/usr/bin/env bash
# Measures per-operation latency of the key-value backends (embedded redb and Redis) and prints a
# table of median and p99 latency per operation, each set against a baseline measured in the same
# run. Needs `redis-server` (apt-get install -y redis-server); the benchmark starts its own on a
# free loopback port. Source: crates/skiff-store/benches/ops.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench --quiet -p skiff-store --bench ops "$@"
