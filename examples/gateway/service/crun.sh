#!/usr/bin/env bash
# Runs `crun ARGS...`. On a host with the hybrid cgroup layout (cgroup v1 controllers plus a
# cgroup2 mount at /sys/fs/cgroup/unified), which crun refuses ("cgroups in hybrid mode not
# supported"), it runs crun in a private mount namespace that hides the cgroup2 mount, as
# bench/run.sh does. crun keeps its state under /run/crun, which both namespaces see, so a
# container started this way is killed and deleted this way too.
set -euo pipefail
if [ "$(id -u)" = 0 ] && mountpoint -q /sys/fs/cgroup/unified 2>/dev/null \
    && [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ]; then
    exec unshare -m --propagation private sh -c \
        'umount /sys/fs/cgroup/unified && mount -t tmpfs -o size=1m scratch /sys/fs/cgroup/unified && exec crun "$@"' \
        crun "$@"
fi
exec crun "$@"
