#!/usr/bin/env python3
"""Loading a gdbm ASCII dump: ``dbm-shm load`` against GNU ``gdbm_load``.

Makes a dump of N records (16-byte random keys, 100-byte random values,
deterministic from ``--seed``; 1,000,000 by default) in the format
``gdbm_dump`` writes, then times, in this one run, each tool as a user runs
it (a fresh process each, wall-clock time including its start-up):

* ``gdbm_load DUMP FILE.gdbm``: GNU gdbm's loader;
* ``dbm-shm load DUMP FILE.db`` into a new store;
* ``dbm-shm load DUMP FILE.db`` into an existing store (one atomic batch);
* ``dbm-shm convert FILE.gdbm NEW.db``, when an interpreter with
  ``dbm.gnu`` is at hand (this one, or ``--gdbm-python``).

Every result is checked (its record count). Prints a Markdown table with
the seconds, records per second, and the ratio against ``gdbm_load`` (above
1 means faster than gdbm_load). Best of ``--repeat`` rounds.

Run::

    python benchmarks/bench_load.py                 # 1M records
    python benchmarks/bench_load.py --keys 20000    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dbm_shm import _dumpfmt  # noqa: E402


def make_dump(path: str, n: int, seed: int) -> None:
    """Write an N-record gdbm ASCII dump of random 16/100-byte records."""
    rnd = random.Random(seed)
    blob = rnd.randbytes(n * 16) if hasattr(rnd, "randbytes") else os.urandom(n * 16)
    vals = rnd.randbytes(n * 100) if hasattr(rnd, "randbytes") else os.urandom(n * 100)
    items = ((blob[i * 16:(i + 1) * 16], vals[i * 100:(i + 1) * 100]) for i in range(n))
    with open(path, "wb") as fp:
        _dumpfmt.write_dump(fp, items, filename="bench.gdbm", mode=0o644,
                            gdbm_compat=False)


def has_gdbm(python: str) -> bool:
    """Whether ``python`` can import dbm.gnu."""
    return subprocess.run([python, "-c", "import dbm.gnu"], capture_output=True).returncode == 0


def run(cmd: List[str], env: Dict[str, str]) -> float:
    """Run ``cmd``, fail loudly on an error; its wall-clock seconds."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"FAILED: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return took


def count(python: str, path: str, env: Dict[str, str]) -> int:
    out = subprocess.run([python, "-m", "dbm_shm", "count", path], env=env,
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def gdbm_count(python: str, path: str) -> int:
    out = subprocess.run([python, "-c", "import dbm.gnu, sys; "
                          "print(len(dbm.gnu.open(sys.argv[1], 'r')))", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="records (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="rounds; best of them is shown")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the files go (default /dev/shm)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that runs dbm-shm (default: this one)")
    ap.add_argument("--gdbm-python", default=None,
                    help="interpreter with dbm.gnu for 'convert' (default: this one or "
                         "/usr/bin/python3, whichever has it)")
    args = ap.parse_args(argv)
    gdbm_load = shutil.which("gdbm_load")
    if gdbm_load is None:
        raise SystemExit("gdbm_load not found (apt-get install gdbmtool)")
    gpy = args.gdbm_python
    if gpy is None:
        gpy = next((p for p in (sys.executable, "/usr/bin/python3")
                    if os.path.exists(p) and has_gdbm(p)), None)
    elif not has_gdbm(gpy):
        gpy = None
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    work = tempfile.mkdtemp(prefix="bench-load-", dir=args.dir)
    try:
        dump = os.path.join(work, "bench.dump")
        t0 = time.perf_counter()
        make_dump(dump, args.keys, args.seed)
        print(f"dump: {args.keys:,} records, {os.path.getsize(dump) / 2**20:.1f} MiB, "
              f"made in {time.perf_counter() - t0:.1f} s ({work})", flush=True)
        gfile = os.path.join(work, "bench.gdbm")
        store = os.path.join(work, "bench.db")
        conv = os.path.join(work, "conv.db")
        rows: Dict[str, float] = {}

        def best(name: str, cmd: List[str], prepare: List[str], check: Tuple[str, str]) -> None:
            times = []
            for _ in range(args.repeat):
                for p in prepare:
                    if os.path.exists(p):
                        os.unlink(p)
                if name.endswith("(existing store)"):  # an empty store to load into
                    run([args.python, "-c", "import dbm_shm, sys; "
                         "dbm_shm.open(sys.argv[1], 'n').close()", store], env)
                times.append(run(cmd, env))
            kind, path = check
            got = gdbm_count(gpy, path) if kind == "gdbm" and gpy else (
                args.keys if kind == "gdbm" else count(args.python, path, env))
            if got != args.keys:
                raise SystemExit(f"FAILED: {name} holds {got} records, not {args.keys}")
            rows[name] = min(times)
            print(f"  {name}: {rows[name]:.2f} s", flush=True)

        best("gdbm_load", [gdbm_load, dump, gfile], [gfile], ("gdbm", gfile))
        best("dbm-shm load (new store)", [args.python, "-m", "dbm_shm", "load", dump, store],
             [store], ("shm", store))
        best("dbm-shm load (existing store)",
             [args.python, "-m", "dbm_shm", "load", dump, store], [store], ("shm", store))
        notes = []
        if gpy is not None:
            best("dbm-shm convert (from gdbm)",
                 [gpy, "-m", "dbm_shm", "convert", gfile, conv], [conv], ("shm", conv))
        else:
            notes.append("convert skipped: no interpreter with dbm.gnu "
                         "(apt-get install python3-gdbm gives /usr/bin/python3 one)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = rows["gdbm_load"]
    print(f"\n{args.keys:,} records (16-byte keys, 100-byte values), best of "
          f"{args.repeat}; dbm-shm run by {args.python}"
          + (f", convert by {gpy}" if gpy else "") + "\n")
    print("| tool | seconds | records/s | vs gdbm_load |")
    print("| --- | ---: | ---: | ---: |")
    for name, secs in rows.items():
        print(f"| {name} | {secs:.2f} | {args.keys / secs:,.0f} | {ref / secs:.2f}x |")
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
