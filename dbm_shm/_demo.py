"""``dbm-shm demo``: one writer and N reader processes share one store.

The writer updates prices in a loop; each reader reads random symbols,
checks every value (a crc32 over it) and that no price goes back in time,
and the table at the end shows each process's throughput.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
import zlib
from typing import Any, Dict, List, Optional

__all__ = ["DemoFailed", "DemoUsageError", "run"]


class DemoUsageError(ValueError):
    """A bad argument (the CLI exits with status 2)."""


class DemoFailed(RuntimeError):
    """A demo process failed or a reader saw an inconsistent value."""


_DEMO_TICKERS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "BRK.B", "JPM", "V",
                 "UNH", "XOM", "JNJ", "WMT", "MA", "PG", "HD", "CVX", "KO", "PEP")
_DEMO_VALUE = struct.Struct("<dQI")  # price, sequence number, crc32 of the first 16 bytes


def _demo_symbols(n: int) -> List[bytes]:
    names = list(_DEMO_TICKERS[:n])
    names += [f"SYM{i:04d}" for i in range(len(names), n)]
    return [s.encode() for s in names]


def _demo_pack(price: float, seq: int) -> bytes:
    head = struct.pack("<dQ", price, seq)
    return head + struct.pack("<I", zlib.crc32(head))


def _demo_writer(path: str, symbols: List[bytes], seconds: float, go: Any, ready: Any,
                 results: Any) -> None:
    import dbm_shm as core

    rnd = random.Random(42)
    prices = {s: 100.0 + i for i, s in enumerate(symbols)}
    seq = 0
    ops = 0
    with core.open(path, "w") as db:
        ready.put("writer")
        go.wait()
        t0 = time.perf_counter()
        end = t0 + seconds
        next_report = t0 + 1.0
        now = t0
        while now < end:
            for sym in symbols:
                seq += 1
                price = prices[sym] = max(0.01, prices[sym] * (1 + rnd.gauss(0, 0.0005)))
                db[sym] = _demo_pack(price, seq)
            ops += len(symbols)
            now = time.perf_counter()
            if now >= next_report:
                sym = symbols[0]
                print(f"  writer   : {ops / (now - t0):>12,.0f} writes/s   "
                      f"{sym.decode()} = {prices[sym]:.2f} (seq {seq})", flush=True)
                next_report += 1.0
        elapsed = time.perf_counter() - t0
    results.put({"name": "writer", "role": "write", "ops": ops, "seconds": elapsed,
                 "torn": 0, "backwards": 0, "missing": 0})


def _demo_reader(name: str, path: str, symbols: List[bytes], seconds: float, go: Any,
                 ready: Any, results: Any) -> None:
    import dbm_shm as core

    rnd = random.Random(name)
    last_seq: Dict[bytes, int] = {}
    ops = torn = backwards = missing = 0
    with core.open(path, "r") as db:
        ready.put(name)
        go.wait()
        t0 = time.perf_counter()
        end = t0 + seconds
        next_report = t0 + 1.0
        now = t0
        n = len(symbols)
        while now < end:
            for _ in range(256):
                sym = symbols[rnd.randrange(n)]
                value = db.get(sym)
                ops += 1
                if value is None:
                    missing += 1
                    continue
                if len(value) != _DEMO_VALUE.size:
                    torn += 1
                    continue
                price, seq, crc = _DEMO_VALUE.unpack(value)
                if crc != zlib.crc32(value[:16]):
                    torn += 1
                    continue
                if seq < last_seq.get(sym, 0):
                    backwards += 1
                last_seq[sym] = seq
            now = time.perf_counter()
            if now >= next_report:
                sym = symbols[0]
                shown = ""
                value = db.get(sym)
                if value is not None and len(value) == _DEMO_VALUE.size:
                    price, seq, _crc = _DEMO_VALUE.unpack(value)
                    shown = f"{sym.decode()} = {price:.2f} (seq {seq})"
                print(f"  {name:<9}: {ops / (now - t0):>12,.0f} reads/s    {shown}", flush=True)
                next_report += 1.0
        elapsed = time.perf_counter() - t0
    results.put({"name": name, "role": "read", "ops": ops, "seconds": elapsed,
                 "torn": torn, "backwards": backwards, "missing": missing})


def run(*, seconds: float = 3.0, readers: int = 3, symbols: int = 100,
        path: Optional[str] = None, force: bool = False) -> None:
    """Run the demo and print its table; raises DemoUsageError for bad
    arguments and DemoFailed when a process failed or saw a bad value."""
    import multiprocessing
    import queue as queue_mod
    import shutil

    if seconds <= 0:
        raise DemoUsageError("--seconds must be positive")
    if readers < 1:
        raise DemoUsageError("--readers must be at least 1")
    if symbols < 1:
        raise DemoUsageError("--symbols must be at least 1")
    import dbm_shm as core

    tmpdir = None
    if path:
        if os.path.exists(path) and not force:
            raise DemoUsageError(f"{path} exists; the demo starts a new store (pass --force "
                                 "to replace it, or choose another --path)")
    else:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        tmpdir = tempfile.mkdtemp(prefix="dbm-shm-demo-", dir=base)
        path = os.path.join(tmpdir, "prices.db")
    names = _demo_symbols(symbols)
    try:
        with core.open(path, "n") as db:
            for i, sym in enumerate(names):
                db[sym] = _demo_pack(100.0 + i, 0)
        print(f"dbm-shm demo: 1 writer and {readers} reader process(es) share {path} "
              f"for {seconds:g} s.\n"
              f"  The writer updates {len(names)} prices in a loop; each reader reads "
              f"random symbols,\n  checks every value (crc32) and that no price goes back "
              f"in time.", flush=True)
        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        ready = ctx.Queue()
        results = ctx.Queue()
        procs = [ctx.Process(target=_demo_writer, name="writer",
                             args=(path, names, seconds, go, ready, results))]
        for i in range(readers):
            name = f"reader-{i + 1}"
            procs.append(ctx.Process(target=_demo_reader, name=name,
                                     args=(name, path, names, seconds, go, ready,
                                           results)))
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            go.set()
            rows = []
            for _ in procs:
                rows.append(results.get(timeout=seconds + 60))
        except queue_mod.Empty:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            raise DemoFailed("a demo process did not answer (see its error above)") from None
        finally:
            for p in procs:
                p.join(timeout=10)
        bad = [p for p in procs if p.exitcode not in (0, None)]
        rows.sort(key=lambda r: (r["role"] != "write", r["name"]))
        print(f"\n  {'process':<10} {'role':<6} {'ops':>12} {'ops/s':>12}  checks")
        reads = 0.0
        problems = 0
        for r in rows:
            rate = r["ops"] / r["seconds"] if r["seconds"] > 0 else 0.0
            checks = "-"
            if r["role"] == "read":
                reads += rate
                problems += r["torn"] + r["backwards"]
                checks = f"{r['torn']} torn, {r['backwards']} out of order"
            print(f"  {r['name']:<10} {r['role']:<6} {r['ops']:>12,} {rate:>12,.0f}  {checks}")
        print(f"  {'readers':<10} {'total':<6} {'':>12} {reads:>12,.0f}")
        if bad:
            raise DemoFailed(f"{len(bad)} demo process(es) failed")
        if problems:
            raise DemoFailed(f"readers saw {problems} inconsistent value(s)")
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
