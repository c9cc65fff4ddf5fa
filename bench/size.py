#!/usr/bin/env python3
"""Binary size: what users download, against its budget (20 MiB), and what each part costs.

    bench/run.sh --size [--no-write]        (builds what it measures; or, built:)
    python3 bench/size.py [--no-write]

Measures the `dist` build (`cargo build --profile dist -p skiff`: stripped, fat LTO, one
codegen unit; the binary scripts/release.sh ships), the static musl builds scripts/release.sh
makes when they are there, and as the baseline the `release` build (line tables, as developers
build it) before and after `strip`. What each part costs is cargo-bloat's split of the release
build's code (`.text`) by crate, grouped: an estimate (inlining moves code between crates), and
the dist build's parts shrink in proportion with LTO. Writes the section "Binary size" of
docs/performance.md.
"""

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: the machine, the docs' sections)
from bench import ROOT, fail, log  # noqa: E402

BUDGET = 20 * 1024 * 1024
HEADING = "## Binary size"

# Crates by the part of skiff they make up.
PARTS = [
    ("Wasm engine: wasmtime, Cranelift, Pulley, wasmparser",
     re.compile(r"^(wasmtime|cranelift|pulley|wasmparser|wasm_encoder|wasmprinter|wast|wat|wit_|regalloc2|"
                r"gimli|object|target_lexicon|wasi_common|wiggle|cap_|fs_set_times|io_extras|system_interface)")),
    ("skiff's own crates", re.compile(r"^(skiff|containerd_shim_skiff)")),
    ("HTTP and TLS: hyper, h2, reqwest, rustls, ring, OCI client",
     re.compile(r"^(hyper|h2|http|reqwest|rustls|ring|webpki|tokio_rustls|oci_|tower|url|idna|icu_|base64)")),
    ("state: redb, redis", re.compile(r"^(redb|redis|combine)")),
    ("Rust's standard library", re.compile(r"^(std|core|alloc|compiler_builtins|hashbrown|memchr|addr2line|"
                                           r"miniz_oxide|rustc_demangle)$")),
]


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else None


def mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


def bloat_parts(target):
    """cargo-bloat's `.text` by crate of the release build, grouped into PARTS."""
    bloat = shutil.which("cargo-bloat")
    if not bloat:
        return None, "cargo-bloat is not installed (`cargo install cargo-bloat --locked`)"
    out = subprocess.run(["cargo", "bloat", "--release", "-p", "skiff", "--bin", "skiff", "--crates",
                          "-n", "0", "--message-format", "json"],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, CARGO_TARGET_DIR=target))
    if out.returncode != 0:
        return None, f"cargo bloat failed: {out.stderr.strip()[-300:]}"
    import json
    report = json.loads(out.stdout)
    totals = {name: 0 for name, _ in PARTS}
    totals["everything else"] = 0
    for crate in report["crates"]:
        part = next((name for name, pattern in PARTS if pattern.match(crate["name"])), "everything else")
        totals[part] += crate["size"]
    return {"text": report["text-section-size"], "file": report["file-size"], "parts": totals}, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    started = datetime.datetime.now(datetime.timezone.utc)

    dist = os.path.join(target, "dist/skiff")
    release = os.path.join(target, "release/skiff")
    if size(dist) is None or size(release) is None:
        fail(f"build first: cargo build --profile dist -p skiff && cargo build --release -p skiff ({dist}, {release})")
    with tempfile.TemporaryDirectory() as scratch:
        stripped = os.path.join(scratch, "skiff")
        subprocess.run(["strip", "-o", stripped, release], check=True)
        release_stripped = size(stripped)
    rows = [
        ("`release` build (line tables), as developers build it", size(release)),
        ("the same, stripped (baseline)", release_stripped),
        ("`dist` build: stripped, fat LTO, one codegen unit (x86_64, glibc)", size(dist)),
    ]
    for triple, label in (("x86_64-unknown-linux-musl", "x86_64, static (musl)"),
                          ("aarch64-unknown-linux-musl", "aarch64, static (musl)")):
        n = size(os.path.join(target, triple, "dist/skiff"))
        if n is not None:
            rows.append((f"`dist` build, {label}: what scripts/release.sh ships", n))

    lines = ["| binary | size | ÷ stripped release | budget 20 MiB |", "|---|---:|---:|---|"]
    for label, n in rows:
        holds = "**yes**" if n <= BUDGET else "**no**"
        budget = holds if label.startswith("`dist`") else ""
        lines.append(f"| {label} | {mib(n)} | {n / release_stripped:.2f}× | {budget} |")
    parts, why = bloat_parts(target)
    if parts:
        lines += ["", f"What each part costs: code (`.text`) of the release build by crate, from cargo-bloat "
                      f"({mib(parts['text'])} of code in all):", "",
                  "| part | code | share |", "|---|---:|---:|"]
        for name, n in sorted(parts["parts"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {mib(n)} | {100 * n / parts['text']:.0f}% |")
    else:
        lines += ["", f"(No split by crate: {why}.)"]
    table = "\n".join(lines) + "\n"
    print(table)

    dist_ok = all(n <= BUDGET for label, n in rows if label.startswith("`dist`"))
    if not args.no_write:
        section = (f"{HEADING}\n\nMeasured {started:%Y-%m-%d %H:%M} UTC on {bench.machine()}.\n\n"
                   "`bench/run.sh --size` (or, built, `python3 bench/size.py`). The budget is 20 MiB for what "
                   "users install; the dist profile and the wasmtime features skiff leaves out are in the "
                   "root Cargo.toml.\n\n" + table)
        bench.write_section(HEADING, section)
    if not dist_ok:
        log("over budget")
        sys.exit(1)


if __name__ == "__main__":
    main()
