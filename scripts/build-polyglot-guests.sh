#!/usr/bin/env bash
# Builds the non-Rust test guests, real `wasi:http/proxy` components made by the languages' own
# tools, into ${CARGO_TARGET_DIR:-<repo>/target}/guests:
#
#   python_http.wasm  tests/guests-py/app.py  by componentize-py (pinned below)
#   js_http.wasm      tests/guests-js/app.js  by ComponentizeJS (pinned in tests/guests-js/package.json
#                                             and package-lock.json, installed with `npm ci`)
#   c_http.wasm       tests/guests-c/app.c    by clang against wasi-libc, with `wit-bindgen c`
#                                             bindings (pinned below), linked by wasm-component-ld
#
# Tools are installed when missing, under the target dir, never globally:
#   - componentize-py: the one on PATH if it is the pinned version, else
#     `pip install --target <target>/polyglot-tools/py-<version>` (works even where PEP 668 guards the
#     system Python, as on Debian 12);
#   - node packages: `npm ci` in <target>/polyglot-tools/npm, redone only when the lock changes;
#   - wit-bindgen: the one on PATH if it is the pinned version, else `cargo install` of its C
#     generator alone into <target>/polyglot-tools/wit-bindgen-<version>;
#   - wasm-component-ld: the one on PATH, else the one rustup ships beside rustc (Rust's own
#     linker for wasm32-wasip2).
# clang (with the wasm32 compiler runtime), wasm-ld and wasi-libc come from the system: on Debian
# `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`.
# A component is rebuilt only when one of its sources (app, WIT, lock, this script) is newer than
# it, so running this again is cheap. Needs python3 with pip (>= 3.10), node >= 20.19 with npm,
# and the C tools above.
#
# Usage: scripts/build-polyglot-guests.sh [python] [js] [c]     (no argument: all)
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
WIT_BINDGEN_VERSION=0.63.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="$target/guests"
tools="$target/polyglot-tools"
script="$repo/scripts/build-polyglot-guests.sh"

want_py=1
want_js=1
want_c=1
if [ $# -gt 0 ]; then
    want_py=0
    want_js=0
    want_c=0
    for arg in "$@"; do
        case "$arg" in
            python | py) want_py=1 ;;
            js | javascript) want_js=1 ;;
            c) want_c=1 ;;
            *) echo "build-polyglot-guests: unknown guest '$arg' (use: python, js, c)" >&2; exit 2 ;;
        esac
    done
fi

mkdir -p "$out" "$tools"

# up_to_date OUTPUT SOURCE...: true when OUTPUT exists and no SOURCE (file or folder, searched
# recursively) is newer than it.
up_to_date() {
    local output="$1"
    shift
    [ -f "$output" ] || return 1
    [ -z "$(find "$@" -newer "$output" -print -quit)" ]
}

report() {
    echo "  $1 ($(wc -c <"$1") bytes)"
}

# ---- Python: componentize-py ------------------------------------------------------------------

componentize_py() {
    if command -v componentize-py >/dev/null 2>&1 &&
        [ "$(componentize-py --version 2>/dev/null)" = "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        componentize-py "$@"
        return
    fi
    local dir="$tools/py-$COMPONENTIZE_PY_VERSION"
    if [ ! -x "$dir/bin/componentize-py" ]; then
        echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $dir" >&2
        rm -rf "$dir.partial"
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --root-user-action=ignore \
            --target "$dir.partial" "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
        rm -rf "$dir"
        mv "$dir.partial" "$dir"
        # pip wrote the script's path into nothing but its shebang (the python3 above), so the
        # folder can be moved; the package itself is found through PYTHONPATH.
    fi
    PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" python3 "$dir/bin/componentize-py" "$@"
}

build_python() {
    local src="$repo/tests/guests-py"
    local wasm="$out/python_http.wasm"
    if up_to_date "$wasm" "$src/app.py" "$src/wit" "$script"; then
        echo "python guest up to date" >&2
        return
    fi
    echo "building $wasm" >&2
    local started=$SECONDS
    # The app dir is on componentize-py's module path; keep Python from leaving __pycache__ there.
    (cd "$src" && PYTHONDONTWRITEBYTECODE=1 componentize_py -d wit -w http-guest \
        componentize app -p . -o "$wasm.partial") >&2
    mv "$wasm.partial" "$wasm"
    rm -rf "$src/__pycache__"
    echo "python guest built in $((SECONDS - started))s" >&2
}

# ---- JavaScript: ComponentizeJS (StarlingMonkey) ----------------------------------------------

npm_tools() {
    local src="$repo/tests/guests-js"
    local dir="$tools/npm"
    mkdir -p "$dir"
    if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/package-lock.json" &&
        cmp -s "$src/package.json" "$dir/package.json"; then
        return
    fi
    echo "installing the node packages of tests/guests-js/package-lock.json into $dir" >&2
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
}

build_js() {
    local src="$repo/tests/guests-js"
    local wasm="$out/js_http.wasm"
    if up_to_date "$wasm" "$src/app.js" "$src/wit" "$src/package.json" "$src/package-lock.json" "$script"; then
        echo "javascript guest up to date" >&2
        return
    fi
    npm_tools
    echo "building $wasm" >&2
    local started=$SECONDS
    # `componentize-js` directly rather than `jco componentize`: jco 1.35.0's wrapper first reads
    # the WIT through its own Wasm build of wasm-tools, which sees no preopened directory and fails
    # with "failed to get path metadata". The component is the same ComponentizeJS output.
    (cd "$src" && "$tools/npm/node_modules/.bin/componentize-js" app.js --wit wit \
        --world-name http-guest --out "$wasm.partial") >&2
    mv "$wasm.partial" "$wasm"
    echo "javascript guest built in $((SECONDS - started))s" >&2
}

# ---- C: clang, wasi-libc, wit-bindgen, wasm-component-ld ------------------------------------

# The folder holding the pinned `wit-bindgen` (installed there when missing), printed.
wit_bindgen_dir() {
    if command -v wit-bindgen >/dev/null 2>&1 &&
        [ "$(wit-bindgen --version 2>/dev/null | cut -d' ' -f2)" = "$WIT_BINDGEN_VERSION" ]; then
        dirname "$(command -v wit-bindgen)"
        return
    fi
    local dir="$tools/wit-bindgen-$WIT_BINDGEN_VERSION"
    if [ ! -x "$dir/bin/wit-bindgen" ]; then
        echo "installing wit-bindgen $WIT_BINDGEN_VERSION (C bindings only) into $dir" >&2
        rm -rf "$dir.partial"
        # Its own target dir, so this install neither waits on nor disturbs the workspace's.
        cargo install --quiet --locked --root "$dir.partial" --target-dir "$tools/cargo-target" \
            --no-default-features --features c wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" >&2
        rm -rf "$tools/cargo-target" "$dir"
        mv "$dir.partial" "$dir"
    fi
    echo "$dir/bin"
}

# The path of wasm-component-ld, printed.
wasm_component_ld() {
    if command -v wasm-component-ld >/dev/null 2>&1; then
        command -v wasm-component-ld
        return
    fi
    local shipped
    shipped="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
    if [ ! -x "$shipped" ]; then
        echo "build-polyglot-guests: no wasm-component-ld on PATH or beside rustc; cargo install wasm-component-ld" >&2
        exit 1
    fi
    echo "$shipped"
}

build_c() {
    local src="$repo/tests/guests-c"
    # The WIT that `skiff new http-c` gives an app: wasi:http/proxy, world `http-app`.
    local wit="$repo/crates/skiff/templates/wit-http"
    local wasm="$out/c_http.wasm"
    if up_to_date "$wasm" "$src/app.c" "$wit" "$script"; then
        echo "c guest up to date" >&2
        return
    fi
    local bindgen linker
    bindgen="$(wit_bindgen_dir)"
    linker="$(wasm_component_ld)"
    echo "building $wasm" >&2
    local started=$SECONDS
    local gen="$out/c-bindings"
    rm -rf "$gen"
    "$bindgen/wit-bindgen" c "$wit" --world http-app --out-dir "$gen" >&2
    # A reactor (no main), linked into a component with the adapter for the proxy world.
    clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -mexec-model=reactor -I"$gen" \
        -fuse-ld="$linker" -Wl,--wasi-adapter=proxy -o "$wasm.partial" \
        "$src/app.c" "$gen/http_app.c" "$gen/http_app_component_type.o" >&2
    mv "$wasm.partial" "$wasm"
    echo "c guest built in $((SECONDS - started))s" >&2
}

[ "$want_py" = 1 ] && build_python
[ "$want_js" = 1 ] && build_js
[ "$want_c" = 1 ] && build_c

echo "polyglot guests:"
[ "$want_py" = 1 ] && report "$out/python_http.wasm"
[ "$want_js" = 1 ] && report "$out/js_http.wasm"
[ "$want_c" = 1 ] && report "$out/c_http.wasm"
exit 0
