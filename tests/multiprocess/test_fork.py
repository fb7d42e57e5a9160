"""Handles and fork (csrc/dbm_shm.h caveats: a handle survives fork()).

os.fork(): the child keeps using the parent's handle, reading and writing,
and leaves with os._exit; the parent sees its writes through its own
handle. multiprocessing with every start method, passing the path.
"""

import multiprocessing
import os
import signal

import pytest

import dbm_shm
from _support.helpers import check_value, make_value, mp_child_write, pool_task

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def _fork(child):
    """Run child() in a forked process; return its exit status (0 = ok).
    Any exception in the child is a non-zero status; the child never
    returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if child() is not False else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(f"child killed by {signal.Signals(os.WTERMSIG(status)).name}")
    return os.WEXITSTATUS(status)


def _fill(db, prefix, n, ver=1):
    for i in range(n):
        k = b"%s%d" % (prefix, i)
        db[k] = make_value(k, ver, (i * 31) % 400)


def test_child_uses_parent_handle(store_path):
    db = dbm_shm.open(store_path, "c")
    _fill(db, b"parent", 100)

    def child():
        for i in range(100):
            k = b"parent%d" % i
            assert check_value(k, db[k]) == 1
        _fill(db, b"child", 20_000)          # splits, doublings, file growth
        db[b"parent1"] = make_value(b"parent1", 2, 10)
        del db[b"parent0"]
        assert db.check() == []

    assert _fork(child) == 0
    # The parent sees the child's writes through its own handle.
    assert b"parent0" not in db
    assert check_value(b"parent1", db[b"parent1"]) == 2
    for i in range(20_000):
        k = b"child%d" % i
        assert check_value(k, db[k]) == 1
    assert len(db) == 99 + 20_000
    assert db.check() == []
    # And the parent's handle still writes after the child is gone.
    db[b"after"] = make_value(b"after", 1, 5)
    db.close()
    with dbm_shm.open(store_path, "r") as db2:
        assert check_value(b"after", db2[b"after"]) == 1
        assert len(db2) == 99 + 20_001


def test_parent_and_child_write_at_once_through_one_handle(store_path):
    """Parent and forked child write disjoint keys at the same time on the
    inherited handle (one open file, two processes, one lock)."""
    db = dbm_shm.open(store_path, "c")
    db[b"x"] = make_value(b"x", 1, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(w, b"go")
            _fill(db, b"c", 20_000)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert os.read(r, 2) == b"go"
    os.close(r)
    _fill(db, b"p", 20_000)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    for prefix in (b"c", b"p"):
        for i in range(20_000):
            k = b"%s%d" % (prefix, i)
            assert check_value(k, db[k]) == 1
    assert len(db) == 40_001
    assert db.check() == []
    db.close()


def test_child_reorganizes_parent_follows(store_path):
    db = dbm_shm.open(store_path, "c")
    _fill(db, b"k", 5000)
    for i in range(0, 5000, 2):
        del db[b"k%d" % i]
    size_before = db.stats()["file_size"]

    def child():
        db.reorganize()
        db[b"from-child"] = make_value(b"from-child", 1, 3)

    assert _fork(child) == 0
    # The parent's handle follows the renamed file.
    assert check_value(b"from-child", db[b"from-child"]) == 1
    st = db.stats()
    assert st["reopens"] >= 1
    assert st["file_size"] <= size_before
    assert len(db) == 2501
    for i in range(1, 5000, 2):
        k = b"k%d" % i
        assert check_value(k, db[k]) == 1
    db[b"from-parent"] = make_value(b"from-parent", 1, 3)
    db.close()
    with dbm_shm.open(store_path, "r") as db2:
        assert check_value(b"from-parent", db2[b"from-parent"]) == 1
        assert db2.check() == []


def test_forked_child_of_reader_handle(store_path):
    """A read-only handle inherited over fork keeps reading, and still
    refuses writes, in the child."""
    with dbm_shm.open(store_path, "c") as w:
        _fill(w, b"k", 1000)
    db = dbm_shm.open(store_path, "r")

    def child():
        for i in range(1000):
            k = b"k%d" % i
            assert check_value(k, db[k]) == 1
        with pytest.raises(dbm_shm.error):
            db[b"nope"] = b"x"

    assert _fork(child) == 0
    db.close()


def test_many_forks_in_a_row(store_path):
    """Twenty children, one after another, each writing through the
    inherited handle while the parent keeps it open."""
    db = dbm_shm.open(store_path, "c")
    for c in range(20):
        def child(c=c):
            _fill(db, b"f%d-" % c, 500, ver=c + 1)
        assert _fork(child) == 0
    for c in range(20):
        for i in range(0, 500, 50):
            k = b"f%d-%d" % (c, i)
            assert check_value(k, db[k]) == c + 1
    assert len(db) == 20 * 500
    assert db.check() == []
    db.close()


@pytest.mark.parametrize("method", METHODS)
def test_multiprocessing_start_methods(store_path, method):
    """Children of each start method open the path, read the parent's keys
    and write their own, three at once."""
    ctx = multiprocessing.get_context(method)
    with dbm_shm.open(store_path, "c") as db:
        _fill(db, b"parent", 100)
    q = ctx.Queue()
    procs = [ctx.Process(target=mp_child_write, args=(store_path, i, 3000, q)) for i in range(3)]
    for p in procs:
        p.start()
    reports = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, (method, p.exitcode)
    assert reports == {0: "ok", 1: "ok", 2: "ok"}, reports
    with dbm_shm.open(store_path, "r") as db:
        for i in range(3):
            for j in range(3000):
                k = b"child%d-%d" % (i, j)
                assert check_value(k, db[k]) == i + 1
        assert len(db) == 100 + 3 * 3000
        assert db.check() == []


@pytest.mark.parametrize("method", METHODS)
def test_pool_start_methods(store_path, method):
    """A multiprocessing.Pool of each start method writing through the path."""
    dbm_shm.open(store_path, "n").close()
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(3) as pool:
        got = pool.map(pool_task, [(store_path, i) for i in range(60)])
    assert got == [i + 1 for i in range(60)]
    with dbm_shm.open(store_path, "r") as db:
        assert len(db) == 60
        assert db.check() == []


def test_fork_with_handle_in_module_global(store_path):
    """multiprocessing 'fork' children inherit a handle opened before the
    fork (not passed, not reopened) and use it."""
    global _INHERITED
    _INHERITED = dbm_shm.open(store_path, "c")
    try:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_use_inherited, args=(i,)) for i in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        for i in range(3):
            for j in range(1000):
                k = b"inh%d-%d" % (i, j)
                assert check_value(k, _INHERITED[k]) == i + 1
        assert _INHERITED.check() == []
    finally:
        _INHERITED.close()


_INHERITED = None


def _use_inherited(i):
    for j in range(1000):
        k = b"inh%d-%d" % (i, j)
        _INHERITED[k] = make_value(k, i + 1, j % 300)
