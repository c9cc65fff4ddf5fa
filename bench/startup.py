#!/usr/bin/env python3
"""Cold start of `skiff up examples/hello`: from exec to the first 200 response, with an empty
code cache (compiles) and a warm one. Prints the median of N runs for each.

    bench/startup.py [RUNS] [SKIFF_BINARY]

The poll loop is a raw socket in this process (no curl per attempt), retrying every 0.2 ms,
so the figures carry little measuring overhead.
"""
import os, shutil, socket, statistics, subprocess, sys, tempfile, time

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
skiff = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "target/release/skiff")
port = 38517
request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def first_200(cache):
    env = dict(os.environ, SKIFF_CACHE_DIR=cache)
    start = time.perf_counter()
    proc = subprocess.Popen([skiff, "up", "--listen", f"127.0.0.1:{port}", "examples/hello"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(request)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return (time.perf_counter() - start) * 1000
            except OSError:
                time.sleep(0.0002)
    finally:
        proc.terminate()
        proc.wait()


cache = tempfile.mkdtemp()
try:
    cold = []
    for _ in range(runs):
        shutil.rmtree(cache)
        os.mkdir(cache)
        cold.append(first_200(cache))
    warm = [first_200(cache) for _ in range(runs)]
finally:
    shutil.rmtree(cache, ignore_errors=True)
print(f"exec to first 200, median of {runs}:")
print(f"  empty code cache (compiles): {statistics.median(cold):7.2f} ms")
print(f"  warm code cache:             {statistics.median(warm):7.2f} ms")
