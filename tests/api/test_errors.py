"""Error paths of open() and of damaged files: a clear dbm_shm.error (never a
crash), the right errno/filename/code, and the file left byte-for-byte
unchanged."""

import errno
import json
import os
import random
import resource
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap

import pytest

import dbm_shm
from dbm_shm._dshm import lib

from ._util import assert_matches, file_bytes, make_file

SAMPLE = {b"k%d" % i: b"v" * (i % 300) for i in range(2000)}


@pytest.fixture
def good(db_path):
    make_file(db_path, SAMPLE)
    return db_path


def _open_fails(path, flag):
    with pytest.raises(dbm_shm.error) as ei:
        dbm_shm.open(path, flag)
    return ei.value


# -- missing files, bad flags, bad paths ------------------------------------

@pytest.mark.parametrize("flag", ["r", "w", "rs", "wu"])
def test_missing_file(tmp_path, flag):
    path = tmp_path / "missing"
    e = _open_fails(path, flag)
    assert e.errno == errno.ENOENT
    assert e.filename == str(path)
    assert "No such file" in str(e)
    assert str(path) in str(e)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_missing_file_bytes_path_error_filename(tmp_path):
    path = os.fsencode(tmp_path / "missing")
    e = _open_fails(path, "r")
    assert e.errno == errno.ENOENT
    assert os.fsencode(e.filename) == path


def test_dangling_symlink_with_r(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    e = _open_fails(tmp_path / "link", "r")
    assert e.errno == errno.ENOENT


@pytest.mark.parametrize("flag", ["c", "n"])
def test_missing_parent_directory(tmp_path, flag):
    path = tmp_path / "no" / "such" / "dir" / "db"
    e = _open_fails(path, flag)
    assert e.errno == errno.ENOENT
    assert not (tmp_path / "no").exists()


BAD_FLAGS = ["x", "rx", "", "cz", "rr", "rw", "cn", "R", "C", "r ", " r", "c\0", "cs+", "é"]


@pytest.mark.parametrize("flag", BAD_FLAGS)
def test_bad_flag_on_missing_file(tmp_path, flag):
    path = tmp_path / "db"
    _open_fails(path, flag)
    assert not path.exists()


@pytest.mark.parametrize("flag", BAD_FLAGS)
def test_bad_flag_on_existing_file(good, flag):
    before = file_bytes(good)
    e = _open_fails(good, flag)
    assert str(e)
    assert file_bytes(good) == before


def test_bad_flag_messages(tmp_path):
    path = tmp_path / "whatever"
    with pytest.raises(dbm_shm.error, match="First flag must be one of 'r', 'w', 'c' or 'n'"):
        dbm_shm.open(path, "x")
    with pytest.raises(dbm_shm.error, match="Flag 'z' is not supported"):
        dbm_shm.open(path, "cz")
    assert not path.exists()


@pytest.mark.parametrize("flag", ["r", "w", "c", "n"])
def test_directory_as_path(tmp_path, flag):
    d = tmp_path / "adir"
    d.mkdir()
    (d / "inside").write_bytes(b"keep")
    e = _open_fails(d, flag)
    assert e.errno == errno.EISDIR
    assert e.filename == str(d)
    assert d.is_dir()
    assert os.listdir(d) == ["inside"]
    assert (d / "inside").read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["adir"]


@pytest.mark.parametrize("flag", ["r", "w", "c", "n"])
@pytest.mark.parametrize("name", ["db\0x", b"db\0x", "\0"])
def test_embedded_nul_in_filename(tmp_path, flag, name):
    path = os.path.join(os.fsencode(tmp_path), name) if isinstance(name, bytes) \
        else os.path.join(str(tmp_path), name)
    with pytest.raises(ValueError):
        dbm_shm.open(path, flag)
    assert os.listdir(tmp_path) == []


# -- foreign files ------------------------------------------------------------

FOREIGN = {
    "random_small": lambda rng: bytes(rng.getrandbits(8) for _ in range(10)),
    "random_page": lambda rng: bytes(rng.getrandbits(8) for _ in range(4096)),
    "random_big": lambda rng: bytes(rng.getrandbits(8) for _ in range(200_000)),
    "text": lambda rng: b"hello, world\nthis is a text file\n" * 300,
    "short_text": lambda rng: b"hi\n",
    "zeros": lambda rng: b"\0" * 100_000,
    "png": lambda rng: b"\x89PNG\r\n\x1a\n" + b"\0" * 5000,
    "sqlite": lambda rng: b"SQLite format 3\x00" + b"\x10\x00" + b"\0" * 8000,
    "gdbm_magic": lambda rng: struct.pack("=I", 0x13579ACF) + b"\0" * 8000,
    "our_magic_then_garbage": lambda rng: b"\x93DSHM\r\n\x1a" + bytes(rng.getrandbits(8) for _ in range(9000)),
    "our_magic_only": lambda rng: b"\x93DSHM\r\n\x1a",
}


@pytest.mark.parametrize("kind, flag", [
    (kind, flag) for kind in sorted(FOREIGN) for flag in ["r", "w", "c", "rs", "cu"]
    # an all-zero file is treated like an empty one (see below)
    if not (kind == "zeros" and flag[0] == "c")
])
def test_foreign_file(db_path, kind, flag):
    data = FOREIGN[kind](random.Random(kind))
    db_path.write_bytes(data)
    e = _open_fails(db_path, flag)
    if data.startswith(b"\x93DSHM\r\n\x1a"):
        # our magic, but no valid store behind it
        assert e.code in (lib.DSHM_TRUNCATED, lib.DSHM_CORRUPT, lib.DSHM_VERSION_MISMATCH)
    else:
        assert e.code == lib.DSHM_BAD_MAGIC
    assert os.fsdecode(e.filename) == str(db_path)
    assert file_bytes(db_path) == data
    assert os.listdir(db_path.parent) == ["db"]


def test_foreign_file_replaced_by_n(db_path):
    db_path.write_bytes(b"not a database\n")
    with dbm_shm.open(db_path, "n") as d:
        assert len(d) == 0
        d[b"k"] = b"v"
    with dbm_shm.open(db_path, "r") as d:
        assert d[b"k"] == b"v"


@pytest.mark.parametrize("flag", ["r", "w"])
def test_empty_file_r_w(db_path, flag):
    db_path.write_bytes(b"")
    e = _open_fails(db_path, flag)
    assert e.code == lib.DSHM_BAD_MAGIC
    assert db_path.read_bytes() == b""


@pytest.mark.parametrize("flag", ["c", "n"])
def test_empty_file_c_n_initialises(db_path, flag):
    # As gdbm: a zero-length file opened to create is a new database.
    db_path.write_bytes(b"")
    with dbm_shm.open(db_path, flag) as d:
        assert len(d) == 0
        d[b"k"] = b"v"
        assert d.check() == []
    with dbm_shm.open(db_path, "r") as d:
        assert d[b"k"] == b"v"


def test_half_created_file_c_initialises(db_path):
    # What a creator that died right after reserving the initial 64 KiB
    # leaves behind: 'c' finishes the job.
    db_path.write_bytes(b"\0" * 65536)
    with dbm_shm.open(db_path, "c") as d:
        assert len(d) == 0
        d[b"k"] = b"v"
        assert d.check() == []


def test_other_all_zero_file_is_refused(db_path):
    data = b"\0" * 100_000
    db_path.write_bytes(data)
    with pytest.raises(dbm_shm.error, match="DSHM_BAD_MAGIC"):
        dbm_shm.open(db_path, "c")
    assert db_path.read_bytes() == data


@pytest.mark.parametrize("flag", ["c", "cu"])
def test_c_refuses_foreign_file_with_zero_prefix(db_path, flag):
    # e.g. a Berkeley DB file starts with an 8-byte LSN that is often zero
    data = b"\0" * 8 + b"precious data that is not a dbm_shm store\n" * 200
    db_path.write_bytes(data)
    e = _open_fails(db_path, flag)
    assert e.code == lib.DSHM_BAD_MAGIC
    assert file_bytes(db_path) == data


@pytest.mark.parametrize("flag", ["r", "w"])
def test_r_w_refuse_foreign_file_with_zero_prefix(db_path, flag):
    data = b"\0" * 8 + b"precious data that is not a dbm_shm store\n" * 200
    db_path.write_bytes(data)
    _open_fails(db_path, flag)
    assert file_bytes(db_path) == data


# -- truncated and damaged dbm_shm files --------------------------------------

@pytest.mark.parametrize("flag", ["r", "w", "c"])
@pytest.mark.parametrize("cut", ["1", "8", "100", "4095", "4096", "8192", "half", "minus1", "minus4096"])
def test_truncated_file(good, cut, flag):
    full = os.path.getsize(good)
    n = {"half": full // 2, "minus1": full - 1, "minus4096": full - 4096}.get(cut) or int(cut)
    assert 0 < n < full
    os.truncate(good, n)
    before = file_bytes(good)
    e = _open_fails(good, flag)
    # shorter than the magic: not recognisably ours; otherwise: truncated
    assert e.code == (lib.DSHM_BAD_MAGIC if n < 8 else lib.DSHM_TRUNCATED)
    assert os.fsdecode(e.filename) == str(good)
    assert file_bytes(good) == before


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("flag", ["r", "w", "c"])
@pytest.mark.parametrize("what, offset, data, code", [
    ("magic_first_byte", 0, b"\x00", "DSHM_BAD_MAGIC"),
    ("magic_last_byte", 7, b"\x00", "DSHM_BAD_MAGIC"),
    ("format_version", 8, struct.pack("=I", 0xFFFF), "DSHM_VERSION_MISMATCH"),
    ("header_size", 12, struct.pack("=I", 8192), "DSHM_CORRUPT"),
    ("seed", 24, b"\xAA\x55", "DSHM_CORRUPT"),
    ("checksum", 48, b"\x01", "DSHM_CORRUPT"),
])
def test_damaged_header(good, flag, what, offset, data, code):
    if file_bytes(good)[offset:offset + len(data)] == data:
        data = bytes(b ^ 0xFF for b in data)   # the file's random seed made them equal: damage them all the same
    _poke(good, offset, data)
    before = file_bytes(good)
    e = _open_fails(good, flag)
    assert e.code == getattr(lib, code), what
    assert file_bytes(good) == before


def test_good_file_survives_failed_opens(good):
    before = file_bytes(good)
    for flag in ["x", "rz", "", "cq"]:
        with pytest.raises(dbm_shm.error):
            dbm_shm.open(good, flag)
    assert file_bytes(good) == before
    with dbm_shm.open(good, "r") as d:
        assert_matches(d, SAMPLE)


# -- error messages --------------------------------------------------------------

def test_library_error_attributes(db_path):
    db_path.write_bytes(b"plain text, not a database\n" * 400)
    e = _open_fails(db_path, "r")
    assert e.code == lib.DSHM_BAD_MAGIC
    assert os.fsdecode(e.filename) == str(db_path)
    assert "not a dbm_shm database file" in e.args[0]


def _raise_bad_magic(tmp_path):
    p = tmp_path / "text"
    p.write_bytes(b"plain text, not a database\n" * 400)
    dbm_shm.open(p, "r")


def _raise_truncated(tmp_path):
    p = tmp_path / "db"
    make_file(p, SAMPLE)
    os.truncate(p, 100)
    dbm_shm.open(p, "r")


def _raise_readonly(tmp_path):
    p = tmp_path / "db"
    make_file(p, {b"k": b"v"})
    with dbm_shm.open(p, "r") as d:
        d[b"k"] = b"w"


def _raise_version(tmp_path):
    p = tmp_path / "db"
    make_file(p, {b"k": b"v"})
    _poke(p, 8, struct.pack("=I", 0xFFFF))
    dbm_shm.open(p, "r")


@pytest.mark.parametrize("cause, words", [
    (_raise_bad_magic, "not a dbm_shm database file"),
    (_raise_truncated, "truncated"),
    (_raise_readonly, "read-only"),
    (_raise_version, "version"),
], ids=["bad_magic", "truncated", "readonly", "version"])
def test_library_error_str_is_readable(tmp_path, cause, words):
    with pytest.raises(dbm_shm.error) as ei:
        cause(tmp_path)
    text = str(ei.value)
    assert words in text
    assert "None" not in text


# -- permissions ------------------------------------------------------------------

def _permission_checks(dirpath):
    """Open files of mode 000 and 0444 in ``dirpath``; return what happened."""
    res = {}
    for name, flag in [("noperm", "r"), ("noperm", "w"), ("noperm", "c"),
                       ("readonly", "r"), ("readonly", "w"), ("readonly", "c")]:
        try:
            with dbm_shm.open(os.path.join(dirpath, name), flag) as d:
                res[name + "/" + flag] = ["ok", len(d), (d.get(b"k") or b"").decode(),
                                          sorted(k.decode() for k in d.keys())]
        except dbm_shm.error as e:
            res[name + "/" + flag] = ["error", e.errno, e.filename]
        except Exception as e:  # noqa: BLE001 - reported to the test
            res[name + "/" + flag] = ["other", type(e).__name__, str(e)]
    return res


def _make_permission_files(dirpath):
    for name, mode in [("noperm", 0o000), ("readonly", 0o444)]:
        p = os.path.join(dirpath, name)
        make_file(p, {b"k": b"v", b"k2": b"v2"})
        os.chmod(p, mode)


def _assert_permission_results(res, dirpath):
    for flag in "rwc":
        assert res["noperm/" + flag] == ["error", errno.EACCES, os.path.join(dirpath, "noperm")], flag
    assert res["readonly/r"] == ["ok", 2, "v", ["k", "k2"]]
    for flag in "wc":
        assert res["readonly/" + flag] == ["error", errno.EACCES, os.path.join(dirpath, "readonly")], flag


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses file permissions")
def test_permissions(tmp_path):
    _make_permission_files(str(tmp_path))
    _assert_permission_results(_permission_checks(str(tmp_path)), str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_permissions_as_unprivileged_user():
    """The same checks in a forked child that dropped root for 'nobody'
    (root bypasses permissions, and these tests often run as root)."""
    d = tempfile.mkdtemp(prefix="dbm_shm_perm_")
    try:
        os.chmod(d, 0o755)
        _make_permission_files(d)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                out = json.dumps(_permission_checks(d)).encode()
                os.write(w, out)
                os._exit(0)
            except BaseException:  # noqa: BLE001
                os._exit(1)
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        _assert_permission_results(json.loads(b"".join(chunks)), d)
    finally:
        shutil.rmtree(d)


# -- no crash on damaged or shrunk files (in a child process) -------------------

_PROBE = textwrap.dedent(r"""
    import sys, dbm_shm
    path, flags = sys.argv[1], sys.argv[2]
    for flag in flags:
        try:
            db = dbm_shm.open(path, flag)
        except dbm_shm.error:
            continue
        for op in ("len", "keys", "items", "walk", "get", "check", "set", "del", "reorganize_no"):
            try:
                if op == "len": len(db)
                elif op == "keys": db.keys()
                elif op == "items": db.items()
                elif op == "walk":
                    k = db.firstkey(); n = 0
                    while k is not None and n < 100000:
                        k = db.nextkey(k); n += 1
                elif op == "get":
                    for i in range(2000): db.get(b"k%d" % i)
                elif op == "check": db.check()
                elif op == "set" and flag != "r":
                    for i in range(300): db[b"n%d" % i] = b"x" * i
                elif op == "del" and flag != "r":
                    for i in range(0, 2000, 7):
                        try: del db[b"k%d" % i]
                        except KeyError: pass
            except (dbm_shm.error, KeyError):
                pass
        db.close()
    print("survived")
""")


def _run_probe(path, flags, timeout=120):
    def no_core():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return subprocess.run([sys.executable, "-c", _PROBE, str(path), flags], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=no_core)


def test_random_corruption_never_crashes(tmp_path):
    """Flip bytes in a valid file (data area and the mutable header part);
    opening and using it raises dbm_shm.error or works, but never crashes."""
    src = tmp_path / "good"
    make_file(src, SAMPLE)
    data = file_bytes(src)
    rng = random.Random(20240601)
    failures = []
    for trial in range(24):
        b = bytearray(data)
        lo = 56 if trial % 3 == 0 else 4096   # past the checksummed header fields
        for _ in range(rng.choice([1, 8, 64, 512])):
            b[rng.randrange(lo, len(b))] = rng.randrange(256)
        p = tmp_path / ("t%d" % trial)
        p.write_bytes(bytes(b))
        proc = _run_probe(p, "rw")
        if proc.returncode != 0 or "survived" not in proc.stdout:
            failures.append((trial, proc.returncode, proc.stderr[-400:]))
    assert failures == []


def test_probe_detects_crash(tmp_path):
    """The probe really reports a crash (so the tests above can fail)."""
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGBUS)"],
                          capture_output=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    assert proc.returncode == -7


_SHRINK = textwrap.dedent(r"""
    import os, sys, dbm_shm
    path, frac = sys.argv[1], float(sys.argv[2])
    with dbm_shm.open(path, "n") as db:
        for i in range(3000):
            db[b"k%d" % i] = b"v" * (i % 3000)
    handles = [dbm_shm.open(path, "r"), dbm_shm.open(path, "w")]
    os.truncate(path, int(os.path.getsize(path) * frac))
    for db in handles:
        for op in (lambda: [db.get(b"k%d" % i) for i in range(3000)], db.keys, db.items,
                   db.firstkey, db.check, lambda: [db.__setitem__(b"n%d" % i, b"x" * 1000) for i in range(500)]):
            try:
                op()
            except (dbm_shm.error, KeyError):
                pass
    print("survived")
""")


@pytest.mark.parametrize("frac", [0.5, 0.01])
def test_file_shrunk_under_open_handle_does_not_crash(tmp_path, frac):
    def no_core():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    proc = subprocess.run([sys.executable, "-c", _SHRINK, str(tmp_path / "db"), str(frac)],
                          capture_output=True, text=True, timeout=120, preexec_fn=no_core)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-400:])
    assert "survived" in proc.stdout


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_error_does_not_change_file_mode(good, mode):
    os.chmod(good, mode)
    with pytest.raises(dbm_shm.error):
        dbm_shm.open(good, "cz")
    assert stat.S_IMODE(os.stat(good).st_mode) == mode
