"""reorganize(): the file shrinks, every remaining key is kept, and every
open handle follows the new file."""

import os
import stat

import pytest

import dbm_shm

from ._util import assert_matches, make_file


def _fill(db, n=20000, size=200):
    model = {b"key%d" % i: bytes([i % 256]) * size for i in range(n)}
    for k, v in model.items():
        db[k] = v
    return model


def test_reorganize_shrinks_after_deleting_most_keys(db, db_path):
    model = _fill(db)
    for i in range(20000):
        if i % 20:
            k = b"key%d" % i
            del db[k]
            del model[k]
    before = os.path.getsize(db_path)
    db.reorganize()
    after = os.path.getsize(db_path)
    assert after < before / 4, (before, after)
    assert_matches(db, model)
    assert db.check() == []
    st = db.stats()
    assert st["free_bytes"] < 64 * 1024
    assert st["file_size"] == after


def test_reorganize_keeps_data_across_reopen(db_path):
    with dbm_shm.open(db_path, "c") as db:
        model = _fill(db, 5000)
        for k in list(model)[::2]:
            del db[k]
            del model[k]
        db.reorganize()
        db[b"after"] = b"reorg"
        model[b"after"] = b"reorg"
    with dbm_shm.open(db_path, "r") as db:
        assert_matches(db, model)
        assert db.check() == []


def test_reorganize_empty_and_repeated(db, db_path):
    db.reorganize()
    assert len(db) == 0
    assert db.check() == []
    db[b"k"] = b"v"
    for _ in range(5):
        db.reorganize()
    assert_matches(db, {b"k": b"v"})
    db.clear()
    db.reorganize()
    assert len(db) == 0
    assert os.path.getsize(db_path) <= 1 << 20


def test_other_handles_follow_reorganize(db, db_path):
    model = _fill(db, 10000, 100)
    for k in list(model)[:9000]:
        del db[k]
        del model[k]
    r = dbm_shm.open(db_path, "r")
    w = dbm_shm.open(db_path, "w")
    try:
        assert len(r) == len(w) == 1000
        db.reorganize()
        # both other handles see the data of the new file ...
        assert_matches(r, model)
        assert_matches(w, model)
        assert r.stats()["reopens"] >= 1
        assert w.stats()["reopens"] >= 1
        # ... and writes through any handle reach all of them
        w[b"from_w"] = b"1"
        db[b"from_db"] = b"2"
        model.update({b"from_w": b"1", b"from_db": b"2"})
        for h in (r, w, db):
            assert_matches(h, model)
        # the other handle can itself reorganize afterwards
        del w[b"from_w"]
        del model[b"from_w"]
        w.reorganize()
        for h in (r, w, db):
            assert_matches(h, model)
        assert db.check() == []
    finally:
        r.close()
        w.close()
    with dbm_shm.open(db_path, "r") as d:
        assert_matches(d, model)


def test_handle_opened_after_reorganize(db, db_path):
    _fill(db, 1000)
    db.reorganize()
    with dbm_shm.open(db_path, "w") as w:
        w[b"x"] = b"y"
        assert w.stats()["reopens"] == 0
    assert db[b"x"] == b"y"


def test_reorganize_keeps_permissions(db_path):
    old = os.umask(0o077)
    try:
        make_file(db_path, {b"k": b"v"})
        os.chmod(db_path, 0o640)
        with dbm_shm.open(db_path, "w") as db:
            db.reorganize()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o640


def test_reorganize_leaves_no_stray_files(db, db_path):
    _fill(db, 3000)
    for _ in range(3):
        db.reorganize()
    with dbm_shm.open(db_path, "w") as other:
        other.reorganize()
    assert os.listdir(db_path.parent) == [db_path.name]


def test_reorganize_with_many_keys_and_sizes(db):
    model = {}
    for i in range(30000):
        k = b"k%d" % i
        model[k] = db[k] = b"x" * (i % 700)
    for i in range(0, 30000, 4):
        del db[b"k%d" % i]
        del model[b"k%d" % i]
    db.reorganize()
    assert_matches(db, model)
    assert db.check() == []


def _deleted_file_refs(path):
    """fds and mappings of this process that refer to a replaced copy of path."""
    target = os.path.realpath(path) + " (deleted)"
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) == target:
                fds.append(fd)
        except OSError:
            pass
    with open("/proc/self/maps") as f:
        maps = [line for line in f if line.rstrip("\n").endswith(target)]
    return fds, maps


def test_reorganize_releases_the_old_file(db, db_path):
    """The replaced file's space goes back to the file system at once: no
    handle keeps an fd or a mapping of it once it has made a call after the
    reorganize (so fds and address space do not grow either)."""
    _fill(db, 20000)
    with dbm_shm.open(db_path, "r") as other:
        for _ in range(10):
            db.reorganize()
            len(other)
            len(db)
        fds, maps = _deleted_file_refs(db_path)
        assert fds == []
        assert maps == []


def test_reorganize_after_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = dbm_shm.open("db", "c")
    try:
        model = _fill(db, 1000)
        (tmp_path / "elsewhere").mkdir()
        os.chdir(tmp_path / "elsewhere")
        db.reorganize()
        db[b"late"] = b"1"
        model[b"late"] = b"1"
    finally:
        db.close()
    assert os.listdir(tmp_path / "elsewhere") == []
    with dbm_shm.open(tmp_path / "db", "w") as d:
        assert_matches(d, model)
        d[b"again"] = b"2"


def test_reorganize_through_symlink(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    make_file(real, {b"k%d" % i: b"v" for i in range(1000)})
    os.symlink(real, link)
    with dbm_shm.open(link, "w") as db:
        db.reorganize()
        db[b"via_link"] = b"1"
    with dbm_shm.open(real, "w") as d:
        assert d[b"via_link"] == b"1"
        d[b"via_real"] = b"2"
    with dbm_shm.open(link, "r") as d:
        assert d[b"via_real"] == b"2"


@pytest.mark.parametrize("how", ["chdir", "symlink"])
def test_file_left_behind_by_reorganize_stays_usable(tmp_path, monkeypatch, how):
    """Whatever happens to the path, a file that a path still names is never
    left unusable by a stale 'moved' mark: it opens, reads and takes writes."""
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "db"
    make_file(real, {b"k%d" % i: b"v" for i in range(1000)})
    if how == "chdir":
        db = dbm_shm.open("db", "w")
        (tmp_path / "elsewhere").mkdir()
        os.chdir(tmp_path / "elsewhere")
    else:
        os.symlink(real, tmp_path / "link")
        db = dbm_shm.open(tmp_path / "link", "w")
    try:
        db.reorganize()
    finally:
        db.close()
    with dbm_shm.open(real, "w") as d:
        assert len(d) == 1000
        d[b"new"] = b"1"
        assert d[b"new"] == b"1"
        assert d.stats()["reopens"] == 0
        assert d.check() == []
    with dbm_shm.open(real, "r") as d:
        assert len(d) == 1001
