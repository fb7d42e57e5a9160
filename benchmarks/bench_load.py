#!/usr/bin/env python3
"""Loading a gdbm ASCII dump: ``dbm-shm load`` against GNU ``gdbm_load``.

Makes a dump of N records (16-byte random keys, 100-byte random values,
deterministic from ``--seed``; 1,000,000 by default) in the format
``gdbm_dump`` writes, then times, in this one run, each tool as a user runs
it (a fresh process each, wall-clock time including its start-up):

* ``gdbm_load DUMP FILE.gdbm``: GNU gdbm's loader;
* ``dbm-shm load DUMP FILE.db`` into a new store;
* ``dbm-shm load DUMP FILE.db`` into an existing (empty) store (the merged store
  built beside it under its writer lock, then put in its place);
* ``gdbm_dump FILE.gdbm`` and ``dbm-shm dump FILE.db`` (to a file);
* a bad dump (one base64 character of the last value made invalid) given to
  ``gdbm_load`` and to ``dbm-shm load`` into a new and into an existing store:
  the time to reject it, and that nothing was loaded;
* ``dbm-shm convert FILE.gdbm NEW.db``, when an interpreter with
  ``dbm.gnu`` is at hand (this one, or ``--gdbm-python``).

Each row also gives the command's peak resident memory (``ru_maxrss`` of
that child process, read with ``wait4``).

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


#: Peak resident memory (ru_maxrss, KiB) of the last command run().
LAST_RSS = [0]


def run(cmd: List[str], env: Dict[str, str], expect: int = 0,
        stdout: Optional[str] = None) -> float:
    """Run ``cmd`` (its standard output to the file ``stdout``), fail loudly
    unless it exits ``expect``; its wall-clock seconds. Its peak resident
    memory (``ru_maxrss`` of this one child, from ``wait4``) goes to LAST_RSS."""
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
    took = time.perf_counter() - t0
    LAST_RSS[0] = usage.ru_maxrss
    if proc.returncode != expect:
        raise SystemExit(f"FAILED (exit {proc.returncode}, expected {expect}): "
                         f"{' '.join(cmd)}\n{err.decode(errors='replace')}")
    return took


def make_bad_dump(good: str, bad: str) -> None:
    """``good`` with one base64 character of its last value made invalid:
    the mistake a reader meets last."""
    shutil.copyfile(good, bad)  # not read into memory: children inherit a fork's peak
    with open(bad, "r+b") as fp:
        start = max(0, os.path.getsize(bad) - (1 << 16))
        fp.seek(start)
        tail = fp.read()
        last = tail.rindex(b"#:len=")
        fp.seek(start + tail.index(b"\n", last) + 1)
        fp.write(b"!")


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
        # in a child: this process stays small, so the peak memory of the
        # children it starts (ru_maxrss, which a fork inherits) is their own
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import bench_load; bench_load.make_dump(sys.argv[2], int(sys.argv[3]), "
                        "int(sys.argv[4]))", os.path.dirname(os.path.abspath(__file__)), dump,
                        str(args.keys), str(args.seed)], env=env, check=True)
        print(f"dump: {args.keys:,} records, {os.path.getsize(dump) / 2**20:.1f} MiB, "
              f"made in {time.perf_counter() - t0:.1f} s ({work})", flush=True)
        gfile = os.path.join(work, "bench.gdbm")
        store = os.path.join(work, "bench.db")
        conv = os.path.join(work, "conv.db")
        bad = os.path.join(work, "bad.dump")
        make_bad_dump(dump, bad)
        out = os.path.join(work, "out.dump")
        rows: Dict[str, float] = {}
        rss: Dict[str, int] = {}

        def best(name: str, cmd: List[str], prepare: List[str], check: Tuple[str, str],
                 expect: int = 0, stdout: Optional[str] = None) -> None:
            times = []
            peak = 0
            for _ in range(args.repeat):
                for p in prepare:
                    if os.path.exists(p):
                        os.unlink(p)
                if "(existing store" in name:  # an empty store to load into
                    run([args.python, "-c", "import dbm_shm, sys; "
                         "dbm_shm.open(sys.argv[1], 'n').close()", store], env)
                times.append(run(cmd, env, expect, stdout))
                peak = max(peak, LAST_RSS[0])
            kind, path = check
            if kind == "dump":  # a dump: its record count from the trailer
                with open(path, "rb") as fp:
                    fp.seek(max(0, os.path.getsize(path) - 200))
                    tail = fp.read().decode()
                got = int(tail.split("#:count=")[1].split()[0])
            elif kind == "none":  # a rejected dump: nothing may be there
                got = args.keys if not os.path.exists(path) or count(
                    args.python, path, env) == 0 else -1
            else:
                got = gdbm_count(gpy, path) if kind == "gdbm" and gpy else (
                    args.keys if kind == "gdbm" else count(args.python, path, env))
            if got != args.keys:
                raise SystemExit(f"FAILED: {name} holds {got} records, not {args.keys}")
            rows[name] = min(times)
            rss[name] = peak
            print(f"  {name}: {rows[name]:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)

        best("gdbm_load", [gdbm_load, dump, gfile], [gfile], ("gdbm", gfile))
        best("dbm-shm load (new store)", [args.python, "-m", "dbm_shm", "load", dump, store],
             [store], ("shm", store))
        best("dbm-shm load (existing store)",
             [args.python, "-m", "dbm_shm", "load", dump, store], [store], ("shm", store))
        gdbm_dump = shutil.which("gdbm_dump")
        if gdbm_dump is not None:
            best("gdbm_dump", [gdbm_dump, gfile], [out], ("dump", out), stdout=out)
        best("dbm-shm dump", [args.python, "-m", "dbm_shm", "dump", store], [out],
             ("dump", out), stdout=out)
        # (into a file of its own: gdbm_load keeps the records before the
        # mistake, and bench.gdbm is what 'convert' reads below)
        gbad = os.path.join(work, "bad.gdbm")
        best("gdbm_load (bad dump, rejected)", [gdbm_load, bad, gbad], [gbad],
             ("none", os.path.join(work, "never")), expect=1)
        best("dbm-shm load (bad dump, rejected, new store)",
             [args.python, "-m", "dbm_shm", "load", bad, conv], [conv], ("none", conv),
             expect=3)
        best("dbm-shm load (bad dump, rejected, existing store)",
             [args.python, "-m", "dbm_shm", "load", bad, store], [store], ("none", store),
             expect=3)
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
    print("| tool | seconds | records/s | vs gdbm_load | peak memory (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, secs in rows.items():
        print(f"| {name} | {secs:.2f} | {args.keys / secs:,.0f} | {ref / secs:.2f}x "
              f"| {rss[name] / 1024:.0f} |")
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
