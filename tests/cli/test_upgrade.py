"""``dbm-shm upgrade PATH`` and ``dbm_shm.upgrade``: a file of format 1
converted to the current format, read by the pure-Python reader
(dbm_shm/_upgrade.py) from a real format-1 file, tests/cli/data/format1.dshm
(made by data/make_format1.py with a build of format 1).

What a test can check depends on the built core's format (read from a file
it creates, not from the Python constant):

* core of format 2 or later: ``upgrade`` converts the fixture, and the result
  opens with ``dbm_shm.open`` and holds the same records; opening the
  fixture fails with the message that names the command;
* core of format 1 (before the format change lands): the fixture is of the
  current format, so ``upgrade`` says so and leaves it alone, and opening it
  works. The conversion itself is then run forced
  (``DBM_SHM_UPGRADE_FORCE=1``: a format-1 file rewritten in format 1, the
  same code path) so that the reader, the damage checks and the kill points
  are exercised either way.
"""

import fcntl
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

dbm_shm = pytest.importorskip("dbm_shm")

from dbm_shm import _errors, _upgrade  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "format1.dshm"
LAYOUT_H = Path(__file__).resolve().parents[2] / "csrc" / "dshm_layout.h"

sys.path.insert(0, str(DATA))
import format1_expected  # noqa: E402

sys.path.remove(str(DATA))

EXPECTED = format1_expected.expected()


def cli(*args, cwd, env=None):
    full = dict(os.environ)
    full.pop("DBM_SHM_UPGRADE_FORCE", None)
    full.pop("DBM_SHM_UPGRADE_KILL_AT", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "dbm_shm", *args], capture_output=True,
                          text=True, cwd=cwd, env=full, timeout=120)


@pytest.fixture(scope="module")
def core_format(tmp_path_factory):
    """The format of the files the built C core writes."""
    p = tmp_path_factory.mktemp("probe") / "probe.dshm"
    dbm_shm.open(str(p), "n").close()
    return struct.unpack_from("<I", p.read_bytes(), 8)[0]


@pytest.fixture
def conv_env(core_format):
    """Environment under which ``upgrade`` converts the fixture: none once
    the core's format is not 1; while it is, the conversion is forced."""
    return {"DBM_SHM_UPGRADE_FORCE": "1"} if core_format == 1 else {}


@pytest.fixture
def old(tmp_path):
    """A copy of the fixture, mode 640."""
    p = tmp_path / "old.dshm"
    shutil.copyfile(FIXTURE, p)
    os.chmod(p, 0o640)
    return p


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _contents(p):
    with dbm_shm.open(str(p), "r") as db:
        return dict(db.items())


# -- the format number ---------------------------------------------------------

def test_file_format_constant(core_format):
    """_FILE_FORMAT is DSHM_FORMAT of csrc/dshm_layout.h and the format of the
    files the built core writes."""
    assert _errors._FILE_FORMAT == core_format
    if LAYOUT_H.exists():   # (not in an installed copy of the tests)
        m = re.search(r"^#define\s+DSHM_FORMAT\s+(\d+)u?\b", LAYOUT_H.read_text(), re.M)
        assert m, "DSHM_FORMAT not found in csrc/dshm_layout.h"
        assert _errors._FILE_FORMAT == int(m.group(1)), \
            "dbm_shm/_errors.py _FILE_FORMAT must match DSHM_FORMAT in csrc/dshm_layout.h"


# -- the reader ----------------------------------------------------------------

def _header(p):
    return Path(p).read_bytes()[:4096]


def _buckets(data):
    """(primary bucket offsets in directory order, {primary: overflow pages})."""
    d = struct.unpack_from("<Q", data, 200)[0]
    off, depth = d & ~63, d & 63
    prim = []
    for (b,) in struct.iter_unpack("<Q", data[off:off + (8 << depth)]):
        if b not in prim:
            prim.append(b)
    chains = {}
    for b in prim:
        nxt, chain = struct.unpack_from("<Q", data, b + 8)[0], []
        while nxt:
            chain.append(nxt)
            nxt = struct.unpack_from("<Q", data, nxt + 8)[0]
        chains[b] = chain
    return prim, chains


def test_fixture_is_what_it_claims():
    data = FIXTURE.read_bytes()
    assert len(data) < 300 * 1024
    assert data[:8] == b"\x93DSHM\r\n\x1a" and struct.unpack_from("<I", data, 8)[0] == 1
    prim, chains = _buckets(data)
    assert len(prim) > 1, "split buckets"
    assert any(chains.values()), "an overflow chain"
    assert struct.unpack_from("<Q", data, 224)[0] == len(EXPECTED) == 300
    assert b"" in EXPECTED and b"" in EXPECTED.values()
    assert max(map(len, EXPECTED.values())) >= 100 * 1024


def test_reader_returns_the_records(old):
    before = _sha(old)
    assert _upgrade.read_format1(str(old)) == EXPECTED
    assert _sha(old) == before


def test_reader_refuses_another_format(old):
    data = bytearray(old.read_bytes())
    struct.pack_into("<I", data, 8, 7)
    old.write_bytes(bytes(data))
    with pytest.raises(dbm_shm.error, match=r"header byte 8: file format 7, not 1"):
        _upgrade.read_format1(str(old))


# -- the conversion --------------------------------------------------------------

def test_upgrade_cli(old, tmp_path, core_format, conv_env):
    before = _sha(old)
    r = cli("upgrade", "old.dshm", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    if core_format != 1:
        # The real conversion.
        assert r.stdout == f"old.dshm: converted 300 records from file format 1 to {core_format}\n"
        assert struct.unpack_from("<I", _header(old), 8)[0] == core_format
        assert _contents(old) == EXPECTED
        assert os.stat(old).st_mode & 0o7777 == 0o640
        assert not os.path.exists(str(old) + ".upgrade-tmp")
        r = cli("upgrade", "old.dshm", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"old.dshm: already file format {core_format}, the current one; nothing to do\n"
    else:
        # The fixture is of the current format: nothing to do, nothing changed.
        assert r.stdout == "old.dshm: already file format 1, the current one; nothing to do\n"
        assert _sha(old) == before
        assert _contents(old) == EXPECTED
        # The conversion, forced: the same path as a real format change.
        r = cli("upgrade", "old.dshm", cwd=tmp_path, env=conv_env)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "old.dshm: converted 300 records from file format 1 to 1\n"
        assert _sha(old) != before
        assert _contents(old) == EXPECTED
        assert os.stat(old).st_mode & 0o7777 == 0o640
        assert not os.path.exists(str(old) + ".upgrade-tmp")


def test_upgrade_api_keeps_owner(old, conv_env, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(old, 65534, 65534)
    for k, v in conv_env.items():
        monkeypatch.setenv(k, v)
    res = dbm_shm.upgrade(str(old))
    assert res.converted and res.old_format == 1 and res.records == 300
    assert res.new_format == _errors._FILE_FORMAT
    st = os.stat(old)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o640)
    assert _contents(old) == EXPECTED


def test_upgrade_refuses_a_file_in_use(old, tmp_path, conv_env):
    before = _sha(old)
    with open(old, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)   # what a format-1 handle holds
        r = cli("upgrade", "old.dshm", cwd=tmp_path, env=conv_env)
    assert r.returncode == 3
    assert r.stderr == ("dbm-shm: upgrade: old.dshm: another process has the file open (a handle "
                        "holds its lock); the upgrade needs the store quiescent: close every "
                        "handle on it, then run it again\n")
    assert _sha(old) == before
    assert not os.path.exists(str(old) + ".upgrade-tmp")


def test_upgrade_not_a_dbm_shm_file(tmp_path):
    (tmp_path / "x").write_bytes(b"hello" * 1000)
    r = cli("upgrade", "x", cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr == "dbm-shm: upgrade: x: not a dbm_shm file (no dbm_shm magic at byte 0)\n"
    r = cli("upgrade", "missing", cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr == "dbm-shm: upgrade: missing: No such file or directory\n"


# -- damage ------------------------------------------------------------------------

def _damage(p, how):
    data = bytearray(p.read_bytes())
    prim, chains = _buckets(bytes(data))
    if how == "truncated":
        del data[100000:]
        msg = r"truncated: the header \(byte 192\) says 196608 bytes, the file has 100000"
    elif how == "wild-slot":
        page = prim[1]
        s = next(s for s in range(252) if struct.unpack_from("<Q", data, page + 64 + 16 * s + 8)[0])
        at = page + 64 + 16 * s
        struct.pack_into("<Q", data, at + 8, 1 << 40)
        msg = (rf"bucket page at {page}, slot {s} \(at byte {at}\): record: offset {1 << 40} "
               rf"\(\+16 bytes\) is outside the file \[4096, 196608\)")
    elif how == "overflow-cycle":
        primary, chain = next((b, c) for b, c in chains.items() if c)
        struct.pack_into("<Q", data, chain[-1] + 8, chain[-1])
        msg = (rf"overflow chain of the bucket at {primary}: page {chain[-1]} is reached "
               r"twice \(a cycle, or pages shared\)")
    elif how == "wild-directory":
        d = struct.unpack_from("<Q", data, 200)[0] & ~63
        struct.pack_into("<Q", data, d, 12345 * 4096)
        msg = (rf"directory entry 0 \(at byte {d}\): bucket: offset {12345 * 4096} "
               r"\(\+4096 bytes\) is outside the file")
    elif how == "split-interrupted":
        struct.pack_into("<Q", data, 1760, 1)
        msg = (r"a bucket split was interrupted \(a writer died in the middle of a change\); "
               r"open it for writing once with the dbm_shm version that wrote it")
    else:  # pragma: no cover
        raise AssertionError(how)
    p.write_bytes(bytes(data))
    return msg


DAMAGE = ["truncated", "wild-slot", "overflow-cycle", "wild-directory", "split-interrupted"]


@pytest.mark.parametrize("how", DAMAGE)
def test_reader_names_the_damage(old, how):
    msg = _damage(old, how)
    with pytest.raises(dbm_shm.error, match=msg) as info:
        _upgrade.read_format1(str(old))
    assert str(info.value).startswith(f"upgrade: {old}: ")


@pytest.mark.parametrize("how", DAMAGE)
def test_upgrade_of_a_damaged_file_changes_nothing(old, tmp_path, conv_env, how):
    msg = _damage(old, how)
    before = _sha(old)
    r = cli("upgrade", "old.dshm", cwd=tmp_path, env=conv_env)
    assert r.returncode == 3, r.stdout
    assert r.stderr.startswith("dbm-shm: upgrade: old.dshm: "), r.stderr
    assert re.search(msg, r.stderr), r.stderr
    assert _sha(old) == before
    assert not os.path.exists(str(old) + ".upgrade-tmp")


# -- a killed upgrade ------------------------------------------------------------------

@pytest.mark.parametrize("point", ["after-write", "after-sync", "after-replace"])
def test_killed_upgrade_leaves_old_or_new_and_a_rerun_finishes(old, tmp_path, core_format,
                                                              conv_env, point):
    before = _sha(old)
    tmp = Path(str(old) + ".upgrade-tmp")
    r = cli("upgrade", "old.dshm", cwd=tmp_path,
            env={**conv_env, "DBM_SHM_UPGRADE_KILL_AT": point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    if point == "after-replace":
        # The complete new file is in place.
        assert not tmp.exists()
        assert struct.unpack_from("<I", _header(old), 8)[0] == core_format
        assert _contents(old) == EXPECTED
    else:
        # The old file, untouched; the unfinished new one beside it.
        assert _sha(old) == before
        assert tmp.exists()
        assert _upgrade.read_format1(str(old)) == EXPECTED
    r = cli("upgrade", "old.dshm", cwd=tmp_path, env=conv_env)
    assert r.returncode == 0, r.stderr
    if point == "after-replace" and core_format != 1:
        assert "already file format" in r.stdout
    else:
        assert f"converted 300 records from file format 1 to {core_format}" in r.stdout
    assert not tmp.exists()
    assert _contents(old) == EXPECTED
    assert os.stat(old).st_mode & 0o7777 == 0o640


# -- the open error ------------------------------------------------------------------

def _format1_message(path, fmt):
    return (f"open: {path}: written by dbm_shm file format 1; this version reads format "
            f"{fmt}; convert it with: dbm-shm upgrade {path}")


def test_open_error_names_the_upgrade(old, tmp_path, core_format, monkeypatch):
    if core_format != 1:
        # The real thing: the core refuses the file, the message says what to run.
        with pytest.raises(dbm_shm.error) as info:
            dbm_shm.open(str(old), "r")
        assert str(info.value) == _format1_message(old, core_format)
        assert info.value.code == _errors.lib.DSHM_VERSION_MISMATCH
        r = cli("get", "old.dshm", "key001", cwd=tmp_path)
        assert r.returncode == 3
        assert r.stderr == f"dbm-shm: get: {_format1_message('old.dshm', core_format)}\n"
    else:
        # The core reads format 1: the fixture opens. The message is built
        # for a core of format 2 from the same code, on the real file.
        assert _contents(old) == EXPECTED
        monkeypatch.setattr(_errors, "_FILE_FORMAT", 2)
        with pytest.raises(dbm_shm.error) as info:
            _errors.raise_for(_errors.lib.DSHM_VERSION_MISMATCH, "open", str(old))
        assert str(info.value) == _format1_message(old, 2)
        assert info.value.code == _errors.lib.DSHM_VERSION_MISMATCH


def test_open_error_quotes_the_path_for_the_shell(tmp_path, core_format, monkeypatch):
    p = tmp_path / "my store.dshm"
    shutil.copyfile(FIXTURE, p)
    if core_format == 1:
        monkeypatch.setattr(_errors, "_FILE_FORMAT", 2)
    with pytest.raises(dbm_shm.error) as info:
        _errors.raise_for(_errors.lib.DSHM_VERSION_MISMATCH, "open", str(p))
    assert str(info.value).endswith(f"convert it with: dbm-shm upgrade '{p}'")


def test_open_error_of_a_newer_file(old):
    """A file of a later format than this build's: the real open fails and
    says so."""
    newer = _errors._FILE_FORMAT + 1
    data = bytearray(old.read_bytes())
    struct.pack_into("<I", data, 8, newer)
    old.write_bytes(bytes(data))
    with pytest.raises(dbm_shm.error) as info:
        dbm_shm.open(str(old), "r")
    assert str(info.value) == (
        f"open: {old}: written by a newer dbm_shm (file format {newer}); this version reads "
        f"format {_errors._FILE_FORMAT}: open it with a version that reads format {newer}")
    assert info.value.code == _errors.lib.DSHM_VERSION_MISMATCH
