#!/usr/bin/env bash
# Builds the component and copies it beside skiff.toml as queue_pipeline.wasm, the file the
# manifest points at. queue_pipeline.wasm is committed, so running the example needs no Wasm toolchain;
# run this only after changing src/lib.rs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${CARGO_TARGET_DIR:-$here/target}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

cargo build --release --manifest-path "$here/Cargo.toml" --target wasm32-wasip2 \
    --target-dir "$target_dir"
cp "$target_dir/wasm32-wasip2/release/queue_pipeline.wasm" "$here/queue_pipeline.wasm"
echo "wrote $here/queue_pipeline.wasm ($(wc -c < "$here/queue_pipeline.wasm") bytes)"
