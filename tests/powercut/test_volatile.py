"""A store on tmpfs keeps no commit periods; brought to a disk, it is
committed at its first open there and then protected like any other.

On tmpfs nothing outlives the kernel, so a commit there has nothing to make
durable: the store marks itself volatile (``hd_volatile``), frees what
waited for the next commit, and from then on changes records and pages in
place (no copy on write, no space held for a commit). A copy of it on a
disk opens as it was copied, whatever the boot (its metas are stale: no
restore from them); the first writable opener commits it, and from then
on the power-loss protocol holds.
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

import dbm_shm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HD_VOLATILE = 1912   # offset of hd_volatile in the header page (docs/file-format.md)


def _tmpfs_dir():
    for d in ("/dev/shm", "/run/shm"):
        if os.path.isdir(d) and os.access(d, os.W_OK):
            out = subprocess.run(["stat", "-f", "-c", "%T", d], capture_output=True, text=True).stdout.strip()
            if out == "tmpfs":
                return d
    return None


TMPFS = _tmpfs_dir()
pytestmark = pytest.mark.skipif(TMPFS is None, reason="no writable tmpfs (/dev/shm) on this machine")


def _disk(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()
    return out not in ("tmpfs", "ramfs")


def volatile_flag(path):
    with open(path, "rb") as f:
        f.seek(HD_VOLATILE)
        return struct.unpack("<Q", f.read(8))[0]


@pytest.fixture
def shm_dir():
    d = tempfile.mkdtemp(prefix="dshm-volatile-", dir=TMPFS)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_overwrites_after_a_commit_on_tmpfs_reuse_space(shm_dir):
    path = os.path.join(shm_dir, "db")
    with dbm_shm.open(path, "n") as db:
        for i in range(3000):
            db[b"k%d" % i] = b"v" * 1000
    assert volatile_flag(path) == 1
    with dbm_shm.open(path, "w") as db:
        top = db.stats()["top"]
        db.sync()
        for rnd in range(3):
            for i in range(3000):
                db[b"k%d" % i] = b"w%d" % rnd * 300
            db.sync() if rnd == 1 else None
        # Each record's old copy was freed at once: nothing waits for a commit.
        assert db.stats()["top"] <= top * 1.05
        assert db.check() == []


def test_a_tmpfs_store_copied_to_a_disk_opens_as_copied_after_a_reboot(shm_dir, tmp_path):
    if not _disk(tmp_path):
        pytest.skip("the temporary directory is on tmpfs: no disk to copy to")
    src = os.path.join(shm_dir, "db")
    with dbm_shm.open(src, "n") as db:
        for i in range(2000):
            db[b"k%d" % i] = b"%d" % i * 50
        db.sync()
        for i in range(2000, 2500):   # after the last commit: kept all the same
            db[b"k%d" % i] = b"%d" % i * 50
    dst = tmp_path / "db"
    shutil.copyfile(src, dst)
    # Opened "after a reboot": its metas are stale, it is not restored from them.
    code = ("import sys, dbm_shm\n"
            "with dbm_shm.open(sys.argv[1], 'w') as db:\n"
            "    assert len(db) == 2500 and db[b'k2499'] == b'2499' * 50, len(db)\n"
            "    assert db.check() == [], db.check()\n"
            "    db[b'after'] = b'1'\n"
            "    db.sync()\n"
            "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=REPO, DSHM_TEST_BOOT_ID="another-boot")
    r = subprocess.run([sys.executable, "-c", code, str(dst)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert volatile_flag(dst) == 0   # committed at its first open on the disk
    # From then on the protocol holds: the committed image survives a
    # "reboot" that finds later writes torn away.
    synced = dst.read_bytes()
    with dbm_shm.open(dst, "w") as db:
        db[b"unsynced"] = b"x"
    dst.write_bytes(synced)
    env["DSHM_TEST_BOOT_ID"] = "a-third-boot"
    code2 = ("import sys, dbm_shm\n"
             "with dbm_shm.open(sys.argv[1], 'w') as db:\n"
             "    print(len(db), db.get(b'after'), db.get(b'unsynced'), db.check())\n")
    r = subprocess.run([sys.executable, "-c", code2, str(dst)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(None, 1)[0] == "2501" and "b'1' None []" in r.stdout


def test_a_disk_store_brought_to_tmpfs_becomes_volatile(shm_dir, tmp_path):
    src = tmp_path / "db"
    with dbm_shm.open(src, "n") as db:
        for i in range(500):
            db[b"k%d" % i] = b"v" * 200
    if _disk(tmp_path):
        assert volatile_flag(src) == 0
    dst = os.path.join(shm_dir, "db")
    shutil.copyfile(src, dst)
    with dbm_shm.open(dst, "w") as db:
        db[b"k1"] = b"new"
    assert volatile_flag(dst) == 1      # its close() marked it
    with dbm_shm.open(dst, "r") as db:
        assert len(db) == 500 and db[b"k1"] == b"new"
        assert db.check() == []
