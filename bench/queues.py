#!/usr/bin/env python3
"""Queues: messages per second and enqueue-to-result latency through skiff's queue trigger,
against a native Rust consumer of the same kind of stream doing the same transform.

    python3 bench/queues.py [--quick] [--reps N] [--seconds S] [--rate R] [--latency-seconds S]
                            [--no-write] [--note TEXT] [--from-json PATH]
    bench/run.sh --queues [--quick] [...]            # the same, after installing and building

Run it after `cargo build --release -p skiff` and a build of the two crates of bench/queues
(or through bench/run.sh --queues, which does both):

    cargo build --release --manifest-path bench/queues/transform-guest/Cargo.toml \\
        --target wasm32-wasip2 --target-dir target/bench-queues
    cargo build --release --manifest-path bench/queues/native-consumer/Cargo.toml \\
        --target-dir target/bench-queues

Python 3 standard library only (it speaks RESP itself, with bench/cluster.py's client), plus
`redis-server` and `taskset`. Only loopback addresses are used.

One `redis-server` (no persistence) and one cluster host, `skiff server --cluster
redis://... --host-id host-1` (bench/cluster.py's Host), with the tenant `bench` (in-flight
quota 10,000). The host, or the native consumer, runs on CPU 0; Redis and this client on
CPU 1. The pipeline:

  - skiff: the app `transform`, one component (bench/queues/transform-guest) consuming the
    queue `records` through `wasi:messaging/incoming-handler` with `concurrency = C` (and the
    default batch, min(C, 10)); for each message it publishes the data upper-cased to the
    queue `results` (`publish = ["results"]`). In Redis these are the streams
    `skiff:q:bench/records` and `skiff:q:bench/results`.
  - native: bench/queues/native-consumer on `skiff:q:native/records` and
    `skiff:q:native/results`, C messages in flight, with the same Redis commands as skiff's
    trigger (XAUTOCLAIM and XREADGROUP ... BLOCK for as many messages as there are free
    slots; per message skiff's publish script and MULTI XACK XDEL EXEC) and the same codec.

For C in 1 and 32 (the app redeployed with the new concurrency, the native consumer
restarted with it), after a warm-up, each repetition measures both, one after the other:

  1. throughput: N encoded messages (100 bytes of data each) go into `records` in one MULTI
     ... EXEC, so a consumer blocked in XREADGROUP sees them all at once; msgs/s is N over the
     time from the end of the transaction (Redis TIME, its last command) to the id of the
     N-th entry of `results` (a Redis timestamp, ms). N is sized from the warm-up's rate so a run takes
     about --seconds (at most 90,000: a queue holds at most 100,000). The CPU time the
     consumer's process and Redis used over the run, per message, is noted too.
  2. latency: --rate messages a second for --latency-seconds, each XADDed alone with the
     client's monotonic clock in its data; a second connection waits on `results` (XREAD
     BLOCK) and notes when each result arrives; end-to-end latency is arrival minus enqueue,
     p50 and p99.

It prints markdown tables (medians of --reps repetitions, skiff as a ratio to native) and,
unless --quick or --no-write, rewrites the section `## Queues: the transform pipeline` of
docs/performance.md. Raw results go to target/bench/queues.json; `--from-json PATH` renders
(and writes) them again.
"""
import argparse
import datetime
import os
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: process and machine helpers, the docs' sections)
import cluster  # noqa: E402  (bench/cluster.py: Redis, cluster hosts, tenants, bundles)
from bench import LOADGEN_CPU, ROOT, SERVER_CPU, fail, log, pinned, spawn, stop, stop_all  # noqa: E402

HEADING = "## Queues: the transform pipeline"
IN_FLIGHT = (1, 32)
TENANT = "bench"
APP = "transform"
GROUP = "skiff"  # skiff's consumer group (crates/skiff-store/src/redis_queue.rs)
FIELD = "m"  # the one field of an entry: the encoded message
MAX_N = 90_000  # a queue holds at most 100,000 messages, and `results` is never consumed
DATA_BYTES = 100
FILLER = b"the quick brown fox jumps over the lazy dog " * 4
SETTLE_S = 3.5  # after a redeploy: the hosts' trigger sync (1 s) and the old reader's BLOCK (2 s)


# ------------------------------------------------------------------------------------------
# messages


def encode(data):
    """skiff's message codec (crates/skiff-store/src/message_codec.rs): version 1, the data
    (a 4-byte little-endian length, then it), no content type, no metadata."""
    return b"\x01" + struct.pack("<I", len(data)) + data + b"\x00" + struct.pack("<I", 0)


def decode(encoded):
    """The data of a message encoded by skiff's codec; its metadata (skiff's host adds the
    producer's `traceparent`) is read past. Fails on anything that is not the codec's."""

    def part(at):
        (length,) = struct.unpack_from("<I", encoded, at)
        return encoded[at + 4:at + 4 + length], at + 4 + length

    try:
        if encoded[:1] != b"\x01":
            raise ValueError("version")
        data, at = part(1)
        if encoded[at:at + 1] == b"\x01":
            _, at = part(at + 1)
        elif encoded[at:at + 1] == b"\x00":
            at += 1
        else:
            raise ValueError("content type")
        (entries,) = struct.unpack_from("<I", encoded, at)
        at += 4
        for _ in range(entries * 2):
            _, at = part(at)
        if at != len(encoded):
            raise ValueError("trailing bytes")
    except (ValueError, struct.error) as why:
        fail(f"not a message of skiff's codec ({why}): {encoded[:200]!r}")
    return data


def record(i):
    """The data of throughput message `i`: lower-case text, DATA_BYTES long."""
    head = b"%010d " % i
    return head + FILLER[:DATA_BYTES - len(head)]


def timed_record(seq, sent_ns):
    """The data of latency message `seq`: its sequence number and enqueue time (digits, which
    upper-casing leaves alone), then lower-case text, DATA_BYTES long."""
    head = b"%08d %020d " % (seq, sent_ns)
    return head + FILLER[:DATA_BYTES - len(head)]


def entry_ms(entry_id):
    """The Redis timestamp (ms) of a stream entry id `MS-SEQ`."""
    return int(entry_id.split(b"-")[0])


def wait_drained(client, key, timeout=10):
    """Waits until the stream `key` is empty (every message acknowledged); returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = client.cmd("XLEN", key)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)


def make_group(client, key):
    """The stream and its consumer group `skiff`, from its start, as skiff's publish makes them."""
    try:
        client.cmd("XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM")
    except RuntimeError as e:
        if "BUSYGROUP" not in str(e):
            raise


# ------------------------------------------------------------------------------------------
# other work on the machine


OURS = set()  # pids of this benchmark's processes: Redis, the host, the native consumer, this one


def busy_seconds():
    """CPU seconds this machine has been busy (all CPUs), and those of this benchmark's
    processes (threads included)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    ours = 0.0
    for pid in list(OURS):
        try:
            ours += cluster.cpu_seconds(pid)
        except OSError:
            OURS.discard(pid)
    return busy, ours


class OtherWork:
    """How many CPUs processes other than this benchmark's kept busy over an interval: the
    noise of a shared machine (another build, another test), reported with each run."""

    def __init__(self):
        self.wall = time.monotonic()
        self.busy, self.ours = busy_seconds()

    def cpus(self):
        busy, ours = busy_seconds()
        return max(0.0, (busy - self.busy) - (ours - self.ours)) / (time.monotonic() - self.wall)


# ------------------------------------------------------------------------------------------
# the two consumers


class SkiffConsumer:
    """The app `transform` on a cluster host, consuming `records` of the tenant `bench`."""

    label = "skiff"

    def __init__(self, host, token, wasm):
        self.host, self.token, self.wasm = host, token, wasm
        self.records = f"skiff:q:{TENANT}/records"
        self.results = f"skiff:q:{TENANT}/results"
        self.in_flight = None

    @property
    def pid(self):
        return self.host.pid

    def set_in_flight(self, c):
        manifest = (f'[app]\nname = "{APP}"\nversion = "0.1.0"\n'
                    f'description = "queue benchmark, {c} in flight"\n\n'
                    f'[component.transform]\nsource = "transform.wasm"\npublish = ["results"]\n\n'
                    f'[component.transform.consume]\nqueue = "records"\nconcurrency = {c}\n')
        body = cluster.bundle({"skiff.toml": manifest.encode(), "transform.wasm": self.wasm})
        cluster.deploy(self.host, self.token, APP, body)
        self.in_flight = c
        time.sleep(SETTLE_S)

    def check_alive(self, when):
        self.host.check_alive(when)

    def log_tail(self):
        return self.host.log_text()[-3000:]

    def stop(self):
        pass


class NativeConsumer:
    """bench/queues/native-consumer, restarted for each number in flight."""

    label = "native"

    def __init__(self, binary, redis, workdir):
        self.binary, self.redis = binary, redis
        self.records = "skiff:q:native/records"
        self.results = "skiff:q:native/results"
        self.log_path = os.path.join(workdir, "native-consumer.log")
        self.proc = None
        self.in_flight = None

    @property
    def pid(self):
        return self.proc.pid

    def set_in_flight(self, c):
        self.stop()
        argv = [self.binary, self.redis.url, self.records, self.results, str(c)]
        self.proc = spawn(pinned(argv, SERVER_CPU), self.log_path, preexec_fn=cluster.die_with_parent)
        OURS.add(self.proc.pid)
        self.in_flight = c
        time.sleep(0.5)
        self.check_alive("after it started")

    def check_alive(self, when):
        if self.proc.poll() is not None:
            fail(f"the native consumer exited with status {self.proc.returncode} {when}:\n{self.log_tail()}")

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


# ------------------------------------------------------------------------------------------
# 1. throughput


def burst(redis, consumer, n, timeout):
    """N messages into `records` at once (one MULTI ... EXEC); waits until `results` holds N
    entries and `records` is empty (all acknowledged). Returns the rate and what it cost."""
    client = redis.client
    client.cmd("DEL", consumer.results)
    left = wait_drained(client, consumer.records)
    if left:
        fail(f"{consumer.records} still holds {left} messages before a run")
    # TIME last in the transaction: when the messages became visible (a transaction runs
    # alone, and blocked readers are served after it).
    commands = [("MULTI",)]
    commands += [("XADD", consumer.records, "*", FIELD, encode(record(i))) for i in range(n)]
    commands += [("TIME",), ("EXEC",)]
    payload = b"".join(cluster.Resp.encode(c) for c in commands)
    cpu_before = (cluster.cpu_seconds(consumer.pid), cluster.cpu_seconds(redis.proc.pid))
    other = OtherWork()
    wall_start = time.monotonic()
    client.sock.sendall(payload)
    replies = [client.read() for _ in commands]
    seconds, micros = replies[-1][-1]
    start_ms = int(seconds) * 1000 + int(micros) / 1000
    while True:
        have = client.cmd("XLEN", consumer.results)
        if have >= n:
            break
        if time.monotonic() - wall_start > timeout:
            consumer.check_alive("during a run")
            fail(f"{consumer.label}, {consumer.in_flight} in flight: {have} of {n} results after "
                 f"{timeout:.0f} s ({client.cmd('XLEN', consumer.records)} left in {consumer.records}).\n"
                 f"last lines of its log:\n{consumer.log_tail()}")
        time.sleep(0.01)
    wait_drained(client, consumer.records)
    cpu_after = (cluster.cpu_seconds(consumer.pid), cluster.cpu_seconds(redis.proc.pid))
    other_cpus = other.cpus()
    first = client.cmd("XRANGE", consumer.results, "-", "+", "COUNT", 1)[0]
    last = client.cmd("XREVRANGE", consumer.results, "+", "-", "COUNT", 1)[0]
    if decode(dict(zip(first[1][::2], first[1][1::2]))[FIELD.encode()])[11:20] != FILLER[:9].upper():
        fail(f"{consumer.label}: a result is not the upper-cased record: {first!r}")
    elapsed_ms = max(entry_ms(last[0]) - start_ms, 1.0)
    return {"n": n, "seconds": elapsed_ms / 1000, "rate": n / elapsed_ms * 1000,
            "first_result_ms": entry_ms(first[0]) - start_ms,
            # From the first result to the last: the steady rate, without the first read.
            "steady_rate": (n - 1) / max(entry_ms(last[0]) - entry_ms(first[0]), 1) * 1000,
            "results": client.cmd("XLEN", consumer.results),
            "left": client.cmd("XLEN", consumer.records),
            "consumer_cpu_us": (cpu_after[0] - cpu_before[0]) / n * 1e6,
            "redis_cpu_us": (cpu_after[1] - cpu_before[1]) / n * 1e6,
            "other_cpus": other_cpus}


# ------------------------------------------------------------------------------------------
# 2. latency


def steady(redis, consumer, rate, seconds):
    """`rate` messages a second for `seconds`, each alone; the time from its XADD to its result
    reaching this client (XREAD BLOCK on `results`), in ms."""
    client = redis.client
    client.cmd("DEL", consumer.results)
    total = int(rate * seconds)
    arrived = {}  # seq -> (arrival ns, result entry ms)
    reader_error = []

    def reader():
        conn = cluster.Resp(redis.port)
        last_id = "0-0"
        deadline = time.monotonic() + seconds + 30
        try:
            while len(arrived) < total and time.monotonic() < deadline:
                reply = conn.cmd("XREAD", "COUNT", 1000, "BLOCK", 200, "STREAMS", consumer.results, last_id)
                now = time.monotonic_ns()
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        data = decode(dict(zip(fields[::2], fields[1::2]))[FIELD.encode()])
                        seq, sent = data.split(b" ")[:2]
                        arrived[int(seq)] = (now - int(sent), entry_ms(entry_id))
                        last_id = entry_id
        except BaseException as e:  # noqa: BLE001  (reported below)
            reader_error.append(e)
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    sender = cluster.Resp(redis.port)
    enqueued_ms = {}
    other = OtherWork()
    started = time.monotonic()
    try:
        for seq in range(total):
            delay = started + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic_ns()
            entry_id = sender.cmd("XADD", consumer.records, "*", FIELD, encode(timed_record(seq, sent)))
            enqueued_ms[seq] = entry_ms(entry_id)
        send_seconds = time.monotonic() - started
    finally:
        sender.close()
        thread.join()
    if reader_error:
        raise reader_error[0]
    consumer.check_alive("during the latency run")
    latencies = sorted(ns / 1e6 for ns, _ in arrived.values())
    # The same from Redis's timestamps (ms resolution): a check on the client's clock.
    redis_latencies = [ms - enqueued_ms[seq] for seq, (_, ms) in arrived.items()]
    return {"sent": total, "received": len(arrived), "send_seconds": send_seconds, "other_cpus": other.cpus(),
            "p50": cluster.percentile(latencies, 50), "p90": cluster.percentile(latencies, 90),
            "p99": cluster.percentile(latencies, 99), "max": max(latencies) if latencies else float("nan"),
            "redis_p50": cluster.percentile(redis_latencies, 50), "redis_p99": cluster.percentile(redis_latencies, 99)}


# ------------------------------------------------------------------------------------------
# the run


def size_run(redis, consumer, args, c):
    """Warms the consumer up (a burst, then a short burst whose rate sizes N) and returns N."""
    bursts = (200, 1000) if c == 1 else (1000, 5000)
    if args.quick:
        bursts = (100, 500) if c == 1 else (500, 2000)
    warm = burst(redis, consumer, bursts[0], timeout=120)
    sizing = burst(redis, consumer, bursts[1], timeout=120)
    n = int(min(MAX_N, max(500, sizing["rate"] * args.seconds)))
    log(f"   {consumer.label:6s} {c:2d} in flight: warm-up {warm['rate']:,.0f} and {sizing['rate']:,.0f} msgs/s, "
        f"so N = {n:,}")
    return n


def measure(args, skiff, wasm_path, native_path, workdir):
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    results = {"wasm_bytes": len(wasm), "loadavg_start": os.getloadavg(), "in_flight": {}}
    results["redis_version"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                              text=True).stdout.strip()
    admin = secrets.token_hex(16)
    redis = cluster.RedisServer(workdir)
    OURS.update({redis.proc.pid, os.getpid()})
    native = None
    try:
        log(f"== redis-server on 127.0.0.1:{redis.port}; one cluster host")
        host = cluster.Host(skiff, workdir, 1, redis, admin)
        OURS.add(host.pid)
        host.wait_ready()
        token = cluster.create_tenant(host, TENANT, 10, 1 << 30)
        skiff_consumer = SkiffConsumer(host, token, wasm)
        native = NativeConsumer(native_path, redis, workdir)
        for consumer in (skiff_consumer, native):
            make_group(redis.client, consumer.records)
        for c in IN_FLIGHT:
            log(f"== {c} in flight: the app redeployed with concurrency = {c}, the native consumer restarted")
            consumers = (skiff_consumer, native)
            sizes = {}
            for consumer in consumers:
                consumer.set_in_flight(c)
                sizes[consumer.label] = size_run(redis, consumer, args, c)
            reps = []
            for rep in range(args.reps):
                run = {}
                for consumer in consumers:
                    n = sizes[consumer.label]
                    through = burst(redis, consumer, n, timeout=max(120, 10 * args.seconds))
                    latency = steady(redis, consumer, args.rate, args.latency_seconds)
                    run[consumer.label] = {"throughput": through, "latency": latency}
                    log(f"   rep {rep + 1} {consumer.label:6s}: {through['rate']:8,.0f} msgs/s ({n:,} in "
                        f"{through['seconds']:.2f} s; consumer CPU {through['consumer_cpu_us']:.0f} µs/msg, Redis "
                        f"{through['redis_cpu_us']:.0f} µs/msg); at {args.rate:g}/s p50 {latency['p50']:.2f} ms, "
                        f"p99 {latency['p99']:.2f} ms ({latency['received']}/{latency['sent']} results); other processes "
                        f"kept {through['other_cpus']:.2f} and {latency['other_cpus']:.2f} CPUs busy")
                reps.append(run)
            results["in_flight"][str(c)] = {"n": sizes, "reps": reps}
        warnings = {}  # each distinct message once (without its time stamp), the last time it came
        for line in host.log_text().splitlines():
            if " WARN " in line or " ERROR " in line:
                warnings[line.split(" ", 1)[-1].strip()] = line.strip()
        results["host_warnings"] = list(warnings.values())[-5:]
        results["native_log"] = native.log_tail()[-1000:]
        results["loadavg_end"] = os.getloadavg()
    finally:
        if native is not None:
            native.stop()
        stop_all()
    return results


# ------------------------------------------------------------------------------------------
# the report


def med(values):
    return statistics.median(values) if values else float("nan")


def report(args, results, started, machine_line, save):
    med_of = {}  # (c, label, kind, field) -> median over reps
    for c, figures in results["in_flight"].items():
        for label in ("skiff", "native"):
            for kind in ("throughput", "latency"):
                for field in figures["reps"][0][label][kind]:
                    values = [rep[label][kind][field] for rep in figures["reps"]]
                    med_of[(c, label, kind, field)] = med(values)

    def m(c, label, kind, field):
        return med_of[(str(c), label, kind, field)]

    throughput = ["| messages in flight | skiff (msgs/s) | native Rust (msgs/s) | skiff / native | "
                  "CPU per message, skiff host / native | Redis CPU per message, skiff / native |",
                  "|---:|---:|---:|---:|---:|---:|"]
    for c in IN_FLIGHT:
        s, n = m(c, "skiff", "throughput", "rate"), m(c, "native", "throughput", "rate")
        throughput.append(
            f"| {c} | {s:,.0f} | {n:,.0f} | **{s / n:.2f}x** | "
            f"{m(c, 'skiff', 'throughput', 'consumer_cpu_us'):,.0f} / {m(c, 'native', 'throughput', 'consumer_cpu_us'):,.0f} µs | "
            f"{m(c, 'skiff', 'throughput', 'redis_cpu_us'):,.0f} / {m(c, 'native', 'throughput', 'redis_cpu_us'):,.0f} µs |")
    latency = [f"| enqueue → result at {args.rate:g} msgs/s (ms) | skiff p50 | skiff p99 | native p50 | native p99 | "
               f"skiff / native, p50 | skiff / native, p99 |",
               "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in IN_FLIGHT:
        sp50, sp99 = m(c, "skiff", "latency", "p50"), m(c, "skiff", "latency", "p99")
        np50, np99 = m(c, "native", "latency", "p50"), m(c, "native", "latency", "p99")
        latency.append(f"| {c} in flight | {sp50:.2f} | {sp99:.2f} | {np50:.2f} | {np99:.2f} | "
                       f"{sp50 / np50:.2f}x | {sp99 / np99:.2f}x |")

    per_rep = []
    problems = []
    for c in IN_FLIGHT:
        figures = results["in_flight"][str(c)]
        rates = "; ".join(f"{r['skiff']['throughput']['rate']:,.0f} / {r['native']['throughput']['rate']:,.0f}"
                          for r in figures["reps"])
        ratios = ", ".join(f"{r['skiff']['throughput']['rate'] / r['native']['throughput']['rate']:.2f}x"
                           for r in figures["reps"])
        steady_rates = "; ".join(f"{r['skiff']['throughput']['steady_rate']:,.0f} / "
                                 f"{r['native']['throughput']['steady_rate']:,.0f}" for r in figures["reps"])
        firsts = (f"{m(c, 'skiff', 'throughput', 'first_result_ms'):.1f} / "
                  f"{m(c, 'native', 'throughput', 'first_result_ms'):.1f} ms")
        redis_lat = (f"{m(c, 'skiff', 'latency', 'redis_p50'):.0f} / {m(c, 'skiff', 'latency', 'redis_p99'):.0f} ms "
                     f"(skiff), {m(c, 'native', 'latency', 'redis_p50'):.0f} / {m(c, 'native', 'latency', 'redis_p99'):.0f} "
                     f"ms (native)")
        per_rep.append(f"{c} in flight: N = {figures['n']['skiff']:,} (skiff) and {figures['n']['native']:,} (native) "
                       f"messages per run; msgs/s per repetition (skiff / native) {rates}, ratios {ratios}; from the "
                       f"first result to the last {steady_rates}; first result {firsts} after the messages were in (medians); "
                       f"latency p50 / p99 from Redis's entry ids (ms resolution) {redis_lat}.")
        for rep in figures["reps"]:
            for label in ("skiff", "native"):
                t, lat = rep[label]["throughput"], rep[label]["latency"]
                if t["results"] != t["n"] or t["left"]:
                    problems.append(f"{label}, {c} in flight: {t['results']} results of {t['n']}, {t['left']} left")
                if lat["received"] != lat["sent"]:
                    problems.append(f"{label}, {c} in flight: {lat['received']} of {lat['sent']} latency results")
    others = [rep[label][kind]["other_cpus"] for figures in results["in_flight"].values()
              for rep in figures["reps"] for label in ("skiff", "native") for kind in ("throughput", "latency")]
    quiet = (f"Processes other than the benchmark's kept {med(others):.2f} CPUs busy during a run (median; at "
             f"most {max(others):.2f})" + (": the machine was busy, and these figures carry that noise."
                                           if med(others) >= 0.1 else "."))
    details = ("Per repetition and cross-checks. " + " ".join(per_rep) + " " + quiet + " "
               + (("Problems: " + "; ".join(problems) + ".") if problems else
                  "Every run: exactly N results, and `records` empty at the end (no message lost, none twice).")
               + f" The component is {results['wasm_bytes']:,} bytes. {results['redis_version']}. Load average "
               f"(1, 5, 15 min) at the start: {', '.join(f'{v:.2f}' for v in results['loadavg_start'])}; at the end: "
               f"{', '.join(f'{v:.2f}' for v in results['loadavg_end'])}.")
    if results.get("host_warnings"):
        details += " Warnings and errors in the host's log (last ones): " + "; ".join(
            f"`{line.strip()[:300]}`" for line in results["host_warnings"]) + "."

    command = "`bench/run.sh --queues`" + (" (quick)" if args.quick else "")
    how = (f"`bench/run.sh --queues` (or, built, `python3 bench/queues.py`): one `redis-server` (no persistence) and one "
           f"host, `skiff server --cluster redis://127.0.0.1:PORT/0 --host-id host-1` (log level warn), pinned to "
           f"CPU 0; Redis and the measuring client pinned to CPU 1. The app `transform` "
           f"(bench/queues/transform-guest, a Rust component) consumes the queue `records` through "
           f"`wasi:messaging/incoming-handler` with `concurrency = C` (batch: the default, min(C, 10)) and publishes "
           f"each message's {DATA_BYTES}-byte data upper-cased to the queue `results`. The baseline, "
           f"bench/queues/native-consumer (Rust, tokio, the redis crate skiff uses), pinned to CPU 0 in the host's "
           f"place, consumes its own stream pair with the same Redis commands as skiff's trigger (XAUTOCLAIM and "
           f"XREADGROUP … BLOCK for as many messages as it has free slots; per message skiff's publish script, then "
           f"MULTI XACK XDEL EXEC), the same codec and C messages in flight. Throughput: N messages go into `records` "
           f"in one MULTI … EXEC, timed from its end (Redis TIME, its last command) to the Redis timestamp of the N-th "
           f"result (N sized from a warm-up run to take about {args.seconds:g} s). Latency: {args.rate:g} messages a "
           f"second for {args.latency_seconds:g} s, each XADDed alone carrying the client's clock; a second "
           f"connection waits on `results` (XREAD BLOCK), so each latency is from enqueue to the result reaching a "
           f"reader. For each C the two run one after the other in each repetition; medians of {args.reps} "
           f"repetitions.")
    section = bench.section_of(HEADING, started, machine_line, how, args.note, command,
                               ["\n".join(throughput), "\n".join(latency), details])
    bench.keep_results("queues", HEADING, section, args, results, started, machine_line, save)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition, runs of about 1.5 s, 2 s of latency; writes no docs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="about how long a throughput run takes")
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second in the latency runs")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="seconds of each latency run")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--note", default="", help="a line to add under the description")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: render an earlier run's queues.json")
    args = parser.parse_args()
    if args.from_json:
        return bench.render_saved(args, report)
    if args.quick:
        args.reps, args.seconds, args.latency_seconds, args.no_write = 1, 1.5, 2.0, True

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    skiff = os.environ.get("SKIFF", os.path.join(target, "release/skiff"))
    wasm = os.environ.get("TRANSFORM_WASM",
                          os.path.join(target, "bench-queues/wasm32-wasip2/release/transform_guest.wasm"))
    native = os.environ.get("NATIVE_CONSUMER", os.path.join(target, "bench-queues/release/native-consumer"))
    if not os.path.exists(skiff):
        fail(f"no skiff binary at {skiff}: run `cargo build --release -p skiff` (or bench/run.sh --queues)")
    if not os.path.exists(wasm):
        fail(f"no transform guest at {wasm}: run `cargo build --release --manifest-path "
             f"bench/queues/transform-guest/Cargo.toml --target wasm32-wasip2 --target-dir {target}/bench-queues` "
             f"(or bench/run.sh --queues)")
    if not os.path.exists(native):
        fail(f"no native consumer at {native}: run `cargo build --release --manifest-path "
             f"bench/queues/native-consumer/Cargo.toml --target-dir {target}/bench-queues` (or bench/run.sh --queues)")
    for tool in ("taskset", "redis-server"):
        if not shutil.which(tool):
            fail(f"`{tool}` is not installed: run bench/run.sh --queues, which installs it")
    if (os.cpu_count() or 1) < 2:
        fail(f"the consumers run on CPU {SERVER_CPU} and the rest on CPU {LOADGEN_CPU}: this needs 2 CPUs")
    machine_line = bench.machine()  # before pinning this process: `nproc` would say 1
    try:
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    except (AttributeError, OSError):
        pass

    OURS.add(os.getpid())
    other = OtherWork()
    time.sleep(1)
    if other.cpus() > 0.2:
        log(f"warning: other processes keep {other.cpus():.2f} CPUs busy: the figures will carry that noise")
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="skiff-queues-")
    try:
        results = measure(args, skiff, wasm, native, workdir)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results, started, machine_line, save=True)


if __name__ == "__main__":
    def on_term(signum, frame):
        raise SystemExit(f"queues: stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    finally:
        stop_all()
