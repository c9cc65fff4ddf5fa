#!/usr/bin/env bash
# Builds skiff as users install it: static (musl) binaries for x86_64 and aarch64 Linux, made
# with the `dist` profile (stripped, LTO), cross-compiled with Debian's toolchains; smoke-tests
# each (the aarch64 one under qemu-user): `--version`, `run` of a command, `serve` answering
# one request; and, with --image, puts them in a minimal OCI image (`FROM scratch`: the binary,
# CA certificates, a data folder) made without a container engine (umoci, skopeo).
#
#     scripts/release.sh [--arch x86_64|aarch64|all] [--image REF] [--oci-dir DIR] [--no-smoke]
#                        [--prebuilt]
#
# --prebuilt skips the builds and uses the binaries already in the target dir (to smoke-test
# them again or to make the image from them).
#
# Output: target/<arch>-unknown-linux-musl/dist/skiff, and with --image an OCI layout in
# --oci-dir (default target/release-image): an image per architecture (tags `amd64`, `arm64`)
# and an image index over them (tag `multi`), which is pushed to REF, one multi-architecture
# reference (`localhost:5000/skiff/server:v1`; add `--dest-tls-verify=false` through
# SKOPEO_FLAGS for a plain-HTTP registry). deploy/kubernetes/cluster runs this image.
# Takes 15-25 minutes per architecture on 2 cores (one codegen unit, fat LTO).
# Needs root for apt-get (musl-tools, gcc-aarch64-linux-gnu, qemu-user-static, umoci, skopeo).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

arches=(x86_64 aarch64)
image=""
oci_dir="$target_dir/release-image"
smoke=1
prebuilt=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch)
            case "$2" in
                all) arches=(x86_64 aarch64) ;;
                x86_64 | aarch64) arches=("$2") ;;
                *) echo "release.sh: unknown --arch '$2' (x86_64, aarch64, all)" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --oci-dir) oci_dir="$2"; shift 2 ;;
        --no-smoke) smoke=0; shift ;;
        --prebuilt) prebuilt=1; shift ;;
        *) echo "release.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

need=()
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ -n "$image" ]; then
    command -v umoci >/dev/null || need+=(umoci)
    command -v skopeo >/dev/null || need+=(skopeo)
    [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
fi
if [ ${#need[@]} -gt 0 ]; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

binary() { echo "$target_dir/$1-unknown-linux-musl/dist/skiff"; }

build() {
    local arch="$1" triple="$1-unknown-linux-musl"
    rustup target add "$triple" >/dev/null
    local started=$SECONDS
    case "$arch" in
        x86_64)
            # Rust links musl's own start files (self-contained); C dependencies (ring) are
            # compiled against musl's headers.
            CC_x86_64_unknown_linux_musl=musl-gcc \
                cargo build --locked --profile dist -p skiff --target "$triple" ;;
        aarch64)
            # Debian's aarch64 cross gcc compiles the C dependencies and drives the link;
            # Rust brings musl itself.
            CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
            AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
                cargo build --locked --profile dist -p skiff --target "$triple" ;;
    esac
    local bin
    bin="$(binary "$arch")"
    echo "built $bin: $(stat -c %s "$bin") bytes in $((SECONDS - started)) s" >&2
    if readelf -l "$bin" | grep -q "program interpreter"; then
        echo "release.sh: $bin is not static (it names a program interpreter)" >&2
        exit 1
    fi
}

# `--version`, `run` of a command, `serve` answering one request: the binary starts, compiles
# for its own CPU, and serves, on its architecture (the aarch64 one under qemu-user).
smoke_test() {
    local arch="$1" bin runner=()
    bin="$(binary "$arch")"
    if [ "$arch" != "$(uname -m)" ]; then
        runner=("qemu-$arch-static")
    fi
    local guests="$target_dir/guests/wasm32-wasip2/release"
    [ -f "$guests/cli-guest.wasm" ] || scripts/build-guests.sh >/dev/null
    local scratch
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' RETURN
    local run=("${runner[@]}" "$bin" --cache-dir "$scratch/cache" --data-dir "$scratch/data")
    if [ ${#runner[@]} -gt 0 ]; then
        # qemu-user keeps its own table of every page the guest maps, reserved or not: the
        # pooling allocator's address space for the default 1000 instances (terabytes, free
        # on a real machine) costs it tens of GiB. A few instances are enough here.
        run+=(--max-instances 4)
    fi

    "${run[@]}" --version
    local said
    said="$("${run[@]}" run --env A=1 --env B=2 "$guests/cli-guest.wasm" env-count)"
    [ "$said" = "2" ] || { echo "release.sh: $arch run said '$said'" >&2; exit 1; }

    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${run[@]}" serve --listen "127.0.0.1:$port" examples/hello/hello.wasm >"$scratch/serve.log" 2>&1 &
    local pid=$!
    local answer=""
    for _ in $(seq 1 600); do
        answer="$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null || true)"
        [ -n "$answer" ] && break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$answer" != "hello" ]; then
        echo "release.sh: $arch serve answered '$answer'; its log:" >&2
        cat "$scratch/serve.log" >&2
        exit 1
    fi
    echo "smoke test passed on $arch${runner:+ (under ${runner[0]})}" >&2
}

# A `FROM scratch` image per architecture (the binary as /usr/local/bin/skiff, Debian's CA
# bundle for registries and OTLP over HTTPS, /var/lib/skiff owned by the non-root user it runs
# as), in one OCI index.
make_image() {
    rm -rf "$oci_dir"
    umoci init --layout "$oci_dir"
    local arch oci_arch rootfs
    for arch in "${arches[@]}"; do
        case "$arch" in x86_64) oci_arch=amd64 ;; aarch64) oci_arch=arm64 ;; esac
        umoci new --image "$oci_dir:$oci_arch"
        umoci config --image "$oci_dir:$oci_arch" --architecture "$oci_arch" --os linux \
            --config.user 65532:65532 --config.entrypoint /usr/local/bin/skiff \
            --config.cmd server --config.cmd --help \
            --config.env SKIFF_DATA_DIR=/var/lib/skiff --config.env SKIFF_CACHE_DIR=/var/lib/skiff/cache
        rootfs="$(mktemp -d)"
        install -D -m 0755 "$(binary "$arch")" "$rootfs/rootfs/usr/local/bin/skiff"
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/rootfs/etc/ssl/certs/ca-certificates.crt"
        install -d -m 0755 -o 65532 -g 65532 "$rootfs/rootfs/var/lib/skiff"
        umoci insert --image "$oci_dir:$oci_arch" "$rootfs/rootfs" /
        rm -rf "$rootfs"
    done
    # One image index over the architectures, tagged `multi`: a single reference that amd64 and
    # arm64 nodes alike resolve to their own image.
    local oci_arches=()
    for arch in "${arches[@]}"; do
        case "$arch" in x86_64) oci_arches+=(amd64) ;; aarch64) oci_arches+=(arm64) ;; esac
    done
    python3 - "$oci_dir" "${oci_arches[@]}" <<'PY'
import hashlib
import json
import os
import sys

layout, arches = sys.argv[1], sys.argv[2:]
index_path = os.path.join(layout, "index.json")
with open(index_path) as f:
    index = json.load(f)
tagged = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
entries = []
for arch in arches:
    entry = {key: value for key, value in tagged[arch].items() if key != "annotations"}
    entry["platform"] = {"architecture": arch, "os": "linux"}
    entries.append(entry)
media_type = "application/vnd.oci.image.index.v1+json"
blob = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode()
digest = hashlib.sha256(blob).hexdigest()
with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
    f.write(blob)
index["manifests"].append({
    "mediaType": media_type,
    "digest": f"sha256:{digest}",
    "size": len(blob),
    "annotations": {"org.opencontainers.image.ref.name": "multi"},
})
with open(index_path, "w") as f:
    json.dump(index, f)
PY
    echo "OCI layout: $oci_dir (tags: $(umoci ls --layout "$oci_dir" | tr '\n' ' '))" >&2
    if [ -n "$image" ]; then
        # shellcheck disable=SC2086 # SKOPEO_FLAGS is a list of flags
        skopeo copy --all ${SKOPEO_FLAGS:-} "oci:$oci_dir:multi" "docker://$image"
        # What a node's containerd will see: the index, with a manifest for each platform.
        local inspect_flags="${SKOPEO_FLAGS:-}" platforms expected
        inspect_flags="${inspect_flags//--dest-/--}"
        # shellcheck disable=SC2086 # a list of flags
        platforms="$(skopeo inspect --raw $inspect_flags "docker://$image" | python3 -c \
            'import json, sys; print(*sorted(m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"]))')"
        expected="$(printf '%s\n' "${oci_arches[@]}" | sort | xargs)"
        if [ "$platforms" != "$expected" ]; then
            echo "release.sh: $image lists platforms '$platforms', not '$expected'" >&2
            exit 1
        fi
        echo "pushed $image for: $platforms" >&2
    fi
}

for arch in "${arches[@]}"; do
    if [ "$prebuilt" = 1 ]; then
        [ -x "$(binary "$arch")" ] || { echo "release.sh: --prebuilt, but no $(binary "$arch")" >&2; exit 1; }
    else
        build "$arch"
    fi
    [ "$smoke" = 1 ] && smoke_test "$arch"
done
if [ -n "$image" ]; then
    make_image
fi
