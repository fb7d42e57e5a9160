"""Waiting, atomic batches and consistent multi-key reads across REAL
processes (multiprocessing, fork and spawn).

- Waiters asleep in wait() / wait_key() in other processes (handles 'r' and
  'w') all wake on one write, and time out without one.
- A writer process commits hundreds of batches, each setting keys k0..k9 to
  the batch number (k9 deleted in every fifth batch); reader processes
  hammering get_many(), snapshot() and snapshot(keys) must always see ONE
  batch number across all keys, matching the snapshot's commit id, never
  going back; a reader of single keys in sequence never sees the batch
  number go back either.
- Ping-pong between two processes through wait() on an 'r' handle: a lost
  wake-up would show up as a timeout.

Bounds are generous (a loaded 2-core machine); no latency is recorded here.
"""

import multiprocessing
import os
import random
import time

import pytest

import dbm_shm
from _support.helpers import Procs, check_value, child_main, make_value, pick_size

BOUND = 10.0            # seconds: "promptly"
LONG = 30.0             # a timeout that must not be why a wait ended
START = 120.0           # seconds for worker processes to start (spawn imports)
METHODS = ["fork", "spawn"]

KEYS = [b"k%d" % i for i in range(10)]
FLIP = b"k9"            # deleted in every batch whose number is a multiple of 5


def _ctx(method):
    return multiprocessing.get_context(method)


def _wait_ready(counter, n, timeout=START):
    deadline = time.monotonic() + timeout
    while counter.value < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {counter.value} of {n} workers became ready")
        time.sleep(0.005)


def _until(pred, timeout=BOUND):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


# ---------------------------------------------------------------------------
# Workers (module level: spawn children import them by name)


def worker(fn):
    """_support.helpers.child_main, named after this module (for pickling by spawn)."""
    w = child_main(fn)
    w.__module__ = fn.__module__
    return w


@worker
def waiter(path, flag, sh, timeout, key=None):
    """Open, say ready, then wait() (or wait_key(key)) once; report."""
    db = dbm_shm.open(path, flag)
    since = db.commit_id()
    if key is not None:
        before = db.get(key)
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    t0 = time.monotonic()
    if key is None:
        r = db.wait(timeout, since=since)
    else:
        r = db.wait_key(key, timeout)
    t1 = time.monotonic()
    out = {"since": since, "result": r, "woke_at": t1, "elapsed": t1 - t0,
           "signal": db.get(b"signal"), "key_value": db.get(key) if key else None,
           "key_before": before if key is not None else None, "stats": db.stats()}
    db.close()
    return out


def _batch_state(b):
    """What batch b leaves: key -> version (None: absent)."""
    return {k: (None if k == FLIP and b % 5 == 0 else b) for k in KEYS}


@worker
def batch_writer(path, sh, n_batches, min_seconds, n_readers, seed):
    """Batches 1, 2, ...: each sets k0..k8 (and k9, or deletes it when the
    number is a multiple of 5) to values of that batch number. At least
    n_batches and at least min_seconds. Each number is announced before
    its batch commits."""
    db = dbm_shm.open(path, "w")
    _wait_ready(sh["ready"], n_readers)
    rng = random.Random(seed)
    b = sh["announced"].value
    t0 = time.monotonic()
    done = 0
    while done < n_batches or time.monotonic() - t0 < min_seconds:
        b += 1
        sh["announced"].value = b
        with db.batch():
            for k, ver in _batch_state(b).items():
                if ver is None:
                    del db[k]
                else:
                    db[k] = make_value(k, ver, pick_size(rng, medium=0.05))
        done += 1
        if done % 64 == 0:
            time.sleep(0.001)           # let a starved reader in
    sh["stop"].set()
    st = db.stats()
    db.close()
    return {"batches": done, "last": b, "seconds": time.monotonic() - t0,
            "stat_batches": st["batches"], "lock_waits": st["lock_waits"]}


def _check_one_batch(got, announced, base, commit=None, where=""):
    """`got`: key -> value or None (absent), for all KEYS. Returns the one
    batch number they show."""
    vers = {}
    for k in KEYS:
        v = got.get(k)
        vers[k] = None if v is None else check_value(k, v)
    present = {ver for ver in vers.values() if ver is not None}
    if len(present) != 1:
        raise AssertionError(f"{where}: keys from {len(present)} batches at once: {vers}")
    b = present.pop()
    if vers != _batch_state(b):
        raise AssertionError(f"{where}: half of batch {b}: {vers} (expected {_batch_state(b)})")
    if b > announced:
        raise AssertionError(f"{where}: batch {b} seen, only {announced} announced")
    if commit is not None and commit != base + b:
        raise AssertionError(f"{where}: values of batch {b} with commit id {commit}, "
                             f"expected {base + b}")
    return b


@worker
def multi_reader(path, flag, sh, seed):
    """get_many / snapshot() / snapshot(keys) until the writer stops: every
    read shows one batch, never older than the previous read."""
    db = dbm_shm.open(path, flag)
    rng = random.Random(seed)
    base = sh["base"].value
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    stop, announced = sh["stop"], sh["announced"]
    last = 0
    seen = set()
    counts = {"get_many": 0, "snapshot": 0, "snapshot_keys": 0}
    while True:
        finished = stop.is_set()
        kind = rng.choice(("get_many", "get_many", "snapshot", "snapshot_keys"))
        if kind == "get_many":
            order = KEYS[:]
            rng.shuffle(order)
            vals = db.get_many(order)
            got = dict(zip(order, vals))
            b = _check_one_batch(got, announced.value, base, where="get_many")
        elif kind == "snapshot":
            s = db.snapshot()
            extra = set(s) - set(KEYS)
            if extra:
                raise AssertionError(f"snapshot has keys nobody wrote: {sorted(extra)[:5]}")
            b = _check_one_batch(dict(s), announced.value, base, s.commit_id, "snapshot()")
        else:
            s = db.snapshot(KEYS)
            b = _check_one_batch(dict(s), announced.value, base, s.commit_id, "snapshot(keys)")
        if b < last:
            raise AssertionError(f"{kind}: batch {b} after batch {last}: went back")
        last = b
        seen.add(b)
        counts[kind] += 1
        if finished:
            break
    final = announced.value
    if last != final:
        raise AssertionError(f"after the writer stopped: batch {last} read, {final} was the last")
    st = db.stats()
    db.close()
    return {"counts": counts, "distinct": len(seen), "last": last,
            "retries": st["read_retries"], "fallbacks": st["read_fallbacks"],
            "multi_retries": st["multi_retries"]}


@worker
def single_reader(path, flag, sh):
    """db[k] for k0..k9 in sequence, over and over: the batch number of
    what is read never goes back (a read that began after another ended
    sees a batch at least as new)."""
    db = dbm_shm.open(path, flag)
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    stop, announced = sh["stop"], sh["announced"]
    last = 0
    per_key = {}
    reads = absent = 0
    seen = set()
    while True:
        finished = stop.is_set()
        for k in KEYS:
            try:
                v = db[k]
            except KeyError:
                if k != FLIP:
                    raise AssertionError(f"{k!r} absent: only {FLIP!r} is ever deleted") from None
                absent += 1
                continue
            b = check_value(k, v)
            if b < last:
                raise AssertionError(f"{k!r}: batch {b} read after batch {last} (went back)")
            if b < per_key.get(k, 0):
                raise AssertionError(f"{k!r}: batch {b} after {per_key[k]}")
            if b > announced.value:
                raise AssertionError(f"{k!r}: batch {b} seen, only {announced.value} announced")
            last = per_key[k] = b
            seen.add(b)
            reads += 1
        if finished:
            break
    st = db.stats()
    db.close()
    return {"reads": reads, "absent": absent, "distinct": len(seen), "last": last,
            "retries": st["read_retries"], "fallbacks": st["read_fallbacks"]}


@worker
def ponger(path, n):
    """Wait (on an 'r' handle) for ping == i, answer pong = i (on a 'w'
    handle), for i = 1..n. A wait that times out is a lost wake-up."""
    r = dbm_shm.open(path, "r")
    w = dbm_shm.open(path, "w")
    timeouts = 0
    for i in range(1, n + 1):
        want = b"%d" % i
        while True:
            seen = r.commit_id()
            if r.get(b"ping") == want:
                break
            if r.wait(BOUND, since=seen) is None:
                raise AssertionError(f"round {i}: no wake-up in {BOUND} s (ping is {r.get(b'ping')!r})")
        w[b"pong"] = want
    st = r.stats()
    r.close()
    w.close()
    return {"rounds": n, "waits": st["waits"], "wakeups": st["wakeups"], "timeouts": timeouts}


@worker
def lock_hog(path, sh):
    """Write big batches until told to stop (holds the writer lock for
    stretches)."""
    db = dbm_shm.open(path, "w")
    big = {b"big%d" % i: bytes([i]) * (4 << 20) for i in range(6)}
    sh["pid"].value = os.getpid()
    n = 0
    while not sh["stop"].is_set():
        db.update(big)
        n += 1
    db.close()
    return {"batches": n}


# ---------------------------------------------------------------------------
# (a) waiters in other processes


@pytest.mark.parametrize("method", METHODS)
def test_waiters_in_other_processes_all_wake_on_one_write(store_path, method):
    ctx = _ctx(method)
    with dbm_shm.open(store_path, "n") as db:
        db[b"x"] = b"0"
    sh = {"ready": ctx.Value("i", 0)}
    flags = ["r", "w", "r"]
    with Procs(ctx) as procs:
        for i, flag in enumerate(flags):
            procs.start(f"waiter{i}-{flag}", waiter, store_path, flag, sh, LONG)
        with dbm_shm.open(store_path, "w") as db:
            _wait_ready(sh["ready"], len(flags))
            # At least one is asleep (the flag is up); give the others a moment.
            assert _until(lambda: db.stats()["waiters"] == 1)
            time.sleep(0.2)
            since = db.commit_id()
            t_write = time.monotonic()
            db[b"signal"] = b"go"
            res = procs.wait(LONG + BOUND)
            assert db.stats()["waiters"] == 0      # all woke, none sleeps again
    assert len(res) == len(flags)
    for name, r in res.items():
        assert r["since"] == since, (name, r)
        assert r["result"] == since + 1, (name, r)
        assert r["signal"] == b"go", (name, r)
        # woke within the bound after the write (CLOCK_MONOTONIC is system-wide)
        assert r["woke_at"] - t_write < BOUND, (name, r["woke_at"] - t_write)
        assert r["elapsed"] < LONG
        assert r["stats"]["waits"] >= 1


@pytest.mark.parametrize("method", METHODS)
def test_waiters_in_other_processes_time_out_without_a_write(store_path, method):
    ctx = _ctx(method)
    with dbm_shm.open(store_path, "n") as db:
        db[b"x"] = b"0"
        c0 = db.commit_id()
    sh = {"ready": ctx.Value("i", 0)}
    with Procs(ctx) as procs:
        for i, flag in enumerate(["r", "w"]):
            procs.start(f"waiter{i}-{flag}", waiter, store_path, flag, sh, 0.5)
        res = procs.wait(START)
    for name, r in res.items():
        assert r["result"] is None, (name, r)
        assert 0.5 - 1e-6 <= r["elapsed"] < 0.5 + BOUND, (name, r)
        assert r["since"] == c0
    with dbm_shm.open(store_path, "r") as db:
        assert db.commit_id() == c0


def test_wait_key_in_other_processes_ignores_other_keys(store_path):
    ctx = _ctx("spawn")
    with dbm_shm.open(store_path, "n") as db:
        db[b"target"] = b"0"
    sh = {"ready": ctx.Value("i", 0)}
    with Procs(ctx) as procs:
        for i, flag in enumerate(["r", "w"]):
            procs.start(f"keywaiter{i}-{flag}", waiter, store_path, flag, sh, LONG, key=b"target")
        with dbm_shm.open(store_path, "w") as db:
            _wait_ready(sh["ready"], 2)
            assert _until(lambda: db.stats()["waiters"] == 1)
            for i in range(30):
                db[b"other%d" % (i % 3)] = b"%d" % i
                with db.batch():
                    db[b"other-batch"] = b"%d" % i
                time.sleep(0.01)
            db[b"target"] = b"0"                   # rewritten, unchanged: not a change
            time.sleep(0.1)
            t_target = time.monotonic()
            db[b"target"] = b"1"
            res = procs.wait(LONG + BOUND)
    for name, r in res.items():
        assert r["result"] is True, (name, r)
        assert r["key_before"] == b"0"
        assert r["key_value"] == b"1", (name, r)
        assert r["woke_at"] >= t_target, f"{name} returned before its key changed"
        assert r["woke_at"] - t_target < BOUND


_INHERITED = {}


def _inherited_waiter(flag, since, conn):
    """Forked child: wait on the handle it inherited from the parent."""
    try:
        db = _INHERITED[flag]
        conn.send(("ready", None))
        r = db.wait(LONG, since=since)
        conn.send(("done", (r, time.monotonic(), db.get(b"signal"))))
        db.close()
    except BaseException as e:
        conn.send(("error", repr(e)))


@pytest.mark.parametrize("flag", ["r", "w"])
def test_forked_child_waits_on_an_inherited_handle(store_path, flag):
    """A handle survives fork(): the child's wait() on it wakes on the
    parent's write."""
    ctx = _ctx("fork")
    with dbm_shm.open(store_path, "n") as w:
        w[b"x"] = b"0"
        _INHERITED[flag] = h = dbm_shm.open(store_path, flag)
        try:
            since = h.commit_id()
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_inherited_waiter, args=(flag, since, theirs), daemon=True)
            p.start()
            try:
                assert mine.poll(START)
                assert mine.recv()[0] == "ready"
                assert _until(lambda: w.stats()["waiters"] == 1)
                t_write = time.monotonic()
                w[b"signal"] = b"go"
                assert mine.poll(LONG), "the child never woke"
                what, info = mine.recv()
                assert what == "done", info
                r, woke_at, value = info
                assert r == since + 1
                assert woke_at - t_write < BOUND
                assert value == b"go"
            finally:
                p.join(BOUND)
                if p.is_alive():
                    p.kill()
            assert p.exitcode == 0
            # The parent's copy of the handle is unaffected.
            assert h.get(b"signal") == b"go"
            assert h.wait(0, since=since) == since + 1
        finally:
            _INHERITED.pop(flag).close()


# ---------------------------------------------------------------------------
# (b) batches seen whole by readers in other processes


def _batch_shared(ctx):
    return {"ready": ctx.Value("i", 0), "stop": ctx.Event(),
            "announced": ctx.RawValue("q", 0), "base": ctx.RawValue("q", 0)}


def _batch_setup(path, sh):
    """The store at batch 0, and the commit id it starts from."""
    rng = random.Random(0)
    with dbm_shm.open(path, "n") as db:
        with db.batch():
            for k, ver in _batch_state(0).items():
                if ver is not None:
                    db[k] = make_value(k, ver, pick_size(rng))
        sh["base"].value = db.commit_id()


def _run_batches(procs, store_path, ctx, n_batches, min_seconds, timeout):
    sh = _batch_shared(ctx)
    _batch_setup(store_path, sh)
    readers = [("multi-r", multi_reader, ("r", sh, 1)),
               ("multi-w", multi_reader, ("w", sh, 2)),
               ("single-r", single_reader, ("r", sh))]
    for name, fn, args in readers:
        procs.start(name, fn, store_path, *args)
    procs.start("writer", batch_writer, store_path, sh, n_batches, min_seconds, len(readers), 7)
    res = procs.wait(timeout)
    w = res["writer"]
    print(f"\n[batches] writer: {w}")
    for name, _, _ in readers:
        print(f"  {name}: {res[name]}")
    assert w["batches"] >= n_batches
    assert w["stat_batches"] == w["batches"]
    for name, _, _ in readers:
        r = res[name]
        assert r["last"] == w["last"], (name, r)
        # The reads overlapped the writing: more than one batch was seen.
        assert r["distinct"] >= 2, (name, r)
    with dbm_shm.open(store_path, "r") as db:
        assert db.check() == []
        assert db.commit_id() == sh["base"].value + w["last"]
        _check_one_batch(dict(db.snapshot()), w["last"], sh["base"].value, db.commit_id(), "final")
    return res


def test_readers_never_see_half_a_batch(procs, store_path):
    """2 readers of get_many/snapshot()/snapshot(keys) (one 'r', one 'w'
    handle) and 1 reader of single keys, while a writer commits at least
    400 batches (and goes on for at least 1.5 s)."""
    _run_batches(procs, store_path, _ctx("spawn"), 400, 1.5, START + 60)


def test_readers_never_see_half_a_batch_fork(store_path):
    ctx = _ctx("fork")
    with Procs(ctx) as procs:
        _run_batches(procs, store_path, ctx, 300, 1.0, START + 60)


@pytest.mark.slow
def test_readers_never_see_half_a_batch_long(procs, store_path):
    _run_batches(procs, store_path, _ctx("spawn"), 20_000, 30.0, 600)


# ---------------------------------------------------------------------------
# (c) waiting across processes with an 'r' handle


def test_ping_pong_through_wait_on_a_read_only_handle(procs, store_path):
    """200 rounds: the parent sets ping = i and waits for pong = i; the
    child waits (on an 'r' handle) for ping = i and answers. Every wait
    has a 10 s timeout: a lost wake-up fails the test."""
    n = 200
    with dbm_shm.open(store_path, "n") as db:
        db[b"ping"] = b"0"
    procs.start("ponger", ponger, store_path, n)
    with dbm_shm.open(store_path, "w") as db:
        t0 = time.monotonic()
        for i in range(1, n + 1):
            want = b"%d" % i
            db[b"ping"] = want
            while True:
                seen = db.commit_id()
                if db.get(b"pong") == want:
                    break
                if i == 1:
                    # The child may still be starting (spawn).
                    r = db.wait(START, since=seen)
                else:
                    r = db.wait(BOUND, since=seen)
                assert r is not None, f"round {i}: the parent was not woken by the child's pong"
        elapsed = time.monotonic() - t0
        # The parent slept at least while the child started (round 1); the
        # child may always have found its ping already there.
        assert db.stats()["waits"] >= 1
    res = procs.wait(START)
    assert res["ponger"]["rounds"] == n
    print(f"\n[ping-pong] {n} rounds in {elapsed:.2f} s; child {res['ponger']}")


def test_read_only_waiter_sees_every_batch_in_order(procs, store_path):
    """A change feed in another process on an 'r' handle: wait(since=seen)
    then get_many; the batch numbers it reads only grow and it ends on
    the last one."""
    ctx = _ctx("spawn")
    sh = _batch_shared(ctx)
    _batch_setup(store_path, sh)
    n = 100
    procs.start("feed", feed_reader, store_path, sh, n)
    _wait_ready(sh["ready"], 1)
    with dbm_shm.open(store_path, "w") as db:
        rng = random.Random(3)
        for b in range(1, n + 1):
            sh["announced"].value = b
            with db.batch():
                for k, ver in _batch_state(b).items():
                    if ver is None:
                        del db[k]
                    else:
                        db[k] = make_value(k, ver, pick_size(rng))
            if b % 10 == 0:
                time.sleep(0.01)
    res = procs.wait(START)["feed"]
    assert res["last"] == n
    assert res["updates"] >= 2


@worker
def feed_reader(path, sh, n):
    """wait(since=seen) then get_many, on an 'r' handle, until batch n."""
    db = dbm_shm.open(path, "r")
    base = sh["base"].value
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    last = 0
    updates = 0
    while True:
        seen = db.commit_id()
        vals = db.get_many(KEYS)
        b = _check_one_batch(dict(zip(KEYS, vals)), sh["announced"].value, base, where="feed")
        if b < last:
            raise AssertionError(f"feed: batch {b} after {last}")
        updates += b != last
        last = b
        if b == n:
            break
        if db.wait(BOUND, since=seen) is None:
            raise AssertionError(f"feed: no wake-up in {BOUND} s at batch {b}")
    db.close()
    return {"last": last, "updates": updates}


# ---------------------------------------------------------------------------
# stats() across processes


def test_stats_show_the_lock_holder_in_another_process(procs, store_path):
    ctx = _ctx("spawn")
    dbm_shm.open(store_path, "n").close()
    sh = {"pid": ctx.RawValue("q", 0), "stop": ctx.Event()}
    procs.start("hog", lock_hog, store_path, sh)
    held = []
    try:
        with dbm_shm.open(store_path, "r") as db:
            assert _until(lambda: sh["pid"].value != 0, START)
            pid = sh["pid"].value
            deadline = time.monotonic() + LONG
            while time.monotonic() < deadline and not (held and max(held) > 0 and len(held) >= 3):
                st = db.stats()
                if st["lock_pid"] == pid:
                    held.append(st["lock_held_ns"])
                else:
                    assert st["lock_pid"] == 0, st["lock_pid"]   # nobody else writes
    finally:
        sh["stop"].set()
    res = procs.wait(START)
    assert res["hog"]["batches"] >= 1
    assert held, "the other process was never seen holding the lock"
    assert max(held) > 0
