#!/usr/bin/env python3
"""Get and set throughput of dbm_shm beside the stores a user would pick instead.

One run, one process: every backend sees the same deterministic keys and
values (random bytes from ``--seed``), so the ratio columns compare like with
like. For each backend and each of ``--repeat`` rounds:

* set: open a fresh file with flag ``"n"`` (untimed), store all N keys in
  generation order (timed), close (untimed);
* get: reopen the file read-only (untimed), look all N keys up in a shuffled
  order (timed), close (untimed), then check every value (untimed).

The best round of each phase is reported as operations per second, with
ratios against ``dbm.gnu`` and the in-process ``dict``. Slow peers run on
``--slow-n`` keys (the first keys of the same sequence); the N column says
which. Backends that cannot be imported are skipped with a note.

``--sizes 1000,100000,1000000`` runs instead one table per size (random
keys at each size, gets repeated until a pass takes a while so small sizes
time well) with nanoseconds per operation and ratios against ``dbm.gnu``
and ``dict``; by default there with dict, dbm_shm, dbm_shm's Python path
(``dbm_shm-py``: the methods the C fast path hands over to, called in the
same process), ``dbm_shm-many`` (gets by ``get_many`` in chunks of 1,000
keys, in ns per key), dbm.gnu and LMDB. ``DSHM_NO_FASTPATH=1`` turns dbm_shm's
fast path off for the whole run.

Run it with the interpreter from ``benchmarks/setup_peers.sh``, which is the
only one that sees GNU gdbm and the PyPI peers together::

    bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/bench_get_put.py
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

DEFAULT_N = 1_000_000
DEFAULT_SLOW_N = 100_000
QUICK_N = 20_000
#: Address space LMDB may map. Only reserved, never allocated, so it is
#: sized for any workload that fits in RAM rather than for this one.
LMDB_MAP_SIZE = 1 << 36

#: An open database of whichever backend; each Backend knows its own type.
Handle = Any
T = TypeVar("T")


class Unavailable(Exception):
    """A backend cannot run in this interpreter; the message says why."""


class VerificationError(Exception):
    """A backend returned a wrong value for a key it was given."""


@dataclass(frozen=True)
class Backend:
    """One store under test.

    ``open(path, flag)`` is called with ``"n"`` to create a fresh store and
    with ``"r"`` to reopen the store just written. ``put_all`` and
    ``get_all`` are the timed bodies; ``close`` is untimed.
    """

    name: str
    version: str
    open: Callable[[str, str], Handle]
    put_all: Callable[[Handle, Sequence[bytes], Sequence[bytes]], None]
    get_all: Callable[[Handle, Sequence[bytes]], list[bytes]]
    close: Callable[[Handle], None]
    slow: bool = False
    note: str = ""


@dataclass(frozen=True)
class Workload:
    """Keys and values in write order, and the shuffled lookups to make."""

    keys: list[bytes]
    values: list[bytes]
    read_keys: list[bytes]
    expected: list[bytes]

    @property
    def n(self) -> int:
        """Number of keys."""
        return len(self.keys)


@dataclass(frozen=True)
class Result:
    """Best throughput of one backend, in operations per second."""

    backend: Backend
    n: int
    set_ops: float
    get_ops: float


# --------------------------------------------------------------------------
# Timed bodies


def put_mapping(db: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Store every key with ``db[key] = value``, as a dbm user writes."""
    for key, value in zip(keys, values):
        db[key] = value


def get_mapping(db: Handle, keys: Sequence[bytes]) -> list[bytes]:
    """Look every key up with ``db[key]``."""
    return [db[key] for key in keys]


def put_dbm_shm_py(db: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """``db[key] = value`` by dbm_shm's Python path (what the fast path hands over to)."""
    setitem = type(db)._py_setitem
    for key, value in zip(keys, values):
        setitem(db, key, value)


def get_dbm_shm_py(db: Handle, keys: Sequence[bytes]) -> list[bytes]:
    """``db[key]`` by dbm_shm's Python path."""
    getitem = type(db)._py_getitem
    return [getitem(db, key) for key in keys]


#: Keys per ``get_many`` call in the ``dbm_shm-many`` row.
MANY_CHUNK = 1000


def get_many_chunks(db: Handle, keys: Sequence[bytes]) -> list[bytes]:
    """Look every key up with ``db.get_many`` in chunks of MANY_CHUNK keys."""
    out: list[bytes] = []
    get_many = db.get_many
    for i in range(0, len(keys), MANY_CHUNK):
        out += get_many(keys[i:i + MANY_CHUNK])
    return out


def put_sqlitedict(db: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Store every key, then commit: until then sqlitedict has only queued them."""
    put_mapping(db, keys, values)
    db.commit()


def put_lmdb_txn_per_op(env: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Store every key in its own write transaction, as a dbm-style caller would."""
    for key, value in zip(keys, values):
        with env.begin(write=True) as txn:
            txn.put(key, value)


def get_lmdb_txn_per_op(env: Handle, keys: Sequence[bytes]) -> list[bytes]:
    """Look every key up in its own read transaction."""
    found = []
    for key in keys:
        with env.begin() as txn:
            found.append(txn.get(key))
    return found


def put_lmdb_one_txn(env: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Store all keys in one write transaction (LMDB's best case)."""
    with env.begin(write=True) as txn:
        for key, value in zip(keys, values):
            txn.put(key, value)


def get_lmdb_one_txn(env: Handle, keys: Sequence[bytes]) -> list[bytes]:
    """Look all keys up in one read transaction."""
    with env.begin() as txn:
        return [txn.get(key) for key in keys]


def close_handle(db: Handle) -> None:
    """Close a store that has a ``close()`` method."""
    db.close()


# --------------------------------------------------------------------------
# Backends. Each factory imports its store lazily and raises Unavailable
# when it is missing, so one absent peer never stops the others.


def make_dict() -> Backend:
    """Build the in-process ``dict`` backend: the physical reference, no file."""
    stores: dict[str, dict[bytes, bytes]] = {}

    def open_dict(path: str, flag: str) -> dict[bytes, bytes]:
        if flag == "n":
            stores[path] = {}
            return stores[path]
        return stores.pop(path)

    return Backend(
        "dict", f"Python {platform.python_version()}",
        open_dict, put_mapping, get_mapping, close=lambda db: None,
    )


def make_dbm_shm() -> Backend:
    """Build the dbm_shm backend, used through its dbm.gnu-compatible API."""
    try:
        import dbm_shm
    except Exception as exc:  # a half-built extension fails in many ways
        raise Unavailable(
            f"import dbm_shm failed ({type(exc).__name__}: {exc}); "
            "rerun benchmarks/setup_peers.sh once setup.py exists"
        ) from exc
    return Backend(
        "dbm_shm", dbm_shm_version(dbm_shm),
        dbm_shm.open, put_mapping, get_mapping, close_handle,
        note="opened 'n' to write, 'r' to read",
    )


def make_dbm_shm_py() -> Backend:
    """dbm_shm through its Python (cffi) path, beside the fast path in one run."""
    try:
        import dbm_shm
        from dbm_shm import _fastglue
    except Exception as exc:  # a half-built extension fails in many ways
        raise Unavailable(f"import dbm_shm failed ({type(exc).__name__}: {exc})") from exc
    if not _fastglue.ENABLED:
        raise Unavailable("the fast path is off (DSHM_NO_FASTPATH) or missing: dbm_shm is this path")
    return Backend(
        "dbm_shm-py", dbm_shm_version(dbm_shm),
        dbm_shm.open, put_dbm_shm_py, get_dbm_shm_py, close_handle,
        note="dbm_shm's Python methods (Database._py_getitem/_py_setitem) called "
             "directly: the cffi path, without the C fast path",
    )


def make_dbm_shm_many() -> Backend:
    """dbm_shm's gets by ``get_many`` (chunks of MANY_CHUNK keys); sets as ``dbm_shm``."""
    base = make_dbm_shm()
    return Backend(
        "dbm_shm-many", base.version, base.open, put_mapping, get_many_chunks, close_handle,
        note=f"gets by get_many() in chunks of {MANY_CHUNK:,} keys (ns per key); "
             "sets as dbm_shm",
    )


def make_gdbm() -> Backend:
    """Build the GNU gdbm backend (stdlib ``dbm.gnu``)."""
    try:
        import dbm.gnu
    except ImportError as exc:
        raise Unavailable(
            "dbm.gnu is not in this interpreter; GNU gdbm comes with Debian's "
            "python3-gdbm for /usr/bin/python3: use .venv-bench "
            "(benchmarks/setup_peers.sh)"
        ) from exc

    def open_gdbm(path: str, flag: str) -> Handle:
        return dbm.gnu.open(path, "nf" if flag == "n" else "r")

    return Backend(
        "dbm.gnu", gdbm_library_version(),
        open_gdbm, put_mapping, get_mapping, close_handle,
        note="opened 'nf' (fast: no sync per write) to write, 'r' to read",
    )


def make_lmdb(one_txn: bool) -> Backend:
    """Build the LMDB backend: one transaction per operation, or one for all."""
    try:
        import lmdb
    except ImportError as exc:
        raise Unavailable("lmdb is not installed (pip install lmdb)") from exc

    def open_lmdb(path: str, flag: str) -> Handle:
        return lmdb.open(
            path, map_size=LMDB_MAP_SIZE, subdir=False, readonly=flag == "r",
            sync=False, metasync=False,
        )

    version = f"py-lmdb {lmdb.__version__}, LMDB {'.'.join(map(str, lmdb.version()))}"
    if one_txn:
        return Backend(
            "lmdb-1txn", version, open_lmdb, put_lmdb_one_txn, get_lmdb_one_txn,
            close_handle,
            note="all N puts in ONE write txn, all gets in ONE read txn "
                 "(LMDB's best case, not dbm-style); sync=False, metasync=False",
        )
    return Backend(
        "lmdb", version, open_lmdb, put_lmdb_txn_per_op, get_lmdb_txn_per_op,
        close_handle,
        note="one write txn per put and one read txn per get, as a dbm-style "
             "caller does; sync=False, metasync=False (no fsync per commit)",
    )


def make_dbm_sqlite3() -> Backend:
    """Build the SQLite backend of the stdlib ``dbm.sqlite3`` (Python 3.13+)."""
    try:
        import dbm.sqlite3
        import sqlite3
    except ImportError as exc:
        raise Unavailable("dbm.sqlite3 needs Python 3.13+") from exc
    return Backend(
        "dbm.sqlite3", f"SQLite {sqlite3.sqlite_version}",
        dbm.sqlite3.open, put_mapping, get_mapping, close_handle, slow=True,
        note="commits every store (its only mode)",
    )


def make_sqlitedict() -> Backend:
    """Build the sqlitedict backend, storing raw bytes."""
    try:
        import sqlite3

        import sqlitedict
    except ImportError as exc:
        raise Unavailable("sqlitedict is not installed (pip install sqlitedict)") from exc

    def open_sqlitedict(path: str, flag: str) -> Handle:
        return sqlitedict.SqliteDict(
            path, flag=flag, encode=sqlitedict.identity,
            decode=sqlitedict.identity, outer_stack=False,
        )

    return Backend(
        "sqlitedict",
        f"sqlitedict {sqlitedict.__version__}, SQLite {sqlite3.sqlite_version}",
        open_sqlitedict, put_sqlitedict, get_mapping, close_handle, slow=True,
        note="raw bytes (no pickle), outer_stack=False; set includes its one "
             "commit(), since writes go through a background thread and "
             "nothing is stored before it",
    )


def make_dumb() -> Backend:
    """Build the stdlib's pure-Python ``dbm.dumb`` backend."""
    import dbm.dumb

    return Backend(
        "dbm.dumb", f"Python {platform.python_version()}",
        dbm.dumb.open, put_mapping, get_mapping, close_handle, slow=True,
    )


#: Every backend, in the order they run and are listed (``--only`` names).
BACKENDS: dict[str, Callable[[], Backend]] = {
    "dict": make_dict,
    "dbm_shm": make_dbm_shm,
    "dbm_shm-py": make_dbm_shm_py,
    "dbm_shm-many": make_dbm_shm_many,
    "dbm.gnu": make_gdbm,
    "lmdb": lambda: make_lmdb(one_txn=False),
    "lmdb-1txn": lambda: make_lmdb(one_txn=True),
    "dbm.sqlite3": make_dbm_sqlite3,
    "sqlitedict": make_sqlitedict,
    "dbm.dumb": make_dumb,
}
REFERENCES = ("dbm.gnu", "dict")
#: The backends ``--sizes`` runs unless ``--only`` says otherwise.
SIZES_BACKENDS = ("dict", "dbm_shm", "dbm_shm-py", "dbm_shm-many", "dbm.gnu", "lmdb", "lmdb-1txn")
#: With ``--sizes``, a get pass is repeated until it covers this many lookups.
SIZES_MIN_GETS = 300_000


def package_version(dist: str, module: object) -> str:
    """Return the installed distribution's version, else ``module.__version__``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown version"))


def dbm_shm_version(module: Any) -> str:
    """The version, where it was imported from and whether its C fast path is
    on: a stale copy in the benchmark venv (rerun setup_peers.sh) shows here."""
    from dbm_shm import _fastglue
    where = shown_path(os.path.dirname(os.path.abspath(module.__file__)))
    fast = "fast path on" if _fastglue.ENABLED else "fast path OFF"
    return f"{package_version('dbm_shm', module)} from {where}, {fast}"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shown_path(path: str) -> str:
    """``path`` as a report may print it, naming no machine: relative to the
    repository when inside it (``.venv-bench/lib/python3.11/site-packages/dbm_shm``),
    else from ``site-packages`` on (``<site-packages>/dbm_shm``), else ``~``
    for the home directory, else the path's last two parts after ``...``."""
    full = os.path.abspath(path)
    if full == REPO or full.startswith(REPO + os.sep):
        return os.path.relpath(full, REPO)
    parts = full.split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return os.path.join(f"<{marker}>", *parts[parts.index(marker) + 1:])
    home = os.path.expanduser("~")
    if home not in ("", "/") and full.startswith(home + os.sep):
        return os.path.join("~", os.path.relpath(full, home))
    return os.path.join("...", *parts[-2:])


def gdbm_library_version() -> str:
    """Return the version string of the libgdbm that ``dbm.gnu`` uses."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("gdbm")
    if name is None:
        return "libgdbm (version unknown)"
    try:
        raw = ctypes.c_char_p.in_dll(ctypes.CDLL(name), "gdbm_version").value
    except (OSError, ValueError):
        return f"{name} (version unknown)"
    return (raw or b"").decode(errors="replace")


# --------------------------------------------------------------------------
# Workload and measurement


def generate(n: int, key_size: int, value_size: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """N distinct random keys and N random values, fixed by the seed."""
    rng = random.Random(seed)
    keys: list[bytes] = []
    seen: set[bytes] = set()
    while len(keys) < n:
        blob = rng.randbytes((n - len(keys)) * key_size)
        for start in range(0, len(blob), key_size):
            key = blob[start:start + key_size]
            if key not in seen:
                seen.add(key)
                keys.append(key)
    if value_size == 0:
        return keys, [b""] * n
    blob = rng.randbytes(n * value_size)
    return keys, [blob[i:i + value_size] for i in range(0, len(blob), value_size)]


def make_workload(keys: list[bytes], values: list[bytes], seed: int) -> Workload:
    """Pair keys and values with a seeded random read order."""
    order = list(range(len(keys)))
    random.Random(f"{seed}/read/{len(keys)}").shuffle(order)
    return Workload(
        keys, values, [keys[i] for i in order], [values[i] for i in order],
    )


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Seconds ``fn(*args)`` takes with the cyclic GC off (as timeit does)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn(*args)
        return time.perf_counter() - start, result
    finally:
        if was_enabled:
            gc.enable()


def get_passes_of(get_all: Callable[[Handle, Sequence[bytes]], list[bytes]],
                  passes: int) -> Callable[[Handle, Sequence[bytes]], list[bytes]]:
    """``get_all`` repeated ``passes`` times; the last pass's values."""
    if passes == 1:
        return get_all

    def repeated(db: Handle, keys: Sequence[bytes]) -> list[bytes]:
        for _ in range(passes - 1):
            get_all(db, keys)
        return get_all(db, keys)
    return repeated


def verify(got: list[bytes], work: Workload) -> None:
    """Raise VerificationError unless every lookup returned its value."""
    if got == work.expected:
        return
    if len(got) != len(work.expected):
        raise VerificationError(f"{len(got)} results for {len(work.expected)} lookups")
    bad = next(i for i, (a, b) in enumerate(zip(got, work.expected)) if a != b)
    value, want = got[bad], work.expected[bad]
    if not isinstance(value, (bytes, bytearray, memoryview)):
        what = f"{type(value).__name__} {value!r:.40}"
    else:
        value = bytes(value)
        at = next((i for i, (a, b) in enumerate(zip(value, want)) if a != b),
                  min(len(value), len(want)))
        what = (f"a wrong value ({len(value)} B, expected {len(want)} B, "
                f"first difference at byte {at})")
    raise VerificationError(f"key {work.read_keys[bad].hex()} gave {what}")


def run_backend(backend: Backend, work: Workload, root: str, repeat: int, get_passes: int = 1) -> Result:
    """Best-of-``repeat`` set and get throughput, each round on a fresh file;
    each get round makes ``get_passes`` passes over the keys."""
    best_set = best_get = float("inf")
    for _ in range(repeat):
        rundir = tempfile.mkdtemp(prefix=f"{backend.name}-", dir=root)
        path = os.path.join(rundir, "db")
        try:
            db = backend.open(path, "n")
            try:
                set_s, _ = timed(backend.put_all, db, work.keys, work.values)
            finally:
                backend.close(db)
            db = backend.open(path, "r")
            try:
                get_s, got = timed(get_passes_of(backend.get_all, get_passes), db, work.read_keys)
                get_s /= get_passes
            finally:
                backend.close(db)
        finally:
            shutil.rmtree(rundir)
        verify(got, work)
        del got
        best_set, best_get = min(best_set, set_s), min(best_get, get_s)
    return Result(backend, work.n, work.n / best_set, work.n / best_get)


# --------------------------------------------------------------------------
# Reporting


def filesystem_type(path: str) -> str:
    """Return the type of the file system holding ``path`` (e.g. tmpfs)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown file system"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                mount = fields[1]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def ratio(value: float, reference: float | None) -> str:
    """``value / reference`` as ``1.23x`` (two significant digits below 0.1)."""
    if not reference:
        return "n/a"
    x = value / reference
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def render_table(results: list[Result]) -> str:
    """Render a Markdown table of throughputs and ratios to the references."""
    by_name = {r.backend.name: r for r in results}
    header = ["backend", "N", "set ops/s", "get ops/s"]
    for ref in REFERENCES:
        header += [f"set vs {ref}", f"get vs {ref}"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for r in results:
        row = [r.backend.name, f"{r.n:,}", f"{r.set_ops:,.0f}", f"{r.get_ops:,.0f}"]
        for ref in REFERENCES:
            base = by_name.get(ref)
            row += [ratio(r.set_ops, base.set_ops if base else None),
                    ratio(r.get_ops, base.get_ops if base else None)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
        for row in rows
    )


def render_sizes(results: list[Result]) -> str:
    """A Markdown table per size: ns per get and per set, with ratios (how
    many times faster than the reference: reference time / this time)."""
    header = ["N", "backend", "get ns", "set ns"]
    for ref in REFERENCES:
        header += [f"get vs {ref}", f"set vs {ref}"]
    rows = [header, ["---:", "---"] + ["---:"] * (len(header) - 2)]
    for r in results:
        same = {x.backend.name: x for x in results if x.n == r.n}
        row = [f"{r.n:,}", r.backend.name, f"{1e9 / r.get_ops:,.0f}", f"{1e9 / r.set_ops:,.0f}"]
        for ref in REFERENCES:
            base = same.get(ref)
            row += [ratio(r.get_ops, base.get_ops if base else None),
                    ratio(r.set_ops, base.set_ops if base else None)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
        for row in rows
    )


def parse_sizes(text: str) -> list[int]:
    """``1000,100000,1e6`` -> [1000, 100000, 1000000]."""
    sizes = [int(float(x)) for x in text.replace("_", "").split(",") if x]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sizes wants a comma-separated list of key counts >= 1")
    return sizes


def load_backends(names: Sequence[str]) -> tuple[list[Backend], list[str]]:
    """The backends that can run here, and a note for each that cannot."""
    backends: list[Backend] = []
    skipped: list[str] = []
    for name in names:
        try:
            backends.append(BACKENDS[name]())
        except Unavailable as exc:
            skipped.append(f"{name}: skipped, {exc}")
    return backends, skipped


def start_report(args: argparse.Namespace, title: str) -> str:
    """Make the run's directory; print the title and the interpreter line."""
    root = tempfile.mkdtemp(prefix="dbm_shm_bench_", dir=args.dir or default_base_dir())
    print(title + "\n")
    print(f"- Python {platform.python_version()} ({platform.python_implementation()}) "
          f"at {sys.executable}, {platform.platform()}")
    return root


def main_sizes(args: argparse.Namespace) -> int:
    """``--sizes``: one run over every size, one table."""
    backends, skipped = load_backends(args.only or list(SIZES_BACKENDS))
    root = start_report(args, "# dbm_shm get/set benchmark by size")
    print(f"- sizes {', '.join(f'{n:,}' for n in args.sizes)}; random keys of {args.key_size} B, "
          f"values {args.value_size} B; seed {args.seed}; best of {args.repeat}; "
          f"gets repeated to >= {SIZES_MIN_GETS:,} lookups per round")
    print(f"- files in a fresh folder in {os.path.dirname(root)} ({filesystem_type(root)}); "
          f"DSHM_NO_FASTPATH={os.environ.get('DSHM_NO_FASTPATH', '')!r}")
    for backend in backends:
        print(f"- {backend.name}: {backend.version}")
    print(flush=True)
    results: list[Result] = []
    failed: list[str] = []
    try:
        for n in args.sizes:
            keys, values = generate(n, args.key_size, args.value_size, args.seed)
            work = make_workload(keys, values, args.seed)
            passes = max(1, -(-SIZES_MIN_GETS // n))
            for backend in backends:
                print(f"running {backend.name} (N={n:,})...", file=sys.stderr, flush=True)
                try:
                    results.append(run_backend(backend, work, root, args.repeat, passes))
                except Exception as exc:  # report it and go on with the other peers
                    failed.append(f"{backend.name} at N={n:,}: FAILED, {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(render_sizes(results))
    notes = [f"{b.name}: {b.note}" for b in backends if b.note] + failed + skipped
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    return 1 if failed else 0


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        description="Set/get throughput of dbm_shm and its peers, with ratios.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--n", type=int, default=DEFAULT_N,
                      help=f"keys per backend (default {DEFAULT_N:,})")
    size.add_argument("--quick", action="store_const", dest="n", const=QUICK_N,
                      help=f"smoke run: --n {QUICK_N:,}")
    parser.add_argument("--slow-n", type=int, default=DEFAULT_SLOW_N,
                        help="keys for the slow peers (dbm.dumb, SQLite), "
                             f"capped at --n (default {DEFAULT_SLOW_N:,})")
    parser.add_argument("--key-size", type=int, default=16, help="key bytes (default 16)")
    parser.add_argument("--value-size", type=int, default=100,
                        help="value bytes (default 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for keys, values and read order (default 0)")
    parser.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                        help="comma-separated backends to run, from: "
                             + ", ".join(BACKENDS))
    parser.add_argument("--dir", help="where the files go, in a fresh subdirectory "
                                      "(default /dev/shm if present, else the temp dir)")
    parser.add_argument("--sizes", type=parse_sizes,
                        help="comma-separated key counts (e.g. 1000,100000,1000000): one "
                             "table over all of them, in ns per operation; --n is then unused")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per backend; the best is reported (default 1)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.slow_n < 1 or args.repeat < 1:
        parser.error("--n, --slow-n and --repeat must be at least 1")
    if args.key_size < 1 or args.value_size < 0:
        parser.error("--key-size must be at least 1 and --value-size at least 0")
    if 256 ** min(args.key_size, 8) < max([args.n] + (args.sizes or [])):
        parser.error(f"{max([args.n] + (args.sizes or [])):,} distinct keys do not fit in {args.key_size} bytes")
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir} is not a directory")
    unknown = sorted(set(args.only or ()) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(BACKENDS)}")
    return args


def default_base_dir() -> str:
    """``/dev/shm`` when it is a writable directory, else the temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 if a backend failed, else 0."""
    args = parse_args(argv)
    if args.sizes:
        return main_sizes(args)
    slow_n = min(args.slow_n, args.n)
    backends, skipped = load_backends(args.only or list(BACKENDS))
    root = start_report(args, "# dbm_shm get/set benchmark")
    print(f"- N = {args.n:,} (slow peers {slow_n:,}); key {args.key_size} B, "
          f"value {args.value_size} B; seed {args.seed}; best of {args.repeat}")
    print(f"- files in a fresh folder in {os.path.dirname(root)} ({filesystem_type(root)})")
    for backend in backends:
        print(f"- {backend.name}: {backend.version}")
    print(flush=True)

    keys, values = generate(args.n, args.key_size, args.value_size, args.seed)
    workloads = {args.n: make_workload(keys, values, args.seed)}
    if slow_n != args.n:
        workloads[slow_n] = make_workload(keys[:slow_n], values[:slow_n], args.seed)

    results: list[Result] = []
    failed: list[str] = []
    try:
        for backend in backends:
            work = workloads[slow_n if backend.slow else args.n]
            print(f"running {backend.name} (N={work.n:,})...", file=sys.stderr, flush=True)
            try:
                results.append(run_backend(backend, work, root, args.repeat))
            except Exception as exc:  # report it and go on with the other peers
                failed.append(f"{backend.name}: FAILED, {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(render_table(results))
    notes = [f"{r.backend.name}: {r.backend.note}" for r in results if r.backend.note]
    if any(r.n != args.n for r in results):
        notes.append(f"rows with a smaller N are compared with references run at "
                     f"N={args.n:,}; per-operation cost grows with N "
                     f"(--slow-n {args.n} compares like with like)")
    notes += failed + skipped
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
