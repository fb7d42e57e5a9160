"""The restore after a power loss is restartable, and check() holds the
commit protocol to account.

A file last opened under another boot opens at its newest valid commit
(csrc/dshm_commit.c, ``dshm_restore``). The tests run "after the reboot"
by giving the opener another kernel boot id (``DSHM_TEST_BOOT_ID``). The
restorer is killed at each step of the restore, and inside the free-space
rebuild it runs; the next opener must finish it from what is in the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, Optional

import pytest

import dbm_shm

REBOOT = "restore-test-reboot"
HD_SMALL = 320            # hd_small[0] (docs/file-format.md)
HD_SMALL_MAP = 304        # hd_small_map[0]
META_AT = 3072            # the two commit metas: sectors 6 and 7 of the header page

_OPEN = """
import json, sys, dbm_shm
with dbm_shm.open(sys.argv[1], sys.argv[2]) as db:
    print(json.dumps({"items": {k.hex(): v.hex() for k, v in db.items()}, "check": db.check()}))
"""


def _run(path: Path, flag: str, boot: str, crash_at: Optional[str] = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DSHM_CRASH_AT"}
    env["DSHM_TEST_BOOT_ID"] = boot
    if crash_at:
        env["DSHM_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", _OPEN, str(path), flag], capture_output=True, env=env,
                          timeout=120)


def _image_after_writes(tmp_path: Path) -> tuple[Path, Dict[bytes, bytes]]:
    """A store with 3,000 keys synced, then changed (overwrites, deletes,
    new keys: copies on write, frees waiting for the next commit, a split)
    without a sync; its file as a process left it. Returns (path, the
    synced model)."""
    path = tmp_path / "db"
    model = {b"k%05d" % i: b"v%d" % i * (i % 40) for i in range(3000)}
    db = dbm_shm.open(str(path), "n")
    db.update(model)
    db.sync()
    for i in range(0, 3000, 7):
        db[b"k%05d" % i] = b"changed" * 30
    for i in range(1, 3000, 11):
        del db[b"k%05d" % i]
    for i in range(2000):
        db[b"new%05d" % i] = b"n" * (i % 300)
    data = path.read_bytes()       # before close(), which would commit
    db.close()
    path.write_bytes(data)
    return path, model


def _items(r: subprocess.CompletedProcess) -> Dict[bytes, bytes]:
    import json
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["check"] == [], res["check"]
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in res["items"].items()}


def test_open_after_reboot_goes_back_to_the_last_commit(tmp_path):
    path, model = _image_after_writes(tmp_path)
    assert _items(_run(path, "w", REBOOT)) == model
    # Restored once: this boot trusts the file now, and it writes on from there.
    with dbm_shm.open(str(path), "w") as db:   # (this process: the real boot id)
        pass
    assert _items(_run(path, "r", REBOOT)) == model


def test_same_boot_keeps_what_was_not_synced(tmp_path):
    """A killed process (same boot) loses nothing: the page cache held it."""
    path, model = _image_after_writes(tmp_path)
    with dbm_shm.open(str(path), "r") as db:
        assert len(db) == 3000 - len(range(1, 3000, 11)) + 2000
        assert db[b"k00007"] == b"changed" * 30
        assert db.check() == []


@pytest.mark.parametrize("point", ["restore-pages", "restore-space", "repair-space-reset"])
def test_restorer_killed_is_finished_by_the_next_opener(tmp_path, point):
    path, model = _image_after_writes(tmp_path)
    killed = _run(path, "w", REBOOT, crash_at=f"{point}:1")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr.decode()[-2000:])
    # And the next restorer killed at the same point again, then one that finishes.
    again = _run(path, "w", REBOOT, crash_at=f"{point}:1")
    assert again.returncode == -signal.SIGKILL
    assert _items(_run(path, "w", REBOOT)) == model


@pytest.fixture
def shared_dir():
    """A directory 'nobody' can enter (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="dshm-restore-")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d)


def test_read_only_opener_after_reboot(shared_dir):
    """A handle that may not write the file cannot restore it: a file
    changed since its last commit is refused with a clear error, and opens
    once a writer restored it; one that is as committed opens as it is."""
    path, model = _image_after_writes(shared_dir)
    os.chmod(path, 0o444)
    code = textwrap.dedent("""
        import os, sys, dbm_shm
        os.setgid(65534); os.setuid(65534)
        try:
            with dbm_shm.open(sys.argv[1], "r") as db:
                print("opened", len(db))
        except dbm_shm.error as e:
            print("error", e.code)
    """)
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to a user who cannot write the file")
    env = dict(os.environ, DSHM_TEST_BOOT_ID=REBOOT)
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, env=env, timeout=60)
    assert r.stdout.decode().split() == ["error", str(-31005)], r   # DSHM_NEED_RECOVERY
    os.chmod(path, 0o644)
    assert _items(_run(path, "w", REBOOT)) == model
    os.chmod(path, 0o444)
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                       env=dict(os.environ, DSHM_TEST_BOOT_ID="a third boot"), timeout=60)
    assert r.stdout.decode().split() == ["opened", str(len(model))], r


def test_check_reports_committed_data_on_a_free_list(tmp_path):
    """check() is not clean on a file whose free space holds what the last
    commit references (the next allocation would overwrite it before the
    next commit)."""
    path = tmp_path / "db"
    with dbm_shm.open(str(path), "n") as db:
        for i in range(100):
            db[b"k%03d" % i] = b"x" * 20
        db.sync()
        assert db.check() == []
    raw = bytearray(path.read_bytes())
    (dirv,) = struct.unpack_from("<Q", raw, 200)
    bucket = struct.unpack_from("<Q", raw, dirv & ~63)[0]
    rec = next(r for s in range(252) if (r := struct.unpack_from("<Q", raw, bucket + 64 + 16 * s + 8)[0]))
    # Put that record (a 64-byte block: class 3) on a free list, as a bug
    # that freed it before the next commit would.
    struct.pack_into("<Q", raw, HD_SMALL + 8 * 3, rec)
    struct.pack_into("<QQ", raw, rec, 64, 0)          # fr_size, fr_next
    struct.pack_into("<Q", raw, HD_SMALL_MAP, struct.unpack_from("<Q", raw, HD_SMALL_MAP)[0] | 1 << 3)
    path.write_bytes(bytes(raw))
    with dbm_shm.open(str(path), "w") as db:   # the writer lock: a stable view (nothing repaired here)
        problems = db.check()
    assert any("could be reused before the next commit" in p for p in problems), problems


def test_check_reports_a_file_without_a_valid_commit(tmp_path):
    path = tmp_path / "db"
    with dbm_shm.open(str(path), "n") as db:
        db[b"a"] = b"1"
        db.sync()
    raw = bytearray(path.read_bytes())
    raw[META_AT:META_AT + 1024] = bytes(1024)
    path.write_bytes(bytes(raw))
    with dbm_shm.open(str(path), "r") as db:
        assert db[b"a"] == b"1"
        assert any("no valid commit meta" in p for p in db.check())
    # After a reboot there is nothing to go back to: refused, not guessed.
    r = _run(path, "w", REBOOT)
    assert r.returncode != 0 and b"DSHM_CORRUPT" in r.stderr


def test_writer_waits_for_the_restore_while_a_reader_has_the_file(tmp_path):
    """After a reboot a read-only opener may read a file that is as its last
    commit left it, without a restore; a writer that opens it meanwhile
    (not alone with it, so it cannot restore) is refused rather than trust
    free lists of the other boot; alone with it, it restores."""
    path = tmp_path / "db"
    with dbm_shm.open(str(path), "n") as db:
        for i in range(500):
            db[b"k%03d" % i] = b"v" * i
    env = dict(os.environ, DSHM_TEST_BOOT_ID=REBOOT)
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, dbm_shm
        db = dbm_shm.open(sys.argv[1], "r")
        print(len(db), flush=True)
        sys.stdin.readline()
        db.close()
    """), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert reader.stdout.readline().strip() == b"500"
        r = _run(path, "w", REBOOT)
        assert r.returncode != 0 and b"DSHM_NEED_RECOVERY" in r.stderr, r.stderr.decode()[-500:]
    finally:
        reader.communicate(b"\n", timeout=60)
    assert len(_items(_run(path, "w", REBOOT))) == 500
