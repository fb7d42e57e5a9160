"""Permissions, as an unprivileged user: each check runs in a forked child
that dropped root for 'nobody' (root bypasses file permissions, these tests
usually run as root, and the interpreter under /root cannot be exec'ed by
nobody). Created files honour mode and umask; a store the user may only
read is fully readable; writing without permission is a clear
dbm_shm.error with errno EACCES and the file name; a refused open changes
nothing."""

import errno
import hashlib
import os
import shutil
import struct
import tempfile
import time

import pytest

import dbm_shm

from ._hardlib import NOBODY, run_forked

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to user nobody")


def as_nobody(fn, *args, timeout=120):
    return run_forked(fn, *args, user=NOBODY, timeout=timeout).json()


@pytest.fixture
def shared_dir():
    """A directory 'nobody' can enter (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="dshm-perm-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _model(n=3000):
    m = {b"k%05d" % i: b"v%d" % i * (1 + i % 40) for i in range(n)}
    m[b"large"] = bytes(range(256)) * 1000
    return m


def _make_store(path, n=3000):
    with dbm_shm.open(path, "n") as d:
        for k, v in _model(n).items():
            d[k] = v


def _digest(pairs):
    h = hashlib.sha256()
    for k, v in sorted(pairs):
        h.update(k + b"\0" + v + b"\0")
    return h.hexdigest()


# -- creating files ------------------------------------------------------------------

def _create(path, flag, mode, umask):
    os.umask(umask)
    with dbm_shm.open(path, flag, mode) as d:
        d[b"k"] = b"v"
        st1 = os.stat(path)
        d.reorganize()                       # the compact copy keeps the mode
    st2 = os.stat(path)
    return [st1.st_mode & 0o7777, st2.st_mode & 0o7777, st1.st_uid, st2.st_uid,
            sorted(os.listdir(os.path.dirname(path)))]


@pytest.mark.parametrize("mode, umask", [(0o666, 0o022), (0o666, 0o077), (0o640, 0o022),
                                         (0o600, 0o000), (0o644, 0o027), (0o660, 0o002)],
                         ids=lambda v: oct(v))
@pytest.mark.parametrize("flag", ["c", "n"])
def test_created_file_mode_and_umask(shared_dir, mode, umask, flag):
    os.chmod(shared_dir, 0o777)
    path = os.path.join(shared_dir, "db")
    m1, m2, uid1, uid2, files = as_nobody(_create, path, flag, mode, umask)
    assert m1 == mode & ~umask, oct(m1)
    assert m2 == m1, oct(m2)
    assert uid1 == uid2 == NOBODY
    assert files == ["db"]


def _n_over_existing(path):
    os.umask(0o022)
    dbm_shm.open(path, "c", 0o600).close()
    os.chmod(path, 0o640)
    with dbm_shm.open(path, "n", 0o666) as d:
        d[b"k"] = b"v"
    return os.stat(path).st_mode & 0o7777


def test_n_keeps_the_replaced_files_mode(shared_dir):
    """'n' over an existing store keeps that file's mode."""
    os.chmod(shared_dir, 0o777)
    assert as_nobody(_n_over_existing, os.path.join(shared_dir, "db")) == 0o640


# -- reading what one may only read ------------------------------------------------------

def _read_all(path):
    res = {}
    with dbm_shm.open(path, "r") as d:
        res["len"] = len(d)
        keys = d.keys()
        res["keys"] = len(keys)
        res["digest_get"] = _digest((k, d[k]) for k in keys)
        res["digest_iteritems"] = _digest(d.iteritems())
        res["digest_items"] = _digest(d.items())
        n, k = 0, d.firstkey()
        while k is not None:
            n += 1
            k = d.nextkey(k)
        res["walk"] = n
        res["contains"] = [b"k00001" in d, b"missing" in d]
        res["check"] = d.check()
        res["stats_count"] = d.stats()["count"]
        for name, op in [("set", lambda: d.__setitem__(b"new", b"x")),
                         ("del", lambda: d.__delitem__(b"k00001")),
                         ("clear", d.clear), ("reorganize", d.reorganize)]:
            try:
                op()
                res[name] = "ok"
            except dbm_shm.error as e:
                res[name] = e.code
    return res


@pytest.mark.parametrize("mode", [0o444, 0o644, 0o604], ids=oct)
def test_read_only_store_is_fully_readable(shared_dir, mode):
    """A store owned by root that 'nobody' may only read: open 'r' works,
    every read interface returns everything, check() works (without the
    lock: a racy view), writes are refused as on any read-only handle, and
    the file is not changed."""
    path = os.path.join(shared_dir, "db")
    _make_store(path)
    os.chmod(path, mode)
    before = open(path, "rb").read()
    res = as_nobody(_read_all, path)
    model = _model()
    assert res["len"] == res["keys"] == res["walk"] == res["stats_count"] == len(model)
    assert res["digest_get"] == res["digest_iteritems"] == res["digest_items"] == _digest(model.items())
    assert res["contains"] == [True, False]
    assert res["check"] == []
    assert [res[k] for k in ("set", "del", "clear", "reorganize")] == [-31004] * 4   # DSHM_READONLY
    assert open(path, "rb").read() == before


# -- refused opens --------------------------------------------------------------------------

def _open(path, flag):
    try:
        dbm_shm.open(path, flag).close()
        return ["ok"]
    except dbm_shm.error as e:
        return ["error", e.errno, os.fsdecode(e.filename), str(e)]


@pytest.mark.parametrize("mode, flag", [(0o444, "w"), (0o444, "c"), (0o444, "n"), (0o644, "w"),
                                        (0o000, "r"), (0o000, "w"), (0o400, "r"), (0o200, "r"),
                                        (0o200, "w")],
                         ids=lambda v: oct(v) if isinstance(v, int) else v)
def test_open_without_permission(shared_dir, mode, flag):
    """EACCES, with the file name, and the file unchanged. (0o200: write but
    no read permission: the store cannot be read, so 'w' is refused too.)"""
    path = os.path.join(shared_dir, "db")
    _make_store(path, 100)
    os.chmod(path, mode)
    before = open(path, "rb").read()
    res = as_nobody(_open, path, flag)
    assert res[:3] == ["error", errno.EACCES, path], res
    assert "Permission denied" in res[3] and path in res[3]
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(shared_dir)) == ["db"]


@pytest.mark.parametrize("flag", ["c", "n"])
def test_create_in_directory_without_write_permission(shared_dir, flag):
    path = os.path.join(shared_dir, "db")
    res = as_nobody(_open, path, flag)
    assert res[:3] == ["error", errno.EACCES, path], res
    assert os.listdir(shared_dir) == []


def test_n_on_read_only_store_in_writable_directory(shared_dir):
    """'n' may not replace a store the user cannot write, even where it
    could create files (it must not rename a new file over it)."""
    os.chmod(shared_dir, 0o777)
    path = os.path.join(shared_dir, "db")
    _make_store(path, 100)
    os.chmod(path, 0o444)
    before = open(path, "rb").read()
    res = as_nobody(_open, path, "n")
    assert res[:3] == ["error", errno.EACCES, path], res
    assert open(path, "rb").read() == before
    assert os.stat(path).st_uid == 0
    assert sorted(os.listdir(shared_dir)) == ["db"]


def _reorganize(path):
    with dbm_shm.open(path, "w") as d:
        try:
            d.reorganize()
            r = ["ok"]
        except dbm_shm.error as e:
            r = ["error", e.errno, os.fsdecode(e.filename) if e.filename else None, e.code]
        r.append(len(d))
        r.append(d.check())
    return r


def test_reorganize_needs_directory_write_permission(shared_dir):
    """A user who may write the store but not its directory: reorganize()
    (which writes a copy beside it) fails with EACCES; the store is kept."""
    path = os.path.join(shared_dir, "db")
    _make_store(path, 500)
    os.chown(path, NOBODY, NOBODY)
    res = as_nobody(_reorganize, path)
    assert res[:3] == ["error", errno.EACCES, path] and res[4:] == [501, []], res
    assert sorted(os.listdir(shared_dir)) == ["db"]


# -- a store left mid-change, read by a user who cannot repair it -----------------------------

def _timed_gets(path, stuck_keys, other_keys):
    res = {"ok": 0, "errors": {}, "slowest": 0.0}
    keys = [bytes.fromhex(k) for k in stuck_keys + other_keys]
    with dbm_shm.open(path, "r") as d:
        for k in keys:
            t = time.monotonic()
            try:
                d[k]
                res["ok"] += 1
            except dbm_shm.error as e:
                res["errors"][str(e.code)] = res["errors"].get(str(e.code), 0) + 1
                res["message"] = str(e)
            res["slowest"] = max(res["slowest"], time.monotonic() - t)
    return res


def test_reader_without_write_permission_on_store_left_mid_change(shared_dir):
    """A bucket left mid-change (odd seqlock counter, as a writer killed
    inside a write leaves it) and a reader that cannot write the file, so
    can neither take the lock nor repair: keys of that bucket fail with
    DSHM_NEED_RECOVERY ('open it for writing'), fast: the writer lock is
    free while the counter stays odd, so no live writer will close that
    window (it used to wait about 5 s per read); other keys read normally;
    nothing is changed."""
    path = os.path.join(shared_dir, "db")
    _make_store(path)
    raw = bytearray(open(path, "rb").read())
    dirv = struct.unpack_from("<Q", raw, 200)[0]
    doff, depth = dirv & ~63, dirv & 63
    assert depth > 0
    bucket = struct.unpack_from("<Q", raw, doff)[0]        # the bucket of directory entry 0
    other = struct.unpack_from("<Q", raw, doff + 8 * ((1 << depth) - 1))[0]    # and of the last

    def keys_of(page, n):
        out = []
        for s in range(252):
            rec = struct.unpack_from("<Q", raw, page + 64 + 16 * s + 8)[0]
            if rec and len(out) < n:
                klen = struct.unpack_from("<I", raw, rec)[0]
                out.append(bytes(raw[rec + 40:rec + 40 + klen]).hex())   # 40-byte record header
        return out

    stuck, fine = keys_of(bucket, 1), keys_of(other, 20)
    struct.pack_into("<Q", raw, bucket, struct.unpack_from("<Q", raw, bucket)[0] | 1)
    with open(path, "wb") as f:
        f.write(raw)
    os.chmod(path, 0o444)
    res = as_nobody(_timed_gets, path, stuck, fine, timeout=600)
    assert res["ok"] == 20, res
    assert res["errors"] == {"-31005": 1}, res
    assert "open it for writing" in res["message"]
    assert res["slowest"] < 1.0, res
    assert open(path, "rb").read() == bytes(raw)
