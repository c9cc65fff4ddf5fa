#!/usr/bin/env python3
"""Distribution: the hello app from a registry to its first response, skiff against containers.

    python3 bench/distribution.py [--quick] [--runs N] [--no-write] [--note TEXT]
    bench/run.sh --distribution [--quick] [...]      # the same, after installing and building

Run it as root, after `cargo build --release -p skiff` (or through bench/run.sh, which also
installs the packages and hides the cgroup2 mount from crun, see below). Python 3 standard
library only, plus Debian's `docker-registry`, `containerd` (with `ctr`), `crun`, `gcc` with the
static libc, and `debootstrap` (only for the first run: the Debian base is cached).

One local registry (`docker-registry` on a free loopback port) holds four images of the same
hello app:
  - skiff: `examples/hello` pushed with `skiff push` (an app artifact), and with
    `skiff push --image` (the app folder as one rootfs layer of a `wasi/wasm` image);
  - containers: the static native server `bench/container/hello-server.c` (`gcc -O2 -static`)
    in the smallest image there is (no base: one layer holding the binary), and the same binary
    on a Debian bookworm "slim" base. No Docker Hub here: the base is built with
    `debootstrap --variant=minbase bookworm`, then trimmed as the official `-slim` images are
    (no docs but copyrights, man pages, info, locales, apt lists and caches), once, cached in
    target/bench/debian-slim/. The container images are written by this script (layers as
    tar.gz, gzip level 6 like Docker's, an OCI config and manifest) and pushed with plain
    registry API calls.

It measures:
  1. size: what a client downloads to pull each image from the registry (manifest + config +
     layers, as the registry stores them), and the ratio to the skiff app;
  2. time from the registry to the first 200, each run from an empty store: skiff with a fresh
     data folder and an empty code cache (it downloads, checks and compiles), `skiff pull` then
     `skiff up`, and `skiff up REF` alone (which pulls itself); a container: `ctr image pull`
     (containerd 1.6 with its own config, overlayfs snapshotter, running before the clock starts;
     the image and its content and snapshots removed with `ctr image rm --sync` after each
     run), `ctr image mount --rw` of the rootfs (a writable snapshot, as `ctr run` makes), then
     `crun run` of a bundle whose config.json points at that mount. Medians of N runs, the kinds interleaved, 100 ms between runs.

`crun` refuses this machine's hybrid cgroup layout; bench/run.sh runs this script inside a
private mount namespace that hides the cgroup2 mount (see /work/shared notes and run.sh).
It prints two markdown tables and, unless --quick or --no-write, rewrites the section
`## Distribution: registry to first response` of docs/performance.md (appended if missing).
Raw results go to target/bench/distribution.json; `--from-json PATH` renders them again.
"""
import argparse
import datetime
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
import bench  # noqa: E402  (bench/bench.py: process, machine, registry and containerd helpers)
from bench import (ROOT, SNAPSHOTTER, Containerd, Registry, fail, file_layer, free_port, gzip_layer,  # noqa: E402
                   log, ms_since, push_image, run, stop, stop_all, target_dir, unmount_under,
                   wait_first_200)

HEADING = "## Distribution: registry to first response"
HELLO_APP = os.path.join(ROOT, "examples/hello")
DEBIAN_SUITE = "bookworm"
# What the official `-slim` images leave out (debuerreotype-slimify's dpkg excludes), kept
# where they keep it: copyright files and locale.alias.
SLIM_REMOVE = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/groff",
               "usr/share/lintian", "usr/share/linda", "usr/share/locale"]


# ------------------------------------------------------------------------------------------
# the Debian base, built here


def debian_slim_layer():
    """The Debian slim base layer, built once with debootstrap and cached."""
    cache = os.path.join(target_dir(), "bench/debian-slim")
    blob_path, info_path = os.path.join(cache, "layer.tar.gz"), os.path.join(cache, "layer.json")
    if os.path.exists(blob_path) and os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        with open(blob_path, "rb") as f:
            return f.read(), info["diff_id"], info
    if not shutil.which("debootstrap"):
        fail("debootstrap is not installed (apt-get install debootstrap): it builds the Debian base once")
    os.makedirs(cache, exist_ok=True)
    rootfs = tempfile.mkdtemp(prefix="debian-slim-", dir=cache)
    try:
        mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
        log(f"== building the Debian base: debootstrap --variant=minbase {DEBIAN_SUITE} (once; about a minute)")
        run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, rootfs, mirror])
        for rel in SLIM_REMOVE:
            top = os.path.join(rootfs, rel)
            if not os.path.isdir(top):
                continue
            for dirpath, dirnames, filenames in os.walk(top, topdown=False):
                for name in filenames:
                    keep = name == "copyright" or (rel == "usr/share/locale" and name == "locale.alias")
                    if not keep:
                        os.unlink(os.path.join(dirpath, name))
                for name in dirnames:
                    full = os.path.join(dirpath, name)
                    if os.path.islink(full):
                        os.unlink(full)
                    elif not os.listdir(full):
                        os.rmdir(full)
        for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
            for dirpath, _, filenames in os.walk(os.path.join(rootfs, rel)):
                for name in filenames:
                    if name != "lock":
                        os.unlink(os.path.join(dirpath, name))
        tar_path = os.path.join(cache, "layer.tar")
        run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", rootfs, "-cf", tar_path, "."])
        with open(tar_path, "rb") as f:
            tar_bytes = f.read()
        os.unlink(tar_path)
        blob, diff_id = gzip_layer(tar_bytes)
        info = {"diff_id": diff_id, "uncompressed": len(tar_bytes), "suite": DEBIAN_SUITE, "mirror": mirror,
                "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with open(blob_path, "wb") as f:
            f.write(blob)
        with open(info_path, "w") as f:
            json.dump(info, f, indent=1)
        return blob, diff_id, info
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def crun_spec_template(workdir):
    """`crun spec`, as make-bundle.sh adapts it: no terminal, host network."""
    scratch = os.path.join(workdir, "spec")
    os.makedirs(scratch)
    run(["crun", "spec"], cwd=scratch)
    with open(os.path.join(scratch, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
    spec["root"]["readonly"] = False
    return spec


# ------------------------------------------------------------------------------------------
# one run of each kind


def skiff_env(workdir):
    data, cache, docker = (tempfile.mkdtemp(prefix=p, dir=workdir) for p in ("data-", "cache-", "docker-"))
    env = dict(os.environ, SKIFF_DATA_DIR=data, SKIFF_CACHE_DIR=cache, DOCKER_CONFIG=docker,
               SKIFF_CONFIG=os.path.join(data, "client-config.toml"))
    for var in ("RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        env.pop(var, None)
    return env, (data, cache, docker)


def skiff_run(skiff, reference, workdir, pull_first):
    """From nothing on this 'host' to the first 200: [skiff pull REF;] skiff up REF."""
    env, dirs = skiff_env(workdir)
    port = free_port()
    up = [skiff, "up", "--listen", f"127.0.0.1:{port}", reference]
    proc = None
    try:
        start = time.perf_counter()
        pull_ms = None
        if pull_first:
            run([skiff, "pull", reference], env=env)
            pull_ms = ms_since(start)
        proc = subprocess.Popen(up, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        bench.RUNNING.append(proc)
        total = wait_first_200(port, proc, start, "skiff up")
        compiled = sum(1 for _, _, files in os.walk(dirs[1]) for name in files if name.endswith(".cwasm"))
        if compiled == 0:
            fail(f"skiff up left no compiled code in its empty code cache {dirs[1]}: was the cache not empty?")
        return {"pull_ms": pull_ms, "total_ms": total}
    finally:
        if proc:
            stop(proc)
            proc.stderr.close()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def container_run(containerd, spec, reference, binary, workdir, n):
    """From an empty containerd to the first 200: ctr image pull, ctr image mount, crun run."""
    if not containerd.empty():
        fail("containerd's store is not empty before a run: "
             + containerd.ctr(["content", "ls"]).stdout[-1000:])
    port = free_port()
    bundle = tempfile.mkdtemp(prefix="bundle-", dir=workdir)
    rootfs = os.path.join(bundle, "rootfs")
    os.mkdir(rootfs)
    cid = f"dist-{os.getpid()}-{n}"
    proc = None
    mounted = False
    try:
        start = time.perf_counter()
        containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, reference])
        pull_ms = ms_since(start)
        # Writable, as `ctr run` and docker mount it: crun makes /proc, /dev and /sys in it.
        containerd.ctr(["image", "mount", "--rw", "--snapshotter", SNAPSHOTTER, reference, rootfs])
        mounted = True
        spec = json.loads(json.dumps(spec))
        spec["root"]["path"] = rootfs
        spec["process"]["args"] = [binary, str(port)]
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        proc = subprocess.Popen(["crun", "run", "--bundle", bundle, cid], cwd=bundle, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        bench.RUNNING.append(proc)
        total = wait_first_200(port, proc, start, "crun run")
        return {"pull_ms": pull_ms, "total_ms": total}
    finally:
        if proc:
            subprocess.run(["crun", "kill", cid, "KILL"], capture_output=True)
            stop(proc)
            proc.stderr.close()
            subprocess.run(["crun", "delete", "-f", cid], capture_output=True)
        if mounted:
            containerd.ctr(["image", "unmount", "--rm", rootfs], check=False)
        containerd.ctr(["image", "rm", "--sync", reference], check=False)
        shutil.rmtree(bundle, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# the whole measurement


def measure(args, skiff, hello_server, workdir):
    results = {"runs": args.runs, "loadavg_start": os.getloadavg()}
    with open(hello_server, "rb") as f:
        binary = f.read()
    with open(os.path.join(HELLO_APP, "hello.wasm"), "rb") as f:
        results["wasm_bytes"] = len(f.read())
    results["server_bytes"] = len(binary)
    base_blob, base_diff_id, base_info = debian_slim_layer()
    results["debian"] = base_info

    registry = Registry(workdir)
    containerd = Containerd(workdir)
    try:
        log(f"== pushing the four images to {registry.addr}")
        env, dirs = skiff_env(workdir)
        refs = {
            "skiff": f"{registry.addr}/hello/skiff:v1",
            "skiff_image": f"{registry.addr}/hello/skiff-image:v1",
        }
        run([skiff, "push", refs["skiff"], HELLO_APP], env=env)
        run([skiff, "push", "--image", refs["skiff_image"], HELLO_APP], env=env)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        refs["scratch"] = push_image(registry, "hello/scratch", "v1", [file_layer("hello-server", binary)],
                                     ["/hello-server"])
        refs["debian"] = push_image(registry, "hello/debian-slim", "v1",
                                    [(base_blob, base_diff_id), file_layer("usr/local/bin/hello-server", binary)],
                                    ["/usr/local/bin/hello-server"])
        results["sizes"] = {kind: registry.pull_size(*ref.split("/", 1)[1].rsplit(":", 1))
                            for kind, ref in refs.items()}
        for kind, size in results["sizes"].items():
            log(f"   {kind}: {size['total']:,} bytes")

        spec = crun_spec_template(workdir)
        binaries = {"scratch": "/hello-server", "debian": "/usr/local/bin/hello-server"}
        log("== one untimed run of each, to check they work and warm the page cache of the binaries")
        skiff_run(skiff, refs["skiff"], workdir, pull_first=True)
        for kind in ("scratch", "debian"):
            container_run(containerd, spec, refs[kind], binaries[kind], workdir, f"warmup-{kind}")

        kinds = ("skiff_pull_up", "skiff_up", "scratch", "debian")
        results["times"] = {kind: [] for kind in kinds}
        log(f"== {args.runs} runs of each, interleaved")
        for i in range(args.runs):
            for kind in kinds:
                time.sleep(0.1)
                if kind == "skiff_pull_up":
                    r = skiff_run(skiff, refs["skiff"], workdir, pull_first=True)
                elif kind == "skiff_up":
                    r = skiff_run(skiff, refs["skiff"], workdir, pull_first=False)
                else:
                    r = container_run(containerd, spec, refs[kind], binaries[kind], workdir, f"{kind}-{i}")
                results["times"][kind].append(r)
            log(f"   run {i + 1}/{args.runs}: " + ", ".join(
                f"{k} {results['times'][k][-1]['total_ms']:.0f} ms" for k in kinds))
        results["loadavg_end"] = os.getloadavg()
        results["versions"] = {
            "containerd": run(["containerd", "--version"]).split()[2],
            "crun": run(["crun", "--version"]).splitlines()[0].split()[-1],
        }
    finally:
        containerd.stop()
        stop(registry.proc)
    return results


# ------------------------------------------------------------------------------------------
# the report


def median(values):
    return statistics.median(values) if values else float("nan")


def build_tables(r):
    sizes = r["sizes"]
    base = sizes["skiff"]["total"]
    debian_mb = r["debian"]["uncompressed"] / 1e6
    size_rows = [
        ("skiff app (`skiff push`): skiff.toml and component, a layer each, the component gzipped", "skiff"),
        ("skiff app as an image (`skiff push --image`)", "skiff_image"),
        ("static server, no base image (one layer: the binary)", "scratch"),
        (f"static server on Debian {DEBIAN_SUITE} slim (debootstrap minbase, "
         f"{debian_mb:.0f} MB unpacked)", "debian"),
    ]
    lines = ["| image in the registry | layers | bytes to pull | ratio to the skiff app |", "|---|---:|---:|---:|"]
    for label, kind in size_rows:
        s = sizes[kind]
        lines.append(f"| {label} | {len(s['layers'])} | {s['total']:,} | {s['total'] / base:.2f}x |")
    size_table = "\n".join(lines)

    t = r["times"]
    skiff_total = median([x["total_ms"] for x in t["skiff_pull_up"]])
    time_rows = [
        ("skiff: `skiff pull` + `skiff up` (empty data folder and code cache)", "skiff_pull_up"),
        ("skiff: `skiff up REF` alone (pulls itself)", "skiff_up"),
        ("container, no base: `ctr image pull` + `ctr image mount` + `crun run`", "scratch"),
        (f"container on Debian {DEBIAN_SUITE} slim: the same", "debian"),
    ]
    lines = ["| registry to first 200 | pull (ms) | total (ms) | ratio to skiff pull + up |",
             "|---|---:|---:|---:|"]
    for label, kind in time_rows:
        runs = t[kind]
        pulls = [x["pull_ms"] for x in runs if x["pull_ms"] is not None]
        total = median([x["total_ms"] for x in runs])
        pull = f"{median(pulls):.1f}" if pulls else "(in `up`)"
        lines.append(f"| {label} | {pull} | {total:.1f} | {total / skiff_total:.2f}x |")
    return size_table, "\n".join(lines)


def build_details(r):
    s = r["sizes"]
    t = r["times"]
    names = {"skiff_pull_up": "skiff pull + up", "skiff_up": "skiff up alone", "scratch": "no-base container",
             "debian": "Debian slim container"}
    spread = "; ".join(
        f"{name} {min(x['total_ms'] for x in t[kind]):.0f}-{max(x['total_ms'] for x in t[kind]):.0f} ms"
        for kind, name in names.items())
    return (
        f"The app is `examples/hello/hello.wasm` ({r['wasm_bytes']:,} bytes) with its skiff.toml; the "
        f"container's is the static `bench/container/hello-server.c` (`gcc -O2 -static`, {r['server_bytes']:,} "
        f"bytes). Bytes to pull = the manifest as the registry serves it + the config + every layer "
        f"as stored (gzip for the images and for an app's component) (skiff app: manifest {s['skiff']['manifest']:,} + config {s['skiff']['config']:,} "
        f"+ layers {' + '.join(f'{x:,}' for x in s['skiff']['layers'])}; no-base image: "
        f"{s['scratch']['manifest']:,} + {s['scratch']['config']:,} + {s['scratch']['layers'][0]:,}). "
        f"The container images carry a minimal config (platform, entrypoint, diff_ids; no history), as small "
        f"as such an image gets. The Debian base is built here, not Docker Hub's `debian:{DEBIAN_SUITE}-slim` "
        f"(not reachable offline): `debootstrap --variant=minbase {DEBIAN_SUITE}`, then docs (but copyright "
        f"files), man pages, info, locales, apt lists, caches and logs removed, as the official slim images do "
        f"(which are about 28 MB compressed, 75 MB unpacked, on amd64).\n\n"
        f"Each timed run starts from an empty store and ends at the first 200 to `GET /`, polled every "
        f"0.2 ms from this process. skiff: a fresh `SKIFF_DATA_DIR` and an empty `SKIFF_CACHE_DIR` (so it "
        f"downloads, checks every digest, validates the app and compiles the component; `up` still asks the "
        f"registry what the tag names). Container: containerd {r['versions']['containerd']} (own config, "
        f"{SNAPSHOTTER} snapshotter, the daemon already running) pulls and unpacks; `ctr image mount --rw` mounts "
        f"the rootfs (a writable snapshot, as `ctr run` makes); crun {r['versions']['crun']} runs a bundle from "
        f"`crun spec` (no terminal, host network) on that mount; afterwards the container is deleted and "
        f"`ctr image rm --sync` removes the image with its content and snapshots. Medians of {r['runs']} runs "
        f"of each, interleaved, 100 ms apart, after one untimed run of each. Range: {spread}. Load "
        f"average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in r['loadavg_start'])}; "
        f"at the end: {', '.join(f'{x:.2f}' for x in r['loadavg_end'])}.")


def report(args, results, started, machine_line, save):
    size_table, time_table = build_tables(results)
    details = build_details(results)
    command = "bench/run.sh --distribution" + (" --quick" if args.quick else "") + (
        f" --runs {args.runs}" if args.runs != (3 if args.quick else 10) else "")
    how = (f"{'Quick smoke run: not figures to quote. ' if args.quick else ''}"
           f"`{command}` (or, as root and built, `python3 bench/distribution.py` in the mount namespace "
           f"run.sh sets up for crun): one local `docker-registry`, the hello app pushed by skiff and as "
           f"container images, then pulled and started from an empty store again and again.")
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command,
                               [size_table, time_table, details])
    bench.keep_results("distribution", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of each; writes no docs")
    parser.add_argument("--runs", type=int, help="timed runs of each kind (default 10; 3 with --quick)")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--note", default="", help="a line to add under the heading")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier distribution.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.no_write = True
    args.runs = args.runs or (3 if args.quick else 10)
    if args.runs < 1:
        fail("--runs takes 1 or more")

    if os.geteuid() != 0:
        fail("containerd and crun need root: run as root (bench/run.sh --distribution)")
    skiff = os.environ.get("SKIFF", os.path.join(target_dir(), "release/skiff"))
    if not os.path.exists(skiff):
        fail(f"no skiff binary at {skiff}: run `cargo build --release -p skiff` (or bench/run.sh --distribution)")
    for tool, package in (("docker-registry", "docker-registry"), ("containerd", "containerd"),
                          ("ctr", "containerd"), ("crun", "crun"), ("tar", "tar")):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: apt-get install {package} (bench/run.sh --distribution does)")
    hello_server = os.environ.get("HELLO_SERVER")
    workdir = tempfile.mkdtemp(prefix="skiff-distribution-")
    try:
        if not hello_server:
            hello_server = os.path.join(workdir, "hello-server")
            run(["gcc", "-O2", "-static", "-o", hello_server, os.path.join(HERE, "container/hello-server.c")])
        machine_line = bench.machine()
        started = datetime.datetime.now(datetime.timezone.utc)
        results = measure(args, skiff, hello_server, workdir)
    finally:
        stop_all()
        unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"distribution: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
