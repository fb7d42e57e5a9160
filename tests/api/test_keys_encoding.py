"""Keys and values: str (UTF-8), bytes, bytearray, memoryview and other
bytes-likes; empty and binary keys; sizes around the buffer boundaries;
TypeError for everything else."""

import array

import pytest

import dbm_shm

from ._util import assert_matches, walk


@pytest.mark.parametrize("make", [
    lambda b: b,
    lambda b: b.decode("latin-1") if b.isascii() else b,
    bytearray,
    memoryview,
    lambda b: memoryview(bytearray(b)),
    lambda b: array.array("B", b),
], ids=["bytes", "str", "bytearray", "memoryview", "memoryview_rw", "array"])
def test_bytes_like_keys_and_values(db, make):
    pairs = {b"key": b"value", b"k2": b"", b"bin\x00\xff": b"\x00" * 10}
    for k, v in pairs.items():
        db[make(k)] = make(v)
    assert_matches(db, pairs)
    for k, v in pairs.items():
        assert db[make(k)] == v
        assert make(k) in db
        assert db.get(make(k)) == v
    for k in pairs:
        del db[make(k)]
    assert len(db) == 0


def test_str_is_utf8(db):
    db["ключ"] = "значение"
    db["键"] = "值"
    db["😀"] = "e\u0301"
    assert db["ключ".encode("utf-8")] == "значение".encode("utf-8")
    assert db["ключ"] == "значение".encode("utf-8")
    assert db["键".encode()] == "值".encode()
    assert db["😀"] == "e\u0301".encode()
    assert set(db.keys()) == {"ключ".encode(), "键".encode(), "😀".encode()}
    # str and its encoding name the same key
    db["ключ".encode()] = b"raw"
    assert db["ключ"] == b"raw"
    assert len(db) == 3


def test_nfc_and_nfd_are_different_keys(db):
    db["\u00e9"] = b"nfc"
    db["e\u0301"] = b"nfd"
    assert len(db) == 2
    assert db["\u00e9"] == b"nfc"
    assert db["e\u0301"] == b"nfd"


def test_lone_surrogate_is_rejected(db):
    with pytest.raises(UnicodeEncodeError):
        db["\udc80"] = b"x"
    with pytest.raises(UnicodeEncodeError):
        db[b"k"] = "\ud800"
    assert len(db) == 0


def test_empty_key_and_empty_value(db, db_path):
    db[b""] = b""
    assert db[b""] == b""
    assert b"" in db
    assert "" in db
    assert len(db) == 1
    assert db.keys() == [b""]
    assert db.firstkey() == b""
    assert db.nextkey(b"") is None
    db[b"e"] = b""
    assert db[b"e"] == b""
    assert db.get(b"e", b"default") == b""
    db.close()
    with dbm_shm.open(db_path, "r") as d:
        assert_matches(d, {b"": b"", b"e": b""})
    with dbm_shm.open(db_path, "w") as d:
        del d[b""]
        assert b"" not in d
        assert d.keys() == [b"e"]


def test_binary_keys_with_nuls(db):
    keys = [b"\x00", b"\x00\x00", b"a\x00", b"a\x00b", b"a", b"ab", b"\x00a",
            b"\x00" * 100, b"\xff" * 3, bytes(range(256))]
    model = {k: b"v" + k for k in keys}
    for k, v in model.items():
        db[k] = v
    assert_matches(db, model)
    del db[b"a\x00"]
    del model[b"a\x00"]
    assert db[b"a"] == b"va"
    assert db[b"a\x00b"] == b"va\x00b"
    assert_matches(db, model)


def test_every_single_byte_key(db):
    model = {bytes([i]): bytes([255 - i]) * i for i in range(256)}
    for k, v in model.items():
        db[k] = v
    assert_matches(db, model)


def test_values_with_nuls_roundtrip(db):
    v = bytes(range(256)) * 100 + b"\x00" * 1000
    db[b"k"] = v
    assert db[b"k"] == v


def test_stored_copy_is_independent_of_mutable_input(db):
    k = bytearray(b"key")
    v = bytearray(b"value")
    db[k] = v
    k[0] = ord("X")
    v[0] = ord("X")
    assert db[b"key"] == b"value"
    assert b"Xey" not in db


def test_memoryview_of_wider_items_uses_raw_bytes(db):
    a = array.array("H", [1, 2, 3])
    db[memoryview(a)] = memoryview(a)
    assert db[a.tobytes()] == a.tobytes()


def test_bytes_and_str_subclasses(db):
    class B(bytes):
        pass

    class S(str):
        pass

    db[B(b"k")] = B(b"v")
    db[S("s")] = S("t")
    assert db[b"k"] == b"v"
    assert db[b"s"] == b"t"
    assert type(db[B(b"k")]) is bytes


BAD = [1, 0, None, 1.5, [b"a"], (b"a",), {b"a": 1}, object(), True]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: type(b).__name__)
def test_type_errors_for_keys(db, bad):
    db[b"k"] = b"v"
    commit = db.commit_id()
    with pytest.raises(TypeError):
        db[bad] = b"x"
    with pytest.raises(TypeError):
        db[bad]
    with pytest.raises(TypeError):
        del db[bad]
    with pytest.raises(TypeError):
        bad in db  # noqa: B015
    with pytest.raises(TypeError):
        db.get(bad)
    with pytest.raises(TypeError):
        db.setdefault(bad, b"x")
    with pytest.raises(TypeError):
        db.nextkey(bad)
    assert db.commit_id() == commit
    assert dict(db.items()) == {b"k": b"v"}


@pytest.mark.parametrize("bad", BAD, ids=lambda b: type(b).__name__)
def test_type_errors_for_values(db, bad):
    db[b"k"] = b"v"
    with pytest.raises(TypeError):
        db[b"k"] = bad
    with pytest.raises(TypeError):
        db[b"new"] = bad
    with pytest.raises(TypeError):
        db.setdefault(b"new2", bad)
    assert dict(db.items()) == {b"k": b"v"}


def test_assigning_none_does_not_delete(db):
    # Unlike some mappings, None is not a delete marker.
    db[b"k"] = b"v"
    with pytest.raises(TypeError):
        db[b"k"] = None
    assert db[b"k"] == b"v"


# The Python layer copies values through a 64 KiB per-thread buffer and
# scans in 1 MiB chunks: exercise both sides of those boundaries.
BOUNDARY_SIZES = [0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1, 3 << 20]


@pytest.mark.parametrize("n", BOUNDARY_SIZES)
def test_value_sizes_around_buffer_boundaries(db, db_path, n):
    v = bytes([n % 251]) * n
    db[b"k"] = v
    db[b"small"] = b"s"
    assert db[b"k"] == v
    assert db.get(b"k") == v
    assert dict(db.items()) == {b"k": v, b"small": b"s"}
    assert sorted(db.values()) == sorted([b"s", v])
    with dbm_shm.open(db_path, "r") as other:
        assert other[b"k"] == v


@pytest.mark.parametrize("n", [65535, 65536, 65537, 1 << 20, (1 << 20) + 1, 2 << 20])
def test_key_sizes_around_buffer_boundaries(db, n):
    k = bytes([n % 251]) * n
    db[k] = b"v"
    db[b"small"] = b"s"
    assert db[k] == b"v"
    assert k in db
    assert sorted(db.keys(), key=len) == [b"small", k]
    assert dict(db.items()) == {k: b"v", b"small": b"s"}
    assert sorted(walk(db), key=len) == [b"small", k]
    assert db.nextkey(k) in (None, b"small")
    del db[k]
    assert k not in db
    assert db.keys() == [b"small"]


def test_many_big_keys_in_one_bucket_scan(db):
    # Several large keys: a single bucket's scan record exceeds 1 MiB.
    model = {bytes([i]) * (300 * 1024): bytes([i]) for i in range(8)}
    for k, v in model.items():
        db[k] = v
    assert_matches(db, model)
