"""Consistent multi-key reads in one process: ``db.get_many(keys)`` and
``db.snapshot()`` / ``db.snapshot(keys)``.

Values, order, defaults, absent keys, buffers bigger than the 64 KiB
per-thread one, and the ``Snapshot`` mapping type. That the values are all
current at one instant while other processes write is checked in
tests/multiprocess/test_wait_batch_mp.py.
"""

import collections.abc
import threading

import pytest

import dbm_shm
from dbm_shm import Snapshot

KiB = 1 << 10
MiB = 1 << 20


def _fill(db, n=100):
    model = {b"k%03d" % i: b"v%d" % i * (i % 5 + 1) for i in range(n)}
    db.update(model)
    return model


# ---------------------------------------------------------------------------
# get_many


def test_get_many_order_and_missing(db):
    model = _fill(db)
    keys = [b"k050", b"k001", b"nope", b"k099", b"k000", b"also-nope", b"k050"]
    assert db.get_many(keys) == [model.get(k) for k in keys]
    assert db.get_many(reversed(keys)) == [model.get(k) for k in reversed(keys)]


def test_get_many_default(db):
    _fill(db, 3)
    assert db.get_many([b"k000", b"x", b"k002"], default=b"D") == [b"v0", b"D", b"v2v2v2"]
    assert db.get_many([b"x", b"y"], b"") == [b"", b""]
    assert db.get_many([b"x"]) == [None]
    assert db.get_many([b"x"], None) == [None]


def test_get_many_key_types(db):
    db[b"bytes"] = b"1"
    db["str\u00e9"] = b"2"
    assert db.get_many(["bytes", b"str\xc3\xa9", bytearray(b"bytes"), memoryview(b"bytes")]) == \
        [b"1", b"2", b"1", b"1"]
    with pytest.raises(TypeError):
        db.get_many([1])
    with pytest.raises(TypeError):
        db.get_many([b"bytes", None])


def test_get_many_empty(db):
    assert db.get_many([]) == []
    _fill(db, 5)
    assert db.get_many(iter(())) == []
    assert db.get_many((k for k in [b"k001"])) == [b"v1v1"]


def test_get_many_empty_key_and_value(db):
    db[b""] = b"empty key"
    db[b"ev"] = b""
    assert db.get_many([b"", b"ev", b"missing"]) == [b"empty key", b"", None]
    assert db.get_many([b"ev"], default=b"d") == [b""]


def test_get_many_large_values(db):
    """Values past the 64 KiB per-thread buffer, more than 1 MiB in all."""
    vals = {
        b"a": b"a" * (64 * KiB + 1),
        b"b": bytes(range(256)) * 1024,          # 256 KiB
        b"small": b"s",
        b"c": b"c" * (2 * MiB + 7),
        b"d": b"d" * (64 * KiB),                 # exactly the buffer
    }
    db.update(vals)
    keys = [b"small", b"a", b"missing", b"b", b"c", b"d"]
    got = db.get_many(keys)
    assert got == [vals.get(k) for k in keys]
    assert sum(len(v) for v in got if v) > MiB
    # Many values that each fit but together do not.
    many = {b"m%03d" % i: bytes([i % 256]) * (30 * KiB) for i in range(60)}
    db.update(many)
    assert db.get_many(list(many)) == list(many.values())
    # The per-thread buffer still works for small reads after a big one.
    assert db.get_many([b"small"]) == [b"s"]
    assert db[b"small"] == b"s"


def test_get_many_many_keys(db):
    model = {b"key%05d" % i: b"%d" % i for i in range(20_000)}
    db.update(model)
    keys = sorted(model, reverse=True)
    assert db.get_many(keys) == [model[k] for k in keys]


def test_get_many_on_read_only_handle(db, db_path):
    model = _fill(db, 10)
    with dbm_shm.open(db_path, "r") as ro:
        assert ro.get_many(list(model)) == list(model.values())
        assert ro.snapshot() == model


def test_get_many_from_threads(db):
    """Many threads of one handle, each with large values (each thread has
    its own buffer)."""
    vals = {b"t%d" % t: bytes([t]) * (100 * KiB + t) for t in range(8)}
    db.update(vals)
    errors = []

    def work(t):
        try:
            for _ in range(200):
                keys = [b"t%d" % t, b"t%d" % ((t + 1) % 8), b"none"]
                assert db.get_many(keys) == [vals.get(k) for k in keys]
        except BaseException as e:
            errors.append(e)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    assert not errors, errors


# ---------------------------------------------------------------------------
# snapshot()


def test_snapshot_whole_store_equals_items(db):
    model = _fill(db, 500)
    del db[b"k007"]
    del model[b"k007"]
    db[b"k008"] = model[b"k008"] = b"changed"
    s = db.snapshot()
    assert isinstance(s, Snapshot)
    assert dict(s) == dict(db.items()) == model
    assert s == model
    assert len(s) == len(db) == 499
    assert s.commit_id == db.commit_id()


def test_snapshot_empty_store(db):
    s = db.snapshot()
    assert len(s) == 0
    assert dict(s) == {}
    assert s.commit_id == db.commit_id() == 0
    assert db.snapshot([b"a", b"b"]) == {}


def test_snapshot_of_keys(db):
    model = _fill(db, 50)
    s = db.snapshot([b"k001", "k002", b"missing", b"k049"])
    assert dict(s) == {b"k001": model[b"k001"], b"k002": model[b"k002"], b"k049": model[b"k049"]}
    assert b"missing" not in s
    assert s.commit_id == db.commit_id()
    assert db.snapshot([]) == {}


def test_snapshot_is_a_read_only_mapping(db):
    _fill(db, 10)
    s = db.snapshot()
    assert isinstance(s, collections.abc.Mapping)
    assert not isinstance(s, collections.abc.MutableMapping)
    assert s[b"k001"] == b"v1v1"
    assert s["k001"] == b"v1v1"                     # str keys, UTF-8
    assert s[bytearray(b"k001")] == b"v1v1"
    assert "k001" in s and b"k001" in s
    assert b"nope" not in s
    with pytest.raises(KeyError):
        s[b"nope"]
    assert s.get(b"nope") is None
    assert s.get(b"nope", b"d") == b"d"
    assert sorted(s.keys()) == sorted(db.keys())
    assert sorted(s.values()) == sorted(db.values())
    assert sorted(s.items()) == sorted(db.items())
    assert all(type(k) is bytes and type(v) is bytes for k, v in s.items())
    with pytest.raises(TypeError):
        s[b"k001"] = b"x"                           # type: ignore[index]
    with pytest.raises(TypeError):
        del s[b"k001"]                              # type: ignore[attr-defined]
    assert not hasattr(s, "update")
    assert not hasattr(s, "pop")
    assert isinstance(s.commit_id, int)
    assert "Snapshot" in repr(s)


def test_snapshot_is_a_copy(db):
    _fill(db, 10)
    s = db.snapshot()
    sk = db.snapshot([b"k001", b"k002"])
    c = s.commit_id
    db[b"k001"] = b"changed"
    del db[b"k002"]
    db[b"new"] = b"n"
    db.clear()
    assert s[b"k001"] == b"v1v1" and s[b"k002"] == b"v2v2v2"
    assert b"new" not in s
    assert len(s) == 10
    assert sk == {b"k001": b"v1v1", b"k002": b"v2v2v2"}
    assert s.commit_id == c < db.commit_id()


def test_snapshot_context_manager(db):
    model = _fill(db, 20)
    with db.snapshot() as s:
        assert dict(s) == model
        assert s.commit_id == db.commit_id()
    # Documented: leaving the block drops the copy.
    assert len(s) == 0 and dict(s) == {}
    with db.snapshot([b"k000"]) as s:
        assert dict(s) == {b"k000": b"v0"}
    assert len(s) == 0


def test_snapshot_commit_ids_follow_writes(db):
    ids = []
    for i in range(5):
        db[b"k%d" % i] = b"v"
        ids.append((db.snapshot().commit_id, db.snapshot([b"k0"]).commit_id, db.commit_id()))
    for a, b, c in ids:
        assert a == b == c
    assert [c for _, _, c in ids] == sorted({c for _, _, c in ids})


def test_snapshot_large_values(db):
    vals = {b"big%d" % i: bytes([i + 1]) * (700 * KiB + i) for i in range(4)}
    vals[b"huge"] = b"h" * (5 * MiB)
    vals.update({b"s%d" % i: b"x" * i for i in range(1000)})
    db.update(vals)
    s = db.snapshot()
    assert s == vals
    sk = db.snapshot([b"big0", b"huge", b"s5", b"missing"])
    assert dict(sk) == {b"big0": vals[b"big0"], b"huge": vals[b"huge"], b"s5": vals[b"s5"]}


def test_snapshot_many_keys_across_buckets(db):
    model = {b"key%06d" % i: b"%d" % (i * 7) for i in range(30_000)}
    db.update(model)
    assert db.stats()["depth"] > 0        # many bucket pages
    s = db.snapshot()
    assert s == model
    assert s.commit_id == db.commit_id()


def test_snapshot_excludes_the_open_batch(db):
    """Documented: a batch open in this thread is not part of snapshot()."""
    db[b"a"] = b"1"
    with db.batch():
        db[b"a"] = b"2"
        db[b"b"] = b"3"
        assert db.snapshot() == {b"a": b"1"}
        assert db.snapshot([b"a", b"b"]) == {b"a": b"1"}
    assert db.snapshot() == {b"a": b"2", b"b": b"3"}


def test_snapshot_after_reorganize(db, db_path):
    model = _fill(db, 300)
    for i in range(0, 300, 2):
        del db[b"k%03d" % i]
        del model[b"k%03d" % i]
    with dbm_shm.open(db_path, "r") as ro:
        db.reorganize()
        assert ro.snapshot() == model
        assert ro.get_many(list(model)) == list(model.values())
    assert db.snapshot() == model


# ---------------------------------------------------------------------------
# Closed handles


def test_closed_handle_raises(db_path):
    d = dbm_shm.open(db_path, "c")
    d[b"a"] = b"1"
    d.close()
    with pytest.raises(dbm_shm.error):
        d.get_many([b"a"])
    with pytest.raises(dbm_shm.error):
        d.get_many([])
    with pytest.raises(dbm_shm.error):
        d.snapshot()
    with pytest.raises(dbm_shm.error):
        d.snapshot([b"a"])


def test_snapshot_survives_close(db_path):
    d = dbm_shm.open(db_path, "c")
    d[b"a"] = b"1"
    s = d.snapshot()
    d.close()
    assert s == {b"a": b"1"}
