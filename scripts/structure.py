#!/usr/bin/env python3
"""Draws skiff's structure and checks it has no cycles.

- the crate graph, from `cargo metadata` (workspace crates and the workspace crates each
  depends on);
- inside each library crate, the graph of its top-level modules: module A depends on B when
  A's files name `crate::B` (or `super::B` in A's own file, where `super` is the crate root).

Prints both as indented lists and exits 1 when either has a cycle, naming it.

    scripts/structure.py            # print and check
    scripts/structure.py --quiet    # check only
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_cycle(graph):
    """A cycle of `graph` (node -> set of nodes) as a list of nodes, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def crate_graph():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT
        )
    )
    names = {p["name"] for p in meta["packages"]}
    graph = {}
    for package in meta["packages"]:
        deps = {
            d["name"]
            for d in package["dependencies"]
            if d["name"] in names and d.get("kind") is None
        }
        graph[package["name"]] = deps
    src_dirs = {
        p["name"]: os.path.join(os.path.dirname(p["manifest_path"]), "src")
        for p in meta["packages"]
    }
    return graph, src_dirs


USE = re.compile(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}")
SUPER = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def module_graph(src):
    """Top-level modules of the crate at `src` and which others each names."""
    lib = os.path.join(src, "lib.rs")
    if not os.path.exists(lib):
        return {}
    lib_text = open(lib).read()
    modules = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", lib_text, re.M))
    # `crate::Name` of a name the crate root re-exports (`pub use module::{Name, ...}`) is a
    # use of that module.
    reexported = {}
    for module, names in re.findall(r"^pub use ([a-z_0-9]+)::\{?([^;]*?)\}?;", lib_text, re.M | re.S):
        for name in re.split(r"[\s,]+", names):
            # A list written over several lines splits into empty names at its ends too.
            if name:
                reexported[name.split("::")[-1]] = module
    graph = {m: set() for m in modules}
    for module in modules:
        files = []
        single = os.path.join(src, module + ".rs")
        folder = os.path.join(src, module)
        if os.path.exists(single):
            files.append(single)
        if os.path.isdir(folder):
            for base, _, names in os.walk(folder):
                files += [os.path.join(base, n) for n in names if n.endswith(".rs")]
        for path in files:
            text = open(path).read()
            # Tests may reach anywhere, and comments link anywhere: neither is structure.
            text = text.split("#[cfg(test)]")[0]
            text = re.sub(r"//.*", "", text)
            named = USE.findall(text)
            for group in GROUP.findall(text):
                named += re.split(r"[\s,]+", group)
            if path == single:
                # In a top-level module's own file, `super::` is the crate root.
                named += SUPER.findall(text)
            for used in named:
                used = reexported.get(used, used)
                if used in modules and used != module:
                    graph[module].add(used)
    return graph


def show(title, graph):
    print(title)
    for node in sorted(graph):
        deps = ", ".join(sorted(graph[node])) or "-"
        print(f"  {node} -> {deps}")


def main():
    quiet = "--quiet" in sys.argv
    failed = False
    crates, src_dirs = crate_graph()
    if not quiet:
        show("crates (-> the workspace crates each depends on):", crates)
    cycle = find_cycle(crates)
    if cycle:
        print("crate cycle: " + " -> ".join(cycle), file=sys.stderr)
        failed = True
    for crate in sorted(src_dirs):
        modules = module_graph(src_dirs[crate])
        if not modules:
            continue
        if not quiet:
            show(f"modules of {crate}:", modules)
        cycle = find_cycle(modules)
        if cycle:
            print(f"module cycle in {crate}: " + " -> ".join(cycle), file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
