"""The C fast path is there where it must be, serves the calls, counts
them, keeps reference counts balanced and survives a concurrent close."""

import os
import platform
import sys
import sysconfig
import threading

import pytest

import dbm_shm
from dbm_shm import _fastglue
from dbm_shm._db import Database

DISABLED = os.environ.get("DSHM_NO_FASTPATH", "") not in ("", "0")
REQUIRED = (platform.python_implementation() == "CPython" and sys.platform.startswith("linux")
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))
needs_fast = pytest.mark.skipif(not _fastglue.ENABLED, reason="fast path not in use")


def test_fast_path_present_where_required():
    """Fails if the extension is missing on CPython/Linux (setup.py builds
    it there, and a broken build must not pass unnoticed)."""
    if DISABLED:
        assert not _fastglue.ENABLED
        assert Database.__mro__[1] is _fastglue._PlainBase
        return
    if REQUIRED:
        from dbm_shm import _fast   # an ImportError here is the failure
        assert _fastglue.ENABLED
        assert Database.__mro__[1] is _fast.FastBase
        # The class's slots are the C functions themselves.
        assert Database.__dict__["__getitem__"] is _fast.FastBase.__dict__["__getitem__"]
        assert Database.get is _fast.FastBase.__dict__["get"]


def test_stats_count_fast_calls(db):
    db[b"k"] = b"v"
    db[b"k"]
    db.get(b"k")
    db.get(b"absent")
    _ = b"k" in db
    del db[b"k"]
    db[bytearray(b"k")] = b"y"   # not a bytes/str key: handed to Python
    st = db.stats()
    if not _fastglue.ENABLED:
        assert (st["fast_gets"], st["fast_sets"], st["fast_fallbacks"]) == (0, 0, 0)
    else:
        assert st["fast_gets"] == 4 and st["fast_sets"] == 2 and st["fast_fallbacks"] == 1, st


def test_stats_count_fast_calls_fallback_type(db):
    with pytest.raises(TypeError, match="must be str or bytes-like, not float"):
        db[1.5]


@needs_fast
def test_every_deferred_case_counts_as_fallback(db):
    big = b"x" * 5000
    db[b"big"] = big
    before = db.stats()["fast_fallbacks"]
    assert db[b"big"] == big                  # over the stack buffer
    assert db.get(b"big") == big
    assert db[bytearray(b"big")] == big       # bytes-like key
    assert db.get(b"big", default=None) == big   # keyword
    with db.batch():                          # a batch open
        db[b"a"] = b"1"
        assert db[b"a"] == b"1"
    # get() handed over runs Database.get in Python, whose self[key] comes
    # back through the fast path and is handed over again: 2 each.
    assert db.stats()["fast_fallbacks"] - before == 1 + 2 + 1 + 2 + 2
    db.close()
    with pytest.raises(dbm_shm.error, match="closed"):
        db[b"a"]


@needs_fast
def test_batch_in_another_thread_defers_but_agrees(db):
    """A batch open in one thread sends every thread to Python; the others
    still read the store without the batch."""
    db[b"k"] = b"old"
    inside, done = threading.Event(), threading.Event()

    def batcher():
        with db.batch():
            db[b"k"] = b"new"
            inside.set()
            done.wait(10)

    t = threading.Thread(target=batcher)
    t.start()
    inside.wait(10)
    try:
        assert db[b"k"] == b"old"
        assert db.get(b"k") == b"old"
    finally:
        done.set()
        t.join()
    assert db[b"k"] == b"new"


def test_reference_counts_stay_put(db):
    """No leaked or stolen references on any fast operation."""
    key, skey, val, default, missing = b"key", "skey", b"v" * 100, object(), b"missing"
    db[key] = val
    db[skey] = val
    objs = (key, skey, val, default, missing, db)

    def ops():
        for _ in range(2000):
            db[key]
            db[skey]
            db.get(key)
            db.get(missing, default)
            assert key in db and missing not in db
            db[key] = val
            try:
                db[missing]
            except KeyError:
                pass
            try:
                del db[missing]
            except KeyError:
                pass

    ops()   # warm up caches (the str key's UTF-8 copy, interned ints)
    before = [sys.getrefcount(o) for o in objs]
    ops()
    assert [sys.getrefcount(o) for o in objs] == before
    if hasattr(sys, "gettotalrefcount"):   # a debug build of Python
        total = sys.gettotalrefcount()
        ops()
        assert abs(sys.gettotalrefcount() - total) < 50


def test_close_while_other_threads_read_and_write(db_path):
    """close() racing fast calls in other threads: every call either
    succeeds or raises the closed error; nothing crashes."""
    for _ in range(20):
        db = dbm_shm.open(db_path, "c")
        for i in range(50):
            db[b"%d" % i] = b"v%d" % i
        stop = threading.Event()
        errors = []

        def work(n):
            i = 0
            while not stop.is_set():
                k = b"%d" % (i % 50)
                try:
                    if n % 2:
                        db[k] = b"v%d" % (i % 50)
                    else:
                        v = db.get(k)
                        assert v in (None, b"v%d" % (i % 50))
                except dbm_shm.error as e:
                    if "closed" not in str(e):
                        errors.append(e)
                    return
                except Exception as e:   # noqa: BLE001 -- reported below
                    errors.append(e)
                    return
                i += 1

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        db.close()
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        del db
