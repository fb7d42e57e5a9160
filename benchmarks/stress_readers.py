"""Readers under a writer: do lock-free reads hold up while a writer runs flat out?

Reader and writer are separate processes (multiprocessing, spawn) on one
store file. From ONE run, three timed phases of ``--seconds`` each:

1. readers alone: K reader processes look up random keys;
2. readers + writer: the same K readers while one writer process
   overwrites random keys as fast as it can;
3. writer alone: the writer with no readers (the reference for its rate);
4. readers + CPU burner: the control. The writer of phase 2 is replaced
   by a process that only burns CPU and touches no store. What phase 4
   loses against phase 1 is the machine (shared cores, hypervisor), not
   the store; phase 2 against phase 4 is what the writer itself costs.

Printed: a table of reads/s (all readers together), writes/s, and the
readers' seqlock retries and lock fallbacks (from each reader handle's
``stats()``), then the ratio of phase 2 to phase 1 reads (target: >= 80%)
and of phase 2 to phase 3 writes.

Each process runs its loop in Python through the public API, so the rates
include the interpreter's per-call cost: they are what a Python user gets.
On a machine with fewer cores than K + 1 processes the readers and the
writer also compete for CPU, which no lock-free protocol can hide; the
header line prints the core count.

    python benchmarks/stress_readers.py [--seconds 3] [--readers 1] [--keys 100000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time

import dbm_shm


def _key(i: int) -> bytes:
    return b"key%09d" % i


def _reader(path: str, nkeys: int, seed: int, start, stop, out) -> None:
    db = dbm_shm.open(path, "r")
    rng = random.Random(seed)
    keys = [_key(rng.randrange(nkeys)) for _ in range(65536)]
    get = db.__getitem__
    start.wait()
    chunks = [keys[i:i + 4096] for i in range(0, len(keys), 4096)]
    n = 0
    bad = 0
    while not stop.is_set():
        for k in chunks[(n >> 12) & 15]:
            if len(get(k)) == 0:
                bad += 1
        n += 4096
    st = db.stats()
    db.close()
    out.put(("reader", n, st["read_retries"], st["read_fallbacks"], bad))


def _writer(path: str, nkeys: int, vsize: int, seed: int, start, stop, out) -> None:
    db = dbm_shm.open(path, "w")
    rng = random.Random(seed)
    keys = [_key(rng.randrange(nkeys)) for _ in range(65536)]
    vals = [bytes([65 + i]) * vsize for i in range(8)]
    start.wait()
    n = 0
    while not stop.is_set():
        for j in range(1024):
            db[keys[(n + j) & 65535]] = vals[j & 7]
        n += 1024
    db.close()
    out.put(("writer", n, 0, 0, 0))


def _burner(start, stop, out) -> None:
    """The control: a process that only burns CPU, touching no store."""
    start.wait()
    n = 0
    while not stop.is_set():
        for _ in range(10000):
            n += 1
    out.put(("burner", 0, 0, 0, 0))


def _phase(ctx, path: str, args, readers: int, writer: bool, burner: bool = False) -> dict:
    start = ctx.Barrier(readers + writer + burner + 1)
    stop = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(path, args.keys, 1000 + r, start, stop, out))
             for r in range(readers)]
    if writer:
        procs.append(ctx.Process(target=_writer, args=(path, args.keys, args.value_size, 7, start, stop, out)))
    if burner:
        procs.append(ctx.Process(target=_burner, args=(start, stop, out)))
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    res = [out.get(timeout=120) for _ in procs]
    dt = time.perf_counter() - t0
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            sys.exit(f"a worker process failed (exit code {p.exitcode})")
    reads = sum(r[1] for r in res if r[0] == "reader")
    writes = sum(r[1] for r in res if r[0] == "writer")
    if any(r[4] for r in res):
        sys.exit("a reader got an empty value: the benchmark's data is wrong")
    return {"reads_s": reads / dt, "writes_s": writes / dt,
            "retries": sum(r[2] for r in res), "fallbacks": sum(r[3] for r in res),
            "reads": reads, "writes": writes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each phase (default 3)")
    ap.add_argument("--readers", type=int, default=1, help="reader processes K (default 1)")
    ap.add_argument("--keys", type=int, default=100_000, help="keys in the store (default 100000)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    ap.add_argument("--dir", default=None,
                    help="directory for the store file (default: /dev/shm if present, else the temp dir)")
    args = ap.parse_args(argv)
    base = args.dir or ("/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
                        else tempfile.gettempdir())
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=base, prefix="dshm-stress-") as d:
        path = os.path.join(d, "store")
        with dbm_shm.open(path, "n") as db:
            v = b"v" * args.value_size
            for i in range(args.keys):
                db[_key(i)] = v
        alone = _phase(ctx, path, args, args.readers, False)
        mixed = _phase(ctx, path, args, args.readers, True)
        walone = _phase(ctx, path, args, 0, True)
        control = _phase(ctx, path, args, args.readers, False, burner=True)
        with dbm_shm.open(path, "r") as db:
            problems = db.check()
            count = len(db)
    if problems or count != args.keys:
        sys.exit(f"store damaged after the run: {problems[:5]}, {count} keys")

    print(f"dbm_shm stress_readers: {args.readers} reader process(es), 1 writer process, "
          f"{args.keys} keys of {args.value_size} bytes, {args.seconds:g} s per phase, "
          f"{os.cpu_count()} CPU(s), store in {base}")
    print()
    print("| phase                 | reads/s (all readers) | writes/s | read retries | read fallbacks |")
    print("| ---                   | ---:                  | ---:     | ---:         | ---:           |")
    for name, r in (("readers alone", alone), ("readers + writer", mixed), ("writer alone", walone),
                    ("readers + CPU burner", control)):
        rd = f"{r['reads_s']:,.0f}" if r["reads"] else "-"
        wr = f"{r['writes_s']:,.0f}" if r["writes"] else "-"
        rt = f"{r['retries']:,}" if r["reads"] else "-"
        fb = f"{r['fallbacks']:,}" if r["reads"] else "-"
        print(f"| {name:<21} | {rd:>21} | {wr:>8} | {rt:>12} | {fb:>14} |")
    print()
    ratio = mixed["reads_s"] / alone["reads_s"] if alone["reads_s"] else 0.0
    wratio = mixed["writes_s"] / walone["writes_s"] if walone["writes_s"] else 0.0
    verdict = "meets" if ratio >= 0.8 else "BELOW"
    print(f"reads with a writer running: {ratio:.0%} of reads alone ({verdict} the 80% target)")
    cratio = control["reads_s"] / alone["reads_s"] if alone["reads_s"] else 0.0
    vs = mixed["reads_s"] / control["reads_s"] if control["reads_s"] else 0.0
    print(f"control: with a process that only burns CPU (no store), reads are {cratio:.0%} of alone; "
          f"with the writer they are {vs:.0%} of that")
    print(f"writes with readers running: {wratio:.0%} of writes alone")
    per_read = mixed["retries"] / mixed["reads"] if mixed["reads"] else 0.0
    print(f"retries per read under the writer: {per_read:.2e}; fallbacks: {mixed['fallbacks']}")
    if args.readers + 1 > (os.cpu_count() or 1):
        print(f"note: {args.readers + 1} busy processes on {os.cpu_count()} CPUs: "
              "phase 2 also measures CPU sharing, not only the store")
    return 0


if __name__ == "__main__":
    sys.exit(main())
