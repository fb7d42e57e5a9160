"""Bucket pages are 4096-aligned in new stores, and files written before,
whose pages are only 64-byte aligned (file format 1), are refused with a
message naming the command that converts them, and converted whole."""

import gzip
import mmap
import os
import struct

import pytest

import dbm_shm

DATA = os.path.join(os.path.dirname(__file__), "data")
HD_DIR = 200   # offset of hd_dir in the header (docs/file-format.md)


def bucket_pages(path):
    """The distinct bucket pages the directory of the store at path names."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        (d,) = struct.unpack_from("<Q", m, HD_DIR)
        off, depth = d & ~63, d & 63
        return set(struct.unpack_from("<%dQ" % (1 << depth), m, off))


def test_new_pages_are_page_aligned(tmp_path):
    path = str(tmp_path / "db")
    with dbm_shm.open(path, "n") as db:
        for i in range(20_000):
            db[b"key%06d" % i] = b"v" * 100
    pages = bucket_pages(path)
    assert len(pages) > 64
    assert all(p % 4096 == 0 for p in pages)
    with dbm_shm.open(path, "r") as db:
        assert db.check() == []
        assert db[b"key012345"] == b"v" * 100


def test_old_file_with_64_byte_aligned_pages(tmp_path):
    """A store written before pages were page-aligned (3,000 keys, most of
    its 16 pages not 4096-aligned, file format 1): refused with the command
    that converts it; converted, then grown, churned and checked."""
    path = str(tmp_path / "old.dshm")
    with gzip.open(os.path.join(DATA, "old-64-aligned.dshm.gz")) as src, open(path, "wb") as dst:
        dst.write(src.read())
    old = bucket_pages(path)
    assert any(p % 4096 for p in old)
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(dbm_shm.error, match="format 1.*dbm-shm upgrade"):
        dbm_shm.open(path, "r")
    with open(path, "rb") as f:
        assert f.read() == before          # the refusal changed nothing
    assert dbm_shm.upgrade(path).records == 3000
    model = {b"k%05d" % i: b"v%05d" % i * 10 for i in range(3000)}
    with dbm_shm.open(path, "r") as db:
        assert dict(db.items()) == model
        assert db.get_many(list(model)) == list(model.values())
    with dbm_shm.open(path, "w") as db:
        for i in range(3000, 30_000):
            db[b"k%05d" % i] = b"n" * (i % 300)
            model[b"k%05d" % i] = b"n" * (i % 300)
        for i in range(0, 30_000, 3):
            del db[b"k%05d" % i]
            del model[b"k%05d" % i]
        assert db.check() == []
    pages = bucket_pages(path)
    assert all(p % 64 == 0 for p in pages)
    assert sum(1 for p in pages if p % 4096 == 0) > len(pages) // 2
    with dbm_shm.open(path, "r") as db:
        assert dict(db.items()) == model
        assert db.check() == []
