#!/usr/bin/env python3
"""Cluster: 3 `skiff server` hosts sharing one Redis, and a model of 100 hosts and 100,000 apps.

    python3 bench/cluster.py [--quick] [--deploys N] [--apps N] [--reps N] [--duration S]
                             [--idle S] [--no-write] [--note TEXT]
    bench/run.sh --cluster [--quick] [...]           # the same, after installing and building

Run it after `cargo build --release -p skiff` and a build of the http test guest (or through
bench/run.sh). Python 3 standard library only, plus `redis-server`, `haproxy`, `wrk` and
`taskset` (bench/run.sh installs them). It talks to Redis itself (a few lines of RESP), so it
needs no redis-cli. Only 127.0.0.x addresses are used.

One `redis-server` (no persistence) and three hosts, `skiff server --cluster redis://... --host-id
host-N`, each on its own loopback address (127.0.0.2-4: data plane and management API), each
with its own data folder and so its own code cache, as separate machines have; `--drain-delay
1s` and the default `--cluster-resync` (10 s). The hosts share CPU 0; Redis, HAProxy, wrk and
this client share CPU 1. It measures:

  1. deploy to served everywhere: the app `web` (the http test guest, which answers
     `GET /env/VERSION` with its `VERSION` variable) deployed again and again through host 1's
     management API (`PUT /v1/apps/web`, a gzipped bundle), alternating two kinds of deploy:
       - config: a new `VERSION` in skiff.toml, the same component (every host has its code
         compiled already: what is measured is the change reaching the hosts);
       - code: a new `VERSION` and new component bytes (a custom section naming the version is
         appended, so the code hash is new and every host compiles it).
     While the deploy call runs, and after, this client polls `GET /env/VERSION` on all three
     data planes (keep-alive, one after the other, every millisecond) until each answers the
     new version; it records when the call started and returned and when each host first
     answered new. Then it polls `GET /v1/apps/web` on host 1 until `cluster.hosts` shows all
     three converged (the hosts' reports). Around each deploy it reads Redis's INFO (command
     counts and bytes) once the hosts have settled.
  2. throughput of the hello app (`examples/hello`): wrk -t1 -c32 straight to host 1, through
     HAProxy to host 1 alone, and through the same HAProxy to all three (round robin, /readyz
     checks, the cluster test's settings), interleaved, with the CPU time each process used.
     On 2 CPUs the three hosts share one CPU: this measures what the proxy and the
     coordination cost, not how a fleet scales.
  3. Redis memory: INFO used_memory before and after deploying N apps (4 tenants, each app
     its own skiff.toml around the same hello.wasm), MEMORY USAGE of the keys of each kind;
     then how long a 4th host (127.0.0.5, empty data folder) takes to be ready with them.
  4. the Redis commands and bytes of three idle hosts over --idle seconds (their resyncs).
  5. a synthetic hash of 100,000 entries shaped like `skiff:c:apps` and `skiff:c:host:HOST` in
     another Redis database: its memory, the bytes and Redis time of HGETALL (one resync's
     read at 100,000 apps), and of DEL + HSET of all of it (one host report).

It prints markdown tables and a scale model (100 hosts, 100,000 apps) computed from these
figures and, unless --quick or --no-write, rewrites the section `## Cluster: 3 hosts sharing
Redis` of docs/performance.md. Raw results go to target/bench/cluster.json; `--from-json PATH`
renders (and writes) them again.
"""
import argparse
import ctypes
import datetime
import gzip
import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: process, /proc and machine helpers)
from bench import LOADGEN_CPU, ROOT, SERVER_CPU, fail, log, pinned, spawn, stop, stop_all  # noqa: E402

HEADING = "## Cluster: 3 hosts sharing Redis"
HELLO_WASM = os.path.join(ROOT, "examples/hello/hello.wasm")
HOSTS = 3
TENANTS = 4
SYNTHETIC_ENTRIES = 100_000
DEPLOY_TIMEOUT_S = 30.0  # longer than a resync (10 s): a missed announcement still shows
KEEP_VERSIONS = 5  # skiff server's default --keep-versions


# ------------------------------------------------------------------------------------------
# processes


def die_with_parent():
    """Run in each child before exec: it gets SIGKILL if this process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(ip, port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            fail(f"{what} exited with status {proc.returncode} before listening on {ip}:{port}")
        try:
            with socket.create_connection((ip, port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail(f"{what} did not listen on {ip}:{port} within {timeout} s")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------
# Redis, spoken directly


class Resp:
    """One connection to Redis speaking RESP2; counts the bytes of every reply it reads."""

    def __init__(self, port, db=0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb", buffering=1 << 16)
        self.read_bytes = 0
        if db:
            self.cmd("SELECT", db)

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            arg = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)

    def read(self):
        line = self.file.readline()
        if not line:
            raise OSError("Redis closed the connection")
        self.read_bytes += len(line)
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"Redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            self.read_bytes += n + 2
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply from Redis: {line[:80]!r}")

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, commands):
        """Sends every command at once, then reads every reply; returns (replies, bytes sent)."""
        payload = b"".join(self.encode(c) for c in commands)
        self.sock.sendall(payload)
        return [self.read() for _ in commands], len(payload)

    def info(self, *sections):
        before = self.read_bytes
        text = self.cmd("INFO", *sections).decode()
        reply_bytes = self.read_bytes - before
        values = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                values[key] = value
        commands = {}
        for key, value in values.items():
            if key.startswith("cmdstat_"):
                fields = dict(part.split("=", 1) for part in value.split(","))
                commands[key[len("cmdstat_"):]] = {"calls": int(fields["calls"]),
                                                   "usec": int(fields["usec"])}
        return {"used_memory": int(values.get("used_memory", 0)),
                "commands": commands,
                "total_commands": int(values.get("total_commands_processed", 0)),
                "net_in": int(values.get("total_net_input_bytes", 0)),
                "net_out": int(values.get("total_net_output_bytes", 0)),
                "reply_bytes": reply_bytes}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stats_delta(before, after, own=("info",)):
    """What the hosts did between two INFO snapshots: commands by name (but the kinds of
    command this client sent meanwhile, `own`), bytes in and out (this client's first INFO
    reply taken off)."""
    calls = {}
    for name, now in after["commands"].items():
        if name in own:
            continue
        n = now["calls"] - before["commands"].get(name, {"calls": 0})["calls"]
        if n:
            calls[name] = n
    return {"calls": calls, "commands": sum(calls.values()),
            "net_out": after["net_out"] - before["net_out"] - before["reply_bytes"],
            "net_in": after["net_in"] - before["net_in"]}


class RedisServer:
    def __init__(self, workdir):
        self.port = free_port("127.0.0.1")
        self.log_path = os.path.join(workdir, "redis.log")
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", workdir, "--logfile", self.log_path]
        self.proc = spawn(pinned(self.argv, LOADGEN_CPU), None, preexec_fn=die_with_parent)
        wait_port("127.0.0.1", self.port, self.proc, "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = Resp(self.port).info("server")  # checks it answers
        self.client = Resp(self.port)

    def stop(self):
        self.client.close()
        stop(self.proc)


# ------------------------------------------------------------------------------------------
# the hosts


class Host:
    """`skiff server --cluster` on its own loopback address, pinned to CPU 0."""

    def __init__(self, skiff, workdir, n, redis, admin_token, folder=None):
        self.n, self.name = n, f"host-{n}"
        self.ip = f"127.0.0.{n + 1}"
        self.port, self.api_port = free_port(self.ip), free_port(self.ip)
        self.admin_token = admin_token
        self.folder = os.path.join(workdir, folder or self.name)
        os.makedirs(self.folder)
        self.log_path = os.path.join(self.folder, "server.log")
        env = dict(os.environ, SKIFF_ADMIN_TOKEN=admin_token, RUST_LOG="warn")
        for var in ("SKIFF_CACHE_DIR", "SKIFF_DATA_DIR", "SKIFF_CLUSTER", "SKIFF_HOST_ID", "SKIFF_THREADS",
                    "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
            env.pop(var, None)
        self.argv = [skiff, "--log-level", "warn", "server", "--data", os.path.join(self.folder, "data"),
                     "--listen", f"{self.ip}:{self.port}", "--api-listen", f"{self.ip}:{self.api_port}",
                     "--cluster", redis.url, "--host-id", self.name, "--drain-delay", "1s"]
        self.proc = spawn(pinned(self.argv, SERVER_CPU), self.log_path, env=env, cwd=self.folder,
                          preexec_fn=die_with_parent)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("before it was ready")
            if "Management API http://" in self.log_text():
                try:
                    status, _ = self.api("GET", "/readyz", token=None)
                    if status == 200:
                        return
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                self.die(f"was not ready (/readyz 200) within {timeout} s")
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self, when):
        if self.proc.poll() is not None:
            self.die(f"exited with status {self.proc.returncode} {when}")

    def die(self, message):
        fail(f"{self.name} {message}.\ncommand: {' '.join(self.argv)}\nlast lines of its log "
             f"({self.log_path}):\n{self.log_text()[-4000:] or '(empty log)'}")

    def connection(self):
        return http.client.HTTPConnection(self.ip, self.api_port, timeout=60)

    def api(self, method, path, body=None, token="", conn=None, content_type="application/json"):
        own = conn is None
        conn = conn or self.connection()
        headers = {}
        token = self.admin_token if token == "admin" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.check_alive(f"during {method} {path}")
            raise RuntimeError(f"{method} {path} on {self.name}: {e!r}") from e
        finally:
            if own:
                conn.close()


class DataPlane:
    """A keep-alive connection to one host's data plane, for one app."""

    def __init__(self, host, app):
        self.host, self.app, self.conn = host, app, None

    def get(self, path):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host.ip, self.host.port, timeout=10)
                self.conn.request("GET", path, headers={"Host": f"{self.app}.localhost"})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        return 0, b""

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ------------------------------------------------------------------------------------------
# bundles


def with_custom_section(wasm, name, payload):
    """The component with a custom section appended (valid anywhere in a component): the same
    code with other bytes, so other hash, so compiled anew."""
    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    body = leb(len(name)) + name + payload
    return wasm + b"\x00" + leb(len(body)) + body


def bundle(files):
    """A tar.gz in memory with these files at the root."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def web_bundle(wasm, version):
    manifest = (f'[app]\nname = "web"\nversion = "1.0.0"\ndescription = "cluster benchmark, {version}"\n\n'
                f'[component.web]\nsource = "web.wasm"\nroute = "/..."\n'
                f'environment = {{ VERSION = "{version}" }}\n')
    return bundle({"skiff.toml": manifest.encode(), "web.wasm": wasm})


def app_bundle(name, wasm):
    manifest = (f'[app]\nname = "{name}"\nversion = "0.1.0"\ndescription = "cluster benchmark app {name}"\n\n'
                f'[component.hello]\nsource = "hello.wasm"\nroute = "/..."\n'
                f'environment = {{ APP = "{name}" }}\n')
    return bundle({"skiff.toml": manifest.encode(), "hello.wasm": wasm})


def create_tenant(host, name, apps, code_bytes):
    quotas = {"max_apps": apps + 10, "max_code_bytes": code_bytes, "max_in_flight": 10000}
    status, body = host.api("POST", "/v1/tenants", json.dumps({"name": name, "quotas": quotas}).encode(), "admin")
    if status != 201:
        host.die(f"refused to create the tenant {name}: {status} {body[:1000]!r}")
    return json.loads(body)["token"]


def deploy(host, token, name, body, conn=None):
    status, reply = host.api("PUT", f"/v1/apps/{name}", body, token, conn=conn, content_type="application/gzip")
    if status not in (200, 201):
        host.die(f"refused the deploy of {name}: {status} {reply[:1000]!r}")
    return reply


# ------------------------------------------------------------------------------------------
# 1. deploy to served everywhere


def percentile(values, pct):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values):
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else float("nan"),
            "min": min(values) if values else float("nan")}


def watch_deploy(hosts, planes, token, body, expect):
    """Deploys `body` through host 1 in a thread while polling every host's data plane; returns
    the times (ms) and what each host answered last."""
    result = {}

    def call():
        result["start"] = time.monotonic()
        try:
            deploy(hosts[0], token, "web", body)
        except BaseException as e:  # noqa: BLE001  (reported below, with the host's log)
            result["error"] = e
        result["end"] = time.monotonic()

    thread = threading.Thread(target=call)
    thread.start()
    seen = [None] * len(hosts)
    last = [None] * len(hosts)
    first_after_return = [None] * len(hosts)
    started = time.monotonic()
    while True:
        returned = "end" in result
        for i, plane in enumerate(planes):
            if seen[i] is not None:
                continue
            try:
                status, answer = plane.get("/env/VERSION")
            except (OSError, http.client.HTTPException) as e:
                status, answer = 0, repr(e).encode()
            now = time.monotonic()
            last[i] = (status, answer[:200].decode(errors="replace"))
            if returned and first_after_return[i] is None:
                first_after_return[i] = answer == expect
            if status == 200 and answer == expect:
                seen[i] = now
        if returned and all(s is not None for s in seen):
            break
        if time.monotonic() - started > DEPLOY_TIMEOUT_S:
            break
        time.sleep(0.001)
    thread.join()
    if "error" in result:
        raise result["error"]
    start, end = result["start"], result["end"]
    out = {"call_ms": (end - start) * 1000,
           "host_ms_from_start": [None if s is None else (s - start) * 1000 for s in seen],
           "new_right_after_return": first_after_return,
           "last_answers": last,
           "converged": all(s is not None for s in seen)}
    if out["converged"]:
        out["everywhere_from_start_ms"] = (max(seen) - start) * 1000
        out["everywhere_from_return_ms"] = max(0.0, (max(seen) - end) * 1000)
    return out, end


def watch_inspect(host, token, since, timeout=DEPLOY_TIMEOUT_S):
    """Polls GET /v1/apps/web until `cluster.hosts` has every host converged. Returns the ms
    after `since`, the last `cluster` seen and how many calls it made."""
    conn = host.connection()
    polls = 0
    try:
        while True:
            status, body = host.api("GET", "/v1/apps/web", token=token, conn=conn)
            polls += 1
            now = time.monotonic()
            info = (json.loads(body).get("cluster") or {}) if status == 200 else body[:300].decode(errors="replace")
            if status == 200:
                hosts = info.get("hosts") or []
                if len(hosts) == HOSTS and all(h.get("converged") for h in hosts):
                    return (now - since) * 1000, info, polls
            if now - since > timeout:
                return None, info, polls
            time.sleep(0.002)
    finally:
        conn.close()


def measure_deploys(hosts, redis, token, wasm, args):
    planes = [DataPlane(h, "web") for h in hosts]
    # The first deploy creates the app and compiles its code on host 1; every host then loads
    # it (this client's requests) and so compiles it once too.
    first, end = watch_deploy(hosts, planes, token, web_bundle(wasm, "v0"), b"v0")
    if not first["converged"]:
        fail(f"the first deploy of `web` did not reach every host: {first['last_answers']}")
    runs = []
    kinds = ["config", "code"]
    for i in range(1, 2 * args.deploys + 1):
        kind = kinds[i % 2]
        version = f"{kind}-{i}"
        code = wasm if kind == "config" else with_custom_section(wasm, b"skiff-bench", version.encode())
        body = web_bundle(code, version)
        before = redis.client.info("stats", "commandstats")
        run, returned = watch_deploy(hosts, planes, token, body, version.encode())
        run["kind"], run["version"] = kind, version
        run["inspect_ms"], cluster, polls = watch_inspect(hosts[0], token, returned)
        if run["inspect_ms"] is None:
            run["inspect_last"] = cluster
        time.sleep(0.25)  # the hosts' reports, after they applied the change
        after = redis.client.info("stats", "commandstats")
        run["redis"] = stats_delta(before, after)
        # Each `GET /v1/apps/web` read HGET skiff:c:apps, ZRANGEBYSCORE skiff:c:hosts and an
        # HGET per host: not the deploy's, so taken off (ZRANGEBYSCORE is the check: nothing
        # else sends it).
        calls = run["redis"]["calls"]
        run["inspect_polls"] = polls
        run["inspect_accounted"] = calls.get("zrangebyscore", 0) == polls
        for name, n in (("zrangebyscore", polls), ("hget", polls * (1 + HOSTS))):
            calls[name] = calls.get(name, 0) - n
            if not calls[name]:
                del calls[name]
        run["redis"]["commands"] = sum(calls.values())
        runs.append(run)
        if run["converged"]:
            log(f"   {i:3d}/{2 * args.deploys} {kind:6s}: call {run['call_ms']:6.1f} ms, everywhere "
                f"{run['everywhere_from_return_ms']:6.1f} ms after it returned (hosts at "
                + ", ".join(f"{t:.0f}" for t in run["host_ms_from_start"]) + " ms from its start); "
                f"inspect 3/3 after {run['inspect_ms'] or float('nan'):.0f} ms; "
                f"{run['redis']['commands']} Redis commands")
        else:
            log(f"   {i:3d}/{2 * args.deploys} {kind:6s}: NOT CONVERGED within {DEPLOY_TIMEOUT_S:.0f} s: "
                f"{run['last_answers']}")
        for h in hosts:
            h.check_alive("during the deploys")
        time.sleep(args.pause)
    for plane in planes:
        plane.close()
    return {"first": first, "runs": runs}


# ------------------------------------------------------------------------------------------
# 2. throughput


def haproxy_config(hosts, port_three, port_one):
    lines = ["global", "  maxconn 4096", "  nbthread 1",
             "defaults", "  mode http", "  timeout connect 1s", "  timeout client 30s", "  timeout server 30s",
             "  retries 3", "  option redispatch 1", "  retry-on conn-failure empty-response response-timeout",
             "frontend three", f"  bind 127.0.0.1:{port_three}", "  default_backend three",
             "frontend one", f"  bind 127.0.0.1:{port_one}", "  default_backend one"]
    for backend, members in (("three", hosts), ("one", hosts[:1])):
        lines += [f"backend {backend}", "  balance roundrobin", "  option httpchk GET /readyz",
                  "  default-server inter 1s fall 2 rise 2"]
        lines += [f"  server {h.name} {h.ip}:{h.port} check port {h.api_port}" for h in members]
    return "\n".join(lines) + "\n"


class Haproxy:
    def __init__(self, hosts, workdir):
        self.port_three, self.port_one = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.config = haproxy_config(hosts, self.port_three, self.port_one)
        path = os.path.join(workdir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.config)
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.proc = spawn(pinned(["haproxy", "-db", "-f", path], LOADGEN_CPU), self.log_path,
                          preexec_fn=die_with_parent)
        for port in (self.port_three, self.port_one):
            wait_port("127.0.0.1", port, self.proc, "haproxy")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        stop(self.proc)


def wrk(url, script, connections, seconds):
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url], LOADGEN_CPU)
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"wrk failed ({' '.join(argv)}):\n{out.stdout}\n{out.stderr}")
    return bench.parse_wrk(out.stdout)


def measure_throughput(hosts, token, proxy, redis, workdir, args):
    script = os.path.join(workdir, "hello.lua")
    with open(script, "w") as f:
        f.write('-- generated by bench/cluster.py\nwrk.headers["Host"] = "hello.localhost"\n')
    targets = {"direct": f"http://{hosts[0].ip}:{hosts[0].port}/",
               "proxy_one": f"http://127.0.0.1:{proxy.port_one}/",
               "proxy_three": f"http://127.0.0.1:{proxy.port_three}/"}
    pids = {h.name: h.pid for h in hosts}
    pids["haproxy"] = proxy.pid
    warmup = 2 if args.quick else 3
    log(f"   warm-up: {warmup} s on each")
    for url in targets.values():
        wrk(url, script, args.connections, warmup)
    runs = []
    for rep in range(args.reps):
        run = {}
        for name, url in targets.items():
            before = {p: cpu_seconds(pid) for p, pid in pids.items()}
            redis_before = redis.client.info("stats", "commandstats")
            t0 = time.monotonic()
            r = wrk(url, script, args.connections, args.duration)
            wall = time.monotonic() - t0
            r["cpu"] = {p: (cpu_seconds(pid) - before[p]) / wall for p, pid in pids.items()}
            r["redis"] = stats_delta(redis_before, redis.client.info("stats", "commandstats"))
            r["redis"]["seconds"] = wall
            for h in hosts:
                h.check_alive(f"during wrk on {url}")
            run[name] = r
            if r["non2xx"] or r["socket_errors"]:
                log(f"   {name}: {r['non2xx']} non-2xx answers, {r['socket_errors']} socket errors")
        runs.append(run)
        log(f"   rep {rep + 1}: direct {run['direct']['rps']:8.0f}, HAProxy to host 1 {run['proxy_one']['rps']:8.0f}, "
            f"HAProxy to 3 hosts {run['proxy_three']['rps']:8.0f} req/s")
    return runs


# ------------------------------------------------------------------------------------------
# 3-5. Redis


def memory_usage(client, key):
    return client.cmd("MEMORY", "USAGE", key, "SAMPLES", "0")


def measure_redis_memory(hosts, redis, wasm, args):
    client = redis.client
    n = args.apps
    tokens = [create_tenant(hosts[0], f"tenant-{t}", n, (n + 10) * len(wasm) * 2) for t in range(TENANTS)]
    time.sleep(0.5)
    client.cmd("MEMORY", "PURGE")
    before = client.info("memory", "stats", "commandstats")
    bundles = [app_bundle(f"app-{i:04d}", wasm) for i in range(n)]
    errors = []
    started = time.monotonic()

    def worker(t):
        conn = hosts[0].connection()
        try:
            for i in range(t, n, TENANTS):
                deploy(hosts[0], tokens[t], f"app-{i:04d}", bundles[i], conn=conn)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(TENANTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    deploy_s = time.monotonic() - started
    # Every host has reported every app (its report follows each change it applied).
    total_apps = client.cmd("HLEN", "skiff:c:apps")
    deadline = time.monotonic() + 60
    while any(client.cmd("HLEN", f"skiff:c:host:{h.name}") < total_apps for h in hosts):
        if time.monotonic() > deadline:
            fail("the hosts did not report every app within 60 s: "
                 + ", ".join(f"{h.name} {client.cmd('HLEN', f'skiff:c:host:{h.name}')}" for h in hosts)
                 + f" of {total_apps}")
        time.sleep(0.1)
    time.sleep(0.5)
    client.cmd("MEMORY", "PURGE")
    after = client.info("memory", "stats", "commandstats")
    sample = [f"app-{i:04d}" for i in range(0, n, max(1, n // 20))]
    app_usage = [memory_usage(client, f"skiff:c:app:{a}") for a in sample]
    app_len = [client.cmd("STRLEN", f"skiff:c:app:{a}") for a in sample]
    bundle_keys = sorted(k.decode() for k in client.cmd("KEYS", "skiff:c:bundle:*"))
    bundle_usage = [memory_usage(client, k) for k in bundle_keys[:50]]
    bundle_len = [client.cmd("STRLEN", k) for k in bundle_keys[:50]]
    tenants = client.cmd("HLEN", "skiff:c:tenants")
    tenant_names = [f"tenant-{t}" for t in range(TENANTS)] + ["bench"]
    keys = {}
    for key in ["skiff:c:apps", "skiff:c:tenants", "skiff:c:hosts"] + [f"skiff:c:host:{h.name}" for h in hosts] + \
            [f"skiff:c:code:tenant-{t}" for t in range(TENANTS)]:
        kind = client.cmd("TYPE", key)
        length = client.cmd("HLEN", key) if kind == "hash" else None
        keys[key] = {"type": kind, "entries": length, "bytes": memory_usage(client, key)}
    # What one resync reads, and one report writes, at this size.
    client.read_bytes = 0
    client.cmd("HGETALL", "skiff:c:apps")
    hgetall_bytes = client.read_bytes
    web = {"bytes": memory_usage(client, "skiff:c:app:web"), "len": client.cmd("STRLEN", "skiff:c:app:web")}
    return {"apps": n, "tenants_total": tenants, "deploy_s": deploy_s, "bundle_bytes_uploaded": len(bundles[-1]),
            "used_before": before["used_memory"], "used_after": after["used_memory"],
            "deploy_redis": stats_delta(before, after, own=("info", "hlen", "memory")),
            "app_usage": app_usage, "app_len": app_len,
            "bundle_keys": len(bundle_keys), "bundle_usage": bundle_usage, "bundle_len": bundle_len,
            "tenant_record_len": [client.cmd("HSTRLEN", "skiff:c:tenants", t) for t in tenant_names],
            "keys": keys, "hgetall_apps_bytes": hgetall_bytes, "apps_in_hash": total_apps, "web_record": web}


def measure_idle(redis, seconds):
    client = redis.client
    before = client.info("stats", "commandstats")
    t0 = time.monotonic()
    time.sleep(seconds)
    after = client.info("stats", "commandstats")
    wall = time.monotonic() - t0
    d = stats_delta(before, after)
    d["seconds"] = wall
    return d


def measure_synthetic(redis, entries):
    """A hash of `entries` app names → revisions in database 1, read and rewritten as a resync
    and a host report do."""
    client = Resp(redis.port, db=1)
    try:
        client.cmd("FLUSHDB")
        names = [f"app-{i:06d}" for i in range(entries)]
        revision = 1_000_000
        for lo in range(0, entries, 10_000):
            fields = []
            for name in names[lo:lo + 10_000]:
                fields += [name, revision + lo]
            client.cmd("HSET", "bench:apps", *fields)
        client.cmd("CONFIG", "RESETSTAT")
        usage = memory_usage(client, "bench:apps")
        hgetall = []
        for _ in range(5):
            client.read_bytes = 0
            t0 = time.perf_counter()
            client.cmd("HGETALL", "bench:apps")
            hgetall.append((time.perf_counter() - t0) * 1000)
            reply_bytes = client.read_bytes
        stats = client.info("commandstats")["commands"]
        hgetall_usec = stats["hgetall"]["usec"] / stats["hgetall"]["calls"]
        # A host's report, as RedisState::report_host sends it: MULTI, DEL, HSET all, PEXPIRE,
        # ZADD, ZREMRANGEBYSCORE, EXEC.
        all_fields = []
        for name in names:
            all_fields += [name, revision]
        report = [["MULTI"], ["DEL", "bench:host"], ["HSET", "bench:host", *all_fields],
                  ["PEXPIRE", "bench:host", 30000], ["ZADD", "bench:hosts", 1, "h"],
                  ["ZREMRANGEBYSCORE", "bench:hosts", "-inf", 0], ["EXEC"]]
        client.pipeline(report)  # the first creates the hash; the timed ones delete it first
        client.cmd("CONFIG", "RESETSTAT")
        report_ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            _, sent = client.pipeline(report)
            report_ms.append((time.perf_counter() - t0) * 1000)
        stats = client.info("commandstats")["commands"]
        host_usage = memory_usage(client, "bench:host")
        client.cmd("FLUSHDB")
        return {"entries": entries, "name_example": names[-1], "revision_example": str(revision),
                "usage": usage, "host_usage": host_usage,
                "hgetall_bytes": reply_bytes, "hgetall_client_ms": hgetall, "hgetall_usec": hgetall_usec,
                "report_bytes": sent, "report_client_ms": report_ms,
                "hset_usec": stats["hset"]["usec"] / stats["hset"]["calls"],
                "del_usec": stats["del"]["usec"] / stats["del"]["calls"],
                "exec_usec": stats["exec"]["usec"] / stats["exec"]["calls"]}
    finally:
        client.close()


# ------------------------------------------------------------------------------------------
# the run


def measure(args, skiff, http_wasm, workdir):
    with open(HELLO_WASM, "rb") as f:
        hello = f.read()
    with open(http_wasm, "rb") as f:
        web = f.read()
    results = {"hello_wasm_bytes": len(hello), "web_wasm_bytes": len(web), "loadavg_start": os.getloadavg()}
    admin = secrets.token_hex(16)
    redis = RedisServer(workdir)
    hosts = []
    proxy = None
    try:
        results["redis_version"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                                  text=True).stdout.strip()
        results["haproxy_version"] = subprocess.run(["haproxy", "-v"], capture_output=True,
                                                    text=True).stdout.splitlines()[0].strip()
        log(f"== redis-server on 127.0.0.1:{redis.port}; starting {HOSTS} hosts")
        spawned = time.monotonic()
        hosts = [Host(skiff, workdir, n, redis, admin) for n in range(1, HOSTS + 1)]
        results["ready_empty_ms"] = []
        for h in hosts:
            h.wait_ready()
            results["ready_empty_ms"].append((time.monotonic() - spawned) * 1000)
            log(f"   {h.name}: data plane {h.ip}:{h.port}, API {h.ip}:{h.api_port}, pid {h.pid}")
        results["join_empty_ms"], results["stopped_host_listed_ms"] = join(skiff, workdir, redis, admin,
                                                                            "host-4-empty")
        log(f"   a 4th host alone, into the empty cluster: ready after {results['join_empty_ms']:.0f} ms")
        token = create_tenant(hosts[0], "bench", 10, 1 << 30)

        log(f"== {2 * args.deploys} deploys of `web` through host 1, alternating config and code, "
            f"each polled on all {HOSTS} data planes")
        results["deploys"] = measure_deploys(hosts, redis, token, web, args)
        results["bundle_keys_after_deploys"] = len(redis.client.cmd("KEYS", "skiff:c:bundle:*"))
        results["web_record_after_deploys"] = {
            "bytes": memory_usage(redis.client, "skiff:c:app:web"),
            "len": redis.client.cmd("STRLEN", "skiff:c:app:web")}

        log("== throughput of the hello app: direct to host 1, HAProxy to host 1, HAProxy to 3 hosts")
        started = time.monotonic()
        deploy(hosts[0], token, "hello", bundle({"skiff.toml": open(os.path.join(ROOT, "examples/hello/skiff.toml"),
                                                                    "rb").read(), "hello.wasm": hello}))
        results["hello_first_deploy_ms"] = (time.monotonic() - started) * 1000
        for h in hosts:
            plane = DataPlane(h, "hello")
            deadline = time.monotonic() + DEPLOY_TIMEOUT_S
            while plane.get("/") != (200, b"hello\n"):
                if time.monotonic() > deadline:
                    h.die("did not serve the hello app")
                time.sleep(0.01)
            plane.close()
        proxy = Haproxy(hosts, workdir)
        for port in (proxy.port_one, proxy.port_three):
            deadline = time.monotonic() + 20
            while True:
                try:
                    status, body = bench.http_get(port, "/", host="hello.localhost")
                    if (status, body) == (200, b"hello\n"):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    fail(f"haproxy on port {port} did not answer hello within 20 s:\n{open(proxy.log_path).read()[-2000:]}")
                time.sleep(0.05)
        results["throughput"] = measure_throughput(hosts, token, proxy, redis, workdir, args)
        proxy.stop()
        proxy = None

        log(f"== Redis memory: {args.apps} apps in {TENANTS} tenants deployed through host 1")
        results["memory"] = measure_redis_memory(hosts, redis, hello, args)
        m = results["memory"]
        log(f"   used_memory {m['used_before'] / 1e6:.2f} -> {m['used_after'] / 1e6:.2f} MB "
            f"({(m['used_after'] - m['used_before']) / m['apps']:.0f} bytes per app)")

        log(f"== a 4th host joins (empty data folder): time to ready with {m['apps_in_hash']} apps in the cluster")
        ready_ms, _ = join(skiff, workdir, redis, admin, "host-4")
        results["join"] = {"ready_ms": ready_ms, "apps": m["apps_in_hash"]}
        log(f"   ready after {results['join']['ready_ms']:.0f} ms (into the empty cluster: "
            f"{results['join_empty_ms']:.0f} ms)")

        log(f"== {HOSTS} idle hosts for {args.idle} s: Redis commands and bytes")
        results["idle"] = measure_idle(redis, args.idle)
        i = results["idle"]
        log(f"   {i['commands']} commands, {i['net_out']} bytes out, {i['net_in']} bytes in: {i['calls']}")

        log(f"== a synthetic hash of {SYNTHETIC_ENTRIES:,} entries: HGETALL and a host report's rewrite")
        results["synthetic"] = measure_synthetic(redis, SYNTHETIC_ENTRIES)
        s = results["synthetic"]
        log(f"   {s['usage'] / 1e6:.1f} MB; HGETALL {s['hgetall_bytes'] / 1e6:.2f} MB in {s['hgetall_usec'] / 1000:.1f} ms "
            f"of Redis; report HSET {s['hset_usec'] / 1000:.1f} ms + DEL {s['del_usec'] / 1000:.1f} ms")

        for h in hosts:
            h.check_alive("at the end of the run")
        results["log_warnings"] = {h.name: [line for line in h.log_text().splitlines()
                                            if re.search(r"\b(WARN|ERROR)\b", line)][-20:] for h in hosts}
        results["loadavg_end"] = os.getloadavg()
    finally:
        if proxy:
            proxy.stop()
        # Stopped one by one (each drains for 1 s); their logs kept for a look after the run.
        for h in hosts:
            stop(h.proc)
            try:
                os.makedirs(os.path.join(bench.target_dir(), "bench"), exist_ok=True)
                shutil.copyfile(h.log_path, os.path.join(bench.target_dir(), f"bench/cluster-{h.name}.log"))
            except OSError:
                pass
        redis.stop()
    return results


def join(skiff, workdir, redis, admin, folder):
    """Starts a 4th host with an empty data folder; returns the ms from spawning it to /readyz
    200, and whether the cluster still lists it once it has stopped (SIGTERM). Then removes
    it from the cluster's list of hosts, so that `apps inspect` shows the 3 hosts alone."""
    late = Host(skiff, workdir, HOSTS + 1, redis, admin, folder=folder)
    spawned = time.monotonic()
    try:
        late.wait_ready()
        ready_ms = (time.monotonic() - spawned) * 1000
    finally:
        stop(late.proc)
    score = redis.client.cmd("ZSCORE", "skiff:c:hosts", late.name)
    listed_ms = float(score) - time.time() * 1000 if score is not None else None
    redis.client.cmd("ZREM", "skiff:c:hosts", late.name)
    redis.client.cmd("DEL", f"skiff:c:host:{late.name}")
    return ready_ms, listed_ms


# ------------------------------------------------------------------------------------------
# report


def fmt_bytes(n):
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def fmt_ms(ms):
    return "n/a" if ms is None or ms != ms else (f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}")


def deploy_figures(r):
    runs = r["deploys"]["runs"]
    out = {}
    for kind in ("config", "code"):
        done = [x for x in runs if x["kind"] == kind and x["converged"]]
        out[kind] = {
            "n": len([x for x in runs if x["kind"] == kind]),
            "converged": len(done),
            "from_return": summary([x["everywhere_from_return_ms"] for x in done]),
            "from_start": summary([x["everywhere_from_start_ms"] for x in done]),
            "call": summary([x["call_ms"] for x in runs if x["kind"] == kind]),
            "inspect": summary([x["inspect_ms"] for x in runs if x["kind"] == kind and x["inspect_ms"] is not None]),
            "inspect_missing": len([x for x in runs if x["kind"] == kind and x["inspect_ms"] is None]),
            "per_host": [statistics.median(x["host_ms_from_start"][h] for x in done) if done else float("nan")
                         for h in range(HOSTS)],
            "host1_stale_after_return": len([x for x in runs if x["kind"] == kind
                                             and x["new_right_after_return"][0] is False]),
            "commands": statistics.median(x["redis"]["commands"] for x in runs if x["kind"] == kind),
            "net_out": statistics.median(x["redis"]["net_out"] for x in runs if x["kind"] == kind),
            "net_in": statistics.median(x["redis"]["net_in"] for x in runs if x["kind"] == kind),
            "calls": {},
        }
        names = sorted({c for x in runs if x["kind"] == kind for c in x["redis"]["calls"]})
        for c in names:
            out[kind]["calls"][c] = statistics.median(x["redis"]["calls"].get(c, 0) for x in runs if x["kind"] == kind)
    out["compile_ms"] = out["code"]["call"]["p50"] - out["config"]["call"]["p50"]
    return out


def throughput_figures(r):
    t = r["throughput"]
    out = {}
    for name in ("direct", "proxy_one", "proxy_three"):
        rps = [x[name]["rps"] for x in t]
        out[name] = {"rps": statistics.median(rps), "min": min(rps), "max": max(rps),
                     "p50": statistics.median(x[name].get("p50_ms", float("nan")) for x in t),
                     "p99": statistics.median(x[name].get("p99_ms", float("nan")) for x in t),
                     "errors": sum(x[name]["socket_errors"] + x[name]["non2xx"] for x in t),
                     "cpu": {p: statistics.median(x[name]["cpu"][p] for x in t) for p in t[0][name]["cpu"]}}
    return out


def build_tables(r, args):
    d, t, m, s, idle = deploy_figures(r), throughput_figures(r), r["memory"], r["synthetic"], r["idle"]
    n = args.deploys
    rows = ["| deploy through host 1, polled on all 3 data planes (ms) | p50 | p90 | p99 | max |",
            "|---|---:|---:|---:|---:|"]
    for kind, label in (("config", "config change (same code)"), ("code", "new code (every host compiles)")):
        k = d[kind]
        for key, what in (("from_return", "deploy call returned → last host serves it"),
                          ("from_start", "deploy call started → last host serves it"),
                          ("call", "the deploy call itself (host 1 validates, stores, loads)"),
                          ("inspect", "call returned → `apps inspect` shows 3 of 3 converged")):
            x = k[key]
            rows.append(f"| {label}: {what} | {fmt_ms(x['p50'])} | {fmt_ms(x['p90'])} | {fmt_ms(x['p99'])} | "
                        f"{fmt_ms(x['max'])} |")
    deploys_table = "\n".join(rows)
    base = t["proxy_one"]["rps"]
    rows = [f"| hello app, wrk -t1 -c{args.connections} -d{args.duration}s | req/s (median) | range | p50 (ms) | "
            f"p99 (ms) | ratio to 1 host behind HAProxy |", "|---|---:|---:|---:|---:|---:|"]
    for name, label in (("direct", "1 host, direct (no proxy)"), ("proxy_one", "1 host behind HAProxy"),
                        ("proxy_three", "3 hosts behind the same HAProxy")):
        x = t[name]
        rows.append(f"| {label} | {x['rps']:,.0f} | {x['min']:,.0f}-{x['max']:,.0f} | {x['p50']:.2f} | "
                    f"{x['p99']:.2f} | {x['rps'] / base:.2f}x |")
    throughput_table = "\n".join(rows)
    per_app = (m["used_after"] - m["used_before"]) / m["apps"]
    apps_key, host_key = m["keys"]["skiff:c:apps"], m["keys"]["skiff:c:host:host-1"]
    code_keys = [v for k, v in m["keys"].items() if k.startswith("skiff:c:code:")]
    code_entry = sum(v["bytes"] for v in code_keys) / max(1, sum(v["entries"] or 0 for v in code_keys))
    rows = ["| Redis | bytes |", "|---|---:|",
            f"| `used_memory` growth per app ({m['apps']} apps in {TENANTS} tenants, one version each, "
            f"reported by 3 hosts) | {per_app:,.0f} |",
            f"| `skiff:c:app:NAME`, one version (MEMORY USAGE, median; JSON {statistics.median(m['app_len']):,.0f}) "
            f"| {statistics.median(m['app_usage']):,.0f} |",
            f"| `skiff:c:app:web` with {KEEP_VERSIONS + 1} versions (JSON {r['web_record_after_deploys']['len']:,}) "
            f"| {r['web_record_after_deploys']['bytes']:,} |",
            f"| `skiff:c:bundle:ID`, the hello app (MEMORY USAGE, median; upload {m['bundle_bytes_uploaded']:,}) "
            f"| {statistics.median(m['bundle_usage']):,.0f} |",
            f"| `skiff:c:apps`, per entry ({apps_key['entries']} entries) | {apps_key['bytes'] / apps_key['entries']:,.0f} |",
            f"| `skiff:c:host:HOST`, per entry ({host_key['entries']} entries) | "
            f"{host_key['bytes'] / host_key['entries']:,.0f} |",
            f"| `skiff:c:code:TENANT`, per entry | {code_entry:,.0f} |",
            f"| a tenant record (JSON in `skiff:c:tenants`, median) | {statistics.median(m['tenant_record_len']):,.0f} |",
            f"| HGETALL `skiff:c:apps` as read by a resync ({m['apps_in_hash']} apps), reply | {m['hgetall_apps_bytes']:,} |",
            f"| {SYNTHETIC_ENTRIES:,}-entry hash like `skiff:c:apps` (MEMORY USAGE) | {s['usage']:,} "
            f"({s['usage'] / s['entries']:.0f} per entry) |",
            f"| its HGETALL reply | {s['hgetall_bytes']:,} ({s['hgetall_bytes'] / s['entries']:.1f} per entry) |",
            f"| a host report of {SYNTHETIC_ENTRIES:,} apps as sent (MULTI, DEL, HSET, PEXPIRE, ZADD, ZREMRANGEBYSCORE, EXEC) "
            f"| {s['report_bytes']:,} |"]
    memory_table = "\n".join(rows)
    per_host_idle = idle["commands"] / HOSTS / idle["seconds"]
    rows = ["| Redis work | commands | bytes out | bytes in | Redis time |", "|---|---:|---:|---:|---:|",
            f"| one config deploy, 3 hosts (median) | {d['config']['commands']:.0f} | {d['config']['net_out']:,.0f} | "
            f"{d['config']['net_in']:,.0f} | |",
            f"| one code deploy, 3 hosts (median) | {d['code']['commands']:.0f} | {d['code']['net_out']:,.0f} | "
            f"{d['code']['net_in']:,.0f} | |",
            f"| 3 idle hosts, {m['apps_in_hash']} apps, per host per second ({idle['seconds']:.0f} s) | {per_host_idle:.2f} | "
            f"{idle['net_out'] / HOSTS / idle['seconds']:,.0f} | {idle['net_in'] / HOSTS / idle['seconds']:,.0f} | |",
            f"| HGETALL of the {SYNTHETIC_ENTRIES:,}-entry hash (one resync's read) | 1 | {s['hgetall_bytes']:,} | | "
            f"{s['hgetall_usec'] / 1000:.1f} ms |",
            f"| DEL + HSET of {SYNTHETIC_ENTRIES:,} entries (one host report) | 7 | | {s['report_bytes']:,} | "
            f"{(s['del_usec'] + s['hset_usec']) / 1000:.1f} ms |"]
    work_table = "\n".join(rows)
    return deploys_table, throughput_table, memory_table, work_table


def build_details(r, args):
    d, t, m, idle, s = deploy_figures(r), throughput_figures(r), r["memory"], r["idle"], r["synthetic"]
    runs = r["deploys"]["runs"]
    failed = [x for x in runs if not x["converged"]]
    lines = []
    verdict = ("met" if all(d[k]["from_return"]["p99"] <= 1000 and d[k]["converged"] == d[k]["n"]
                            for k in ("config", "code")) else "NOT met")
    lines.append(
        f"Goal of the issue, p99 from the deploy call returning to the last host serving the new version ≤ 1 s: "
        f"**{verdict}** (config {fmt_ms(d['config']['from_return']['p99'])} ms, new code "
        f"{fmt_ms(d['code']['from_return']['p99'])} ms). "
        + (f"**{len(failed)} deploy(s) did not reach every host within {DEPLOY_TIMEOUT_S:.0f} s**: "
           + "; ".join(f"{x['version']}: last answers {x['last_answers']}" for x in failed[:5]) + ". "
           if failed else f"All {len(runs)} deploys reached all 3 hosts. ")
        + "Median time from the deploy call's start to each host first answering new (host 1, 2, 3): config "
        + ", ".join(fmt_ms(v) for v in d["config"]["per_host"]) + " ms; new code "
        + ", ".join(fmt_ms(v) for v in d["code"]["per_host"]) + " ms. "
        + f"Host 1 answered the old version on the first request after its own deploy call returned in "
        f"{d['config']['host1_stale_after_return'] + d['code']['host1_stale_after_return']} of {len(runs)} deploys. "
        f"The deploy call with new code takes {fmt_ms(d['compile_ms'])} ms longer (median) than with the same code: "
        f"that is compiling the {r['web_wasm_bytes']:,}-byte http test guest on one CPU, which every host does once "
        f"for each new component; the hello app ({r['hello_wasm_bytes']:,} bytes) took "
        f"{fmt_ms(r['hello_first_deploy_ms'])} ms to deploy the first time (compile included). "
        f"A remote host that has the app loaded loads the new version (fetches the bundle, compiles) before it "
        f"swaps, so requests keep the old version meanwhile; the 3 hosts share CPU 0 here, so hosts 2 and 3 "
        f"compile one after the other, which separate machines would not. `apps inspect` (the hosts' reports) "
        f"shows 3 of 3 converged {fmt_ms(d['code']['inspect']['p50'])} ms (median, new code) after the call "
        f"returned"
        + (f"; {d['config']['inspect_missing'] + d['code']['inspect_missing']} deploys never showed 3 of 3 within "
           f"{DEPLOY_TIMEOUT_S:.0f} s" if d['config']['inspect_missing'] + d['code']['inspect_missing'] else "")
        + ("" if all(x.get("inspect_accounted", True) for x in runs) else
           " (its polls' own Redis commands could not be told apart from the deploy's in "
           f"{len([x for x in runs if not x.get('inspect_accounted', True)])} deploys)")
        + f". {r['bundle_keys_after_deploys']} bundles in Redis after the {len(runs) + 1} deploys of `web` "
        f"(at most the live version and the {KEEP_VERSIONS} kept for rollback).")
    cpu = t["proxy_three"]["cpu"]
    cpu1 = t["proxy_one"]["cpu"]
    lines.append(
        f"Throughput: {t['proxy_three']['rps'] / t['proxy_one']['rps']:.2f}x with 3 hosts behind HAProxy against 1 "
        f"host behind it, and {t['proxy_one']['rps'] / t['direct']['rps']:.2f}x through HAProxy against straight to "
        f"the host. The 3 hosts share CPU 0 and HAProxy shares CPU 1 with wrk, so this is not how a fleet scales "
        f"(each host would have its own CPUs): it shows what the proxy costs and what splitting one CPU between "
        f"three processes costs. Neither is the cluster's coordination, which costs nothing per request (the "
        f"Redis commands while wrk ran, below, are the resyncs). HAProxy on its own CPU did not lower throughput "
        f"here; it costs CPU per request of its own. CPU used (CPUs, median): 1 host behind HAProxy: "
        + ", ".join(f"{p} {v:.2f}" for p, v in cpu1.items() if v >= 0.005)
        + "; 3 hosts: " + ", ".join(f"{p} {v:.2f}" for p, v in cpu.items())
        + f". Per repetition (direct / HAProxy to 1 / HAProxy to 3, req/s): "
        + "; ".join(f"{x['direct']['rps']:,.0f} / {x['proxy_one']['rps']:,.0f} / {x['proxy_three']['rps']:,.0f}"
                    for x in r["throughput"])
        + f". CPU time of the hosts per request: "
        + ", ".join(f"{label} {sum(v for p, v in t[name]['cpu'].items() if p.startswith('host-')) / t[name]['rps'] * 1e6:.0f} µs"
                    for name, label in (("direct", "direct"), ("proxy_one", "HAProxy to 1"), ("proxy_three", "HAProxy to 3")))
        + f"; of HAProxy {cpu['haproxy'] / t['proxy_three']['rps'] * 1e6:.0f} µs (HAProxy to 3). Redis commands per second "
        f"while wrk ran (direct, HAProxy to 1, HAProxy to 3; medians): "
        + ", ".join(f"{statistics.median(x[name]['redis']['commands'] / x[name]['redis']['seconds'] for x in r['throughput']):.1f}"
                    for name in ("direct", "proxy_one", "proxy_three"))
        + " (serving a request does not touch Redis). "
        f"Errors (socket errors and non-2xx): {sum(v['errors'] for v in t.values())}.")
    calls = lambda c: ", ".join(f"{k} {v:g}" for k, v in sorted(c.items()) if v)  # noqa: E731
    lines.append(
        f"Redis: {m['apps']} apps deployed in {m['deploy_s']:.1f} s through host 1 (4 tenants, a thread each); "
        f"`used_memory` {fmt_bytes(m['used_before'])} before, {fmt_bytes(m['used_after'])} after (after MEMORY "
        f"PURGE). Each app is its own skiff.toml around the same hello.wasm, so every bundle is stored whole "
        f"({statistics.median(m['bundle_len']):,.0f} bytes): Redis keeps bundles as uploaded, with no sharing of "
        f"equal content. Hashes of up to 128 entries are stored compactly (listpack), so the per-entry figures of "
        f"the {SYNTHETIC_ENTRIES:,}-entry hash are the ones to scale with. Commands per deploy, 3 hosts (median): "
        f"config {calls(d['config']['calls'])}; new code {calls(d['code']['calls'])} (EVALSHA is the compare-and-swap "
        f"script, with its PUBLISH inside). Idle, over {idle['seconds']:.0f} s with `--cluster-resync` 10 s: "
        f"{calls(idle['calls'])}. The synthetic hash: names like `{s['name_example']}`, revisions like "
        f"`{s['revision_example']}`; HGETALL as the client saw it {statistics.median(s['hgetall_client_ms']):.0f} ms "
        f"(Redis {s['hgetall_usec'] / 1000:.1f} ms, the rest is this Python client reading it); the report's pipeline "
        f"{statistics.median(s['report_client_ms']):.0f} ms as the client saw it (Redis: DEL {s['del_usec'] / 1000:.1f}, "
        f"HSET {s['hset_usec'] / 1000:.1f}, EXEC {s['exec_usec'] / 1000:.1f} ms). "
        f"{r['redis_version']}; {r['haproxy_version']}. Load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_start"]) + "; at the end: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_end"]) + ".")
    j = r["join"]
    lines.append(
        f"A 4th host with an empty data folder, started once the {j['apps']} apps were deployed, answered "
        f"`/readyz` with 200 {j['ready_ms']:,.0f} ms after it was spawned; the same into the empty cluster, "
        f"{r['join_empty_ms']:,.0f} ms (the first 3, started together, "
        f"{min(r['ready_empty_ms']):,.0f}-{max(r['ready_empty_ms']):,.0f} ms). A host that "
        f"joins reads every app's record, one after the other (an HGET and a GET each), before it is ready: "
        f"about {join_per_app_ms(r):.2f} ms per app here."
        + (f" A host stopped with SIGTERM stays in the cluster's list of hosts (`skiff:c:hosts`) until its "
           f"report expires, {r['stopped_host_listed_ms'] / 1000:.0f} s after it stopped here (3 resyncs): until then "
           f"`apps inspect` lists it as a host that does not serve the app's revision. The script removes the 4th "
           f"host from that list itself, so that its own `apps inspect` polls count the 3 hosts."
           if r.get("stopped_host_listed_ms") else ""))
    warnings = [f"{h}: {w}" for h, ws in r.get("log_warnings", {}).items() for w in ws]
    if warnings:
        lines.append("Warnings and errors in the hosts' logs (last ones): "
                     + "; ".join(f"`{w[-300:]}`" for w in warnings[:6]) + ".")
    else:
        lines.append("No warning or error in the hosts' logs.")
    return "\n\n".join(lines)


def join_per_app_ms(r):
    j = r["join"]
    return max(0.0, j["ready_ms"] - r["join_empty_ms"]) / j["apps"]


def build_model(r, args):
    """The scale model: 100 hosts, 100,000 apps, from the figures measured above."""
    d, m, s, idle = deploy_figures(r), r["memory"], r["synthetic"], r["idle"]
    H, A, R = args.model_hosts, args.model_apps, 10.0
    rec = statistics.median(m["app_usage"])
    rec_full = r["web_record_after_deploys"]["bytes"]
    bun = statistics.median(m["bundle_usage"])
    entry = s["usage"] / s["entries"]  # one name → revision entry of a large hash
    host_entry = s["host_usage"] / s["entries"]
    wire = s["hgetall_bytes"] / s["entries"]
    report_wire = s["report_bytes"] / s["entries"]
    hget_us, hset_us, del_us = s["hgetall_usec"], s["hset_usec"], s["del_usec"]
    scale = A / s["entries"]
    times_scale = "" if scale == 1 else f" × {scale:g} (apps / entries measured)"
    compile_ms = d["compile_ms"]
    hello_compile_ms = max(0.0, r["hello_first_deploy_ms"] - d["config"]["call"]["p50"])

    records = A * (rec + 2 * entry)
    records_full = A * (rec_full + 2 * entry)
    reports = H * A * host_entry
    bundles1, bundles6 = A * bun, A * bun * (KEEP_VERSIONS + 1)
    per_change_reads = H * (rec + 200)
    per_change_report_bytes = H * A * report_wire
    per_change_report_s = H * (hset_us + del_us) * scale / 1e6
    resync_out = H / R * A * wire
    resync_in = H / R * A * report_wire
    resync_busy = H / R * (hget_us + hset_us + del_us) * scale / 1e6
    compile_hours = A * hello_compile_ms / 1000 / 3600
    compile_hours_big = A * compile_ms / 1000 / 3600
    join_s = A * join_per_app_ms(r) / 1000
    code_msgs = d["code"]["calls"].get("publish", 0)

    rows = [f"| quantity, {H} hosts and {A:,} apps | formula (measured inputs above) | result |", "|---|---|---:|",
            f"| Redis: app records | {A:,} × ({rec:,.0f} B record + 2 × {entry:.0f} B entries in `skiff:c:apps` and "
            f"`skiff:c:code:T`) | {fmt_bytes(records)} |",
            f"| the same, each app keeping {KEEP_VERSIONS + 1} versions | {A:,} × ({rec_full:,} + 2 × {entry:.0f}) | "
            f"{fmt_bytes(records_full)} |",
            f"| Redis: host reports | {H} hosts × {A:,} apps × {host_entry:.0f} B | {fmt_bytes(reports)} |",
            f"| Redis: bundles, one version each, hello-sized | {A:,} × {bun:,.0f} B | {fmt_bytes(bundles1)} |",
            f"| the same, {KEEP_VERSIONS + 1} versions each | × {KEEP_VERSIONS + 1} | {fmt_bytes(bundles6)} |",
            f"| one change: announcements | 1 PUBLISH → {H} deliveries | {H} messages |",
            f"| one change: records read | {H} hosts × (HGET + GET, ~{rec + 200:,.0f} B) | {fmt_bytes(per_change_reads)} |",
            f"| one change: bundle fetched by hosts that have the app loaded | up to {H} × {bun:,.0f} B | "
            f"{fmt_bytes(H * bun)} |",
            f"| one change: host reports written (every host rewrites all it serves) | {H} × {A:,} × "
            f"{report_wire:.1f} B | {fmt_bytes(per_change_report_bytes)} |",
            f"| one change: Redis busy with those reports | {H} × (HSET {hset_us / 1000:.1f} + DEL {del_us / 1000:.1f} ms) "
            f"{times_scale} | {per_change_report_s:,.1f} s |",
            f"| resync: HGETALL `skiff:c:apps` out of Redis | {H} / {R:.0f} s × {A:,} × {wire:.1f} B | "
            f"{fmt_bytes(resync_out)}/s |",
            f"| resync: reports into Redis | {H} / {R:.0f} s × {A:,} × {report_wire:.1f} B | {fmt_bytes(resync_in)}/s |",
            f"| resync: Redis busy, of its one thread | {H} / {R:.0f} s × (HGETALL {hget_us / 1000:.1f} + HSET "
            f"{hset_us / 1000:.1f} + DEL {del_us / 1000:.1f} ms){times_scale} | {resync_busy * 100:,.0f} % |",
            f"| a new host reads every record before it is ready | {A:,} × {join_per_app_ms(r):.2f} ms | "
            f"{join_s:,.0f} s |",
            f"| cold caches: compiling every app once on one host, hello-sized | {A:,} × {hello_compile_ms:,.0f} ms | "
            f"{compile_hours:,.1f} CPU-hours |",
            f"| the same, the {r['web_wasm_bytes'] // 1000} KB test guest | {A:,} × {compile_ms:,.0f} ms | "
            f"{compile_hours_big:,.1f} CPU-hours |",
            f"| hello-sized, on every host (any host serves any app) | × {H} | {compile_hours * H:,.0f} CPU-hours |"]
    table = "\n".join(rows)
    redis_total = records + reports + bundles1
    text = f"""### Scale model: {H} hosts, {A:,} apps

What the design as built does at {H} hosts and {A:,} apps, computed from the figures above (the
table's formulas show which; a figure scales with what its formula says, nothing else is
assumed). The changes, the reads and the resyncs all go through one Redis, which runs commands
on one thread. The bundle sizes are the hello app's ({statistics.median(m['bundle_len']):,.0f} bytes gzipped):
real apps are larger, often by 100x, and the bundle rows grow with them.

{table}

What scales:

- **Announcements and record reads.** A change is one script run (compare-and-swap with the
  quotas, {d['config']['calls'].get('evalsha', 1):g} EVALSHA) and one PUBLISH, which Redis
  delivers to {H} subscribers; each host then reads one record ({rec:,.0f} B). Measured with 3
  hosts, a deploy that changes only the configuration takes {d['config']['commands']:.0f} commands
  in all, and reaches the last host {fmt_ms(d['config']['from_return']['p50'])} ms (median) after the call
  returned. At {H} hosts that is {H} small messages and about {fmt_bytes(per_change_reads)} read per change:
  nothing for Redis.
- **Bundle fetches** are per host and per version, only where the app is loaded (the others
  fetch on their next request): up to {fmt_bytes(H * bun)} per hello-sized deploy.

What does not scale, as built:

- **Host reports.** After every change it applies and after every resync, each host rewrites
  its whole `skiff:c:host:HOST` hash (DEL, then HSET of every app it serves). With {A:,} apps and
  {H} hosts one deploy makes Redis rewrite {fmt_bytes(per_change_report_bytes)} and keeps it busy
  {per_change_report_s:,.1f} s: the cluster could absorb about {1 / per_change_report_s if per_change_report_s else float('inf'):.2f}
  changes per second in all, with every other command (deploys, key-value stores) waiting behind
  those rewrites. The reports also take {fmt_bytes(reports)} of Redis memory. This is the part to
  fix first. Since every change gets a number from one counter (`skiff:c:revision`), a host can
  report a watermark instead: "applied every change up to revision N", plus the few apps it
  failed to apply, one small write per change; `apps inspect` then compares the app's revision
  with each host's watermark. Short of that, a host can HSET only the app it just applied and
  rewrite the whole hash at most at resync, spread over the interval.
- **Resync.** Every host reads all of `skiff:c:apps` every 10 s (HGETALL: {A:,} entries,
  {fmt_bytes(A * wire)}) and then reports all of it: {fmt_bytes(resync_out)}/s out of Redis and
  {fmt_bytes(resync_in)}/s into it, and {resync_busy * 100:,.0f} % of Redis's one thread, with
  nothing changing. Idle today (3 hosts, {m['apps_in_hash']} apps) a host costs
  {idle['commands'] / HOSTS / idle['seconds']:.1f} commands/s and {fmt_bytes(idle['net_out'] / HOSTS / idle['seconds'])}/s;
  that grows with hosts × apps. Fixes: compare one number first (GET `skiff:c:revision`) and read
  everything only when it moved past what the host has applied and announcements may have been
  missed; better, keep the changes in a Redis stream (XADD per change, each host XREADs from
  the last entry it applied), so that a host that missed announcements catches up with what it
  missed, not with everything, and reads everything only when the stream was trimmed past it.
- **Bundles in Redis.** {A:,} hello-sized apps take {fmt_bytes(bundles1)} of Redis memory with
  one version each and {fmt_bytes(bundles6)} with the {KEEP_VERSIONS} kept for rollback; with real app
  sizes, terabytes. The example Redis (`deploy/kubernetes/cluster/redis`, `maxmemory 768mb`)
  holds about {768e6 / (bun + rec + 2 * entry + H * host_entry):,.0f} hello-sized apps at {H} hosts. Redis should
  hold the digests, and the bundles live in an object store or the OCI registry the apps can
  already be deployed from (content-addressed, so equal bundles are stored once).
  Without bundles, records and reports as built come to {fmt_bytes(records + reports)}; with
  watermark reports, {fmt_bytes(records)}.
- **Cold caches.** Each host compiles each distinct component on its first request there
  (about {fmt_ms(hello_compile_ms)} ms for the {r['hello_wasm_bytes']:,}-byte hello app: its first deploy,
  {fmt_ms(r['hello_first_deploy_ms'])} ms, less a deploy without compiling; {fmt_ms(compile_ms)} ms for the
  {r['web_wasm_bytes']:,}-byte test guest; larger components take seconds). Behind a load balancer that sends any app to any host, every host ends up compiling
  every app: {compile_hours:,.1f} CPU-hours per host for {A:,} distinct components,
  {compile_hours * H:,.0f} for the fleet, again for every new host (the HPA adds hosts with empty
  caches) and after every skiff upgrade, and a compiled-code cache of all of them on each host's
  disk. Apps that share code (the same template) compile once per host. Fixes: send each app to a
  few hosts (consistent hashing of the Host header at the proxy, HAProxy's `balance hdr(host)`
  with `hash-type consistent`), so each app compiles on a few hosts, not {H}; and share compiled
  code between hosts of the same skiff version and CPU features (by content hash, beside the
  bundles).
- **Joining.** A new host reads the records one round trip at a time before it says it is
  ready: about {join_s:,.0f} s at {A:,} apps. Every host restarted in a rollout, and every host
  the HPA adds, waits that long; reading them in pipelined batches (or MGET of many records)
  would cut it by the batch size.
- **One Redis.** Everything above goes through one Redis process; the scripts touch keys of
  several hash slots, so a Redis Cluster cannot spread it. The apps' key-value stores use the
  same Redis unless the runtime config names another: at this scale give them their own.

Redis memory at {H} hosts and {A:,} hello-sized apps as built, one version each: about
{fmt_bytes(redis_total)} (records {fmt_bytes(records)}, reports {fmt_bytes(reports)}, bundles
{fmt_bytes(bundles1)})."""
    return text


def report(args, results, started, machine_line, save):
    deploys_table, throughput_table, memory_table, work_table = build_tables(results, args)
    details = build_details(results, args)
    model = build_model(results, args)
    command = "bench/run.sh --cluster" + (" --quick" if args.quick else "")
    how = (f"{'Quick smoke run: not figures to quote. ' if args.quick else ''}"
           f"`{command}` (or, built, `python3 bench/cluster.py`): one `redis-server` (no persistence) and 3 hosts "
           f"(`skiff server --cluster redis://127.0.0.1:PORT/0 --host-id host-N --drain-delay 1s`, default "
           f"`--cluster-resync` 10 s, log level warn, each its own data folder and code cache) on 127.0.0.2, "
           f"127.0.0.3 and 127.0.0.4, all 3 pinned to CPU {SERVER_CPU}; Redis, HAProxy (one thread), wrk and the "
           f"measuring client pinned to CPU {LOADGEN_CPU}. Deploys: {2 * args.deploys} deploys of the app `web` "
           f"(the http test guest; it answers `GET /env/VERSION` with its `VERSION`) through host 1's management "
           f"API (`PUT /v1/apps/web`), alternating a config change (a new `VERSION`, the same component) and new code "
           f"(a new `VERSION` and a custom section appended to the component, so its hash is new and every host "
           f"compiles it), {args.pause:g} s apart; while each deploy call runs and after it, the client polls "
           f"`GET /env/VERSION` on the 3 data planes, each on a keep-alive connection, about every millisecond, and "
           f"notes when each first answers the new version; then it polls `GET /v1/apps/web` until its `cluster` "
           f"field shows 3 of 3 hosts converged. Throughput: the hello app (`examples/hello`), wrk `-t1 "
           f"-c{args.connections} -d{args.duration}s` straight to host 1, through HAProxy to host 1 alone and through "
           f"the same HAProxy to the 3 (round robin, `/readyz` checks, the cluster test's retries), interleaved, "
           f"medians of {args.reps} repetitions. Redis: INFO and MEMORY USAGE read by the script itself (RESP).")
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command,
                               [deploys_table, throughput_table, memory_table, work_table, details, model])
    bench.keep_results("cluster", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 deploys of each kind, 50 apps, 1 repetition of 3 s wrk runs, 12 s idle; writes no docs")
    parser.add_argument("--deploys", type=int, help="deploys of each kind (default 50; 10 with --quick)")
    parser.add_argument("--apps", type=int, help="apps deployed for the memory figures (default 500; 50 with --quick)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--idle", type=float, help="seconds of idle hosts to count Redis commands (default 30)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between deploys")
    parser.add_argument("--model-hosts", type=int, default=100)
    parser.add_argument("--model-apps", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--note", default="", help="a line to add under the description")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier run's cluster.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.reps, args.duration, args.no_write = 1, 3, True
        args.deploys, args.apps = args.deploys or 10, args.apps or 50
        args.idle = args.idle or 12
    args.deploys, args.apps, args.idle = args.deploys or 50, args.apps or 500, args.idle or 30

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    skiff = os.environ.get("SKIFF", os.path.join(target, "release/skiff"))
    http_wasm = os.environ.get("HTTP_GUEST_WASM", os.path.join(target, "guests/wasm32-wasip2/release/http_guest.wasm"))
    if not os.path.exists(skiff):
        fail(f"no skiff binary at {skiff}: run `cargo build --release -p skiff` (or bench/run.sh --cluster)")
    if not os.path.exists(http_wasm):
        fail(f"no http test guest at {http_wasm}: run scripts/build-guests.sh (or bench/run.sh --cluster)")
    for tool in ("wrk", "taskset", "haproxy", "redis-server"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: run bench/run.sh --cluster, which installs it")
    if (os.cpu_count() or 1) < 2:
        fail(f"the hosts run on CPU {SERVER_CPU} and the rest on CPU {LOADGEN_CPU}: this needs 2 CPUs")
    for ip in (f"127.0.0.{n + 1}" for n in range(1, HOSTS + 2)):
        try:
            free_port(ip)
        except OSError as e:
            fail(f"cannot listen on {ip} ({e}): the hosts need their own loopback addresses")
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 65536), hard), hard))
    except (ImportError, ValueError, OSError):
        pass
    machine_line = bench.machine()  # before pinning this process: `nproc` would say 1
    try:
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    except (AttributeError, OSError):
        pass

    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="skiff-cluster-")
    try:
        results = measure(args, skiff, http_wasm, workdir)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"cluster: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
