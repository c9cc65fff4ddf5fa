#!/bin/sh
# Puts skiff's containerd shim on a Kubernetes node, or takes it off again.
#
#   skiff-node-install.sh [--host DIR] [--shim FILE] [--config PATH] [--no-restart] install|uninstall
#
# install:   copies the shim to HOST/usr/local/bin/containerd-shim-skiff-v1, adds the `skiff`
#            runtime to containerd's config between marker comments, restarts containerd.
# uninstall: removes exactly the lines install added (the file is as it was before, byte for
#            byte), removes the shim, restarts containerd.
#
# Both are idempotent, and restart containerd only when they changed something: the installer
# DaemonSet runs `install` every time its Pod starts (node reboot, DaemonSet update), and a
# containerd restart for nothing would be a needless blip on every node.
#
# It runs inside the installer Pod (hostPID, privileged, the host's / mounted at /host), and by
# hand or in tests against any folder laid out like a host. POSIX sh with only the tools busybox
# has, so it runs in a minimal image too.
#
# Options (or environment):
#   --host DIR      (SKIFF_HOST_ROOT, default /host) where the node's root file system is
#   --shim FILE     (SKIFF_SHIM, default /opt/skiff/containerd-shim-skiff-v1) the binary to install
#   --config PATH   (SKIFF_CONTAINERD_CONFIG) containerd's config, as a path on the node, where it
#                   is in none of the usual places
#   --no-restart    (SKIFF_NO_RESTART=1) change the files only; containerd reads them when it
#                   next starts
set -eu

host=${SKIFF_HOST_ROOT:-/host}
shim=${SKIFF_SHIM:-/opt/skiff/containerd-shim-skiff-v1}
config=${SKIFF_CONTAINERD_CONFIG:-}
no_restart=${SKIFF_NO_RESTART:-0}
action=

begin_marker='# BEGIN skiff runtime'
end_marker='# END skiff runtime'
# Said on the BEGIN line when the file did not end with a newline, so that uninstall takes back
# the newline install had to add before the block.
joined_note='(install added the newline before this line)'

log() { echo "skiff-node-install: $*"; }
die() {
  echo "skiff-node-install: error: $*" >&2
  exit 1
}
usage() {
  sed -n '4p' "$0" | sed 's/^# *//'
}

# A value for an option that takes one: "--host DIR" (both words) or "--host=DIR".
need_value() {
  [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
  case $1 in
    install | uninstall)
      [ -z "$action" ] || die "give one of install or uninstall, not both"
      action=$1
      ;;
    --host) need_value "$1" $#; host=$2; shift ;;
    --host=*) host=${1#*=} ;;
    --shim) need_value "$1" $#; shim=$2; shift ;;
    --shim=*) shim=${1#*=} ;;
    --config) need_value "$1" $#; config=$2; shift ;;
    --config=*) config=${1#*=} ;;
    --no-restart) no_restart=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1'; usage: $(usage)" ;;
  esac
  shift
done
[ -n "$action" ] || die "say what to do; usage: $(usage)"
[ -d "$host" ] || die "host root $host is not a folder (mount the node's / there, or pass --host)"
host=${host%/}

bin_dir=$host/usr/local/bin
dest=$bin_dir/containerd-shim-skiff-v1

# Sets `flavor` (containerd, k3s or rke2: which service to restart), `live` (the config file
# containerd reads) and `target` (the file to edit). k3s and rke2 write their containerd's
# config.toml anew at every start from a template, so the template is what must carry the
# runtime; when there is none yet, k3s's documented way is to start it as a copy of the config
# it generated. Their layout is looked for first: such a node may also have an
# /etc/containerd/config.toml that belongs to another, unused containerd.
find_config() {
  if [ -n "$config" ]; then
    flavor=containerd
    live=$host$config
    target=$live
    [ -f "$live" ] || die "no containerd config at $config (under $host), as --config says"
    return
  fi
  for flavor in k3s rke2; do
    dir=$host/var/lib/rancher/$flavor/agent/etc/containerd
    live=$dir/config.toml
    if [ -f "$dir/config-v3.toml.tmpl" ]; then
      target=$dir/config-v3.toml.tmpl
    elif [ -f "$dir/config.toml.tmpl" ]; then
      target=$dir/config.toml.tmpl
    elif [ -f "$live" ]; then
      # k3s with containerd 2 (config version 3) reads config-v3.toml.tmpl.
      if [ "$(config_version "$live")" = 3 ]; then
        target=$dir/config-v3.toml.tmpl
      else
        target=$dir/config.toml.tmpl
      fi
    else
      continue
    fi
    return
  done
  flavor=containerd
  live=$host/etc/containerd/config.toml
  target=$live
  [ -f "$live" ] || die "no containerd config found under $host: looked for" \
    "/var/lib/rancher/k3s/agent/etc/containerd/config.toml (k3s)," \
    "/var/lib/rancher/rke2/agent/etc/containerd/config.toml (rke2) and" \
    "/etc/containerd/config.toml. If containerd runs with its built-in defaults, write them" \
    "out first on the node ('containerd config default > /etc/containerd/config.toml');" \
    "if the config is elsewhere, pass --config PATH."
}

# The top-level `version = N` of a containerd config (empty when there is none). Top-level keys
# come before the first [table].
config_version() {
  awk '
    /^[[:space:]]*\[/ { exit }
    /^[[:space:]]*version[[:space:]]*=/ {
      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[^0-9].*/, ""); print; exit
    }
  ' "$1"
}

# The block install adds for a config of version $1: the same table the docs tell operators to
# add by hand. The table's name is where the CRI plugin keeps its runtimes, which containerd 2
# (version 3) moved.
runtime_block() {
  case $1 in
    2) table='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff' ;;
    3) table='plugins."io.containerd.cri.v1.runtime".containerd.runtimes.skiff' ;;
    *) die "$vfile has ${1:+version = $1}${1:-no version line}: skiff's installer knows config" \
      "versions 2 (containerd 1.x) and 3 (containerd 2.x). A version 1 file is the layout of" \
      "containerd 1.4 and older; convert it to version 2 (compare 'containerd config default')" \
      "or add the runtime by hand, as docs/kubernetes.md shows." ;;
  esac
  printf '%s\n' \
    "$begin_marker$2" \
    '# Added by skiff-node-install.sh; its `uninstall` removes these lines again.' \
    "[$table]" \
    '  runtime_type = "io.containerd.skiff.v1"' \
    "$end_marker"
}

# How many lines of $2 start with $1.
count_lines() {
  grep -c "^$1" "$2" || true
}

# Writes file $1 without the skiff block to stdout: the file as it was before install. A file
# without a block is copied as it is (awk would add a missing final newline).
strip_block() {
  if [ "$(count_lines "$begin_marker" "$1")" = 0 ]; then
    cat "$1"
    return
  fi
  awk -v begin="$begin_marker" -v end="$end_marker" '
    index($0, begin) == 1 { inside = 1; if (index($0, "newline")) joinat = n; next }
    inside && index($0, end) == 1 { inside = 0; next }
    inside { next }
    { lines[++n] = $0 }
    END {
      for (i = 1; i <= n; i++)
        if (i == n && joinat == n) printf "%s", lines[i]; else print lines[i]
    }
  ' "$1"
}

# A block cut short (a BEGIN without its END, or two blocks) would make strip_block drop lines
# that are not ours: refuse to touch such a file.
check_block() {
  begins=$(count_lines "$begin_marker" "$1")
  ends=$(count_lines "$end_marker" "$1")
  if [ "$begins" != "$ends" ] || [ "$begins" -gt 1 ]; then
    die "$1 has $begins '$begin_marker' and $ends '$end_marker' lines, where one of each (or" \
      "none) was expected; fix it by hand (the file as it was before install is" \
      "$1.skiff-backup, if present) and run again"
  fi
}

# Replaces file $2 with file $1 (in the same folder), keeping $2's mode and owner, in one
# rename, so containerd never reads a half-written config.
replace_file() {
  tmp=$(mktemp "$2.skiff-XXXXXX")
  cp -p "$2" "$tmp"
  cat "$1" >"$tmp"
  mv -f "$tmp" "$2"
}

restart_containerd() {
  if [ "$no_restart" = 1 ]; then
    log "not restarting containerd (--no-restart): it reads the change when it next starts"
    return
  fi
  case $flavor in
    k3s) services='k3s k3s-agent' ;;
    rke2) services='rke2-server rke2-agent' ;;
    *) services=containerd ;;
  esac
  command -v nsenter >/dev/null || die "nsenter is not installed here, so containerd cannot be" \
    "restarted from this container; restart $services on the node by hand"
  # Running Pods survive: each container's shim is its own process, which containerd finds
  # again when it is back.
  for svc in $services; do
    if nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl is-active --quiet "$svc"; then
      log "restarting $svc on the node"
      nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart "$svc" ||
        die "'systemctl restart $svc' failed on the node; see 'journalctl -u $svc' there"
      return
    fi
  done
  die "none of the services '$services' is active on the node (is PID 1 systemd, and does the" \
    "Pod have hostPID?); restart containerd by hand for the change to take effect"
}

install() {
  [ -f "$shim" ] || die "no shim binary at $shim (pass --shim FILE)"
  find_config
  # Everything that can refuse is checked before anything changes. The version is read from
  # the config containerd reads: a k3s template may be only `{{ template "base" . }}` and
  # additions.
  vfile=$live
  [ -f "$vfile" ] || vfile=$target
  version=$(config_version "$vfile")
  runtime_block "$version" '' >/dev/null
  base=$target
  [ -f "$base" ] || base=$live
  check_block "$base"
  if awk -v begin="$begin_marker" -v end="$end_marker" '
      index($0, begin) == 1 { inside = 1; next }
      index($0, end) == 1 { inside = 0; next }
      !inside && /runtimes\.("skiff"|skiff)[].]/ { found = 1 }
      END { exit !found }' "$base"; then
    die "$base already defines a 'skiff' runtime outside the skiff-node-install block;" \
      "a second definition would stop containerd from starting. Remove yours, or keep it and" \
      "do not run this installer"
  fi
  changed=0

  mkdir -p "$bin_dir"
  if cmp -s "$shim" "$dest"; then
    log "$dest is already this shim"
  else
    # A new file renamed over the old one: a shim still running from the old file keeps it, and
    # writing into a running binary would fail ("text file busy") or corrupt it.
    tmp=$(mktemp "$bin_dir/.containerd-shim-skiff-v1.XXXXXX")
    cp "$shim" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$dest"
    log "installed $dest"
    changed=1
  fi

  if [ ! -f "$target" ]; then
    cp -p "$live" "$target"
    # Remembered so that uninstall removes the template again: k3s then generates its
    # default config, as before install.
    : >"$target.skiff-created"
    log "created $target from $live (k3s renders containerd's config from it at every start)"
  fi

  before=$(mktemp)
  after=$(mktemp)
  strip_block "$target" >"$before"
  # The backup is the file before install; a file without the block is that file now.
  if [ ! -f "$target.skiff-backup" ] || [ "$(count_lines "$begin_marker" "$target")" = 0 ]; then
    cp "$before" "$target.skiff-backup"
  fi
  {
    cat "$before"
    # A last line without its newline would run into the marker.
    if [ -s "$before" ] && [ "$(tail -c 1 "$before" | wc -l)" -eq 0 ]; then
      echo
      runtime_block "$version" " $joined_note"
    else
      runtime_block "$version" ''
    fi
  } >"$after"
  if cmp -s "$after" "$target"; then
    log "$target already has the skiff runtime"
  else
    replace_file "$after" "$target"
    log "added the skiff runtime to $target (the file as it was: $target.skiff-backup)"
    changed=1
  fi
  rm -f "$before" "$after"

  if [ "$changed" = 1 ]; then
    restart_containerd
  fi
  log "done: Pods with runtimeClassName skiff can run on this node"
}

uninstall() {
  find_config
  changed=0
  if [ -f "$target" ] && [ "$(count_lines "$begin_marker" "$target")" != 0 ]; then
    check_block "$target"
    stripped=$(mktemp)
    strip_block "$target" >"$stripped"
    replace_file "$stripped" "$target"
    rm -f "$stripped"
    log "removed the skiff runtime from $target"
    changed=1
  else
    log "$target has no skiff runtime block"
  fi
  if [ -f "$target.skiff-backup" ]; then
    if cmp -s "$target" "$target.skiff-backup"; then
      rm -f "$target.skiff-backup"
      if [ -f "$target.skiff-created" ]; then
        rm -f "$target" "$target.skiff-created"
        log "removed $target, which install had created"
      fi
    else
      # Someone edited the file after install: what they wrote stays, and so does the copy.
      log "$target differs from $target.skiff-backup (edited since install); both are kept"
    fi
  fi

  if [ -e "$dest" ]; then
    rm -f "$dest"
    log "removed $dest"
    changed=1
  fi
  # The compiled code the shims kept (their default folder; containerd's environment may
  # have named another with SKIFF_SHIM_CACHE_DIR, which stays).
  if [ -d "$host/var/lib/skiff/shim-cache" ]; then
    rm -rf "$host/var/lib/skiff/shim-cache"
    rmdir "$host/var/lib/skiff" 2>/dev/null || true
    log "removed the shim's compiled-code cache, /var/lib/skiff/shim-cache"
  fi
  if [ "$changed" = 1 ]; then
    restart_containerd
  fi
  log "done: skiff is off this node"
}

$action
