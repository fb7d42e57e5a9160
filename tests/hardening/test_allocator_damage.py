"""Damage to the allocator's fields in the header loses no data.

The allocator's scalar fields (``hd_top`` .. ``hd_freed``, bytes 240-303)
are covered by ``hd_alloc_sum`` (byte 1824): a writer that finds them
changed behind its back rebuilds the free space from the structures before
it allocates. Without that, a lowered ``hd_top`` handed live records out
again, and the next writes overwrote them.
"""

from __future__ import annotations

import struct

import pytest

import dbm_shm

TOP = 240          # hd_top
LIVE = 248         # hd_live_bytes
FREE = 256         # hd_free_bytes
FREED = 296        # hd_freed
SUM = 1824         # hd_alloc_sum


def _u64(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack("<Q", f.read(8))[0]


def _put_u64(path, off, value):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack("<Q", value))


def _fill(path, n=2000):
    with dbm_shm.open(path, "n") as db:
        for i in range(n):
            db[b"old%d" % i] = b"%d:" % i + b"x" * (i % 300)
    return {b"old%d" % i: b"%d:" % i + b"x" * (i % 300) for i in range(n)}


@pytest.mark.parametrize("new_top", ["half", "header", "unaligned"])
def test_lowered_top_does_not_hand_out_live_records(tmp_path, new_top):
    path = str(tmp_path / "db")
    expected = _fill(path)
    top = _u64(path, TOP)
    assert _u64(path, SUM) != 0, "a store written by this version carries the sum"
    lowered = {"half": (top // 2) & ~15, "header": 4096, "unaligned": (top // 2) | 8}[new_top]
    _put_u64(path, TOP, lowered)
    with dbm_shm.open(path, "w") as db:
        for i in range(500):
            db[b"new%d" % i] = b"N" * 200
            expected[b"new%d" % i] = b"N" * 200
        assert db.check() == []
        assert dict(db.items()) == expected
        assert db.stats()["recoveries"] >= 1
    with dbm_shm.open(path, "r") as db:
        assert dict(db.items()) == expected


def test_damaged_counters_are_recomputed(tmp_path):
    path = str(tmp_path / "db")
    expected = _fill(path, 500)
    with dbm_shm.open(path, "r") as db:
        before = db.stats()
    _put_u64(path, LIVE, 7)
    _put_u64(path, FREE, 1 << 40)
    _put_u64(path, FREED, 1 << 41)
    with dbm_shm.open(path, "w") as db:
        db[b"one more"] = b"v"
        st = db.stats()
        assert st["live_bytes"] > before["live_bytes"]
        assert st["free_bytes"] < 1 << 30
        assert db.check() == []
        expected[b"one more"] = b"v"
        assert dict(db.items()) == expected


def test_a_file_without_the_sum_is_accepted_and_gets_one(tmp_path):
    """Files written before the field existed have 0 there: no rebuild, and
    the first writer's unlock fills it in."""
    path = str(tmp_path / "db")
    expected = _fill(path, 300)
    _put_u64(path, SUM, 0)
    with dbm_shm.open(path, "w") as db:
        db[b"k"] = b"v"
        assert db.stats()["recoveries"] == 0
        expected[b"k"] = b"v"
        assert dict(db.items()) == expected
    assert _u64(path, SUM) != 0


def test_reading_a_damaged_allocator_writes_nothing(tmp_path):
    path = str(tmp_path / "db")
    expected = _fill(path, 300)
    _put_u64(path, TOP, 4096)
    with open(path, "rb") as f:
        image = f.read()
    with dbm_shm.open(path, "r") as db:
        assert dict(db.items()) == expected
        assert db[b"old7"] == expected[b"old7"]
    with open(path, "rb") as f:
        assert f.read() == image


def test_repair_over_a_wild_record_offset(tmp_path):
    """A slot whose record offset points far outside the file (found by the
    sanitizer run of the random-corruption test: the repair's rebuild formed
    the record pointer before checking the offset, an overflow that UBSan
    reports). The repair drops the slot; the rest survives."""
    path = str(tmp_path / "db")
    expected = _fill(path, 300)
    with open(path, "r+b") as f:
        f.seek(200)
        d = struct.unpack("<Q", f.read(8))[0]
        f.seek(d & ~63)
        bucket = struct.unpack("<Q", f.read(8))[0]
        for s in range(252):
            f.seek(bucket + 64 + 16 * s + 8)
            rec = struct.unpack("<Q", f.read(8))[0]
            if rec:
                f.seek(bucket + 64 + 16 * s + 8)
                f.write(struct.pack("<Q", 0xD4000000000000F0))
                break
        else:
            pytest.fail("no occupied slot in the first bucket")
        f.seek(184)                       # hd_repair: the next writer repairs
        f.write(struct.pack("<Q", 1))
    with dbm_shm.open(path, "w") as db:
        db[b"after"] = b"repair"
        assert db.check() == []
        items = dict(db.items())
    lost = set(expected) - set(items)
    assert len(lost) == 1, lost             # the one slot that was damaged
    assert all(items[k] == v for k, v in expected.items() if k not in lost)
    assert items[b"after"] == b"repair"
