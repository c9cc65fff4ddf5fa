#!/usr/bin/env bash
# Builds the test guests in tests/guests: every crate as a wasm32-wasip2 component, and
# cli-guest also as a wasm32-wasip1 core module, into ${CARGO_TARGET_DIR:-<repo>/target}/guests.
# These are the same commands the host's tests run, so a build here warms their cache.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${CARGO_TARGET_DIR:-$repo/target}/guests"
manifest="$repo/tests/guests/Cargo.toml"

installed="$(rustup target list --installed)"
for target in wasm32-wasip2 wasm32-wasip1; do
    if ! grep -qx "$target" <<<"$installed"; then
        rustup target add wasm32-wasip2 wasm32-wasip1
        break
    fi
done

cargo build --release --manifest-path "$manifest" --target wasm32-wasip2 --target-dir "$out"
cargo build --release --manifest-path "$manifest" --target wasm32-wasip1 --target-dir "$out" -p cli-guest

echo "guests built:"
for wasm in "$out"/wasm32-wasip2/release/*.wasm "$out"/wasm32-wasip1/release/*.wasm; do
    echo "  $wasm ($(wc -c < "$wasm") bytes)"
done
