#!/usr/bin/env python3
"""Check that the C files of csrc/ call each other without a cycle.

Each csrc/*.c is compiled on its own to an object (gcc -c, the project's
flags from csrc/ffi_build.py, no Python headers), and `nm` lists the
symbols each object defines and the ones it needs. File A depends on file
B when A needs a symbol B defines. The script prints the layers it finds
(a file's layer is one above the highest layer it depends on) and exits
1 if the graph has a cycle, naming it. There is no allowlist.

It also fails if a .c file includes another .c file.

Usage: python .ci/layers.py [REPO]   (default: the repository holding
this script). Needs gcc (or $CC) and nm.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Set

INCLUDE_C = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+\.c)[>"]', re.M)


def project_cflags(csrc: str) -> List[str]:
    """The CFLAGS list of csrc/ffi_build.py, read without importing it."""
    with open(os.path.join(csrc, "ffi_build.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CFLAGS"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("layers: no CFLAGS list in csrc/ffi_build.py")


def symbols(obj: str, nm: str) -> tuple[Set[str], Set[str]]:
    """(defined global symbols, undefined symbols) of an object file."""
    out = subprocess.run([nm, "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind.isupper() and kind not in ("W", "V"):
            defined.add(name)
    return defined, undefined


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of the graph as a list of nodes (first == last), or []."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> List[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return []


def layers(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    memo: Dict[str, int] = {}

    def layer(n: str) -> int:
        if n not in memo:
            memo[n] = 1 + max((layer(m) for m in graph[n]), default=-1)
        return memo[n]

    for n in graph:
        layer(n)
    return memo


def main(argv: List[str]) -> int:
    repo = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    csrc = os.path.join(repo, "csrc")
    cc = os.environ.get("CC", "gcc")
    nm = os.environ.get("NM", "nm")
    for tool in (cc, nm):
        if not shutil.which(tool):
            print(f"layers: {tool} not found", file=sys.stderr)
            return 2
    sources = sorted(f for f in os.listdir(csrc) if f.endswith(".c"))
    failed = False
    for src in sources:
        with open(os.path.join(csrc, src)) as f:
            for inc in INCLUDE_C.findall(f.read()):
                print(f"layers: {src} includes {inc}: a .c file may not include another", file=sys.stderr)
                failed = True
    flags = project_cflags(csrc)
    defs: Dict[str, Set[str]] = {}
    needs: Dict[str, Set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            obj = os.path.join(tmp, src[:-2] + ".o")
            subprocess.run([cc, *flags, "-I", csrc, "-c", os.path.join(csrc, src), "-o", obj], check=True)
            defs[src], needs[src] = symbols(obj, nm)
    owner: Dict[str, str] = {}
    for src, names in defs.items():
        for name in names:
            if name in owner:
                print(f"layers: {name} is defined in both {owner[name]} and {src}", file=sys.stderr)
                failed = True
            owner[name] = src
    graph = {src: {owner[n] for n in needs[src] if n in owner and owner[n] != src} for src in sources}
    cycle = find_cycle(graph)
    if cycle:
        print("layers: call cycle among the C files: " + " -> ".join(cycle), file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            via = sorted(n for n in needs[a] if owner.get(n) == b)
            print(f"  {a} -> {b}: {', '.join(via)}", file=sys.stderr)
        return 1
    level = layers(graph)
    print("layers (a file calls only files below it):")
    for lv in range(max(level.values(), default=-1), -1, -1):
        for s in sorted(s for s in sources if level[s] == lv):
            print(f"  {lv}  {s:<16} -> {', '.join(sorted(graph[s])) or '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
