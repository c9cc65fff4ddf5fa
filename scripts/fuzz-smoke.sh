#!/usr/bin/env bash
# Bounded fuzz run of every cargo-fuzz target in fuzz/ (the manifest parser, the route matcher
# and the bundle unpacker): each runs for FUZZ_SECONDS (default 60) on a temporary copy of its
# seed corpus, so the repository is not touched except for crash inputs under fuzz/artifacts/
# (gitignored).
# Exits non-zero if any target crashes, printing the input that did it and how to replay it.
#
#   scripts/fuzz-smoke.sh                       # what CI runs
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh      # fuzz longer
#   FUZZ_TARGETS=router scripts/fuzz-smoke.sh   # one target
#
# Needs a nightly toolchain (`rustup toolchain install nightly --profile minimal`); installs
# cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-manifest router bundle}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz-smoke: needs a nightly toolchain: rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

work="$(mktemp -d "${TMPDIR:-/tmp}/skiff-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"

echo "fuzz-smoke: building the fuzz targets"
cargo +nightly fuzz build

failed=()
for target in $targets; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$target"/seed-* "$corpus"/
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  if [[ -f "fuzz/dict/$target.dict" ]]; then
    args+=(-dict="$PWD/fuzz/dict/$target.dict")
  fi
  echo "fuzz-smoke: $target for ${seconds}s"
  log="$work/$target.log"
  start=$SECONDS
  # The targets make their fixture folders under TMPDIR; keep them in the scratch folder.
  if TMPDIR="$work/tmp" cargo +nightly fuzz run "$target" "$corpus" -- "${args[@]}" >"$log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    cov="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+' || true)"
    echo "fuzz-smoke: $target ok: ${execs:-?} runs in $((SECONDS - start))s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs"
  else
    failed+=("$target")
    if grep -q "panicked at" "$log"; then
      echo "fuzz-smoke: $target FAILED:" >&2
      grep -m 1 -A 25 "panicked at" "$log" >&2
    else
      # A timeout, out-of-memory or build failure: the end of the log says which.
      echo "fuzz-smoke: $target FAILED; the end of its log:" >&2
      tail -n 60 "$log" >&2
    fi
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [[ -n "$crash" ]]; then
      echo "fuzz-smoke: the input that failed is $crash" >&2
      echo "fuzz-smoke: its bytes, base64 (to recreate it from a CI log): $(base64 -w 0 "$crash")" >&2
      echo "fuzz-smoke: replay it with: cargo +nightly fuzz run $target $crash" >&2
      echo "fuzz-smoke: shrink it with: cargo +nightly fuzz tmin $target $crash" >&2
    fi
  fi
done

if ((${#failed[@]})); then
  echo "fuzz-smoke: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash"
