"""A writer killed by SIGKILL inside an atomic batch: all of the batch or
none of it, for the next writer and for readers in other processes.

The batch writer is a child process (this file run as a script) that dies
at a named point inside the C core (DSHM_CRASH_AT="point:n"):
- "batch-staged": records and journal written, before the commit point:
  after recovery NONE of the batch is visible, the old values intact;
- "batch-committed" (right after the commit point) and "batch-apply:k"
  (after the k-th applied entry): the next lock holder's recovery makes
  ALL of it visible.
Or it is killed at a random moment while it writes batch after batch; the
store then holds exactly the last acknowledged batch or the one in flight.

Reader processes hammer get_many() over every key the batch touches while
the writer dies and while the store is repaired: each read is wholly the
old state or wholly the new one, and never old again once new.

The next writer (the recovery) always runs in a process of its own, as in
test_sigkill.py, so a crash there fails one test instead of the run.
"""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dbm_shm
from dbm_shm._dshm import lib

from _support import child_env
from _support.helpers import (BadValue, Procs, ScriptChild, check_value, child_main, make_value,
                              robust_list_next)

HERE = Path(__file__).resolve()
BOUND = 10.0
START = 120.0
FORK = multiprocessing.get_context("fork")

# ---------------------------------------------------------------------------
# The one big batch: overwrite 400 keys, delete 200, create 300 (900 entries)

N_OLD = 1000
OVERWRITE = range(0, 400)
DELETE = range(400, 600)
N_NEW = 300
N_ENTRIES = len(OVERWRITE) + len(DELETE) + N_NEW


def _size(k, ver):
    """A value size per (key, version): mostly small, every 50th 20-70 KB."""
    h = sum(k) * 31 + ver * 7
    return 20000 + h % 50000 if h % 50 == 0 else h % 300


def old_state():
    return {b"k%04d" % i: 1 for i in range(N_OLD)}


def new_state():
    s = old_state()
    for i in OVERWRITE:
        s[b"k%04d" % i] = 2
    for i in DELETE:
        del s[b"k%04d" % i]
    for j in range(N_NEW):
        s[b"n%04d" % j] = 2
    return s


ALL_KEYS = sorted(set(old_state()) | set(new_state()))


def _populate(path):
    with dbm_shm.open(path, "n") as db:
        db.update({k: make_value(k, v, _size(k, v)) for k, v in old_state().items()})
        assert db.check() == []


def _child_one(path):
    """Script mode: write the one big batch (the crash hook kills us in it)."""
    db = dbm_shm.open(path, "w")
    os.write(1, b"R\n")
    with db.batch():
        for i in OVERWRITE:
            k = b"k%04d" % i
            db[k] = make_value(k, 2, _size(k, 2))
        for i in DELETE:
            del db[b"k%04d" % i]
        for j in range(N_NEW):
            k = b"n%04d" % j
            db[k] = make_value(k, 2, _size(k, 2))
    os.write(1, b"A\n")
    db.close()


# ---------------------------------------------------------------------------
# Batch after batch: group keys g0000..g1999 all set to the batch number b;
# g1999 deleted when b % 3 == 0. Values are cheap to make (so the writer
# spends much of its time inside the lock) and still say whose they are.

GROUP = [b"g%04d" % i for i in range(2000)]
FLIP = GROUP[-1]


def group_state(b):
    return {k: b for k in GROUP if not (k == FLIP and b % 3 == 0)}


def gval(k, b):
    i = int(k[1:])
    size = 65536 + b % 1000 if i % 100 == 7 else (i * 7 + b) % 200
    return b"%s|%d|" % (k, b) + bytes([65 + (i + b) % 26]) * size


def gver(k, v):
    """The batch number of a group value; raises BadValue for one that
    gval() never made for k."""
    try:
        kk, b, _ = v.split(b"|", 2)
        b = int(b)
    except ValueError:
        raise BadValue(f"{k!r}: malformed value {v[:40]!r}") from None
    if kk != k or v != gval(k, b):
        raise BadValue(f"{k!r}: value {v[:40]!r}... is not the one batch {b} writes")
    return b


def _child_loop(path, start, seed):
    """Script mode: batches start, start+1, ... until killed. Logs
    "I b" before each batch and "A b" once it returned."""
    db = dbm_shm.open(path, "w")
    os.write(1, b"R\n")
    b = start
    while True:
        os.write(1, b"I %d\n" % b)
        with db.batch():
            for k in GROUP:
                if k == FLIP and b % 3 == 0:
                    del db[k]
                else:
                    db[k] = gval(k, b)
        os.write(1, b"A %d\n" % b)
        b += 1


# ---------------------------------------------------------------------------
# The next writer: a process of its own

def _version(k, v):
    return gver(k, v) if k.startswith(b"g") else check_value(k, v)


def _verify_main(path, how, after):
    """Script mode: open for writing and make the first lock take repair
    the store (check(), a read fallback or a write, per `how`), then report
    the structure check and the content as JSON. With after == "write",
    then check that the store goes on working (a batch, a delete);
    "quiet" writes nothing after the repair."""
    t0 = time.monotonic()
    db = dbm_shm.open(path, "w")
    if how == "write":
        db[b"__probe__"] = b"p"
        del db[b"__probe__"]
    elif how == "get_many":
        db.get_many(ALL_KEYS + GROUP)
    problems = db.check()
    took = time.monotonic() - t0
    state, bad = {}, []
    for k, v in db.items():
        try:
            state[k.decode()] = _version(k, v)
        except BadValue as e:
            bad.append(str(e))
    # Point reads and get_many agree with the scan.
    keys = [k.encode() for k in state]
    for k, v in zip(keys, db.get_many(keys)):
        if v is None or _version(k, v) != state[k.decode()]:
            bad.append(f"{k!r}: get_many disagrees with items()")
    st = db.stats()
    out = {"check": problems, "state": state, "bad": bad, "count": len(db), "took": took,
           "recoveries": st["recoveries"], "commit": st["commit"]}
    out["check_after"] = []
    if after == "write":
        # The store goes on working: a batch and a structure check.
        with db.batch():
            db[b"__after__"] = b"a"
        del db[b"__after__"]
        out["check_after"] = db.check()
    db.close()
    r = robust_list_next()
    out["robust_clean"] = r is None or r[0] == r[1]
    print(json.dumps(out))


def verify(path, how="check", after="write"):
    r = subprocess.run([sys.executable, str(HERE), "verify", str(path), how, after],
                       capture_output=True, text=True, timeout=300, env=child_env())
    if r.returncode != 0:
        raise AssertionError(f"the next writer failed (exit code {r.returncode}):\n{r.stderr[-4000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["state"] = {k.encode(): v for k, v in out["state"].items()}
    return out


def _assert_sound(v):
    assert v["check"] == [], v["check"]
    assert v["check_after"] == [], v["check_after"]
    assert v["bad"] == [], v["bad"][:10]
    assert v["robust_clean"]
    assert v["count"] == len(v["state"])


def _diff(got, want):
    keys = sorted(set(got) | set(want))
    d = [(k, got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)]
    return f"{len(d)} keys differ, e.g. {d[:5]}"


# ---------------------------------------------------------------------------
# The batch writer child

class BatchChild(ScriptChild):
    """This file run as a script (a batch writer), its stdout drained by a
    thread; `crash_at` goes into its DSHM_CRASH_AT."""

    what = "batch child"

    def __init__(self, args, crash_at=None, errfile=None):
        super().__init__([sys.executable, str(HERE)] + [str(a) for a in args], crash_at, errfile)

    def finish(self, timeout=120):
        return self.finish_text(timeout)


def parse_loop_log(text):
    """(last acknowledged batch or None, batch in flight or None)."""
    acked = inflight = None
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    for line in lines:
        f = line.split()
        if not f or f[0] == "R":
            continue
        if f[0] == "I":
            assert inflight is None, f"log: intent {f} while {inflight} is in flight"
            inflight = int(f[1])
        elif f[0] == "A":
            assert inflight == int(f[1]), f"log: ack {f} without its intent"
            acked, inflight = inflight, None
    return acked, inflight


# ---------------------------------------------------------------------------
# Readers in other processes

def worker(fn):
    w = child_main(fn)
    w.__module__ = fn.__module__
    return w


def _classify(vers, states):
    """The name of the state in `states` that vers is, or raise."""
    for name, st in states.items():
        if vers == st:
            return name
    summary = {name: _diff(vers, st) for name, st in states.items()}
    raise AssertionError(f"a read that is no whole state (half a batch?): {summary}")


@worker
def big_batch_reader(path, flag, sh):
    """get_many over every key the big batch touches, until sh['stop']:
    always wholly the old or wholly the new state; never old after new."""
    db = dbm_shm.open(path, flag)
    states = {"old": old_state(), "new": new_state()}
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    counts = {"old": 0, "new": 0, "need_recovery": 0}
    last = None
    while True:
        finished = sh["stop"].is_set()
        try:
            vals = db.get_many(ALL_KEYS)
        except dbm_shm.error as e:
            # A read-only handle cannot repair: after a while behind a dead
            # writer's open window it says so (the next writer repairs).
            if e.code != lib.DSHM_NEED_RECOVERY:
                raise
            counts["need_recovery"] += 1
            continue
        vers = {k: check_value(k, v) for k, v in zip(ALL_KEYS, vals) if v is not None}
        kind = _classify(vers, states)
        if last == "new" and kind == "old":
            raise AssertionError("the old state was read after the new one")
        last = kind
        counts[kind] += 1
        if finished:
            break
    st = db.stats()
    db.close()
    return {"counts": counts, "last": last, "retries": st["read_retries"],
            "fallbacks": st["read_fallbacks"]}


@worker
def group_reader(path, flag, sh):
    """get_many over the group until sh['stop']: one batch number at a
    time, never going back."""
    db = dbm_shm.open(path, flag)
    with sh["ready"].get_lock():
        sh["ready"].value += 1
    last = -1
    reads = need = 0
    seen = set()
    while True:
        finished = sh["stop"].is_set()
        try:
            vals = db.get_many(GROUP)
        except dbm_shm.error as e:
            if e.code != lib.DSHM_NEED_RECOVERY:
                raise
            need += 1
            continue
        vers = {k: gver(k, v) for k, v in zip(GROUP, vals) if v is not None}
        bs = set(vers.values())
        if len(bs) != 1:
            raise AssertionError(f"keys of {len(bs)} batches at once: {sorted(bs)[:6]}")
        b = bs.pop()
        if vers != group_state(b):
            raise AssertionError(f"half of batch {b}: {_diff(vers, group_state(b))}")
        if b < last:
            raise AssertionError(f"batch {b} read after batch {last}")
        last = b
        seen.add(b)
        reads += 1
        if finished:
            break
    db.close()
    return {"reads": reads, "last": last, "distinct": len(seen), "need_recovery": need}


def _start_readers(procs, fn, path, flags):
    sh = {"ready": FORK.Value("i", 0), "stop": FORK.Event()}
    for i, flag in enumerate(flags):
        procs.start(f"reader{i}-{flag}", fn, path, flag, sh)
    deadline = time.monotonic() + START
    while sh["ready"].value < len(flags):
        assert time.monotonic() < deadline, "readers never became ready"
        time.sleep(0.005)
    return sh


def _recoveries(path):
    with dbm_shm.open(path, "r") as db:
        return db.stats()["recoveries"]


# ---------------------------------------------------------------------------
# Named crash points

POINTS = [
    ("batch-staged:1", "old"),
    ("batch-committed:1", "new"),
    ("batch-apply:1", "new"),
    (f"batch-apply:{N_ENTRIES // 2}", "new"),
    (f"batch-apply:{N_ENTRIES}", "new"),     # every entry applied, not yet committed
]


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    # A known hash seed for files made by this process: a failure replays.
    monkeypatch.setenv("DSHM_TEST_SEED", "5eed0123456789ab")


@pytest.mark.parametrize("mode", ["reopen", "held"])
@pytest.mark.parametrize("point,expect", POINTS, ids=[p for p, _ in POINTS])
def test_kill_inside_a_batch(store_path, tmp_path, point, expect, mode):
    """reopen: nobody else has the file open, the next opener repairs at
    open. held: two reader processes ('r' and 'w' handles) hammer get_many
    throughout; the repair is made by the first lock holder."""
    _populate(store_path)
    rec0 = _recoveries(store_path)
    want = old_state() if expect == "old" else new_state()
    with Procs(FORK) as procs:
        sh = _start_readers(procs, big_batch_reader, store_path, ["r", "w"]) if mode == "held" else None
        child = BatchChild(["one", store_path], crash_at=point, errfile=tmp_path / "child.err")
        code, log = child.finish()
        assert code == -signal.SIGKILL, f"not killed at {point} (exit code {code}): {child.stderr()}"
        assert log == "R\n", log
        if sh is not None:
            time.sleep(0.3)              # readers meet the dead writer's state
        v = verify(store_path)
        if sh is not None:
            time.sleep(0.2)              # and the repaired one
            sh["stop"].set()
            res = procs.wait(START)
    _assert_sound(v)
    assert v["state"] == want, _diff(v["state"], want)
    assert v["count"] == len(want)
    assert v["recoveries"] == rec0 + 1
    if sh is not None:
        print(f"\n[{point} {mode}] {res}")
        for name, r in res.items():
            assert r["last"] == expect, (name, r)
            if expect == "old":
                assert r["counts"]["new"] == 0, (name, r)
    with dbm_shm.open(store_path, "w") as db:
        assert db.check() == []
        assert db.snapshot() == {k: make_value(k, ver, _size(k, ver)) for k, ver in want.items()}


def test_staged_batch_leaves_no_space_behind(store_path, tmp_path):
    """A batch dropped at recovery (killed before its commit point): its
    staged records become free space again; repeated crashes do not grow
    the live bytes."""
    _populate(store_path)
    with dbm_shm.open(store_path, "r") as db:
        live0 = db.stats()["live_bytes"]
    for _ in range(3):
        child = BatchChild(["one", store_path], crash_at="batch-staged:1")
        code, _ = child.finish()
        assert code == -signal.SIGKILL
        v = verify(store_path)
        _assert_sound(v)
        assert v["state"] == old_state()
    with dbm_shm.open(store_path, "r") as db:
        assert db.stats()["live_bytes"] == live0


def test_next_batch_after_recovery(store_path, tmp_path):
    """After a batch finished by recovery, another batch of the same keys
    commits normally on top of it."""
    _populate(store_path)
    child = BatchChild(["one", store_path], crash_at=f"batch-apply:{N_ENTRIES // 3}")
    assert child.finish()[0] == -signal.SIGKILL
    with dbm_shm.open(store_path, "w") as db:
        c = db.commit_id()
        with db.batch():
            for k in ALL_KEYS:
                if k in db:
                    db[k] = make_value(k, 3, 10)
        assert db.commit_id() == c + 1
        assert db.check() == []
        assert {k: check_value(k, v) for k, v in db.items()} == {k: 3 for k in new_state()}


# ---------------------------------------------------------------------------
# A waiter in another process and the dead writer's batch

def _kill_and_wait(store_path, tmp_path, point, how):
    """A waiter (a thread here, on an 'r' handle) sleeps in wait(); a child
    dies at `point` inside a batch; another process repairs (by `how`).
    Returns (woke within the bound, what wait() returned, the commit before)."""
    _populate(store_path)
    ro = dbm_shm.open(store_path, "r")
    try:
        since = ro.commit_id()
        res = {}

        def wait():
            res["r"] = ro.wait(300, since=since)
            res["at"] = time.monotonic()

        t = threading.Thread(target=wait, daemon=True)
        t.start()
        child = BatchChild(["one", store_path], crash_at=point)
        assert child.finish()[0] == -signal.SIGKILL
        v = verify(store_path, how, "quiet")    # nothing written after the repair
        _assert_sound(v)
        assert v["state"] == new_state()
        assert v["recoveries"] == 1
        t.join(2.0)                       # a futex wake-up takes far less
        woke = not t.is_alive()
        if not woke:
            # Wake it by an ordinary write, so the thread ends.
            with dbm_shm.open(store_path, "w") as w:
                w[b"__wake__"] = b"1"
            t.join(BOUND)
        assert not t.is_alive()
        return woke, res.get("r"), since
    finally:
        ro.close()


def test_waiter_wakes_when_the_next_write_repairs(store_path, tmp_path):
    woke, r, since = _kill_and_wait(store_path, tmp_path, "batch-committed:1", "write")
    assert woke
    assert r is not None and r > since


@pytest.mark.parametrize("point,how", [("batch-committed:1", "check"),
                                       (f"batch-apply:{N_ENTRIES // 2}", "get_many")])
def test_waiter_wakes_when_check_or_a_read_repairs(store_path, tmp_path, point, how):
    """The repair that finishes the dead writer's batch is a commit: the
    waiters wake, whoever repairs. (Regression: a repair by check() or a
    read's fallback under the lock did not wake them.)"""
    woke, r, since = _kill_and_wait(store_path, tmp_path, point, how)
    assert woke, f"the waiter slept on although {how}() repaired the store and committed the batch"


# ---------------------------------------------------------------------------
# Random kills of a process writing batch after batch

def _random_batch_kills(store_path, tmp_path, kills, seed):
    rng = random.Random(seed)
    with dbm_shm.open(store_path, "n") as db:
        db.update({k: gval(k, v) for k, v in group_state(0).items()})
    state_b = 0
    summary = {"kills": 0, "inflight_applied": 0, "inflight_dropped": 0, "no_inflight": 0,
               "aimed": 0, "recovered": 0}
    for i in range(kills):
        flags = [["r"], ["w"], []][i % 3]
        rec0 = _recoveries(store_path)
        with Procs(FORK) as procs:
            sh = _start_readers(procs, group_reader, store_path, flags) if flags else None
            child = BatchChild(["loop", store_path, state_b + 1, rng.randrange(1 << 30)],
                               errfile=tmp_path / "child.err")
            assert child.ready.wait(START), "child never got ready"
            time.sleep(rng.uniform(0.0, 0.2))
            if i % 2:
                # Aim inside the lock: kill once the child is seen holding it.
                with dbm_shm.open(store_path, "r") as watch:
                    deadline = time.monotonic() + 2.0
                    while watch.stats()["lock_pid"] != child.pid and time.monotonic() < deadline:
                        pass
                summary["aimed"] += 1
            child.kill()
            code, log = child.finish()
            assert code == -signal.SIGKILL, (code, child.stderr())
            summary["kills"] += 1
            acked, inflight = parse_loop_log(log)
            v = verify(store_path, ["check", "write", "get_many"][i % 3])
            if sh is not None:
                time.sleep(0.1)
                sh["stop"].set()
                res = procs.wait(START)
        try:
            _assert_sound(v)
            got = v["state"]
            bs = set(got.values())
            assert len(bs) == 1, f"keys of several batches: {sorted(bs)}"
            b = bs.pop()
            assert got == group_state(b), _diff(got, group_state(b))
            before = acked if acked is not None else state_b
            assert b in (before, inflight), (b, before, inflight)
        except AssertionError as e:
            raise AssertionError(f"kill {i} (acked {acked}, in flight {inflight}): {e}") from None
        if inflight is None:
            summary["no_inflight"] += 1
        elif b == inflight:
            summary["inflight_applied"] += 1
        else:
            summary["inflight_dropped"] += 1
        summary["recovered"] += v["recoveries"] - rec0
        if sh is not None:
            for name, r in res.items():
                assert r["last"] == b, (i, name, r, b)
        state_b = b
    return summary


def test_random_kills_of_a_batch_writer(store_path, tmp_path):
    """6 writers killed at random moments (half of them once seen holding
    the lock); readers in other processes ('r' or 'w') during most."""
    s = _random_batch_kills(store_path, tmp_path, 6, seed=4242)
    print(f"\n[random batch kills] {s}")
    assert s["kills"] == 6


@pytest.mark.slow
def test_random_kills_of_a_batch_writer_long(store_path, tmp_path):
    s = _random_batch_kills(store_path, tmp_path, 120, seed=int(time.time()))
    print(f"\n[random batch kills, long] {s}")
    assert s["inflight_applied"] + s["inflight_dropped"] > 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "one":
        _child_one(sys.argv[2])
    elif cmd == "loop":
        _child_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "verify":
        _verify_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"usage: {sys.argv[0]} one PATH | loop PATH START SEED | verify PATH HOW AFTER")
