"""Large values: a 64 MiB value in the normal run, 1 GiB behind `slow`."""

import hashlib
import os

import pytest

import dbm_shm

MiB = 1 << 20


def _pattern(n, seed=b"dbm_shm"):
    """n bytes that differ everywhere (so a misplaced copy is caught)."""
    block = b"".join(hashlib.sha256(seed + b"%d" % i).digest() for i in range(MiB // 32))
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def test_64mib_value_round_trip(db_path):
    v = _pattern(64 * MiB)
    with dbm_shm.open(db_path, "n") as db:
        db[b"big"] = v
        db[b"small"] = b"s"
        assert len(db) == 2
        got = db[b"big"]
        assert len(got) == len(v)
        assert got == v
        assert db.get(b"big") == v
        assert b"big" in db
        assert dict(db.items()) == {b"big": v, b"small": b"s"}
        assert db.check() == []
        with dbm_shm.open(db_path, "r") as other:
            assert other[b"big"] == v
        assert os.path.getsize(db_path) >= 64 * MiB
    with dbm_shm.open(db_path, "r") as db:
        assert db[b"big"] == v
        assert db[b"small"] == b"s"


def test_64mib_value_replaced_and_deleted(db_path):
    v = _pattern(64 * MiB)
    with dbm_shm.open(db_path, "n") as db:
        db[b"big"] = v
        db[b"big"] = b"now small"
        assert db[b"big"] == b"now small"
        db[b"big2"] = v[:MiB]
        assert db[b"big2"] == v[:MiB]
        db[b"big"] = v[::-1]
        assert db[b"big"] == v[::-1]
        del db[b"big"]
        assert b"big" not in db
        assert db.check() == []
        db.reorganize()
        assert os.path.getsize(db_path) < 8 * MiB
        assert db[b"big2"] == v[:MiB]
        assert db.keys() == [b"big2"]


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "str"])
def test_large_value_from_other_types(db, kind):
    raw = _pattern(16 * MiB)
    if kind == "bytearray":
        arg, want = bytearray(raw), raw
    elif kind == "memoryview":
        arg, want = memoryview(raw), raw
    else:
        s = "ä" * (8 * MiB)
        arg, want = s, s.encode()
    db[b"k"] = arg
    assert db[b"k"] == want


def test_many_medium_values(db):
    vals = {b"%d" % i: _pattern(MiB + i * 4099, seed=b"%d" % i) for i in range(24)}
    for k, v in vals.items():
        db[k] = v
    for k, v in vals.items():
        assert db[k] == v
    assert dict(db.items()) == vals
    assert db.check() == []


@pytest.mark.slow
def test_1gib_value_round_trip(db_path):
    n = 1 << 30
    v = _pattern(n)
    digest = hashlib.sha256(v).digest()
    with dbm_shm.open(db_path, "n") as db:
        db[b"huge"] = v
        del v
        got = db[b"huge"]
        assert len(got) == n
        assert hashlib.sha256(got).digest() == digest
        del got
        db[b"after"] = b"a"
        assert db.check() == []
    with dbm_shm.open(db_path, "r") as db:
        got = db[b"huge"]
        assert len(got) == n
        assert hashlib.sha256(got).digest() == digest
        assert db[b"after"] == b"a"
    with dbm_shm.open(db_path, "w") as db:
        del db[b"huge"]
        db.reorganize()
    assert os.path.getsize(db_path) < 8 * MiB


@pytest.mark.slow
def test_value_just_over_1gib(db_path):
    n = (1 << 30) + 4097
    with dbm_shm.open(db_path, "n") as db:
        db[b"k"] = b"\xa5" * n
        got = db[b"k"]
        assert len(got) == n
        assert got.count(b"\xa5") == n
