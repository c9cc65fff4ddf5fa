#!/usr/bin/env python3
"""Cold start of `skiff up examples/hello`: from exec to the first 200 response, with an empty
code cache (compiles) and a warm one. Prints the median of N runs for each.

    bench/startup.py [RUNS] [SKIFF_BINARY]

The poll loop is a raw socket in this process (no curl per attempt), retrying every 0.2 ms,
so the figures carry little measuring overhead. This is figure 3 of the whole suite
(`bench/run.sh`, see bench/bench.py) for skiff alone; the suite also measures `wasmtime serve`
and a container beside it.
"""
import os, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, free_port, stop_all, time_to_first_200  # noqa: E402

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
skiff = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/release/skiff")


def first_200(cache):
    port = free_port()
    argv = [skiff, "up", "--listen", f"127.0.0.1:{port}", "examples/hello"]
    return time_to_first_200(argv, port, env=dict(os.environ, SKIFF_CACHE_DIR=cache))


cache = tempfile.mkdtemp()
try:
    cold = []
    for _ in range(runs):
        shutil.rmtree(cache)
        os.mkdir(cache)
        cold.append(first_200(cache))
    warm = [first_200(cache) for _ in range(runs)]
finally:
    stop_all()
    shutil.rmtree(cache, ignore_errors=True)
print(f"exec to first 200, median of {runs}:")
print(f"  empty code cache (compiles): {statistics.median(cold):7.2f} ms")
print(f"  warm code cache:             {statistics.median(warm):7.2f} ms")
