"""Salvage (``dbm_shm.salvage``, csrc/dshm_salvage.c) on stores damaged in
known ways: every key outside the damaged part comes out with its exact
value, the counts say what was skipped, the source is byte-for-byte
unchanged, and the new store passes ``check()``.

The damage is written with the layout helpers of tests/fuzz/_fuzzlib.py
(offsets of csrc/dshm_layout.h, checked there by test_layout_offsets).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Set

import pytest

import dbm_shm

from fuzz import _fuzzlib as fl  # tests/ is on sys.path (rootdir-relative packages)

N = 3000


def _value(i: int) -> bytes:
    return (b"value-%d-" % i) * (1 + i % 13)


def _build(path: Path, n: int = N) -> Dict[bytes, bytes]:
    data = {b"key-%d" % i: _value(i) for i in range(n)}
    with dbm_shm.open(str(path), "n") as db:
        db.update(data)
    return data


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _page_keys(b: bytes, page: int) -> Set[bytes]:
    """The keys whose records the slots of one bucket page name."""
    keys = set()
    for s in range(fl.SLOTS):
        r = fl.rd(b, page + fl.BUCKET_HDR + 16 * s + 8)
        if r:
            kl = fl.rd(b, r, 4)
            keys.add(b[r + fl.REC_HDR:r + fl.REC_HDR + kl])
    return keys


def _salvage(src: Path, data: Dict[bytes, bytes], lost: Set[bytes],
             got_out: Optional[Dict[bytes, bytes]] = None) -> dbm_shm.SalvageReport:
    """Salvage src into src.new; check the source unchanged, the new store
    sound, and every key not in `lost` there with its exact value."""
    before = _sha(src)
    dst = src.with_name(src.name + ".new")
    report = dbm_shm.salvage(src, dst)
    assert _sha(src) == before, "salvage wrote to the source"
    with dbm_shm.open(str(dst), "r") as new:
        assert new.check() == []
        got = dict(new.items())
    assert len(got) == report.copied
    for k, v in data.items():
        if k not in lost:
            assert got.get(k) == v, k
    for k, v in got.items():
        if k in data or k not in lost:
            assert data.get(k) == v, k    # nothing invented
    if got_out is not None:
        got_out.update(got)
    return report


def test_undamaged_store_copies_everything(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    data = _build(src)
    r = _salvage(src, data, set())
    assert (r.copied, r.bad_records, r.bad_pages, r.cycles, r.duplicates) == (N, 0, 0, 0, 0)
    assert r.expected == N and not r.damaged


def test_bucket_page_overwritten_with_garbage(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    page = fl.parse(bytes(b)).primaries[1]
    lost = _page_keys(bytes(b), page)
    assert lost
    b[page:page + fl.BUCKET_SIZE] = os.urandom(fl.BUCKET_SIZE)
    src.write_bytes(b)
    r = _salvage(src, data, lost)
    assert r.bad_pages == 1 and r.bad_records == 0
    assert r.copied == N - len(lost)
    assert r.damaged


def test_record_length_smashed(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    victims = lay.records[10], lay.records[20], lay.records[30]
    lost = set()
    for r in victims:
        kl = fl.rd(b, r, 4)
        lost.add(bytes(b[r + fl.REC_HDR:r + fl.REC_HDR + kl]))
    fl.wr(b, victims[0], 4, 0xFFFFFFFF)                 # klen over DSHM_MAX_KEY
    fl.wr(b, victims[1] + 8, 8, (1 << 40) + 1)          # vlen over DSHM_MAX_VALUE
    fl.wr(b, victims[2] + 8, 8, len(b))                 # vlen past the end of the file
    src.write_bytes(b)
    r = _salvage(src, data, lost)
    assert r.bad_records == 3 and r.bad_pages == 0
    assert r.copied == N - 3


def test_hash_tag_and_slot_offsets(tmp_path: Path) -> None:
    """A record whose key bytes changed (hash tag no longer matches), a
    slot naming a misaligned offset and one outside the file."""
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    page = lay.primaries[0]
    slots = [s for s in range(fl.SLOTS) if fl.rd(b, page + fl.BUCKET_HDR + 16 * s + 8)][:3]
    lost = set()
    for s in slots:
        r = fl.rd(b, page + fl.BUCKET_HDR + 16 * s + 8)
        kl = fl.rd(b, r, 4)
        lost.add(bytes(b[r + fl.REC_HDR:r + fl.REC_HDR + kl]))
    r0 = fl.rd(b, page + fl.BUCKET_HDR + 16 * slots[0] + 8)
    b[r0 + fl.REC_HDR] ^= 0xFF                                     # key byte: tag mismatch
    fl.wr(b, page + fl.BUCKET_HDR + 16 * slots[1] + 8, 8, r0 + 8)  # misaligned
    fl.wr(b, page + fl.BUCKET_HDR + 16 * slots[2] + 8, 8, 1 << 50)  # outside the file
    src.write_bytes(b)
    r = _salvage(src, data, lost)
    assert r.bad_records == 3 and r.bad_pages == 0
    assert r.copied == N - 3


def test_directory_entry_outside_the_file(tmp_path: Path) -> None:
    """One directory entry names a page past the end: counted as a bad
    page; the bucket is still read through its other entries, and the keys
    the bad entry covered come out as strays (nothing lost)."""
    src = tmp_path / "a.db"
    data = _build(src, 7000)   # depth 6, 48 buckets: some have two entries
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    entries = [fl.rd(b, lay.dir_off + 8 * i) for i in range(1 << lay.depth)]
    # an entry whose bucket has a neighbour entry after it (local depth < global)
    i = next(i for i in range(len(entries) - 1) if entries[i] == entries[i + 1]
             and (i == 0 or entries[i - 1] != entries[i]))
    fl.wr(b, lay.dir_off + 8 * i, 8, (len(b) + (1 << 20)) & ~63)
    src.write_bytes(b)
    r = _salvage(src, data, set())
    assert r.bad_pages == 1
    assert r.copied == 7000 and r.duplicates == 0


def test_directory_entry_alone_outside_the_file(tmp_path: Path) -> None:
    """Every entry of one bucket names a page past the end: that bucket's
    keys are lost, every other key comes out."""
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    entries = [fl.rd(b, lay.dir_off + 8 * i) for i in range(1 << lay.depth)]
    victim = entries[-1]
    lost = _page_keys(bytes(b), victim)
    for i, e in enumerate(entries):
        if e == victim:
            fl.wr(b, lay.dir_off + 8 * i, 8, (len(b) + (1 << 20)) & ~63)
    src.write_bytes(b)
    r = _salvage(src, data, lost)
    assert r.bad_pages == 1
    assert r.copied == N - len(lost)


def _run_collide(code: str, *args: str) -> str:
    env = dict(os.environ, DSHM_TEST_COLLIDE="64")
    env.pop("DSHM_CRASH_AT", None)
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_overflow_chain_cycle(tmp_path: Path) -> None:
    """All keys collide (DSHM_TEST_COLLIDE=64: the hash every process of
    the test computes is 0), so one bucket holds them in a chain of
    overflow pages; its last page is linked back to its first overflow
    page. Salvage cuts the loop and copies every key once."""
    src = tmp_path / "a.db"
    _run_collide("import dbm_shm, sys\n"
                 "with dbm_shm.open(sys.argv[1], 'n') as db:\n"
                 "    db.update({b'c%d' % i: b'v%d' % i * 3 for i in range(700)})\n", str(src))
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    assert len(lay.overflows) >= 2
    chain = [p for p in lay.primaries if fl.rd(b, p + fl.BK["next"][0])][0]
    page = chain
    while fl.rd(b, page + fl.BK["next"][0]):
        page = fl.rd(b, page + fl.BK["next"][0])
    fl.wr(b, page + fl.BK["next"][0], 8, fl.rd(b, chain + fl.BK["next"][0]))
    src.write_bytes(b)
    before = _sha(src)
    out = _run_collide("import dbm_shm, sys, json\n"
                       "r = dbm_shm.salvage(sys.argv[1], sys.argv[1] + '.new')\n"
                       "with dbm_shm.open(sys.argv[1] + '.new') as new:\n"
                       "    ok = new.check() == [] and dict(new.items()) == "
                       "{b'c%d' % i: b'v%d' % i * 3 for i in range(700)}\n"
                       "print(json.dumps([list(r), ok]))\n", str(src))
    report, ok = json.loads(out)
    assert _sha(src) == before
    assert ok
    copied, bad_records, bad_pages, cycles, duplicates, expected = report
    assert (copied, bad_records, bad_pages, cycles, duplicates) == (700, 0, 0, 1, 0)


def test_overflow_link_outside_the_file(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    _run_collide("import dbm_shm, sys\n"
                 "with dbm_shm.open(sys.argv[1], 'n') as db:\n"
                 "    db.update({b'c%d' % i: b'v' for i in range(700)})\n", str(src))
    b = bytearray(src.read_bytes())
    lay = fl.parse(bytes(b))
    chain = [p for p in lay.primaries if fl.rd(b, p + fl.BK["next"][0])][0]
    first_ovf = fl.rd(b, chain + fl.BK["next"][0])
    kept = len(_page_keys(bytes(b), chain)) + len(_page_keys(bytes(b), first_ovf))
    fl.wr(b, first_ovf + fl.BK["next"][0], 8, 1 << 45)
    src.write_bytes(b)
    out = _run_collide("import dbm_shm, sys, json\n"
                       "r = dbm_shm.salvage(sys.argv[1], sys.argv[1] + '.new')\n"
                       "print(json.dumps(list(r)))\n", str(src))
    copied, bad_records, bad_pages, cycles, duplicates, _ = json.loads(out)
    assert (copied, bad_pages, cycles) == (kept, 1, 0)


def test_owed_repair_after_sigkill_read_only_file(tmp_path: Path) -> None:
    """A writer SIGKILLed inside a put (DSHM_CRASH_AT) leaves a repair
    owed and a bucket's counter odd; the file is read-only to us. Salvage
    reads it without repairing and without writing: every acknowledged key
    is there, the one in flight present or absent."""
    src = tmp_path / "a.db"
    data = _build(src)
    env = dict(os.environ, DSHM_CRASH_AT="put-written:1")
    p = subprocess.run([sys.executable, "-c",
                        "import dbm_shm, sys; dbm_shm.open(sys.argv[1], 'w')[b'key-7'] = b'new'",
                        str(src)], env=env)
    assert p.returncode == -signal.SIGKILL
    src.chmod(0o444)
    old = data.pop(b"key-7")
    got: Dict[bytes, bytes] = {}
    r = _salvage(src, data, {b"key-7"}, got)
    assert got[b"key-7"] in (old, b"new")
    assert r.copied == N and not r.damaged


def test_bad_allocator_checksum_and_repair_flag(tmp_path: Path) -> None:
    """Odd counters and an owed repair written into the header, a smashed
    allocator checksum and free-list head: none of it is read."""
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    fl.wr(b, fl.HDR["repair"][0], 8, 1)
    fl.wr(b, fl.HDR["struct_seq"][0], 8, 12345)
    fl.wr(b, fl.HDR_END + 16, 8, 0xDEADBEEF)         # hd_alloc_sum (after hd_batch, hd_lock_since)
    fl.wr(b, fl.HDR["top"][0], 8, 1 << 60)
    fl.wr(b, fl.HDR["count"][0], 8, 7)
    src.write_bytes(b)
    r = _salvage(src, data, set())
    assert r.copied == N and not r.damaged and r.expected == 7


def test_not_a_store_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a store" * 1000)
    with pytest.raises(dbm_shm.error) as exc:
        dbm_shm.salvage(junk, tmp_path / "new")
    assert exc.value.code == -31001          # DSHM_BAD_MAGIC
    assert not (tmp_path / "new").exists()
    src = tmp_path / "a.db"
    _build(src, 10)
    b = bytearray(src.read_bytes())
    fl.wr(b, fl.HDR["format"][0], 4, 99)
    src.write_bytes(b)
    with pytest.raises(dbm_shm.error):
        dbm_shm.salvage(src, tmp_path / "new")


def test_new_store_is_not_overwritten(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.db", tmp_path / "b.db"
    data = _build(src, 100)
    dst.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        dbm_shm.salvage(src, dst)
    assert dst.read_bytes() == b"precious"
    r = dbm_shm.salvage(src, dst, force=True)
    assert r.copied == 100
    with dbm_shm.open(str(dst)) as db:
        assert dict(db.items()) == data


def test_small_batches_and_a_value_larger_than_the_buffer(tmp_path: Path) -> None:
    """The cursor resumes in the middle of a bucket; a value larger than
    the 4 MiB batch buffer is handed over alone (-ERANGE, then a bigger
    buffer)."""
    from dbm_shm import _salvage
    src = tmp_path / "a.db"
    data = _build(src, 500)
    with dbm_shm.open(str(src), "w") as db:
        db[b"big"] = data[b"big"] = os.urandom(5 << 20)
    old = _salvage._CAP
    try:
        _salvage._CAP = 1000
        r = _salvage_all(src, data)
    finally:
        _salvage._CAP = old
    assert r.copied == 501 and not r.damaged


def _salvage_all(src: Path, data: Dict[bytes, bytes]) -> dbm_shm.SalvageReport:
    return _salvage(src, data, set())


def test_directory_itself_outside_the_file(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    _build(src, 10)
    b = bytearray(src.read_bytes())
    fl.wr(b, fl.HDR["dir"][0], 8, (1 << 50) | 3)
    src.write_bytes(b)
    with pytest.raises(dbm_shm.error) as exc:
        dbm_shm.salvage(src, tmp_path / "new")
    assert exc.value.code == -31003          # DSHM_CORRUPT

