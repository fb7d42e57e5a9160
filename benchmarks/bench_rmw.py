#!/usr/bin/env python3
"""Read-modify-write across processes: dbm_shm beside the peers (issue 21).

Two workloads, each run by one process and by two processes contending for
the same keys, every backend in this one run (so the ratios compare like
with like):

* ``incr``: add 1 to one shared counter, ``--n`` times per process;
* ``txn10``: one transaction that reads 10 shared counters and writes each
  back plus 1, ``--n-txn`` times per process.

Each backend is driven the way its users make such an update atomic across
processes:

==============  ==============================================================
backend         incr / txn10
==============  ==============================================================
dbm_shm         ``db.incr(k)`` (one C call) / ``with db.transaction() as tx``
dbm.gnu         ``fcntl.flock`` on a lock file, ``dbm.gnu.open(path, 'wu')``,
                read, write, close, unlock (gdbm caches in the process: a
                handle kept open would not see the other process's writes)
lmdb            one write transaction (``get`` then ``put``), ``sync=False``
sqlite3         ``BEGIN IMMEDIATE`` ... ``COMMIT`` (WAL, ``synchronous=OFF``)
diskcache       ``Cache.incr`` / ``with cache.transact()`` (SQLite underneath)
==============  ==============================================================

Nothing syncs to disk (as dbm_shm's default). The files live in ``--dir``
(default ``/dev/shm``, so the file system is RAM for every backend). After
each run the counters are checked: N x processes exactly (a backend that
loses an update is reported as FAILED). Reported: operations (increments, or
transactions) per second over all processes, and ratios against ``dbm.gnu``.

Run it with the interpreter from ``benchmarks/setup_peers.sh``::

    bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/bench_rmw.py
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import multiprocessing
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

KEYS10 = [b"c%02d" % i for i in range(10)]
COUNTER = b"counter"

Op = Callable[[], None]


class Unavailable(Exception):
    pass


# ---------------------------------------------------------------------------
# Backends: make(path) -> (incr_op, txn10_op, read(key) -> int, close)

def make_dbm_shm(path: str) -> Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]:
    import dbm_shm
    db = dbm_shm.open(path, "c")

    def incr() -> None:
        db.incr(COUNTER)

    def txn10() -> None:
        with db.transaction() as tx:
            for k in KEYS10:
                tx[k] = b"%d" % (int(tx.get(k, b"0")) + 1)

    return incr, txn10, lambda k: int(db.get(k, b"0")), db.close


def make_gdbm(path: str) -> Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]:
    try:
        import dbm.gnu as gnu
    except ImportError as e:
        raise Unavailable(f"dbm.gnu: {e}") from None
    if not os.path.exists(path):
        gnu.open(path, "c").close()
    lockfd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)

    def incr() -> None:
        fcntl.flock(lockfd, fcntl.LOCK_EX)
        try:
            db = gnu.open(path, "wu")
            db[COUNTER] = b"%d" % (int(db.get(COUNTER, b"0")) + 1)
            db.close()
        finally:
            fcntl.flock(lockfd, fcntl.LOCK_UN)

    def txn10() -> None:
        fcntl.flock(lockfd, fcntl.LOCK_EX)
        try:
            db = gnu.open(path, "wu")
            for k in KEYS10:
                db[k] = b"%d" % (int(db.get(k, b"0")) + 1)
            db.close()
        finally:
            fcntl.flock(lockfd, fcntl.LOCK_UN)

    def read(k: bytes) -> int:
        with gnu.open(path, "ru") as db:
            return int(db.get(k, b"0"))

    return incr, txn10, read, lambda: os.close(lockfd)


def make_lmdb(path: str) -> Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]:
    try:
        import lmdb
    except ImportError as e:
        raise Unavailable(f"lmdb: {e}") from None
    env = lmdb.open(path, map_size=1 << 30, subdir=True, sync=False, metasync=False, lock=True)

    def incr() -> None:
        with env.begin(write=True) as txn:
            txn.put(COUNTER, b"%d" % (int(txn.get(COUNTER, b"0")) + 1))

    def txn10() -> None:
        with env.begin(write=True) as txn:
            for k in KEYS10:
                txn.put(k, b"%d" % (int(txn.get(k, b"0")) + 1))

    def read(k: bytes) -> int:
        with env.begin() as txn:
            return int(txn.get(k, b"0"))

    return incr, txn10, read, env.close


def make_sqlite(path: str) -> Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]:
    con = sqlite3.connect(path, isolation_level=None, timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v INTEGER NOT NULL)")
    cur = con.cursor()

    def get(k: bytes) -> int:
        row = cur.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return int(row[0]) if row else 0

    def incr() -> None:
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (COUNTER, get(COUNTER) + 1))
        cur.execute("COMMIT")

    def txn10() -> None:
        cur.execute("BEGIN IMMEDIATE")
        for k in KEYS10:
            cur.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, get(k) + 1))
        cur.execute("COMMIT")

    return incr, txn10, get, con.close


def make_diskcache(path: str) -> Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]:
    try:
        import diskcache
    except ImportError as e:
        raise Unavailable(f"diskcache: {e}") from None
    cache = diskcache.Cache(path, timeout=60)

    def incr() -> None:
        cache.incr(COUNTER)

    def txn10() -> None:
        with cache.transact():
            for k in KEYS10:
                cache[k] = cache.get(k, 0) + 1

    return incr, txn10, lambda k: int(cache.get(k, 0)), cache.close


BACKENDS: Dict[str, Callable[[str], Tuple[Op, Op, Callable[[bytes], int], Callable[[], None]]]] = {
    "dbm_shm": make_dbm_shm,
    "dbm.gnu": make_gdbm,
    "lmdb": make_lmdb,
    "sqlite3": make_sqlite,
    "diskcache": make_diskcache,
}


# ---------------------------------------------------------------------------
# Running

def _worker(name: str, path: str, work: str, n: int, barrier: Any, q: Any) -> None:
    try:
        incr, txn10, _, close = BACKENDS[name](path)
        op = incr if work == "incr" else txn10
        gc.disable()
        barrier.wait()
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        t1 = time.perf_counter()
        close()
        q.put((t0, t1, None))
    except BaseException as e:   # reported to the parent
        q.put((0.0, 0.0, f"{type(e).__name__}: {e}"))


def run(name: str, root: str, work: str, n: int, procs: int) -> float:
    """Operations per second over `procs` processes; checks the counters."""
    d = tempfile.mkdtemp(prefix=f"rmw-{name.replace('.', '')}-", dir=root)
    path = os.path.join(d, "store")
    try:
        incr, txn10, read, close = BACKENDS[name](path)   # create, in the parent
        close()
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(procs)
        q = ctx.Queue()
        ps = [ctx.Process(target=_worker, args=(name, path, work, n, barrier, q)) for _ in range(procs)]
        for p in ps:
            p.start()
        res = [q.get(timeout=3600) for _ in ps]
        for p in ps:
            p.join()
        errs = [e for _, _, e in res if e]
        if errs:
            raise RuntimeError("; ".join(errs))
        took = max(t1 for _, t1, _ in res) - min(t0 for t0, _, _ in res)
        _, _, read, close = BACKENDS[name](path)
        keys = [COUNTER] if work == "incr" else KEYS10
        got = [read(k) for k in keys]
        close()
        if any(g != n * procs for g in got):
            raise RuntimeError(f"lost updates: counters {got[:3]}..., expected {n * procs}")
        return n * procs / took
    finally:
        shutil.rmtree(d, ignore_errors=True)


def fmt(x: Optional[float]) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="incr per process (default 20,000)")
    ap.add_argument("--n-txn", type=int, default=5000, help="10-key transactions per process (default 5,000)")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    ap.add_argument("--only", default="", help="comma-separated backends (default: all)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 500 --n-txn 200")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.n_txn = 500, 200
    names = [b for b in BACKENDS if not a.only or b in a.only.split(",")]
    cols = [("incr", 1), ("incr", 2), ("txn10", 1), ("txn10", 2)]
    table: Dict[str, Dict[Tuple[str, int], Optional[float]]] = {}
    notes: List[str] = []
    failed = False
    for name in names:
        row: Dict[Tuple[str, int], Optional[float]] = {}
        for work, procs in cols:
            try:
                row[(work, procs)] = run(name, a.dir, work, a.n if work == "incr" else a.n_txn, procs)
            except Unavailable as e:
                notes.append(f"{name}: skipped ({e})")
                row = {}
                break
            except Exception as e:
                notes.append(f"{name} {work} x{procs}: FAILED ({e})")
                row[(work, procs)] = None
                failed = True
        if row:
            table[name] = row
        print(f"  {name} done", file=sys.stderr, flush=True)
    ref = table.get("dbm.gnu", {})
    head = ["backend"] + [f"{w} ×{p} (ops/s)" for w, p in cols] + [f"{w} ×{p} vs dbm.gnu" for w, p in cols]
    print(f"Read-modify-write, ops/s over all processes (incr: {a.n:,}/process; txn10: {a.n_txn:,} "
          f"10-key transactions/process); files in {a.dir}; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, row in table.items():
        vals = [fmt(row.get(c)) for c in cols]
        rat = []
        for c in cols:
            v, r = row.get(c), ref.get(c)
            rat.append(f"{v / r:.1f}×" if v and r else "—")
        print(f"| {name} | " + " | ".join(vals + rat) + " |")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
