#!/usr/bin/env python3
"""Gateway: skiff as a reverse proxy in front of an HTTP service, against nginx.

    python3 bench/gateway.py [--quick] [--reps N] [--duration S] [--no-both-cpus]
                             [--no-write] [--note TEXT] [--from-json PATH]
    bench/run.sh --gateway [--quick] [...]           # the same, after installing and building

Run it after `cargo build --release -p skiff` and a build of the gateway test guest
(`scripts/build-guests.sh`, or through bench/run.sh --gateway, which does both). Python 3
standard library only, plus Debian's `nginx`, `wrk` and `taskset` (bench/run.sh installs them).
Only loopback addresses are used; every nginx runs from a temporary folder of its own (config,
pid file, logs, temp paths), never the system's.

The upstream, the same for every configuration: nginx answering `return 200 "hello\\n";` on a
port of its own (1 worker, keep-alive, no access log). (bench/container/hello-server.c is not
used: it serves one connection at a time, and a proxy keeps several open to its upstream.)

Pinned as in the suite (bench/bench.py): the proxy under test on CPU 0; wrk and the upstream
on CPU 1. On its one CPU skiff runs one thread (tokio sees one CPU), and nginx runs one worker
(`worker_processes 1`): one core each. Configurations, all on the same upstream:

  - nginx: a plain reverse proxy, `proxy_pass` to an `upstream` block with `keepalive 32`,
    `proxy_http_version 1.1`, `proxy_set_header Connection ""`, and the usual forwarding
    headers (`Host`, `X-Forwarded-For`, `-Proto`, `-Host`), as skiff sets them.
  - skiff, one `skiff up` serving one app (skiff.toml written here) with three
    `[upstream.NAME]` routes to the same address: `/none/...` with no middleware, `/one/...`
    through one middleware (the header rewrite: tests/guests/gateway-guest with `MODE =
    "forward"`, which sends the request on and adds a response header) and `/two/...` through
    two of them (the cost of a hop itself); `/jwt-limit/...` through examples/gateway's
    `jwt` (HS256, with a valid token made here, audience and issuer checked) and `limit` (a
    counter per subject in the key-value store `default`, the embedded one as the example
    has it, with a limit wrk never reaches), when those are built. The rewrite routes again,
    `/one-reuse/...` and `/two-reuse/...`, through copies of the middleware with the opt-in
    instance reuse (`requests_per_instance = 1000`), to show what of a hop's cost is the fresh
    instance.
  - chaining, in the same app and process: `front-local` (MODE=call) calls `back`
    (MODE=echo) in process at `http://back.skiff.internal`; `front-loop` makes the very same
    call over loopback HTTP to this skiff's own listener (`http://127.0.0.1:PORT/back`, the
    route of `back`); and `/back/...` is `back` alone, with no call.
  - the upstream alone (wrk and the upstream both on CPU 1): a reference, not a proxy.

Each repetition, for every configuration in turn (interleaved): wrk -t1 -c32 for --duration
seconds (req/s; the CPU time the proxy's processes and the upstream used over it, per
request), wrk -t1 -c1 --latency for --duration seconds (p50, p99), and a third run with wrk,
the upstream and the proxy all on CPU 0 (p50 at 1 connection without waking the other CPU:
on these VMs a cross-CPU wake-up costs tens of µs by itself, and a proxied request has four).
2 s of warm-up each first; medians of --reps repetitions.

Then, unless --no-both-cpus, the same without pinning: nginx with `worker_processes 2`, a
second `skiff up` free to use both CPUs (2 threads), the upstream and wrk floating; req/s at
32 connections for nginx and skiff with none, one and two middlewares.

It prints markdown tables (nginx as the baseline; per-hop cost = p50 with one middleware
minus p50 with none, and with two minus with one) and, unless --quick or --no-write, rewrites
the section `## Gateway: skiff in front of a service, against nginx` of docs/performance.md.
Raw results go to target/bench/gateway.json; `--from-json PATH` renders (and writes) them
again.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: processes, wrk, the machine, the docs' sections)
from bench import LOADGEN_CPU, ROOT, SERVER_CPU, fail, log, pinned, spawn, stop, stop_all  # noqa: E402

HEADING = "## Gateway: skiff in front of a service, against nginx"
BODY = b"hello\n"
GOAL_RATIO = 1.3  # skiff with no middleware: p50 at most 1.3x nginx's
GOAL_HOP_US = 15.0  # each middleware hop: at most 15 µs of p50

# The JWT check and rate limit of `/jwt-limit/...` (examples/gateway/{jwt,limit}): the key the
# token is signed with, and what the check demands of it.
JWT_SECRET = "gateway-bench-hs256-secret-of-40-bytes!!"
JWT_AUDIENCE = "bench-api"
JWT_ISSUER = "bench-issuer"
JWT_SUBJECT = "bench"


def jwt_token(now=None):
    """An HS256 token the `jwt` component accepts: subject, audience, issuer, a day to live."""
    now = int(now or time.time())

    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=")

    signed = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(
        {"sub": JWT_SUBJECT, "aud": JWT_AUDIENCE, "iss": JWT_ISSUER, "iat": now, "exp": now + 86400})
    signature = hmac.new(JWT_SECRET.encode(), signed, hashlib.sha256).digest()
    return (signed + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


JWT_HEADERS = {"Authorization": "Bearer " + jwt_token()}


# ------------------------------------------------------------------------------------------
# processes


def children(pid):
    """The pids of a process's children (nginx's workers)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    """A process and its children."""
    return [pid] + children(pid)


def cpu_seconds(pid):
    """utime + stime of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    return sum(cpu_seconds(p) for p in tree(pid))


def set_cpus(pid, cpus):
    """Moves a running process and its children (all their threads) to `cpus`."""
    for p in tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(task), cpus)
        except OSError:
            pass


def busy_seconds(ours):
    """CPU seconds this machine has been busy (all CPUs), and those of this benchmark's
    processes: those in `ours` (with their children), this one and the children it waited for
    (each wrk)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return busy, own + sum(tree_cpu(pid) for pid in ours)


class OtherWork:
    """How many CPUs processes other than this benchmark's kept busy over an interval: the
    noise of a shared machine (a build, a test), reported with each run."""

    def __init__(self, ours):
        self.ours = ours
        self.wall = time.monotonic()
        self.busy, self.own = busy_seconds(ours)

    def cpus(self):
        busy, own = busy_seconds(self.ours)
        return max(0.0, (busy - self.busy) - (own - self.own)) / (time.monotonic() - self.wall)


def get(port, path, headers=None):
    """One GET on a fresh connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        headers = {}
        for k, v in response.getheaders():  # a repeated header: its values joined, as HTTP allows
            headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        return response.status, headers, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------
# nginx


def nginx_conf(folder, name, workers, body):
    return (f"# generated by bench/gateway.py\n"
            f"worker_processes {workers};\n"
            f"pid {folder}/{name}.pid;\n"
            f"error_log {folder}/{name}-error.log warn;\n"
            f"events {{ worker_connections 4096; }}\n"
            f"http {{\n"
            f"  access_log off;\n"
            f"  keepalive_requests 1000000;\n"
            f"  client_body_temp_path {folder}/client-body;\n"
            f"  proxy_temp_path {folder}/proxy;\n"
            f"  fastcgi_temp_path {folder}/fastcgi;\n"
            f"  uwsgi_temp_path {folder}/uwsgi;\n"
            f"  scgi_temp_path {folder}/scgi;\n"
            f"{body}"
            f"}}\n")


def upstream_conf(folder, port):
    return nginx_conf(folder, "upstream", 1,
                      f"  server {{\n"
                      f"    listen 127.0.0.1:{port};\n"
                      f"    location / {{ default_type text/plain; return 200 \"hello\\n\"; }}\n"
                      f"  }}\n")


def proxy_conf(folder, name, port, upstream_port, workers):
    return nginx_conf(folder, name, workers,
                      f"  upstream service {{\n"
                      f"    server 127.0.0.1:{upstream_port};\n"
                      f"    keepalive 32;\n"
                      f"    keepalive_requests 1000000;\n"
                      f"  }}\n"
                      f"  server {{\n"
                      f"    listen 127.0.0.1:{port};\n"
                      f"    location / {{\n"
                      f"      proxy_pass http://service;\n"
                      f"      proxy_http_version 1.1;\n"
                      f"      proxy_set_header Connection \"\";\n"
                      f"      proxy_set_header Host $host;\n"
                      f"      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                      f"      proxy_set_header X-Forwarded-Proto $scheme;\n"
                      f"      proxy_set_header X-Forwarded-Host $host;\n"
                      f"    }}\n"
                      f"  }}\n")


def start_nginx(workdir, name, conf, port, cpu):
    folder = os.path.join(workdir, f"nginx-{name}")
    for sub in ("client-body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    path = os.path.join(folder, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf(folder))
    argv = ["nginx", "-p", folder, "-e", os.path.join(folder, f"{name}-error.log"), "-c", path,
            "-g", "daemon off; master_process on;"]
    return bench.Server(f"nginx {name}", argv, port, workdir, cpu=cpu)


# ------------------------------------------------------------------------------------------
# skiff


def middleware(id, reuse=False, wasm="gw.wasm"):
    limits = f"\n[component.{id}.limits]\nrequests_per_instance = 1000\n" if reuse else ""
    return f'[component.{id}]\nsource = "{wasm}"\nenvironment = {{ MODE = "forward", ID = "{id}" }}\n{limits}\n'


def p3_middlewares():
    """The WASI 0.3 pass-through middleware (tests/guests/http-p3-guest, MODE=forward), two of
    them for the two-hop chains, fresh and with instance reuse."""
    return "".join(middleware(id, reuse="reuse" in id, wasm="p3.wasm")
                   for id in ("p3", "p3-b", "p3-reuse", "p3-b-reuse"))


def jwt_limit_components():
    """examples/gateway's `jwt` (HS256 only, audience and issuer checked) and `limit` (at most
    1,000,000 requests a second per subject: never reached here), as its skiff.toml has them
    but for the values."""
    return (f'[component.jwt]\nsource = "jwt.wasm"\n'
            f'variables = {{ algorithms = "HS256", hs256_secret = "{JWT_SECRET}", audience = "{JWT_AUDIENCE}", '
            f'issuer = "{JWT_ISSUER}", leeway_seconds = "30" }}\n\n'
            f'[component.limit]\nsource = "limit.wasm"\nkey_value_stores = ["default"]\n'
            f'variables = {{ limit = "1000000", window_seconds = "1" }}\n\n')


def skiff_manifest(folder, port, upstream_port, jwt_limit, p3):
    """The app: the upstream routes and the chaining components (see the module doc)."""
    url = f"http://127.0.0.1:{upstream_port}"
    text = (f'# generated by bench/gateway.py\n[app]\nname = "gateway-bench"\nversion = "0.0.0"\n\n'
            + middleware("rewrite") + middleware("rewrite-b")
            + middleware("rewrite-reuse", reuse=True) + middleware("rewrite-b-reuse", reuse=True)
            + f'[upstream.none]\nurl = "{url}"\nroute = "/none/..."\n\n'
            + f'[upstream.one]\nurl = "{url}"\nroute = "/one/..."\nmiddleware = ["rewrite"]\n\n'
            + f'[upstream.two]\nurl = "{url}"\nroute = "/two/..."\nmiddleware = ["rewrite", "rewrite-b"]\n\n'
            + f'[upstream.one-reuse]\nurl = "{url}"\nroute = "/one-reuse/..."\nmiddleware = ["rewrite-reuse"]\n\n'
            + f'[upstream.two-reuse]\nurl = "{url}"\nroute = "/two-reuse/..."\n'
              f'middleware = ["rewrite-reuse", "rewrite-b-reuse"]\n\n'
            + (p3_middlewares()
               + "".join(f'[upstream.{route}]\nurl = "{url}"\nroute = "/{route}/..."\nmiddleware = {chain}\n\n'
                         for route, chain in (("one-p3", '["p3"]'), ("two-p3", '["p3", "p3-b"]'),
                                              ("one-p3-reuse", '["p3-reuse"]'),
                                              ("two-p3-reuse", '["p3-reuse", "p3-b-reuse"]')))
               if p3 else "")
            + (jwt_limit_components()
               + f'[upstream.jwt-limit]\nurl = "{url}"\nroute = "/jwt-limit/..."\nmiddleware = ["jwt", "limit"]\n\n'
               if jwt_limit else "")
            + '[component.front-local]\nsource = "gw.wasm"\n'
              'environment = { MODE = "call", TARGET = "http://back.skiff.internal" }\n'
              'route = "/local/..."\nallowed_outbound_hosts = ["http://back.skiff.internal"]\n\n'
            + '[component.front-loop]\nsource = "gw.wasm"\n'
              f'environment = {{ MODE = "call", TARGET = "http://127.0.0.1:{port}/back" }}\n'
              f'route = "/loop/..."\nallowed_outbound_hosts = ["http://127.0.0.1:{port}"]\n\n'
            + '[component.back]\nsource = "gw.wasm"\nenvironment = { MODE = "echo" }\nroute = "/back/..."\n')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "skiff.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_skiff(skiff, wasm, jwt_limit, p3, workdir, name, upstream_port, cpu):
    folder = os.path.join(workdir, f"app-{name}")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(wasm, os.path.join(folder, "gw.wasm"))
    if p3:
        shutil.copyfile(p3, os.path.join(folder, "p3.wasm"))
    if jwt_limit:
        shutil.copyfile(jwt_limit[0], os.path.join(folder, "jwt.wasm"))
        shutil.copyfile(jwt_limit[1], os.path.join(folder, "limit.wasm"))
    port = bench.free_port()
    manifest = skiff_manifest(folder, port, upstream_port, jwt_limit, p3)
    env = dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache"))
    for var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "RUST_LOG", "SKIFF_THREADS"):
        env.pop(var, None)
    argv = [skiff, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(workdir, f"data-{name}"),
            manifest]
    return bench.Server(f"skiff {name}", argv, port, workdir, cpu=cpu, env=env, ready_path="/none/")


# ------------------------------------------------------------------------------------------
# what is measured

# key -> (label, server, path, middlewares on the way: the `x-passed-*` headers expected)
CONFIGS = {
    "upstream": ("the upstream alone (nginx `return 200`, wrk on its CPU: reference)", "upstream", "/", 0),
    "nginx": ("nginx, reverse proxy", "nginx", "/", 0),
    "none": ("skiff, no middleware", "skiff", "/none/", 0),
    "one": ("skiff, one middleware (header rewrite)", "skiff", "/one/", 1),
    "two": ("skiff, two middlewares (two header rewrites)", "skiff", "/two/", 2),
    "jwt_limit": ("skiff, two middlewares (JWT check + rate limit)", "skiff", "/jwt-limit/", 0),
    "one_reuse": ("skiff, one middleware, instance reuse (opt-in)", "skiff", "/one-reuse/", 1),
    "two_reuse": ("skiff, two middlewares, instance reuse (opt-in)", "skiff", "/two-reuse/", 2),
    "one_p3": ("skiff, one WASI 0.3 middleware (pass-through)", "skiff", "/one-p3/", 1),
    "two_p3": ("skiff, two WASI 0.3 middlewares (pass-through)", "skiff", "/two-p3/", 2),
    "one_p3_reuse": ("skiff, one WASI 0.3 middleware, instance reuse (opt-in)", "skiff", "/one-p3-reuse/", 1),
    "two_p3_reuse": ("skiff, two WASI 0.3 middlewares, instance reuse (opt-in)", "skiff", "/two-p3-reuse/", 2),
    "back": ("`back` alone (echo component, no call)", "skiff", "/back/", 0),
    "local": ("`front` calls `back` in process (`http://back.skiff.internal`)", "skiff", "/local/", 0),
    "loop": ("`front` calls `back` over loopback HTTP (`http://127.0.0.1:PORT/back`)", "skiff", "/loop/", 0),
}
GATEWAY = ("nginx", "none", "one", "two", "jwt_limit", "one_reuse", "two_reuse",
           "one_p3", "two_p3", "one_p3_reuse", "two_p3_reuse")
CHAINING = ("back", "local", "loop")
BOTH_CPUS = ("nginx", "none", "one", "jwt_limit")


def present(keys, results):
    """`keys` but the JWT check + rate limit and the WASI 0.3 middleware when they were not
    measured (not built)."""
    return tuple(k for k in keys if (k != "jwt_limit" or results.get("jwt_limit"))
                 and ("_p3" not in k or results.get("p3")))


def check(servers, key):
    """Each configuration answers what it should before it is measured."""
    label, server, path, hops = CONFIGS[key]
    status, headers, body = get(servers[server].port, path + "check", JWT_HEADERS if key == "jwt_limit" else None)
    if status != 200:
        fail(f"{label}: {path}check answered {status}: {body[:300]!r}")
    if key in CHAINING:
        want = {"back": b"echo back\n", "local": b"front-local got 200: echo back\n",
                "loop": b"front-loop got 200: echo back\n"}[key]
        if not body.startswith(want):
            fail(f"{label}: {path}check answered {body[:300]!r}, not {want!r}...")
        return len(body)
    if body != BODY:
        fail(f"{label}: {path}check answered {body[:300]!r}, not {BODY!r}")
    if key == "jwt_limit":
        if headers.get("x-ratelimit-limit") != "1000000":
            fail(f"{label}: no `x-ratelimit-limit: 1000000` in the answer: {headers}")
        status, _, body = get(servers[server].port, path + "check")
        if status != 401:
            fail(f"{label}: without a token {path}check answered {status}, not 401: {body[:300]!r}")
        return len(BODY)
    passed = [v for h, v in headers.items() if h.startswith("x-passed-") for v in v.split(", ")]
    if len(passed) != hops:
        fail(f"{label}: {hops} middlewares expected on the way, the answer says {passed}")
    return len(body)


def wrk_script(workdir, key):
    """A Lua file for wrk sending the headers `key` needs (the token of the JWT check), or None."""
    if key != "jwt_limit":
        return None
    path = os.path.join(workdir, f"{key}.lua")
    with open(path, "w") as f:
        f.write("-- generated by bench/gateway.py\n"
                + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in JWT_HEADERS.items()))
    return path


def measure_one(args, servers, upstream, key, workdir, pinned_run=True):
    """One repetition of one configuration: req/s at 32 connections (and the CPU it took), p50
    and p99 at 1 connection, and, pinned, p50 at 1 connection with everything on CPU 0."""
    _, server, path, _ = CONFIGS[key]
    s = servers[server]
    script = wrk_script(workdir, key)
    cpu = LOADGEN_CPU if pinned_run else None
    proxy = s.pid if server != "upstream" else None
    before = (tree_cpu(proxy) if proxy else 0.0, tree_cpu(upstream.pid))
    t0 = time.monotonic()
    many = bench.wrk(s.port, path + "x", 32, args.duration, latency=True, cpu=cpu, script=script,
                     after=lambda argv: check_alive(servers))
    wall = time.monotonic() - t0
    after = (tree_cpu(proxy) if proxy else 0.0, tree_cpu(upstream.pid))
    requests = many["rps"] * args.duration
    run = {"rps32": many["rps"], "p50_32": many.get("p50_ms"), "p99_32": many.get("p99_ms"),
           "proxy_cpus": (after[0] - before[0]) / wall, "upstream_cpus": (after[1] - before[1]) / wall,
           "proxy_cpu_us": (after[0] - before[0]) / requests * 1e6 if proxy else None,
           "errors": many["socket_errors"]}
    if not pinned_run:
        return run
    one = bench.wrk(s.port, path + "x", 1, args.duration, latency=True, script=script,
                    after=lambda argv: check_alive(servers))
    run.update({"p50": one["p50_ms"], "p99": one["p99_ms"], "rps1": one["rps"]})
    run["errors"] += one["socket_errors"]
    # Everything on CPU 0: the upstream moved there for the run, wrk started there.
    set_cpus(upstream.pid, {int(SERVER_CPU)})
    try:
        same = bench.wrk(s.port, path + "x", 1, max(2, args.duration // 2), latency=True, cpu=SERVER_CPU,
                         script=script, after=lambda argv: check_alive(servers))
    finally:
        set_cpus(upstream.pid, {int(LOADGEN_CPU)})
    run.update({"p50_same_cpu": same["p50_ms"], "p99_same_cpu": same["p99_ms"]})
    run["errors"] += same["socket_errors"]
    return run


def check_alive(servers):
    for s in servers.values():
        if s.proc.poll() is not None:
            fail(f"{s.name} exited with status {s.proc.returncode}:\n{s.log_tail()}")


def measure(args, skiff, wasm, jwt_limit, p3, workdir):
    results = {"nginx_version": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
               "wasm_bytes": os.path.getsize(wasm), "jwt_limit": bool(jwt_limit), "p3": bool(p3),
               "p3_bytes": os.path.getsize(p3) if p3 else None,
               "jwt_limit_bytes": [os.path.getsize(p) for p in jwt_limit] if jwt_limit else None,
               "loadavg_start": os.getloadavg(), "pinned": {}, "both_cpus": {}}
    servers = {}
    try:
        up_port = bench.free_port()
        servers["upstream"] = start_nginx(workdir, "upstream", lambda d: upstream_conf(d, up_port), up_port,
                                          LOADGEN_CPU)
        port = bench.free_port()
        servers["nginx"] = start_nginx(workdir, "proxy", lambda d: proxy_conf(d, "proxy", port, up_port, 1),
                                       port, SERVER_CPU)
        servers["skiff"] = start_skiff(skiff, wasm, jwt_limit, p3, workdir, "pinned", up_port, SERVER_CPU)
        upstream = servers["upstream"]
        ours = [s.pid for s in servers.values()]
        keys = ("upstream",) + present(GATEWAY, results) + CHAINING
        results["body_bytes"] = {key: check(servers, key) for key in keys}
        log(f"== pinned: proxies on CPU {SERVER_CPU}, wrk and the upstream on CPU {LOADGEN_CPU}")
        for key in keys:
            path = CONFIGS[key][2] + "x"
            bench.wrk(servers[CONFIGS[key][1]].port, path, 32, 1 if args.quick else 2,
                      script=wrk_script(workdir, key))  # warm-up
        runs = {key: [] for key in keys}
        for rep in range(args.reps):
            for key in keys:
                other = OtherWork(ours)
                run = measure_one(args, servers, upstream, key, workdir)
                run["other_cpus"] = other.cpus()
                runs[key].append(run)
                log(f"   rep {rep + 1} {key:9}: {run['rps32']:8,.0f} req/s @32 (proxy {run['proxy_cpus']:.2f} CPU, "
                    f"upstream {run['upstream_cpus']:.2f}), p50 {run['p50'] * 1000:5.0f} µs, "
                    f"p99 {run['p99'] * 1000:5.0f} µs @1, p50 {run['p50_same_cpu'] * 1000:4.0f} µs @1 on one CPU; "
                    f"others kept {run['other_cpus']:.2f} CPUs busy")
        results["pinned"] = runs
        results["skiff_log"] = servers["skiff"].log_tail()[-1500:]
        for name in ("nginx", "skiff"):
            servers.pop(name).stop()

        if not args.no_both_cpus:
            log("== both CPUs: nothing pinned; nginx with 2 workers, skiff with 2 threads")
            set_cpus(upstream.pid, {0, 1})
            port = bench.free_port()
            servers["nginx"] = start_nginx(workdir, "proxy2", lambda d: proxy_conf(d, "proxy2", port, up_port, 2),
                                           port, None)
            servers["skiff"] = start_skiff(skiff, wasm, jwt_limit, p3, workdir, "both", up_port, None)
            ours = [s.pid for s in servers.values()]
            for key in present(BOTH_CPUS, results):
                check(servers, key)
                bench.wrk(servers[CONFIGS[key][1]].port, CONFIGS[key][2] + "x", 32, 1 if args.quick else 2,
                          cpu=None, script=wrk_script(workdir, key))
            runs = {key: [] for key in present(BOTH_CPUS, results)}
            for rep in range(args.reps):
                for key in runs:
                    other = OtherWork(ours)
                    run = measure_one(args, servers, upstream, key, workdir, pinned_run=False)
                    run["other_cpus"] = other.cpus()
                    runs[key].append(run)
                    log(f"   rep {rep + 1} {key:9}: {run['rps32']:8,.0f} req/s @32 (proxy {run['proxy_cpus']:.2f} "
                        f"CPU, upstream {run['upstream_cpus']:.2f}); others kept {run['other_cpus']:.2f} CPUs busy")
            results["both_cpus"] = runs
        results["loadavg_end"] = os.getloadavg()
    finally:
        for s in servers.values():
            s.stop()
        stop_all()
    return results


# ------------------------------------------------------------------------------------------
# the report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def us(ms):
    return f"{ms * 1000:,.0f} µs"


def report(args, results, started, machine_line, save):
    runs = results["pinned"]

    def m(key, field, where=runs):
        return med([r.get(field) for r in where[key]])

    gateway = present(GATEWAY, results)

    nginx_rps, nginx_p50, nginx_same = m("nginx", "rps32"), m("nginx", "p50"), m("nginx", "p50_same_cpu")
    main = ["| configuration | req/s at 32 connections | ÷ nginx | CPU per request (proxy) | p50 at 1 connection | "
            "p99 at 1 connection | p50 ÷ nginx | p50 at 1 connection, all on one CPU | ÷ nginx |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in gateway + ("upstream",):
        cpu_us = m(key, "proxy_cpu_us")
        main.append(f"| {CONFIGS[key][0]} | {m(key, 'rps32'):,.0f} | {m(key, 'rps32') / nginx_rps:.2f}x | "
                    f"{'' if key == 'upstream' else f'{cpu_us:,.1f} µs'} | {us(m(key, 'p50'))} | {us(m(key, 'p99'))} | "
                    f"{m(key, 'p50') / nginx_p50:.2f}x | {us(m(key, 'p50_same_cpu'))} | "
                    f"{m(key, 'p50_same_cpu') / nginx_same:.2f}x |")

    def hop(a, b, field):
        return (m(b, field) - m(a, field)) * 1000

    ratio, ratio_same = m("none", "p50") / nginx_p50, m("none", "p50_same_cpu") / nginx_same
    hops = [("first middleware (one − none)", "none", "one"), ("second middleware (two − one)", "one", "two"),
            ("first middleware, instance reuse", "none", "one_reuse"),
            ("second middleware, instance reuse", "one_reuse", "two_reuse")]
    if "one_p3" in gateway:
        hops += [("first WASI 0.3 middleware (pass-through)", "none", "one_p3"),
                 ("second WASI 0.3 middleware (pass-through)", "one_p3", "two_p3"),
                 ("first WASI 0.3 middleware, instance reuse", "none", "one_p3_reuse"),
                 ("second WASI 0.3 middleware, instance reuse", "one_p3_reuse", "two_p3_reuse")]
    if "jwt_limit" in gateway:
        hops.append(("JWT check + rate limit, the two together (jwt-limit − none)", "none", "jwt_limit"))
    goals = ["| goal | measured | holds |", "|---|---:|---|",
             f"| skiff, no middleware: p50 at 1 connection ≤ {GOAL_RATIO}× nginx's | {ratio:.2f}× "
             f"({us(m('none', 'p50'))} vs {us(nginx_p50)}) | {bench.verdict(ratio <= GOAL_RATIO)} |",
             f"| … the same, all on one CPU | {ratio_same:.2f}× ({us(m('none', 'p50_same_cpu'))} vs "
             f"{us(nginx_same)}) | {bench.verdict(ratio_same <= GOAL_RATIO)} |"]
    per_hop = ["| middleware hop | p50 at 1 connection | p50, all on one CPU | CPU per request at 32 connections |",
               "|---|---:|---:|---:|"]
    for label, a, b in hops:
        cost, cost_same = hop(a, b, "p50"), hop(a, b, "p50_same_cpu")
        cpu = m(b, "proxy_cpu_us") - m(a, "proxy_cpu_us")
        per_hop.append(f"| {label} | +{cost:,.0f} µs | +{cost_same:,.0f} µs | +{cpu:,.1f} µs |")
        if "reuse" not in label and "0.3" not in label:
            goal = GOAL_HOP_US * (2 if b == "jwt_limit" else 1)
            goals.append(f"| {label}: ≤ {goal:g} µs of p50 | +{cost:,.0f} µs (+{cost_same:,.0f} µs on one "
                         f"CPU) | {bench.verdict(cost <= goal)} |")

    chain = ["| chaining (same process, same CPU) | req/s at 32 connections | CPU per request | p50 at 1 connection | "
             "p99 at 1 connection | p50, all on one CPU |", "|---|---:|---:|---:|---:|---:|"]
    for key in CHAINING:
        chain.append(f"| {CONFIGS[key][0]} | {m(key, 'rps32'):,.0f} | {m(key, 'proxy_cpu_us'):,.1f} µs | "
                     f"{us(m(key, 'p50'))} | {us(m(key, 'p99'))} | {us(m(key, 'p50_same_cpu'))} |")
    local_cost, loop_cost = hop("back", "local", "p50"), hop("back", "loop", "p50")
    chain_line = (f"The call costs +{local_cost:,.0f} µs of p50 in process and +{loop_cost:,.0f} µs over loopback "
                  f"(over `back` alone); over loopback the same call takes {m('loop', 'p50') / m('local', 'p50'):.2f}× "
                  f"the in-process p50 and serves {m('local', 'rps32') / m('loop', 'rps32'):.2f}× fewer requests a "
                  f"second ({m('loop', 'proxy_cpu_us'):,.1f} µs of CPU per request against "
                  f"{m('local', 'proxy_cpu_us'):,.1f} µs).")

    parts = ["\n".join(main), "\n".join(goals), "\n".join(per_hop), "\n".join(chain) + "\n\n" + chain_line]
    both = results.get("both_cpus") or {}
    if both:
        rows = ["| both CPUs, nothing pinned | req/s at 32 connections | ÷ nginx | CPUs busy (proxy) | "
                "CPU per request (proxy) |", "|---|---:|---:|---:|---:|"]
        for key in present(BOTH_CPUS, results):
            label = CONFIGS[key][0].replace("nginx, reverse proxy", "nginx, reverse proxy (2 workers)")
            rows.append(f"| {label} | {m(key, 'rps32', both):,.0f} | {m(key, 'rps32', both) / m('nginx', 'rps32', both):.2f}x | "
                        f"{m(key, 'proxy_cpus', both):.2f} | {m(key, 'proxy_cpu_us', both):,.1f} µs |")
        parts.append("\n".join(rows))

    n_reps = max(len(v) for v in runs.values())
    per_rep = ["| configuration | " + " | ".join(f"rep {i + 1}" for i in range(n_reps)) + " |",
               "|---|" + "---|" * n_reps]
    for key, where, tag in [(k, runs, "") for k in ("upstream",) + gateway + CHAINING] + \
                           [(k, both, ", both CPUs") for k in (present(BOTH_CPUS, results) if both else ())]:
        cells = [f"{r['rps32']:,.0f}" + (f"; {us(r['p50'])} / {us(r['p99'])}; {us(r['p50_same_cpu'])}"
                                         if "p50" in r else "") for r in where[key]]
        per_rep.append(f"| {CONFIGS[key][0]}{tag} | " + " | ".join(cells) + " |")
    others = [r["other_cpus"] for where in (runs, both) for key in where for r in where[key]]
    errors = sum(r["errors"] for where in (runs, both) for key in where for r in where[key])
    upstream_cpus = max(r["upstream_cpus"] for key in gateway for r in runs[key])
    proxy_cpus = min(r["proxy_cpus"] for key in gateway for r in runs[key])
    parts.append("Each repetition (req/s at 32 connections; pinned, also p50 / p99 at 1 connection; p50 at 1 "
                 "connection all on one CPU):\n\n" + "\n".join(per_rep))
    details = (
        f"The proxies on CPU {SERVER_CPU} kept it at least {proxy_cpus:.2f} busy in every 32-connection run, the "
        f"upstream at most {upstream_cpus:.2f} of CPU {LOADGEN_CPU} (which wrk shares): the proxy is what limits "
        f"req/s. Socket errors over all runs: {errors}. Processes other than the benchmark's kept {med(others):.2f} "
        f"CPUs busy during a run (median; at most {max(others):.2f})"
        + (": the machine was busy, and these figures carry that noise." if med(others) >= 0.1 else ".")
        + f" {results['nginx_version']}; the header rewrite component is {results['wasm_bytes']:,} bytes"
        + (f", the WASI 0.3 pass-through {results['p3_bytes']:,}" if results.get("p3_bytes") else "")
        + (f", `jwt` {results['jwt_limit_bytes'][0]:,} and `limit` {results['jwt_limit_bytes'][1]:,}"
           if results.get("jwt_limit_bytes") else "")
        + f". Load average "
        f"(1, 5, 15 min) at the start: {', '.join(f'{v:.2f}' for v in results['loadavg_start'])}; at the end: "
        f"{', '.join(f'{v:.2f}' for v in results['loadavg_end'])}.")
    parts.append(details)

    command = "`bench/run.sh --gateway`" + (" (quick)" if args.quick else "")
    how = (f"`bench/run.sh --gateway` (or, built, `python3 bench/gateway.py`). The upstream, the same for every "
           f"configuration, is nginx answering `return 200 \"hello\\n\"` (1 worker, keep-alive, no access log; "
           f"bench/container/hello-server.c serves one connection at a time, so it cannot sit behind a pooling "
           f"proxy). Pinned as the suite pins: the proxy under test on CPU {SERVER_CPU} (skiff then runs one thread, "
           f"nginx runs `worker_processes 1`: one core each), wrk and the upstream on CPU {LOADGEN_CPU}. nginx is "
           f"a plain reverse proxy: `proxy_pass` to an `upstream` block with `keepalive 32`, `proxy_http_version "
           f"1.1`, `proxy_set_header Connection \"\"`, and `Host`, `X-Forwarded-For`, `-Proto`, `-Host` set as skiff "
           f"sets them; no access log (skiff logs no line per request either). skiff is one `skiff up` "
           f"(default settings) serving one app whose `[upstream.NAME]` routes all go to the upstream: with no "
           f"middleware, through one (the header rewrite: tests/guests/gateway-guest with `MODE = \"forward\"`, "
           f"which sends the request on and adds a response header), through two of them (what a hop itself "
           f"costs), and "
           + ("through examples/gateway's `jwt` and `limit` (HS256 with a valid token made by the script, audience "
              "and issuer checked; then a counter per subject, `increment` in the key-value store `default`, which "
              "is the embedded one as in the example, each increment committed to disk, under a limit wrk never "
              "reaches)" if "jwt_limit" in gateway else
              "not through the JWT check + rate limit: examples/gateway/{jwt,limit} were not built for this run")
           + "; the rewrite chains again with the middlewares' opt-in instance reuse "
           f"(`requests_per_instance = 1000`) as extra rows"
           + ("; and the same chains through a WASI 0.3 middleware (tests/guests/http-p3-guest with `MODE = "
              "\"forward\"`: it passes the request on as it came, its body stream unread, and adds a header to "
              "the response), fresh and with instance reuse" if "one_p3" in gateway else "")
           + f". Chaining, in the same app: `front` (MODE=call) calls "
           f"`back` (MODE=echo) in process at `http://back.skiff.internal`, or the very same call over loopback "
           f"HTTP to the same skiff's own listener, against `back` alone. wrk -t1, keep-alive: req/s at 32 "
           f"connections (with the CPU time the proxy's processes used, per request), p50 and p99 at 1 "
           f"connection, and p50 at 1 connection with wrk, the upstream and the proxy all on CPU {SERVER_CPU} "
           f"(no cross-CPU wake-ups, of which a proxied request has four). 2 s of warm-up each, then "
           f"{args.reps} repetitions of {args.duration} s per figure ({max(2, args.duration // 2)} s all on one "
           f"CPU), configurations interleaved; medians. A "
           f"middleware hop's cost is the p50 with it minus the p50 without it."
           + (" Last, with nothing pinned: nginx with `worker_processes 2` and a second skiff free to use both CPUs "
              "(2 threads), the upstream and wrk floating too; req/s at 32 connections." if both else ""))
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command, parts)
    bench.keep_results("gateway", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition of 2 s runs; writes no docs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--no-both-cpus", action="store_true", help="skip the unpinned runs")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--note", default="", help="a paragraph to add under the description")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier run's gateway.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.reps, args.duration, args.no_write = 1, 2, True

    target = bench.target_dir()
    skiff = os.environ.get("SKIFF", os.path.join(target, "release/skiff"))
    wasm = os.environ.get("GATEWAY_GUEST_WASM",
                          os.path.join(target, "guests/wasm32-wasip2/release/gateway_guest.wasm"))
    if not os.path.exists(skiff):
        fail(f"no skiff binary at {skiff}: run `cargo build --release -p skiff` (or bench/run.sh --gateway)")
    if not os.path.exists(wasm):
        fail(f"no gateway guest at {wasm}: run scripts/build-guests.sh (or bench/run.sh --gateway)")
    jwt_limit = (os.environ.get("JWT_WASM", os.path.join(target, "bench-gateway/wasm32-wasip2/release/jwt.wasm")),
                 os.environ.get("LIMIT_WASM", os.path.join(target, "bench-gateway/wasm32-wasip2/release/limit.wasm")))
    if not all(os.path.exists(p) for p in jwt_limit):
        log(f"warning: no {' or '.join(p for p in jwt_limit if not os.path.exists(p))}: the JWT check + rate limit "
            f"is left out (build examples/gateway, or run bench/run.sh --gateway)")
        jwt_limit = None
    p3 = os.environ.get("HTTP_P3_GUEST_WASM", os.path.join(target, "guests/wasm32-wasip2/release/http_p3_guest.wasm"))
    if not os.path.exists(p3):
        log(f"warning: no {p3}: the WASI 0.3 middleware is left out (run scripts/build-guests.sh)")
        p3 = None
    for tool in ("wrk", "taskset", "nginx"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: run bench/run.sh --gateway, which installs it")
    if (os.cpu_count() or 1) < 2:
        fail(f"the proxies run on CPU {SERVER_CPU} and wrk and the upstream on CPU {LOADGEN_CPU}: this needs 2 CPUs")
    machine_line = bench.machine()
    for var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        os.environ.pop(var, None)

    other = OtherWork([])
    time.sleep(1)
    if other.cpus() > 0.2:
        log(f"warning: other processes keep {other.cpus():.2f} CPUs busy: the figures will carry that noise")
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="skiff-gateway-")
    try:
        results = measure(args, skiff, wasm, jwt_limit, p3, workdir)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"gateway: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
