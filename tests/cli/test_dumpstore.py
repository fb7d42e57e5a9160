"""dbm_shm._dumpstore: a store dumped in bulk (dshm_scan + the core's
dshm_dump_encode) is byte for byte what the record-by-record writer
(_dumpfmt.write_dump over db.iteritems()) writes."""

import io
import random
import struct

import pytest

import dbm_shm
from dbm_shm import _dumpfmt, _dumpstore
from dbm_shm._dshm import ffi, lib

HEADER = dict(filename="x.db", mode=0o640, uid=1, gid=2, user="u", group="g",
              created_by="test", timestamp=0)
LENGTHS = [0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 171, 228, 229, 300, 5000]


def _both(path, compat):
    with dbm_shm.open(str(path), "r") as db:
        old = io.BytesIO()
        n_old = _dumpfmt.write_dump(old, db.iteritems(), gdbm_compat=compat, **HEADER)
        new = io.BytesIO()
        seen = []
        n_new = _dumpstore.write_store_dump(new, db, gdbm_compat=compat,
                                            progress=seen.append, **HEADER)
    assert n_new == n_old == sum(seen)
    return old.getvalue(), new.getvalue()


def _fill(path, items):
    with dbm_shm.open(str(path), "n") as db:
        db.update(dict(items))


@pytest.mark.parametrize("compat", [True, False])
@pytest.mark.parametrize("scan_bytes", [1 << 20, 4096])
def test_bulk_dump_is_byte_identical(tmp_path, monkeypatch, compat, scan_bytes):
    """Every length around the 57-byte line, empty keys and values included,
    with the scan and output buffers small enough to be outgrown."""
    monkeypatch.setattr(_dumpstore, "SCAN_BYTES", scan_bytes)
    rng = random.Random(7)
    items = [(b"k%d-" % i + rng.randbytes(k), rng.randbytes(v))
             for i, (k, v) in enumerate((k, v) for k in LENGTHS for v in LENGTHS)]
    items += [(b"", b"empty key"), (b"big", rng.randbytes(50_000))]
    _fill(tmp_path / "s.db", items)
    old, new = _both(tmp_path / "s.db", compat)
    assert old == new
    assert sorted(_dumpfmt.read_dump(io.BytesIO(new))) == sorted(items)


@pytest.mark.parametrize("compat", [True, False])
def test_only_records_with_an_empty_part(tmp_path, monkeypatch, compat):
    monkeypatch.setattr(_dumpstore, "SCAN_BYTES", 256)
    items = [(b"k%d" % i, b"") for i in range(50)] + [(b"", b"v")]
    _fill(tmp_path / "s.db", items)
    old, new = _both(tmp_path / "s.db", compat)
    assert old == new


def test_a_full_record_after_empty_ones_comes_first(tmp_path, monkeypatch):
    monkeypatch.setattr(_dumpstore, "SCAN_BYTES", 256)
    items = [(b"k%d" % i, b"") for i in range(50)] + [(b"full", b"value")]
    _fill(tmp_path / "s.db", items)
    old, new = _both(tmp_path / "s.db", True)
    assert old == new
    body = new.split(b"# End of header\n", 1)[1]
    assert body.startswith(b"#:len=4\nZnVsbA==\n#:len=5\ndmFsdWU=\n")


def test_empty_store(tmp_path):
    _fill(tmp_path / "s.db", [])
    old, new = _both(tmp_path / "s.db", True)
    assert old == new and new.endswith(b"#:count=0\n# End of data\n")


def _encode(recs, cap=1 << 16, flags=0):
    pos = ffi.new("size_t *")
    count = ffi.new("uint64_t *")
    need = ffi.new("uint64_t *")
    out = ffi.new("char[]", cap)
    rc = lib.dshm_dump_encode(recs, len(recs), pos, out, cap, flags, count, need)
    return rc, pos[0], count[0], need[0], ffi.buffer(out, max(rc, 0))[:]


def _rec(key, value):
    return struct.pack("=IQQ", len(key), len(value), 0) + key + value


def test_encoder_checks_every_length():
    good = _rec(b"key", b"value")
    assert _encode(good)[0] == len(b"#:len=3\na2V5\n#:len=5\ndmFsdWU=\n")
    for bad in (good[:-1], good[:19], _rec(b"k", b"v")[:-1] + b"",
                struct.pack("=IQQ", 2**32 - 1, 0, 0) + b"x",
                struct.pack("=IQQ", 1, 2**64 - 1, 0) + b"xy"):
        assert _encode(good + bad)[0] == lib.DSHM_INVALID
    assert _encode(good, flags=0x80)[0] == lib.DSHM_INVALID


def test_encoder_stops_at_the_output_capacity():
    recs = _rec(b"a", b"b") * 3
    one = len(b"#:len=1\nYQ==\n#:len=1\nYg==\n")
    rc, pos, count, _, out = _encode(recs, cap=2 * one + 1)
    assert (rc, pos, count) == (2 * one, 2 * len(_rec(b"a", b"b")), 2)
    rc, pos, count, need, _ = _encode(recs, cap=one - 1)
    assert (rc, pos, count, need) == (-34, 0, 0, one)


@pytest.mark.parametrize("compat", [True, False])
def test_encoder_against_the_python_encoder_random_caps(compat):
    """Random records, random output capacities: the pieces the encoder
    writes, joined, are the Python encoder's output, and never more than
    the capacity."""
    rng = random.Random(11)
    for _ in range(30):
        items = [(rng.randbytes(rng.choice([0, 1, 2, 3, 57, 58, rng.randrange(400)])),
                  rng.randbytes(rng.choice([0, 1, 2, 3, 57, 114, rng.randrange(400)])))
                 for _ in range(rng.randrange(1, 40))]
        recs = b"".join(_rec(k, v) for k, v in items)
        want = _dumpfmt.encode_records(items, compat)
        cap = rng.choice([64, 200, 1000, 1 << 16])
        pos = ffi.new("size_t *")
        count = ffi.new("uint64_t *")
        need = ffi.new("uint64_t *")
        out = ffi.new("char[]", cap)
        got = b""
        while pos[0] < len(recs):
            rc = lib.dshm_dump_encode(recs, len(recs), pos, out, cap,
                                      lib.DSHM_DUMP_COMPAT if compat else 0, count, need)
            if rc == -34:
                assert need[0] > cap
                cap = need[0]
                out = ffi.new("char[]", cap)
                continue
            assert 0 < rc <= cap
            got += ffi.buffer(out, rc)[:]
        assert got == want and count[0] == len(items)
