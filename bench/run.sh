#!/usr/bin/env bash
# The benchmark suite of skiff, end to end: installs what it needs, builds everything in
# release, runs every comparison on this machine, prints the table of medians and writes it
# into docs/performance.md.
#
#     bench/run.sh [--quick] [--only 1,2,3,5,6] [--reps N] [--duration S] [--no-write] [--note TEXT]
#
# --quick is a smoke test (one short repetition of everything, about 2 minutes once built;
# it leaves docs/performance.md alone).
# A full run takes about 17 minutes once built (3 x 10 s per wrk run, 4 servers for hello, 3 for
# sha256 and 4 for the WASI 0.3 hello).
# First run: installing wasmtime-cli 48.0.8 from crates.io builds it (15-25 min on 2 cores);
# it goes to bench/.tools (git-ignored) and is reused. Set WASMTIME=/path/to/wasmtime to use
# another copy of 48.0.8.
#
# Needs: Debian/Ubuntu (apt-get, as root or with sudo), Rust with rustup, 2 or more CPUs.
#
#     bench/run.sh --density [--quick] [--apps N] [--reps N] [--duration S] [--no-write]
#
# --density runs bench/density.py instead of the suite: 1,000 distinct apps deployed to one
# `skiff server`, RSS empty / loaded / idle, first request of an idle app vs a warm one, and
# throughput spread over all apps vs one app (about 3 minutes once built; needs only wrk and
# a release build of skiff, so it skips wasmtime and the other baselines). It writes the section
# "Density: 1,000 apps on one host" of docs/performance.md. The other options go to density.py.
#
#     bench/run.sh --distribution [--quick] [--runs N] [--no-write]
#
# --distribution runs bench/distribution.py instead of the suite: the hello app's size in a
# registry and its time from a registry to the first 200 (pull, then start, from an empty
# store), skiff against the static server in container images pulled by containerd and run
# by crun (about 2 minutes once built; the first run also builds a Debian slim base with
# debootstrap, which needs deb.debian.org). Needs root. It writes the section "Distribution:
# registry to first response" of docs/performance.md. The other options go to distribution.py.
#
#     bench/run.sh --cluster [--quick] [--deploys N] [--apps N] [--reps N] [--duration S] [--no-write]
#
# --cluster runs bench/cluster.py instead of the suite: one redis-server and 3 `skiff server
# --cluster` hosts on 127.0.0.2-4; 100 deploys through host 1 (config changes and new code,
# alternating) timed until all 3 data planes serve them, wrk on the hello app straight to one
# host, through HAProxy to one and through HAProxy to all 3, Redis memory per app and the
# commands of idle hosts, and a model of 100 hosts and 100,000 apps computed from them (about
# 5 minutes once built; needs redis-server, haproxy, wrk, a release build of skiff and the http
# test guest). It writes the section "Cluster: 3 hosts sharing Redis" of docs/performance.md.
# The other options go to cluster.py.
#
#     bench/run.sh --queues [--quick] [--reps N] [--seconds S] [--rate R] [--no-write]
#
# --queues runs bench/queues.py instead of the suite: one redis-server and one `skiff server
# --cluster` host; the queue trigger's messages per second through a transform component
# (bench/queues/transform-guest: consume `records`, publish upper-cased to `results`) at 1 and
# 32 in flight, against a native Rust consumer doing the same with the same Redis commands
# (bench/queues/native-consumer), and enqueue-to-result p50/p99 at a steady rate (about 3
# minutes once built; needs redis-server, a release build of skiff and the two bench crates,
# built into $CARGO_TARGET_DIR/bench-queues). It writes the section "Queues: the transform
# pipeline" of docs/performance.md. The other options go to queues.py.
#
#     bench/run.sh --gateway [--quick] [--reps N] [--duration S] [--no-both-cpus] [--no-write]
#
# --gateway runs bench/gateway.py instead of the suite: skiff as a reverse proxy in front of an
# HTTP service (nginx answering `return 200`) against Debian's nginx as a plain reverse proxy
# to the same service: req/s at 32 connections and p50/p99 at 1 connection with no middleware,
# one (a header rewrite) and two, the cost of each middleware hop, and one component calling
# another in process against the same call over loopback HTTP (about 17 minutes once built;
# needs nginx, wrk, a release build of skiff and the gateway test guest, and
# examples/gateway's jwt and limit when they build). It writes the section "Gateway: skiff in
# front of a service, against nginx" of docs/performance.md. The other options go to
# gateway.py.
#
#     bench/run.sh --size [--no-write]
#
# --size runs bench/size.py instead of the suite: the size of the binary users install (the
# `dist` profile, and the static musl builds of scripts/release.sh when they are there)
# against its 20 MiB budget, the release build as the baseline, and what each part costs by
# cargo-bloat (installed into bench/.tools). It builds both profiles first (the dist one takes
# 15-20 minutes on 2 cores). It writes the section "Binary size" of docs/performance.md.
set -euo pipefail

cluster=0
queues=0
gateway=0
density=0
distribution=0
shim=0
size=0
args=()
for arg in "$@"; do
    case "$arg" in
        --cluster) cluster=1 ;;
        --queues) queues=1 ;;
        --gateway) gateway=1 ;;
        --density) density=1 ;;
        --distribution) distribution=1 ;;
        --shim) shim=1 ;;
        --size) size=1 ;;
        *) args+=("$arg") ;;
    esac
done
set -- ${args[@]+"${args[@]}"}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tools="$repo/bench/.tools"
wasmtime_version="48.0.8"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
bench_target="$CARGO_TARGET_DIR/bench"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

# Replaces this shell with `python3 SCRIPT ARGS...`. crun refuses hybrid cgroup hosts (cgroup
# v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified). Inside a private mount
# namespace that hides the cgroup2 mount it works; the rest does not care, so as root on such
# a host the whole run goes in there (with containerd and its shims, where they run).
exec_python() {
    if [ "$(id -u)" = 0 ] && mountpoint -q /sys/fs/cgroup/unified 2>/dev/null \
        && [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ]; then
        say "(in a private mount namespace that hides the cgroup2 mount, for crun)"
        exec unshare -m --propagation private sh -c \
            'umount /sys/fs/cgroup/unified && mount -t tmpfs -o size=1m scratch /sys/fs/cgroup/unified && exec python3 "$0" "$@"' \
            "$@"
    fi
    exec python3 "$@"
}

sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: cannot apt-get install"
    sudo="sudo"
fi

# --- tools -----------------------------------------------------------------------------
missing=()
needed=(wrk:wrk crun:crun gcc:gcc taskset:util-linux unshare:util-linux curl:curl python3:python3)
if [ "$distribution" = 1 ]; then
    needed+=(docker-registry:docker-registry containerd:containerd ctr:containerd debootstrap:debootstrap)
fi
if [ "$cluster" = 1 ]; then
    needed+=(redis-server:redis-server haproxy:haproxy)
fi
if [ "$queues" = 1 ]; then
    needed+=(redis-server:redis-server)
fi
if [ "$gateway" = 1 ]; then
    needed+=(nginx:nginx)
fi
if [ "$shim" = 1 ]; then
    # runwasi's shim library builds with protoc and libseccomp.
    needed+=(docker-registry:docker-registry containerd:containerd ctr:containerd runc:runc
             protoc:protobuf-compiler)
    [ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
fi
for pair in "${needed[@]}"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# gcc -static needs the static libc.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$size" = 1 ]; then
    say "building skiff (dist and release)"
    cargo build --profile dist -p skiff
    cargo build --release -p skiff
    if ! command -v cargo-bloat >/dev/null && [ ! -x "$tools/bin/cargo-bloat" ]; then
        say "installing cargo-bloat into $tools"
        cargo install --locked --root "$tools" cargo-bloat
    fi
    export PATH="$tools/bin:$PATH"
    exec python3 "$repo/bench/size.py" "$@"
fi

if [ "$density" = 1 ]; then
    say "building skiff (release)"
    cargo build --release -p skiff
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    say "running the density benchmark"
    exec python3 "$repo/bench/density.py" "$@"
fi

if [ "$cluster" = 1 ]; then
    say "building skiff (release) and the http test guest"
    cargo build --release -p skiff
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    cargo build --release --manifest-path tests/guests/Cargo.toml --target wasm32-wasip2 \
        --target-dir "$CARGO_TARGET_DIR/guests" -p http-guest
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    export HTTP_GUEST_WASM="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/http_guest.wasm"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    say "running the cluster benchmark"
    exec python3 "$repo/bench/cluster.py" "$@"
fi

if [ "$queues" = 1 ]; then
    say "building skiff (release), the transform guest and the native consumer"
    cargo build --release -p skiff
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    cargo build --release --manifest-path bench/queues/transform-guest/Cargo.toml \
        --target wasm32-wasip2 --target-dir "$CARGO_TARGET_DIR/bench-queues"
    cargo build --release --manifest-path bench/queues/native-consumer/Cargo.toml \
        --target-dir "$CARGO_TARGET_DIR/bench-queues"
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    export TRANSFORM_WASM="$CARGO_TARGET_DIR/bench-queues/wasm32-wasip2/release/transform_guest.wasm"
    export NATIVE_CONSUMER="$CARGO_TARGET_DIR/bench-queues/release/native-consumer"
    say "running the queue benchmark"
    exec python3 "$repo/bench/queues.py" "$@"
fi

if [ "$gateway" = 1 ]; then
    say "building skiff (release) and the gateway test guest"
    cargo build --release -p skiff
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    cargo build --release --manifest-path tests/guests/Cargo.toml --target wasm32-wasip2 \
        --target-dir "$CARGO_TARGET_DIR/guests" -p gateway-guest -p http-p3-guest
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    export GATEWAY_GUEST_WASM="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/gateway_guest.wasm"
    export HTTP_P3_GUEST_WASM="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/http_p3_guest.wasm"
    # examples/gateway's JWT check and rate limit; without them gateway.py leaves that row out.
    if [ -f examples/gateway/Cargo.toml ]; then
        say "building examples/gateway's jwt and limit components"
        if cargo build --release --manifest-path examples/gateway/Cargo.toml --target wasm32-wasip2 \
            --target-dir "$CARGO_TARGET_DIR/bench-gateway" -p jwt -p limit; then
            export JWT_WASM="$CARGO_TARGET_DIR/bench-gateway/wasm32-wasip2/release/jwt.wasm"
            export LIMIT_WASM="$CARGO_TARGET_DIR/bench-gateway/wasm32-wasip2/release/limit.wasm"
        else
            say "examples/gateway did not build: measuring without the JWT check + rate limit"
        fi
    fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    say "running the gateway benchmark"
    exec python3 "$repo/bench/gateway.py" "$@"
fi

if [ "$distribution" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--distribution needs root (containerd, crun)"
    say "building skiff (release) and the static server"
    cargo build --release -p skiff
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    mkdir -p "$bench_target"
    gcc -O2 -static -o "$bench_target/hello-server" bench/container/hello-server.c
    export HELLO_SERVER="$bench_target/hello-server"
    say "running the distribution benchmark"
    exec_python "$repo/bench/distribution.py" "$@"
fi

if [ "$shim" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--shim needs root (containerd, runc, crun)"
    say "building skiff and its containerd shim (release) and the static server"
    cargo build --release -p skiff -p containerd-shim-skiff
    export SKIFF="$CARGO_TARGET_DIR/release/skiff"
    export SKIFF_SHIM="$CARGO_TARGET_DIR/release/containerd-shim-skiff-v1"
    mkdir -p "$bench_target"
    gcc -O2 -static -o "$bench_target/hello-server" bench/container/hello-server.c
    export HELLO_SERVER="$bench_target/hello-server"
    say "running the containerd shim benchmark"
    exec_python "$repo/bench/shim.py" "$@"
fi

wasmtime="${WASMTIME:-$tools/bin/wasmtime}"
if ! "$wasmtime" --version 2>/dev/null | grep -qx "wasmtime $wasmtime_version"; then
    [ -n "${WASMTIME:-}" ] && die "WASMTIME=$WASMTIME is not wasmtime $wasmtime_version"
    say "installing wasmtime-cli $wasmtime_version into $tools (a release build of wasmtime: slow)"
    cargo install wasmtime-cli --version "$wasmtime_version" --locked --root "$tools"
fi
export WASMTIME="$wasmtime"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# --- builds ----------------------------------------------------------------------------
say "building skiff (release)"
cargo build --release -p skiff
say "building the sandbox bench (criterion) and the test guests it runs"
cargo bench -p skiff-runtime --bench sandbox --no-run
bash "$repo/scripts/build-guests.sh"
say "building the native baseline and the sha256 guest"
cargo build --release --manifest-path bench/native-hello/Cargo.toml --target-dir "$bench_target"
cargo build --release --manifest-path bench/guests/sha256/Cargo.toml --target wasm32-wasip2 \
    --target-dir "$bench_target"
mkdir -p "$bench_target"
gcc -O2 -static -o "$bench_target/hello-server" bench/container/hello-server.c
say "building the test guests (for the sleeping guest of figure 5 and the WASI 0.3 one of figure 6)"
scripts/build-guests.sh >/dev/null

export SKIFF="$CARGO_TARGET_DIR/release/skiff"
export NATIVE_HELLO="$bench_target/release/native-hello"
export SHA256_WASM="$bench_target/wasm32-wasip2/release/sha256_guest.wasm"
export HTTP_GUEST_WASM="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/http_guest.wasm"
export HTTP_P3_GUEST_WASM="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/http_p3_guest.wasm"
export HELLO_SERVER="$bench_target/hello-server"

# 1,000 concurrent connections on each side, plus files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- run -------------------------------------------------------------------------------
say "running the suite"
exec_python "$repo/bench/bench.py" "$@"
