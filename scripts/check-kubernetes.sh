#!/usr/bin/env bash
# Checks the Kubernetes side of skiff (deploy/kubernetes), offline:
#  1. every kustomization renders with `kubectl kustomize` (Debian 12's kubectl is 1.20, whose
#     kustomize is old: the files keep within what it takes);
#     deploy/kubernetes/cluster/example (the shared hosts with the bundled Redis) makes its
#     Secrets from files that its user creates: it renders from a copy of deploy/ where the
#     commands its kustomization.yaml lists made them;
#  2. every rendered object validates against the API schemas of a current Kubernetes version
#     (PyPI kubernetes-validate, --strict: no field the API does not know), and the objects
#     agree with each other, with the images' Dockerfiles and with the docs
#     (scripts/kubernetes_objects.py): for the pod-per-app files, and for the shared hosts;
#  3. the node installer script, for real, against fake node roots: containerd 1.x (config
#     version 2, parsed back by the real containerd), containerd 2.x (version 3), k3s; twice
#     (once changes, twice changes nothing), then uninstall (byte for byte as before); under
#     dash and under busybox alone, as in a minimal installer image.
# Prints a line per check; exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest Kubernetes whose schemas this kubernetes-validate release ships.
KUBERNETES_VERSION=1.37.0
KUBERNETES_VALIDATE=1.37.0

for tool in kubectl:kubernetes-client containerd:containerd busybox:busybox python3:python3-venv openssl:openssl; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "check-kubernetes: ${tool%%:*} is not installed (Debian: apt-get install ${tool#*:})" >&2
    exit 1
  fi
done

failures=0
checks=0
ok() {
  checks=$((checks + 1))
  echo "ok: $*"
}
fail() {
  checks=$((checks + 1))
  failures=$((failures + 1))
  echo "FAIL: $*"
}
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# kubernetes-validate in a venv of its own (Debian's pip refuses to install into the system
# Python), made once and kept with the build output.
venv=${CARGO_TARGET_DIR:-target}/kubernetes-validate-venv
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
  echo "check-kubernetes: installing kubernetes-validate $KUBERNETES_VALIDATE into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >"$tmp/venv.log" 2>&1; then
    cat "$tmp/venv.log" >&2
    echo "check-kubernetes: could not make a Python venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE"; then
    echo "check-kubernetes: pip could not install kubernetes-validate $KUBERNETES_VALIDATE from PyPI" >&2
    exit 1
  fi
fi

# 1. Render, from a copy of deploy/. The shared hosts' example makes its Secrets from files
# (git-ignored, so none is checked in): the copy gets them from the very commands its
# kustomization.yaml tells its user to run (lines `#   ...`, but `kubectl apply`), in place of
# any that someone made in this work tree.
src=$tmp/src
mkdir -p "$src"
cp -R deploy "$src/"
example=$src/deploy/kubernetes/cluster/example
rm -f "$example/admin-token" "$example/redis-password" "$example/redis-url" "$example/tls.crt" "$example/tls.key"
commands=$(sed -n 's/^#   //p' "$example/kustomization.yaml" | grep -v '^kubectl ')
if (cd "$example" && sh -ec "$commands") >"$tmp/example.log" 2>&1; then
  ok "deploy/kubernetes/cluster/example: the commands in its kustomization.yaml make its Secrets' files"
else
  sed 's/^/    | /' "$tmp/example.log"
  fail "deploy/kubernetes/cluster/example: the commands in its kustomization.yaml make its Secrets' files"
fi

# kubectl 1.21 and later warn about `bases`, which kubectl 1.20 needs (it takes folders nowhere
# else), and about `patchesStrategicMerge`, which is what kubectl 1.20 has (no `patches`): those
# warnings are expected, anything else on stderr is shown.
mkdir -p "$tmp/rendered"
renders=()
while IFS= read -r dir; do
  # deploy/kubernetes/examples/hello renders to examples-hello.yaml, the top to kubernetes.yaml.
  name=${dir#deploy/kubernetes}
  name=${name#/}
  name=${name:-kubernetes}
  out=$tmp/rendered/${name//\//-}.yaml
  if kubectl kustomize "$src/$dir" >"$out" 2>"$tmp/kustomize.err"; then
    ok "kubectl kustomize $dir"
    renders+=("$out")
  else
    fail "kubectl kustomize $dir"
  fi
  grep -v -e "'bases' is deprecated" -e "'patchesStrategicMerge' is deprecated" "$tmp/kustomize.err" >&2 || true
done < <(cd "$src" && find deploy/kubernetes -name kustomization.yaml -exec dirname {} \; | sort)

# 2. Validate, then check what the schemas cannot: that the objects fit together.
for out in "${renders[@]}"; do
  name=$(basename "$out")
  if ! "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out" \
    >"$tmp/validate.out" 2>&1; then
    cat "$tmp/validate.out"
    fail "$name: valid for Kubernetes $KUBERNETES_VERSION"
  # A kind it has no schema for is only a warning to it, but would be an object no cluster
  # of that version accepts.
  elif grep . "$tmp/validate.out"; then
    fail "$name: every object has a Kubernetes $KUBERNETES_VERSION schema"
  else
    ok "$name: valid for Kubernetes $KUBERNETES_VERSION (strict)"
  fi
done
if "$venv/bin/python" scripts/kubernetes_objects.py "$tmp/rendered" pods; then
  ok "pod per app: the rendered objects agree with each other, the installer image and the docs"
else
  fail "pod per app: the rendered objects agree with each other, the installer image and the docs"
fi
if "$venv/bin/python" scripts/kubernetes_objects.py "$tmp/rendered" cluster; then
  ok "shared hosts: the rendered objects agree with each other, the server image and the docs"
else
  fail "shared hosts: the rendered objects agree with each other, the server image and the docs"
fi

# 3. The installer script against fake node roots.
script=deploy/kubernetes/installer/skiff-node-install.sh
printf 'not really a shim\n' >"$tmp/shim"

# busybox alone: a folder of its applets, and nothing else on PATH but the fake nsenter
# (before them, as busybox has an nsenter of its own).
mkdir -p "$tmp/busybox" "$tmp/fake"
for applet in $(busybox --list); do
  ln -s "$(command -v busybox)" "$tmp/busybox/$applet"
done
# The fake nsenter runs `systemctl is-active SERVICE` as "active" for the one service in
# FAKE_ACTIVE, and records every restart in FAKE_LOG.
cat >"$tmp/fake/nsenter" <<'EOF'
#!/bin/sh
while [ "$1" != -- ]; do shift; done
shift
case "$1 $2" in
  "systemctl is-active") [ "$4" = "$FAKE_ACTIVE" ] ;;
  "systemctl restart") echo "restart $3" >>"$FAKE_LOG" ;;
  *) echo "fake nsenter: unexpected $*" >&2; exit 1 ;;
esac
EOF
chmod +x "$tmp/fake/nsenter"

# run_installer SHELL HOST ARGS...: the script, with its output kept in $tmp/out and shown
# when it fails.
busybox=$(command -v busybox)
run_installer() {
  local shell=$1 host=$2 status=0
  shift 2
  if [ "$shell" = busybox ]; then
    env PATH="$tmp/fake:$tmp/busybox" "$busybox" sh "$script" --host "$host" --shim "$tmp/shim" "$@"
  else
    env PATH="$tmp/fake:$PATH" dash "$script" --host "$host" --shim "$tmp/shim" "$@"
  fi >"$tmp/out" 2>&1 || status=$?
  [ "$status" = 0 ] || sed 's/^/    | /' "$tmp/out"
  return "$status"
}

# The checks after `install` (twice) common to every layout: $1 the shell, $2 the fake root,
# $3 the edited file, $4 its copy after the first install.
check_installed() {
  local shell=$1 host=$2 file=$3 first=$4
  local shim=$host/usr/local/bin/containerd-shim-skiff-v1
  check "$shell: the runtime block is in ${file#"$host"} exactly once" \
    test "$(grep -c '^# BEGIN skiff runtime' "$file")" = 1 -a "$(grep -c 'runtimes\.skiff]' "$file")" = 1
  check "$shell: the second install changed nothing" cmp -s "$first" "$file"
  check "$shell: the shim is in /usr/local/bin with mode 0755" \
    test "$(stat -c %a "$shim" 2>/dev/null)" = 755
  check "$shell: the shim is the given binary" cmp -s "$tmp/shim" "$shim"
}

# The checks after `uninstall`: the file as it was and nothing of ours left.
check_uninstalled() {
  local shell=$1 host=$2 file=$3 original=$4
  check "$shell: uninstall left ${file#"$host"} byte for byte as it was" cmp -s "$original" "$file"
  check "$shell: uninstall removed the shim" test ! -e "$host/usr/local/bin/containerd-shim-skiff-v1"
  check "$shell: uninstall removed the shim's compiled-code cache" test ! -e "$host/var/lib/skiff"
  check "$shell: uninstall left no backup or temporary file" \
    test -z "$(find "$host" -name '*skiff*' -print)"
}

# check_refused SHELL HOST WHAT PATTERN: install must fail, with an error matching PATTERN, and
# leave no shim behind.
check_refused() {
  local shell=$1 host=$2 what=$3 pattern=$4
  if run_installer "$shell" "$host" --no-restart install; then
    fail "$shell: install $what fails"
  else
    check "$shell: install $what fails, saying so" grep -q "error: $pattern" "$tmp/out"
  fi
  check "$shell: ... and installs no shim" test ! -e "$host/usr/local/bin/containerd-shim-skiff-v1"
}

# The value at a TOML key path, read by Python's own TOML parser: $1 the file, $2 the path.
toml_get() {
  python3 -c '
import sys, tomllib
value = tomllib.load(open(sys.argv[1], "rb"))
for key in sys.argv[2].split("/"):
    value = value[key]
print(value)' "$1" "$2" 2>/dev/null
}

for shell in dash busybox; do
  # (a) containerd 1.x: its own default config (version 2), parsed back by containerd itself.
  host=$tmp/$shell-containerd
  file=$host/etc/containerd/config.toml
  mkdir -p "$(dirname "$file")"
  containerd config default >"$file"
  cp "$file" "$tmp/original"
  check "$shell: install on containerd 1.x (config version 2)" run_installer "$shell" "$host" --no-restart install
  cp "$file" "$tmp/first" || true
  check "$shell: install again" run_installer "$shell" "$host" --no-restart install
  check_installed "$shell" "$host" "$file" "$tmp/first"
  if containerd --config "$file" config dump >"$tmp/dump.toml" 2>"$tmp/dump.err"; then
    ok "$shell: containerd parses the config"
    runtime='plugins/io.containerd.grpc.v1.cri/containerd/runtimes/skiff'
    check "$shell: containerd sees runtime skiff with runtime_type io.containerd.skiff.v1" \
      test "$(toml_get "$tmp/dump.toml" "$runtime/runtime_type")" = io.containerd.skiff.v1
    check "$shell: containerd still has its runc runtime" \
      test "$(toml_get "$tmp/dump.toml" 'plugins/io.containerd.grpc.v1.cri/containerd/runtimes/runc/runtime_type')" = io.containerd.runc.v2
  else
    cat "$tmp/dump.err"
    fail "$shell: containerd parses the config"
  fi
  # What the shims leave on a node: compiled code in their default cache folder.
  mkdir -p "$host/var/lib/skiff/shim-cache" && : >"$host/var/lib/skiff/shim-cache/0123.component.cwasm"
  check "$shell: uninstall" run_installer "$shell" "$host" --no-restart uninstall
  check_uninstalled "$shell" "$host" "$file" "$tmp/original"

  # (b) containerd 2.x (config version 3), in a file that does not end with a newline.
  host=$tmp/$shell-containerd2
  file=$host/etc/containerd/config.toml
  mkdir -p "$(dirname "$file")"
  printf '%s\n' 'version = 3' '' '[plugins."io.containerd.cri.v1.runtime".containerd]' \
    '  default_runtime_name = "runc"' '' \
    '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]' \
    '  runtime_type = "io.containerd.runc.v2"' >"$file"
  printf '[plugins."io.containerd.cri.v1.images"]\n  snapshotter = "overlayfs"' >>"$file"
  cp "$file" "$tmp/original"
  check "$shell: install on containerd 2.x (config version 3)" run_installer "$shell" "$host" --no-restart install
  cp "$file" "$tmp/first" || true
  check "$shell: install again" run_installer "$shell" "$host" --no-restart install
  check_installed "$shell" "$host" "$file" "$tmp/first"
  check "$shell: the version 3 table holds runtime skiff (io.containerd.cri.v1.runtime)" test \
    "$(toml_get "$file" 'plugins/io.containerd.cri.v1.runtime/containerd/runtimes/skiff/runtime_type')" = io.containerd.skiff.v1
  check "$shell: the last line before the block is whole" \
    test "$(toml_get "$file" 'plugins/io.containerd.cri.v1.images/snapshotter')" = overlayfs
  check "$shell: uninstall" run_installer "$shell" "$host" --no-restart uninstall
  check_uninstalled "$shell" "$host" "$file" "$tmp/original"

  # (c) k3s: the runtime goes into config.toml.tmpl (made from the generated config.toml), and
  # k3s is what restarts; restarted only when something changed.
  host=$tmp/$shell-k3s
  dir=$host/var/lib/rancher/k3s/agent/etc/containerd
  mkdir -p "$dir"
  printf '%s\n' '# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.' 'version = 2' '' \
    '[plugins."io.containerd.grpc.v1.cri"]' '  stream_server_address = "127.0.0.1"' '' \
    '[plugins."io.containerd.grpc.v1.cri".containerd]' '  snapshotter = "overlayfs"' '' \
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]' \
    '  runtime_type = "io.containerd.runc.v2"' >"$dir/config.toml"
  cp "$dir/config.toml" "$tmp/generated"
  export FAKE_ACTIVE=k3s FAKE_LOG=$tmp/$shell-restarts
  : >"$FAKE_LOG"
  check "$shell: install on k3s" run_installer "$shell" "$host" install
  check "$shell: k3s restarted once" test "$(cat "$FAKE_LOG")" = "restart k3s"
  cp "$dir/config.toml.tmpl" "$tmp/first" || true
  check "$shell: install again" run_installer "$shell" "$host" install
  check "$shell: k3s not restarted when nothing changed" test "$(cat "$FAKE_LOG")" = "restart k3s"
  check_installed "$shell" "$host" "$dir/config.toml.tmpl" "$tmp/first"
  check "$shell: config.toml.tmpl is the generated config and the block" \
    cmp -s "$tmp/generated" <(grep -v -e '^# BEGIN skiff' -e '^# END skiff' -e '^# Added by' \
      -e 'runtimes.skiff]' -e 'runtime_type = "io.containerd.skiff' "$dir/config.toml.tmpl")
  check "$shell: the config k3s generated is left alone" cmp -s "$tmp/generated" "$dir/config.toml"
  check "$shell: uninstall" run_installer "$shell" "$host" uninstall
  check "$shell: k3s restarted after uninstall" test "$(sed -n 2p "$FAKE_LOG")" = "restart k3s"
  check "$shell: uninstall removed the config.toml.tmpl it had made" test ! -e "$dir/config.toml.tmpl"
  check_uninstalled "$shell" "$host" "$dir/config.toml" "$tmp/generated"

  # (d) no containerd config at all.
  host=$tmp/$shell-empty
  mkdir -p "$host"
  check_refused "$shell" "$host" "without a containerd config" 'no containerd config found under'

  # (e) A version 1 config (no `version` line), whose layout the block would not fit.
  host=$tmp/$shell-v1
  mkdir -p "$host/etc/containerd"
  printf '[plugins.cri]\n  sandbox_image = "pause"\n' >"$host/etc/containerd/config.toml"
  check_refused "$shell" "$host" "on a version 1 config" \
    '.*has no version line: .*versions 2 (containerd 1.x) and 3'

  # (f) A skiff runtime the operator wrote by hand: a second one would break containerd.
  host=$tmp/$shell-own
  file=$host/etc/containerd/config.toml
  mkdir -p "$(dirname "$file")"
  printf '%s\n' 'version = 2' '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff]' \
    '  runtime_type = "io.containerd.skiff.v1"' >"$file"
  cp "$file" "$tmp/original"
  check_refused "$shell" "$host" "where the config already has a skiff runtime" \
    ".*already defines a 'skiff' runtime"
  check "$shell: ... and leaves the config as it was" cmp -s "$tmp/original" "$file"
done

echo "check-kubernetes: $((checks - failures)) passed, $failures failed"
[ "$failures" = 0 ]
