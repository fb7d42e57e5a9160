"""Shared helpers for tests/multiprocess and tests/crash (``_support.helpers``).

Everything here runs in REAL processes: the worker functions are targets for
``multiprocessing`` (spawn, fork or forkserver; they are module-level so a
spawned child can import them by name), and the crash child is this file run
as a script (``python helpers.py crash-child ...``) so its environment
(``DSHM_CRASH_AT``) is its own.

Values carry their own proof (``make_value`` / ``check_value``): a header
with the version and payload length, a payload derived from (key, header),
and a blake2b tag over key + header + payload. A torn value (a mix of two
writes), a value of another key, or bytes the writer never wrote all fail
the check.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue as queue_mod
import random
import signal
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# ---------------------------------------------------------------------------
# Self-checking values

_HDR = struct.Struct("<2sQQ")   # magic, version, payload length
_TAG = 16
MIN_VALUE = _HDR.size + _TAG    # 34 bytes: an empty payload


class BadValue(AssertionError):
    """A value that no writer wrote: torn, foreign or garbage."""


def _payload(key: bytes, hdr: bytes, size: int) -> bytes:
    block = hashlib.blake2b(key + hdr, digest_size=64).digest()
    reps, rest = divmod(size, 64)
    return block * reps + block[:rest]


def make_value(key: bytes, version: int, size: int) -> bytes:
    """The one value (key, version) may have, with a payload of `size` bytes."""
    hdr = _HDR.pack(b"V1", version, size)
    payload = _payload(key, hdr, size)
    tag = hashlib.blake2b(key + hdr + payload, digest_size=_TAG).digest()
    return b"".join((hdr, payload, tag))


def check_value(key: bytes, value: bytes) -> int:
    """Verify `value` was written for `key`; return its version."""
    if len(value) < MIN_VALUE:
        raise BadValue(f"{key!r}: value of {len(value)} bytes is too short: {value[:40]!r}")
    magic, version, size = _HDR.unpack_from(value)
    if magic != b"V1":
        raise BadValue(f"{key!r}: bad magic {value[:40]!r}")
    if len(value) != _HDR.size + size + _TAG:
        raise BadValue(f"{key!r}: header says {size} payload bytes, value has {len(value)} bytes (torn?)")
    hdr = value[:_HDR.size]
    body = value[_HDR.size:-_TAG]
    tag = hashlib.blake2b(key + hdr + body, digest_size=_TAG).digest()
    if tag != value[-_TAG:]:
        raise BadValue(f"{key!r}: tag mismatch for version {version}, {size} bytes (torn or foreign value)")
    if body != _payload(key, hdr, size):
        raise BadValue(f"{key!r}: payload is not the one version {version} writes")
    return version


def value_version(value: bytes) -> int:
    """The version in a value's header (no check)."""
    return _HDR.unpack_from(value)[1]


def pick_size(rng: random.Random, big: float = 0.0, big_size: int = 1 << 20,
              medium: float = 0.05) -> int:
    """Payload sizes: mostly small (0-300 bytes), a fraction `medium` of
    2-70 KB (past the small size classes), a fraction `big` around
    `big_size`."""
    r = rng.random()
    if r < big:
        return rng.randint(big_size * 3 // 4, big_size * 5 // 4)
    if r < big + medium:
        return rng.randint(2048, 70000)
    return rng.randint(0, 300)


def key_of(i: int) -> bytes:
    return b"k%07d" % i


# ---------------------------------------------------------------------------
# The calling thread's robust-futex list (Linux x86_64 glibc)

def robust_list_next() -> Optional[Tuple[int, int]]:
    """(head, head->next) of this thread's robust-futex list, from the
    get_robust_list system call; None where unsupported. With no robust
    mutex held the list is empty: next == head. Every dbm_shm call returns
    with the writer lock released, so after a call next must equal head;
    otherwise glibc keeps a pointer into the store's mapping that outlives
    the handle."""
    import ctypes
    import platform
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.c_void_p()
    ln = ctypes.c_size_t()
    if libc.syscall(274, 0, ctypes.byref(head), ctypes.byref(ln)) != 0 or not head.value:
        return None
    return head.value, ctypes.c_uint64.from_address(head.value).value


# ---------------------------------------------------------------------------
# Places to put stores

def store_dir(tmp_path: Path) -> Path:
    """A directory for store files: pytest's tmp_path (a real file system)
    unless DSHM_TEST_DIR names another (e.g. /dev/shm)."""
    base = os.environ.get("DSHM_TEST_DIR")
    if base:
        d = Path(base) / f"dshm-mp-{os.getpid()}-{tmp_path.name}"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path


def leftovers(path: Path) -> List[str]:
    """Files beside the store that a writer left behind (reorganize or 'n'
    temporaries)."""
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name.startswith(path.name + ".dshm-"))


# ---------------------------------------------------------------------------
# Running worker processes

def child_main(fn: Callable[..., Any]) -> Callable[..., None]:
    """Decorate a multiprocessing target: its return value (or its error)
    goes to the result queue passed as keyword `q` with the name `name`;
    an error also makes the exit code 1."""
    def wrapper(*args: Any, name: str, q: Any, **kw: Any) -> None:
        try:
            res = fn(*args, **kw)
        except BaseException:
            q.put((name, False, traceback.format_exc()))
            q.close()
            q.join_thread()
            os._exit(1)
        q.put((name, True, res))
        q.close()
        q.join_thread()
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    return wrapper


class Procs:
    """A set of worker processes of one multiprocessing context reporting
    to one queue. `run()` waits for all, kills stragglers at the deadline
    and raises AssertionError naming every failure: an error raised in the
    child, a non-zero exit code, death by a signal (negative exit code),
    or no report."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.q = ctx.Queue()
        self.procs: Dict[str, Any] = {}
        self.results: Dict[str, Any] = {}

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def kill_all(self) -> None:
        """Kill every worker still running (after a failure in the test)."""
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
                p.join(5)

    def start(self, name: str, target: Callable[..., None], *args: Any, **kw: Any) -> Any:
        # daemon: a worker left running by a failed test dies with pytest.
        p = self.ctx.Process(target=target, args=args, kwargs=dict(kw, name=name, q=self.q), name=name,
                             daemon=True)
        p.start()
        self.procs[name] = p
        return p

    def wait(self, timeout: float, only: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        names = set(only) if only is not None else set(self.procs)
        deadline = time.monotonic() + timeout
        errors: List[str] = []
        while True:
            try:
                n, ok, res = self.q.get(timeout=0.1)
                self.results[n] = (ok, res)
                continue
            except queue_mod.Empty:
                pass
            pending = [n for n in names if n not in self.results]
            if not pending:
                break
            if all(not self.procs[n].is_alive() for n in pending):
                # Give the feeder threads of dead children a moment to flush.
                try:
                    n, ok, res = self.q.get(timeout=1.0)
                    self.results[n] = (ok, res)
                    continue
                except queue_mod.Empty:
                    break
            if time.monotonic() > deadline:
                for n in pending:
                    if self.procs[n].is_alive():
                        errors.append(f"{n}: still running after {timeout:.0f} s (killed)")
                        self.procs[n].kill()
                break
        for n in sorted(names):
            p = self.procs[n]
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
            code = p.exitcode
            ok, res = self.results.get(n, (None, None))
            if ok is False:
                errors.append(f"{n}: raised:\n{res}")
            elif code is not None and code < 0:
                errors.append(f"{n}: killed by signal {signal.Signals(-code).name} (exit code {code})")
            elif code:
                errors.append(f"{n}: exit code {code}")
            elif ok is None:
                errors.append(f"{n}: exited without a report (exit code {code})")
        if errors:
            raise AssertionError("worker processes failed:\n" + "\n".join(errors))
        return {n: self.results[n][1] for n in names}


# ---------------------------------------------------------------------------
# Workers: readers and writers for tests/multiprocess

@child_main
def growth_writer(path: str, n: int, sh: Dict[str, Any], seed: int, n_readers: int,
                  reorg_at: Sequence[int], n_big: int, n_churn: int, tail_seconds: float) -> Dict[str, Any]:
    """Insert keys 0..n-1 (acknowledged count in sh['progress']), rewriting
    earlier keys, a few ~1 MiB keys and a set/delete churn on the way;
    reorganize at the given counts and at the end, then keep rewriting for
    `tail_seconds`. Every version is announced in sh['maxver'] before it is
    written."""
    import dbm_shm
    rng = random.Random(seed)
    db = dbm_shm.open(path, "w")
    deadline = time.monotonic() + 60
    while sh["ready"].value < n_readers:
        if time.monotonic() > deadline:
            raise RuntimeError("readers never became ready")
        time.sleep(0.005)
    ver = 0
    reorgs = 0
    big_every = max(1, n // (8 * max(1, n_big))) if n_big else 0
    reorg_set = set(reorg_at)
    maxver, progress = sh["maxver"], sh["progress"]

    def put(k: bytes, size: int) -> None:
        nonlocal ver
        ver += 1
        maxver.value = ver
        db[k] = make_value(k, ver, size)

    t0 = time.monotonic()
    for i in range(n):
        put(key_of(i), pick_size(rng, medium=0.005))
        progress.value = i + 1
        if i % 16 == 15:
            j = rng.randrange(i)
            put(key_of(j), pick_size(rng, medium=0.005))
        if n_churn and i % 4 == 3:
            c = b"c%04d" % rng.randrange(n_churn)
            if rng.random() < 0.4:
                try:
                    del db[c]
                except KeyError:
                    pass
            else:
                put(c, pick_size(rng))
        if big_every and i % big_every == 0:
            put(b"big%d" % rng.randrange(n_big), pick_size(rng, big=1.0))
        if i + 1 in reorg_set:
            db.reorganize()
            reorgs += 1
            sh["reorgs"].value = reorgs
    grow_s = time.monotonic() - t0
    db.reorganize()
    reorgs += 1
    sh["reorgs"].value = reorgs
    t1 = time.monotonic()
    tail = 0
    while time.monotonic() - t1 < tail_seconds:
        put(key_of(rng.randrange(n)), pick_size(rng, medium=0.005))
        tail += 1
    st = db.stats()
    db.close()
    sh["stop"].set()
    return {"grow_seconds": grow_s, "versions": ver, "reorganizes": reorgs, "tail_writes": tail,
            "depth": st["depth"], "file_size": st["file_size"]}


@child_main
def verify_reader(path: str, sh: Dict[str, Any], seed: int, n_big: int, n_churn: int,
                  scan: bool = False, flag: str = "r") -> Dict[str, Any]:
    """Read until sh['stop']: random acknowledged keys (must be present),
    keys at the growth front (may be absent), big and churn keys; every
    value checked, versions never beyond the announced maximum and never
    going back for a key. With `scan`, iterate over all items instead.
    The store is opened with `flag` ('w': a handle that may repair)."""
    import dbm_shm
    rng = random.Random(seed)
    db = dbm_shm.open(path, flag)
    maxver, progress, stop = sh["maxver"], sh["progress"], sh["stop"]
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    last: Dict[bytes, int] = {}
    reads = present = scans = 0
    reads_after_reopen = 0
    reopened = False

    def seen(k: bytes, v: bytes) -> None:
        ver = check_value(k, v)
        mv = maxver.value
        if ver > mv:
            raise BadValue(f"{k!r}: version {ver} read, but the writer only announced {mv}")
        if ver < last.get(k, 0):
            raise BadValue(f"{k!r}: version went back from {last[k]} to {ver}")
        last[k] = ver

    while not stop.is_set():
        if scan:
            c0 = progress.value
            keys = set()
            for k, v in db.iteritems():
                if k in keys:
                    raise AssertionError(f"scan returned {k!r} twice")
                keys.add(k)
                seen(k, v)
                reads += 1
            missing = [i for i in range(c0) if key_of(i) not in keys]
            if missing:
                raise AssertionError(f"scan missed {len(missing)} acknowledged keys, e.g. {key_of(missing[0])!r}")
            scans += 1
        else:
            for _ in range(500):
                c = progress.value
                if c:
                    k = key_of(rng.randrange(c))
                    try:
                        v = db[k]
                    except KeyError:
                        raise AssertionError(f"acknowledged key {k!r} missing (progress {c})") from None
                    seen(k, v)
                    present += 1
                k = key_of(c + rng.randrange(64))       # the growth front
                v = db.get(k)
                if v is not None:
                    seen(k, v)
                if n_churn:
                    k = b"c%04d" % rng.randrange(n_churn)
                    v = db.get(k)
                    if v is not None:
                        seen(k, v)
                reads += 3
            if n_big:
                k = b"big%d" % rng.randrange(n_big)
                v = db.get(k)
                if v is not None:
                    seen(k, v)
                reads += 1
        if not reopened and db.stats()["reopens"]:
            reopened = True
        if reopened:
            reads_after_reopen += 1
    st = db.stats()
    db.close()
    return {"reads": reads, "present": present, "scans": scans, "retries": st["read_retries"],
            "fallbacks": st["read_fallbacks"], "reopens": st["reopens"],
            "batches_after_reopen": reads_after_reopen}


@child_main
def keys_reader(path: str, sh: Dict[str, Any], keys: List[bytes], allow_missing: bool,
                flag: str = "r", errors_ok: Sequence[int] = ()) -> Dict[str, Any]:
    """Read every key of `keys` over and over until sh['stop'], checking
    each value (a key may be absent only with `allow_missing`). Counts the
    passes completed after sh['dead_at'] (a monotonic time; 0 = not yet).
    The store is opened with `flag`. A dbm_shm.error whose code is in
    `errors_ok` is counted (by code, with the keys it hit) instead of
    failing; `slowest_after_death` is the longest single read after
    sh['dead_at']."""
    import dbm_shm
    db = dbm_shm.open(path, flag)
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    passes = passes_after = reads = 0
    errors: Dict[str, int] = {}
    error_keys = set()
    slowest = 0.0
    stop = sh["stop"]
    mono = time.monotonic
    while not stop.is_set():
        dead = sh["dead_at"].value
        for k in keys:
            t0 = mono()
            failed = False
            try:
                v = db.get(k)
            except dbm_shm.error as e:
                if e.code not in errors_ok:
                    raise
                errors[str(e.code)] = errors.get(str(e.code), 0) + 1
                error_keys.add(k.decode())
                failed = True
            if dead:
                slowest = max(slowest, mono() - t0)
            if failed:
                pass
            elif v is None:
                if not allow_missing:
                    raise AssertionError(f"{k!r} missing")
            else:
                check_value(k, v)
            reads += 1
        passes += 1
        if dead and mono() > dead:
            passes_after += 1
    st = db.stats()
    db.close()
    return {"reads": reads, "passes": passes, "passes_after_death": passes_after,
            "retries": st["read_retries"], "fallbacks": st["read_fallbacks"],
            "errors": errors, "error_keys": sorted(error_keys), "slowest_after_death": slowest}


@child_main
def timed_reader(path: str, sh: Dict[str, Any], keys: List[bytes], writer_pid_slot: str) -> Dict[str, Any]:
    """Read small keys flat out until sh['stop'], verifying each value;
    record the completion time of every read, and sample the store's
    lock holder every 64 reads: reads between two samples that both saw the
    writer holding the lock completed while it was held."""
    import array
    import dbm_shm
    db = dbm_shm.open(path, "r")
    stop = sh["stop"]
    times = array.array("d")
    rng = random.Random(os.getpid())
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    held_reads = 0
    samples_held = 0
    prev_held = False
    mono = time.monotonic
    n = 0
    while not stop.is_set():
        k = keys[rng.randrange(len(keys))]
        v = db[k]
        check_value(k, v)
        times.append(mono())
        n += 1
        if n % 64 == 0:
            wpid = sh[writer_pid_slot].value
            held = wpid != 0 and db.stats()["lock_pid"] == wpid
            if held:
                samples_held += 1
                if prev_held:
                    held_reads += 64
            prev_held = held
    st = db.stats()
    db.close()
    # Reads completed inside each lock-holding interval the writer reported.
    out = []
    ivs = list(sh["intervals"])
    for a, b in zip(ivs[0::2], ivs[1::2]):
        if b <= a:
            continue
        inside = [t for t in times if a <= t <= b]
        edges = [a] + inside + [b]
        gap = max(y - x for x, y in zip(edges, edges[1:]))
        out.append({"start": a, "seconds": b - a, "reads": len(inside), "max_gap": gap})
    return {"reads": len(times), "intervals": out, "reads_while_lock_seen_held": held_reads,
            "samples_lock_held": samples_held, "retries": st["read_retries"],
            "fallbacks": st["read_fallbacks"]}


@child_main
def long_writer(path: str, sh: Dict[str, Any], n_readers: int, big_mib: int) -> Dict[str, Any]:
    """Hold the writer lock for long stretches: write a `big_mib` MiB value
    twice (the second an overwrite) and reorganize the store around it.
    Each call's [start, end] goes into sh['intervals']."""
    import dbm_shm
    db = dbm_shm.open(path, "w")
    sh["writer_pid"].value = os.getpid()
    deadline = time.monotonic() + 60
    while sh["ready"].value < n_readers:
        if time.monotonic() > deadline:
            raise RuntimeError("readers never became ready")
        time.sleep(0.005)
    time.sleep(0.3)
    ivs = sh["intervals"]
    k = b"huge"
    vals = [make_value(k, v, big_mib << 20) for v in (1, 2)]
    slot = 0
    for what in ("set", "overwrite", "reorganize"):
        time.sleep(0.2)
        t0 = time.monotonic()
        if what == "reorganize":
            db.reorganize()
        else:
            db[k] = vals[slot // 2]
        t1 = time.monotonic()
        ivs[slot], ivs[slot + 1] = t0, t1
        slot += 2
    time.sleep(0.2)
    ok = check_value(k, db[k]) == 2
    db.close()
    sh["stop"].set()
    return {"intervals": [(ivs[i], ivs[i + 1]) for i in range(0, slot, 2)], "final_ok": ok}


@child_main
def hot_writer(path: str, sh: Dict[str, Any], key: bytes, size: int, nvals: int) -> Dict[str, Any]:
    """Rewrite one key non-stop, cycling through `nvals` prebuilt versions,
    until sh['stop']."""
    import dbm_shm
    db = dbm_shm.open(path, "w")
    vals = [make_value(key, v + 1, size + v * 16) for v in range(nvals)]
    db[key] = vals[0]
    sh["ready"].value += 1
    n = 0
    t0 = time.monotonic()
    stop = sh["stop"]
    while not stop.is_set():
        db[key] = vals[n % nvals]
        n += 1
    dt = time.monotonic() - t0
    db.close()
    return {"writes": n, "seconds": dt}


@child_main
def hot_reader(path: str, sh: Dict[str, Any], key: bytes, n: int, nvals: int) -> Dict[str, Any]:
    """Read `key` n times while it is rewritten; every value checked."""
    import dbm_shm
    db = dbm_shm.open(path, "r")
    deadline = time.monotonic() + 60
    while sh["ready"].value < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("writer never became ready")
        time.sleep(0.005)
    versions = set()
    worst = 0.0
    t0 = time.monotonic()
    for _ in range(n):
        a = time.monotonic()
        v = db[key]
        worst = max(worst, time.monotonic() - a)
        ver = check_value(key, v)
        if not 1 <= ver <= nvals:
            raise BadValue(f"version {ver} was never written")
        versions.add(ver)
    dt = time.monotonic() - t0
    st = db.stats()
    db.close()
    return {"reads": n, "seconds": dt, "worst_read": worst, "versions_seen": len(versions),
            "retries": st["read_retries"], "fallbacks": st["read_fallbacks"]}


def range_writer_body(path: str, wid: int, nthreads: int, per_thread: int, reorganize: bool,
                      sh: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Writer process `wid`: `nthreads` threads on ONE handle, each writing
    its own key range (insert, overwrite every 3rd, delete every 7th);
    with `reorganize`, thread 0 also reorganizes half way. With `sh`, all
    processes start together (sh['ready'] counts them in, sh['go'] starts
    them)."""
    import dbm_shm
    db = dbm_shm.open(path, "w")
    errs: List[str] = []
    if sh is not None:
        with sh["ready"].get_lock():
            sh["ready"].value += 1
        if not sh["go"].wait(60):
            raise RuntimeError("never told to go")
    go = threading.Barrier(nthreads)

    def work(t: int) -> None:
        try:
            rng = random.Random(wid * 1000 + t)
            base = (wid * nthreads + t) * per_thread
            go.wait()
            for i in range(per_thread):
                k = key_of(base + i)
                db[k] = make_value(k, 1, pick_size(rng, big=0.002, big_size=64 << 10))
                if reorganize and t == 0 and i == per_thread // 2:
                    db.reorganize()
            for i in range(0, per_thread, 3):
                k = key_of(base + i)
                db[k] = make_value(k, 2, pick_size(rng))
            for i in range(0, per_thread, 7):
                del db[key_of(base + i)]
        except BaseException:
            errs.append(traceback.format_exc())

    ths = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    t0 = time.time()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    t1 = time.time()
    st = db.stats()
    db.close()
    if errs:
        raise AssertionError("writer thread failed:\n" + "\n".join(errs))
    return {"start": t0, "end": t1, "reopens": st["reopens"]}


@child_main
def range_writer(path: str, wid: int, nthreads: int, per_thread: int, reorganize: bool,
                 sh: Dict[str, Any]) -> Dict[str, Any]:
    return range_writer_body(path, wid, nthreads, per_thread, reorganize, sh)


def range_expected(key_index: int, per_thread: int) -> Optional[int]:
    """The version range_writer leaves for a key (None: deleted)."""
    i = key_index % per_thread
    if i % 7 == 0:
        return None
    return 2 if i % 3 == 0 else 1


def mp_child_write(path: str, idx: int, n: int, q: Any) -> None:
    """multiprocessing target for the start-method tests: open the path,
    check the parent's keys, write n keys of its own."""
    try:
        import dbm_shm
        with dbm_shm.open(path, "w") as db:
            for i in range(100):
                k = b"parent%d" % i
                check_value(k, db[k])
            for i in range(n):
                k = b"child%d-%d" % (idx, i)
                db[k] = make_value(k, idx + 1, (i * 37) % 500)
        q.put((idx, "ok"))
    except BaseException:
        q.put((idx, traceback.format_exc()))
        raise


def pool_task(args: Tuple[str, int]) -> int:
    """multiprocessing.Pool task: write one key, return its version read back."""
    import dbm_shm
    path, i = args
    with dbm_shm.open(path, "w") as db:
        k = b"pool%d" % i
        db[k] = make_value(k, i + 1, i % 200)
        return check_value(k, db[k])


# ---------------------------------------------------------------------------
# Crash children: this file run as a script, logging to stdout (a pipe)
#
# Protocol, one os.write per line (a pipe write of < PIPE_BUF bytes is
# atomic, and once write() returned the bytes are the kernel's: they survive
# the writer's SIGKILL):
#   R                          opened, about to start
#   I <id> S <key> <ver> <size>   about to set        (I = intent)
#   I <id> D <key>             about to delete
#   I <id> C                   about to clear
#   I <id> O                   about to reorganize
#   I <id> P                   about to popitem() (the key it takes is not known yet)
#   A <id>                     the call returned     (A = acknowledged)
#   A <id> <key>               popitem() returned, having taken <key>
#   E                          finished without being killed

SCENARIOS = ("set", "delete", "grow", "clear", "reorganize", "mixed", "big", "pop", "popitem")


def _crash_child(path: str, scenario: str, seed: int, run: int, nops: int) -> None:
    import dbm_shm
    rng = random.Random(seed)
    out = 1

    def emit(s: str) -> None:
        os.write(out, s.encode())

    db = dbm_shm.open(path, "c")
    existing = [k for k in db.keys() if k.startswith(b"k")]   # the k-keys present
    emit("R\n")
    ver_base = run << 32
    grow_i = 0
    worst = 0.0
    for op in range(nops):
        t_op = time.monotonic()
        ver = ver_base + op + 1
        if scenario == "mixed":
            r = rng.random()
            kind = ("set" if r < 0.55 else "delete" if r < 0.75 else "grow" if r < 0.97
                    else "big" if r < 0.995 else "reorganize" if r < 0.999 else "clear")
        elif scenario == "clear":
            kind = "clear" if op % 100 == 99 else "set"
        elif scenario == "reorganize":
            kind = "reorganize" if op % 50 == 49 else "set"
        elif scenario == "sync":
            kind = "sync" if op % 25 == 24 else "set"
        elif scenario == "delete":
            kind = "delete" if (existing and rng.random() < 0.7) else "set"
        elif scenario in ("pop", "popitem"):
            kind = scenario if existing else "set"
        else:
            kind = scenario
        acked = ""
        if kind in ("set", "big") or (kind == "delete" and not existing):
            if kind == "set" and existing and rng.random() < 0.8:
                k = rng.choice(existing)
            else:
                k = b"k%06d" % rng.randrange(4000)
            size = pick_size(rng, big=1.0 if kind == "big" else 0.01)
            emit(f"I {op} S {k.decode()} {ver} {size}\n")
            was = k in db
            db[k] = make_value(k, ver, size)
            if not was:
                existing.append(k)
        elif kind == "grow":
            k = b"g%d-%07d" % (run, grow_i)
            grow_i += 1
            size = pick_size(rng)
            emit(f"I {op} S {k.decode()} {ver} {size}\n")
            db[k] = make_value(k, ver, size)
        elif kind == "delete":
            k = existing.pop(rng.randrange(len(existing)))
            emit(f"I {op} D {k.decode()}\n")
            del db[k]
        elif kind == "pop":      # a delete through pop(): logged as one, value checked
            k = existing.pop(rng.randrange(len(existing)))
            emit(f"I {op} D {k.decode()}\n")
            check_value(k, db.pop(k))
        elif kind == "popitem":
            emit(f"I {op} P\n")
            k, v = db.popitem()
            check_value(k, v)
            if k in existing:
                existing.remove(k)
            acked = " " + k.decode()
        elif kind == "clear":
            emit(f"I {op} C\n")
            db.clear()
            existing.clear()
        elif kind == "reorganize":
            emit(f"I {op} O\n")
            db.reorganize()
        elif kind == "sync":
            emit(f"I {op} Y\n")
            db.sync()
        worst = max(worst, time.monotonic() - t_op)
        emit(f"A {op}{acked}\n")
    emit(f"E {worst:.6f}\n")
    db.close()


def crash_child_cmd(path: Path, scenario: str, seed: int, run: int, nops: int) -> List[str]:
    return [sys.executable, str(Path(__file__).resolve()), "crash-child", str(path), scenario,
            str(seed), str(run), str(nops)]


class ScriptChild:
    """A script run as a child process (`cmd`), started now, its stdout
    drained by a thread so it never blocks on the pipe; `ready` is set
    once it printed a line "R" (or ended). `crash_at` goes into its
    DSHM_CRASH_AT; its stderr goes to `errfile` if given."""

    what = "child"

    def __init__(self, cmd: List[str], crash_at: Optional[str] = None, errfile: Optional[Path] = None):
        import subprocess

        from _support import child_env   # not at the top: this file also runs as a script
        self.errfile = errfile
        self._err = open(errfile, "wb") if errfile else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, env=child_env(crash_at))
        self.pid = self.proc.pid
        self._chunks: List[bytes] = []
        self.ready = threading.Event()
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self) -> None:
        fd = self.proc.stdout.fileno()
        seen = b""
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            self._chunks.append(b)
            if not self.ready.is_set():
                seen += b
                if seen.startswith(b"R\n") or b"\nR\n" in seen:
                    self.ready.set()
        self.ready.set()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish_text(self, timeout: float = 120) -> Tuple[int, str]:
        """Wait for the child's end: (exit code, its whole stdout)."""
        import subprocess
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.what} still running after {timeout} s")
        self._t.join(30)
        self.proc.stdout.close()
        if self.errfile:
            self._err.close()
        return code, b"".join(self._chunks).decode()

    def stderr(self) -> str:
        return Path(self.errfile).read_text(errors="replace") if self.errfile else ""


class CrashChild(ScriptChild):
    """A crash child (a writer process logging its acknowledged writes to
    a pipe), started now: this file run as a script."""

    what = "crash child"

    def __init__(self, path: str, scenario: str, seed: int, run: int, nops: int,
                 crash_at: Optional[str] = None, errfile: Optional[Path] = None):
        super().__init__(crash_child_cmd(Path(path), scenario, seed, run, nops), crash_at, errfile)

    def finish(self, timeout: float = 120) -> Tuple[int, "Log"]:
        code, text = self.finish_text(timeout)
        return code, Log(text)


class Log:
    """A crash child's log, parsed: the acknowledged ops in order and the
    one in flight when it died (if any)."""

    def __init__(self, text: str):
        self.text = text
        self.ready = False
        self.finished = False
        self.worst_call = 0.0
        self.acked: List[Tuple[str, ...]] = []
        self.inflight: Optional[Tuple[str, ...]] = None
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]          # an incomplete line never got written whole
        for line in lines:
            if not line:
                continue
            f = line.split()
            if f[0] == "R":
                self.ready = True
            elif f[0] == "E":
                self.finished = True
                self.worst_call = float(f[1])
            elif f[0] == "I":
                if self.inflight is not None:
                    raise AssertionError(f"log: intent {f} while {self.inflight} is not acknowledged")
                self.inflight = tuple(f[1:])
            elif f[0] == "A":
                if self.inflight is None or self.inflight[0] != f[1]:
                    raise AssertionError(f"log: ack {f} without its intent")
                op = self.inflight
                if op[1] == "P":     # popitem(): its ack names the key it took
                    if len(f) < 3:
                        raise AssertionError(f"log: popitem ack {f} without its key")
                    op = (op[0], "D", f[2])
                self.acked.append(op)
                self.inflight = None


Model = Dict[bytes, Tuple[int, int]]   # key -> (version, size)


def apply_op(model: Model, op: Tuple[str, ...]) -> None:
    """Apply one logged op to ``model``. A popitem() still in flight
    ("P") names no key: it changes nothing here, and a check that allows
    for it must allow any one key of the model to be gone."""
    kind = op[1]
    if kind == "S":
        model[op[2].encode()] = (int(op[3]), int(op[4]))
    elif kind == "D":
        model.pop(op[2].encode(), None)
    elif kind == "C":
        model.clear()


def bad_values(state: Dict[bytes, bytes]) -> List[str]:
    """What check_value says of each value of ``state`` that is not one a
    writer wrote (empty: every value checks)."""
    problems: List[str] = []
    for k, v in state.items():
        try:
            check_value(k, v)
        except BadValue as e:
            problems.append(str(e))
    return problems


def store_state(db: Any, skip: Iterable[bytes] = ()) -> Dict[bytes, bytes]:
    skip = set(skip)
    return {k: v for k, v in db.items() if k not in skip}


def verify_after_crash(db: Any, before: Model, log: Log, skip: Iterable[bytes] = ()) -> Model:
    """Check the store against the model `before` the child ran plus its
    acknowledged ops; the op in flight is wholly applied or not at all.
    Every key is read both with get and through iteration. Returns the
    model of what the store now holds."""
    model = dict(before)
    for op in log.acked:
        apply_op(model, op)
    after = dict(model)
    if log.inflight is not None:
        apply_op(after, log.inflight)
    skip = set(skip)
    state = store_state(db, skip)
    problems = bad_values(state)
    if problems:
        raise AssertionError("invalid values after the crash:\n" + "\n".join(problems[:20]))
    got = {k: (value_version(v), len(v) - MIN_VALUE) for k, v in state.items()}
    if got == model:
        chosen = model
    elif got == after:
        chosen = after
    else:
        diff = []
        for k in sorted(set(got) | set(model) | set(after)):
            if not (got.get(k) == model.get(k) or got.get(k) == after.get(k)):
                diff.append(f"  {k!r}: store {got.get(k)}, acknowledged {model.get(k)}, "
                            f"with the interrupted op {after.get(k)}")
            if len(diff) >= 20:
                break
        raise AssertionError(
            f"store differs from the acknowledged writes (interrupted op: {log.inflight}; "
            f"{len(log.acked)} acknowledged):\n" + "\n".join(diff or ["  (a mix of old and new state)"]))
    # Point reads agree with iteration, and the count agrees.
    for k, (ver, size) in chosen.items():
        v = db[k]
        if value_version(v) != ver or len(v) != size + MIN_VALUE:
            raise AssertionError(f"{k!r}: get returns version {value_version(v)}, scan said {ver}")
    n = len(db) - len([k for k in skip if k in db])
    if n != len(chosen):
        raise AssertionError(f"len() says {n} keys, the store holds {len(chosen)}")
    return dict(chosen)


PROBE = b"__probe__"


def next_writer(db_or_path: Any, before: Model, log: Log, skip: Iterable[bytes] = (PROBE,)) -> Dict[str, Any]:
    """The writer after a crash: take the lock (a timed write of PROBE;
    given a path, the open is timed too: it may repair), then check the
    structure and the content against the log. A handle passed in stays
    open; a path is opened and closed here."""
    import dbm_shm
    lock_pid = None
    if isinstance(db_or_path, str):
        t0 = time.monotonic()
        db = dbm_shm.open(db_or_path, "w")
        db[PROBE] = b"p"
        took = time.monotonic() - t0
    else:
        db = db_or_path
        lock_pid = db.stats()["lock_pid"]
        t0 = time.monotonic()
        db[PROBE] = b"p"
        took = time.monotonic() - t0
    try:
        problems = db.check()
        if problems:
            raise AssertionError(f"check() after recovery: {problems}")
        model = verify_after_crash(db, before, log, skip=skip)
        rec = db.stats()["recoveries"]
    finally:
        if db is not db_or_path:
            db.close()
    return {"model": model, "recoveries": rec, "took": took, "lock_pid": lock_pid}


def _robust_clean() -> bool:
    r = robust_list_next()
    return r is None or r[0] == r[1]


def _life_after(path: str) -> None:
    """After the repair: another store opened while this one is open, this
    one closed, then the other written (the thread's robust-mutex list must
    not point into the closed mapping: that write used to segfault), then
    this one again."""
    import dbm_shm
    other = path + ".other"
    o = dbm_shm.open(other, "c")
    db = dbm_shm.open(path, "w")
    db[PROBE] = b"q"
    db.close()
    o[b"x"] = b"y"
    del o[b"x"]
    o.close()
    os.unlink(other)
    with dbm_shm.open(path, "w") as db:
        db[PROBE] = b"r"


def _result_json(res: Dict[str, Any]) -> str:
    res = dict(res, model={k.decode(): list(v) for k, v in res["model"].items()})
    return json.dumps(res)


def _load_input(infile: str) -> Tuple[Model, Log]:
    data = json.loads(Path(infile).read_text())
    return {k.encode(): tuple(v) for k, v in data["before"].items()}, Log(data["log"])


def _next_writer_main(path: str, infile: str) -> None:
    """`python helpers.py next-writer PATH JSON`: next_writer() in a fresh
    process that has never had the file open (so it repairs at open)."""
    before, log = _load_input(infile)
    res = next_writer(path, before, log)
    res["robust_clean"] = _robust_clean()
    _life_after(path)
    print(_result_json(res))


def _holder_main(path: str) -> None:
    """`python helpers.py holder PATH`: open the store and say so ("H
    <recoveries>"); when a line naming the input JSON arrives on stdin, be
    the next writer through the handle held all along (it meets the dead
    writer's lock with EOWNERDEAD, or follows a reorganize first)."""
    import dbm_shm
    db = dbm_shm.open(path, "w")
    print("H", db.stats()["recoveries"], flush=True)
    line = sys.stdin.readline().strip()
    before, log = _load_input(line)
    res = next_writer(db, before, log)
    res["robust_clean"] = _robust_clean()
    db.close()
    _life_after(path)
    print(_result_json(res))


def _json_result(r: Any, who: str) -> Dict[str, Any]:
    if r.returncode != 0:
        how = (f"killed by {signal.Signals(-r.returncode).name}" if r.returncode < 0
               else f"exit code {r.returncode}")
        raise AssertionError(f"{who} failed: {how}\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["model"] = {k.encode(): tuple(v) for k, v in res["model"].items()}
    return res


def _write_input(workdir: Path, before: Model, log_text: str) -> Path:
    infile = workdir / "next-writer.json"
    infile.write_text(json.dumps({"before": {k.decode(): list(v) for k, v in before.items()},
                                  "log": log_text}))
    return infile


def next_writer_process(path: str, before: Model, log_text: str, workdir: Path) -> Dict[str, Any]:
    """Run _next_writer_main in a new process; raise AssertionError with its
    stderr if it fails or dies by a signal."""
    import subprocess
    infile = _write_input(workdir, before, log_text)
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "next-writer", path, str(infile)],
                       capture_output=True, text=True, timeout=300)
    return _json_result(r, "the next writer (a new process that opens the path)")


class Holder:
    """A process holding the store open across a crash (_holder_main)."""

    def __init__(self, path: str):
        import subprocess
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "holder", path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "H":
            self.proc.kill()
            raise AssertionError(f"holder did not start: {line} {self.proc.stderr.read()}")
        self.recoveries = int(line[1])

    def finish(self, before: Model, log_text: str, workdir: Path) -> Dict[str, Any]:
        import subprocess
        infile = _write_input(workdir, before, log_text)
        try:
            out, err = self.proc.communicate(str(infile) + "\n", timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the holder (next writer) hung:\n{err[-4000:]}")
        r = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)
        return _json_result(r, "the next writer (a process that held the store open)")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "crash-child":
        _, _, p, sc, sd, rn, no = sys.argv
        _crash_child(p, sc, int(sd), int(rn), int(no))
    elif len(sys.argv) == 4 and sys.argv[1] == "next-writer":
        _next_writer_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "holder":
        _holder_main(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} crash-child PATH SCENARIO SEED RUN NOPS\n"
                 f"       {sys.argv[0]} next-writer PATH JSON\n"
                 f"       {sys.argv[0]} holder PATH")
