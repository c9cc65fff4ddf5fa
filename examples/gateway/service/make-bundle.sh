#!/usr/bin/env bash
# Builds the OCI bundle of the service behind the gateway (as bench/container/make-bundle.sh
# does for the container baseline): a rootfs holding one static binary (hello-server.c, gcc -O2
# -static) and a config.json from `crun spec`, with the network namespace removed (host
# network: the server listens on the host's 127.0.0.1:PORT) and no terminal.
#
#     examples/gateway/service/make-bundle.sh BUNDLE_DIR PORT
#
# Needs gcc with a static libc (Debian: gcc, libc6-dev), crun and python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bundle="$1"
port="$2"
rm -rf "$bundle"
mkdir -p "$bundle/rootfs"
gcc -O2 -static -o "$bundle/rootfs/hello-server" "$here/hello-server.c"
(cd "$bundle" && crun spec)
python3 - "$bundle/config.json" "$port" <<'PY'
import json, sys
path, port = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/hello-server", port]
spec["root"]["readonly"] = True
spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
json.dump(spec, open(path, "w"), indent=2)
PY
