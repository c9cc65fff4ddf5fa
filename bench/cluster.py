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
     three converged (the hosts' reports, watermarks). Around each deploy it reads Redis's INFO (command
     counts and bytes) once the hosts have settled.
  2. throughput of the hello app (`examples/hello`): wrk -t1 -c32 straight to host 1, through
     HAProxy to host 1 alone, and through the same HAProxy to all three (round robin, /readyz
     checks, the cluster test's settings), interleaved, with the CPU time each process used.
     On 2 CPUs the three hosts share one CPU: this measures what the proxy and the
     coordination cost, not how a fleet scales.
  3. Redis memory: INFO used_memory before and after deploying N apps (4 tenants, each app
     its own skiff.toml around the same hello.wasm), MEMORY USAGE of the keys of each kind;
     then how long a 4th host (127.0.0.5, empty data folder) takes to be ready with them.
  4. the Redis commands and bytes of three idle hosts over --idle seconds (their resyncs: a
     GET of the newest revision and a report each).
  5. catching up from the change log: host 3 is stopped (SIGSTOP), Redis closes its
     subscription (CLIENT KILL), the N apps are deployed again, host 3 goes on (SIGCONT); the
     time until its report says it applied them all, and the Redis commands it took.
  6. synthetic, in another Redis database: a hash of 100,000 entries shaped like
     `skiff:c:apps`, its memory and the bytes and Redis time of HGETALL (what a host that
     joins reads at 100,000 apps); a watermark report as a host writes it (its bytes, memory
     and Redis time); a change log of 100,000 entries written as the change scripts do (its
     memory per entry, XADD's time) and XRANGE of 1000 entries from it (one catch-up batch).

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
# What an idle host sends Redis: each resync, a GET of the newest revision and its report; each
# --usage-flush, its usage (MULTI, RPUSH, EXPIRE, EXEC).
IDLE_COMMANDS = {"get", "multi", "del", "hset", "pexpire", "zadd", "zremrangebyscore", "exec", "rpush", "expire"}


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


# Commands the hosts send only inside a MULTI … EXEC (reports, usage), whose Redis time EXEC's
# includes: left out of a sum of Redis time, so as not to count it twice.
IN_TRANSACTION = ("del", "hset", "pexpire", "zadd", "zremrangebyscore", "rpush", "expire")


def redis_time(usec):
    """The Redis time (µs) of commands that ran outside scripts: each EXEC with what it ran."""
    return sum(v for k, v in usec.items() if k not in IN_TRANSACTION)


def stats_delta(before, after, own=("info",)):
    """What the hosts did between two INFO snapshots: commands by name and the Redis time
    (µs) they took (but the kinds of command this client sent meanwhile, `own`), bytes in and
    out (this client's first INFO reply taken off)."""
    calls, usec = {}, {}
    for name, now in after["commands"].items():
        if name.split("|")[0] in own:  # Redis 7 names subcommands `pubsub|numsub`
            continue
        was = before["commands"].get(name, {"calls": 0, "usec": 0})
        n = now["calls"] - was["calls"]
        if n:
            calls[name] = n
            usec[name] = now["usec"] - was["usec"]
    return {"calls": calls, "usec": usec, "commands": sum(calls.values()),
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


def app_bundle(name, wasm, variant=""):
    manifest = (f'[app]\nname = "{name}"\nversion = "0.1.0"\ndescription = "cluster benchmark app {name}{variant}"\n\n'
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
        # HMGET per host (its watermark): not the deploy's, so taken off (ZRANGEBYSCORE and
        # HMGET are the check: nothing else sends them). Their Redis time is taken off pro rata.
        calls, usec = run["redis"]["calls"], run["redis"]["usec"]
        run["inspect_polls"] = polls
        run["inspect_accounted"] = (calls.get("zrangebyscore", 0) == polls
                                    and calls.get("hmget", 0) == polls * HOSTS)
        for name, n in (("zrangebyscore", polls), ("hmget", polls * HOSTS), ("hget", polls)):
            had = calls.get(name, 0)
            calls[name] = had - n
            if had > 0:
                usec[name] = usec.get(name, 0) * max(0, had - n) / had
            if not calls[name]:
                del calls[name]
                usec.pop(name, None)
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


def deploy_apps(hosts, tokens, n, wasm, variant=""):
    """Deploys app-0000 .. app-N through host 1, a thread per tenant; returns the seconds taken."""
    bundles = [app_bundle(f"app-{i:04d}", wasm, variant) for i in range(n)]
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
    return time.monotonic() - started, len(bundles[-1])


def measure_redis_memory(hosts, redis, wasm, args, tokens):
    client = redis.client
    n = args.apps
    tokens += [create_tenant(hosts[0], f"tenant-{t}", n, (n + 10) * len(wasm) * 2) for t in range(TENANTS)]
    time.sleep(0.5)
    client.cmd("MEMORY", "PURGE")
    before = client.info("memory", "stats", "commandstats")
    deploy_s, bundle_bytes = deploy_apps(hosts, tokens, n, wasm)
    # Every host has applied every change (its report, a watermark, follows each change it
    # applied).
    total_apps = client.cmd("HLEN", "skiff:c:apps")
    wait_applied(client, hosts, 60, "the deploys of the apps")
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
    for key in ["skiff:c:apps", "skiff:c:tenants", "skiff:c:hosts", "skiff:c:change-log"] + \
            [f"skiff:c:host:{h.name}" for h in hosts] + [f"skiff:c:code:tenant-{t}" for t in range(TENANTS)] + \
            [f"skiff:c:kept:tenant-{t}" for t in range(TENANTS)]:
        kind = client.cmd("TYPE", key)
        length = {"hash": "HLEN", "stream": "XLEN", "zset": "ZCARD"}.get(kind)
        keys[key] = {"type": kind, "entries": client.cmd(length, key) if length else None,
                     "bytes": memory_usage(client, key)}
    # What a host that joins reads at this size (besides each app's record).
    client.read_bytes = 0
    client.cmd("HGETALL", "skiff:c:apps")
    hgetall_bytes = client.read_bytes
    web = {"bytes": memory_usage(client, "skiff:c:app:web"), "len": client.cmd("STRLEN", "skiff:c:app:web")}
    return {"apps": n, "tenants_total": tenants, "deploy_s": deploy_s, "bundle_bytes_uploaded": bundle_bytes,
            "used_before": before["used_memory"], "used_after": after["used_memory"],
            "deploy_redis": stats_delta(before, after, own=("info", "hlen", "memory", "hmget")),
            "app_usage": app_usage, "app_len": app_len,
            "bundle_keys": len(bundle_keys), "bundle_usage": bundle_usage, "bundle_len": bundle_len,
            "tenant_record_len": [client.cmd("HSTRLEN", "skiff:c:tenants", t) for t in tenant_names],
            "keys": keys, "hgetall_apps_bytes": hgetall_bytes, "apps_in_hash": total_apps, "web_record": web}


def host_applied(client, host):
    """The watermark host `host` reported: every change up to it applied (0: no report)."""
    applied = client.cmd("HMGET", f"skiff:c:host:{host.name}", "applied")[0]  # HMGET: no host sends it then
    return int(applied) if applied is not None else 0


def wait_applied(client, hosts, timeout, what):
    """Waits until every host's report says it applied every change up to the cluster's
    newest revision."""
    newest = int(client.cmd("GET", "skiff:c:revision") or 0)
    deadline = time.monotonic() + timeout
    while any(host_applied(client, h) < newest for h in hosts):
        if time.monotonic() > deadline:
            fail(f"the hosts did not report every change applied within {timeout} s after {what}: "
                 + ", ".join(f"{h.name} {host_applied(client, h)}" for h in hosts) + f" of {newest}")
        time.sleep(0.05)
    return newest


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


def subscription_of(client, host):
    """The Redis client id of `host`'s subscription to the changes: the pub/sub connection
    whose local port is one of the host process's sockets."""
    inodes = set()
    fd_dir = f"/proc/{host.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    for line in client.cmd("CLIENT", "LIST", "TYPE", "pubsub").decode().splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if int(fields["addr"].rsplit(":", 1)[1]) in ports:
            return fields["id"]
    return None


def subscribers(client):
    reply = client.cmd("PUBSUB", "NUMSUB", "skiff:c:changes")
    return int(reply[1])


def measure_catch_up(hosts, redis, wasm, tokens, n):
    """Makes host 3 miss `n` changes and catch up from the change log: it is stopped (SIGSTOP),
    its subscription is closed by Redis (CLIENT KILL), the `n` apps are deployed again through
    host 1, then it is let go on (SIGCONT). Times from then until its report says it applied
    every change, and counts the Redis commands it sent meanwhile."""
    client = redis.client
    late = hosts[-1]
    wait_applied(client, hosts, 30, "the run so far")
    sub = subscription_of(client, late)
    if sub is None:
        return {"error": f"could not find {late.name}'s subscription in CLIENT LIST"}
    before_revision = int(client.cmd("GET", "skiff:c:revision"))
    os.kill(late.pid, signal.SIGSTOP)
    try:
        client.cmd("CLIENT", "KILL", "ID", sub)
        deploy_s, _ = deploy_apps(hosts, tokens, n, wasm, variant=", again")
        newest = wait_applied(client, hosts[:-1], 30, "the deploys host 3 missed")
        time.sleep(0.2)
        before = client.info("stats", "commandstats")
        stopped_subscribers = subscribers(client)
        t0 = time.monotonic()
    finally:
        os.kill(late.pid, signal.SIGCONT)
    resubscribed = caught_up = None
    while caught_up is None:
        now = time.monotonic()
        if resubscribed is None and subscribers(client) > stopped_subscribers:
            resubscribed = now
        if host_applied(client, late) >= newest:
            caught_up = now
        elif now - t0 > 30:
            late.check_alive("while catching up")
            return {"error": f"{late.name} did not catch up within 30 s: applied {host_applied(client, late)} "
                             f"of {newest}"}
        time.sleep(0.001)
    after = client.info("stats", "commandstats")
    d = stats_delta(before, after, own=("info", "pubsub", "hmget"))
    late.check_alive("after catching up")
    return {"changes": newest - before_revision, "apps": n, "deploy_s": deploy_s,
            "ms_from_resume": (caught_up - t0) * 1000,
            # It catches up at once when its resync comes first, else once it has subscribed again
            # (after a pause of 250 ms): the catch-up's own time is from the later of the two.
            "ms_catch_up": (caught_up - (resubscribed if resubscribed and resubscribed < caught_up else t0)) * 1000,
            "resubscribed_first": bool(resubscribed and resubscribed < caught_up),
            "redis": d}


def measure_synthetic(redis, entries):
    """In database 1: a hash of `entries` app names → revisions shaped like `skiff:c:apps`
    (what a host that joins reads whole); a watermark report as `RedisState::report_host`
    writes it; a change log of `entries` entries as the change scripts append to it, and a
    catch-up batch read from it (XRANGE of 1000 entries)."""
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

        # A host's report, as RedisState::report_host sends it, with no skipped app: MULTI, DEL,
        # HSET applied N, PEXPIRE, ZADD, ZREMRANGEBYSCORE, EXEC; and the GET of the newest
        # revision a resync starts with.
        host_key, applied = "skiff:c:host:host-042", revision + entries
        client.cmd("SET", "bench:revision", applied)
        now_ms = int(time.time() * 1000)
        report = [["MULTI"], ["DEL", host_key], ["HSET", host_key, "applied", applied],
                  ["PEXPIRE", host_key, 30000], ["ZADD", "bench:hosts", now_ms + 30000, "host-042"],
                  ["ZREMRANGEBYSCORE", "bench:hosts", "-inf", now_ms], ["EXEC"]]
        reports = 1000
        client.pipeline(report)
        client.cmd("CONFIG", "RESETSTAT")
        report_ms = []
        for _ in range(reports):
            t0 = time.perf_counter()
            _, sent = client.pipeline(report)
            report_ms.append((time.perf_counter() - t0) * 1000)
        for _ in range(reports):
            client.cmd("GET", "bench:revision")
        stats = client.info("commandstats")["commands"]
        report_usage = memory_usage(client, host_key)
        per_call = {c: stats[c]["usec"] / stats[c]["calls"]
                    for c in ("del", "hset", "pexpire", "zadd", "zremrangebyscore", "exec", "get")}

        # The change log: XADD as the change scripts do (MAXLEN ~ entries, id REVISION-0, kind and
        # name), a tenth more than it keeps, so that it is trimmed as in a cluster that has run.
        added = entries + entries // 10
        client.cmd("CONFIG", "RESETSTAT")
        for lo in range(0, added, 10_000):
            client.pipeline([["XADD", "bench:change-log", "MAXLEN", "~", entries, f"{revision + i}-0",
                              "kind", "app", "name", names[i % entries]]
                             for i in range(lo, min(added, lo + 10_000))])
        stats = client.info("commandstats")["commands"]
        xadd_usec = stats["xadd"]["usec"] / stats["xadd"]["calls"]
        log_len = client.cmd("XLEN", "bench:change-log")
        log_usage = memory_usage(client, "bench:change-log")
        first = int(client.cmd("XRANGE", "bench:change-log", "-", "+", "COUNT", 1)[0][0].split(b"-")[0])
        # Catch-up batches from watermarks spread over the log, as RedisState::changes_since
        # reads them: XRANGE log WATERMARK-1 + COUNT 1000.
        batch, reads = 1000, 50
        client.cmd("CONFIG", "RESETSTAT")
        xrange_ms, xrange_bytes = [], []
        for k in range(reads):
            watermark = first + (log_len - batch - 1) * k // reads
            client.read_bytes = 0
            t0 = time.perf_counter()
            got = client.cmd("XRANGE", "bench:change-log", f"{watermark}-1", "+", "COUNT", batch)
            xrange_ms.append((time.perf_counter() - t0) * 1000)
            xrange_bytes.append(client.read_bytes)
            if len(got) != batch or int(got[0][0].split(b"-")[0]) != watermark + 1:
                fail(f"XRANGE from {watermark}-1 did not start at {watermark + 1}: {got[:1]!r}")
        stats = client.info("commandstats")["commands"]
        xrange_usec = stats["xrange"]["usec"] / stats["xrange"]["calls"]
        client.cmd("FLUSHDB")
        return {"entries": entries, "name_example": names[-1], "revision_example": str(revision),
                "usage": usage, "hgetall_bytes": reply_bytes, "hgetall_client_ms": hgetall,
                "hgetall_usec": hgetall_usec,
                "report_bytes": sent, "report_client_ms": statistics.median(report_ms), "reports": reports,
                "report_usage": report_usage, "report_usec": per_call,
                "log_added": added, "log_len": log_len, "log_usage": log_usage, "xadd_usec": xadd_usec,
                "xrange_batch": batch, "xrange_reads": reads, "xrange_bytes": statistics.median(xrange_bytes),
                "xrange_client_ms": statistics.median(xrange_ms), "xrange_usec": xrange_usec}
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
        tokens = []
        results["memory"] = measure_redis_memory(hosts, redis, hello, args, tokens)
        m = results["memory"]
        log(f"   used_memory {m['used_before'] / 1e6:.2f} -> {m['used_after'] / 1e6:.2f} MB "
            f"({(m['used_after'] - m['used_before']) / m['apps']:.0f} bytes per app)")

        log(f"== a 4th host joins (empty data folder): time to ready with {m['apps_in_hash']} apps in the cluster")
        joins = [join(skiff, workdir, redis, admin, f"host-4-{k}")[0] for k in range(3)]
        results["join"] = {"ready_ms": statistics.median(joins), "ready_ms_all": joins, "apps": m["apps_in_hash"]}
        log(f"   ready after {results['join']['ready_ms']:.0f} ms (median of "
            + ", ".join(f"{x:.0f}" for x in joins) + f"; into the empty cluster: {results['join_empty_ms']:.0f} ms)")

        log(f"== {HOSTS} idle hosts for {args.idle} s: Redis commands and bytes")
        results["idle"] = measure_idle(redis, args.idle)
        i = results["idle"]
        log(f"   {i['commands']} commands, {i['net_out']} bytes out, {i['net_in']} bytes in: {i['calls']}")

        log(f"== {hosts[-1].name} misses {args.apps} changes (stopped, its subscription closed) and catches up "
            f"from the change log")
        results["catch_up"] = c = measure_catch_up(hosts, redis, hello, tokens, args.apps)
        if "error" in c:
            log(f"   {c['error']}")
        else:
            log(f"   {c['changes']} changes caught up {c['ms_from_resume']:.0f} ms after it went on "
                f"({c['ms_catch_up']:.0f} ms of catching up); Redis: {c['redis']['calls']}")

        log(f"== synthetic, {SYNTHETIC_ENTRIES:,} apps: HGETALL (a joining host), a watermark report, "
            f"a change log and a catch-up batch")
        results["synthetic"] = measure_synthetic(redis, SYNTHETIC_ENTRIES)
        s = results["synthetic"]
        log(f"   hash {s['usage'] / 1e6:.1f} MB, HGETALL {s['hgetall_bytes'] / 1e6:.2f} MB in "
            f"{s['hgetall_usec'] / 1000:.1f} ms of Redis; report {s['report_bytes']} B sent, "
            f"{s['report_usec']['exec']:.1f} µs of Redis; change log {s['log_usage'] / s['log_len']:.1f} B per entry, "
            f"XADD {s['xadd_usec']:.1f} µs; XRANGE of {s['xrange_batch']} {s['xrange_bytes'] / 1e3:.1f} KB in "
            f"{s['xrange_usec'] / 1000:.2f} ms of Redis")

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
            "usec": statistics.median(sum(x["redis"].get("usec", {}).values()) for x in runs if x["kind"] == kind),
            "calls": {},
        }
        names = sorted({c for x in runs if x["kind"] == kind for c in x["redis"]["calls"]})
        for c in names:
            out[kind]["calls"][c] = statistics.median(x["redis"]["calls"].get(c, 0) for x in runs if x["kind"] == kind)
    out["compile_ms"] = out["code"]["call"]["p50"] - out["config"]["call"]["p50"]
    # Redis time per call of each command over every deploy (µs).
    totals = {}
    for x in runs:
        for c, n in x["redis"]["calls"].items():
            t = totals.setdefault(c, [0, 0.0])
            t[0] += n
            t[1] += x["redis"].get("usec", {}).get(c, 0)
    out["usec_per_call"] = {c: u / n for c, (n, u) in totals.items() if n > 0}
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
    log_key = m["keys"]["skiff:c:change-log"]
    code_keys = [v for k, v in m["keys"].items() if k.startswith("skiff:c:code:")]
    code_entry = sum(v["bytes"] for v in code_keys) / max(1, sum(v["entries"] or 0 for v in code_keys))
    kept_keys = [v for k, v in m["keys"].items() if k.startswith("skiff:c:kept:") and v["type"] == "hash"]
    kept_entry = sum(v["bytes"] for v in kept_keys) / max(1, sum(v["entries"] or 0 for v in kept_keys))
    rows = ["| Redis | bytes |", "|---|---:|",
            f"| `used_memory` growth per app ({m['apps']} apps in {TENANTS} tenants, one version each, "
            f"change log included) | {per_app:,.0f} |",
            f"| `skiff:c:app:NAME`, one version (MEMORY USAGE, median; JSON {statistics.median(m['app_len']):,.0f}) "
            f"| {statistics.median(m['app_usage']):,.0f} |",
            f"| `skiff:c:app:web` with {KEEP_VERSIONS + 1} versions (JSON {r['web_record_after_deploys']['len']:,}) "
            f"| {r['web_record_after_deploys']['bytes']:,} |",
            f"| `skiff:c:bundle:ID`, the hello app (MEMORY USAGE, median; upload {m['bundle_bytes_uploaded']:,}) "
            f"| {statistics.median(m['bundle_usage']):,.0f} |",
            f"| `skiff:c:apps`, per entry ({apps_key['entries']} entries) | {apps_key['bytes'] / apps_key['entries']:,.0f} |",
            f"| `skiff:c:host:HOST`, a host's whole report (its watermark; {host_key['entries']} field) | "
            f"{host_key['bytes']:,} |",
            f"| `skiff:c:change-log`, per entry ({log_key['entries']:,} entries) | "
            f"{log_key['bytes'] / max(1, log_key['entries'] or 0):,.0f} |",
            f"| `skiff:c:code:TENANT`, per entry | {code_entry:,.0f} |",
            *([f"| `skiff:c:kept:TENANT`, per entry | {kept_entry:,.0f} |"] if kept_keys else []),
            f"| a tenant record (JSON in `skiff:c:tenants`, median) | {statistics.median(m['tenant_record_len']):,.0f} |",
            f"| HGETALL `skiff:c:apps` as read by a host that joins ({m['apps_in_hash']} apps), reply | "
            f"{m['hgetall_apps_bytes']:,} |",
            f"| {SYNTHETIC_ENTRIES:,}-entry hash like `skiff:c:apps` (MEMORY USAGE) | {s['usage']:,} "
            f"({s['usage'] / s['entries']:.0f} per entry) |",
            f"| its HGETALL reply | {s['hgetall_bytes']:,} ({s['hgetall_bytes'] / s['entries']:.1f} per entry) |",
            f"| a watermark report as sent (MULTI, DEL, HSET applied, PEXPIRE, ZADD, ZREMRANGEBYSCORE, EXEC) "
            f"| {s['report_bytes']:,} |",
            f"| the report's hash (MEMORY USAGE) | {s['report_usage']:,} |",
            f"| a change log of {s['log_len']:,} entries (XADD … MAXLEN ~ {SYNTHETIC_ENTRIES:,}, {s['log_added']:,} "
            f"added; MEMORY USAGE) | {s['log_usage']:,} ({s['log_usage'] / s['log_len']:.1f} per entry) |",
            f"| XRANGE of {s['xrange_batch']:,} entries from it (a catch-up batch), reply (median) | "
            f"{s['xrange_bytes']:,.0f} ({s['xrange_bytes'] / s['xrange_batch']:.1f} per entry) |"]
    memory_table = "\n".join(rows)
    per_host_idle = idle["commands"] / HOSTS / idle["seconds"]
    c = r.get("catch_up") or {"error": "not measured"}
    rows = ["| Redis work | commands | bytes out | bytes in | Redis time |", "|---|---:|---:|---:|---:|",
            f"| one config deploy, 3 hosts (median) | {d['config']['commands']:.0f} | {d['config']['net_out']:,.0f} | "
            f"{d['config']['net_in']:,.0f} | |",
            f"| one code deploy, 3 hosts (median) | {d['code']['commands']:.0f} | {d['code']['net_out']:,.0f} | "
            f"{d['code']['net_in']:,.0f} | |",
            f"| 3 idle hosts, {m['apps_in_hash']} apps, per host per second ({idle['seconds']:.0f} s) | {per_host_idle:.2f} | "
            f"{idle['net_out'] / HOSTS / idle['seconds']:,.0f} | {idle['net_in'] / HOSTS / idle['seconds']:,.0f} | "
            f"{redis_time(idle.get('usec', {})) / HOSTS / idle['seconds']:.0f} µs |",
            f"| one watermark report (after each change a host applies, and each resync; mean of "
            f"{s['reports']:,}) | 7 | | {s['report_bytes']:,} | {s['report_usec']['exec']:.1f} µs |",
            f"| GET `skiff:c:revision` (each resync starts with it) | 1 | | | {s['report_usec']['get']:.1f} µs |",
            f"| XADD to the {SYNTHETIC_ENTRIES:,}-entry change log (in each change's script) | 1 | | | "
            f"{s['xadd_usec']:.1f} µs |",
            f"| XRANGE of {s['xrange_batch']:,} entries from it (one catch-up batch; mean of {s['xrange_reads']}) | 1 | "
            f"{s['xrange_bytes']:,.0f} | | {s['xrange_usec'] / 1000:.2f} ms |",
            f"| HGETALL of the {SYNTHETIC_ENTRIES:,}-entry hash (a host that joins, or fell behind the log) | 1 | "
            f"{s['hgetall_bytes']:,} | | {s['hgetall_usec'] / 1000:.1f} ms |"]
    if "error" not in c:
        rows.append(f"| host 3 catching up {c['changes']:,} missed changes from the change log (all of it) | "
                    f"{c['redis']['commands']:,} | {c['redis']['net_out']:,} | {c['redis']['net_in']:,} | "
                    f"{redis_time(c['redis']['usec']) / 1000:.1f} ms |")
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
        f"script, with its XADD to the change log and its PUBLISH inside; the MULTI … EXEC are the 3 hosts' "
        f"reports). Idle, over {idle['seconds']:.0f} s with `--cluster-resync` 10 s: {calls(idle['calls'])}; "
        f"a resync of an idle host is a GET of `skiff:c:revision` and its report (MULTI, DEL, HSET, PEXPIRE, ZADD, "
        f"ZREMRANGEBYSCORE, EXEC), so about {HOSTS * idle['seconds'] / 10:.0f} of each are expected, and a host "
        f"that writes out its usage (every `--usage-flush`) adds MULTI, RPUSH, EXPIRE, EXEC"
        + ("" if set(idle["calls"]) <= IDLE_COMMANDS else
           f" (**other commands too: {calls({k: v for k, v in idle['calls'].items() if k not in IDLE_COMMANDS})}**)")
        + f". The synthetic hash: names like `{s['name_example']}`, revisions like `{s['revision_example']}`; "
        f"HGETALL as the client saw it {statistics.median(s['hgetall_client_ms']):.0f} ms (Redis "
        f"{s['hgetall_usec'] / 1000:.1f} ms, the rest is this Python client reading it). The watermark report: "
        f"{s['report_client_ms']:.2f} ms as the client saw it (one round trip, median of {s['reports']:,}); Redis "
        f"(µs per call): " + ", ".join(f"{k.upper()} {v:.1f}" for k, v in s["report_usec"].items() if k != "get")
        + f" (EXEC's time includes the commands it runs), back to back; the hosts' own reports, each alone, took "
        f"{d['usec_per_call'].get('exec', float('nan')):.1f} µs (EXEC, mean over the deploys)"
        + (f" and {idle['usec']['exec'] / idle['calls']['exec']:.1f} µs idle" if idle.get("usec", {}).get("exec") else "")
        + f": the scale model uses the hosts' figures. The change log: {s['log_added']:,} XADDs with `MAXLEN ~ "
        f"{SYNTHETIC_ENTRIES:,}` left {s['log_len']:,} entries (Redis trims whole blocks); an XRANGE of "
        f"{s['xrange_batch']:,} from watermarks spread over it took {s['xrange_client_ms']:.1f} ms as the client saw "
        f"it (median), {s['xrange_usec'] / 1000:.2f} ms of Redis. "
        f"{r['redis_version']}; {r['haproxy_version']}. Load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_start"]) + "; at the end: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_end"]) + ".")
    j = r["join"]
    lines.append(
        f"A 4th host with an empty data folder, started once the {j['apps']} apps were deployed, answered "
        f"`/readyz` with 200 {j['ready_ms']:,.0f} ms after it was spawned"
        + (" (median of " + ", ".join(f"{x:,.0f}" for x in j["ready_ms_all"]) + " ms)" if j.get("ready_ms_all") else "")
        + f"; the same into the empty cluster, "
        f"{r['join_empty_ms']:,.0f} ms (the first 3, started together, "
        f"{min(r['ready_empty_ms']):,.0f}-{max(r['ready_empty_ms']):,.0f} ms). A host that "
        f"joins reads every app's record, one after the other (an HGET and a GET each), before it is ready: "
        f"about {join_per_app_ms(r):.2f} ms per app here."
        + (f" A host stopped with SIGTERM stays in the cluster's list of hosts (`skiff:c:hosts`) until its "
           f"report expires, {r['stopped_host_listed_ms'] / 1000:.0f} s after it stopped here (3 resyncs): until then "
           f"`apps inspect` lists it as a host that does not serve the app's revision. The script removes the 4th "
           f"host from that list itself, so that its own `apps inspect` polls count the 3 hosts."
           if r.get("stopped_host_listed_ms") else ""))
    c = r.get("catch_up") or {"error": "not measured"}
    if "error" in c:
        lines.append(f"Catching up from the change log: **{c['error']}**.")
    else:
        rc = c["redis"]
        lines.append(
            f"Catching up from the change log: host 3 was stopped (SIGSTOP) and its subscription closed by Redis "
            f"(CLIENT KILL), then the {c['apps']} apps were deployed again through host 1 ({c['deploy_s']:.1f} s), "
            f"{c['changes']} changes it missed, and host 3 was let go on (SIGCONT). Its report said it had applied "
            f"them all {c['ms_from_resume']:,.0f} ms later; "
            + (f"it had subscribed again first (after its pause of 250 ms), and caught up in "
               f"{c['ms_catch_up']:,.0f} ms from then" if c["resubscribed_first"] else
               "its resync came first, so that is all catching up")
            + f": {c['ms_catch_up'] / c['changes']:.2f} ms per change, every change a distinct app. Redis commands "
            f"meanwhile (hosts 1 and 2 idle): {calls(rc['calls'])}; {fmt_bytes(rc['net_out'])} out of Redis, "
            f"{redis_time(rc['usec']) / 1000:.1f} ms of its time"
            + ("; no HGETALL: it read only the apps that changed" if not rc["calls"].get("hgetall") else
               "; **it read everything (HGETALL)**")
            + ".")
    warnings = [f"{h}: {w}" for h, ws in r.get("log_warnings", {}).items() for w in ws]
    if warnings:
        lines.append("Warnings and errors in the hosts' logs (last ones): "
                     + "; ".join(f"`{w[-300:]}`" for w in warnings[:6]) + "."
                     + (" Host 3's lost subscription is the catch-up measurement's own doing."
                        if any("subscription" in w for w in warnings) else ""))
    else:
        lines.append("No warning or error in the hosts' logs.")
    return "\n\n".join(lines)


def join_per_app_ms(r):
    j = r["join"]
    return max(0.0, j["ready_ms"] - r["join_empty_ms"]) / j["apps"]


def build_model(r, args):
    """The scale model: 100 hosts, 100,000 apps, from the figures measured above."""
    d, m, s, idle = deploy_figures(r), r["memory"], r["synthetic"], r["idle"]
    c = r.get("catch_up") or {}
    H, A, R = args.model_hosts, args.model_apps, 10.0
    LOG = SYNTHETIC_ENTRIES  # changes the change log keeps (CHANGE_LOG_KEPT)
    rec = statistics.median(m["app_usage"])
    rec_full = r["web_record_after_deploys"]["bytes"]
    bun = statistics.median(m["bundle_usage"])
    entry = s["usage"] / s["entries"]  # one name → revision entry of a large hash
    wire = s["hgetall_bytes"] / s["entries"]
    log_entry = s["log_usage"] / s["log_len"]
    report_us, get_us = s["report_usec"]["exec"], s["report_usec"]["get"]
    per_call = d["usec_per_call"]
    evalsha_us = per_call.get("evalsha", 0.0)
    exec_us = per_call.get("exec", 0.0)  # a host's report, as the deploys measured it
    if c.get("changes"):
        # A record read (HGET + GET of a record): host 3's catch-up, which read nothing else but
        # the change log, the revision and its report.
        cu = c["redis"]["usec"]
        read_us = (cu.get("hget", 0) + cu.get("get", 0)) / c["changes"]
        read_from = "host 3's catch-up"
    else:
        read_us = per_call.get("hget", 0.0) + per_call.get("get", 0.0)
        read_from = "the deploys' HGET + GET"
    # An idle host's resync (GET + its report: MULTI … EXEC, EXEC's time including what it
    # ran), as the idle hosts measured it.
    iu, ic = idle.get("usec", {}), idle["calls"]
    resync_us = (sum(iu.get(k, 0) / ic[k] for k in ("get", "multi", "exec") if ic.get(k))
                 if ic.get("get") else get_us + report_us)
    scale = A / s["entries"]
    times_scale = "" if scale == 1 else f" × {scale:g} (apps / entries measured)"
    compile_ms = d["compile_ms"]
    hello_compile_ms = max(0.0, r["hello_first_deploy_ms"] - d["config"]["call"]["p50"])

    # Hashes with an entry per app: skiff:c:apps, skiff:c:code:T, and skiff:c:kept:T where it exists.
    per_app_hashes = ["`skiff:c:apps`", "`skiff:c:code:T`"] + (
        ["`skiff:c:kept:T`"] if any(k.startswith("skiff:c:kept:") and v["type"] == "hash"
                                    for k, v in m["keys"].items()) else [])
    nh = len(per_app_hashes)
    records = A * (rec + nh * entry)
    records_full = A * (rec_full + nh * entry)
    reports = H * s["report_usage"]
    change_log = LOG * log_entry
    bundles1, bundles6 = A * bun, A * bun * (KEEP_VERSIONS + 1)
    per_change_reads = H * (rec + 200)
    per_change_report_bytes = H * s["report_bytes"]
    per_change_us = evalsha_us + H * (read_us + exec_us)
    changes_per_s = 1e6 / per_change_us if per_change_us else float("inf")
    idle_cmds = H / R * 8
    idle_in = H / R * s["report_bytes"]
    idle_busy = H / R * resync_us / 1e6
    batch = s["xrange_batch"]
    batch_redis_ms = (s["xrange_usec"] + batch * read_us) / 1000
    catch_up_per_change_ms = c["ms_catch_up"] / c["changes"] if c.get("changes") else float("nan")
    batch_host_s = batch * catch_up_per_change_ms / 1000
    join_s = A * join_per_app_ms(r) / 1000
    join_redis_s = (s["hgetall_usec"] * scale + A * read_us) / 1e6
    compile_hours = A * hello_compile_ms / 1000 / 3600
    compile_hours_big = A * compile_ms / 1000 / 3600

    rows = [f"| quantity, {H} hosts and {A:,} apps | formula (measured inputs above) | result |", "|---|---|---:|",
            f"| Redis: app records | {A:,} × ({rec:,.0f} B record + {nh} × {entry:.0f} B entries in "
            f"{', '.join(per_app_hashes)}) | {fmt_bytes(records)} |",
            f"| the same, each app keeping {KEEP_VERSIONS + 1} versions | {A:,} × ({rec_full:,} + {nh} × {entry:.0f}) | "
            f"{fmt_bytes(records_full)} |",
            f"| Redis: host reports (watermarks) | {H} hosts × {s['report_usage']:,} B | {fmt_bytes(reports)} |",
            f"| Redis: the change log, full | {LOG:,} changes × {log_entry:.1f} B | {fmt_bytes(change_log)} |",
            f"| Redis: bundles, one version each, hello-sized | {A:,} × {bun:,.0f} B | {fmt_bytes(bundles1)} |",
            f"| the same, {KEEP_VERSIONS + 1} versions each | × {KEEP_VERSIONS + 1} | {fmt_bytes(bundles6)} |",
            f"| one change: announcements | 1 PUBLISH → {H} deliveries | {H} messages |",
            f"| one change: records read | {H} hosts × (HGET + GET, ~{rec + 200:,.0f} B) | {fmt_bytes(per_change_reads)} |",
            f"| one change: bundle fetched by hosts that have the app loaded | up to {H} × {bun:,.0f} B | "
            f"{fmt_bytes(H * bun)} |",
            f"| one change: host reports written (one watermark each) | {H} × {s['report_bytes']:,} B | "
            f"{fmt_bytes(per_change_report_bytes)} |",
            f"| one change: Redis busy | script {evalsha_us:.0f} µs (its XADD included) + {H} × (record read "
            f"{read_us:.1f} + report {exec_us:.1f} µs) | {per_change_us / 1000:.2f} ms |",
            f"| changes per second Redis can take, all hosts applying each | 1 s / {per_change_us / 1000:.2f} ms | "
            f"{changes_per_s:,.0f} |",
            f"| resync, idle cluster: commands | {H} / {R:.0f} s × (GET + a report of 7) | {idle_cmds:,.0f}/s |",
            f"| resync, idle cluster: reports into Redis | {H} / {R:.0f} s × {s['report_bytes']:,} B | "
            f"{fmt_bytes(idle_in)}/s |",
            f"| resync, idle cluster: Redis busy, of its one thread | {H} / {R:.0f} s × {resync_us:.1f} µs (GET + report, "
            f"the idle hosts') | {idle_busy * 1e6:,.0f} µs/s ({idle_busy * 100:.3f} %) |",
            f"| catch-up, per {batch:,} changes a host missed: Redis busy | XRANGE {s['xrange_usec'] / 1000:.2f} ms + "
            f"up to {batch:,} × {read_us:.1f} µs record reads | {batch_redis_ms:.1f} ms |",
            f"| the same: read out of Redis | XRANGE {fmt_bytes(s['xrange_bytes'])} + up to {batch:,} × ~{rec + 200:,.0f} B "
            f"| {fmt_bytes(s['xrange_bytes'] + batch * (rec + 200))} |",
            f"| the same: the host's time | {batch:,} × {catch_up_per_change_ms:.2f} ms (host 3's catch-up) | "
            f"{batch_host_s:.1f} s |",
            f"| how far back the log reaches | {LOG:,} changes; at 1 change a second | {LOG / 3600:.1f} hours |",
            f"| the same, at the most changes Redis can take | {LOG:,} / {changes_per_s:,.0f} per second | "
            f"{LOG / changes_per_s / 60:.0f} minutes |",
            f"| a host that joins (or fell behind the log) reads everything before it is ready | {A:,} × "
            f"{join_per_app_ms(r):.2f} ms | {join_s:,.0f} s |",
            f"| the same: Redis busy | HGETALL {s['hgetall_usec'] / 1000:.1f} ms{times_scale} + {A:,} × "
            f"{read_us:.1f} µs | {join_redis_s:.1f} s |",
            f"| the same: read out of Redis | {A:,} × ({wire:.1f} B of HGETALL + ~{rec + 200:,.0f} B record) | "
            f"{fmt_bytes(A * (wire + rec + 200))} |",
            f"| cold caches: compiling every app once on one host, hello-sized | {A:,} × {hello_compile_ms:,.0f} ms | "
            f"{compile_hours:,.1f} CPU-hours |",
            f"| the same, the {r['web_wasm_bytes'] // 1000} KB test guest | {A:,} × {compile_ms:,.0f} ms | "
            f"{compile_hours_big:,.1f} CPU-hours |",
            f"| hello-sized, on every host (any host serves any app) | × {H} | {compile_hours * H:,.0f} CPU-hours |"]
    table = "\n".join(rows)
    redis_total = records + reports + change_log + bundles1
    caught = (f"Measured here: host 3, having missed {c['changes']} changes, caught up in {c['ms_catch_up']:,.0f} ms "
              f"with {c['redis']['calls'].get('xrange', 0):g} XRANGE and "
              f"{c['redis']['calls'].get('get', 0):g} GETs (records and revision) and no HGETALL."
              if c.get("changes") and not c["redis"]["calls"].get("hgetall") else
              f"Host 3's catch-up here: {c.get('error') or 'it read everything (HGETALL)'}.")
    text = f"""### Scale model: {H} hosts, {A:,} apps

What the design as built does at {H} hosts and {A:,} apps, computed from the figures above (the
table's formulas show which; a figure scales with what its formula says, nothing else is
assumed). The changes, the reads and the resyncs all go through one Redis, which runs commands
on one thread. The bundle sizes are the hello app's ({statistics.median(m['bundle_len']):,.0f} bytes gzipped):
real apps are larger, often by 100x, and the bundle rows grow with them. Redis times per call are
those measured above: the deploys' (script, reports), {read_from} (record reads), the idle
hosts' (resyncs) and the synthetic ones (change log, HGETALL).

{table}

What scales:

- **Announcements and record reads.** A change is one script run (compare-and-swap with the
  quotas and an XADD to the change log, {d['config']['calls'].get('evalsha', 1):g} EVALSHA of
  {evalsha_us:.0f} µs) and one PUBLISH, which Redis delivers to {H} subscribers; each host then
  reads one record ({rec:,.0f} B) and reports its watermark. Measured with 3 hosts, a deploy that
  changes only the configuration takes {d['config']['commands']:.0f} commands in all, and reaches the
  last host {fmt_ms(d['config']['from_return']['p50'])} ms (median) after the call returned. At {H} hosts
  that is {H} small messages, about {fmt_bytes(per_change_reads)} read and {fmt_bytes(per_change_report_bytes)}
  of reports written per change, {per_change_us / 1000:.2f} ms of Redis: it takes about
  {changes_per_s:,.0f} changes a second, cluster-wide, before its one thread is full. That limit
  falls as hosts are added (each host reads and reports every change), not as apps are.
- **Host reports** are a watermark: one small hash per host ({s['report_usage']:,} B,
  {fmt_bytes(reports)} for {H} hosts), rewritten by one MULTI of {s['report_bytes']:,} bytes
  ({exec_us:.1f} µs of Redis as the hosts' own reports took; {report_us:.1f} µs back to back) after
  each change the host applies and each resync, however many apps there are. `apps inspect`
  compares each host's watermark with the app's revision.
- **Resync.** An idle host costs one GET of `skiff:c:revision` and one report per 10 s: at {H}
  hosts {idle_cmds:,.0f} commands a second, {idle_busy * 100:.3f} % of Redis's thread, whatever the number
  of apps. Measured idle (3 hosts, {m['apps_in_hash']} apps): {idle['commands'] / HOSTS / idle['seconds']:.1f}
  commands/s and {fmt_bytes(idle['net_in'] / HOSTS / idle['seconds'])}/s into Redis per host. On a busy
  cluster the announcements carry the changes, and a resync no longer reads everything: its GET
  finds the host at the newest revision, or a few changes short (announcements on their way),
  which it reads from the change log. A host that missed some (a lost subscription, a failed
  apply) reads the change log from its watermark, {batch:,} changes per XRANGE
  ({fmt_bytes(s['xrange_bytes'])}, {s['xrange_usec'] / 1000:.2f} ms of Redis), and re-reads only the apps
  named: {batch_redis_ms:.1f} ms of Redis and about {batch_host_s:.1f} s of the host per {batch:,} missed
  changes. {caught}
- **The change log** keeps the newest {LOG:,} changes, {log_entry:.1f} B each: {fmt_bytes(change_log)},
  whatever the number of apps or hosts; its XADD adds {s['xadd_usec']:.1f} µs to a change. It reaches
  back {LOG:,} changes: at one change a second, {LOG / 3600:.1f} hours; at the {changes_per_s:,.0f} a second
  Redis could take at {H} hosts, {LOG / changes_per_s / 60:.0f} minutes. A host away for longer reads
  everything, as one that joins.
- **Bundle fetches** are per host and per version, only where the app is loaded (the others
  fetch on their next request): up to {fmt_bytes(H * bun)} per hello-sized deploy.

What does not scale, as built:

- **Bundles in Redis**, as measured here (the default). {A:,} hello-sized apps take
  {fmt_bytes(bundles1)} of Redis memory with one version each and {fmt_bytes(bundles6)} with the
  {KEEP_VERSIONS} kept for rollback; with real app sizes, terabytes. Everything else together is
  {fmt_bytes(records + reports + change_log)} (records {fmt_bytes(records)}, reports {fmt_bytes(reports)},
  change log {fmt_bytes(change_log)}). The example Redis (`deploy/kubernetes/cluster/redis`,
  `maxmemory 768mb`) holds about {max(0.0, 768e6 - change_log - reports) / (bun + rec + nh * entry):,.0f}
  hello-sized apps ((768 MB − the change log − the reports) / ({bun:,.0f} + {rec:,.0f} + {nh} × {entry:.0f}) B
  per app), and about {max(0.0, 768e6 - change_log - reports) / (rec + nh * entry):,.0f} without bundles.
  At this scale run the hosts with `--cluster-bundles`, which keeps the bundles in an OCI
  registry repository and Redis only the records (not measured here: this benchmark keeps
  them in Redis).
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
- **Joining.** A host that starts (a new one, or one restarted: records are not kept in its
  data folder) reads everything before it says it is ready: the tenants, HGETALL of
  `skiff:c:apps` ({fmt_bytes(A * wire)}), then every app's record one round trip at a time: about
  {join_s:,.0f} s at {A:,} apps ({A:,} × {join_per_app_ms(r):.2f} ms, the 4th host's time per app
  here{f"; host 3's catch-up took {catch_up_per_change_ms:.2f} ms per app" if c.get("changes") else ""}),
  {join_redis_s:.1f} s of it Redis's time. Every host restarted in a rollout, and every host the HPA
  adds, waits that long; reading the records in pipelined batches (or MGET of many records)
  would cut it by the batch size. A host that fell further behind than the change log reaches
  reads everything the same way, serving meanwhile.
- **One Redis.** Everything above goes through one Redis process; the scripts touch keys of
  several hash slots, so a Redis Cluster cannot spread it. The apps' key-value stores use the
  same Redis unless the runtime config names another: at this scale give them their own.

Redis memory at {H} hosts and {A:,} hello-sized apps as built, one version each: about
{fmt_bytes(redis_total)} (records {fmt_bytes(records)}, reports {fmt_bytes(reports)}, change log
{fmt_bytes(change_log)}, bundles {fmt_bytes(bundles1)})."""
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
