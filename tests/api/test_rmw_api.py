"""incr/decr, compare_and_set, setdefault, and the shelf transaction (issue 21)."""

import pickle

import pytest

import dbm_shm


def test_incr_decr(db):
    assert db.incr(b"c") == 1
    assert db.incr("c", 41) == 42
    assert db[b"c"] == b"42"           # ASCII decimal, as Redis stores it
    assert db.decr(b"c", 50) == -8 and db[b"c"] == b"-8"
    assert db.incr(b"d", 5, default=100) == 105
    db[b"e"] = b"+7"
    assert db.incr(b"e") == 8
    assert db.incr(b"z", 0) == 0 and db[b"z"] == b"0"


@pytest.mark.parametrize("bad", [b"abc", b"", b"1.5", b" 1", b"1 ", b"-", b"99999999999999999999999"])
def test_incr_not_an_integer_changes_nothing(db, bad):
    db[b"c"] = bad
    before = db.commit_id()
    with pytest.raises(dbm_shm.error, match="is not an integer|outside a signed 64-bit"):
        db.incr(b"c")
    assert db[b"c"] == bad and db.commit_id() == before


def test_incr_overflow_and_types(db):
    db[b"c"] = str(2**63 - 1).encode()
    with pytest.raises(dbm_shm.error, match="outside a signed 64-bit"):
        db.incr(b"c")
    assert db[b"c"] == str(2**63 - 1).encode()
    with pytest.raises(dbm_shm.error, match="outside a signed 64-bit"):
        db.incr(b"x", 2**64)
    with pytest.raises(TypeError):
        db.incr(b"c", 1.5)
    with pytest.raises(TypeError):
        db.incr(b"c", True)


def test_incr_readonly_and_closed(db, db_path):
    with dbm_shm.open(db_path, "r") as ro:
        with pytest.raises(dbm_shm.error, match="read-only"):
            ro.incr(b"c")
    db.close()
    with pytest.raises(dbm_shm.error):
        db.incr(b"c")


def test_incr_in_a_batch_is_an_error(db):
    with db.batch():
        with pytest.raises(dbm_shm.error, match="use transaction"):
            db.incr(b"c")
        with pytest.raises(dbm_shm.error, match="use transaction"):
            db.compare_and_set(b"c", None, b"1")


def test_compare_and_set(db):
    assert db.compare_and_set(b"k", None, b"v1")          # absent -> create
    assert not db.compare_and_set(b"k", None, b"v2")      # present: no
    assert not db.compare_and_set(b"k", b"other", b"v2")
    assert db[b"k"] == b"v1"
    assert db.compare_and_set("k", "v1", "v2") and db[b"k"] == b"v2"
    assert not db.compare_and_set(b"k", b"v", None)        # prefix is not equal
    assert db.compare_and_set(b"k", b"v2", None) and b"k" not in db   # delete
    assert db.compare_and_set(b"k", None, None)            # absent stays absent
    big = b"b" * 100_000
    db[b"big"] = big
    assert db.compare_and_set(b"big", big, b"") and db[b"big"] == b""
    assert db.compare_and_set(b"big", b"", big) and db[b"big"] == big


def test_compare_and_set_nothing_changed_keeps_commit(db):
    db[b"k"] = b"v"
    before = db.commit_id()
    assert not db.compare_and_set(b"k", b"x", b"y")
    assert db.commit_id() == before


def test_setdefault_is_one_atomic_put(db):
    assert db.setdefault(b"k", b"first") == b"first"
    assert db.setdefault(b"k", b"second") == b"first"


def test_tx_incr_and_cas(db):
    db[b"c"] = b"5"
    with db.transaction() as tx:
        assert tx.incr(b"c") == 6 and tx.decr(b"c", 2) == 4
        assert tx.compare_and_set(b"c", b"4", b"40")
        assert not tx.compare_and_set(b"c", b"4", b"41")
        assert tx.compare_and_set(b"d", None, b"1")
        db[b"s"] = b"x"
        with pytest.raises(dbm_shm.error, match="not an integer"):
            tx.incr(b"s")
    assert db[b"c"] == b"40" and db[b"d"] == b"1"


def test_shelf_transaction(tmp_path):
    path = str(tmp_path / "shelf.dshm")
    with dbm_shm.open_shelf(path, "c", writeback=True) as shelf:
        shelf["k"] = [0]
        shelf.sync()
        cached = shelf["k"]               # in the writeback cache now
        with shelf.transaction() as tx:
            tx["k"] = tx["k"] + [1]
            tx["new"] = {"a": 1}
            assert "new" in tx and len(tx) == 2 and sorted(tx) == ["k", "new"]
        assert cached == [0]
    # The block's write survived close() (its key left the cache).
    with dbm_shm.open(path, "r") as db:
        assert pickle.loads(db[b"k"]) == [0, 1]
    with dbm_shm.open_shelf(path, "w") as shelf:
        with pytest.raises(KeyError):
            with shelf.transaction() as tx:
                del tx["new"]
                tx["missing"]
        assert shelf["new"] == {"a": 1}
