#!/usr/bin/env python3
"""The benchmark suite of skiff (issue 4): every comparison in one run on one machine.

Normally started by `bench/run.sh`, which installs the tools and builds everything first:

    bench/bench.py [--quick] [--reps N] [--duration S] [--cold-runs N] [--no-write]

Figures (see docs/performance.md for what each means and how to read it):
  1. sandbox cost: criterion bench `crates/skiff-runtime/benches/sandbox.rs`; a fresh
     instance per request (the default), and the same request on a warm instance kept by the
     opt-in instance reuse (`requests_per_instance`), and the same request through a WASI 0.3
     component (component-model async, on skiff's second engine), fresh and kept; and like
     for like, the same `GET /count` from the wasip2-crate and the wasip3-crate test guests
  2. HTTP throughput (32 connections) and latency (1 connection) of the hello app over
     loopback, skiff vs a native hyper server vs `wasmtime serve` (wrk); skiff also a second
     time with instance reuse on (`requests_per_instance = 1000`), as extra rows
  3. cold start, exec to first 200: skiff and `wasmtime serve` with warm and empty code
     caches, a static native server by fork/exec, and the same server in a `crun` container
  4. CPU-heavy guest: sha256 over 1 MiB per request, skiff vs native vs `wasmtime serve`, and
     skiff with `--engine pulley` (the interpreter) against skiff on native code
  5. memory: RSS idle and under load; RSS per in-flight instance at 1,000 concurrent requests
  6. WASI 0.3 over HTTP: the wasip3 test guest's `GET /hello` under skiff (fresh instances,
     and `requests_per_instance = 1000`) and under `wasmtime serve` (its WASIp3 defaults, and
     fresh instances), beside figure 2's WASIp2 hello under skiff

Servers under load are pinned to CPU 0 and the load generator to CPU 1 (`taskset`). Every
process started here is stopped on exit, including on Ctrl-C and SIGTERM.
"""
import argparse
import asyncio
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
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
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CPU = "0"
LOADGEN_CPU = "1"
BEGIN = "<!-- bench/run.sh writes from here -->"
END = "<!-- bench/run.sh writes up to here -->"

RUNNING = []  # every Popen started here, stopped by stop_all()


def log(message):
    print(message, file=sys.stderr, flush=True)


def fail(message):
    raise SystemExit(f"bench: {message}")


# ------------------------------------------------------------------------------------------
# processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(argv, cpu):
    return (["taskset", "-c", cpu] + argv) if cpu is not None else argv


def spawn(argv, log_path=None, **kwargs):
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if log_path else out,
                            stdin=subprocess.DEVNULL, **kwargs)
    if log_path:
        out.close()
    RUNNING.append(proc)
    return proc


def stop(proc, grace=5.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in RUNNING:
        RUNNING.remove(proc)


def stop_all():
    for proc in list(RUNNING):
        try:
            stop(proc, grace=2.0)
        except Exception:
            pass


def http_get(port, path="/", timeout=5.0, host="localhost"):
    """One GET with `Connection: close`; returns (status, body) or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, body


class Server:
    """A server process, pinned, with its output in a log file; ready once it answers 200."""

    def __init__(self, name, argv, port, workdir, cpu=SERVER_CPU, env=None, cwd=ROOT, ready_path="/"):
        self.name, self.port = name, port
        self.log_path = os.path.join(workdir, f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log")
        self.proc = spawn(pinned(argv, cpu), self.log_path, env=env, cwd=cwd)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                fail(f"{name} exited with {self.proc.returncode} before answering:\n{self.log_tail()}")
            try:
                status, _ = http_get(port, ready_path, timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail(f"{name} did not answer 200 on port {port} within 60 s:\n{self.log_tail()}")
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self):
        stop(self.proc)


# ------------------------------------------------------------------------------------------
# /proc


def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def smaps(pid):
    """[(start, end, rss_kib)] for every mapping of the process."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", first):
                start, end = (int(x, 16) for x in first.split("-"))
                maps.append([start, end, 0])
            elif line.startswith("Rss:") and maps:
                maps[-1][2] = int(line.split()[1])
    return maps


def rss_within(maps, region):
    start, end = region
    return sum(rss for s, e, rss in maps if s >= start and e <= end)


class RssSampler:
    """Samples VmRSS of a process every `interval` seconds in a thread; keeps the maximum."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval, self.max_kib = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max_kib = max(self.max_kib, proc_status_kib(self.pid, "VmRSS"))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------
# load generation (wrk)

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port, path, connections, seconds, latency=False, cpu=LOADGEN_CPU, script=None,
        after=None):
    """One wrk run: req/s, and p50/p99 in ms with `latency`. `script` is a Lua file that
    shapes the requests; `after(argv)` runs once wrk is done (e.g. to check the server lives)."""
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
                  + (["--latency"] if latency else []) + (["-s", script] if script else [])
                  + [f"http://127.0.0.1:{port}{path}"], cpu)
    out = subprocess.run(argv, capture_output=True, text=True)
    if after:
        after(argv)
    if out.returncode != 0:
        fail(f"wrk failed ({' '.join(argv)}):\n{out.stdout}\n{out.stderr}")
    text = out.stdout
    result = parse_wrk(text)
    if result["non2xx"]:
        fail(f"{result['non2xx']} responses were not 2xx from {path} on port {port}:\n{text}")
    return result


def parse_wrk(text):
    """What a wrk run printed: req/s, non-2xx responses, socket errors, and p50/p99 in ms when
    it ran with `--latency`."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        fail(f"cannot read wrk's output:\n{text}")
    result = {"rps": float(m.group(1))}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["non2xx"] = int(bad.group(1)) if bad else 0
    result["socket_errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * UNITS[m.group(2)]
    return result


# ------------------------------------------------------------------------------------------
# figures


def figure_sandbox(args):
    """Figure 1: runs the criterion bench and reads its medians."""
    log("== 1. sandbox cost (criterion)")
    argv = pinned(["cargo", "bench", "-p", "skiff-runtime", "--bench", "sandbox", "--"]
                  + (["--warm-up-time", "1", "--measurement-time", "2", "--sample-size", "20"] if args.quick else []),
                  SERVER_CPU)
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"cargo bench failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    figures = {}
    for name in ("hello_request", "hello_request_reused", "hello_request_wasi_0_3",
                 "hello_request_wasi_0_3_reused", "count_request_wasi_0_2", "count_request_wasi_0_3",
                 "hello_instantiate"):
        path = os.path.join(target, "criterion", "sandbox", name, "new", "estimates.json")
        with open(path) as f:
            estimates = json.load(f)
        figures[name] = {
            "median_us": estimates["median"]["point_estimate"] / 1000,
            "low_us": estimates["median"]["confidence_interval"]["lower_bound"] / 1000,
            "high_us": estimates["median"]["confidence_interval"]["upper_bound"] / 1000,
        }
        log(f"   {name}: median {figures[name]['median_us']:.2f} us")
    return figures


def figure_http(args, tools, workdir):
    """Figures 2, 4 and part of 5: wrk against the servers, interleaved per repetition. The hello
    app runs under four: native hyper, skiff (a fresh instance per request, the default), skiff
    with instance reuse (opt-in, `requests_per_instance`) and `wasmtime serve`."""
    log("== 2. HTTP throughput and latency (hello), 4. sha256 guest, 5. RSS under load")
    results = {}
    servers = {}
    try:
        port = free_port()
        servers["native"] = Server("native hyper", [tools["native"], f"127.0.0.1:{port}"], port, workdir)
        port = free_port()
        servers["skiff"] = Server("skiff up", [tools["skiff"], "up", "--listen", f"127.0.0.1:{port}",
                                               os.path.join(ROOT, "examples/hello")],
                                  port, workdir, env=dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache")))
        # The same component with the opt-in instance reuse: one instance serves up to 1,000
        # requests one after another instead of a fresh one per request.
        reuse_manifest = write_manifest(workdir, "hello", os.path.join(ROOT, "examples/hello/hello.wasm"),
                                        routes=["/", "/hello/..."], requests_per_instance=1000)
        port = free_port()
        servers["skiff_reuse"] = Server("skiff up, instance reuse",
                                        [tools["skiff"], "up", "--listen", f"127.0.0.1:{port}", reuse_manifest],
                                        port, workdir,
                                        env=dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache")))
        port = free_port()
        servers["wasmtime"] = Server("wasmtime serve", [tools["wasmtime"], "serve", "-S", "cli=y", "--addr",
                                                        f"127.0.0.1:{port}", os.path.join(ROOT, "examples/hello/hello.wasm")],
                                     port, workdir, env=dict(os.environ, XDG_CACHE_HOME=os.path.join(workdir, "wasmtime-cache")))
        results = load_runs(args, servers, "/")
    finally:
        for s in servers.values():
            s.stop()

    log("== 4. CPU-heavy guest: sha256 over 1 MiB per request, 1 connection")
    cpu = {}
    servers = {}
    try:
        manifest = write_manifest(workdir, "sha256", tools["sha256_wasm"])
        port = free_port()
        servers["native"] = Server("native sha256", [tools["native"], f"127.0.0.1:{port}"], port, workdir,
                                   ready_path="/sha256")
        port = free_port()
        servers["skiff"] = Server("skiff sha256", [tools["skiff"], "up", "--listen", f"127.0.0.1:{port}", manifest],
                                  port, workdir, ready_path="/sha256",
                                  env=dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache")))
        # The same app with the guest on wasmtime's interpreter instead of native code.
        port = free_port()
        servers["skiff_pulley"] = Server("skiff sha256, Pulley",
                                         [tools["skiff"], "--engine", "pulley", "up", "--listen",
                                          f"127.0.0.1:{port}", manifest],
                                         port, workdir, ready_path="/sha256",
                                         env=dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache")))
        port = free_port()
        servers["wasmtime"] = Server("wasmtime sha256", [tools["wasmtime"], "serve", "-S", "cli=y", "--addr",
                                                         f"127.0.0.1:{port}", tools["sha256_wasm"]],
                                     port, workdir, ready_path="/sha256",
                                     env=dict(os.environ, XDG_CACHE_HOME=os.path.join(workdir, "wasmtime-cache")))
        digests = {name: http_get(s.port, "/sha256")[1] for name, s in servers.items()}
        if len(set(digests.values())) != 1:
            fail(f"the sha256 servers disagree: {digests}")
        cpu["digest"] = digests["native"].decode().strip()
        for s in servers.values():
            wrk(s.port, "/sha256", 1, 1)  # warm-up
        runs = {name: [] for name in servers}
        for rep in range(args.reps):
            for name, s in servers.items():
                one = wrk(s.port, "/sha256", 1, args.duration, latency=True)
                runs[name].append({"p50": one["p50_ms"], "p99": one["p99_ms"], "rps1": one["rps"]})
                log(f"   rep {rep + 1} {name:12}: p50 {one['p50_ms']:.2f} ms, {one['rps']:.0f} req/s")
        for name in servers:
            cpu[name] = runs[name]
    finally:
        for s in servers.values():
            s.stop()
    return results, cpu


def load_runs(args, servers, path):
    """wrk against each server on `path`, interleaved per repetition, once they all answer the
    same: req/s at 32 connections, p50/p99 at 1 connection, RSS. Returns each server's runs."""
    # Same answer from all of them (the date header aside).
    bodies = {name: http_get(s.port, path)[1] for name, s in servers.items()}
    if len(set(bodies.values())) != 1:
        fail(f"the servers answer differently: {bodies}")
    idle = {name: proc_status_kib(s.pid, "VmRSS") for name, s in servers.items()}
    for name, s in servers.items():
        wrk(s.port, path, 32, 1 if args.quick else 2)  # warm-up
    runs = {name: [] for name in servers}
    for rep in range(args.reps):
        for name, s in servers.items():
            with RssSampler(s.pid) as sampler:
                many = wrk(s.port, path, 32, args.duration)
            one = wrk(s.port, path, 1, args.duration, latency=True)
            # The same with wrk on the server's CPU: no cross-CPU wake-up of an idle CPU
            # in the round trip, which on a VM costs tens of microseconds by itself.
            shared = wrk(s.port, path, 1, max(2, args.duration // 2), latency=True, cpu=SERVER_CPU)
            run = {"rps32": many["rps"], "p50": one["p50_ms"], "p99": one["p99_ms"],
                   "rps1": one["rps"], "rss_load": sampler.max_kib, "p50_same_cpu": shared["p50_ms"],
                   "errors": many["socket_errors"] + one["socket_errors"]}
            runs[name].append(run)
            log(f"   rep {rep + 1} {name:11}: {run['rps32']:9.0f} req/s @32, p50 {run['p50'] * 1000:6.0f} us, "
                f"p99 {run['p99'] * 1000:6.0f} us @1, p50 {run['p50_same_cpu'] * 1000:4.0f} us @1 same CPU, "
                f"RSS {run['rss_load'] / 1024:.1f} MiB")
    return {name: {"runs": runs[name], "rss_idle": idle[name], "rss_hwm": proc_status_kib(s.pid, "VmHWM")}
            for name, s in servers.items()}


def figure_http_wasi_0_3(args, tools, workdir):
    """Figure 6: a WASI 0.3 component's hello over HTTP (`tests/guests/http-p3-guest`,
    `GET /hello`), under skiff (a fresh instance per request, the default; and with
    `requests_per_instance`) and under `wasmtime serve` (its own WASIp3 defaults: an instance
    serves up to 128 requests, 16 at once; and with a fresh instance per request)."""
    log("== 6. WASI 0.3 hello over HTTP: skiff and wasmtime serve")
    wasm = tools["http_p3_guest_wasm"]
    servers = {}
    try:
        cache = dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache"))
        for name, reuse in (("skiff", None), ("skiff_reuse", 1000)):
            port = free_port()
            manifest = write_manifest(workdir, f"p3-{name.replace('_', '-')}", wasm, requests_per_instance=reuse)
            servers[name] = Server(f"skiff up, WASI 0.3{', reuse' if reuse else ''}",
                                   [tools["skiff"], "up", "--listen", f"127.0.0.1:{port}", manifest],
                                   port, workdir, env=cache, ready_path="/hello")
        for name, extra in (("wasmtime", []), ("wasmtime_fresh", ["--max-instance-reuse-count", "1"])):
            port = free_port()
            servers[name] = Server(f"wasmtime serve, WASI 0.3{' fresh' if extra else ''}",
                                   [tools["wasmtime"], "serve", "-S", "cli=y", *extra, "--addr",
                                    f"127.0.0.1:{port}", wasm], port, workdir, ready_path="/hello",
                                   env=dict(os.environ, XDG_CACHE_HOME=os.path.join(workdir, "wasmtime-cache")))
        return load_runs(args, servers, "/hello")
    finally:
        for s in servers.values():
            s.stop()


def write_manifest(workdir, name, wasm, max_concurrency=None, requests_per_instance=None, routes=("/...",)):
    """A one-component app in `workdir/app-NAME/skiff.toml`; returns the manifest's path."""
    folder = os.path.join(workdir, f"app-{name}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "skiff.toml")
    limits = "".join(f"{key} = {value}\n" for key, value in (("max_concurrency", max_concurrency),
                                                              ("requests_per_instance", requests_per_instance))
                     if value)
    limits = f"\n[component.{name}.limits]\n{limits}" if limits else ""
    with open(path, "w") as f:
        f.write(f'[app]\nname = "bench-{name}"\nversion = "0.0.0"\n\n'
                f'[component.{name}]\nsource = {json.dumps(wasm)}\nroute = {json.dumps(list(routes))}\n{limits}')
    return path


def figure_cold_start(args, tools, workdir):
    """Figure 3: exec to first 200, interleaved variants, 100 ms between starts."""
    log(f"== 3. cold start, exec to first 200, {args.cold_runs} isolated starts each")
    hello = os.path.join(ROOT, "examples/hello")
    skiff_warm = os.path.join(workdir, "cold-skiff-warm")
    wasmtime_warm = os.path.join(workdir, "cold-wasmtime-warm")

    def skiff(cache):
        return lambda port: ([tools["skiff"], "up", "--listen", f"127.0.0.1:{port}", hello],
                             dict(os.environ, SKIFF_CACHE_DIR=cache))

    def wasmtime(cache):
        return lambda port: ([tools["wasmtime"], "serve", "-S", "cli=y", "--addr", f"127.0.0.1:{port}",
                              os.path.join(hello, "hello.wasm")], dict(os.environ, XDG_CACHE_HOME=cache))

    variants = {
        "skiff_warm": skiff(skiff_warm),
        "skiff_empty": None,  # a fresh cache folder per start
        "wasmtime_warm": wasmtime(wasmtime_warm),
        "wasmtime_empty": None,
        "native_exec": lambda port: ([tools["hello_server"], str(port)], None),
    }
    # Prime the warm caches, and check that they were written.
    for name, cache, subdir in (("skiff_warm", skiff_warm, None), ("wasmtime_warm", wasmtime_warm, "wasmtime")):
        os.makedirs(cache, exist_ok=True)
        port = free_port()
        argv, env = variants[name](port)
        time_to_first_200(argv, port, env=env, linger=1.0)
        look = os.path.join(cache, subdir) if subdir else cache
        files = sum(len(f) for _, _, f in os.walk(look)) if os.path.isdir(look) else 0
        if files == 0:
            fail(f"{name}: no compiled code was cached in {look}")

    crun = container_bundle(tools, workdir)
    results = {name: [] for name in variants}
    if crun["ok"]:
        results["crun"] = []
    for i in range(args.cold_runs):
        for name, make in variants.items():
            port = free_port()
            if name == "skiff_empty":
                cache = tempfile.mkdtemp(dir=workdir)
                argv, env = skiff(cache)(port)
            elif name == "wasmtime_empty":
                cache = tempfile.mkdtemp(dir=workdir)
                argv, env = wasmtime(cache)(port)
            else:
                cache = None
                argv, env = make(port)
            results[name].append(time_to_first_200(argv, port, env=env))
            if cache:
                shutil.rmtree(cache, ignore_errors=True)
            time.sleep(0.1)
        if crun["ok"]:
            results["crun"].append(crun_first_200(crun, i))
            time.sleep(0.1)
    for name, values in results.items():
        log(f"   {name:15}: median {statistics.median(values):7.2f} ms of {len(values)}")
    if not crun["ok"]:
        results["crun_error"] = crun["error"]
    return results


def time_to_first_200(argv, port, env=None, cwd=ROOT, linger=0.0, stop_fn=None):
    """Milliseconds from exec to the first 200 on `port`; then stops the process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    RUNNING.append(proc)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(request)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        elapsed = (time.perf_counter() - start) * 1000
                        break
            except OSError:
                if proc.poll() is not None:
                    fail(f"{' '.join(argv)} exited with {proc.returncode}:\n"
                         f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
                if time.perf_counter() - start > 60:
                    fail(f"{' '.join(argv)} did not answer within 60 s")
                time.sleep(0.0002)
        time.sleep(linger)
        return elapsed
    finally:
        if stop_fn:
            stop_fn()
        stop(proc)
        proc.stderr.close()


def container_bundle(tools, workdir):
    """Builds the OCI bundle and checks that `crun run` works here (see run.sh for the
    mount-namespace trick that hybrid cgroup hosts need)."""
    if not shutil.which("crun"):
        return {"ok": False, "error": "crun is not installed"}
    port = free_port()
    bundle = os.path.join(workdir, "bundle")
    out = subprocess.run([os.path.join(ROOT, "bench/container/make-bundle.sh"), bundle, str(port)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"ok": False, "error": f"make-bundle.sh failed: {out.stderr.strip()}"}
    crun = {"ok": True, "bundle": bundle, "port": port}
    try:
        crun_first_200(crun, "probe")
    except SystemExit as err:
        return {"ok": False, "error": str(err)}
    return crun


def crun_first_200(crun, n):
    cid = f"skiff-bench-{os.getpid()}-{n}"

    def kill():
        subprocess.run(["crun", "kill", cid, "KILL"], capture_output=True)

    try:
        return time_to_first_200(["crun", "run", "--bundle", crun["bundle"], cid], crun["port"],
                                 cwd=crun["bundle"], stop_fn=kill)
    finally:
        subprocess.run(["crun", "delete", "-f", cid], capture_output=True)


def figure_in_flight(args, tools, workdir):
    """Figure 5b: RSS per in-flight instance at N concurrent requests to a sleeping guest."""
    n, sleep_ms = args.in_flight, args.sleep_ms
    log(f"== 5. memory per in-flight instance: {n} concurrent requests, guest sleeps {sleep_ms} ms")
    manifest = write_manifest(workdir, "sleep", tools["http_guest_wasm"])
    port = free_port()
    server = Server("skiff sleep", [tools["skiff"], "--max-instances", str(n + 100), "up",
                                    "--listen", f"127.0.0.1:{port}", manifest],
                    port, workdir, ready_path="/sleep?ms=0",
                    env=dict(os.environ, SKIFF_CACHE_DIR=os.path.join(workdir, "skiff-cache")))
    try:
        pid = server.pid
        # The linear-memory pool: the largest mapping of the process. Found before any
        # further instance maps a copy-on-write image into it and splits it.
        pool = max(((s, e) for s, e, _ in smaps(pid)), key=lambda r: r[1] - r[0])
        for _ in range(20):
            http_get(port, "/sleep?ms=0")
        time.sleep(0.3)
        # The client on the load generator's CPU, as wrk is for the other figures.
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
        try:
            result = asyncio.run(in_flight_run(pid, port, n, sleep_ms, pool))
        finally:
            os.sched_setaffinity(0, affinity)
        result.update(pool_gib=(pool[1] - pool[0]) / 2**30, sleep_ms=sleep_ms, requests=n)
    finally:
        server.stop()
    log(f"   {result['in_flight']} in flight at the snapshot; "
        f"{result['per_instance_kib']:.0f} KiB each, {result['per_instance_host_kib']:.0f} KiB without linear memory; "
        f"connections {result['per_connection_kib']:.1f} KiB each; {result['ok']}/{n} answered 200")
    return result


async def in_flight_run(pid, port, n, sleep_ms, pool):
    base_maps = smaps(pid)
    base_rss = proc_status_kib(pid, "VmRSS")
    conns = []
    for batch in range(0, n, 100):
        conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(batch, min(n, batch + 100))))
    await asyncio.sleep(0.3)
    conn_maps = smaps(pid)
    conn_rss = proc_status_kib(pid, "VmRSS")
    reset_peak_rss(pid)
    request = f"GET /sleep?ms={sleep_ms} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    received = [None] * n
    statuses = [0] * n

    async def one(i, reader, writer):
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        received[i] = time.perf_counter()
        statuses[i] = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        writer.close()

    tasks = [asyncio.ensure_future(one(i, r, w)) for i, (r, w) in enumerate(conns)]
    await asyncio.sleep(0)  # every request written
    sent = time.perf_counter()
    # The snapshot: far enough in for the host to have admitted what it can, early enough
    # that the first guests are still asleep. Read in a thread so responses keep flowing.
    await asyncio.sleep(sleep_ms / 2 / 1000)
    snap_start = time.perf_counter()
    snap_rss = await asyncio.to_thread(proc_status_kib, pid, "VmRSS")
    snap_maps = await asyncio.to_thread(smaps, pid)
    snap_at = (snap_start + time.perf_counter()) / 2
    await asyncio.gather(*tasks)
    hwm = proc_status_kib(pid, "VmHWM")
    # A request was in flight at the snapshot if its guest was asleep then: it answered
    # `sleep` after it started, so it started at about its answer time less `sleep`.
    sleep_s = sleep_ms / 1000
    in_flight = sum(1 for r in received if r is not None and r - sleep_s <= snap_at < r)
    total_delta = snap_rss - conn_rss
    linear_delta = rss_within(snap_maps, pool) - rss_within(conn_maps, pool)
    spread = (max(received) - min(received)) * 1000
    return {
        "base_rss": base_rss, "conn_rss": conn_rss, "snap_rss": snap_rss, "hwm": hwm,
        "in_flight": in_flight, "ok": statuses.count(200),
        "snapshot_after_ms": (snap_at - sent) * 1000, "answer_spread_ms": spread,
        "per_connection_kib": (conn_rss - base_rss) / n,
        "per_instance_kib": total_delta / max(in_flight, 1),
        "per_instance_host_kib": (total_delta - linear_delta) / max(in_flight, 1),
        "per_instance_linear_kib": linear_delta / max(in_flight, 1),
        "hwm_per_request_kib": (hwm - conn_rss) / n,
    }


# ------------------------------------------------------------------------------------------
# registries, OCI images and containerd (distribution.py, shim.py)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
SNAPSHOTTER = "overlayfs"


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def run(argv, **kwargs):
    """Runs argv to the end; fails the bench with its output if it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if out.returncode != 0:
        fail(f"`{' '.join(argv)}` exited with {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ms_since(start):
    return (time.perf_counter() - start) * 1000


class Registry:
    """Debian's `docker-registry` on a free loopback port, storing in the work folder."""

    def __init__(self, workdir):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = os.path.join(workdir, "registry")
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n"
                    f"  filesystem:\n    rootdirectory: {self.dir}/data\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.addr}\n  secret: bench\n")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.proc = spawn(["docker-registry", "serve", config], self.log_path)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    fail(f"docker-registry did not start:\n{open(self.log_path).read()[-3000:]}")
                time.sleep(0.02)

    def url(self, path):
        return f"http://{self.addr}{path}"

    def request(self, method, url, data=None, headers=None):
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def push_blob(self, repo, data):
        digest = sha256(data)
        status, _, _ = self.request("HEAD", self.url(f"/v2/{repo}/blobs/{digest}"))
        if status == 200:
            return digest
        status, headers, body = self.request("POST", self.url(f"/v2/{repo}/blobs/uploads/"), b"")
        if status != 202:
            fail(f"registry refused to start an upload to {repo}: {status} {body[:500]!r}")
        location = urllib.parse.urljoin(self.url("/"), headers["Location"])
        location += ("&" if "?" in location else "?") + "digest=" + urllib.parse.quote(digest)
        status, _, body = self.request("PUT", location, data,
                                       {"Content-Type": "application/octet-stream"})
        if status != 201:
            fail(f"registry refused blob {digest} of {repo}: {status} {body[:500]!r}")
        return digest

    def push_manifest(self, repo, tag, manifest):
        status, _, body = self.request("PUT", self.url(f"/v2/{repo}/manifests/{tag}"), manifest,
                                       {"Content-Type": OCI_MANIFEST})
        if status != 201:
            fail(f"registry refused the manifest of {repo}:{tag}: {status} {body[:500]!r}")

    def pull_size(self, repo, tag):
        """What pulling repo:tag downloads: the manifest as stored, its config and layers."""
        status, _, body = self.request("GET", self.url(f"/v2/{repo}/manifests/{tag}"),
                                       headers={"Accept": OCI_MANIFEST})
        if status != 200:
            fail(f"GET manifest of {repo}:{tag}: {status} {body[:500]!r}")
        manifest = json.loads(body)
        layers = [layer["size"] for layer in manifest["layers"]]
        return {"manifest": len(body), "config": manifest["config"]["size"], "layers": layers,
                "total": len(body) + manifest["config"]["size"] + sum(layers)}


# ------------------------------------------------------------------------------------------
# container images, written here


def gzip_layer(tar_bytes):
    """(blob, diff_id) of a layer: gzip level 6 (Go's default, which Docker uses), no mtime."""
    return gzip.compress(tar_bytes, compresslevel=6, mtime=0), sha256(tar_bytes)


def file_layer(path_in_image, binary):
    """A layer holding one executable file (and the folders above it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = path_in_image.strip("/").split("/")
        for i in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:i]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("/".join(parts))
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    return gzip_layer(buf.getvalue())


def oci_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def push_image(registry, repo, tag, layers, entrypoint):
    """Pushes an OCI image of `layers` ([(blob, diff_id)]), platform linux/<this machine>."""
    config = json.dumps({
        "architecture": oci_arch(), "os": "linux",
        "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
    }, separators=(",", ":")).encode()
    descriptors = []
    for blob, _ in layers:
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": registry.push_blob(repo, blob),
                            "size": len(blob)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(repo, config), "size": len(config)},
        "layers": descriptors,
    }, separators=(",", ":")).encode()
    registry.push_manifest(repo, tag, manifest)
    return f"{registry.addr}/{repo}:{tag}"


class Containerd:
    """containerd with its own config, root, state and socket in the work folder, no CRI.
    `shim_dir`: a folder put first on containerd's PATH, where it finds a runtime's shim
    (`containerd-shim-skiff-v1` for `io.containerd.skiff.v1`)."""

    def __init__(self, workdir, shim_dir=None):
        self.dir = os.path.join(workdir, "containerd")
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "containerd.sock")
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.socket}"\n[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
                    f'[debug]\n  address = "{self.dir}/debug.sock"\n'
                    f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.dir}/opt"\n')
        self.log_path = os.path.join(self.dir, "containerd.log")
        env = dict(os.environ, PATH=f"{shim_dir}:{os.environ.get('PATH', '')}") if shim_dir else None
        self.proc = spawn(["containerd", "--config", config], self.log_path, env=env)
        deadline = time.monotonic() + 30
        while True:
            if os.path.exists(self.socket) and self.ctr(["version"], check=False).returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                fail(f"containerd did not start:\n{open(self.log_path).read()[-3000:]}")
            time.sleep(0.05)

    def ctr(self, args, check=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        out = subprocess.run(["ctr", "--address", self.socket] + args, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env=env)
        if check and out.returncode != 0:
            fail(f"ctr {' '.join(args)} exited with {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}\n"
                 f"containerd's log:\n{open(self.log_path).read()[-2000:]}")
        return out

    def empty(self):
        """Nothing pulled: no image, no content, no snapshot."""
        images = self.ctr(["images", "ls", "-q"]).stdout.strip()
        content = self.ctr(["content", "ls", "-q"]).stdout.strip()
        snapshots = self.ctr(["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]).stdout.strip().splitlines()[1:]
        return not images and not content and not snapshots

    def stop(self):
        stop(self.proc)


def wait_first_200(port, proc, start, what):
    """Polls GET / on `port` until a 200 (every 0.2 ms, as bench.py does); ms since `start`."""
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return ms_since(start)
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                fail(f"{what} exited with {proc.returncode} before answering:\n{err[-2000:]}")
            if ms_since(start) > 120_000:
                fail(f"{what} did not answer within 120 s")
            time.sleep(0.0002)


def unmount_under(folder):
    """Unmounts whatever is still mounted below `folder` (a run cut short), deepest first, so
    that removing the folder never reaches into a mounted snapshot."""
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(folder.rstrip("/") + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# ------------------------------------------------------------------------------------------
# the table


def med(values):
    return statistics.median(values)


def fmt_us(ms):
    return f"{ms * 1000:,.0f} µs" if ms < 10 else f"{ms:,.1f} ms"


def fmt_ms(ms):
    return f"{ms:,.2f} ms"


def fmt_rps(v):
    return f"{v:,.0f} req/s"


def fmt_mib(kib):
    return f"{kib / 1024:,.1f} MiB"


def verdict(ok):
    return "**yes**" if ok else "**no**"


def build_table(r):
    rows = []  # (figure, measure, skiff, baseline name, baseline, ratio, target, holds)
    s = r.get("sandbox")
    if s:
        req, inst = s["hello_request"]["median_us"], s["hello_instantiate"]["median_us"]
        rows.append(("1", "instantiate + one wasi:http request, in-process", f"{req:.1f} µs",
                     "target", "10 µs", f"{req / 10:.2f}×", "≤ 10 µs", verdict(req <= 10)))
        rows.append(("1", "of which instantiate + drop only", f"{inst:.1f} µs", "", "", "", "", ""))
        if "hello_request_reused" in s:  # absent from runs before instance reuse existed
            reused = s["hello_request_reused"]["median_us"]
            rows.append(("1", "one wasi:http request, instance reused (opt-in requests_per_instance)",
                         f"{reused:.1f} µs", "target", "10 µs", f"{reused / 10:.2f}×", "≤ 10 µs",
                         verdict(reused <= 10)))
        if "hello_request_wasi_0_3" in s:  # absent from runs before WASI 0.3 support
            p3 = s["hello_request_wasi_0_3"]["median_us"]
            rows.append(("1", "instantiate + one wasi:http 0.3 request (component-model async), in-process",
                         f"{p3:.1f} µs", "the same, WASIp2", f"{req:.1f} µs", f"{p3 / req:.2f}×", "", ""))
        if "hello_request_wasi_0_3_reused" in s and "hello_request_reused" in s:
            p3, p2 = s["hello_request_wasi_0_3_reused"]["median_us"], s["hello_request_reused"]["median_us"]
            rows.append(("1", "one wasi:http 0.3 request, instance reused (opt-in), in-process", f"{p3:.1f} µs",
                         "the same, WASIp2", f"{p2:.1f} µs", f"{p3 / p2:.2f}×", "", ""))
        if "count_request_wasi_0_3" in s:
            p3, p2 = s["count_request_wasi_0_3"]["median_us"], s["count_request_wasi_0_2"]["median_us"]
            rows.append(("1", "like for like: `GET /count`, wasip3-crate test guest, fresh instance",
                         f"{p3:.1f} µs", "wasip2-crate test guest", f"{p2:.1f} µs", f"{p3 / p2:.2f}×", "", ""))
    h = r.get("http")
    if h:
        sk, nat, wt = (h[k]["runs"] for k in ("skiff", "native", "wasmtime"))
        rps = {k: med([x["rps32"] for x in h[k]["runs"]]) for k in h}
        p50 = {k: med([x["p50"] for x in h[k]["runs"]]) for k in h}
        p99 = {k: med([x["p99"] for x in h[k]["runs"]]) for k in h}
        same = {k: med([x["p50_same_cpu"] for x in h[k]["runs"]]) for k in h}
        rows += [
            ("2", "hello, req/s at 32 connections", fmt_rps(rps["skiff"]), "native hyper", fmt_rps(rps["native"]),
             f"{rps['skiff'] / rps['native']:.2f}×", "≥ 0.60×", verdict(rps["skiff"] >= 0.6 * rps["native"])),
            ("2", "hello, req/s at 32 connections", fmt_rps(rps["skiff"]), "wasmtime serve", fmt_rps(rps["wasmtime"]),
             f"{rps['skiff'] / rps['wasmtime']:.2f}×", "≥ 2×", verdict(rps["skiff"] >= 2 * rps["wasmtime"])),
            ("2", "hello, p50 latency at 1 connection", fmt_us(p50["skiff"]), "native hyper", fmt_us(p50["native"]),
             f"{p50['skiff'] / p50['native']:.2f}×", "≤ 2×", verdict(p50["skiff"] <= 2 * p50["native"])),
            ("2", "hello, p50 latency at 1 connection", fmt_us(p50["skiff"]), "wasmtime serve", fmt_us(p50["wasmtime"]),
             f"{p50['skiff'] / p50['wasmtime']:.2f}×", "", ""),
            ("2", "hello, p50 latency at 1 connection, wrk on the server's CPU", fmt_us(same["skiff"]), "native hyper",
             fmt_us(same["native"]), f"{same['skiff'] / same['native']:.2f}×", "", ""),
            ("2", "hello, p50 latency at 1 connection, wrk on the server's CPU", fmt_us(same["skiff"]), "wasmtime serve",
             fmt_us(same["wasmtime"]), f"{same['skiff'] / same['wasmtime']:.2f}×", "", ""),
            ("2", "hello, p99 latency at 1 connection", fmt_us(p99["skiff"]), "native hyper", fmt_us(p99["native"]),
             f"{p99['skiff'] / p99['native']:.2f}×", "", ""),
            ("2", "hello, p99 latency at 1 connection", fmt_us(p99["skiff"]), "wasmtime serve", fmt_us(p99["wasmtime"]),
             f"{p99['skiff'] / p99['wasmtime']:.2f}×", "", ""),
        ]
        if "skiff_reuse" in h:  # absent from runs before instance reuse existed
            label = "hello, instance reuse (opt-in),"
            rows += [
                ("2", f"{label} req/s at 32 connections", fmt_rps(rps["skiff_reuse"]), "native hyper",
                 fmt_rps(rps["native"]), f"{rps['skiff_reuse'] / rps['native']:.2f}×", "≥ 0.60×",
                 verdict(rps["skiff_reuse"] >= 0.6 * rps["native"])),
                ("2", f"{label} req/s at 32 connections", fmt_rps(rps["skiff_reuse"]), "wasmtime serve",
                 fmt_rps(rps["wasmtime"]), f"{rps['skiff_reuse'] / rps['wasmtime']:.2f}×", "≥ 2×",
                 verdict(rps["skiff_reuse"] >= 2 * rps["wasmtime"])),
                ("2", f"{label} p50 latency at 1 connection", fmt_us(p50["skiff_reuse"]), "native hyper",
                 fmt_us(p50["native"]), f"{p50['skiff_reuse'] / p50['native']:.2f}×", "≤ 2×",
                 verdict(p50["skiff_reuse"] <= 2 * p50["native"])),
                ("2", f"{label} p50 latency at 1 connection, wrk on the server's CPU", fmt_us(same["skiff_reuse"]),
                 "native hyper", fmt_us(same["native"]), f"{same['skiff_reuse'] / same['native']:.2f}×", "", ""),
            ]
    c = r.get("cold")
    if c:
        m = {k: med(v) for k, v in c.items() if isinstance(v, list)}
        if "crun" in m:
            rows.append(("3", "exec to first 200, warm code cache", fmt_ms(m["skiff_warm"]), "crun container",
                         fmt_ms(m["crun"]), f"{m['skiff_warm'] / m['crun']:.2f}×", "≤ 5 ms and ≤ 0.2×",
                         verdict(m["skiff_warm"] <= 5 and m["skiff_warm"] <= 0.2 * m["crun"])))
        else:
            rows.append(("3", "exec to first 200, warm code cache", fmt_ms(m["skiff_warm"]), "crun container",
                         f"n/a: {c.get('crun_error', '')}"[:60], "", "≤ 5 ms and ≤ 0.2×", verdict(m["skiff_warm"] <= 5) + " (5 ms only)"))
        rows += [
            ("3", "exec to first 200, warm code cache", fmt_ms(m["skiff_warm"]), "wasmtime serve, warm cache",
             fmt_ms(m["wasmtime_warm"]), f"{m['skiff_warm'] / m['wasmtime_warm']:.2f}×", "", ""),
            ("3", "exec to first 200, empty code cache", fmt_ms(m["skiff_empty"]), "wasmtime serve, empty cache",
             fmt_ms(m["wasmtime_empty"]), f"{m['skiff_empty'] / m['wasmtime_empty']:.2f}×", "", ""),
            ("3", "exec to first 200, warm code cache", fmt_ms(m["skiff_warm"]), "static native server, fork/exec",
             fmt_ms(m["native_exec"]), f"{m['skiff_warm'] / m['native_exec']:.2f}×", "", ""),
        ]
    cpu = r.get("cpu")
    if cpu:
        p50 = {k: med([x["p50"] for x in cpu[k]]) for k in ("skiff", "native", "wasmtime")}
        rows += [
            ("4", "sha256 of 1 MiB, p50 latency at 1 connection", fmt_ms(p50["skiff"]), "native (same source)",
             fmt_ms(p50["native"]), f"{p50['skiff'] / p50['native']:.2f}×", "≤ 1.5×", verdict(p50["skiff"] <= 1.5 * p50["native"])),
            ("4", "sha256 of 1 MiB, p50 latency at 1 connection", fmt_ms(p50["skiff"]), "wasmtime serve",
             fmt_ms(p50["wasmtime"]), f"{p50['skiff'] / p50['wasmtime']:.2f}×", "", ""),
        ]
        if "skiff_pulley" in cpu:  # absent from runs before `--engine pulley`
            pulley = med([x["p50"] for x in cpu["skiff_pulley"]])
            rows.append(("4", "sha256 of 1 MiB, p50 at 1 connection, `--engine pulley` (interpreter)",
                         fmt_ms(pulley), "skiff, native code", fmt_ms(p50["skiff"]),
                         f"{pulley / p50['skiff']:.1f}×", "", ""))
    if h:
        load = {k: med([x["rss_load"] for x in h[k]["runs"]]) for k in h}
        rows += [
            ("5", "RSS idle, hello app (after one request)", fmt_mib(h["skiff"]["rss_idle"]), "native hyper",
             fmt_mib(h["native"]["rss_idle"]), f"{h['skiff']['rss_idle'] / h['native']['rss_idle']:.1f}×", "", ""),
            ("5", "RSS idle, hello app (after one request)", fmt_mib(h["skiff"]["rss_idle"]), "wasmtime serve",
             fmt_mib(h["wasmtime"]["rss_idle"]), f"{h['skiff']['rss_idle'] / h['wasmtime']['rss_idle']:.1f}×", "", ""),
            ("5", "RSS under 32-connection load (max sampled)", fmt_mib(load["skiff"]), "native hyper",
             fmt_mib(load["native"]), f"{load['skiff'] / load['native']:.1f}×", "", ""),
            ("5", "RSS under 32-connection load (max sampled)", fmt_mib(load["skiff"]), "wasmtime serve",
             fmt_mib(load["wasmtime"]), f"{load['skiff'] / load['wasmtime']:.1f}×", "", ""),
        ]
    f = r.get("in_flight")
    if f:
        rows += [
            ("5", f"RSS per in-flight instance ({f['in_flight']} of {f['requests']} in flight)",
             f"{f['per_instance_kib']:,.0f} KiB", "", "", "", "", ""),
            ("5", "… of which host-side (outside guest linear memory)", f"{f['per_instance_host_kib']:,.0f} KiB",
             "", "", "", "", ""),
            ("5", f"peak RSS (VmHWM) over the burst, per request", f"{f['hwm_per_request_kib']:,.0f} KiB",
             "", "", "", "", ""),
        ]
    header = "| # | measure | skiff | baseline | baseline figure | skiff ÷ baseline | target | holds |"
    w = r.get("http_wasi_0_3")
    if w:
        rps = {k: med([x["rps32"] for x in w[k]["runs"]]) for k in w}
        p50 = {k: med([x["p50"] for x in w[k]["runs"]]) for k in w}
        labels = {"skiff": "a fresh instance per request", "skiff_reuse": "requests_per_instance = 1000"}
        for name, how in labels.items():
            for base, base_label in (("wasmtime", "wasmtime serve (reuse 128, 16 at once)"),
                                     ("wasmtime_fresh", "wasmtime serve, a fresh instance per request")):
                rows += [
                    ("6", f"WASI 0.3 hello, {how}, req/s at 32 connections", fmt_rps(rps[name]), base_label,
                     fmt_rps(rps[base]), f"{rps[name] / rps[base]:.2f}×", "", ""),
                    ("6", f"WASI 0.3 hello, {how}, p50 latency at 1 connection", fmt_us(p50[name]), base_label,
                     fmt_us(p50[base]), f"{p50[name] / p50[base]:.2f}×", "", ""),
                ]
        if h:
            rows += [
                ("6", "WASI 0.3 hello, fresh instances, req/s at 32 connections", fmt_rps(rps["skiff"]),
                 "skiff, WASIp2 hello (figure 2)", fmt_rps(med([x["rps32"] for x in h["skiff"]["runs"]])),
                 f"{rps['skiff'] / med([x['rps32'] for x in h['skiff']['runs']]):.2f}×", "", ""),
                ("6", "WASI 0.3 hello, fresh instances, p50 latency at 1 connection", fmt_us(p50["skiff"]),
                 "skiff, WASIp2 hello (figure 2)", fmt_us(med([x["p50"] for x in h["skiff"]["runs"]])),
                 f"{p50['skiff'] / med([x['p50'] for x in h['skiff']['runs']]):.2f}×", "", ""),
            ]
    lines = [header, "|---|---|---:|---|---:|---:|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def http_runs_table(title, figures, labels):
    """Each repetition of each server of an HTTP figure, as markdown lines."""
    reps = len(figures["skiff"]["runs"])
    out = [f"{title}, each repetition (req/s at 32 connections; p50 / p99 at 1 connection; p50 at 1 "
           "connection with wrk on the server's CPU; max RSS under load):\n",
           "| server | " + " | ".join(f"rep {i + 1}" for i in range(reps)) + " |",
           "|---|" + "---|" * reps]
    for name, label in labels:
        cells = [f"{x['rps32']:,.0f}; {x['p50'] * 1000:.0f} / {x['p99'] * 1000:.0f} µs; "
                 f"{x['p50_same_cpu'] * 1000:.0f} µs; {x['rss_load'] / 1024:.1f} MiB" for x in figures[name]["runs"]]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def build_details(r):
    out = []
    h = r.get("http")
    if h:
        # skiff_reuse: absent from runs before instance reuse existed
        labels = [(name, {"skiff_reuse": "skiff, instance reuse (opt-in)"}.get(name, name))
                  for name in ("native", "skiff", "skiff_reuse", "wasmtime") if name in h]
        out += http_runs_table("HTTP", h, labels)
    w = r.get("http_wasi_0_3")
    if w:
        out += http_runs_table("WASI 0.3 hello over HTTP", w, [
            ("skiff", "skiff, fresh instances"), ("skiff_reuse", "skiff, requests_per_instance"),
            ("wasmtime", "wasmtime serve, its defaults"), ("wasmtime_fresh", "wasmtime serve, fresh instances")])
    cpu = r.get("cpu")
    if cpu:
        out.append("sha256 of 1 MiB, each repetition (p50 / p99 at 1 connection, req/s):\n")
        out.append("| server | " + " | ".join(f"rep {i + 1}" for i in range(len(cpu["skiff"]))) + " |")
        out.append("|---|" + "---|" * len(cpu["skiff"]))
        names = [n for n in ("native", "skiff", "skiff_pulley", "wasmtime") if n in cpu]
        for name in names:
            cells = [f"{x['p50']:.2f} / {x['p99']:.2f} ms, {x['rps1']:.0f}/s" for x in cpu[name]]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append(f"\nAll {len(names)} answered the same digest, `{cpu['digest']}`.\n")
    c = r.get("cold")
    if c:
        out.append("Cold start, exec to first 200 (ms): median, min, max of each:\n")
        out.append("| start of | median | min | max | runs |")
        out.append("|---|---:|---:|---:|---:|")
        names = {"skiff_warm": "`skiff up`, warm code cache", "skiff_empty": "`skiff up`, empty code cache",
                 "wasmtime_warm": "`wasmtime serve`, warm cache", "wasmtime_empty": "`wasmtime serve`, empty cache",
                 "native_exec": "static native server (fork/exec)", "crun": "same server, `crun run` container"}
        for key, label in names.items():
            if isinstance(c.get(key), list):
                v = c[key]
                out.append(f"| {label} | {med(v):.2f} | {min(v):.2f} | {max(v):.2f} | {len(v)} |")
        if "crun_error" in c:
            out.append(f"\ncrun was not measured: {c['crun_error']}")
        out.append("")
    f = r.get("in_flight")
    if f:
        out.append(
            f"In-flight memory: {f['requests']} connections opened first (host RSS {f['base_rss'] / 1024:.1f} → "
            f"{f['conn_rss'] / 1024:.1f} MiB, {f['per_connection_kib']:.1f} KiB per idle connection), then one "
            f"`GET /sleep?ms={f['sleep_ms']}` on each at once; snapshot of RSS and smaps "
            f"{f['snapshot_after_ms']:.0f} ms after the last request was written, when {f['in_flight']} guests "
            f"were asleep: RSS {f['snap_rss'] / 1024:.1f} MiB. Per in-flight instance: "
            f"{f['per_instance_kib']:.0f} KiB, of which {f['per_instance_linear_kib']:.0f} KiB in the "
            f"linear-memory pool ({f['pool_gib']:,.0f} GiB reserved) and {f['per_instance_host_kib']:.0f} KiB "
            f"elsewhere (instance and table slots, stacks, store, hyper, tokio). Peak RSS (VmHWM) over the "
            f"whole burst: {f['hwm'] / 1024:.1f} MiB, {f['hwm_per_request_kib']:.0f} KiB per request above the "
            f"connected baseline. {f['ok']}/{f['requests']} answered 200; answers spread over "
            f"{f['answer_spread_ms']:.0f} ms.\n")
    return "\n".join(out)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = proc_meminfo_gib()
    os_name = platform.system()
    try:
        with open("/etc/os-release") as f:
            os_name = re.search(r'PRETTY_NAME="?([^"\n]*)', f.read()).group(1)
    except (OSError, AttributeError):
        pass
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs (`nproc` {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}), "
            f"{cpu}, {mem:.1f} GiB RAM, kernel {platform.release()}, {os_name}; skiff at `{rev or 'unknown'}`")


def proc_meminfo_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


def render_saved(args, report):
    """`--from-json PATH`: renders an earlier run's saved results (its arguments, results, start
    time and machine) again with `report`, keeping this call's --no-write and --note."""
    with open(args.from_json) as f:
        saved = json.load(f)
    no_write, note = args.no_write, args.note
    args = argparse.Namespace(**saved["args"])
    args.no_write, args.note = no_write, note or args.note
    return report(args, saved["results"], datetime.datetime.fromisoformat(saved["started"]),
                  saved["machine"], save=False)


def section_of(heading, started, machine_line, how, note, command, parts):
    """A section of docs/performance.md: when and where it was measured, how, the run's note,
    then `parts` (tables, details). Also prints when, where, the command and the parts."""
    body = "\n\n".join(parts)
    print()
    print(f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine_line}.")
    print(f"Command: {command}")
    print()
    print(body)
    return (f"{heading}\n\nMeasured {started:%Y-%m-%d %H:%M} UTC on {machine_line}.\n\n{how}\n"
            + (f"\n{note}\n" if note else "")
            + f"\n{body}\n")


def keep_results(name, heading, section, args, results, started, machine_line, save):
    """Saves a run's raw results as target/bench/NAME.json (what --from-json renders again),
    unless it was rendered from there, and writes its section of docs/performance.md unless
    --quick or --no-write."""
    if save:
        os.makedirs(os.path.join(target_dir(), "bench"), exist_ok=True)
        path = os.path.join(target_dir(), f"bench/{name}.json")
        with open(path, "w") as fh:
            json.dump({"started": started.isoformat(), "machine": machine_line, "args": vars(args),
                       "results": results}, fh, indent=1)
        log(f"raw results in {path}")
    if not args.no_write and not args.quick:
        write_section(heading, section)


def write_section(heading, section):
    """Replaces the section of docs/performance.md under `heading` (up to the next `## `
    heading) with `section`, or appends it: the separate benchmarks (density, distribution)
    each own one section."""
    path = os.path.join(ROOT, "docs/performance.md")
    with open(path) as f:
        text = f.read()
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        m = re.compile(r"^## ", re.M).search(text, start + len(heading))
        end = m.start() if m else len(text)
        text = text[:start] + section + ("\n" + text[end:] if m else "")
    with open(path, "w") as f:
        f.write(text)
    log(f"wrote the section `{heading}` of {path}")


def write_doc(section):
    path = os.path.join(ROOT, "docs/performance.md")
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + section.strip() + "\n" + END + tail)
    log(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short repetition of everything (a smoke test); writes no docs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--sleep-ms", type=int, default=1000,
                        help="how long each guest sleeps; long enough that all are asleep at once")
    parser.add_argument("--only", default="1,2,3,5,6", help="figures to run (4 runs with 2), e.g. 2,3")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--note", default="", help="a line to add under the table, e.g. about load")
    parser.add_argument("--from-json", metavar="PATH",
                        help="measure nothing: render the table of an earlier run's results.json")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        note, no_write = args.note, args.no_write
        args = argparse.Namespace(**saved["args"])
        args.note, args.no_write = note or args.note, no_write
        started = datetime.datetime.fromisoformat(saved["started"])
        return report(args, saved["results"], started, saved["machine"], save=False)
    if args.quick:
        # A smoke test: its figures are not worth quoting, so docs/performance.md is left alone.
        args.reps, args.duration, args.cold_runs, args.no_write = 1, 2, 3, True
    only = set(args.only.split(","))

    tools = {
        "skiff": os.environ.get("SKIFF", os.path.join(ROOT, "target/release/skiff")),
        "wasmtime": os.environ.get("WASMTIME", os.path.join(ROOT, "bench/.tools/bin/wasmtime")),
        "native": os.environ.get("NATIVE_HELLO", os.path.join(ROOT, "target/bench/release/native-hello")),
        "sha256_wasm": os.environ.get("SHA256_WASM", os.path.join(ROOT, "target/bench/wasm32-wasip2/release/sha256_guest.wasm")),
        "http_guest_wasm": os.environ.get("HTTP_GUEST_WASM", os.path.join(ROOT, "target/guests/wasm32-wasip2/release/http_guest.wasm")),
        "http_p3_guest_wasm": os.environ.get("HTTP_P3_GUEST_WASM", os.path.join(ROOT, "target/guests/wasm32-wasip2/release/http_p3_guest.wasm")),
        "hello_server": os.environ.get("HELLO_SERVER", os.path.join(ROOT, "target/bench/hello-server")),
    }
    for name, path in tools.items():
        if not os.path.exists(path):
            fail(f"{name} is missing at {path}: run bench/run.sh, which builds everything")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: run bench/run.sh, which installs it")
    if (os.cpu_count() or 1) < 2:
        fail("the suite pins the servers to CPU 0 and the load generator to CPU 1: it needs 2 CPUs")

    # Servers and benches run as a user would start them: a backtrace captured for every
    # error value (RUST_BACKTRACE=1 is common in development shells) is not what users run.
    for var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        os.environ.pop(var, None)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    workdir = tempfile.mkdtemp(prefix="skiff-bench-")
    try:
        if "1" in only:
            results["sandbox"] = figure_sandbox(args)
        if "2" in only or "4" in only:
            results["http"], results["cpu"] = figure_http(args, tools, workdir)
        if "3" in only:
            results["cold"] = figure_cold_start(args, tools, workdir)
        if "5" in only:
            results["in_flight"] = figure_in_flight(args, tools, workdir)
        if "6" in only:
            results["http_wasi_0_3"] = figure_http_wasi_0_3(args, tools, workdir)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    return report(args, results, started, machine(), save=True)


def report(args, results, started, machine_line, save):
    table = build_table(results)
    details = build_details(results)
    how = (f"{'Quick smoke run (1 short repetition): not figures to quote. ' if args.quick else ''}"
           f"Medians over {args.reps} repetitions of {args.duration} s per load run (wrk, keep-alive, 1 thread); "
           f"cold starts: medians of {args.cold_runs} isolated starts (100 ms apart); sandbox: criterion's median. "
           f"Servers under load pinned to CPU {SERVER_CPU} and wrk to CPU {LOADGEN_CPU} with `taskset` "
           f"(on its one CPU, skiff serves from a single-threaded runtime, as it does on any one-CPU host); "
           f"the criterion bench pinned to CPU {SERVER_CPU}; cold starts unpinned.")
    section = (f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine_line}.\n\n{how}\n"
               + (f"\n{args.note}\n" if args.note else "")
               + f"\n{table}\n\n{details}")
    print()
    print(table)
    print()
    print(details)
    if save:
        os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target/bench/results.json"), "w") as f:
            json.dump({"started": started.isoformat(), "machine": machine_line, "args": vars(args),
                       "results": results}, f, indent=1, default=str)
    if not args.no_write:
        write_doc(section)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"bench: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
