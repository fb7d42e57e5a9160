#!/usr/bin/env python3
"""What the commit protocol against power loss costs, on a disk file.

One run: each workload runs in a fresh child process for each build under
test (``--baseline DIR``: another checkout, built in place, whose
``dbm_shm`` the child imports instead; by default only this checkout) and
for ``dbm.gnu`` (an interpreter that has it: ``--gnu-python``, by default
``/usr/bin/python3`` when it imports ``dbm.gnu``), on files in ``--dir``
(default: a temporary directory beside this checkout, so on its disk, not
tmpfs). The best of ``--repeat`` rounds is printed as operations per
second, with ratios to the baseline and to ``dbm.gnu``.

Workloads (``--n`` keys of 16 bytes, values of 100 bytes):

* ``put-new``: puts of new keys into a store made with ``'n'``;
* ``put-after-sync``: overwrites of every key, right after a ``sync()``
  (each bucket and the directory are copied once in the period);
* ``put-sync-1000``: overwrites with a ``sync()`` every 1,000 puts;
* ``put-s``: puts on a store opened ``'cs'`` (each one durable when it
  returns), ``--n-sync`` of them;
* ``get``: gets of every key in random order, after a ``sync()``.

``--strace`` counts the flushes (``fsync``, ``fdatasync``, ``msync``) of
one ``'s'`` put and of one ``sync()`` with strace, where installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent.parent

_CHILD = r'''
import json, os, random, sys, time
kind, workload, path, n, n_sync = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if kind == "gnu":
    import dbm.gnu as m
    def op(p, flag):
        return m.open(p, {"n": "nf", "w": "wf", "cs": "cs", "r": "r"}[flag])
    def sync(d):
        d.sync()
else:
    import dbm_shm as m
    def op(p, flag):
        return m.open(p, flag)
    def sync(d):
        d.sync()
rng = random.Random(7)
keys = [b"%016x" % rng.getrandbits(64) for _ in range(n)]
val = b"v" * 100
def timed(fn, count):
    t = time.perf_counter(); fn(); return count / (time.perf_counter() - t)
d = op(path, "n")
if workload == "put-new":
    def f():
        for k in keys:
            d[k] = val
    r = timed(f, n)
else:
    for k in keys:
        d[k] = val
    sync(d)
    if workload == "put-after-sync":
        def f():
            for k in keys:
                d[k] = b"w" * 100
        r = timed(f, n)
    elif workload == "put-sync-1000":
        def f():
            for i, k in enumerate(keys):
                d[k] = b"w" * 100
                if i % 1000 == 999:
                    sync(d)
        r = timed(f, n)
    elif workload == "put-s":
        d.close()
        d = op(path, "cs")
        ks = keys[:n_sync]
        def f():
            for k in ks:
                d[k] = b"s" * 100
        r = timed(f, n_sync)
    elif workload == "get":
        order = keys[:]
        random.Random(3).shuffle(order)
        def f():
            for k in order:
                d[k]
        r = timed(f, n)
d.close()
print(json.dumps(r))
'''

WORKLOADS = ["put-new", "put-after-sync", "put-sync-1000", "put-s", "get"]


def gnu_python(arg: Optional[str]) -> Optional[str]:
    cand = arg or "/usr/bin/python3"
    try:
        ok = subprocess.run([cand, "-c", "import dbm.gnu"], capture_output=True).returncode == 0
    except OSError:
        return None
    return cand if ok else None


def run_one(python: str, kind: str, pythonpath: Optional[Path], workload: str, d: Path,
            n: int, n_sync: int) -> float:
    path = d / f"{kind}-{workload}"
    for p in d.glob(f"{kind}-{workload}*"):
        p.unlink()
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run([python, "-c", _CHILD, kind, workload, str(path), str(n), str(n_sync)],
                         capture_output=True, env=env, check=True, timeout=3600)
    return float(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def flushes(pythonpath: Path, d: Path) -> Dict[str, int]:
    """Flush system calls of one 's' put and of one sync(), by strace."""
    code = r'''
import os, sys, dbm_shm
p = sys.argv[1]
with dbm_shm.open(p, "n") as db:
    for i in range(1000):
        db[b"k%d" % i] = b"v" * 100
    db.sync()
    db[b"warm"] = b"x"
    os.write(2, b"MARK-S\n")
    db[b"k1"] = b"changed"
    os.write(2, b"MARK-SYNC\n")
    db.sync()
    os.write(2, b"MARK-END\n")
db = dbm_shm.open(p, "ws")
os.write(2, b"MARK-SPUT\n")
db[b"k2"] = b"changed"
os.write(2, b"MARK-SPUT-END\n")
'''
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    r = subprocess.run(["strace", "-f", "-e", "trace=fsync,fdatasync,msync,write", sys.executable, "-c", code,
                        str(d / "strace-db")], capture_output=True, env=env, timeout=600)
    lines = r.stderr.decode().splitlines()
    counts: Dict[str, int] = {}
    region = None
    for line in lines:
        if "MARK-" in line and "write(2" in line:
            region = line.split("MARK-")[1].split("\\n")[0]
            continue
        if region and any(c + "(" in line for c in ("fsync", "fdatasync", "msync")):
            counts[region] = counts.get(region, 0) + 1
    return {"sync()": counts.get("SYNC", 0), "'s' put": counts.get("SPUT", 0)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--n-sync", type=int, default=2_000, help="puts of the 's' workload")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout (built in place) to compare with")
    ap.add_argument("--gnu-python", help="an interpreter with dbm.gnu")
    ap.add_argument("--dir", type=Path, help="where the files go (default: beside this checkout)")
    ap.add_argument("--strace", action="store_true", help="count the flushes of a commit with strace")
    args = ap.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix=".bench-commit-", dir=args.dir or HERE))
    try:
        builds = [("dbm_shm", HERE)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
        gnu = gnu_python(args.gnu_python)
        cols = [b for b, _ in builds] + (["dbm.gnu"] if gnu else [])
        res: Dict[str, Dict[str, float]] = {w: {} for w in WORKLOADS}
        for w in WORKLOADS:
            for _ in range(args.repeat):   # rounds interleaved: the builds see the same machine
                for name, path in builds:
                    v = run_one(sys.executable, "shm", path, w, d, args.n, args.n_sync)
                    res[w][name] = max(res[w].get(name, 0.0), v)
                if gnu:
                    v = run_one(gnu, "gnu", None, w, d, args.n, args.n_sync)
                    res[w]["dbm.gnu"] = max(res[w].get("dbm.gnu", 0.0), v)
        print(f"ops/s, best of {args.repeat}; n={args.n}, 's' puts={args.n_sync}; files in {d.parent}")
        ratios = [c for c in cols if c != "dbm_shm"]   # dbm_shm's ratio to each
        print(f"{'workload':16}" + "".join(f"{c:>14}" for c in cols) + "".join(f"{'vs ' + c:>14}" for c in ratios))
        for w in WORKLOADS:
            print(f"{w:16}" + "".join(f"{res[w].get(c, 0):>14,.0f}" for c in cols)
                  + "".join(f"{res[w]['dbm_shm'] / res[w][c]:>13.2f}x" for c in ratios))
        if args.strace and shutil.which("strace"):
            print("flush system calls (strace):", flushes(HERE, d))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
