#!/usr/bin/env bash
# Runs the gateway example: builds the two middleware components, starts the service in a crun
# container on a free port, writes that port into skiff.run.toml (a copy of skiff.toml), and
# serves the app with `skiff up` until Ctrl-C; then stops and deletes the container.
#
#     examples/gateway/run.sh                  # listens on 127.0.0.1:3000
#     LISTEN=127.0.0.1:8000 examples/gateway/run.sh
#
# Needs root (crun), crun, gcc with a static libc (Debian: crun gcc libc6-dev), python3, and
# Rust with the wasm32-wasip2 target. SKIFF names a skiff binary to use; without it skiff is
# built from this repository. SKIFF_VAR_JWT_HS256_SECRET is the HS256 secret; without it a demo
# secret is used (the one make-token.py uses).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
listen="${LISTEN:-127.0.0.1:3000}"
container="skiff-gateway-hello-$$"

die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '== %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || die "crun needs root here: run as root (or with sudo)"
for tool in crun gcc python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install crun gcc libc6-dev python3)"
done

# --- the components ----------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
say "building the middleware components"
target_dir="${CARGO_TARGET_DIR:-$here/target}"
cargo build --release --manifest-path "$here/Cargo.toml" --target wasm32-wasip2 \
    --target-dir "$target_dir"
cp "$target_dir/wasm32-wasip2/release/jwt.wasm" "$target_dir/wasm32-wasip2/release/limit.wasm" "$here/"

skiff="${SKIFF:-}"
if [ -z "$skiff" ]; then
    say "building skiff"
    cargo build --release --manifest-path "$repo/Cargo.toml" -p skiff
    skiff="${CARGO_TARGET_DIR:-$repo/target}/release/skiff"
fi

# --- the service, in a container -----------------------------------------------------------
work="$(mktemp -d)"
cleanup() {
    set +e
    if [ -n "${crun_pid:-}" ]; then
        say "stopping the container $container"
        bash "$here/service/crun.sh" kill "$container" KILL >/dev/null 2>&1
        # `crun run` deletes the container once it has exited; `delete -f` covers the rest.
        for _ in $(seq 100); do kill -0 "$crun_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$crun_pid" 2>/dev/null
        wait "$crun_pid" 2>/dev/null
        bash "$here/service/crun.sh" delete -f "$container" >/dev/null 2>&1
    fi
    rm -rf "$work" "$here/skiff.run.toml"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
say "building the service's OCI bundle (port $port)"
bash "$here/service/make-bundle.sh" "$work/bundle" "$port"
say "starting the container $container"
bash "$here/service/crun.sh" run --bundle "$work/bundle" "$container" &
crun_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$crun_pid" 2>/dev/null || die "the container exited before it listened"
    sleep 0.1
done

# --- the gateway ---------------------------------------------------------------------------
sed "s|^url = \"http://127.0.0.1:[0-9]*\"|url = \"http://127.0.0.1:$port\"|" "$here/skiff.toml" \
    > "$here/skiff.run.toml"
grep -q "127.0.0.1:$port" "$here/skiff.run.toml" || die "could not write the port into skiff.run.toml"
if [ -z "${SKIFF_VAR_JWT_HS256_SECRET:-}" ]; then
    say "SKIFF_VAR_JWT_HS256_SECRET is not set: using the demo secret (demo only!)"
    export SKIFF_VAR_JWT_HS256_SECRET="demo-only-hs256-secret-do-not-use-in-production"
fi
say "serving on http://$listen (Ctrl-C stops skiff and the container); try:"
cat >&2 <<EOF
    curl -i http://$listen/api/hello                                  # 401
    curl -i -H "authorization: Bearer \$($here/make-token.py)" http://$listen/api/hello   # 200
EOF
"$skiff" up --listen "$listen" "$here/skiff.run.toml"
