"""Database as a ``collections.abc.MutableMapping`` (issue 14).

The mapping methods against ``dict`` semantics, where dbm.gnu's behaviour
wins (keys() a list, identity hashing), pop/popitem as one C call each
(``dshm_pop``/``dshm_popitem``: the buffer protocol, read-only and closed
handles, large values), everything inside an open batch (read-your-writes),
and close() while a batch is open. The hypothesis model of every method is
in test_mapping_model.py; concurrent popitem() in real processes in
test_pop_multiprocess.py.
"""

import collections.abc
import gc
import sys
import threading

import pytest

import dbm_shm
from dbm_shm._db import _BUFCAP
from dbm_shm._dshm import ffi, lib

MiB = 1 << 20


# ---------------------------------------------------------------------------
# The type


def test_is_a_mutable_mapping(db):
    assert isinstance(db, collections.abc.MutableMapping)
    assert issubclass(dbm_shm.Database, collections.abc.MutableMapping)
    # The hot methods are the class's own, not the ABC's mixins.
    for name in ("__getitem__", "__setitem__", "__delitem__", "__contains__", "get", "__len__",
                 "__iter__", "keys", "items", "values", "pop", "popitem", "setdefault", "update",
                 "clear", "__eq__"):
        assert name in vars(dbm_shm.Database), name


def test_identity_hash_as_dbm_gnu(db, db_path):
    assert hash(db) == object.__hash__(db)
    with dbm_shm.open(db_path, "r") as r:
        assert db == r                 # same contents ...
        assert hash(db) != hash(r)     # ... but hashed by identity
        assert len({db, r}) == 2


def test_keys_is_a_list(db):
    db.update({b"a": b"1", b"b": b"2"})
    assert isinstance(db.keys(), list)
    assert isinstance(db.values(), list)
    assert isinstance(db.items(), list)
    assert sorted(db) == sorted(db.keys()) == [b"a", b"b"]


def test_eq_as_a_mapping(db, db_path):
    assert db == {}
    db.update({b"a": b"1", "b": "2"})
    assert db == {b"a": b"1", b"b": b"2"}
    assert {b"a": b"1", b"b": b"2"} == db
    assert db != {b"a": b"1"}
    assert db != {b"a": b"1", b"b": b"3"}
    assert db == db.snapshot()
    assert db != [b"a", b"b"]           # not a mapping: not equal
    assert (db == 1) is False
    with dbm_shm.open(db_path, "r") as r:
        assert r == db


# ---------------------------------------------------------------------------
# pop and popitem


def test_pop(db):
    db.update({b"a": b"1", "b": "2"})
    c = db.commit_id()
    assert db.pop(b"a") == b"1"
    assert db.commit_id() == c + 1
    assert b"a" not in db and len(db) == 1
    assert db.pop("b") == b"2"
    assert db.pop(b"a", None) is None
    assert db.pop(b"a", b"d") == b"d"
    assert db.pop(bytearray(b"a"), 7) == 7
    assert db.commit_id() == c + 2      # a miss writes nothing
    with pytest.raises(KeyError) as ei:
        db.pop(b"a")
    assert ei.value.args == (b"a",)
    with pytest.raises(TypeError):
        db.pop(1)
    assert db.check() == []


def test_popitem_drains_each_key_once(db):
    model = {b"k%04d" % i: b"v%d" % i for i in range(2000)}
    db.update(model)
    got = {}
    while True:
        try:
            k, v = db.popitem()
        except KeyError as e:
            assert "empty" in str(e)
            break
        assert k not in got
        got[k] = v
        assert len(db) == len(model) - len(got)
    assert got == model
    assert len(db) == 0 and db.keys() == []
    assert db.check() == []
    with pytest.raises(KeyError):
        db.popitem()


def test_mutable_mapping_mixins_agree(db):
    db.update([(b"a", b"1")], b=b"2")
    assert db.setdefault(b"a", b"x") == b"1"
    assert db.setdefault(b"c", b"3") == b"3"
    assert dict(db.items()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert sorted(db.values()) == [b"1", b"2", b"3"]
    db.clear()
    assert db == {}


@pytest.mark.parametrize("size", [0, _BUFCAP - 1, _BUFCAP, _BUFCAP + 1, 3 * MiB + 7])
def test_pop_large_values(db, other, size):
    """Values larger than the per-thread buffer: the first call reports the
    size and removes nothing, the second takes it; one commit in all."""
    v = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    db[b"big"] = v
    db[b"small"] = b"s"
    c = db.commit_id()
    assert db.pop(b"big") == v
    assert db.commit_id() == c + 1
    assert b"big" not in other and other[b"small"] == b"s"
    db[b"big"] = v
    del db[b"small"]
    assert db.popitem() == (b"big", v)
    assert len(db) == 0 and db.check() == []


def test_popitem_large_key(db):
    k = b"K" * (_BUFCAP + 5)
    db[k] = b"v" * 10
    assert db.popitem() == (k, b"v" * 10)


@pytest.mark.parametrize("call", ["pop", "popitem"])
def test_pop_read_only(db, db_path, call):
    db[b"k"] = b"v"
    with dbm_shm.open(db_path, "r") as r:
        c = r.commit_id()
        with pytest.raises(dbm_shm.error) as ei:
            r.pop(b"k") if call == "pop" else r.popitem()
        assert str(ei.value).startswith(f"{call}: database is opened read-only")
        assert str(db_path) in str(ei.value)
        assert ei.value.code == lib.DSHM_READONLY
        assert r.commit_id() == c and r[b"k"] == b"v"


@pytest.mark.parametrize("call", ["pop", "pop_default", "popitem"])
def test_pop_closed(db_path, call):
    d = dbm_shm.open(db_path, "c")
    d[b"k"] = b"v"
    d.close()
    with pytest.raises(dbm_shm.error) as ei:
        {"pop": lambda: d.pop(b"k"), "pop_default": lambda: d.pop(b"missing", None),
         "popitem": d.popitem}[call]()
    assert str(ei.value) == "GDBM object has already been closed"
    with dbm_shm.open(db_path, "r") as r:
        assert dict(r.items()) == {b"k": b"v"}


def test_c_protocol_too_small_buffer_changes_nothing(db):
    """dshm_pop/dshm_popitem with a buffer too small: the size needed is
    returned, nothing is copied or deleted, the commit does not move."""
    db[b"key"] = b"0123456789"
    c = db.commit_id()
    buf = ffi.new("char[]", 4)
    assert lib.dshm_pop(db._h, b"key", 3, buf, 4) == 10
    assert lib.dshm_pop(db._h, b"key", 3, ffi.NULL, 0) == 10
    klen = ffi.new("uint64_t *")
    assert lib.dshm_popitem(db._h, buf, 4, klen) == 13
    assert lib.dshm_popitem(db._h, ffi.NULL, 0, klen) == 13
    assert db.commit_id() == c and db[b"key"] == b"0123456789"
    assert db.stats()["writes"] == 1
    # Invalid arguments.
    assert lib.dshm_pop(db._h, ffi.NULL, 3, buf, 4) == lib.DSHM_INVALID
    assert lib.dshm_pop(db._h, b"key", 3, ffi.NULL, 4) == lib.DSHM_INVALID
    assert lib.dshm_popitem(db._h, buf, 4, ffi.NULL) == lib.DSHM_INVALID
    # A buffer that fits: taken.
    big = ffi.new("char[]", 13)
    assert lib.dshm_popitem(db._h, big, 13, klen) == 13
    assert klen[0] == 3 and ffi.buffer(big, 13)[:] == b"key0123456789"
    assert lib.dshm_popitem(db._h, big, 13, klen) == lib.DSHM_NOTFOUND
    assert lib.dshm_pop(db._h, b"key", 3, big, 13) == lib.DSHM_NOTFOUND
    assert db.commit_id() == c + 1


def test_pop_with_sync_flag(db_path):
    with dbm_shm.open(db_path, "cs") as d:
        d[b"a"] = b"1"
        d[b"b"] = b"2"
        assert d.pop(b"a") == b"1"
        assert d.popitem() == (b"b", b"2")
        assert len(d) == 0


def test_pop_threads_each_key_once(db):
    keys = [b"t%05d" % i for i in range(3000)]
    db.update(dict.fromkeys(keys, b"v"))
    results = [[] for _ in range(4)]

    def worker(out):
        while True:
            try:
                out.append(db.popitem()[0])
            except KeyError:
                return

    ts = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    got = [k for r in results for k in r]
    assert sorted(got) == keys
    assert len(db) == 0


# ---------------------------------------------------------------------------
# Inside a batch: read-your-writes


def test_mapping_methods_inside_a_batch(db, other):
    db.update({b"s1": b"1", b"s2": b"2", b"s3": b"3"})
    c = db.commit_id()
    with db.batch():
        db[b"n1"] = b"new"
        assert db.pop(b"s1") == b"1"
        assert db.pop(b"s1", None) is None
        assert db.pop(b"n1") == b"new"
        assert db.setdefault(b"n2", b"x") == b"x"
        assert db.setdefault(b"s2", b"x") == b"2"
        db.update({b"u": b"u"}, s3=b"33")
        assert db.get(b"s3") == b"33" and db.get(b"s1") is None and db.get(b"s1", b"d") == b"d"
        expect = {b"s2": b"2", b"s3": b"33", b"n2": b"x", b"u": b"u"}
        assert db == expect and len(db) == 4
        assert dict(db.items()) == expect
        assert sorted(db.values()) == sorted(expect.values())
        assert sorted(db) == sorted(expect) == sorted(db.keys())
        assert b"s1" not in db and b"u" in db
        k, v = db.popitem()
        assert expect.pop(k) == v
        assert db == expect
        with pytest.raises(KeyError):
            db.pop(b"nope")
        # Nothing of it is committed yet.
        assert other == {b"s1": b"1", b"s2": b"2", b"s3": b"3"}
        assert db.commit_id() == c
    assert db.commit_id() == c + 1
    assert other == expect == db


def test_popitem_inside_a_batch_drains(db, other):
    model = {b"a": b"1", b"b": b"2"}
    db.update(model)
    with db.batch():
        db[b"c"] = b"3"
        got = dict(db.popitem() for _ in range(3))
        with pytest.raises(KeyError):
            db.popitem()
        assert len(db) == 0
    assert got == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert len(other) == 0


def test_pop_inside_a_failed_batch_is_undone(db):
    db[b"a"] = b"1"
    with pytest.raises(RuntimeError):
        with db.batch():
            assert db.pop(b"a") == b"1"
            raise RuntimeError
    assert db == {b"a": b"1"}


# ---------------------------------------------------------------------------
# close() while a batch is open


def _closes_with(d, db_path, expect):
    """d holds expect, closes now, and the file holds it after."""
    assert d == expect
    d.close()
    with dbm_shm.open(db_path, "r") as r:
        assert r == expect


def test_close_inside_own_batch_raises_and_loses_nothing(db_path):
    d = dbm_shm.open(db_path, "c")
    with d.batch():
        d[b"a"] = b"1"
        with pytest.raises(dbm_shm.error) as ei:
            d.close()
        msg = str(ei.value)
        assert "close()" in msg and "batch()" in msg and "this thread" in msg
        assert "1 pending writes" in msg and str(db_path) in msg
        d[b"b"] = b"2"                  # the batch is still usable
    _closes_with(d, db_path, {b"a": b"1", b"b": b"2"})


def test_close_with_a_batch_open_in_another_thread(db_path):
    d = dbm_shm.open(db_path, "c")
    opened, closed_tried = threading.Event(), threading.Event()

    def batcher():
        with d.batch():
            d[b"t"] = b"1"
            opened.set()
            closed_tried.wait(10)
            d[b"u"] = b"2"

    t = threading.Thread(target=batcher, name="batcher-thread")
    t.start()
    assert opened.wait(10)
    with pytest.raises(dbm_shm.error) as ei:
        d.close()
    assert "thread 'batcher-thread'" in str(ei.value)
    closed_tried.set()
    t.join()
    _closes_with(d, db_path, {b"t": b"1", b"u": b"2"})


def test_context_manager_exit_with_batch_open(db_path):
    d = dbm_shm.open(db_path, "c")
    b = d.batch()
    b.__enter__()
    d[b"a"] = b"1"
    with pytest.raises(dbm_shm.error):
        d.__exit__(None, None, None)
    b.__exit__(None, None, None)
    d.close()
    with dbm_shm.open(db_path, "r") as r:
        assert r == {b"a": b"1"}


def test_del_and_gc_never_raise(db_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    d = dbm_shm.open(db_path, "c")
    d.batch().__enter__()              # a batch never ended
    d[b"a"] = b"1"
    del d
    gc.collect()
    e = dbm_shm.open(db_path, "c")
    e.close()
    del e
    gc.collect()
    assert seen == []
