#!/usr/bin/env python3
"""Atomic batches against single writes, and the wake-up latency of ``wait``.

Two measurements, each printed as a side-by-side table from one run:

* **batch**: N keys (16-byte keys, 100-byte values, deterministic from
  ``--seed``) written into a fresh store (a) one ``db[k] = v`` at a time,
  (b) inside one ``with db.batch():`` block, (c) with one
  ``db.update(mapping)``, and (d) in batches of ``--chunk`` keys. Peers
  that have transactions run the same writes one transaction per write
  and one transaction for all (LMDB; SQLite through ``sqlitedict`` /
  ``dbm.sqlite3`` when importable). Best of ``--repeat`` rounds, as writes
  per second with the ratio against dbm_shm's single writes.

* **wake-up**: a writer process stores the ``time.monotonic_ns()`` of the
  moment it commits into a key, ``--wakes`` times, pausing between writes;
  a waiter process sleeps in ``db.wait(since=...)`` and, woken, subtracts
  that stamp from its own clock (CLOCK_MONOTONIC is one clock for every
  process of the machine). The same exchange is timed with a waiter that
  polls ``commit_id()`` every millisecond (what one does without ``wait``)
  and with an ``os.pipe`` (the kernel's own wake-up, a lower bound).
  Median and 99th percentile in microseconds, over the wake-ups (two
  writes that land before the waiter sleeps again make one wake-up).

Run::

    python benchmarks/bench_batch_wait.py            # full
    python benchmarks/bench_batch_wait.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import dbm_shm

Pairs = Tuple[List[bytes], List[bytes]]


def make_pairs(n: int, seed: int) -> Pairs:
    rnd = random.Random(seed)
    keys = [rnd.randbytes(16) for _ in range(n)]
    values = [rnd.randbytes(100) for _ in range(n)]
    return keys, values


def best_rate(rounds: int, n: int, body: Callable[[], None], setup: Callable[[], None],
              teardown: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(rounds):
        setup()
        t = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - t)
        teardown()
    return n / best


def bench_batches(tmp: str, pairs: Pairs, rounds: int, chunk: int) -> List[Tuple[str, float]]:
    keys, values = pairs
    n = len(keys)
    path = os.path.join(tmp, "batch.shm")
    state: Dict[str, Any] = {}

    def open_new() -> None:
        state["db"] = dbm_shm.open(path, "n")

    def close() -> None:
        db = state.pop("db")
        assert len(db) == n, "every key stored"
        db.close()

    def single() -> None:
        db = state["db"]
        for k, v in zip(keys, values):
            db[k] = v

    def one_batch() -> None:
        db = state["db"]
        with db.batch():
            for k, v in zip(keys, values):
                db[k] = v

    # The mappings are the caller's data: built before the clock starts.
    whole = dict(zip(keys, values))
    parts = [dict(zip(keys[i:i + chunk], values[i:i + chunk])) for i in range(0, n, chunk)]

    def update() -> None:
        state["db"].update(whole)

    def chunks() -> None:
        db = state["db"]
        for part in parts:
            db.update(part)

    rows = [
        ("dbm_shm, one write at a time", best_rate(rounds, n, single, open_new, close)),
        ("dbm_shm, one `with db.batch()`", best_rate(rounds, n, one_batch, open_new, close)),
        ("dbm_shm, one `db.update(dict)`", best_rate(rounds, n, update, open_new, close)),
        (f"dbm_shm, `update` per {chunk} keys", best_rate(rounds, n, chunks, open_new, close)),
    ]
    rows += bench_lmdb(tmp, pairs, rounds)
    rows += bench_sqlite(tmp, pairs, rounds)
    return rows


def bench_lmdb(tmp: str, pairs: Pairs, rounds: int) -> List[Tuple[str, float]]:
    try:
        import lmdb
    except ImportError:
        print("  (lmdb not importable: skipped)")
        return []
    keys, values = pairs
    n = len(keys)
    state: Dict[str, Any] = {}

    def open_new() -> None:
        path = os.path.join(tmp, "lmdb")
        shutil.rmtree(path, ignore_errors=True)
        state["env"] = lmdb.open(path, map_size=1 << 34, sync=False, metasync=False)

    def close() -> None:
        state.pop("env").close()

    def per_op() -> None:
        env = state["env"]
        for k, v in zip(keys, values):
            with env.begin(write=True) as txn:
                txn.put(k, v)

    def one_txn() -> None:
        with state["env"].begin(write=True) as txn:
            for k, v in zip(keys, values):
                txn.put(k, v)

    return [("lmdb, one txn per write", best_rate(rounds, n, per_op, open_new, close)),
            ("lmdb, one txn for all", best_rate(rounds, n, one_txn, open_new, close))]


def bench_sqlite(tmp: str, pairs: Pairs, rounds: int) -> List[Tuple[str, float]]:
    try:
        import sqlitedict
    except ImportError:
        print("  (sqlitedict not importable: skipped)")
        return []
    keys, values = pairs
    n = min(len(keys), 20_000)   # one commit per write is slow: fewer keys
    state: Dict[str, Any] = {}

    def open_new() -> None:
        path = os.path.join(tmp, "sqlite.db")
        if os.path.exists(path):
            os.unlink(path)
        state["db"] = sqlitedict.SqliteDict(path, encode=bytes, decode=bytes, autocommit=False)

    def close() -> None:
        state.pop("db").close()

    def per_op() -> None:
        db = state["db"]
        for k, v in zip(keys[:n], values[:n]):
            db[k] = v
            db.commit()

    def one_commit() -> None:
        db = state["db"]
        for k, v in zip(keys[:n], values[:n]):
            db[k] = v
        db.commit()

    return [(f"sqlitedict, commit per write (N={n})", best_rate(rounds, n, per_op, open_new, close)),
            (f"sqlitedict, one commit (N={n})", best_rate(rounds, n, one_commit, open_new, close))]


# ---------------------------------------------------------------------------
# Wake-up latency


def _writer(path: str, wakes: int, gap: float, ready: Any) -> None:
    db = dbm_shm.open(path, "w")
    ready.wait()
    for _ in range(wakes):
        time.sleep(gap)
        db[b"t"] = str(time.monotonic_ns()).encode()
    db.close()


def _waiter_wait(path: str, wakes: int, out: Any, ready: Any) -> None:
    db = dbm_shm.open(path, "r")
    seen = first = db.commit_id()
    lat: List[int] = []
    ready.set()
    while seen - first < wakes:
        new = db.wait(timeout=10, since=seen)
        now = time.monotonic_ns()
        if new is None:
            break
        # Two writes may land before the waiter sleeps again (it was
        # descheduled): one wake-up then covers both; time it against the
        # later write, and count both as seen.
        lat.append(now - int(db[b"t"]))
        seen = new
    out.send((lat, seen - first))
    db.close()


def _waiter_poll(path: str, wakes: int, out: Any, ready: Any) -> None:
    db = dbm_shm.open(path, "r")
    seen = first = db.commit_id()
    lat: List[int] = []
    ready.set()
    deadline = time.monotonic() + 60
    while seen - first < wakes and time.monotonic() < deadline:
        c = db.commit_id()
        if c == seen:
            time.sleep(0.001)
            continue
        now = time.monotonic_ns()
        seen = c
        lat.append(now - int(db[b"t"]))
    out.send((lat, seen - first))
    db.close()


def _pipe_writer(wfd: int, wakes: int, gap: float, ready: Any) -> None:
    ready.wait()
    for _ in range(wakes):
        time.sleep(gap)
        os.write(wfd, str(time.monotonic_ns()).encode().ljust(24))


def _pipe_waiter(rfd: int, wakes: int, out: Any, ready: Any) -> None:
    lat: List[int] = []
    ready.set()
    for _ in range(wakes):
        data = os.read(rfd, 24)
        lat.append(time.monotonic_ns() - int(data))
    out.send((lat, wakes))


def wake_latency(tmp: str, wakes: int, gap: float, how: str) -> List[int]:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    if how == "pipe":
        rfd, wfd = os.pipe()
        waiter = ctx.Process(target=_pipe_waiter, args=(rfd, wakes, send, ready))
        writer = ctx.Process(target=_pipe_writer, args=(wfd, wakes, gap, ready))
    else:
        path = os.path.join(tmp, f"wake-{how}.shm")
        with dbm_shm.open(path, "n") as db:
            db[b"t"] = b"0"
        target = _waiter_wait if how == "wait" else _waiter_poll
        waiter = ctx.Process(target=target, args=(path, wakes, send, ready))
        writer = ctx.Process(target=_writer, args=(path, wakes, gap, ready))
    waiter.start()
    writer.start()
    lat, seen = recv.recv()
    writer.join()
    waiter.join()
    if how == "pipe":
        os.close(rfd)
        os.close(wfd)
    if seen != wakes:
        raise RuntimeError(f"{how}: {seen} of {wakes} writes seen")
    return lat


def pct(xs: Sequence[int], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="keys written (default 200000)")
    ap.add_argument("--chunk", type=int, default=1000, help="keys per update() in the chunked run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    ap.add_argument("--wakes", type=int, default=2000, help="wake-ups timed per method")
    ap.add_argument("--gap", type=float, default=0.002, help="seconds between the writer's writes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="directory for the files (default: /dev/shm or tmp)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.wakes, args.chunk = 5_000, 1, 50, 500
    base = args.dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    tmp = tempfile.mkdtemp(prefix="bench-batch-", dir=base)
    try:
        print(f"# dbm_shm {dbm_shm.__version__}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, files in {tmp}")
        print(f"\n## Batch writes: N={args.n}, 16 B keys, 100 B values, best of {args.repeat}\n")
        rows = bench_batches(tmp, make_pairs(args.n, args.seed), args.repeat, args.chunk)
        ref = rows[0][1]
        print(f"| {'method':<40} | {'writes/s':>12} | {'vs single':>9} |")
        print(f"|{'-' * 42}|{'-' * 14}:|{'-' * 10}:|")
        for name, rate in rows:
            print(f"| {name:<40} | {rate:>12,.0f} | {rate / ref:>8.2f}x |")
        print(f"\n## Wake-up latency across processes: {args.wakes} writes, {args.gap * 1000:g} ms apart\n")
        print(f"| {'waiter':<34} | {'median us':>9} | {'p99 us':>9} |")
        print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 10}:|")
        for how, label in (("wait", "dbm_shm db.wait() (futex)"),
                           ("poll", "polling commit_id() every 1 ms"),
                           ("pipe", "os.pipe read (kernel lower bound)")):
            lat = wake_latency(tmp, args.wakes, args.gap, how)
            print(f"| {label:<34} | {statistics.median(lat) / 1000:>9.1f} | {pct(lat, 0.99):>9.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
