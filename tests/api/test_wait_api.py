"""Waiting for commits: ``db.wait()``, ``db.wait_key()``, their asyncio
forms, and the counters ``db.stats()`` reports.

Timing bounds are generous on purpose (a loaded 2-core machine): "woke
within 10 s while the timeout was 30 s", "returned None after a 0.2 s
timeout and took at least 0.2 s". Latencies are measured by the
benchmarks, not here.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import dbm_shm

BOUND = 10.0          # seconds: "promptly", on a loaded machine
LONG = 30.0           # a timeout that must not be the reason a wait ended


@pytest.fixture
def other(db, db_path):
    """A second read-write handle on the same file."""
    o = dbm_shm.open(db_path, "w")
    try:
        yield o
    finally:
        o.close()


def _later(delay, fn, *args):
    """Run fn(*args) in a thread after `delay` seconds; the thread is returned
    (join it)."""
    def run():
        time.sleep(delay)
        fn(*args)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _setitem(h, k, v):
    h[k] = v


def _until(pred, timeout=BOUND, step=0.002):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _settled_threads(baseline, timeout=BOUND):
    return _until(lambda: threading.active_count() <= baseline, timeout, 0.01)


async def _threads_settled_async(baseline, timeout=BOUND):
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------
# wait(): timeouts and `since`


def test_wait_timeout_returns_none_after_the_timeout(db):
    db[b"a"] = b"1"
    t0 = time.monotonic()
    assert db.wait(0.2) is None
    dt = time.monotonic() - t0
    assert 0.2 - 1e-6 <= dt < BOUND


def test_wait_zero_timeout_returns_at_once(db):
    t0 = time.monotonic()
    assert db.wait(0) is None
    assert db.wait(0.0, since=db.commit_id()) is None
    assert time.monotonic() - t0 < BOUND


def test_wait_since_in_the_past_returns_at_once(db):
    for i in range(3):
        db[b"k%d" % i] = b"v"
    assert db.commit_id() == 3
    t0 = time.monotonic()
    assert db.wait(LONG, since=0) == 3
    assert db.wait(None, since=0) == 3          # no timeout, but nothing to wait for
    assert db.wait(since=2) == 3
    assert db.wait(0, since=2) == 3             # even with a zero timeout
    assert time.monotonic() - t0 < BOUND
    assert db.wait(0.05, since=3) is None
    assert db.wait(0.05, since=10**6) is None   # since in the future: a timeout


def test_wait_woken_by_a_write_from_another_thread(db):
    since = db.commit_id()
    t = _later(0.2, _setitem, db, b"k", b"v")
    t0 = time.monotonic()
    r = db.wait(LONG)
    dt = time.monotonic() - t0
    t.join(BOUND)
    assert r == since + 1
    assert dt < BOUND


def test_wait_woken_by_a_write_through_another_handle(db, other):
    since = db.commit_id()
    t = _later(0.2, _setitem, other, b"k", b"v")
    t0 = time.monotonic()
    r = db.wait(LONG, since=since)
    assert time.monotonic() - t0 < BOUND
    t.join(BOUND)
    assert r == since + 1
    assert db[b"k"] == b"v"


def test_wait_woken_by_a_batch_once(db, other):
    since = db.commit_id()

    def batch():
        with other.batch():
            for i in range(100):
                other[b"k%d" % i] = b"v"
    t = _later(0.2, batch)
    r = db.wait(LONG, since=since)
    t.join(BOUND)
    assert r == since + 1                       # one batch, one commit
    assert db.get_many([b"k0", b"k99"]) == [b"v", b"v"]


def test_wait_woken_by_delete_clear_and_reorganize(db, other):
    db[b"a"] = b"1"
    db[b"b"] = b"2"
    for action in (lambda: other.__delitem__(b"a"), other.clear, other.reorganize):
        since = db.commit_id()
        t = _later(0.1, action)
        r = db.wait(LONG, since=since)
        t.join(BOUND)
        assert r is not None and r > since


def test_wait_after_reorganize_follows_the_new_file(db, other):
    """A reorganize by another handle wakes a waiter; afterwards the
    waiter's handle follows the new file: a wait times out again instead
    of seeing the replaced file as a change forever."""
    for i in range(100):
        db[b"k%d" % i] = b"v"
    since = db.commit_id()
    t = _later(0.1, other.reorganize)
    assert db.wait(LONG, since=since) is not None
    t.join(BOUND)
    now = db.commit_id()
    assert now >= since
    t0 = time.monotonic()
    assert db.wait(0.2, since=now) is None
    assert time.monotonic() - t0 >= 0.2 - 1e-6
    t = _later(0.1, _setitem, other, b"after", b"x")
    r = db.wait(LONG, since=now)
    t.join(BOUND)
    assert r is not None and r > now
    assert db[b"after"] == b"x"


def _replace_with_n(path):
    with dbm_shm.open(path, "n") as d:
        d[b"fresh"] = b"1"


def test_wait_woken_by_n_open_elsewhere(db, db_path):
    """An 'n' open by another handle replaces the file: a change."""
    for i in range(50):
        db[b"k%d" % i] = b"v"
    seen = db.commit_id()
    t = _later(0.1, _replace_with_n, db_path)
    t0 = time.monotonic()
    r = db.wait(LONG, since=seen)
    t.join(BOUND)
    assert r is not None and r > seen
    assert time.monotonic() - t0 < BOUND
    assert _until(lambda: db.get(b"fresh") == b"1")
    assert b"k0" not in db


def test_counter_goes_on_after_n_open_elsewhere(db, db_path):
    """Documented (concurrency.md): the new file's counter goes on from the
    old one's, so the change-feed loop keeps working. (Regression: it
    restarted at 0.)"""
    for i in range(50):
        db[b"k%d" % i] = b"v"
    seen = db.commit_id()
    t = _later(0.1, _replace_with_n, db_path)
    r = db.wait(LONG, since=seen)
    t.join(BOUND)
    assert r is not None and r > seen
    assert db.commit_id() >= r, f"commit id went back from {r} to {db.commit_id()}"
    # The documented change-feed loop sees the next write on the new file.
    with dbm_shm.open(db_path, "w") as w:
        t = _later(0.1, _setitem, w, b"next", b"2")
        r2 = db.wait(2.0, since=r)
        t.join(BOUND)
    assert r2 is not None, "a write on the new file did not wake wait(since=<last commit seen>)"


def test_change_feed_pattern_sees_every_commit(db, other):
    """The documented loop: pass the number returned by the previous call;
    no commit is missed (the numbers cover every commit)."""
    seen = db.commit_id()
    n = 50

    def writer():
        for i in range(n):
            other[b"k"] = b"%d" % i
            time.sleep(0.002)
    t = threading.Thread(target=writer)
    t.start()
    last = seen
    deadline = time.monotonic() + LONG
    while last < seen + n and time.monotonic() < deadline:
        r = db.wait(BOUND, since=last)
        assert r is not None, "no wake-up although writes were still coming"
        assert r > last
        last = r
    t.join(BOUND)
    assert last == seen + n
    assert db[b"k"] == b"%d" % (n - 1)


# ---------------------------------------------------------------------------
# wait_key()


def test_wait_key_ignores_other_keys(db, other):
    db[b"mine"] = b"0"
    stop = threading.Event()

    def noise():
        i = 0
        while not stop.is_set():
            other[b"noise%d" % (i % 10)] = b"%d" % i
            i += 1
            time.sleep(0.005)
    t = threading.Thread(target=noise)
    t.start()
    try:
        c0 = db.commit_id()
        t0 = time.monotonic()
        assert db.wait_key(b"mine", 0.5) is False
        dt = time.monotonic() - t0
    finally:
        stop.set()
        t.join(BOUND)
    assert 0.5 - 1e-6 <= dt < BOUND
    assert db.commit_id() > c0          # there were writes, to other keys


@pytest.mark.parametrize("change", ["set", "delete", "create", "batch", "update"])
def test_wait_key_wakes_on_its_key(db, other, change):
    if change != "create":
        db[b"mine"] = b"0"
    db[b"x"] = b"x"

    def act():
        other[b"x"] = b"y"              # another key first: not a reason to return
        time.sleep(0.05)
        if change in ("set", "create"):
            other[b"mine"] = b"1"
        elif change == "delete":
            del other[b"mine"]
        elif change == "batch":
            with other.batch():
                other[b"a"] = b"a"
                other[b"mine"] = b"1"
        else:
            other.update({b"mine": b"1", b"b": b"b"})
    t = _later(0.2, act)
    t0 = time.monotonic()
    r = db.wait_key("mine", LONG)
    t.join(BOUND)
    assert r is True
    assert time.monotonic() - t0 < BOUND
    assert db.get(b"mine") == (None if change == "delete" else b"1")


def test_wait_key_same_value_is_not_a_change(db, other):
    db[b"k"] = b"same"
    first_done = threading.Event()

    def act():
        other[b"k"] = b"same"           # rewritten, value unchanged
        first_done.set()
        time.sleep(0.2)
        other[b"k"] = b"different"
    t = _later(0.1, act)
    r = db.wait_key(b"k", LONG)
    t.join(BOUND)
    assert r is True
    assert first_done.is_set()
    # It returned for the second write: the first did not change the value.
    assert db[b"k"] == b"different"


def test_wait_key_timeout(db):
    db[b"k"] = b"v"
    t0 = time.monotonic()
    assert db.wait_key(b"k", 0.2) is False
    assert time.monotonic() - t0 >= 0.2 - 1e-6
    assert db.wait_key(b"absent", 0) is False


# ---------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("kwargs", [
    {"timeout": -1}, {"timeout": -0.001}, {"since": -1},
    {"since": 1.5}, {"since": "1"}, {"since": b"1"}, {"timeout": 1, "since": -5},
])
def test_wait_invalid_arguments(db, kwargs):
    with pytest.raises(ValueError):
        db.wait(**kwargs)


@pytest.mark.parametrize("kwargs", [{"timeout": -1}, {"since": -1}, {"since": 2.5}])
def test_wait_async_invalid_arguments(db, kwargs):
    async def main():
        return await db.wait_async(**kwargs)
    with pytest.raises(ValueError):
        asyncio.run(main())


def test_wait_key_negative_timeout_raises(db):
    """As wait() does. (Regression: wait_key used to return False.)"""
    db[b"k"] = b"v"
    with pytest.raises(ValueError):
        db.wait_key(b"k", -1)
    with pytest.raises(ValueError):
        asyncio.run(db.wait_key_async(b"k", -1))


def test_wait_key_bad_key_type(db):
    with pytest.raises(TypeError):
        db.wait_key(1, 0)
    with pytest.raises(TypeError):
        db.wait_key(None, 0)


def test_wait_on_closed_handle(db_path):
    d = dbm_shm.open(db_path, "c")
    d.close()
    with pytest.raises(dbm_shm.error):
        d.wait(0)
    with pytest.raises(dbm_shm.error):
        d.wait(0, since=0)
    with pytest.raises(dbm_shm.error):
        d.wait_key(b"k", 0)
    with pytest.raises(dbm_shm.error):
        asyncio.run(d.wait_async(0))
    with pytest.raises(dbm_shm.error):
        asyncio.run(d.wait_key_async(b"k", 0))


# ---------------------------------------------------------------------------
# Interruptions: close() from another thread, signals


@pytest.mark.parametrize("how", ["wait", "wait_since", "wait_key"])
def test_close_from_another_thread_ends_a_blocked_wait(db_path, how):
    d = dbm_shm.open(db_path, "c")
    d[b"k"] = b"v"
    result = {}

    def waiter():
        t0 = time.monotonic()
        try:
            if how == "wait":
                result["r"] = d.wait()
            elif how == "wait_since":
                result["r"] = d.wait(None, since=d.commit_id())
            else:
                result["r"] = d.wait_key(b"k")
        except BaseException as e:
            result["e"] = e
        result["dt"] = time.monotonic() - t0

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    with dbm_shm.open(db_path, "r") as watch:
        # The waiter is (about to be) asleep: it raised the waiters flag.
        assert _until(lambda: watch.stats()["waiters"] == 1)
    time.sleep(0.05)
    closer = threading.Thread(target=d.close, daemon=True)
    t0 = time.monotonic()
    closer.start()
    closer.join(BOUND)
    assert not closer.is_alive(), "close() hangs while another thread waits"
    t.join(BOUND)
    assert not t.is_alive(), "wait() still blocked after close()"
    assert time.monotonic() - t0 < BOUND
    assert isinstance(result.get("e"), dbm_shm.error), result


def test_close_ends_every_waiting_thread(db_path):
    d = dbm_shm.open(db_path, "c")
    errors = []

    def waiter():
        try:
            d.wait()
        except dbm_shm.error as e:
            errors.append(e)

    ths = [threading.Thread(target=waiter, daemon=True) for _ in range(5)]
    for th in ths:
        th.start()
    assert _until(lambda: d.stats()["waits"] >= 5)
    time.sleep(0.05)
    d.close()
    for th in ths:
        th.join(BOUND)
        assert not th.is_alive()
    assert len(errors) == 5


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_signal_handler_exception_ends_a_blocked_wait(db):
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(_Alarm):
            db.wait()                         # no timeout: only the signal ends it
        assert time.monotonic() - t0 < BOUND
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # The handle still works.
    db[b"k"] = b"v"
    assert db.wait(0, since=0) == 1


def test_signal_that_returns_does_not_shorten_the_timeout(db):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)    # every 50 ms
        t0 = time.monotonic()
        r = db.wait(0.5)
        dt = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert r is None
    assert hits, "no signal arrived during the wait"
    assert 0.5 - 1e-6 <= dt < BOUND


# ---------------------------------------------------------------------------
# asyncio


def test_wait_async_does_not_block_the_loop(db, other):
    """A task of the loop makes the write the wait is waiting for: if
    wait_async blocked the loop, it would time out instead."""
    async def main():
        since = db.commit_id()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 10:
                    other[b"from-the-loop"] = b"x"
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        try:
            r = await db.wait_async(timeout=LONG)
        finally:
            t.cancel()
        return since, r, ticks

    t0 = time.monotonic()
    since, r, ticks = asyncio.run(main())
    assert r == since + 1
    assert ticks >= 10
    assert time.monotonic() - t0 < BOUND


def test_wait_async_woken_by_another_thread(db, other):
    async def main():
        since = db.commit_id()
        t = _later(0.2, _setitem, other, b"k", b"v")
        r = await db.wait_async(LONG, since)
        t.join(BOUND)
        return since, r
    since, r = asyncio.run(main())
    assert r == since + 1


def test_wait_async_timeout_returns_none(db):
    async def main():
        t0 = time.monotonic()
        r = await db.wait_async(0.2)
        return r, time.monotonic() - t0
    r, dt = asyncio.run(main())
    assert r is None
    assert 0.2 - 1e-6 <= dt < BOUND


def test_wait_async_since_in_the_past(db):
    db[b"a"] = b"1"
    assert asyncio.run(db.wait_async(LONG, since=0)) == 1


@pytest.mark.parametrize("which", ["wait_async", "wait_key_async"])
def test_wait_async_cancelled_by_wait_for_ends_its_thread(db, which):
    db[b"k"] = b"v"
    baseline = threading.active_count()

    async def main():
        for _ in range(10):
            coro = db.wait_async() if which == "wait_async" else db.wait_key_async(b"k")
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(coro, 0.1)
            assert time.monotonic() - t0 < BOUND
        # The wait threads end while the loop still runs (a loop closed
        # first is test_cancelled_wait_async_leaves_no_exception_in_its_thread).
        await _threads_settled_async(baseline)

    asyncio.run(main())
    assert _settled_threads(baseline), (
        f"{threading.active_count() - baseline} wait threads still running after cancellation")
    # The handle still waits and wakes normally.
    since = db.commit_id()
    t = _later(0.1, _setitem, db, b"k", b"w")
    assert db.wait(LONG, since=since) == since + 1
    t.join(BOUND)


def test_cancelled_wait_async_leaves_no_exception_in_its_thread(db, monkeypatch):
    """A wait cancelled as the last thing the loop does (asyncio.run() then
    closes the loop) ends its thread quietly. (The race is the thread's
    report against the loop's close: many tries, stopping at the first
    exception. Regression: RuntimeError('Event loop is closed') in the
    thread.)"""
    db[b"k"] = b"v"
    caught = []
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(args.exc_value))
    baseline = threading.active_count()

    async def main(which):
        coro = db.wait_async() if which == 0 else db.wait_key_async(b"k")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(coro, 0.01)

    tries = 0
    deadline = time.monotonic() + 3.0
    while tries < 60 and time.monotonic() < deadline and not caught:
        asyncio.run(main(tries % 2))
        tries += 1
        _settled_threads(baseline)
    print(f"\n[cancelled wait_async] {len(caught)} thread exceptions in {tries} tries: {caught[:1]}")
    assert _settled_threads(baseline)
    assert caught == []


def test_wait_async_task_cancel(db):
    baseline = threading.active_count()

    async def main():
        task = asyncio.create_task(db.wait_async())
        await asyncio.sleep(0.1)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        dt = time.monotonic() - t0
        await _threads_settled_async(baseline)
        return dt

    assert asyncio.run(main()) < BOUND
    assert _settled_threads(baseline)


def test_cancelling_one_wait_leaves_the_others_waiting(db, other):
    """dshm_interrupt() wakes every wait of the handle: the ones not
    cancelled go back to sleep and still return the commit."""
    async def main():
        since = db.commit_id()
        keep = asyncio.create_task(db.wait_async(LONG, since))
        keep_key = asyncio.create_task(db.wait_key_async(b"k", LONG))
        drop = asyncio.create_task(db.wait_async(LONG, since))
        await asyncio.sleep(0.2)
        drop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drop
        await asyncio.sleep(0.2)
        assert not keep.done() and not keep_key.done()
        other[b"k"] = b"v"
        r = await asyncio.wait_for(keep, BOUND)
        rk = await asyncio.wait_for(keep_key, BOUND)
        return since, r, rk

    since, r, rk = asyncio.run(main())
    assert r == since + 1
    assert rk is True


def test_wait_key_async(db, other):
    db[b"k"] = b"0"

    async def main():
        t0 = time.monotonic()
        assert await db.wait_key_async(b"k", 0.2) is False
        assert time.monotonic() - t0 >= 0.2 - 1e-6
        t = _later(0.1, _setitem, other, b"k", b"1")
        r = await db.wait_key_async(b"k", LONG)
        t.join(BOUND)
        return r

    assert asyncio.run(main()) is True


def test_wait_async_handle_closed_meanwhile(db_path):
    d = dbm_shm.open(db_path, "c")

    async def main():
        task = asyncio.create_task(d.wait_async())
        await asyncio.sleep(0.1)
        d.close()
        with pytest.raises(dbm_shm.error):
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())


def test_many_async_waiters_one_write(db, other):
    async def main():
        since = db.commit_id()
        tasks = [asyncio.create_task(db.wait_async(LONG, since)) for _ in range(20)]
        await asyncio.sleep(0.2)
        other[b"k"] = b"v"
        return since, await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
    since, rs = asyncio.run(main())
    assert rs == [since + 1] * 20


# ---------------------------------------------------------------------------
# Across processes, with a read-only handle

_CHILD_WRITER = r"""
import sys, time, dbm_shm
path = sys.argv[1]
sys.stdin.readline()               # "go"
time.sleep(0.2)
with dbm_shm.open(path, "c") as db:
    db[b"from-child"] = b"hello"
"""


def _child_writer(path):
    return subprocess.Popen([sys.executable, "-c", _CHILD_WRITER, str(path)],
                            stdin=subprocess.PIPE, text=True)


def test_read_only_handle_woken_by_another_process(db, db_path):
    db[b"a"] = b"1"
    with dbm_shm.open(db_path, "r") as ro:
        since = ro.commit_id()
        child = _child_writer(db_path)
        try:
            child.stdin.write("go\n")
            child.stdin.flush()
            t0 = time.monotonic()
            r = ro.wait(LONG, since=since)
            dt = time.monotonic() - t0
        finally:
            assert child.wait(LONG) == 0
        assert r == since + 1
        assert dt < BOUND
        assert ro[b"from-child"] == b"hello"
        st = ro.stats()
        assert st["waits"] >= 1


def test_read_only_handle_wait_timeout_and_wait_key(db, db_path):
    db[b"k"] = b"0"
    with dbm_shm.open(db_path, "r") as ro:
        t0 = time.monotonic()
        assert ro.wait(0.2) is None
        assert time.monotonic() - t0 >= 0.2 - 1e-6
        t = _later(0.2, _setitem, db, b"k", b"1")
        assert ro.wait_key(b"k", LONG) is True
        t.join(BOUND)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file for writing")
def test_read_only_file_waiter_still_wakes(db_path):
    """A file the waiter may only read: its handle cannot raise the futex
    flag and sleeps in short slices instead; it still wakes."""
    with dbm_shm.open(db_path, "c", 0o644) as d:
        d[b"a"] = b"1"
    os.chmod(db_path, 0o444)
    try:
        with dbm_shm.open(db_path, "r") as ro:
            since = ro.commit_id()
            os.chmod(db_path, 0o644)
            with dbm_shm.open(db_path, "w") as w:
                t = _later(0.2, _setitem, w, b"b", b"2")
                r = ro.wait(LONG, since=since)
                t.join(BOUND)
            assert r == since + 1
    finally:
        os.chmod(db_path, 0o644)


def _nobody_waiter(path, since, conn):
    """Forked child: become `nobody` (the file is root's, mode 0644: it may
    only read it), then wait on an 'r' handle."""
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        with dbm_shm.open(path, "r") as ro:
            conn.send(("ready", None))
            t0 = time.monotonic()
            r = ro.wait(LONG, since=since)
            conn.send(("done", (r, time.monotonic() - t0, ro.get(b"b"))))
    except BaseException as e:
        conn.send(("error", repr(e)))
    finally:
        conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_waiter_that_may_only_read_the_file_still_wakes():
    """The same as above when the tests run as root: the waiter is a forked
    child that became `nobody`."""
    import multiprocessing
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="dshm-nobody-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "db")
        with dbm_shm.open(path, "c", 0o644) as w:
            os.chmod(path, 0o644)
            w[b"a"] = b"1"
            since = w.commit_id()
            ctx = multiprocessing.get_context("fork")
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_nobody_waiter, args=(path, since, theirs), daemon=True)
            p.start()
            try:
                assert mine.poll(LONG), "the waiter never reported"
                what, info = mine.recv()
                assert what == "ready", info
                time.sleep(0.2)
                # It cannot raise the futex flag: it sleeps in short slices.
                assert w.stats()["waiters"] == 0
                w[b"b"] = b"2"
                assert mine.poll(LONG), "the waiter never woke"
                what, info = mine.recv()
                assert what == "done", info
                r, dt, value = info
                assert r == since + 1
                assert dt < BOUND
                assert value == b"2"
            finally:
                p.join(BOUND)
                if p.is_alive():
                    p.kill()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# stats()


def test_stats_fields(db):
    st = db.stats()
    for name in ("count", "commit", "depth", "lock_pid", "lock_held_ns", "read_retries",
                 "read_fallbacks", "writes", "batches", "batch_ops", "lock_waits", "lock_wait_ns",
                 "waits", "wakeups", "multi_retries", "waiters", "live_bytes"):
        assert name in st, name
        assert isinstance(st[name], int) and st[name] >= 0, (name, st[name])
    # Nobody holds the lock, nobody waits.
    assert st["lock_pid"] == 0
    assert st["lock_held_ns"] == 0
    assert st["waiters"] == 0
    assert st["writes"] == st["batches"] == st["waits"] == st["wakeups"] == 0


def test_stats_write_and_batch_counters(db, other):
    s0 = db.stats()
    db[b"a"] = b"1"
    db[b"b"] = b"2"
    del db[b"a"]
    db.setdefault(b"c", b"3")
    s1 = db.stats()
    assert s1["writes"] - s0["writes"] == 4
    assert s1["batches"] == s0["batches"]
    assert s1["commit"] == 4 and s1["count"] == 2
    with db.batch():
        db[b"x"] = b"1"
        db[b"y"] = b"2"
        del db[b"b"]
    db.update({b"u": b"1", b"v": b"2", b"w": b"3"})
    with db.batch():
        pass                                    # empty: nothing
    s2 = db.stats()
    assert s2["writes"] - s1["writes"] == 2     # a batch counts once
    assert s2["batches"] - s1["batches"] == 2
    assert s2["batch_ops"] - s1["batch_ops"] == 6
    assert s2["commit"] == 6
    # Per handle: the other handle's counters did not move.
    so = other.stats()
    assert so["writes"] == so["batches"] == so["batch_ops"] == 0
    assert so["commit"] == s2["commit"]


def test_stats_wait_counters(db, other):
    s0 = db.stats()
    assert db.wait(0.05) is None
    s1 = db.stats()
    assert s1["waits"] - s0["waits"] == 1
    # A wait woken by a write counts a wake-up. (The write must come while
    # the waiter sleeps: wait until the flag says so; a few tries in case
    # the write raced ahead of the sleep.)
    woke = False
    for _ in range(5):
        before = db.stats()
        since = db.commit_id()
        seen = threading.Event()

        def write_when_asleep():
            _until(lambda: other.stats()["waiters"] == 1)
            time.sleep(0.05)
            seen.set()
            other[b"k"] = b"v"
        t = threading.Thread(target=write_when_asleep)
        t.start()
        r = db.wait(LONG, since=since)
        t.join(BOUND)
        after = db.stats()
        assert r == since + 1
        assert after["waits"] - before["waits"] >= 1
        if after["wakeups"] > before["wakeups"]:
            woke = True
            break
    assert woke, "no wait was ever counted as woken"
    # The writer's wake-up cleared the flag; nobody waits now.
    assert db.stats()["waiters"] == 0
    assert other.stats()["waits"] == 0          # per handle


def test_stats_waiters_flag(db, other):
    assert other.stats()["waiters"] == 0
    t = threading.Thread(target=db.wait, args=(LONG,))
    t.start()
    assert _until(lambda: other.stats()["waiters"] == 1)
    other[b"k"] = b"v"
    t.join(BOUND)
    assert not t.is_alive()
    assert other.stats()["waiters"] == 0


def test_stats_lock_holder(db, other):
    """While a thread holds the writer lock (writing big batches), another
    handle sees this process as the holder and a non-zero hold time; a
    write through a third handle meanwhile counts a lock wait."""
    big = {b"big%d" % i: bytes([i]) * (4 << 20) for i in range(6)}
    stop = threading.Event()
    errors = []

    def hold():
        try:
            while not stop.is_set():
                db.update(big)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=hold)
    t.start()
    held_ns = []
    waited = False
    try:
        deadline = time.monotonic() + LONG
        while time.monotonic() < deadline and not (held_ns and max(held_ns) > 0 and waited):
            st = other.stats()
            if st["lock_pid"] == os.getpid():
                held_ns.append(st["lock_held_ns"])
                if not waited:
                    w0 = other.stats()
                    other[b"small"] = b"s"
                    w1 = other.stats()
                    if w1["lock_waits"] > w0["lock_waits"]:
                        waited = True
                        assert w1["lock_wait_ns"] > w0["lock_wait_ns"]
    finally:
        stop.set()
        t.join(LONG)
    assert not errors, errors
    assert held_ns, "the lock holder was never seen"
    assert max(held_ns) > 0
    assert waited, "a write while the lock was held never counted a lock wait"
    st = other.stats()
    assert st["lock_pid"] == 0 and st["lock_held_ns"] == 0


def test_stats_on_closed_handle(db_path):
    d = dbm_shm.open(db_path, "c")
    d.close()
    with pytest.raises(dbm_shm.error):
        d.stats()
