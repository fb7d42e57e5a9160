"""Atomic batches in one process: ``with db.batch():`` and ``db.update()``.

What another handle (a reader that is not the batch's thread) sees before,
during and after a batch; what the batch's own thread sees inside it
(read-your-writes); failure, nesting, threads, read-only handles, and the
C entry point ``dshm_write_batch`` called directly (duplicate keys, empty
batches). Multi-process behaviour is in tests/multiprocess and tests/crash.
"""

import threading

import pytest

import dbm_shm
from dbm_shm._dshm import ffi, lib

from ._util import assert_matches, walk

MiB = 1 << 20


@pytest.fixture
def other(db, db_path):
    """A second handle on the same file: it sees only committed state."""
    o = dbm_shm.open(db_path, "r")
    try:
        yield o
    finally:
        o.close()


def _state(h):
    return dict(h.items())


# ---------------------------------------------------------------------------
# Visibility


def test_writes_invisible_until_the_block_ends(db, other):
    db[b"old"] = b"o"
    db[b"gone"] = b"g"
    c0 = db.commit_id()
    with db.batch() as b:
        assert b is db
        db[b"a"] = b"1"
        db["b"] = "2"
        db[b"old"] = b"new"
        del db[b"gone"]
        # Another handle: nothing of the batch yet, and no commit.
        assert _state(other) == {b"old": b"o", b"gone": b"g"}
        assert len(other) == 2
        assert b"a" not in other
        assert other[b"old"] == b"o"
        assert other.get_many([b"a", b"old", b"gone"]) == [None, b"o", b"g"]
        assert other.commit_id() == c0
        assert db.commit_id() == c0
    assert other.commit_id() == c0 + 1
    assert_matches(other, {b"old": b"new", b"a": b"1", b"b": b"2"})
    assert_matches(db, {b"old": b"new", b"a": b"1", b"b": b"2"})
    assert db.check() == []


def test_same_handle_other_thread_does_not_see_the_batch(db):
    """The batch belongs to the thread: another thread on the same handle
    reads the committed store."""
    db[b"x"] = b"0"
    seen = {}

    def look():
        seen["x"] = db[b"x"]
        seen["y"] = db.get(b"y")
        seen["len"] = len(db)
        seen["keys"] = sorted(db.keys())
        seen["many"] = db.get_many([b"x", b"y"])

    with db.batch():
        db[b"x"] = b"1"
        db[b"y"] = b"2"
        t = threading.Thread(target=look)
        t.start()
        t.join(30)
    assert seen == {"x": b"0", "y": None, "len": 1, "keys": [b"x"], "many": [b"0", None]}
    assert db.get_many([b"x", b"y"]) == [b"1", b"2"]


# ---------------------------------------------------------------------------
# Read-your-writes inside the batch


def test_read_your_writes(db):
    db[b"keep"] = b"k"
    db[b"over"] = b"o1"
    db[b"del"] = b"d"
    with db.batch():
        db[b"new"] = b"n"
        db[b"over"] = b"o2"
        del db[b"del"]
        # getitem / get / in
        assert db[b"new"] == b"n"
        assert db["new"] == b"n"
        assert db[b"over"] == b"o2"
        assert db[b"keep"] == b"k"
        with pytest.raises(KeyError):
            db[b"del"]
        assert db.get(b"del") is None
        assert db.get(b"del", b"dflt") == b"dflt"
        assert db.get(b"new") == b"n"
        assert b"new" in db and "new" in db
        assert b"del" not in db
        assert b"keep" in db
        # len / keys / items / values / iter
        assert len(db) == 3
        assert bool(db)
        assert sorted(db.keys()) == [b"keep", b"new", b"over"]
        assert sorted(iter(db)) == [b"keep", b"new", b"over"]
        assert dict(db.items()) == {b"keep": b"k", b"new": b"n", b"over": b"o2"}
        assert dict(db.iteritems()) == {b"keep": b"k", b"new": b"n", b"over": b"o2"}
        assert sorted(db.values()) == [b"k", b"n", b"o2"]
        # get_many, with and without a default
        assert db.get_many([b"del", b"new", b"over", b"keep", b"nope"]) == [None, b"n", b"o2", b"k", None]
        assert db.get_many([b"del", b"nope", b"new"], default=b"-") == [b"-", b"-", b"n"]
        # setdefault: present (pending or stored) -> its value; absent -> stores
        assert db.setdefault(b"new", b"zzz") == b"n"
        assert db.setdefault(b"keep", b"zzz") == b"k"
        assert db.setdefault(b"del", b"back") == b"back"
        assert db.setdefault(b"sd", "str-default") == b"str-default"
        assert db[b"del"] == b"back"
        assert len(db) == 5
    assert_matches(db, {b"keep": b"k", b"new": b"n", b"over": b"o2", b"del": b"back",
                        b"sd": b"str-default"})


def test_len_counts_pending_inserts_and_deletes(db):
    for i in range(10):
        db[b"k%d" % i] = b"v"
    with db.batch():
        assert len(db) == 10
        db[b"k0"] = b"w"            # overwrite: no change
        assert len(db) == 10
        db[b"x"] = b"1"             # new
        assert len(db) == 11
        del db[b"x"]                # new, then deleted: back to 10
        assert len(db) == 10
        del db[b"k1"]
        del db[b"k2"]
        assert len(db) == 8
        db[b"k1"] = b"again"        # deleted, then set again
        assert len(db) == 9
    assert len(db) == 9
    assert db[b"k1"] == b"again"
    assert b"k2" not in db and b"x" not in db
    assert db.check() == []


def test_firstkey_nextkey_see_the_store_without_the_batch(db):
    """Documented: firstkey()/nextkey() inside a batch walk the committed
    store."""
    db[b"a"] = b"1"
    with db.batch():
        db[b"b"] = b"2"
        assert walk(db) == [b"a"]
    assert sorted(walk(db)) == [b"a", b"b"]


# ---------------------------------------------------------------------------
# Failure, nesting, errors


def test_exception_in_block_discards_everything(db, other):
    db[b"a"] = b"1"
    c0 = db.commit_id()
    with pytest.raises(RuntimeError, match="boom"):
        with db.batch():
            db[b"a"] = b"2"
            db[b"b"] = b"3"
            del db[b"a"]
            raise RuntimeError("boom")
    assert db.commit_id() == c0
    assert_matches(other, {b"a": b"1"})
    assert_matches(db, {b"a": b"1"})
    # The batch is over: the next write is immediate.
    db[b"c"] = b"4"
    assert other[b"c"] == b"4"
    assert db.commit_id() == c0 + 1


def test_keyboard_interrupt_in_block_discards(db):
    with pytest.raises(KeyboardInterrupt):
        with db.batch():
            db[b"a"] = b"1"
            raise KeyboardInterrupt
    assert b"a" not in db
    assert db.commit_id() == 0


def test_nested_inner_failure_drops_only_inner_writes(db, other):
    db[b"base"] = b"0"
    db[b"victim"] = b"v"
    c0 = db.commit_id()
    with db.batch():
        db[b"outer1"] = b"1"
        with pytest.raises(ValueError):
            with db.batch():
                # the inner batch sees the outer's writes
                assert db[b"outer1"] == b"1"
                db[b"inner"] = b"x"
                db[b"outer1"] = b"changed-by-inner"
                del db[b"victim"]
                assert b"victim" not in db
                raise ValueError
        # inner writes gone, outer ones kept
        assert db[b"outer1"] == b"1"
        assert b"inner" not in db
        assert db[b"victim"] == b"v"
        with db.batch():            # a successful inner batch joins the outer
            db[b"inner2"] = b"y"
            del db[b"base"]
        assert b"inner2" not in other   # still nothing committed
        assert b"base" in other
        db[b"outer2"] = b"2"
    assert db.commit_id() == c0 + 1     # one batch, one commit
    assert_matches(other, {b"outer1": b"1", b"inner2": b"y", b"outer2": b"2", b"victim": b"v"})
    assert db.check() == []


def test_nested_outer_failure_drops_inner_writes_too(db):
    with pytest.raises(ZeroDivisionError):
        with db.batch():
            db[b"o"] = b"1"
            with db.batch():
                db[b"i"] = b"2"
            1 / 0
    assert len(db) == 0
    assert db.commit_id() == 0


def test_deeply_nested(db, other):
    """20 levels; each level also runs a failing sibling batch; level 15
    fails, dropping the levels under it."""
    def level(d):
        with db.batch():
            db[b"d%d" % d] = b"x"
            try:
                with db.batch():
                    db[b"sibling%d" % d] = b"s"
                    raise LookupError
            except LookupError:
                pass
            if d < 20:
                try:
                    level(d + 1)
                except LookupError:
                    pass
            if d < 20:
                # the level below committed into this one, unless it failed
                assert (b"d%d" % (d + 1) in db) == (d != 14)
            assert b"sibling%d" % d not in db
            if d == 15:
                raise LookupError

    level(0)
    assert db.commit_id() == 1
    assert sorted(other.keys()) == sorted(b"d%d" % d for d in range(15))


def test_delete_missing_key_in_batch_raises_keyerror(db, other):
    db[b"there"] = b"1"
    with db.batch():
        with pytest.raises(KeyError):
            del db[b"missing"]
        db[b"new"] = b"n"
        del db[b"new"]              # set in this batch: deletable
        with pytest.raises(KeyError):
            del db[b"new"]          # already deleted in this batch
        del db[b"there"]
        with pytest.raises(KeyError):
            del db[b"there"]
        with pytest.raises(KeyError):
            del db["missing-str"]
        db[b"kept"] = b"k"
    # the KeyErrors were caught inside: the rest committed
    assert_matches(other, {b"kept": b"k"})


def test_clear_inside_batch_raises(db):
    db[b"a"] = b"1"
    with db.batch():
        db[b"b"] = b"2"
        with pytest.raises(dbm_shm.error):
            db.clear()
        db[b"c"] = b"3"
    assert_matches(db, {b"a": b"1", b"b": b"2", b"c": b"3"})
    db.clear()
    assert len(db) == 0


def test_batch_on_read_only_handle_raises(db, db_path):
    db[b"a"] = b"1"
    with dbm_shm.open(db_path, "r") as ro:
        with pytest.raises(dbm_shm.error):
            with ro.batch():
                ro[b"b"] = b"2"
                del ro[b"a"]
        with pytest.raises(dbm_shm.error):
            ro.update({b"c": b"3"})
        with pytest.raises(dbm_shm.error):
            ro.update(d=b"4")
        # No batch stays open on the handle: a plain write fails at once.
        with pytest.raises(dbm_shm.error):
            ro[b"e"] = b"5"
        assert ro.commit_id() == 1
    assert_matches(db, {b"a": b"1"})


def test_batch_on_closed_handle_raises(db_path):
    d = dbm_shm.open(db_path, "c")
    d.close()
    with pytest.raises(dbm_shm.error):
        with d.batch():
            pass
    with pytest.raises(dbm_shm.error):
        d.update({b"a": b"1"})
    with pytest.raises(dbm_shm.error):
        d.update()


def test_handle_closed_inside_batch(db_path):
    d = dbm_shm.open(db_path, "c")
    with pytest.raises(dbm_shm.error):
        with d.batch():
            d[b"a"] = b"1"
            d.close()
    with dbm_shm.open(db_path, "r") as r:
        assert len(r) == 0


def test_bad_key_or_value_type_in_batch(db):
    with db.batch():
        with pytest.raises(TypeError):
            db[1] = b"x"
        with pytest.raises(TypeError):
            db[b"k"] = 1.5
        db[b"ok"] = b"1"
    assert_matches(db, {b"ok": b"1"})
    with pytest.raises(TypeError):
        db.update({b"a": b"1", 2: b"2"})
    with pytest.raises(TypeError):
        db.update([(b"a", None)])
    assert_matches(db, {b"ok": b"1"})   # update() is all or nothing


# ---------------------------------------------------------------------------
# update()


def test_update_forms(db, other):
    c = db.commit_id()
    db.update({b"a": b"1", "b": "2"})
    assert db.commit_id() == c + 1
    db.update([(b"c", b"3"), ("d", bytearray(b"4"))])
    assert db.commit_id() == c + 2
    db.update(e=b"5", f="6")
    assert db.commit_id() == c + 3
    db.update({b"g": b"7"}, h=b"8")
    assert db.commit_id() == c + 4
    db.update(((b"i%d" % n, memoryview(b"v%d" % n)) for n in range(3)))
    assert db.commit_id() == c + 5
    # The positional-only parameters do not shadow keyword keys (as dict.update).
    db.update(other=b"o", self=b"s")
    assert db.commit_id() == c + 6
    assert_matches(other, {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5",
                           b"f": b"6", b"g": b"7", b"h": b"8", b"i0": b"v0", b"i1": b"v1",
                           b"i2": b"v2", b"other": b"o", b"self": b"s"})


def test_update_from_a_mapping_that_is_not_a_dict(db, tmp_path):
    with dbm_shm.open(tmp_path / "src", "c") as src:
        src.update({b"x%d" % i: b"y%d" % i for i in range(100)})
        db.update(src)
        snap = src.snapshot()
    assert dict(db.items()) == dict(snap)
    db2 = {}
    db2.update(snap)                  # Snapshot is a Mapping
    db.update(snap)
    assert dict(db.items()) == db2


def test_update_keyword_overrides_positional(db):
    db.update({b"k": b"positional"}, k=b"keyword")
    assert db[b"k"] == b"keyword"


def test_update_empty_makes_no_commit(db):
    c = db.commit_id()
    db.update()
    db.update({})
    db.update([])
    assert db.commit_id() == c


def test_update_inside_batch_joins_it(db, other):
    with db.batch():
        db.update({b"a": b"1"}, b=b"2")
        assert db[b"a"] == b"1"
        assert b"a" not in other
        db[b"a"] = b"3"
    assert other.commit_id() == 1
    assert_matches(other, {b"a": b"3", b"b": b"2"})


def test_update_duplicates_last_wins(db):
    db.update([(b"k", b"1"), (b"j", b"x"), (b"k", b"2"), ("k", b"3")])
    assert db[b"k"] == b"3"
    with db.batch():
        db[b"k"] = b"4"
        db[b"k"] = b"5"
        del db[b"k"]
        db[b"k"] = b"6"
    assert db[b"k"] == b"6"
    assert len(db) == 2


# ---------------------------------------------------------------------------
# The C entry point, called directly


def _c_batch(db, ops):
    """dshm_write_batch with ops = [(key, value or None for delete)]; returns
    (rc, commit)."""
    keys = b"".join(k for k, _ in ops)
    klens = ffi.new("uint64_t[]", [len(k) for k, _ in ops] or [0])
    vlens = ffi.new("int64_t[]", [-1 if v is None else len(v) for _, v in ops] or [0])
    vals = b"".join(v for _, v in ops if v is not None)
    out = ffi.new("uint64_t *")
    rc = lib.dshm_write_batch(db._h, len(ops), keys, klens, vals, vlens, out)
    return rc, int(out[0])


def test_c_api_duplicate_keys_last_wins(db, other):
    db[b"c"] = b"present"
    db[b"e"] = b"present"
    ops0 = db.stats()["batch_ops"]
    rc, commit = _c_batch(db, [
        (b"a", b"1"), (b"b", b"2"), (b"a", b"3"),       # a: set, set -> 3
        (b"c", None), (b"b", b"5"),                     # c: deleted; b -> 5
        (b"d", b"x"), (b"d", None),                     # d: set then deleted -> absent
        (b"e", None), (b"e", b"back"),                  # e: deleted then set -> back
        (b"f", None), (b"f", None),                     # f: absent, deleted twice -> no-op
        (b"a", b"last"),                                # a: -> last
    ])
    assert rc == 0
    assert commit == db.commit_id() == other.commit_id() == 3
    assert_matches(other, {b"a": b"last", b"b": b"5", b"e": b"back"})
    assert db.check() == []
    # One operation per distinct key.
    assert db.stats()["batch_ops"] - ops0 == 6


def test_c_api_many_duplicates_of_one_key(db):
    ops = [(b"same", b"v%d" % i) for i in range(1000)]
    rc, _ = _c_batch(db, ops)
    assert rc == 0
    assert_matches(db, {b"same": b"v999"})
    assert db.check() == []


def test_c_api_empty_batch_makes_no_commit(db):
    db[b"a"] = b"1"
    rc, commit = _c_batch(db, [])
    assert rc == 0
    assert commit == 1 == db.commit_id()


def test_c_api_empty_key_and_value(db):
    rc, _ = _c_batch(db, [(b"", b""), (b"k", b""), (b"", b"e")])
    assert rc == 0
    assert_matches(db, {b"": b"e", b"k": b""})


def test_c_api_read_only_handle(db, db_path):
    with dbm_shm.open(db_path, "r") as ro:
        rc, _ = _c_batch(ro, [(b"a", b"1")])
        assert rc == lib.DSHM_READONLY
    assert len(db) == 0


def test_c_api_null_lengths_invalid(db):
    out = ffi.new("uint64_t *")
    rc = lib.dshm_write_batch(db._h, 2, b"ab", ffi.NULL, b"", ffi.NULL, out)
    assert rc == lib.DSHM_INVALID
    assert db.commit_id() == 0


# ---------------------------------------------------------------------------
# Commits


def test_empty_batch_makes_no_commit(db):
    db[b"a"] = b"1"
    c = db.commit_id()
    with db.batch():
        pass
    with db.batch():
        assert db[b"a"] == b"1"        # reads only
        assert db.get_many([b"a"]) == [b"1"]
    with db.batch():
        with db.batch():
            pass
    assert db.commit_id() == c
    assert db.stats()["batches"] == 0


def test_commit_id_grows_by_one_per_batch(db, other):
    c = db.commit_id()
    for n in range(1, 30):
        with db.batch():
            for i in range(n):
                db[b"k%d" % i] = b"v%d" % n
            if n % 3 == 0:
                del db[b"k0"]
        assert db.commit_id() == c + n
        assert other.commit_id() == c + n
    st = db.stats()
    assert st["batches"] == 29
    assert st["writes"] >= 29


# ---------------------------------------------------------------------------
# Threads


def test_batches_are_per_thread(db, other):
    in_a = threading.Event()
    b_done = threading.Event()
    errors = []
    seen_in_a = {}

    def thread_a():
        try:
            with db.batch():
                db[b"from_a"] = b"A"
                in_a.set()
                assert b_done.wait(30)
                # B's plain write went straight to the store (not into A's
                # batch); A's own write is still held back.
                seen_in_a["b_in_store"] = other.get(b"from_b")
                seen_in_a["a_in_store"] = other.get(b"from_a")
                seen_in_a["b_seen_by_a"] = db.get(b"from_b")
                seen_in_a["b_batch_in_store"] = other.get(b"b_batch")
        except BaseException as e:
            errors.append(e)

    def thread_b():
        try:
            assert in_a.wait(30)
            assert db.get(b"from_a") is None    # A's batch is not B's
            db[b"from_b"] = b"B"
            with db.batch():                    # B's own batch, independent
                db[b"b_batch"] = b"BB"
            b_done.set()
        except BaseException as e:
            errors.append(e)
            b_done.set()

    ta = threading.Thread(target=thread_a)
    tb = threading.Thread(target=thread_b)
    ta.start()
    tb.start()
    ta.join(60)
    tb.join(60)
    assert not errors, errors
    assert seen_in_a == {"b_in_store": b"B", "a_in_store": None, "b_seen_by_a": b"B",
                         "b_batch_in_store": b"BB"}
    assert_matches(other, {b"from_a": b"A", b"from_b": b"B", b"b_batch": b"BB"})
    assert db.commit_id() == 3


def test_many_threads_each_with_batches(db, other):
    """8 threads, each committing 50 batches of its own keys on one handle."""
    errors = []

    def work(t):
        try:
            for n in range(50):
                with db.batch():
                    for i in range(10):
                        db[b"t%d-%d" % (t, i)] = b"%d" % n
                vals = db.get_many([b"t%d-%d" % (t, i) for i in range(10)])
                assert vals == [b"%d" % n] * 10, vals
        except BaseException as e:
            errors.append(e)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(120)
    assert not errors, errors
    assert db.commit_id() == 400
    assert len(other) == 80
    assert db.stats()["batches"] == 400
    assert db.check() == []


# ---------------------------------------------------------------------------
# Size


def test_large_batch_then_reopen(db, db_path):
    n = 50_000
    model = {b"key%06d" % i: b"v%d" % i * (i % 7) for i in range(n)}
    db.update(model)
    assert db.commit_id() == 1
    assert len(db) == n
    st = db.stats()
    assert st["batches"] == 1 and st["batch_ops"] == n
    # Delete a third, overwrite a third, in one batch.
    with db.batch():
        for i in range(0, n, 3):
            del db[b"key%06d" % i]
            del model[b"key%06d" % i]
        for i in range(1, n, 3):
            db[b"key%06d" % i] = model[b"key%06d" % i] = b"new%d" % i
    assert db.commit_id() == 2
    db.close()
    with dbm_shm.open(db_path, "r") as r:
        assert r.check() == []
        assert len(r) == len(model)
        assert dict(r.items()) == model
        assert r.snapshot() == model
    with dbm_shm.open(db_path, "w") as w:
        assert w.check() == []


def test_multi_megabyte_values_in_a_batch(db, other):
    big = {b"big%d" % i: bytes([65 + i]) * ((3 + i) * MiB + 12345) for i in range(3)}
    with db.batch():
        db.update(big)
        db[b"small"] = b"s"
        assert db[b"big1"] == big[b"big1"]
    assert other[b"big0"] == big[b"big0"]
    assert other.get_many(list(big)) == list(big.values())
    # Replace them, in one batch, by other big values and a delete.
    with db.batch():
        db[b"big0"] = b"z" * (6 * MiB)
        del db[b"big1"]
        db[b"big2"] = b"tiny"
    assert other[b"big0"] == b"z" * (6 * MiB)
    assert b"big1" not in other
    assert other[b"big2"] == b"tiny"
    assert len(other) == 3
    assert db.check() == []


def test_batch_then_reorganize(db, db_path, other):
    model = {}
    with db.batch():
        for i in range(5000):
            k = b"r%05d" % i
            db[k] = model[k] = b"x" * (i % 300)
    with db.batch():
        for i in range(0, 5000, 2):
            del db[b"r%05d" % i]
            del model[b"r%05d" % i]
    c = db.commit_id()
    db.reorganize()
    assert db.check() == []
    assert dict(db.items()) == model
    assert dict(other.items()) == model        # the other handle follows the new file
    # Batches go on on the new file, and the commit counter does not go back.
    with db.batch():
        db[b"after"] = b"a"
        del db[b"r00001"]
    del model[b"r00001"]
    model[b"after"] = b"a"
    assert db.commit_id() > c
    assert dict(other.items()) == model
    assert other.snapshot() == model
    db.close()
    with dbm_shm.open(db_path, "r") as r:
        assert r.check() == []
        assert dict(r.items()) == model


def test_batch_with_sync_flag(db_path):
    with dbm_shm.open(db_path, "cs") as d:
        with d.batch():
            d[b"a"] = b"1"
            d[b"b"] = b"2"
        assert d.commit_id() == 1
    with dbm_shm.open(db_path, "r") as r:
        assert dict(r.items()) == {b"a": b"1", b"b": b"2"}
