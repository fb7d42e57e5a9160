"""A writer killed by SIGKILL leaves a consistent store (DESIGN.md §3
property 3): every acknowledged write is there, the interrupted one is
wholly applied or not at all, the next writer gets the lock at once and
its recovery leaves check() == [].

The writer is a child process (tests/_support/helpers.py run as a
script) that logs each operation to a pipe before the call (intent) and
after it returned (acknowledgement). It dies either at a named point inside
the C core (DSHM_CRASH_AT="point:n") or when the test sends SIGKILL after a
random delay.

Two ways the next writer meets the dead one:
- "reopen": nobody else had the file open; the next opener gets it
  exclusively, finds the mutex held by a dead owner and repairs at open;
- "held": another process kept a handle open all along; its next write
  gets EOWNERDEAD from the robust mutex and repairs then (or, if the dead
  writer had reorganized, its handle follows the path first).
The next writer always runs in a process of its own, so that a crash
there fails one test instead of the whole run.
"""

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

import dbm_shm

from _support import child_env
from _support.helpers import (CrashChild, Holder, keys_reader, leftovers, make_value,
                              next_writer_process, verify_after_crash, verify_reader)
from _support.points import WRITER_POINTS

LOCK_BOUND = 1.0          # seconds: the next writer gets the lock at once

# point -> (scenario, n-th pass, keys to start with)
POINTS = WRITER_POINTS


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    # A known hash seed for files made by this process: a failure replays.
    monkeypatch.setenv("DSHM_TEST_SEED", "5eed0123456789ab")


def _populate_model(n, seed=1):
    rng = random.Random(seed)
    model = {}
    for i in range(n):
        size = rng.randrange(300) if i % 50 else rng.randrange(2048, 40000)
        model[b"k%06d" % i] = (i + 1, size)
    return model


def _populate(path, n, seed=1):
    model = _populate_model(n, seed)
    with dbm_shm.open(path, "n") as db:
        for k, (ver, size) in model.items():
            db[k] = make_value(k, ver, size)
    return model


def _recover_and_verify(path, holder, before_model, log, workdir):
    """The next writer, always in another process (so a crash there fails
    the test, not the test run): the `holder` process that kept the store
    open all along ("held"), or a new process that opens the path
    ("reopen", holder None). Returns (model now, recoveries, seconds to
    the lock, lock_pid seen before)."""
    if holder is not None:
        r = holder.finish(before_model, log.text, workdir)
    else:
        r = next_writer_process(path, before_model, log.text, workdir)
    assert r["took"] < LOCK_BOUND, f"the next writer waited {r['took']:.3f} s for the lock"
    assert r["robust_clean"], ("after the repair the next writer's thread still has the store's "
                               "mutex on its robust-futex list (no lock is held)")
    return r["model"], r["recoveries"], r["took"], r["lock_pid"]


def _start(path, mode):
    """(holder or None, recoveries before)."""
    if mode == "held":
        h = Holder(path)
        return h, h.recoveries
    with dbm_shm.open(path, "r") as db:
        return None, db.stats()["recoveries"]


@pytest.mark.parametrize("mode", ["reopen", "held"])
@pytest.mark.parametrize("point", sorted(POINTS))
def test_crash_point(store_path, tmp_path, point, mode):
    scenario, nth, nkeys = POINTS[point]
    model = _populate(store_path, nkeys)
    holder, rec0 = _start(store_path, mode)
    try:
        child = CrashChild(store_path, scenario, seed=11, run=1, nops=50_000,
                           crash_at=f"{point}:{nth}", errfile=tmp_path / "child.err")
        code, log = child.finish(120)
        assert code == -signal.SIGKILL, (
            f"the child was not killed at {point}:{nth} (exit code {code}, finished={log.finished})\n"
            + child.stderr())
        assert log.ready
        assert log.inflight is not None, "killed inside a call, so one op is in flight"
        model, rec1, took, lock_pid = _recover_and_verify(store_path, holder, model, log, tmp_path)
    finally:
        if holder is not None:
            holder.kill()
    if point == "reorganize-renamed":
        # Killed after the rename: the path names the compact copy, whole
        # and never locked by the dead writer, so nothing needs a repair;
        # the holder followed the path (a look at it, as no mark was left).
        assert rec1 == rec0, (rec0, rec1)
        rec1 = rec0
    else:
        if mode == "held" and point != "reorganize":
            # The holder saw the dead writer as the lock's holder. (At
            # "reorganize" the child had reorganized once before: the holder
            # first follows the path to the newer file, and its reopen repairs.)
            assert lock_pid == child.pid, (lock_pid, child.pid)
        # Killed inside the lock: a recovery was needed and ran.
        assert rec1 == rec0 + 1, (rec0, rec1)
    with dbm_shm.open(store_path, "w") as db:
        # The store is fully usable: write and delete, the structure holds.
        for i in range(500):
            k = b"after%d" % i
            db[k] = make_value(k, 1, i)
        for i in range(0, 500, 2):
            del db[b"after%d" % i]
        assert db.check() == []
        assert db.stats()["recoveries"] == rec1


@pytest.mark.soak
@pytest.mark.parametrize("point", sorted(POINTS))
def test_crash_point_soak(store_path, tmp_path, point):
    """Each crash point at many passes (early, middle, late), both ways of
    meeting the dead writer, on a store that keeps the damage history."""
    scenario, nth, nkeys = POINTS[point]
    model = _populate(store_path, nkeys)
    passes = sorted({1, 2, 3, 5, 8, 13, nth // 2 or 1, nth, nth * 2, nth * 5})
    for run, n in enumerate(passes):
        for mode in ("reopen", "held"):
            holder, rec0 = _start(store_path, mode)
            try:
                child = CrashChild(store_path, scenario, seed=run * 7 + len(mode), run=run * 2 + len(mode),
                                   nops=200_000, crash_at=f"{point}:{n}", errfile=tmp_path / "child.err")
                code, log = child.finish(300)
                if code != -signal.SIGKILL:
                    assert code == 0 and log.finished, child.stderr()
                model, rec1, _, _ = _recover_and_verify(store_path, holder, model, log, tmp_path)
            finally:
                if holder is not None:
                    holder.kill()
            if code == -signal.SIGKILL and point != "reorganize" and scenario != "reorganize":
                assert rec1 == rec0 + 1, (point, n, mode, rec0, rec1)


def test_crash_in_reorganize_leaves_no_temporary(store_path, tmp_path):
    """A writer killed inside reorganize() (copy written and synced, not
    yet renamed): the store is intact, and after the next writer (and its
    own reorganize) no temporary copy should remain beside it."""
    _populate(store_path, 2000)
    child = CrashChild(store_path, "reorganize", seed=11, run=1, nops=50_000,
                       crash_at="reorganize:1", errfile=tmp_path / "child.err")
    code, log = child.finish(120)
    assert code == -signal.SIGKILL
    next_writer_process(store_path, _populate_model(2000), log.text, tmp_path)
    with dbm_shm.open(store_path, "w") as db:
        db.reorganize()
        assert db.check() == []
    assert leftovers(Path(store_path)) == []


def _random_kills(store_path, tmp_path, kills, seed):
    rng = random.Random(seed)
    model = _populate(store_path, 1500)
    scenarios = ["mixed", "mixed", "mixed", "big", "grow", "set", "delete", "reorganize", "mixed", "clear"]
    summary = {"kills": 0, "finished": 0, "recovered": 0, "inflight": 0, "max_lock_s": 0.0,
               "lock_pid_seen": 0}
    for i in range(kills):
        mode = "held" if i % 2 else "reopen"
        scenario = scenarios[i % len(scenarios)]
        holder, rec0 = _start(store_path, mode)
        log = None
        try:
            child = CrashChild(store_path, scenario, seed=rng.randrange(1 << 30), run=i + 2,
                               nops=2_000_000, errfile=tmp_path / "child.err")
            assert child.ready.wait(60), "child never got ready"
            time.sleep(rng.uniform(0.0, 0.25))
            if (i // 2) % 2:
                # Aim inside the lock: watch the holder's pid (stats() takes
                # no lock) and kill when it is the child (it may have let go
                # again by the time the signal lands).
                with dbm_shm.open(store_path, "r") as watch:
                    deadline = time.monotonic() + 2.0
                    while watch.stats()["lock_pid"] != child.pid and time.monotonic() < deadline:
                        pass
                    child.kill()
            else:
                child.kill()
            code, log = child.finish(60)
            if code != -signal.SIGKILL:
                assert code == 0 and log.finished, (code, child.stderr())
                summary["finished"] += 1
            summary["kills"] += code == -signal.SIGKILL
            summary["inflight"] += log.inflight is not None
            model, rec1, took, lock_pid = _recover_and_verify(store_path, holder, model, log, tmp_path)
        except AssertionError as e:
            raise AssertionError(f"kill {i} ({scenario}, {mode}, in flight: "
                                 f"{log.inflight if log else '?'}): {e}") from None
        finally:
            if holder is not None:
                holder.kill()
        summary["max_lock_s"] = max(summary["max_lock_s"], took)
        moved = any(op[1] in ("O",) for op in log.acked) or (log.inflight or ("", ""))[1] == "O"
        if not moved:
            # recoveries is per file: only comparable when no reorganize replaced it.
            assert rec1 - rec0 in (0, 1), (rec0, rec1)
            if lock_pid == child.pid:
                summary["lock_pid_seen"] += 1
                assert rec1 == rec0 + 1, "died holding the lock, but no recovery ran"
            summary["recovered"] += rec1 - rec0
    return summary


def test_random_kills(store_path, tmp_path):
    """About 30 writers killed at random moments across set, delete,
    growth (splits, doublings), big values, clear and reorganize; half of
    the kills wait for the writer to hold the lock first."""
    s = _random_kills(store_path, tmp_path, 30, seed=2024)
    print(f"\n[random kills] {s}")
    assert s["kills"] >= 25
    # Half the kills aim inside the lock: some of them must have needed a
    # repair (each one that did was verified like the others).
    assert s["recovered"] >= 3, s


@pytest.mark.soak
def test_random_kills_soak(store_path, tmp_path):
    s = _random_kills(store_path, tmp_path, 600, seed=int(time.time()))
    print(f"\n[random kills, soak] {s}")
    assert s["recovered"] > 0


def test_repair_at_open_then_other_stores(tmp_path):
    """Minimal reproduction, run in its own process: a writer dies holding
    the lock of store A; a process that did not have A open opens it (and
    repairs it at open), opens store B, closes A, writes to B. The write
    to B must work (it segfaulted in pthread_mutex_lock: the repair at open
    left A's mutex on the thread's robust-mutex list)."""
    import subprocess
    import sys
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    dbm_shm.open(a, "c").close()
    env = dict(os.environ, DSHM_CRASH_AT="put-written:1")
    r = subprocess.run([sys.executable, "-c", f"import dbm_shm; dbm_shm.open({a!r}, 'w')[b'k'] = b'v'"],
                       env=env, cwd=tmp_path)
    assert r.returncode == -signal.SIGKILL
    code = (f"import sys, dbm_shm\n"
            f"from _support.helpers import robust_list_next\n"
            f"a = dbm_shm.open({a!r}, 'w')\n"
            f"assert a.stats()['recoveries'] == 1 and a.check() == []\n"
            f"r = robust_list_next()\n"
            f"assert r is None or r[0] == r[1], 'no lock is held, yet the robust list holds %#x' % r[1]\n"
            f"b = dbm_shm.open({b!r}, 'c')\n"
            f"a.close()\n"
            f"b[b'x'] = b'y'\n"
            f"assert b[b'x'] == b'y'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=child_env())
    assert r.returncode == 0, (f"exit code {r.returncode}"
                               + (f" ({signal.Signals(-r.returncode).name})" if r.returncode < 0 else "")
                               + "\n" + r.stderr)


def test_waiting_writer_takes_over(store_path, tmp_path):
    """Two writer processes; one dies holding the lock while the other is
    waiting for it. The survivor recovers and goes on without a stall, and
    both writers' acknowledged writes are there."""
    model = _populate(store_path, 1000)
    with dbm_shm.open(store_path, "r") as db:
        rec0 = db.stats()["recoveries"]
    victim = CrashChild(store_path, "grow", seed=3, run=1, nops=200_000,
                        crash_at="put-written:3000", errfile=tmp_path / "victim.err")
    survivor = CrashChild(store_path, "grow", seed=4, run=2, nops=8000, errfile=tmp_path / "survivor.err")
    vcode, vlog = victim.finish(120)
    scode, slog = survivor.finish(120)
    assert vcode == -signal.SIGKILL, victim.stderr()
    assert scode == 0 and slog.finished, survivor.stderr()
    print(f"\n[take-over] survivor's slowest call: {slog.worst_call * 1000:.1f} ms")
    assert slog.worst_call < LOCK_BOUND
    base = dict(model)
    for op in slog.acked:
        base[op[2].encode()] = (int(op[3]), int(op[4]))
    with dbm_shm.open(store_path, "w") as db:
        assert db.check() == []
        verify_after_crash(db, base, vlog)
        assert db.stats()["recoveries"] == rec0 + 1


SPAWN = multiprocessing.get_context("spawn")


@pytest.mark.parametrize("point", ["insert", "remove", "split-intent"])
def test_readers_survive_writer_killed_in_window(procs, store_path, tmp_path, point):
    """Reader processes are reading when the writer dies inside a bucket's
    odd seqlock window ("insert", "remove") or mid-split. The readers'
    handles may write the file (opened 'w'; an 'r' handle never repairs:
    see the test below). Readers of a bucket left odd lose every lock-free
    try, fall back to the writer lock, get EOWNERDEAD and repair the store
    themselves; all along they return only valid values and never stop."""
    model = _populate(store_path, 3000)
    scenario, nth = {"insert": ("grow", 300), "remove": ("delete", 100),
                     "split-intent": ("grow", 5)}[point]
    sh = {"maxver": SPAWN.RawValue("q", 1 << 62), "progress": SPAWN.RawValue("q", 0),
          "reorgs": SPAWN.RawValue("q", 0), "dead_at": SPAWN.RawValue("d", 0.0),
          "ready": SPAWN.Value("i", 0), "stop": SPAWN.Event()}
    keys = sorted(model)
    for r in range(2):
        procs.start(f"reader{r}", keys_reader, store_path, sh, keys, scenario == "delete", "w")
    # And one scanner (iteritems, every value checked, no key twice).
    procs.start("scanner", verify_reader, store_path, sh, 301, 0, 0, scan=True, flag="w")
    deadline = time.monotonic() + 60
    while sh["ready"].value < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    with dbm_shm.open(store_path, "r") as db:
        rec0 = db.stats()["recoveries"]
    child = CrashChild(store_path, scenario, seed=5, run=1, nops=100_000,
                       crash_at=f"{point}:{nth}", errfile=tmp_path / "child.err")
    code, log = child.finish(120)
    assert code == -signal.SIGKILL, child.stderr()
    sh["dead_at"].value = time.monotonic()
    time.sleep(1.5)
    sh["stop"].set()
    res = procs.wait(60)
    print(f"\n[readers vs dead writer at {point}] {res}")
    for r in range(2):
        assert res[f"reader{r}"]["passes_after_death"] > 0, res
    fallbacks = sum(res[f"reader{r}"]["fallbacks"] for r in range(2)) + res["scanner"]["fallbacks"]
    r = next_writer_process(store_path, model, log.text, tmp_path)
    # Exactly one recovery: by a reader's fallback where a bucket was left
    # odd, else by the next writer at open.
    assert r["recoveries"] == rec0 + 1
    if point in ("insert", "remove"):
        assert fallbacks > 0, "a bucket was left odd: its readers must have fallen back"


NEED_RECOVERY = -31005


@pytest.mark.parametrize("point", ["insert", "remove"])
def test_read_only_readers_of_a_dead_writers_bucket(procs, store_path, tmp_path, point):
    """The same death inside a bucket's odd window, with readers whose
    handles are opened 'r'. They repair nothing and write nothing: the
    file's bytes stay as the dead writer left them. Reads of the bucket
    left odd fail fast (well under a second, not after a 5 s wait) with
    DSHM_NEED_RECOVERY, "a writer died and the file needs repair"; every
    other key reads its valid value. The next writer repairs (one
    recovery), and then every key reads again through the same 'r'
    handles' successors."""
    model = _populate(store_path, 3000)
    scenario, nth = {"insert": ("grow", 300), "remove": ("delete", 100)}[point]
    sh = {"dead_at": SPAWN.RawValue("d", 0.0), "ready": SPAWN.Value("i", 0), "stop": SPAWN.Event()}
    keys = sorted(model)
    with dbm_shm.open(store_path, "r") as db:
        rec0 = db.stats()["recoveries"]
    child = CrashChild(store_path, scenario, seed=5, run=1, nops=100_000,
                       crash_at=f"{point}:{nth}", errfile=tmp_path / "child.err")
    code, log = child.finish(120)
    assert code == -signal.SIGKILL, child.stderr()
    dead_bytes = Path(store_path).read_bytes()
    sh["dead_at"].value = time.monotonic()
    for r in range(2):
        procs.start(f"reader{r}", keys_reader, store_path, sh, keys, True, "r", [NEED_RECOVERY])
    deadline = time.monotonic() + 60
    while sh["ready"].value < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.5)
    sh["stop"].set()
    res = procs.wait(60)
    print(f"\n[read-only readers vs dead writer at {point}] "
          + str({n: {k: (len(v) if k == "error_keys" else v) for k, v in rr.items()} for n, rr in res.items()}))
    assert Path(store_path).read_bytes() == dead_bytes, "an 'r' handle wrote to the file"
    for r in range(2):
        rr = res[f"reader{r}"]
        assert rr["passes_after_death"] > 0, rr
        assert set(rr["errors"]) == {str(NEED_RECOVERY)}, rr
        assert 0 < len(rr["error_keys"]) < len(keys) // 2, rr
        assert rr["slowest_after_death"] < 1.0, rr
    r = next_writer_process(store_path, model, log.text, tmp_path)
    assert r["recoveries"] == rec0 + 1
    with dbm_shm.open(store_path, "r") as db:
        assert db.check() == []
        for k in res["reader0"]["error_keys"]:
            assert db.get(k.encode()) is not None or scenario == "delete"
