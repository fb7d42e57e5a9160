"""``dshm_put(..., DSHM_TRY)``: the put the fast path makes with the GIL held.

It never waits: where a put would wait or take long (the writer lock held
by a live process, a repair owed, a handle that syncs every write) it
answers DSHM_BUSY and has changed nothing; the full put then does the
work. Called here through cffi on a real file, against a real writer
process frozen (SIGSTOP) or killed (SIGKILL) inside an insert by the crash
hook.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import dbm_shm
from dbm_shm._dshm import ffi, lib

_WRITER = textwrap.dedent("""
    import sys, dbm_shm
    with dbm_shm.open(sys.argv[1], "w") as db:
        db[b"writer-key"] = b"v" * 10
""")


def _put(db, key, value, flags):
    return lib.dshm_put(db._h, key, len(key), value, len(value), flags)


def _seeded(path, n=20):
    with dbm_shm.open(path, "c") as db:
        for i in range(n):
            db[b"k%d" % i] = b"x"


def _writer_stopped_at_insert(path, sig):
    env = dict(os.environ, DSHM_CRASH_AT="insert:1", DSHM_CRASH_SIGNAL=str(int(sig)))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path], env=env)
    _, status = os.waitpid(writer.pid, os.WUNTRACED)
    return writer, status


def test_try_answers_busy_while_a_live_writer_holds_the_lock(tmp_path):
    path = str(tmp_path / "db")
    _seeded(path)
    writer, status = _writer_stopped_at_insert(path, signal.SIGSTOP)
    try:
        assert os.WIFSTOPPED(status), f"the writer did not stop at its insert: status {status:#x}"
        with dbm_shm.open(path, "w") as db:
            assert _put(db, b"try-key", b"t", lib.DSHM_TRY) == lib.DSHM_BUSY
            assert _put(db, b"k1", b"changed", lib.DSHM_TRY) == lib.DSHM_BUSY
            writer.kill()
            writer.wait(30)
            # The lock is free now (its holder died): the try still does not
            # run the repair it owes, the full put does.
            assert _put(db, b"try-key", b"t", lib.DSHM_TRY) == lib.DSHM_BUSY
            db[b"set-key"] = b"s"
            assert _put(db, b"try-key", b"t", lib.DSHM_TRY) == 0
            assert db[b"try-key"] == b"t"
            assert db[b"k1"] == b"x"
            assert db.check() == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_try_answers_busy_with_a_repair_owed(tmp_path):
    path = str(tmp_path / "db")
    _seeded(path)
    writer, status = _writer_stopped_at_insert(path, signal.SIGKILL)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    with dbm_shm.open(path, "w") as db:
        # The open may already have repaired (it takes the lock of a dead
        # holder); if it did not, the try must leave the repair alone.
        rc = _put(db, b"try-key", b"t", lib.DSHM_TRY)
        assert rc in (0, lib.DSHM_BUSY)
        if rc == lib.DSHM_BUSY:
            db[b"try-key"] = b"t"
        assert db[b"try-key"] == b"t"
        assert db.check() == []
        assert sorted(k for k in db.keys() if k.startswith(b"k")) == sorted(b"k%d" % i for i in range(20))


def test_try_answers_busy_on_a_syncing_handle(tmp_path):
    path = str(tmp_path / "db")
    _seeded(path)
    with dbm_shm.open(path, "ws") as db:
        assert _put(db, b"try-key", b"t", lib.DSHM_TRY) == lib.DSHM_BUSY
        assert b"try-key" not in db
        db[b"try-key"] = b"t"           # the fast path's full put, GIL released
        assert db[b"try-key"] == b"t"


def test_try_keeps_the_other_flags_and_checks(tmp_path):
    path = str(tmp_path / "db")
    _seeded(path)
    with dbm_shm.open(path, "w") as db:
        assert _put(db, b"k1", b"y", lib.DSHM_TRY | lib.DSHM_NOOVERWRITE) == lib.DSHM_KEYEXIST
        assert _put(db, b"new", b"y", lib.DSHM_TRY | lib.DSHM_NOOVERWRITE) == 0
        assert _put(db, b"bad", b"y", 0x100) == lib.DSHM_INVALID
        assert db[b"new"] == b"y" and db[b"k1"] == b"x" and b"bad" not in db
    with dbm_shm.open(path, "r") as db:
        assert _put(db, b"x", b"y", lib.DSHM_TRY) == lib.DSHM_READONLY
    db = dbm_shm.open(path, "w")
    db.close()
    assert _put(db, b"x", b"y", lib.DSHM_TRY) == lib.DSHM_CLOSED
