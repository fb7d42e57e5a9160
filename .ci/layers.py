#!/usr/bin/env python3
"""Check that the C files of csrc/ call and include each other in layers.

Each csrc/*.c is compiled on its own to an object (gcc -c, the project's
flags from csrc/ffi_build.py, no Python headers), and `nm` lists the
symbols each object defines and the ones it needs. File A depends on file
B when A needs a symbol B defines. The script prints the layers it finds
(a file's layer is one above the highest layer it depends on) and exits
1 if the graph has a cycle, naming it. There is no allowlist.

It also fails if a .c file includes another .c file.

Headers: every `#include "..."` line of csrc/*.c and csrc/*.h is read.
A private header dshm_X.h belongs to dshm_X.c and has its layer; a header
with no .c of its name (dshm_base.h, dshm_layout.h, the public dbm_shm.h)
is a base header, below every layer. The script fails when a file
includes a header of a higher layer or of another file of the same layer
(sideways), when a base header includes a layer's header, when an include
names no file of csrc/, when the includes form a cycle, and when a
header declares a function or variable that another file defines (the
prototype of dshm_X.c's function belongs in dshm_X.h; a private base
header declares none).

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
INCLUDE_Q = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
#: Base headers that declare the public API (defined across the layers).
PUBLIC_HEADERS = {"dbm_shm.h", "cdef.h"}
#: A declaration at file scope: an extern variable or a function prototype.
DECL_EXTERN = re.compile(r'^extern\b[^;]*?\b(\w+)\s*(?:\[[^\]]*\])?\s*;', re.M)
DECL_FUNC = re.compile(r'^(?!static\b|typedef\b|extern\b|struct\b|union\b|enum\b|#)'
                       r'[A-Za-z_][\w \t*]*?[\s*](\w+)\s*\(', re.M)


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


def strip_comments(text: str) -> str:
    text = re.sub(r'/\*.*?\*/', lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text, flags=re.S)
    return re.sub(r'//[^\n]*', '', text)


def header_owner(name: str, sources: List[str]) -> str:
    """The .c a header belongs to (dshm_X.h -> dshm_X.c), or "" (a base header)."""
    c = name[:-2] + ".c" if name.endswith(".h") else ""
    return c if c in sources else ""


def include_graph(csrc: str) -> tuple[Dict[str, Set[str]], List[str]]:
    """The quoted includes of every csrc/*.c and *.h ({file: headers}), and
    what is wrong with them before anything is compiled: an include that
    names no file of csrc/, a cycle."""
    errors: List[str] = []
    files = sorted(f for f in os.listdir(csrc) if f.endswith((".c", ".h")))
    includes: Dict[str, List[str]] = {}
    for f in files:
        with open(os.path.join(csrc, f)) as fh:
            includes[f] = [i for i in INCLUDE_Q.findall(strip_comments(fh.read())) if not i.endswith(".c")]
    for f in files:
        for inc in includes[f]:
            if inc not in includes:
                errors.append(f"{f} includes \"{inc}\", which is not a file of csrc/")
    graph = {f: {i for i in includes[f] if i in includes} for f in files}
    cycle = find_cycle(graph)
    if cycle:
        errors.append("include cycle: " + " -> ".join(cycle))
    return graph, errors


def check_headers(csrc: str, graph: Dict[str, Set[str]], sources: List[str], level: Dict[str, int],
                  owner: Dict[str, str]) -> List[str]:
    """The header rule, once the layers are known: what is wrong (one line
    each), or []."""
    errors: List[str] = []
    files = sorted(graph)

    def where(f: str) -> str:
        return f[:-2] + ".c" if f.endswith(".c") else header_owner(f, sources)

    def lv(m: str) -> str:
        return f"layer {level[m]}" if m else "base"

    for f in files:
        mf = where(f)
        if f.endswith(".c") and f not in level:
            continue
        for inc in sorted(graph[f]):
            mi = where(inc)
            if not mi or mi == mf:
                continue
            if not mf:
                errors.append(f"{f} (a base header) includes {inc} ({lv(mi)} header of {mi}): "
                              "a base header includes only base headers")
            elif level[mi] > level[mf]:
                errors.append(f"{f} ({lv(mf)}) includes {inc} ({lv(mi)}): a header of a higher layer")
            elif level[mi] == level[mf]:
                errors.append(f"{f} ({lv(mf)}) includes {inc} ({lv(mi)}): a header of another file "
                              "of the same layer (sideways)")
    for f in files:
        if not f.endswith(".h") or f in PUBLIC_HEADERS:
            continue
        with open(os.path.join(csrc, f)) as fh:
            text = strip_comments(fh.read())
        mine = header_owner(f, sources)
        for name in sorted(set(DECL_EXTERN.findall(text)) | set(DECL_FUNC.findall(text))):
            if name in owner and owner[name] != mine:
                errors.append(f"{f} declares {name}, defined in {owner[name]}: its prototype belongs in "
                              f"{owner[name][:-2]}.h" + ("" if mine else " (a base header declares none)"))
    return errors


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
    incs, errors = include_graph(csrc)
    for e in errors:
        print(f"layers: {e}", file=sys.stderr)
    if errors:
        return 1
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
    errors = check_headers(csrc, incs, sources, level, owner)
    for e in errors:
        print(f"layers: {e}", file=sys.stderr)
    if not errors:
        print("headers: each file includes only base headers, its own and those of lower layers; no include cycle")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
