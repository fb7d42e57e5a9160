"""Peers and scenarios behind ``benchmarks/report.py``.

Every function named in :data:`SCENARIOS` runs in a child process of its own
(``report.py`` starts one per scenario, size and backend, with the spawn start
method), so one backend's heap, page cache mappings or background threads
never weigh on the next one's numbers. A child builds its data from a seed,
measures, checks what it read, removes its files and sends back a dict of
plain numbers.

The peers reuse ``bench_get_put``'s backends (opening, the timed bulk bodies,
versions and notes) and add what the other scenarios need: a third open flag
(``'w'``), single-operation callables for latency sampling, a shelf, the size
of what is on disk, and a way for other processes to reach the same store.
``UltraDict`` and ``multiprocessing.Manager().dict()`` are added here.
"""

from __future__ import annotations

import gc
import glob
import hashlib
import multiprocessing as mp
import os
import platform
import random
import shelve
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import MutableMapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # spawned children and importers from elsewhere
    sys.path.insert(0, HERE)

import bench_get_put as bgp  # noqa: E402  (needs HERE on sys.path)
from bench_get_put import Unavailable  # noqa: E402

Handle = Any

#: POSIX shared memory segments of UltraDict runs start with this, then the
#: parent's run token, so a crashed child's leftovers can be found and removed.
SHM_PREFIX = "dshmbench_"
SHM_DIR = "/dev/shm"

#: Scenarios in which each peer takes part (``lmdb-1txn`` is LMDB's best
#: case for bulk loads; it appears only where that case means something).
ALL_SCENARIOS = ("scale", "values", "shelve", "multiproc", "opentime")


# --------------------------------------------------------------------------
# Helpers


def noop(*_args: Any) -> None:
    """Do nothing (the default ``flush``/``remove``)."""


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-int(q * 1_000_000) * len(sorted_values) // 1_000_000))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def dir_size(directory: str) -> Tuple[int, int]:
    """Apparent (``st_size``) and allocated (``st_blocks``) bytes of the files below."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def timer_overhead_ns(rounds: int = 20_000) -> float:
    """Median cost of two back-to-back ``perf_counter_ns`` calls."""
    ns = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        t0 = ns()
        samples.append(ns() - t0)
    return float(statistics.median(samples))


def sample_set_ns(put: Callable[[bytes, bytes], Any], keys: Sequence[bytes],
                  values: Sequence[Any]) -> List[int]:
    """Time every ``put(key, value)`` alone, in nanoseconds (GC off)."""
    ns = time.perf_counter_ns
    out: List[int] = []
    append = out.append
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for key, value in zip(keys, values):
            t0 = ns()
            put(key, value)
            append(ns() - t0)
    finally:
        if was:
            gc.enable()
    return out


def sample_get_ns(get: Callable[[bytes], Any], keys: Sequence[bytes]) -> List[int]:
    """Time every ``get(key)`` alone, in nanoseconds (GC off)."""
    ns = time.perf_counter_ns
    out: List[int] = []
    append = out.append
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for key in keys:
            t0 = ns()
            get(key)
            append(ns() - t0)
    finally:
        if was:
            gc.enable()
    return out


def mp_key(i: int) -> bytes:
    """Key ``i`` of the multi-process store, as ``stress_readers.py`` makes them.

    (Not imported from there: that module imports dbm_shm at once, and the
    report must still run, and say so, when dbm_shm cannot be imported.)
    """
    return b"key%09d" % i


def generate(n: int, key_size: int, value_size: int, seed: int
             ) -> Tuple[List[bytes], List[bytes]]:
    """N distinct random keys and N random values, fixed by the seed.

    Keys come from ``bench_get_put.generate``; values are drawn here in
    blocks, since one ``randbytes`` call cannot make more than 256 MiB
    (10M values of 100 bytes are 1 GB).
    """
    keys, _ = bgp.generate(n, key_size, 0, seed)
    rng = random.Random(f"{seed}/values/{value_size}")
    values: List[bytes] = []
    if value_size == 0:
        return keys, [b""] * n
    per_block = max(1, (64 << 20) // value_size)
    while len(values) < n:
        count = min(per_block, n - len(values))
        blob = rng.randbytes(count * value_size)
        values += [blob[i:i + value_size] for i in range(0, len(blob), value_size)]
    return keys, values


def shelf_object(i: int) -> Dict[str, Any]:
    """The object the shelve scenario stores: a dict of a few fields."""
    return {
        "id": i,
        "name": f"user{i:07d}",
        "email": f"user{i:07d}@example.org",
        "score": i * 0.25,
        "tags": ["alpha", "beta"] if i % 2 else ["gamma"],
        "active": i % 3 != 0,
    }


# --------------------------------------------------------------------------
# Peers


class Peer:
    """One store, as every scenario drives it.

    Subclasses built on ``bench_get_put`` get ``version``, ``note``, ``slow``
    and the timed bulk bodies from its ``Backend``. ``open(path, flag,
    expect)`` takes ``'n'`` (new, empty), ``'r'`` (read only) or ``'w'``
    (read-write, existing); ``expect`` is the payload the caller is about to
    store, for stores that must size a buffer up front.
    """

    name = ""
    file_based = True        #: has files whose size means something
    scenarios: Tuple[str, ...] = ALL_SCENARIOS
    mp_readers = ""          #: why reader processes do not apply ("" = they do)
    mp_writer = ""           #: why a writer beside readers does not apply
    opentime_na = ""         #: why open time does not apply
    slow = False
    version = ""
    note = ""

    def __init__(self, base: Optional[bgp.Backend] = None) -> None:
        self.base = base
        if base is not None:
            self.version, self.note, self.slow = base.version, base.note, base.slow

    # -- plain operations
    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        assert self.base is not None
        return self.base.open(path, flag)

    def close(self, h: Handle) -> None:
        h.close()

    def put_all(self, h: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        (self.base.put_all if self.base else bgp.put_mapping)(h, keys, values)

    def get_all(self, h: Handle, keys: Sequence[bytes]) -> List[bytes]:
        return (self.base.get_all if self.base else bgp.get_mapping)(h, keys)

    def bulk_load(self, h: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Fastest way to fill a store (untimed set-up for other scenarios)."""
        self.put_all(h, keys, values)

    def setter(self, h: Handle) -> Callable[[bytes, bytes], Any]:
        return h.__setitem__

    def getter(self, h: Handle) -> Callable[[bytes], Any]:
        return h.__getitem__

    def flush(self, h: Handle) -> None:
        """Make the writes so far visible to other processes."""

    # -- shelve
    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        return shelve.Shelf(self.open(path, flag, expect))

    def finish_shelf(self, shelf: Any) -> None:
        """End of the timed stores (commits where a store needs it)."""

    # -- files and sharing
    def size(self, path: str) -> Optional[Tuple[int, int]]:
        """(apparent, allocated) bytes of the closed store at ``path``."""
        return dir_size(os.path.dirname(path)) if self.file_based else None

    def share(self, h: Handle, path: str) -> Any:
        """What another process needs to reach this store (picklable)."""
        return path

    def attach(self, locator: Any, flag: str) -> Handle:
        return self.open(locator, flag)

    def remove(self, path: str) -> None:
        """Remove what the store left outside its directory."""

    def shutdown(self) -> None:
        """Release per-process resources (servers) at the end of a task."""


class DictPeer(Peer):
    """The in-process ``dict``: the physical reference, no file, one process."""

    name = "dict"
    file_based = False
    mp_readers = mp_writer = "in-process only: other processes cannot see it"
    opentime_na = "no file to open"

    def __init__(self) -> None:
        super().__init__(bgp.make_dict())
        self.note = "the in-process dict; the physical reference, no file"
        self.stores: Dict[str, dict] = {}

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        if flag == "n":
            self.stores[path] = {}
        return self.stores[path]

    def close(self, h: Handle) -> None:
        pass

    def remove(self, path: str) -> None:
        self.stores.pop(path, None)


class DbmShmPeer(Peer):
    name = "dbm_shm"

    def __init__(self) -> None:
        super().__init__(bgp.make_dbm_shm())
        self.note = "dbm_shm.open(path, 'n'), reopened 'r' to read, 'w' to write beside readers"

    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        import dbm_shm

        return dbm_shm.open_shelf(path, flag)


class GdbmPeer(Peer):
    name = "dbm.gnu"
    mp_writer = ("gdbm locks the whole file, so a writer's open excludes every "
                 "reader; flag 'u' drops the lock, but then readers may see a "
                 "half-written file")

    def __init__(self) -> None:
        super().__init__(bgp.make_gdbm())

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        import dbm.gnu

        return dbm.gnu.open(path, {"n": "nf", "w": "wf"}.get(flag, flag))


class LmdbMapping(MutableMapping):
    """LMDB as a mapping, one transaction per operation (for ``shelve.Shelf``)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getitem__(self, key: bytes) -> bytes:
        with self.env.begin() as txn:
            value = txn.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        with self.env.begin(write=True) as txn:
            if not txn.delete(key):
                raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        with self.env.begin() as txn:
            return iter(list(txn.cursor().iternext(values=False)))

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def close(self) -> None:
        self.env.close()


class LmdbPeer(Peer):
    name = "lmdb"

    def __init__(self) -> None:
        super().__init__(bgp.make_lmdb(one_txn=False))

    def bulk_load(self, h: Handle, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        bgp.put_lmdb_one_txn(h, keys, values)

    def setter(self, env: Handle) -> Callable[[bytes, bytes], Any]:
        begin = env.begin

        def put(key: bytes, value: bytes) -> None:
            with begin(write=True) as txn:
                txn.put(key, value)
        return put

    def getter(self, env: Handle) -> Callable[[bytes], Any]:
        begin = env.begin

        def get(key: bytes) -> Any:
            with begin() as txn:
                return txn.get(key)
        return get

    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        return shelve.Shelf(LmdbMapping(self.open(path, flag)))


class Lmdb1TxnPeer(LmdbPeer):
    """LMDB with every operation of a phase in one transaction (its best case)."""

    name = "lmdb-1txn"
    scenarios = ("scale",)

    def __init__(self) -> None:
        Peer.__init__(self, bgp.make_lmdb(one_txn=True))
        self.note += "; latency samples: txn.put / txn.get inside one open transaction"
        self.txns: Dict[int, Any] = {}

    def _txn(self, env: Handle, write: bool) -> Any:
        txn = self.txns.get(id(env))
        if txn is None:
            txn = self.txns[id(env)] = env.begin(write=write)
        return txn

    def setter(self, env: Handle) -> Callable[[bytes, bytes], Any]:
        return self._txn(env, True).put

    def getter(self, env: Handle) -> Callable[[bytes], Any]:
        return self._txn(env, False).get

    def close(self, env: Handle) -> None:
        txn = self.txns.pop(id(env), None)
        if txn is not None:
            txn.commit()
        env.close()


class DbmSqlite3Peer(Peer):
    name = "dbm.sqlite3"

    def __init__(self) -> None:
        super().__init__(bgp.make_dbm_sqlite3())

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        import dbm.sqlite3

        return dbm.sqlite3.open(path, flag)


class SqliteDictPeer(Peer):
    name = "sqlitedict"

    def __init__(self) -> None:
        super().__init__(bgp.make_sqlitedict())
        self.note += ("; latency samples of set time db[k] = v alone (it only queues "
                      "the write for sqlitedict's thread); a writer beside readers "
                      "commits every 256 writes; the shelf is SqliteDict with its "
                      "own pickling, committed once after the stores")

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        # sqlitedict's 'w' empties the table: 'c' is what dbm calls 'w'.
        return self.base.open(path, "c" if flag == "w" else flag)  # type: ignore[union-attr]

    def flush(self, h: Handle) -> None:
        h.commit()

    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        import sqlitedict

        return sqlitedict.SqliteDict(path, flag=flag, outer_stack=False)

    def finish_shelf(self, shelf: Any) -> None:
        shelf.commit()


class DumbPeer(Peer):
    name = "dbm.dumb"
    mp_writer = ("no cross-process coherence: each reader keeps the index it "
                 "read at open, and the writer rewrites it only on sync/close")

    def __init__(self) -> None:
        super().__init__(bgp.make_dumb())
        self.note = ("the stdlib's pure-Python store: an index (.dir) read whole at "
                     "open and a data file (.dat) of 512-byte blocks")


class UltraDictPeer(Peer):
    """UltraDict: a dict replica in every process, fed by a shared-memory stream."""

    name = "UltraDict"
    slow = False

    def __init__(self) -> None:
        super().__init__()
        try:
            from UltraDict import UltraDict
        except ImportError as exc:
            raise Unavailable("UltraDict is not installed (pip install UltraDict)") from exc
        self.cls = UltraDict
        self.version = f"UltraDict {bgp.package_version('UltraDict', UltraDict)}"
        self.file_based = False
        self.note = ("shared memory (POSIX shm), not a file; every process keeps "
                     "a full dict replica and replays the update stream of "
                     "pickled (key, value) records; buffer_size and "
                     "full_dump_size = 1.5 x the payload + 1 MiB; shared_lock="
                     "False (one writing process at a time, as in every scenario "
                     "here; several writing processes need shared_lock=True, "
                     "which the atomics package provides and which is slower); "
                     "size = the shm pages actually allocated; get on a reopened "
                     "handle returns objects unpickled at attach")

    @staticmethod
    def shm_name(path: str) -> str:
        token = os.environ.get("DSHM_BENCH_TOKEN", "x")
        digest = hashlib.sha1(path.encode()).hexdigest()[:16]
        return f"{SHM_PREFIX}{token}_{digest}"

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        name = self.shm_name(path)
        if flag == "n":
            self.remove(path)
            size = int(expect * 1.5) + (1 << 20)
            return self.cls(name=name, create=True, buffer_size=size,
                            full_dump_size=size, shared_lock=False, auto_unlink=False)
        return self.cls(name=name, create=False, auto_unlink=False)

    def size(self, path: str) -> Optional[Tuple[int, int]]:
        apparent = allocated = 0
        for seg in glob.glob(os.path.join(SHM_DIR, self.shm_name(path) + "*")):
            st = os.stat(seg)
            apparent += st.st_size
            allocated += st.st_blocks * 512
        return apparent, allocated

    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        return self.open(path, flag, expect)  # it pickles objects itself

    def remove(self, path: str) -> None:
        for seg in glob.glob(os.path.join(SHM_DIR, self.shm_name(path) + "*")):
            try:
                os.unlink(seg)
            except OSError:
                pass


class ManagerDictPeer(Peer):
    """``multiprocessing.Manager().dict()``: a dict in a server process."""

    name = "Manager.dict"
    slow = True
    file_based = False
    opentime_na = "no file: the dict lives in the manager's server process"

    def __init__(self) -> None:
        super().__init__()
        self.version = f"Python {platform.python_version()}"
        self.note = ("a dict in a multiprocessing manager server (spawn); every "
                     "operation is a round trip through a socket; the shelf is "
                     "the proxy itself (objects pickled both ways)")
        self.manager: Any = None
        self.stores: Dict[str, Any] = {}

    def open(self, path: str, flag: str, expect: int = 0) -> Handle:
        if flag == "n":
            if self.manager is None:
                self.manager = mp.get_context("spawn").Manager()
            self.stores[path] = self.manager.dict()
        return self.stores[path]

    def close(self, h: Handle) -> None:
        pass

    def open_shelf(self, path: str, flag: str, expect: int = 0) -> Any:
        return self.open(path, flag)

    def share(self, h: Handle, path: str) -> Any:
        return h  # the proxy pickles into a reference to the same server dict

    def attach(self, locator: Any, flag: str) -> Handle:
        return locator

    def remove(self, path: str) -> None:
        self.stores.pop(path, None)

    def shutdown(self) -> None:
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None


#: Every peer, in the order of the report's rows.
PEERS: Dict[str, Callable[[], Peer]] = {
    "dict": DictPeer,
    "dbm_shm": DbmShmPeer,
    "dbm.gnu": GdbmPeer,
    "lmdb": LmdbPeer,
    "lmdb-1txn": Lmdb1TxnPeer,
    "dbm.sqlite3": DbmSqlite3Peer,
    "sqlitedict": SqliteDictPeer,
    "dbm.dumb": DumbPeer,
    "UltraDict": UltraDictPeer,
    "Manager.dict": ManagerDictPeer,
}


def make_peer(name: str) -> Peer:
    """Build peer ``name``; raises :class:`Unavailable` when it cannot run here."""
    return PEERS[name]()


# --------------------------------------------------------------------------
# Scenarios (each runs in its own child process)


def _run_dir(root: str, peer: Peer) -> Tuple[str, str]:
    rundir = tempfile.mkdtemp(prefix=f"{peer.name}-", dir=root)
    return rundir, os.path.join(rundir, "db")


def _cleanup(peer: Peer, rundir: str, path: str) -> None:
    peer.remove(path)
    shutil.rmtree(rundir, ignore_errors=True)


def measure_getset(peer: Peer, keys: List[bytes], values: List[bytes], n: int,
                   sample: int, seed: int, rounds: int, root: str) -> Dict[str, Any]:
    """Set and get throughput and sampled latency of one peer at one size.

    Each round, on a fresh store: ``put_all`` of the first ``n`` pairs
    (timed as a whole), then ``sample`` more keys set one at a time, each
    timed alone (the latency of a set into a store of ``n`` keys); close;
    reopen read-only, ``get_all`` of the ``n`` keys in a shuffled order
    (timed as a whole), then ``sample`` of them looked up one at a time,
    each timed alone; close and check every value. Throughput is the best
    round; latency samples are pooled over the rounds.
    """
    work = bgp.make_workload(keys[:n], values[:n], seed)
    extra_k, extra_v = keys[n:n + sample], values[n:n + sample]
    get_keys = work.read_keys[:sample]
    record = len(keys[0]) + len(values[0])
    expect = (n + len(extra_k)) * record
    best_set = best_get = float("inf")
    set_ns: List[int] = []
    get_ns: List[int] = []
    size = None
    for _ in range(rounds):
        rundir, path = _run_dir(root, peer)
        try:
            h = peer.open(path, "n", expect)
            try:
                set_s, _ = bgp.timed(peer.put_all, h, work.keys, work.values)
                set_ns += sample_set_ns(peer.setter(h), extra_k, extra_v)
                peer.flush(h)
            finally:
                peer.close(h)
            size = peer.size(path)
            h = peer.open(path, "r", expect)
            try:
                get_s, got = bgp.timed(peer.get_all, h, work.read_keys)
                get_ns += sample_get_ns(peer.getter(h), get_keys)
            finally:
                peer.close(h)
            bgp.verify(got, work)
            del got
        finally:
            _cleanup(peer, rundir, path)
        best_set, best_get = min(best_set, set_s), min(best_get, get_s)
    set_ns.sort()
    get_ns.sort()
    return {
        "n": n, "rounds": rounds, "samples": len(get_ns),
        "key_size": len(keys[0]), "value_size": len(values[0]),
        "set_ops": n / best_set, "get_ops": n / best_get,
        "set_p50_ns": percentile(set_ns, 0.50), "set_p99_ns": percentile(set_ns, 0.99),
        "get_p50_ns": percentile(get_ns, 0.50), "get_p99_ns": percentile(get_ns, 0.99),
        "size_apparent": size[0] if size else None,
        "size_allocated": size[1] if size else None,
        "stored_bytes": expect,
    }


def scenario_scale(peer: Peer, p: Dict[str, Any]) -> Dict[str, Any]:
    """Set/get throughput and latency with ``p['n']`` keys of 16 B, values of 100 B."""
    n, sample = p["n"], p["sample"]
    keys, values = generate(n + sample, p["key_size"], p["value_size"], p["seed"])
    return measure_getset(peer, keys, values, n, sample, p["seed"], p["rounds"], p["root"])


def scenario_values(peer: Peer, p: Dict[str, Any]) -> Dict[str, Any]:
    """Set/get throughput and latency with values of ``p['value_size']`` bytes."""
    n, sample = p["n"], p["sample"]
    keys, values = generate(n + sample, p["key_size"], p["value_size"], p["seed"])
    return measure_getset(peer, keys, values, n, sample, p["seed"], p["rounds"], p["root"])


def scenario_shelve(peer: Peer, p: Dict[str, Any]) -> Dict[str, Any]:
    """Store ``n`` pickled dicts through a shelf, reopen, read them back.

    Timed: the stores (and the one commit a store needs before anything is
    stored), then the lookups in a shuffled order; every object read back is
    compared with the original.
    """
    n, rounds = p["n"], p["rounds"]
    keys = [f"user:{i:08d}" for i in range(n)]
    objs = [shelf_object(i) for i in range(n)]
    order = list(range(n))
    random.Random(p["seed"]).shuffle(order)
    read_keys = [keys[i] for i in order]
    expected = [objs[i] for i in order]
    expect = n * 200
    best_set = best_get = float("inf")

    def store(shelf: Any) -> None:
        for key, obj in zip(keys, objs):
            shelf[key] = obj
        peer.finish_shelf(shelf)

    def load(shelf: Any) -> List[Any]:
        return [shelf[key] for key in read_keys]

    for _ in range(rounds):
        rundir, path = _run_dir(root=p["root"], peer=peer)
        try:
            shelf = peer.open_shelf(path, "n", expect)
            try:
                set_s, _ = bgp.timed(store, shelf)
            finally:
                peer.close(shelf)
            shelf = peer.open_shelf(path, "r", expect)
            try:
                get_s, got = bgp.timed(load, shelf)
            finally:
                peer.close(shelf)
            if got != expected:
                bad = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
                raise bgp.VerificationError(f"{read_keys[bad]} read back as {got[bad]!r:.80}")
        finally:
            _cleanup(peer, rundir, path)
        best_set, best_get = min(best_set, set_s), min(best_get, get_s)
    import pickle

    return {"n": n, "rounds": rounds, "set_ops": n / best_set, "get_ops": n / best_get,
            "pickled_bytes": len(pickle.dumps(objs[n // 2]))}


def _worker_failed(start: Any, out: Any, role: str) -> None:
    """Report a worker's exception and break the start barrier for the others."""
    out.put((role, 0, 0.0, 0, traceback.format_exc()))
    try:
        start.abort()
    except Exception:
        pass


def collect(out: Any, procs: Sequence[Any], count: int, timeout: float) -> List[Any]:
    """``count`` results from ``out``; fails early when a process died without one."""
    import queue

    results: List[Any] = []
    deadline = time.monotonic() + timeout
    while len(results) < count:
        try:
            results.append(out.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            try:
                results.append(out.get(timeout=2))
                continue
            except queue.Empty:
                raise RuntimeError(f"a worker process died (exit code {dead[0]})") from None
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result from a worker process after {timeout:.0f} s")
    return results


def _mp_reader(peer_name: str, locator: Any, nkeys: int, seed: int,
               start: Any, stop: Any, out: Any) -> None:
    """Reader process: random lookups until told to stop; reports reads/s."""
    try:
        peer = make_peer(peer_name)
        h = peer.attach(locator, "r")
        get = peer.getter(h)
        rng = random.Random(seed)
        keys = [mp_key(rng.randrange(nkeys)) for _ in range(16384)]
        chunks = [keys[i:i + 256] for i in range(0, len(keys), 256)]
        n = bad = 0
        start.wait()
        t0 = time.perf_counter()
        while not stop.is_set():
            for key in chunks[(n >> 8) & 63]:
                if not get(key):
                    bad += 1
            n += 256
        elapsed = time.perf_counter() - t0
        peer.close(h)
        out.put(("reader", n, elapsed, bad, ""))
    except BaseException:
        _worker_failed(start, out, "reader")


def _mp_writer(peer_name: str, locator: Any, nkeys: int, vsize: int, seed: int,
               start: Any, stop: Any, out: Any) -> None:
    """Writer process: overwrites random keys until told to stop."""
    try:
        peer = make_peer(peer_name)
        h = peer.attach(locator, "w")
        put = peer.setter(h)
        rng = random.Random(seed)
        keys = [mp_key(rng.randrange(nkeys)) for _ in range(16384)]
        vals = [bytes([65 + i]) * vsize for i in range(8)]
        n = 0
        start.wait()
        t0 = time.perf_counter()
        while not stop.is_set():
            base = n & 16383
            for j in range(256):
                put(keys[base + j], vals[j & 7])
            peer.flush(h)
            n += 256
        elapsed = time.perf_counter() - t0
        peer.close(h)
        out.put(("writer", n, elapsed, 0, ""))
    except BaseException:
        _worker_failed(start, out, "writer")


def scenario_multiproc(peer: Peer, p: Dict[str, Any]) -> Dict[str, Any]:
    """Reader processes (1 and 2), alone and beside one writer process.

    The store holds ``p['keys']`` keys (``key%09d``) with values of
    ``p['value_size']`` bytes. Each phase lasts ``p['seconds']``; every
    process counts its own operations over its own time, and the rates of
    the readers are added up. Processes are started with spawn and reach
    the store through :meth:`Peer.attach`.
    """
    ctx = mp.get_context("spawn")
    nkeys, vsize, seconds = p["keys"], p["value_size"], p["seconds"]
    rundir, path = _run_dir(p["root"], peer)
    phases: Dict[str, Any] = {}
    try:
        keys = [mp_key(i) for i in range(nkeys)]
        h = peer.open(path, "n", nkeys * (12 + vsize))
        try:
            peer.bulk_load(h, keys, [b"v" * vsize] * nkeys)
            peer.flush(h)
            locator = peer.share(h, path)
        finally:
            peer.close(h)
        for label, readers, writer in p["phases"]:
            if writer and peer.mp_writer:
                continue
            start = ctx.Barrier(readers + writer + 1)
            stop = ctx.Event()
            out = ctx.Queue()
            procs = [ctx.Process(target=_mp_reader,
                                 args=(peer.name, locator, nkeys, 1000 + r, start, stop, out))
                     for r in range(readers)]
            if writer:
                procs.append(ctx.Process(target=_mp_writer,
                                         args=(peer.name, locator, nkeys, vsize, 7,
                                               start, stop, out)))
            for proc in procs:
                proc.start()
            try:
                try:
                    start.wait(timeout=600)
                except threading.BrokenBarrierError:
                    res = collect(out, procs, 1, 60)
                    raise RuntimeError(f"phase {label}: a worker failed:\n{res[0][4]}") from None
                time.sleep(seconds)
                stop.set()
                res = collect(out, procs, len(procs), 600)
            finally:
                stop.set()
                for proc in procs:
                    proc.join(60)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
            errors = [r[4] for r in res if r[4]]
            if errors:
                raise RuntimeError(f"phase {label}: a worker failed:\n{errors[0]}")
            if any(r[3] for r in res):
                raise bgp.VerificationError(f"phase {label}: a reader got an empty value")
            phases[label] = {
                "reads_s": sum(r[1] / r[2] for r in res if r[0] == "reader" and r[2]),
                "writes_s": sum(r[1] / r[2] for r in res if r[0] == "writer" and r[2]),
            }
    finally:
        _cleanup(peer, rundir, path)
    return {"keys": nkeys, "seconds": seconds, "phases": phases}


def _open_probe(peer_name: str, locator: Any, key: bytes, value: bytes, out: Any) -> None:
    """Fresh process: time open('r') + one lookup; close is not timed."""
    try:
        peer = make_peer(peer_name)
        t0 = time.perf_counter()
        h = peer.attach(locator, "r")
        got = peer.getter(h)(key)
        t1 = time.perf_counter()
        peer.close(h)
        if got != value:
            raise bgp.VerificationError("open-time probe read a wrong value")
        out.put((t1 - t0, ""))
    except BaseException:
        out.put((0.0, traceback.format_exc()))


def scenario_opentime(peer: Peer, p: Dict[str, Any]) -> Dict[str, Any]:
    """Time to open a store of ``p['n']`` keys and read one key, in fresh processes."""
    ctx = mp.get_context("spawn")
    n = p["n"]
    keys, values = generate(n, p["key_size"], p["value_size"], p["seed"])
    rundir, path = _run_dir(p["root"], peer)
    times: List[float] = []
    try:
        h = peer.open(path, "n", n * (p["key_size"] + p["value_size"]))
        try:
            peer.bulk_load(h, keys, values)
            peer.flush(h)
            locator = peer.share(h, path)
        finally:
            peer.close(h)
        size = peer.size(path)
        probe = n // 2
        del keys[probe + 1:], values[probe + 1:]
        for _ in range(p["probes"]):
            out = ctx.Queue()
            proc = ctx.Process(target=_open_probe,
                               args=(peer.name, locator, keys[probe], values[probe], out))
            proc.start()
            seconds, err = collect(out, [proc], 1, 1800)[0]
            proc.join(60)
            if err:
                raise RuntimeError(f"open-time probe failed:\n{err}")
            times.append(seconds)
    finally:
        _cleanup(peer, rundir, path)
    return {"n": n, "probes": len(times), "open_median_s": statistics.median(times),
            "open_min_s": min(times),
            "size_apparent": size[0] if size else None,
            "size_allocated": size[1] if size else None}


SCENARIOS: Dict[str, Callable[[Peer, Dict[str, Any]], Dict[str, Any]]] = {
    "scale": scenario_scale,
    "values": scenario_values,
    "shelve": scenario_shelve,
    "multiproc": scenario_multiproc,
    "opentime": scenario_opentime,
}


def child_main(conn: Any, task: Dict[str, Any]) -> None:
    """Entry point of a task's child process: run it, send ("ok"|"skip"|"error", ...)."""
    os.environ["DSHM_BENCH_TOKEN"] = task["token"]
    peer: Optional[Peer] = None
    try:
        peer = make_peer(task["peer"])
        result = SCENARIOS[task["scenario"]](peer, task["params"])
        conn.send(("ok", result))
    except Unavailable as exc:
        conn.send(("skip", str(exc)))
    except BaseException as exc:  # report any failure to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        if peer is not None:
            try:
                peer.shutdown()
            except Exception:
                pass
        conn.close()


def run_task(task: Dict[str, Any], timeout: float) -> Tuple[str, Any]:
    """Run ``task`` in a fresh spawned process; ("ok", result), ("skip"|"error"|"timeout", text)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(send, task))
    proc.start()
    send.close()
    status, payload = "timeout", f"no result after {timeout:.0f} s; killed"
    try:
        if recv.poll(timeout):
            try:
                status, payload = recv.recv()
            except EOFError:
                status, payload = "error", "the child died without a result"
    finally:
        proc.join(30 if status != "timeout" else 0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        recv.close()
    if status == "error" and proc.exitcode not in (0, None):
        payload = f"{payload} (exit code {proc.exitcode})"
    return status, payload


def remove_shm_leftovers(token: str) -> None:
    """Unlink the shared memory segments of this run (UltraDict) still present."""
    for seg in glob.glob(os.path.join(SHM_DIR, f"{SHM_PREFIX}{token}_*")):
        try:
            os.unlink(seg)
        except OSError:
            pass
