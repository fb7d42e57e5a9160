"""firstkey()/nextkey(), keys(), iter(), items()/values()/iteritems():
every key exactly once, all in one order, agreeing with a model."""

import collections
import random

import pytest

import dbm_shm

from ._util import assert_matches, walk


@pytest.mark.parametrize("n", [0, 1, 2, 219, 221, 1000, 20000])
def test_walk_visits_every_key_once(db, n):
    model = {b"key-%d" % i: b"%d" % i for i in range(n)}
    for k, v in model.items():
        db[k] = v
    w = walk(db)
    assert len(w) == n
    assert collections.Counter(w) == collections.Counter(list(model))
    assert_matches(db, model)


def test_all_interfaces_share_one_order(db):
    rng = random.Random(3)
    model = {rng.randbytes(rng.randrange(0, 40)): rng.randbytes(rng.randrange(0, 100)) for _ in range(3000)}
    for k, v in model.items():
        db[k] = v
    keys = db.keys()
    assert walk(db) == keys
    assert list(db) == keys
    assert [k for k, _ in db.items()] == keys
    assert [k for k, _ in db.iteritems()] == keys
    assert db.values() == [model[k] for k in keys]


def test_firstkey_nextkey_edges(db):
    assert db.firstkey() is None
    assert db.nextkey(b"nothing") is None
    db[b"only"] = b"1"
    assert db.firstkey() == b"only"
    assert db.nextkey(b"only") is None
    assert db.nextkey("only") is None
    assert db.nextkey(b"absent") is None
    db[b"second"] = b"2"
    first = db.firstkey()
    second = db.nextkey(first)
    assert {first, second} == {b"only", b"second"}
    assert db.nextkey(second) is None


def test_nextkey_accepts_str_and_bytes_like(db):
    db["ключ"] = b"1"
    db[b"x"] = b"2"
    k = "ключ".encode()
    assert db.nextkey("ключ") == db.nextkey(k) == db.nextkey(bytearray(k)) == db.nextkey(memoryview(k))


def test_walk_after_deletes_and_overwrites(db):
    model = {}
    rng = random.Random(11)
    for _ in range(5000):
        k = b"%d" % rng.randrange(2000)
        if rng.random() < 0.3 and k in model:
            del db[k]
            del model[k]
        else:
            db[k] = model[k] = b"v" * rng.randrange(50)
    w = walk(db)
    assert sorted(w) == sorted(model)
    assert len(w) == len(set(w))
    assert_matches(db, model)


def test_overwrite_during_walk_keeps_walk_complete(db):
    model = {b"%d" % i: b"old" for i in range(3000)}
    for k, v in model.items():
        db[k] = v
    seen = []
    k = db.firstkey()
    while k is not None:
        seen.append(k)
        db[k] = b"new value, longer than the old one"
        k = db.nextkey(k)
    assert collections.Counter(seen) == collections.Counter(list(model))
    assert set(db.values()) == {b"new value, longer than the old one"}


def test_walk_from_other_handle(db, db_path):
    for i in range(2000):
        db[b"%d" % i] = b"v"
    with dbm_shm.open(db_path, "r") as r:
        assert walk(r) == walk(db) == db.keys()
        db[b"late"] = b"1"
        assert b"late" in walk(r)


def test_iteritems_sees_stable_keys_once_while_writing(db):
    """iteritems(): a key present for the whole iteration is seen exactly
    once, even while the same process inserts (bucket splits) and deletes."""
    for i in range(10000):
        db[b"s%d" % i] = b"stable"
    for i in range(2000):
        db[b"victim%d" % i] = b"v"
    stable = {b"s%d" % i for i in range(10000)}
    seen = collections.Counter()
    for j, (k, v) in enumerate(db.iteritems()):
        seen[k] += 1
        if k in stable:
            assert v == b"stable"
        for m in range(3):
            db[b"new%d.%d" % (j, m)] = b"x" * 40
        if j < 2000:
            del db[b"victim%d" % j]
    assert all(seen[k] == 1 for k in stable), [k for k in stable if seen[k] != 1][:5]
    assert max(seen.values()) == 1
    assert db.check() == []


@pytest.mark.parametrize("n, stop, step", [(6000, 1000, 3), (20000, 7, 2), (3000, 2900, 50)])
def test_iteritems_continues_across_reorganize(db, db_path, n, stop, step):
    """The file is rewritten with the same hash seed, so an iteritems()
    under way goes on in the new file: every key exactly once.
    (A firstkey/nextkey walk has no such promise: the order inside a
    bucket may change, as in gdbm.)"""
    model = {b"%d" % i: b"v%d" % i for i in range(n)}
    for k, v in model.items():
        db[k] = v
    for k in list(model)[::step]:
        del db[k]
        del model[k]
    it = db.iteritems()
    seen = collections.Counter()
    got = {}
    for _ in range(stop):
        k, v = next(it)
        seen[k] += 1
        got[k] = v
    with dbm_shm.open(db_path, "w") as other:
        other.reorganize()
    for k, v in it:
        seen[k] += 1
        got[k] = v
    assert seen == collections.Counter(list(model))
    assert got == model
    assert db.stats()["reopens"] >= 1


def test_keys_is_a_fresh_list(db):
    db[b"a"] = b"1"
    keys = db.keys()
    keys.append(b"zzz")
    assert db.keys() == [b"a"]
    db[b"b"] = b"2"
    assert sorted(db.keys()) == [b"a", b"b"]
