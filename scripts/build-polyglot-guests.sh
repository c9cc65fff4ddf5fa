#!/usr/bin/env bash
# Builds the non-Rust test guests, real `wasi:http/proxy` components made by the languages' own
# tools, into ${CARGO_TARGET_DIR:-<repo>/target}/guests:
#
#   python_http.wasm  tests/guests-py/app.py  by componentize-py (pinned below)
#   js_http.wasm      tests/guests-js/app.js  by ComponentizeJS (pinned in tests/guests-js/package.json
#                                             and package-lock.json, installed with `npm ci`)
#
# Tools are installed when missing, under the target dir, never globally:
#   - componentize-py: the one on PATH if it is the pinned version, else
#     `pip install --target <target>/polyglot-tools/py-<version>` (works even where PEP 668 guards the
#     system Python, as on Debian 12);
#   - node packages: `npm ci` in <target>/polyglot-tools/npm, redone only when the lock changes.
# A component is rebuilt only when one of its sources (app, WIT, lock, this script) is newer than
# it, so running this again is cheap. Needs python3 with pip (>= 3.10) and node >= 20.19 with npm.
#
# Usage: scripts/build-polyglot-guests.sh [python] [js]     (no argument: both)
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="$target/guests"
tools="$target/polyglot-tools"
script="$repo/scripts/build-polyglot-guests.sh"

want_py=1
want_js=1
if [ $# -gt 0 ]; then
    want_py=0
    want_js=0
    for arg in "$@"; do
        case "$arg" in
            python | py) want_py=1 ;;
            js | javascript) want_js=1 ;;
            *) echo "build-polyglot-guests: unknown guest '$arg' (use: python, js)" >&2; exit 2 ;;
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

[ "$want_py" = 1 ] && build_python
[ "$want_js" = 1 ] && build_js

echo "polyglot guests:"
[ "$want_py" = 1 ] && report "$out/python_http.wasm"
[ "$want_js" = 1 ] && report "$out/js_http.wasm"
exit 0
