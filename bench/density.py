#!/usr/bin/env python3
"""Density of `skiff server`: 1,000 distinct apps deployed to one host.

    python3 bench/density.py [--quick] [--apps N] [--reps N] [--duration S] [--no-write]
    bench/run.sh --density [--quick] [...]          # the same, after installing and building

Run it after `cargo build --release -p skiff` (or through bench/run.sh). Python 3 standard
library only, plus `wrk` and `taskset` (bench/run.sh installs them).

What it does, on one server process pinned to CPU 0 (the client and wrk on CPU 1):
  1. deploys N apps (`app-0000`...) over the management API, 4 uploads at a time: each bundle
     is built in memory with its own skiff.toml (name, description, an APP variable) and the
     same examples/hello/hello.wasm, so the code is compiled once and every other app loads it
     from the code cache; reports the deploy rate;
  2. RSS of the empty host, right after all deploys (all loaded), and once all are idle
     (dropped from memory by --idle-unload);
  3. the first request to an idle app (code mapped from the cache) against a request to the
     same app right after (warm), for a random sample of apps;
  4. throughput (wrk, 32 connections) with requests spread round-robin over all N host names
     against the same wrk run on one app, interleaved, with the peak RSS under load.

It prints a markdown table and, unless --quick or --no-write, rewrites the section
`## Density: 1,000 apps on one host` of docs/performance.md (appended if missing). Raw results
go to target/bench/density.json; `--from-json PATH` renders (and writes) them again.
"""
import argparse
import datetime
import gzip
import http.client
import io
import json
import os
import random
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
from bench import (LOADGEN_CPU, ROOT, SERVER_CPU, RssSampler, fail, free_port, log,  # noqa: E402
                   pinned, proc_status_kib, spawn, stop, stop_all)

HEADING = "## Density: 1,000 apps on one host"
DEPLOY_THREADS = 4
HELLO_WASM = os.path.join(ROOT, "examples/hello/hello.wasm")


# ------------------------------------------------------------------------------------------
# the server


class SkiffServer:
    """`skiff server` pinned to CPU 0 in a fresh data folder; ready once both ports listen."""

    def __init__(self, skiff, workdir, idle_unload, max_instances):
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.port, self.api_port = free_port(), free_port()
        self.admin_token = secrets.token_hex(16)
        self.log_path = os.path.join(workdir, "server.log")
        env = dict(os.environ, SKIFF_ADMIN_TOKEN=self.admin_token, RUST_LOG="warn")
        for var in ("SKIFF_CACHE_DIR", "SKIFF_DATA_DIR", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
            env.pop(var, None)
        self.argv = [skiff, "--log-level", "warn", "--max-instances", str(max_instances), "server",
                     "--listen", f"127.0.0.1:{self.port}", "--api-listen", f"127.0.0.1:{self.api_port}",
                     "--data", self.data, "--idle-unload", idle_unload]
        self.proc = spawn(pinned(self.argv, SERVER_CPU), self.log_path, env=env, cwd=workdir)
        deadline = time.monotonic() + 60
        while True:
            self.check_alive("before listening")
            text = self.log_text()
            if "Serving http://" in text and "Management API http://" in text:
                break
            if time.monotonic() > deadline:
                self.die("did not print `Serving` and `Management API` within 60 s")
            time.sleep(0.02)
        status, body = self.api("GET", "/v1/health", token=None)
        if status != 200:
            self.die(f"GET /v1/health answered {status}: {body[:300]!r}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self, field="VmRSS"):
        self.check_alive("while reading its RSS")
        return proc_status_kib(self.pid, field)

    def memory(self):
        """VmRSS and its split, PSS (shared pages divided among their users) and how many
        mappings of compiled code (`.cwasm` files) the process holds."""
        self.check_alive("while reading its memory")
        snap = {f: proc_status_kib(self.pid, f) for f in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}
        try:
            with open(f"/proc/{self.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        snap["Pss"] = int(line.split()[1])
        except OSError:
            snap["Pss"] = 0
        with open(f"/proc/{self.pid}/maps") as f:
            snap["cwasm_maps"] = sum(1 for line in f if ".cwasm" in line)
        return snap

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars=4000):
        return self.log_text()[-chars:] or "(empty log)"

    def check_alive(self, when):
        if self.proc.poll() is not None:
            self.die(f"exited with status {self.proc.returncode} {when}")

    def die(self, message):
        fail(f"skiff server {message}.\ncommand: {' '.join(self.argv)}\nlast lines of its log "
             f"({self.log_path}):\n{self.log_tail()}")

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=60)

    def api(self, method, path, body=None, token="", conn=None, content_type="application/json"):
        """One management call; returns (status, raw body). Reuses `conn` if given."""
        own = conn is None
        conn = conn or self.connection()
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data
        except (OSError, http.client.HTTPException) as e:
            self.check_alive(f"during {method} {path}")
            raise RuntimeError(f"{method} {path}: {e!r}") from e
        finally:
            if own:
                conn.close()

    def stop(self):
        stop(self.proc)


# ------------------------------------------------------------------------------------------
# bundles and deploys


def app_name(i):
    return f"app-{i:04d}"


def manifest(name, i, n):
    return (f'[app]\nname = "{name}"\nversion = "0.1.0"\n'
            f'description = "density benchmark app {i + 1} of {n}"\n\n'
            f'[component.hello]\nsource = "hello.wasm"\nroute = "/..."\n'
            f'environment = {{ APP = "{name}" }}\n')


def bundle(name, i, n, wasm):
    """A tar.gz in memory: skiff.toml (its own per app) and hello.wasm at the root."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for member, data in (("skiff.toml", manifest(name, i, n).encode()), ("hello.wasm", wasm)):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def deploy_all(server, token, n, wasm):
    """PUTs every app from DEPLOY_THREADS threads, each on one keep-alive connection."""
    bundles = [bundle(app_name(i), i, n, wasm) for i in range(n)]
    # The first deploy alone: it is the one that compiles.
    started = time.monotonic()
    status, body = server.api("PUT", f"/v1/apps/{app_name(0)}", bundles[0], token, content_type="application/gzip")
    first_s = time.monotonic() - started
    if status != 201:
        server.die(f"refused the deploy of {app_name(0)}: {status} {body[:1000]!r}")
    next_index = [1]
    lock = threading.Lock()
    errors = []
    times = []

    def worker():
        conn = server.connection()
        try:
            while not errors:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= n:
                    return
                t0 = time.monotonic()
                try:
                    status, body = server.api("PUT", f"/v1/apps/{app_name(i)}", bundles[i], token, conn=conn,
                                              content_type="application/gzip")
                except (RuntimeError, SystemExit) as e:
                    errors.append(f"{app_name(i)}: {e}")
                    return
                elapsed = time.monotonic() - t0
                if status != 201:
                    errors.append(f"{app_name(i)}: {status} {body[:1000]!r}")
                    return
                with lock:
                    times.append(elapsed)
        finally:
            conn.close()

    rest_started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(DEPLOY_THREADS)]
    for t in threads:
        t.start()
    last_report = time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if time.monotonic() - last_report > 5:
            log(f"   {len(times) + 1}/{n} deployed")
            last_report = time.monotonic()
    for t in threads:
        t.join()
    if errors:
        server.die("refused a deploy:\n" + "\n".join(errors[:5]))
    rest_s = time.monotonic() - rest_started
    return {"first_s": first_s, "rest_s": rest_s, "total_s": time.monotonic() - started,
            "rest_rate": (n - 1) / rest_s if n > 1 else 0.0,
            "deploy_p50_ms": statistics.median(times) * 1000 if times else first_s * 1000,
            "deploy_p90_ms": percentile(times, 90) * 1000 if times else first_s * 1000,
            "bundle_bytes": len(bundles[-1])}


def statuses(server, token):
    status, body = server.api("GET", "/v1/apps", token=token)
    if status != 200:
        server.die(f"GET /v1/apps answered {status}: {body[:500]!r}")
    return {app["name"]: app["status"] for app in json.loads(body)["apps"]}


def wait_all_idle(server, token, n, timeout):
    started = time.monotonic()
    while True:
        s = statuses(server, token)
        live = sum(1 for v in s.values() if v != "idle")
        if len(s) == n and live == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            server.die(f"still has {live} of {len(s)} apps live {timeout:.0f} s after the last request "
                       f"(--idle-unload should have dropped them)")
        time.sleep(0.25)


def count_files(folder, suffix):
    return sum(1 for _, _, files in os.walk(folder) for f in files if f.endswith(suffix))


# ------------------------------------------------------------------------------------------
# requests


def percentile(values, pct):
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed_get(port, host):
    """One GET on a fresh connection; times from the send to the last byte of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        t0 = time.perf_counter()
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.perf_counter() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return elapsed, status, body


def first_requests(server, token, n, sample_size, seed):
    """For a random sample of idle apps: the first request (cold), then at once a second (warm)."""
    sample = random.Random(seed).sample(range(n), min(sample_size, n))
    before = statuses(server, token)
    not_idle = [app_name(i) for i in sample if before.get(app_name(i)) != "idle"]
    if not_idle:
        fail(f"apps expected idle are live: {not_idle[:5]}")
    cold, warm = [], []
    for i in sample:
        host = f"{app_name(i)}.localhost:{server.port}"
        for into in (cold, warm):
            elapsed, status, body = timed_get(server.port, host)
            if status != 200 or b"ello" not in body:
                server.die(f"answered {status} {body[:200]!r} to GET / on {host}")
            into.append(elapsed * 1000)
    after = statuses(server, token)
    loaded = sum(1 for i in sample if after.get(app_name(i)) == "live")
    return {"cold_ms": cold, "warm_ms": warm, "sample": len(sample), "live_after": loaded}


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def write_lua(workdir, hosts, name):
    path = os.path.join(workdir, f"{name}.lua")
    with open(path, "w") as f:
        f.write("-- generated by bench/density.py: round-robin over these Host names\n")
        f.write("local hosts = {\n" + "".join(f'  "{h}",\n' for h in hosts) + "}\n")
        f.write("local n = #hosts\nlocal i = 0\n"
                "request = function()\n"
                "  i = (i % n) + 1\n"
                '  return wrk.format("GET", "/", {["Host"] = hosts[i]})\n'
                "end\n")
    return path


def wrk(server, script, seconds, connections=32):
    return bench.wrk(server.port, "/", connections, seconds, latency=True, script=script,
                     after=lambda argv: server.check_alive(f"during `{' '.join(argv)}`"))


def throughput(server, token, n, args, workdir):
    hosts = [f"{app_name(i)}.localhost:{server.port}" for i in range(n)]
    spread = write_lua(workdir, hosts, "spread")
    single = write_lua(workdir, hosts[:1], "single")
    warmup = 2 if args.quick else 3
    log(f"   warm-up: {warmup} s spread over {n} apps, {warmup} s on one")
    wrk(server, spread, warmup)
    wrk(server, single, warmup)
    runs = []
    for rep in range(args.reps):
        # The single-app run of the previous repetition left the other apps idle long enough
        # to be unloaded: load them again first, so that the spread run measures serving, not
        # loading.
        wrk(server, spread, 2)
        with RssSampler(server.pid) as sampler:
            s = wrk(server, spread, args.duration)
        live = sum(1 for v in statuses(server, token).values() if v == "live")
        results_mem = server.memory()  # all loaded, right after serving them all
        with RssSampler(server.pid) as sampler1:
            o = wrk(server, single, args.duration)
        run = {"spread_rps": s["rps"], "single_rps": o["rps"], "spread_p99_ms": s.get("p99_ms"),
               "single_p99_ms": o.get("p99_ms"), "spread_p50_ms": s.get("p50_ms"),
               "single_p50_ms": o.get("p50_ms"), "rss_spread_kib": sampler.max_kib,
               "rss_single_kib": sampler1.max_kib, "live_after_spread": live,
               "errors": s["socket_errors"] + o["socket_errors"], "mem_after_spread": results_mem}
        runs.append(run)
        log(f"   rep {rep + 1}: spread {run['spread_rps']:8.0f} req/s (p99 {run['spread_p99_ms']:.2f} ms, "
            f"{live}/{n} live after), one app {run['single_rps']:8.0f} req/s (p99 {run['single_p99_ms']:.2f} ms); "
            f"peak RSS {run['rss_spread_kib'] / 1024:.1f} / {run['rss_single_kib'] / 1024:.1f} MiB")
    return runs


# ------------------------------------------------------------------------------------------
# the run


def measure(args, skiff, workdir):
    n = args.apps
    with open(HELLO_WASM, "rb") as f:
        wasm = f.read()
    results = {"apps": n, "wasm_bytes": len(wasm), "loadavg_start": os.getloadavg()}
    server = SkiffServer(skiff, workdir, f"{args.idle_unload}s", args.max_instances)
    try:
        log(f"== skiff server up (pid {server.pid}, data {server.data})")
        time.sleep(0.5)
        results["mem_empty"] = server.memory()
        results["rss_empty_kib"] = results["mem_empty"]["VmRSS"]
        quotas = {"max_apps": n + 10, "max_code_bytes": (n + 10) * len(wasm) * 2,
                  "max_in_flight": 10000}
        status, body = server.api("POST", "/v1/tenants", json.dumps({"name": "bench", "quotas": quotas}).encode(),
                                  server.admin_token)
        if status != 201:
            server.die(f"refused to create the tenant: {status} {body[:1000]!r}")
        token = json.loads(body)["token"]

        log(f"== deploying {n} apps, {DEPLOY_THREADS} at a time")
        results["deploy"] = d = deploy_all(server, token, n, wasm)
        results["mem_deployed"] = server.memory()
        results["rss_deployed_kib"] = results["mem_deployed"]["VmRSS"]
        results["cwasm_files"] = count_files(server.data, ".cwasm")
        log(f"   {n} apps in {d['total_s']:.1f} s: first {d['first_s'] * 1000:.0f} ms (compiles), then "
            f"{d['rest_rate']:.0f} apps/s; {results['cwasm_files']} compiled file(s) in the cache; RSS "
            f"{results['rss_deployed_kib'] / 1024:.1f} MiB")
        s = statuses(server, token)
        results["live_after_deploy"] = sum(1 for v in s.values() if v == "live")

        log(f"== waiting for all {n} apps to go idle (--idle-unload {args.idle_unload}s)")
        results["idle_wait_s"] = wait_all_idle(server, token, n, timeout=args.idle_unload * 3 + 60)
        time.sleep(0.5)
        results["mem_idle"] = server.memory()
        results["rss_idle_kib"] = results["mem_idle"]["VmRSS"]
        log(f"   all idle after {results['idle_wait_s']:.1f} s; RSS {results['rss_idle_kib'] / 1024:.1f} MiB "
            f"(empty host {results['rss_empty_kib'] / 1024:.1f} MiB)")

        log(f"== first request of {args.cold_sample} idle apps (cold), then again (warm)")
        results["first"] = f = first_requests(server, token, n, args.cold_sample, args.seed)
        log(f"   cold p50 {statistics.median(f['cold_ms']):.2f} ms, warm p50 {statistics.median(f['warm_ms']):.2f} ms")

        log(f"== throughput: wrk -t1 -c32 -d{args.duration}s spread over {n} apps vs one app, x{args.reps}")
        results["throughput"] = throughput(server, token, n, args, workdir)
        results["rss_hwm_kib"] = server.rss_kib("VmHWM")
        results["mem_loaded_end"] = results["throughput"][-1]["mem_after_spread"]
        # Unloading again after all the load runs: RSS that does not come back down to the first
        # idle figure is memory kept by the allocator, or leaked.
        log(f"== waiting for all {n} apps to go idle again")
        wait_all_idle(server, token, n, timeout=args.idle_unload * 3 + 60)
        time.sleep(0.5)
        results["mem_idle_end"] = server.memory()
        log(f"   RSS idle again {results['mem_idle_end']['VmRSS'] / 1024:.1f} MiB")
        server.check_alive("at the end of the run")
        results["loadavg_end"] = os.getloadavg()
        results["log_warnings"] = [line for line in server.log_text().splitlines()
                                   if re.search(r"\b(WARN|ERROR)\b", line)][-20:]
    finally:
        server.stop()
        # Kept for a look after the run (the work folder is removed).
        try:
            os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
            shutil.copyfile(server.log_path, os.path.join(ROOT, "target/bench/density-server.log"))
        except OSError:
            pass
    return results


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def build_table(r, args):
    n, d, f, t = r["apps"], r["deploy"], r["first"], r["throughput"]
    per_idle = (r["rss_idle_kib"] - r["rss_empty_kib"]) / n
    per_live = (r["rss_deployed_kib"] - r["rss_empty_kib"]) / n
    cold50, cold90 = statistics.median(f["cold_ms"]), percentile(f["cold_ms"], 90)
    warm50, warm90 = statistics.median(f["warm_ms"]), percentile(f["warm_ms"], 90)
    spread = statistics.median(x["spread_rps"] for x in t)
    single = statistics.median(x["single_rps"] for x in t)
    spread99 = statistics.median(x["spread_p99_ms"] for x in t)
    single99 = statistics.median(x["single_p99_ms"] for x in t)
    rss_load = max(x["rss_spread_kib"] for x in t)
    rows = [
        (f"deploy {n:,} apps, {DEPLOY_THREADS} uploads at a time", f"{d['total_s']:.1f} s", "", ""),
        ("deploy rate (after the first, which compiles)", f"{d['rest_rate']:.0f} apps/s",
         f"first deploy {d['first_s'] * 1000:.0f} ms", f"{d['first_s'] * d['rest_rate']:.1f}x one later deploy"),
        ("RSS, empty host", mib(r["rss_empty_kib"]), "", ""),
        (f"RSS, all {n:,} deployed and loaded", mib(r["rss_deployed_kib"]), "empty host",
         f"+{per_live:.0f} KiB per app"),
        (f"RSS, all {n:,} deployed and idle", mib(r["rss_idle_kib"]), "empty host",
         f"+{per_idle:.1f} KiB per app"),
        (f"RSS, peak under spread load (all {n:,} loaded)", mib(rss_load), "empty host",
         f"+{(rss_load - r['rss_empty_kib']) / n:.0f} KiB per app"),
        ("first request, idle app (cold: mapped from cache), p50", f"{cold50:.2f} ms",
         f"warm {warm50:.2f} ms", f"{cold50 / warm50:.1f}x"),
        ("first request, idle app (cold), p90", f"{cold90:.2f} ms", f"warm {warm90:.2f} ms", f"{cold90 / warm90:.1f}x"),
        (f"throughput, 32 conns spread over {n:,} apps", f"{spread:,.0f} req/s", f"one app {single:,.0f} req/s",
         f"{spread / single:.2f}"),
        (f"p99 latency, spread over {n:,} apps", f"{spread99:.2f} ms", f"one app {single99:.2f} ms",
         f"{spread99 / single99:.2f}"),
    ]
    out = ["| figure | value | baseline | ratio |", "|---|---:|---:|---:|"]
    out += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    return "\n".join(out)


def build_details(r, args):
    n, d, f, t = r["apps"], r["deploy"], r["first"], r["throughput"]
    lines = [
        f"Every app has its own skiff.toml (name, description and an `APP` environment variable) and "
        f"the same `examples/hello/hello.wasm` ({r['wasm_bytes']:,} bytes; bundle {d['bundle_bytes']:,} bytes "
        f"gzipped): the first deploy compiles it, the other {n - 1:,} load it from the code cache "
        f"({r['cwasm_files']} compiled file(s) in the data folder after all deploys). "
        f"Deploy latency p50 {d['deploy_p50_ms']:.1f} ms, p90 {d['deploy_p90_ms']:.1f} ms "
        f"({DEPLOY_THREADS} concurrent uploads). {r['live_after_deploy']:,}/{n:,} apps live after the deploys.",
        "Memory of the server process (RSS = anonymous + file-backed + shared memory; PSS counts a page "
        "shared by k mappings as 1/k; `.cwasm` maps = mappings of compiled code):\n\n"
        "| state | RSS | anonymous | file-backed | shmem | PSS | `.cwasm` maps |\n|---|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(f"| {label} | {mib(m['VmRSS'])} | {mib(m['RssAnon'])} | {mib(m['RssFile'])} | "
                    f"{mib(m['RssShmem'])} | {mib(m.get('Pss', 0))} | {m['cwasm_maps']:,} |"
                    for label, m in (("empty host", r["mem_empty"]), ("all deployed (loaded)", r["mem_deployed"]),
                                     ("all idle", r["mem_idle"]), ("all loaded, right after the last spread run", r["mem_loaded_end"]),
                                     ("all idle again, at the end", r["mem_idle_end"])))
        + f"\n\nAll idle {r['idle_wait_s']:.1f} s after the last deploy (`--idle-unload {args.idle_unload}s`). "
        f"Peak RSS (VmHWM) over the whole run: {mib(r['rss_hwm_kib'])}.",
        f"First requests: {f['sample']} idle apps picked at random (seed {args.seed}), one after the other, "
        f"each on a fresh connection, timed from sending the request to the last byte of the answer; "
        f"the warm figure is the second request to the same app, sent right after the first. "
        f"Cold: p50 {statistics.median(f['cold_ms']):.2f}, p90 {percentile(f['cold_ms'], 90):.2f}, "
        f"max {max(f['cold_ms']):.2f} ms; warm: p50 {statistics.median(f['warm_ms']):.2f}, "
        f"p90 {percentile(f['warm_ms'], 90):.2f}, max {max(f['warm_ms']):.2f} ms.",
        "Throughput per repetition (spread / one app, req/s): "
        + "; ".join(f"{x['spread_rps']:,.0f} / {x['single_rps']:,.0f}" for x in t)
        + f". Apps live right after each spread run: "
        + ", ".join(f"{x['live_after_spread']:,}" for x in t)
        + f" of {n:,}. Socket errors: {sum(x['errors'] for x in t)}. Load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_start"]) + "; at the end: "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_end"]) + ".",
    ]
    return "\n\n".join(lines)


def machine():
    line = bench.machine()
    return line


def report(args, results, started, machine_line, save):
    table = build_table(results, args)
    details = build_details(results, args)
    command = "python3 bench/density.py" + (" --quick" if args.quick else "") + (
        f" --apps {args.apps}" if args.apps != (200 if args.quick else 1000) else "")
    how = (f"{'Quick smoke run: not figures to quote. ' if args.quick else ''}"
           f"`{command}` (or `bench/run.sh --density`): one `skiff server` "
           f"(`--idle-unload {args.idle_unload}s --max-instances {args.max_instances}`, log level warn) pinned to "
           f"CPU {SERVER_CPU}; the deploying and measuring client and wrk (`-t1 -c32 -d{args.duration}s`, keep-alive, "
           f"a Lua script that cycles through the Host names `app-NNNN.localhost`) pinned to CPU {LOADGEN_CPU}. "
           f"Throughput: medians of {args.reps} repetitions, the spread run (after 2 s of spread load, which "
           f"loads every app again) and the one-app run interleaved; 'ratio' is spread / one app.")
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command,
                               [table, details])
    if results.get("log_warnings"):
        print("\nWarnings and errors in the server's log (last 20):\n" + "\n".join(results["log_warnings"]))
    bench.keep_results("density", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 apps, 1 repetition, 3 s wrk runs; writes no docs")
    parser.add_argument("--apps", type=int, help="apps to deploy (default 1000; 200 with --quick)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--idle-unload", type=int, default=4, help="the server's --idle-unload, in seconds")
    parser.add_argument("--max-instances", type=int, default=1000)
    parser.add_argument("--cold-sample", type=int, default=100, help="idle apps whose first request is timed")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--note", default="", help="a line to add under the table")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier run's density.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.reps, args.duration, args.no_write = 1, 3, True
        args.apps = args.apps or 200
    args.apps = args.apps or 1000
    if args.apps < 1 or args.apps > 10000:
        fail("--apps takes 1 to 10000")

    skiff = os.environ.get("SKIFF", os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                 "release/skiff"))
    if not os.path.exists(skiff):
        fail(f"no skiff binary at {skiff}: run `cargo build --release -p skiff` (or bench/run.sh --density)")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: run bench/run.sh --density, which installs it")
    if (os.cpu_count() or 1) < 2:
        fail(f"the server runs on CPU {SERVER_CPU} and the client on CPU {LOADGEN_CPU}: this needs 2 CPUs")
    # wrk's 32 connections, the client's sockets and the server's files.
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 65536), hard), hard))
    except (ImportError, ValueError, OSError):
        pass
    machine_line = machine()  # before pinning this process: `nproc` would say 1
    # This process is the client (deploys, first requests): keep it off the server's CPU.
    try:
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    except (AttributeError, OSError):
        pass

    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="skiff-density-")
    try:
        results = measure(args, skiff, workdir)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"density: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
