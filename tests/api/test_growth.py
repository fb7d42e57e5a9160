"""Growth without preset capacity: one million keys, every value checked,
a sound file afterwards, and handles opened while the file was small."""

import os

import pytest

import dbm_shm

N = 1_000_000


def _value(i):
    # varied lengths (5..40 bytes), derived from i so each can be checked
    return b"v%d-" % i + b"x" * (i % 32)


def test_one_million_keys(db_path):
    with dbm_shm.open(db_path, "n") as db, dbm_shm.open(db_path, "r") as early:
        initial_size = os.path.getsize(db_path)
        for i in range(N):
            db[b"key%07d" % i] = _value(i)
        assert len(db) == N
        assert db.stats()["count"] == N

        items = db.items()
        assert len(items) == N
        got = dict(items)
        assert len(got) == N
        bad = [i for i in range(N) if got.get(b"key%07d" % i) != _value(i)]
        assert bad == []
        del got, items

        # Point lookups on a sample through both handles; the reader was
        # opened when the file was small and must follow the growth.
        for i in range(0, N, 997):
            k = b"key%07d" % i
            assert db[k] == _value(i)
            assert early[k] == _value(i)
        assert len(early) == N
        assert b"key%07d" % N not in db

        st = db.stats()
        assert st["file_size"] > initial_size
        assert st["depth"] >= 10          # the directory doubled as it grew
        assert st["buckets"] >= N // st["slots"]
        assert db.check() == []

    # reopen: everything is still there
    with dbm_shm.open(db_path, "r") as db:
        assert len(db) == N
        n = 0
        for k, v in db.iteritems():
            assert v == _value(int(k[3:]))
            n += 1
        assert n == N


def test_growth_with_large_values_interleaved(db_path):
    with dbm_shm.open(db_path, "n") as db:
        model = {}
        for i in range(20000):
            k = b"%d" % i
            v = bytes([i % 256]) * (100_000 if i % 1000 == 0 else i % 200)
            db[k] = v
            model[k] = v
        assert len(db) == len(model)
        assert dict(db.items()) == model
        assert db.check() == []


@pytest.mark.slow
def test_five_million_keys(db_path):
    n = 5_000_000
    with dbm_shm.open(db_path, "n") as db:
        for i in range(n):
            db[b"%d" % i] = b"%x" % i
        assert len(db) == n
        for k, v in db.iteritems():
            assert v == b"%x" % int(k)
        assert db.check() == []
