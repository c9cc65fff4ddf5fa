#!/usr/bin/env bash
# Builds both components and copies them beside skiff.toml as front.wasm and pricing.wasm, the
# files the manifest points at.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${CARGO_TARGET_DIR:-$here/target}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

cargo build --release --manifest-path "$here/Cargo.toml" --target wasm32-wasip2 \
    --target-dir "$target_dir"
for name in front pricing; do
    cp "$target_dir/wasm32-wasip2/release/$name.wasm" "$here/$name.wasm"
    echo "wrote $here/$name.wasm ($(wc -c < "$here/$name.wasm") bytes)"
done
