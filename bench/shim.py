#!/usr/bin/env python3
"""Kubernetes node: the skiff containerd shim against runc and crun containers (issue 16).

    python3 bench/shim.py [--quick] [--runs N] [--pause-ms MS] [--no-write] [--note TEXT]
    bench/run.sh --shim [--quick] [...]      # the same, after installing and building

Run it as root, after `cargo build --release -p skiff -p containerd-shim-skiff` (or through
bench/run.sh, which also installs the packages and hides the cgroup2 mount from crun, see
below). Python 3 standard library only, plus Debian's `docker-registry`, `containerd` (with
`ctr`), `runc`, `crun` and `gcc` with the static libc.

One containerd (its own config, root, state and socket, no CRI, the overlayfs snapshotter;
its PATH starts with the folder of the release `containerd-shim-skiff-v1`, so
`--runtime io.containerd.skiff.v1` finds it) and one local `docker-registry` holding:
  - skiff: `examples/hello` pushed with `skiff push --image` (a `wasi/wasm` image whose one
    layer is the app folder), pulled with `ctr image pull --plain-http --platform wasi/wasm`;
  - container: the static native server `bench/container/hello-server.c` (`gcc -O2 -static`)
    in an image with no base (one layer: the binary), pushed with plain registry API calls
    (bench.py's image writer) and pulled with `ctr image pull --plain-http`.
Both are pulled and unpacked before any clock starts; the daemon is up.

It measures:
  1. `ctr run --rm --net-host` to the first 200 to `GET /`, polled every 0.2 ms: the skiff
     shim (`--runtime io.containerd.skiff.v1 --env SKIFF_PORT=P`), runc (containerd's default
     `io.containerd.runc.v2`) and crun (the same runtime with `--runc-binary crun`). Runs are
     interleaved and isolated: each container is killed and removed (`ctr run --rm` returns)
     and then nothing runs for --pause-ms before the next `ctr run`. For the shim it also reads
     where the time goes: the shim's log in containerd's log ("starting instance" when the
     shim daemon starts the container, "calling start function" in the container's process
     right before skiff's run_wasi) and skiff's own "serving http://..." line on the task's
     stderr, all wall-clock timestamps.
  2. memory of one running task after 200 requests: the sum over every process of the task,
     the shim daemon that containerd started for it and everything below it (runwasi's
     zygote and the container's process for skiff; runc's shim and the server for runc): RSS
     (VmRSS) and PSS (smaps_rollup, which splits pages shared between the processes).

`crun` refuses this machine's hybrid cgroup layout; bench/run.sh runs this script (and so
containerd and its shims) inside a private mount namespace that hides the cgroup2 mount (see
/work/shared notes and run.sh). If crun still cannot start a container, its row says why.
It prints two markdown tables and, unless --quick or --no-write, rewrites the section
`## Kubernetes node: containerd shim start and memory` of docs/performance.md (appended if
missing). Raw results go to target/bench/shim.json; `--from-json PATH` renders them again.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: process, machine, registry and containerd helpers)
from bench import (ROOT, SNAPSHOTTER, Containerd, Registry, fail, file_layer, free_port,  # noqa: E402
                   log, push_image, run, stop, stop_all, target_dir,
                   unmount_under, wait_first_200)

HEADING = "## Kubernetes node: containerd shim start and memory"
HELLO_APP = os.path.join(ROOT, "examples/hello")
SKIFF_RUNTIME = "io.containerd.skiff.v1"
RUNC_RUNTIME = "io.containerd.runc.v2"
KINDS = ("skiff", "runc", "crun")
NAMES = {"skiff": "skiff shim (`io.containerd.skiff.v1`)",
         "runc": "static server, runc (`io.containerd.runc.v2`)",
         "crun": "static server, crun (`io.containerd.runc.v2`, `--runc-binary crun`)"}
# A tracing timestamp (skiff's log lines) or a logrus-style `time="..."` (the shim's).
STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:\d\d)"


def wall(stamp):
    """Seconds since the epoch of an RFC 3339 timestamp, to the microsecond (or finer)."""
    m = re.fullmatch(STAMP, stamp)
    if not m:
        return None
    base, zone = m.group(1), m.group(2)
    whole, _, frac = base.partition(".")
    dt = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    offset = datetime.timedelta(0) if zone == "Z" else datetime.timedelta(
        hours=int(zone[1:3]), minutes=int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    dt = (dt - offset).replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def get(port, timeout=5.0):
    """The status of one `GET /`, reading only the response: the static server keeps the
    connection open (it ignores `Connection: close`), so reading to the end would wait."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed before the response's head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ", 2)[1])


def first_stamp(text, needle):
    """The wall-clock time of the first line of `text` holding `needle`."""
    for line in text.splitlines():
        if needle in line:
            m = re.search(STAMP, line)
            if m:
                return wall(m.group(0))
    return None


# ------------------------------------------------------------------------------------------
# one container


class Task:
    """`ctr run --rm --net-host` of one container in the foreground, its output in files."""

    def __init__(self, containerd, kind, ref, cid, port, crun, workdir):
        self.containerd, self.kind, self.cid, self.port = containerd, kind, cid, port
        argv = ["ctr", "--address", containerd.socket, "run", "--rm", "--net-host", "--snapshotter", SNAPSHOTTER]
        if kind == "skiff":
            argv += ["--runtime", SKIFF_RUNTIME, "--env", f"SKIFF_PORT={port}", ref, cid]
        else:
            argv += ["--runtime", RUNC_RUNTIME] + (["--runc-binary", crun] if kind == "crun" else [])
            argv += [ref, cid, "/hello-server", str(port)]
        self.out_path = os.path.join(workdir, f"{cid}.out")
        self.err_path = os.path.join(workdir, f"{cid}.err")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.log_offset = os.path.getsize(containerd.log_path)
            self.wall_start = time.time()
            self.start = time.perf_counter()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        bench.RUNNING.append(self.proc)

    def wait_first_200(self):
        """ms from spawning `ctr run` to the first 200."""
        try:
            return wait_first_200(self.port, self.proc, self.start, f"ctr run ({self.kind})")
        except SystemExit as err:
            raise SystemExit(f"{err}\nits stderr:\n{self.stderr()[-2000:]}\ncontainerd's log:\n"
                             f"{self.containerd_log()[-3000:]}") from None

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def containerd_log(self):
        """containerd's log (with the shims' lines) since this task was started."""
        with open(self.containerd.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            return f.read()

    def stop(self):
        """SIGKILL, then waits for `ctr run --rm` to delete the task and the container."""
        self.containerd.ctr(["task", "kill", "--signal", "SIGKILL", self.cid], check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc in bench.RUNNING:
            bench.RUNNING.remove(self.proc)
        if self.containerd.ctr(["container", "info", self.cid], check=False).returncode == 0:
            self.containerd.ctr(["task", "delete", "--force", self.cid], check=False)
            self.containerd.ctr(["container", "delete", self.cid], check=False)

    def shim_breakdown(self):
        """Wall-clock points of a skiff start, in ms after `ctr run` was spawned."""
        shim_log, err = self.containerd_log(), self.stderr()
        points = {"instance": first_stamp(shim_log, "starting instance"),
                  "start_function": first_stamp(shim_log, "calling start function"),
                  "serving": first_stamp(err, "serving http://")}
        return {k: (v - self.wall_start) * 1000 if v is not None else None for k, v in points.items()}


def start_once(containerd, kind, ref, cid, crun, workdir):
    """One isolated start: ctr run to the first 200, then kill and removal."""
    port = free_port()
    task = Task(containerd, kind, ref, cid, port, crun, workdir)
    try:
        result = {"total_ms": task.wait_first_200()}
        if kind == "skiff":
            result.update(task.shim_breakdown())
    finally:
        task.stop()
    result["log_errors"] = [line for line in task.containerd_log().splitlines() if "level=error" in line][:5]
    for path in (task.out_path, task.err_path):
        os.unlink(path)
    return result


# ------------------------------------------------------------------------------------------
# memory of one running task


def proc_children():
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def task_processes(cid):
    """Every process of the task `cid`: its shim daemon(s) (a containerd-shim-* with `-id cid`)
    and everything below them."""
    roots = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            argv = cmdline(int(name))
            if argv and os.path.basename(argv[0]).startswith("containerd-shim") and "-id" in argv \
                    and argv[argv.index("-id") + 1:argv.index("-id") + 2] == [cid]:
                roots.append(int(name))
    children = proc_children()
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(children.get(pid, []))
    return sorted(seen)


def memory_of(pid):
    status = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return None
    return {"pid": pid, "ppid": int(status["PPid"]), "name": status["Name"],
            "argv0": os.path.basename((cmdline(pid) or ["?"])[0]),
            "rss_kib": int(status["VmRSS"].split()[0]), "pss_kib": pss}


def task_memory(containerd, kind, ref, cid, crun, workdir, requests=200):
    """RSS and PSS of every process of one running task, after `requests` requests."""
    port = free_port()
    task = Task(containerd, kind, ref, cid, port, crun, workdir)
    try:
        task.wait_first_200()
        for _ in range(requests):
            status = get(port)
            if status != 200:
                fail(f"{kind}: GET / answered {status}")
        time.sleep(0.5)
        pids = task_processes(cid)
        procs = [m for m in (memory_of(pid) for pid in pids) if m]
        listed = containerd.ctr(["task", "ls"]).stdout
        task_pid = next((int(line.split()[1]) for line in listed.splitlines()[1:]
                         if line.split() and line.split()[0] == cid), None)
        for p in procs:
            p["role"] = ("container process" if p["pid"] == task_pid
                         else "shim daemon" if p["argv0"].startswith("containerd-shim") and p["ppid"] not in pids
                         else "shim helper")
        if not any(p["role"] == "container process" for p in procs):
            fail(f"{kind}: the task's process {task_pid} is not below its shim: {procs}")
        return {"processes": procs, "rss_kib": sum(p["rss_kib"] for p in procs),
                "pss_kib": sum(p["pss_kib"] for p in procs)}
    finally:
        task.stop()


# ------------------------------------------------------------------------------------------
# the whole measurement


def crun_works(containerd, ref, crun, workdir):
    """None if crun starts the server under containerd here, else why not."""
    if not crun:
        return "crun is not installed"
    port = free_port()
    task = Task(containerd, "crun", ref, "crun-probe", port, crun, workdir)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and task.proc.poll() is None:
            try:
                if get(port, timeout=1) == 200:
                    return None
            except OSError:
                time.sleep(0.01)
        why = (task.stderr().strip().splitlines() or ["no answer within 30 s"])[-1]
        return f"`ctr run --runc-binary crun` failed here: {why}"
    finally:
        task.stop()


def measure(args, skiff, shim, hello_server, workdir):
    results = {"runs": args.runs, "pause_ms": args.pause_ms, "loadavg_start": os.getloadavg()}
    with open(hello_server, "rb") as f:
        binary = f.read()
    results["server_bytes"] = len(binary)
    with open(os.path.join(HELLO_APP, "hello.wasm"), "rb") as f:
        results["wasm_bytes"] = len(f.read())

    registry = Registry(workdir)
    containerd = Containerd(workdir, shim_dir=os.path.dirname(shim))
    try:
        log(f"== pushing the images to {registry.addr} and pulling them into containerd")
        scratch = tempfile.mkdtemp(prefix="skiff-client-", dir=workdir)
        env = dict(os.environ, SKIFF_DATA_DIR=scratch, SKIFF_CACHE_DIR=scratch, DOCKER_CONFIG=scratch,
                   SKIFF_CONFIG=os.path.join(scratch, "client-config.toml"))
        refs = {"skiff": f"{registry.addr}/hello/skiff-image:v1"}
        run([skiff, "push", "--image", refs["skiff"], HELLO_APP], env=env)
        shutil.rmtree(scratch, ignore_errors=True)
        refs["runc"] = refs["crun"] = push_image(registry, "hello/scratch", "v1",
                                                 [file_layer("hello-server", binary)], ["/hello-server"])
        containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, "--platform", "wasi/wasm",
                        refs["skiff"]])
        containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, refs["runc"]])

        crun = shutil.which("crun")
        results["crun_skipped"] = crun_works(containerd, refs["crun"], crun, workdir)
        kinds = [k for k in KINDS if k != "crun" or not results["crun_skipped"]]
        if results["crun_skipped"]:
            log(f"   crun skipped: {results['crun_skipped']}")

        log("== one untimed start of each, to check they work and warm the page cache")
        for kind in kinds:
            start_once(containerd, kind, refs[kind], f"warmup-{kind}", crun, workdir)

        results["times"] = {kind: [] for kind in kinds}
        log(f"== {args.runs} isolated starts of each, interleaved, {args.pause_ms} ms apart")
        for i in range(args.runs):
            for kind in kinds:
                time.sleep(args.pause_ms / 1000)
                results["times"][kind].append(start_once(containerd, kind, refs[kind], f"{kind}-{i}", crun, workdir))
            log(f"   run {i + 1}/{args.runs}: " + ", ".join(
                f"{k} {results['times'][k][-1]['total_ms']:.1f} ms" for k in kinds))

        log("== memory of one running task of each")
        results["memory"] = {}
        for kind in kinds:
            time.sleep(args.pause_ms / 1000)
            results["memory"][kind] = task_memory(containerd, kind, refs[kind], f"mem-{kind}", crun, workdir)
            log(f"   {kind}: " + ", ".join(f"{p['argv0']} ({p['role']}) RSS {p['rss_kib']} KiB PSS {p['pss_kib']} KiB"
                                          for p in results["memory"][kind]["processes"]))
        results["loadavg_end"] = os.getloadavg()
        results["versions"] = {
            "containerd": run(["containerd", "--version"]).split()[2],
            "runc": run(["runc", "--version"]).splitlines()[0].split()[-1],
            "crun": run(["crun", "--version"]).splitlines()[0].split()[-1] if crun else None,
        }
        with open(containerd.log_path, errors="replace") as f:
            results["containerd_log_errors"] = [line for line in f.read().splitlines()
                                                if "level=error" in line][:20]
    finally:
        containerd.stop()
        stop(registry.proc)
    return results


# ------------------------------------------------------------------------------------------
# the report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def mib(kib):
    return f"{kib / 1024:.1f}"


def build_tables(r):
    t = r["times"]
    runc = median([x["total_ms"] for x in t["runc"]])
    lines = ["| `ctr run` to first 200 (hello) | median (ms) | min-max (ms) | runc / this |",
             "|---|---:|---:|---:|"]
    for kind in KINDS:
        if kind not in t:
            lines.append(f"| {NAMES[kind]} | not run: {r['crun_skipped']} | | |")
            continue
        totals = [x["total_ms"] for x in t[kind]]
        m = median(totals)
        lines.append(f"| {NAMES[kind]} | {m:.1f} | {min(totals):.1f}-{max(totals):.1f} | {runc / m:.2f}x |")
    start_table = "\n".join(lines)

    mem = r["memory"]
    lines = ["| one running task, after 200 requests | processes counted | RSS (MiB) | PSS (MiB) | RSS / runc's |",
             "|---|---|---:|---:|---:|"]
    for kind in KINDS:
        if kind not in mem:
            continue
        m = mem[kind]
        counted = " + ".join(f"{p['argv0']} ({p['role']}, {mib(p['rss_kib'])})" for p in m["processes"])
        lines.append(f"| {NAMES[kind]} | {counted} | {mib(m['rss_kib'])} | {mib(m['pss_kib'])} | "
                     f"{m['rss_kib'] / mem['runc']['rss_kib']:.2f}x |")
    return start_table, "\n".join(lines)


def build_details(r):
    t = r["times"]
    skiff = t["skiff"]
    inst, fn, serving = (median([x.get(k) for x in skiff]) for k in ("instance", "start_function", "serving"))
    in_shim = median([x["serving"] - x["start_function"] for x in skiff
                      if x.get("serving") is not None and x.get("start_function") is not None])
    total = median([x["total_ms"] for x in skiff])
    runc = median([x["total_ms"] for x in t["runc"]])
    goal = "met" if runc / total >= 5 else "not met"
    problems = r.get("containerd_log_errors") or []
    return (
        f"The app is `examples/hello` ({r['wasm_bytes']:,}-byte component) as `skiff push --image` makes it; the "
        f"container's is the static `bench/container/hello-server.c` (`gcc -O2 -static`, {r['server_bytes']:,} "
        f"bytes) alone in its image. containerd {r['versions']['containerd']} (own config, {SNAPSHOTTER} "
        f"snapshotter, no CRI), runc {r['versions']['runc']}"
        + (f", crun {r['versions']['crun']}" if r["versions"].get("crun") else "")
        + f"; every image pulled and unpacked and the daemon running before the clock starts. The clock "
        f"runs from spawning `ctr run --rm --net-host ...` to the first 200 to `GET /` (polled every "
        f"0.2 ms); then `ctr task kill --signal SIGKILL`, and the next start waits until `ctr run --rm` has "
        f"removed the container, plus {r['pause_ms']} ms: isolated starts, not back to back. Medians of "
        f"{r['runs']} starts of each, interleaved, after one untimed start of each.\n\n"
        f"Goal of issue 16, at least 5x faster than runc: {goal} ({runc / total:.2f}x). Where the shim's "
        f"{total:.1f} ms go (medians, ms after spawning `ctr run`, wall-clock timestamps of the shim's "
        f"lines in containerd's log and of skiff's own log line): the shim daemon starts the container "
        f"(\"starting instance\") at {inst:.1f}; the container's process calls skiff's `run_wasi` "
        f"(\"calling start function\") at {fn:.1f}; skiff listens (\"serving http://...\") at {serving:.1f}. "
        f"Inside the shim, process start to listening: {in_shim:.1f} ms (goal: 5 ms with a warm code "
        f"cache).\n\n"
        f"Memory: one task of each kind, after 200 requests, summed over the task's processes: the shim "
        f"daemon containerd started for it and every process below it, as listed (a \"shim helper\" is a process "
        f"below the shim daemon that is not the container's: runwasi's zygote and the process libcontainer "
        f"starts the container from). "
        f"containerd itself, shared by all tasks, is not counted. PSS (`/proc/PID/smaps_rollup`) "
        f"splits pages shared between processes (a forked process shares its parent's), so it is the "
        f"fairer sum; RSS counts shared pages once per process. Load average (1, 5, 15 min) at the start: "
        f"{', '.join(f'{x:.2f}' for x in r['loadavg_start'])}; at the end: "
        f"{', '.join(f'{x:.2f}' for x in r['loadavg_end'])}."
        + (f" Errors in containerd's log during the run: {len(problems)} (first: `{problems[0][:200]}`)."
           if problems else " No error in containerd's log."))


def report(args, results, started, machine_line, save):
    start_table, memory_table = build_tables(results)
    details = build_details(results)
    command = "bench/run.sh --shim" + (" --quick" if args.quick else "") + (
        f" --runs {args.runs}" if args.runs != (3 if args.quick else 20) else "")
    how = (f"{'Quick smoke run: not figures to quote. ' if args.quick else ''}"
           f"`{command}` (or, as root and built, `python3 bench/shim.py` in the mount namespace run.sh "
           f"sets up for crun): one containerd with the skiff shim on its PATH, the hello app as a "
           f"`skiff push --image` image and the static server as a container image, both pulled from a "
           f"local `docker-registry`, started with `ctr run` again and again.")
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command,
                               [start_table, memory_table, details])
    bench.keep_results("shim", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of each; writes no docs")
    parser.add_argument("--runs", type=int, help="timed starts of each kind (default 20; 3 with --quick)")
    parser.add_argument("--pause-ms", type=int, default=100, help="idle time before each start (default 100)")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--note", default="", help="a line to add under the heading")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier shim.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.no_write = True
    args.runs = args.runs or (3 if args.quick else 20)
    if args.runs < 1:
        fail("--runs takes 1 or more")

    if os.geteuid() != 0:
        fail("containerd needs root: run as root (bench/run.sh --shim)")
    skiff = os.environ.get("SKIFF", os.path.join(target_dir(), "release/skiff"))
    shim = os.environ.get("SKIFF_SHIM", os.path.join(target_dir(), "release/containerd-shim-skiff-v1"))
    for path in (skiff, shim):
        if not os.path.exists(path):
            fail(f"no {path}: run `cargo build --release -p skiff -p containerd-shim-skiff` "
                 "(or bench/run.sh --shim)")
    for tool, package in (("docker-registry", "docker-registry"), ("containerd", "containerd"),
                          ("ctr", "containerd"), ("runc", "runc")):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: apt-get install {package} (bench/run.sh --shim does)")
    hello_server = os.environ.get("HELLO_SERVER")
    workdir = tempfile.mkdtemp(prefix="skiff-shim-")
    try:
        if not hello_server:
            hello_server = os.path.join(workdir, "hello-server")
            run(["gcc", "-O2", "-static", "-o", hello_server, os.path.join(HERE, "container/hello-server.c")])
        machine_line = bench.machine()
        started = datetime.datetime.now(datetime.timezone.utc)
        results = measure(args, skiff, shim, hello_server, workdir)
    finally:
        stop_all()
        unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"shim: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
