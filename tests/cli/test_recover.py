"""``dbm-shm recover DB [NEW]``: salvage a damaged store into a new one,
run as a subprocess (``python -m dbm_shm``)."""

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

dbm_shm = pytest.importorskip("dbm_shm")

DIR_FIELD = 200          # hd_dir (tests/fuzz/_fuzzlib.py HDR)
BK_KIND = 32             # bk_kind in a bucket page


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbm_shm", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def _build(path: Path, n: int = 2000) -> dict:
    data = {b"k%d" % i: b"v%d" % i * 5 for i in range(n)}
    with dbm_shm.open(str(path), "n") as db:
        db.update(data)
    return data


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_recover_clean_store_exit_0_default_name(tmp_path: Path) -> None:
    data = _build(tmp_path / "a.db")
    r = cli("recover", "a.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "a.db -> a.db.recovered: 2000 records copied" in r.stdout
    assert "bad pages skipped:   0" in r.stdout
    with dbm_shm.open(str(tmp_path / "a.db.recovered")) as db:
        assert dict(db.items()) == data and db.check() == []


def test_recover_damaged_store_exit_1(tmp_path: Path) -> None:
    src = tmp_path / "a.db"
    data = _build(src)
    b = bytearray(src.read_bytes())
    dirv = struct.unpack_from("<Q", b, DIR_FIELD)[0]
    page = struct.unpack_from("<Q", b, (dirv & ~63))[0]     # directory entry 0's bucket
    struct.pack_into("<I", b, page + BK_KIND, 0x1234)        # not a bucket page any more
    src.write_bytes(b)
    before = _sha(src)
    r = cli("recover", "a.db", "new.db", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad pages skipped:   1" in r.stdout
    assert _sha(src) == before
    with dbm_shm.open(str(tmp_path / "new.db")) as db:
        got = dict(db.items())
        assert db.check() == []
    assert 0 < len(got) < len(data)
    assert all(data[k] == v for k, v in got.items())
    assert f"{len(got)} records copied" in r.stdout


def test_recover_refuses_existing_new(tmp_path: Path) -> None:
    _build(tmp_path / "a.db", 10)
    (tmp_path / "a.db.recovered").write_bytes(b"keep me")
    r = cli("recover", "a.db", cwd=tmp_path)
    assert r.returncode == 2
    assert "exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "a.db.recovered").read_bytes() == b"keep me"
    r = cli("recover", "a.db", "a.db", "--force", cwd=tmp_path)
    assert r.returncode == 2 and "itself" in r.stderr
    r = cli("recover", "--force", "a.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "10 records copied" in r.stdout


def test_recover_not_a_store_or_missing(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("not a database\n")
    r = cli("recover", "t.txt", cwd=tmp_path)
    assert r.returncode == 3 and "DSHM_BAD_MAGIC" in r.stderr
    assert not (tmp_path / "t.txt.recovered").exists()
    r = cli("recover", "nope.db", cwd=tmp_path)
    assert r.returncode == 3
    assert not os.path.exists(tmp_path / "nope.db.recovered")
