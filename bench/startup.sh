#!/usr/bin/env bash
# Cold start of `skiff up examples/hello`: from exec to the first 200 response, with a warm
# code cache and with an empty one. Prints the median of N runs (default 20) for each.
#
#   bench/startup.sh [RUNS]
#
# Uses the release binary (built if missing). Timing is wall clock around a curl poll loop at
# 1 ms intervals, so figures carry up to ~1 ms of polling granularity.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo build --release -q -p skiff
skiff="$PWD/target/release/skiff"
port=38517
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT

one_start() { # prints milliseconds from exec to first 200
  local start end pid
  start=$(date +%s%N)
  SKIFF_CACHE_DIR="$cache" "$skiff" up --listen "127.0.0.1:$port" examples/hello >/dev/null 2>&1 &
  pid=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.001; done
  end=$(date +%s%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo $(( (end - start) / 1000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f ms\n", m/1000}'; }

echo "cold cache (compile each time): $(for _ in $(seq "$runs"); do rm -rf "${cache:?}"/*; one_start; done | median)"
one_start >/dev/null # fill the cache
echo "warm cache:                     $(for _ in $(seq "$runs"); do one_start; done | median)"
