"""The mapping interface: [], del, in, len, bool, get, setdefault, clear,
sync, context manager, and the extras items()/values()/iteritems()/stats()/
check()/commit_id()."""

import dbm

import pytest

import dbm_shm

from ._util import assert_matches


def test_set_get_delete(db):
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    assert b"k" in db
    assert len(db) == 1
    del db[b"k"]
    assert b"k" not in db
    assert len(db) == 0
    with pytest.raises(KeyError):
        db[b"k"]


def test_values_are_bytes(db):
    db["s"] = "text"
    db[b"b"] = bytearray(b"ba")
    for k in (b"s", b"b", "s"):
        assert type(db[k]) is bytes
    assert all(type(k) is bytes for k in db.keys())
    assert all(type(v) is bytes for v in db.values())
    assert all(type(k) is bytes and type(v) is bytes for k, v in db.items())
    assert type(db.get(b"s")) is bytes
    assert type(db.firstkey()) is bytes


def test_overwrite_changes_size_both_ways(db):
    for n in [1, 100, 5000, 3, 0, 70000, 16, 100000, 1]:
        db[b"k"] = b"x" * n
        assert db[b"k"] == b"x" * n
        assert len(db) == 1
    assert db.check() == []


def test_overwrite_does_not_touch_other_keys(db):
    for i in range(500):
        db[b"%d" % i] = b"v%d" % i
    for i in range(0, 500, 2):
        db[b"%d" % i] = b"w%d" % i * 7
    assert_matches(db, {b"%d" % i: (b"w%d" % i * 7 if i % 2 == 0 else b"v%d" % i) for i in range(500)})


@pytest.mark.parametrize("key", [b"missing", "missing", bytearray(b"missing"), "ключ"])
def test_missing_key_raises_keyerror_with_the_key(db, key):
    db[b"other"] = b"x"
    with pytest.raises(KeyError) as ei:
        db[key]
    assert ei.value.args == (key,)
    with pytest.raises(KeyError) as ei:
        del db[key]
    assert ei.value.args == (key,)
    assert len(db) == 1


def test_delete_twice(db):
    db[b"k"] = b"v"
    del db[b"k"]
    with pytest.raises(KeyError):
        del db[b"k"]


def test_get(db):
    db[b"k"] = b"v"
    assert db.get(b"k") == b"v"
    assert db.get("k") == b"v"
    assert db.get(b"k", b"d") == b"v"
    assert db.get(b"missing") is None
    assert db.get(b"missing", b"d") == b"d"
    sentinel = object()
    assert db.get(b"missing", sentinel) is sentinel
    assert b"missing" not in db


def test_setdefault_missing_stores_default(db):
    assert db.setdefault(b"k", b"d") == b"d"
    assert db[b"k"] == b"d"
    assert len(db) == 1


def test_setdefault_present_keeps_value(db):
    db[b"k"] = b"v"
    commit = db.commit_id()
    assert db.setdefault(b"k", b"other") == b"v"
    assert db[b"k"] == b"v"
    assert db.commit_id() == commit


def test_setdefault_default_is_empty_bytes(db):
    assert db.setdefault(b"k") == b""
    assert db[b"k"] == b""
    assert b"k" in db


def test_setdefault_str_default_is_encoded(db):
    assert db.setdefault("ключ", "значение") == "значение".encode()
    assert db["ключ".encode()] == "значение".encode()
    assert db.setdefault("ключ".encode(), "x") == "значение".encode()


def test_setdefault_type_errors(db):
    with pytest.raises(TypeError):
        db.setdefault(1, b"x")
    with pytest.raises(TypeError):
        db.setdefault(b"k", 1)
    assert len(db) == 0


def test_len_and_bool_on_empty(db):
    assert len(db) == 0
    assert not db
    assert bool(db) is False
    assert db.keys() == []
    assert db.items() == []
    assert db.values() == []
    assert list(db) == []
    assert db.firstkey() is None


def test_len_and_bool_track_writes(db):
    for i in range(100):
        db[b"%d" % i] = b""
        assert len(db) == i + 1
        assert db
    for i in range(100):
        db[b"%d" % i] = b"again"
    assert len(db) == 100
    for i in range(100):
        del db[b"%d" % i]
        assert len(db) == 99 - i
    assert not db


def test_len_is_not_cached_across_handles(db, db_path):
    with dbm_shm.open(db_path, "r") as other:
        assert len(other) == 0
        db[b"a"] = b"1"
        assert len(other) == 1
        assert other
        del db[b"a"]
        assert len(other) == 0
        assert not other


def test_clear_then_reuse(db):
    model = {b"%d" % i: b"v" * (i % 50) for i in range(3000)}
    for k, v in model.items():
        db[k] = v
    db.clear()
    assert_matches(db, {})
    assert db.check() == []
    db.clear()  # clearing an empty store is fine
    assert len(db) == 0
    for k, v in model.items():
        db[k] = v + b"!"
    assert_matches(db, {k: v + b"!" for k, v in model.items()})
    assert db.check() == []


def test_clear_is_seen_by_other_handle_and_persists(db, db_path):
    db[b"a"] = b"1"
    db[b"b"] = b"2"
    with dbm_shm.open(db_path, "r") as other:
        assert len(other) == 2
        db.clear()
        assert len(other) == 0
        assert other.get(b"a") is None
    db.close()
    with dbm_shm.open(db_path, "r") as d:
        assert len(d) == 0


def test_clear_does_not_grow_file(db, db_path):
    import os
    for round_ in range(10):
        for i in range(5000):
            db[b"%d" % i] = b"x" * 64
        db.clear()
        if round_ == 1:
            size = os.path.getsize(db_path)
    assert os.path.getsize(db_path) <= size


def test_sync(db, db_path):
    db[b"k"] = b"v"
    assert db.sync() is None
    with dbm_shm.open(db_path, "r") as other:
        assert other[b"k"] == b"v"


def test_reopen_after_close_keeps_data(db_path):
    model = {b"k%d" % i: bytes([i % 256]) * (i % 300) for i in range(2000)}
    with dbm_shm.open(db_path, "c") as d:
        for k, v in model.items():
            d[k] = v
    for flag in ("r", "w", "c"):
        with dbm_shm.open(db_path, flag) as d:
            assert_matches(d, model)
    with dbm_shm.open(db_path, "w") as d:
        for k in list(model)[::3]:
            del d[k]
            del model[k]
        d[b"extra"] = b"e"
        model[b"extra"] = b"e"
    with dbm_shm.open(db_path, "r") as d:
        assert_matches(d, model)
        assert d.check() == []


def test_context_manager(db_path):
    with dbm_shm.open(db_path, "c") as d:
        assert isinstance(d, dbm_shm.Database)
        d[b"k"] = b"v"
    with pytest.raises(dbm_shm.error):
        d[b"k"]
    # exceptions propagate and the handle is closed
    with pytest.raises(ZeroDivisionError):
        with dbm_shm.open(db_path, "w") as d2:
            1 / 0  # noqa: B018
    with pytest.raises(dbm_shm.error):
        len(d2)
    with dbm_shm.open(db_path, "r") as d:
        assert d[b"k"] == b"v"


def test_items_values_iteritems_agree(db):
    model = {b"k%d" % i: b"v%d" % (i * 7) for i in range(1000)}
    for k, v in model.items():
        db[k] = v
    keys = db.keys()
    items = db.items()
    assert [k for k, _ in items] == keys
    assert [v for _, v in items] == db.values()
    assert list(db.iteritems()) == items
    assert list(iter(db)) == keys
    assert dict(items) == model


def test_iter_is_lazy_iterator(db):
    db[b"a"] = b"1"
    it = iter(db)
    assert iter(it) is it
    assert next(it) == b"a"
    with pytest.raises(StopIteration):
        next(it)


def test_stats(db):
    st = db.stats()
    expected = {"count", "file_size", "top", "live_bytes", "free_bytes", "depth", "buckets",
                "overflow", "slots", "commit", "format", "page_size", "lock_pid", "recoveries",
                "read_retries", "read_fallbacks", "reopens", "map_size", "lock_held_ns", "waiters",
                "writes", "batches", "batch_ops", "lock_waits", "lock_wait_ns", "waits", "wakeups",
                "multi_retries", "max_bytes", "evictions", "expired",
                "fast_gets", "fast_sets", "fast_fallbacks"}   # the C fast path's (dbm_shm/_fastglue.py)
    assert set(st) == expected
    assert all(type(v) is int and v >= 0 for v in st.values())
    assert st["count"] == 0
    assert st["lock_pid"] == 0
    assert st["format"] >= 1
    assert st["top"] <= st["file_size"] <= st["map_size"]
    for i in range(1000):
        db[b"%d" % i] = b"x" * 100
    st2 = db.stats()
    assert st2["count"] == 1000 == len(db)
    assert st2["live_bytes"] >= 1000 * 100
    assert st2["commit"] > st["commit"]
    assert st2["file_size"] >= st2["top"] >= st2["live_bytes"]
    assert st2["buckets"] >= 1
    assert st2["writes"] - st["writes"] == 1000
    assert st2["lock_held_ns"] == 0 and st2["lock_pid"] == 0   # nobody holds it now


def test_commit_id_moves_on_writes_only(db):
    c0 = db.commit_id()
    assert isinstance(c0, int)
    db[b"k"] = b"v"
    c1 = db.commit_id()
    assert c1 > c0
    assert db[b"k"] == b"v"
    assert b"k" in db
    db.keys()
    len(db)
    assert db.commit_id() == c1
    db[b"k"] = b"w"
    c2 = db.commit_id()
    assert c2 > c1
    del db[b"k"]
    assert db.commit_id() > c2
    assert db.stats()["commit"] == db.commit_id()


def test_check_on_fresh_and_used_store(db):
    assert db.check() == []
    for i in range(5000):
        db[b"%d" % i] = b"v" * (i % 200)
    for i in range(0, 5000, 3):
        del db[b"%d" % i]
    assert db.check() == []


def test_error_is_dbm_error_and_oserror():
    assert issubclass(dbm_shm.error, OSError)
    base = dbm.error[0] if isinstance(dbm.error, tuple) else dbm.error
    assert issubclass(dbm_shm.error, base)


def test_dbm_error_catches_ours(tmp_path):
    try:
        dbm_shm.open(tmp_path / "missing", "r")
    except dbm.error:
        pass
    else:
        pytest.fail("no error")
