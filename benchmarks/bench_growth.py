#!/usr/bin/env python3
"""Growth of a fresh store, one insert at a time, every insert timed.

Inserts ``--keys`` random 16-byte keys with 100-byte values (sizes set by
``--key-size`` and ``--value-size``) into a fresh store on ``--dir``
(default ``/dev/shm``), timing each ``db[k] = v`` on its own with
``time.perf_counter_ns``, and prints per backend: throughput, the p50, p99
and p99.9 single-insert latencies, the longest single insert, and the
file's bytes per payload byte (file size over keys * (key + value bytes),
after the last insert, before close). The timer's own cost (~60 ns) is in
every figure.

The backends run one after the other in one process: dbm_shm, dbm.gnu
(without its own fast mode: 'nf', no sync per write), and LMDB (one write
transaction per insert, ``sync=False``) where importable. Backends that
cannot be imported are skipped with a note. Run it with the interpreter of
``benchmarks/setup_peers.sh``::

    nice .venv-bench/bin/python benchmarks/bench_growth.py --keys 10000000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_KEYS = 10_000_000
LMDB_MAP_SIZE = 1 << 36


def gen_keys(n: int, key_size: int, seed: int) -> list[bytes]:
    """n distinct random keys (random bytes; duplicates are vanishingly rare at 16 bytes)."""
    import random
    rnd = random.Random(seed)
    blob = rnd.randbytes(n * key_size)
    return [blob[i:i + key_size] for i in range(0, n * key_size, key_size)]


#: The clock each insert is timed with: wall time, or (``--clock cpu``) the
#: CPU time of the inserting thread, which leaves out the time the
#: scheduler gave to other processes (on shared cores, a throttled or
#: preempted insert shows a wall-clock stall of its own making).
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}
clock = CLOCKS["wall"]


def timed_inserts(setitem: Callable[[bytes, bytes], Any], keys: Sequence[bytes],
                  value: bytes) -> tuple[array, float]:
    """Per-insert latencies (ns, by ``clock``) and the wall time of the whole loop (s)."""
    lat = array("q", bytes(8 * len(keys)))
    pc = clock
    wall_start = time.perf_counter_ns()
    gc.disable()
    i = 0
    for k in keys:
        t0 = pc()
        setitem(k, value)
        lat[i] = pc() - t0
        i += 1
    wall = (time.perf_counter_ns() - wall_start) / 1e9
    gc.enable()
    return lat, wall


def summary(name: str, lat: array, wall: float, fsize: int, payload: int) -> dict[str, Any]:
    s = sorted(lat)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, int(p * n))] / 1000.0
    slow = sum(1 for x in s if x > 5_000_000)
    return {"name": name, "n": n, "kops": n / wall / 1000.0, "p50": q(0.50), "p99": q(0.99),
            "p999": q(0.999), "max": s[-1] / 1000.0, "over5ms": slow, "bpp": fsize / payload}


def run_dbm_shm(path: str, keys: Sequence[bytes], value: bytes) -> tuple[array, float, int]:
    import dbm_shm
    db = dbm_shm.open(os.path.join(path, "growth.dshm"), "n")
    try:
        lat, wall = timed_inserts(db.__setitem__, keys, value)
        fsize = os.path.getsize(os.path.join(path, "growth.dshm"))
    finally:
        db.close()
    return lat, wall, fsize


def run_gdbm(path: str, keys: Sequence[bytes], value: bytes) -> tuple[array, float, int]:
    import dbm.gnu
    f = os.path.join(path, "growth.gdbm")
    db = dbm.gnu.open(f, "nf")
    try:
        lat, wall = timed_inserts(db.__setitem__, keys, value)
        db.sync()
        fsize = os.path.getsize(f)
    finally:
        db.close()
    return lat, wall, fsize


def run_lmdb(path: str, keys: Sequence[bytes], value: bytes) -> tuple[array, float, int]:
    import lmdb
    d = os.path.join(path, "growth.lmdb")
    env = lmdb.open(d, map_size=LMDB_MAP_SIZE, sync=False, metasync=False, writemap=True)

    def put(k: bytes, v: bytes) -> None:
        with env.begin(write=True) as txn:
            txn.put(k, v)
    try:
        lat, wall = timed_inserts(put, keys, value)
        env.sync(True)
        fsize = os.path.getsize(os.path.join(d, "data.mdb"))
        # LMDB's file may be sparse up to map_size: count what it holds.
        st = os.stat(os.path.join(d, "data.mdb"))
        fsize = min(fsize, st.st_blocks * 512)
    finally:
        env.close()
    return lat, wall, fsize


BACKENDS: dict[str, Callable[[str, Sequence[bytes], bytes], tuple[array, float, int]]] = {
    "dbm_shm": run_dbm_shm, "dbm.gnu": run_gdbm, "lmdb": run_lmdb,
}


def render(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | keys | inserts/s | p50 µs | p99 µs | p99.9 µs | max µs | inserts > 5 ms "
            "| file bytes / payload byte |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['name']} | {r['n']:,} | {r['kops'] * 1000:,.0f} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {r['p999']:.2f} | {r['max']:,.0f} | {r['over5ms']} | "
                     f"{r['bpp']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--keys", type=int, default=DEFAULT_KEYS, help="keys to insert (default 10,000,000)")
    p.add_argument("--key-size", type=int, default=16)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default="/dev/shm", help="where the files go (a fresh subdirectory)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="time each insert by wall time (default) or the thread's CPU time")
    p.add_argument("--slowest", type=int, default=0,
                   help="also list the N slowest inserts of each backend (insert number, µs)")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                   default=list(BACKENDS), help="comma-separated: " + ",".join(BACKENDS))
    args = p.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    keys = gen_keys(args.keys, args.key_size, args.seed)
    value = bytes(range(256)) * (args.value_size // 256 + 1)
    value = value[:args.value_size]
    payload = args.keys * (args.key_size + args.value_size)
    print(f"# bench_growth: {args.keys:,} keys of {args.key_size} bytes, values of "
          f"{args.value_size} bytes, in {args.dir}; python {sys.version.split()[0]}; "
          f"each insert timed by {args.clock} clock")
    rows = []
    for name in args.only:
        run = BACKENDS[name]
        root = tempfile.mkdtemp(prefix="bench-growth-", dir=args.dir)
        try:
            lat, wall, fsize = run(root, keys, value)
        except ImportError as e:
            print(f"# {name}: skipped ({e})")
            continue
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append(summary(name, lat, wall, fsize, payload))
        if args.slowest:
            worst = sorted(range(len(lat)), key=lat.__getitem__)[-args.slowest:][::-1]
            print(f"# {name}: slowest inserts (number: µs): "
                  + ", ".join(f"{i:,}: {lat[i] / 1000:,.0f}" for i in worst))
        del lat
        print(f"# {name}: done in {args.keys / rows[-1]['kops'] / 1000:.1f} s", flush=True)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
