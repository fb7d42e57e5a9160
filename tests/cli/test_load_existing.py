"""dbm-shm load into an existing store: the merged store is built beside it
under its writer lock and put in its place (dshm_txn_replace). Handles open
before follow it; a writer blocked meanwhile commits to the new file (no
write lost); a failed load leaves the file, its inode and its records."""

import os
import subprocess
import sys
import threading
import time

import pytest

import dbm_shm
from dbm_shm import _dumpfmt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dbm_shm", *map(str, args)], env=env,
                          capture_output=True, timeout=300)


def make_dump(path, items):
    with open(path, "wb") as fp:
        _dumpfmt.write_dump(fp, items, filename="x")


def test_open_handles_follow_and_keep_writing(tmp_path):
    db_path = tmp_path / "s.db"
    with dbm_shm.open(str(db_path), "c") as db:
        db.update({b"old%d" % i: b"v" for i in range(100)})
    mode = 0o640
    os.chmod(db_path, mode)
    make_dump(tmp_path / "d.dump", [(b"new%d" % i, b"w") for i in range(1000)])
    held = dbm_shm.open(str(db_path), "w")
    reader = dbm_shm.open(str(db_path), "r")
    r = run("load", tmp_path / "d.dump", db_path)
    assert r.returncode == 0, r.stderr
    assert reader[b"new999"] == b"w" and reader[b"old0"] == b"v"
    held[b"after"] = b"1"  # lands in the new file
    held.close()
    reader.close()
    with dbm_shm.open(str(db_path), "r") as db:
        assert len(db) == 1101 and db[b"after"] == b"1"
    assert os.stat(db_path).st_mode & 0o777 == mode
    assert [n for n in os.listdir(tmp_path) if n.endswith(".load")] == []


def test_failed_load_changes_nothing(tmp_path):
    db_path = tmp_path / "s.db"
    with dbm_shm.open(str(db_path), "c") as db:
        db.update({b"k%d" % i: b"v" for i in range(100)})
    ino = os.stat(db_path).st_ino
    make_dump(tmp_path / "d.dump", [(b"n%d" % i, b"w") for i in range(50)] + [(b"k7", b"x")])
    r = run("load", tmp_path / "d.dump", db_path)
    assert r.returncode == 3
    assert b"1 key(s) of the dump are already in" in r.stderr and b"k7" in r.stderr
    assert os.stat(db_path).st_ino == ino
    with dbm_shm.open(str(db_path), "r") as db:
        assert len(db) == 100 and db[b"k7"] == b"v"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".load")] == []


def test_duplicates_in_the_dump_are_counted(tmp_path):
    db_path = tmp_path / "s.db"
    dbm_shm.open(str(db_path), "c").close()
    make_dump(tmp_path / "d.dump", [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"b", b"3")])
    r = run("load", tmp_path / "d.dump", db_path)
    assert r.returncode == 3 and b"2 key(s) appear more than once" in r.stderr
    r = run("load", "--replace", tmp_path / "d.dump", db_path)
    assert r.returncode == 0, r.stderr
    with dbm_shm.open(str(db_path), "r") as db:
        assert dict(db.items()) == {b"a": b"2", b"b": b"3"}


def test_no_write_is_lost_while_a_load_runs(tmp_path):
    """A writer in another thread keeps writing while the load runs: every
    write it made is in the store after (it waited for the lock, then
    followed the new file)."""
    db_path = tmp_path / "s.db"
    dbm_shm.open(str(db_path), "c").close()
    make_dump(tmp_path / "d.dump", [(b"n%06d" % i, b"x" * 50) for i in range(100_000)])
    stop = threading.Event()
    written = []

    def writer():
        with dbm_shm.open(str(db_path), "w") as db:
            i = 0
            while not stop.is_set():
                db[b"w%d" % i] = b"1"
                written.append(i)
                i += 1
                time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.05)
        r = run("load", tmp_path / "d.dump", db_path)
        time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    with dbm_shm.open(str(db_path), "r") as db:
        assert len(db) == 100_000 + len(written)
        assert all(db.get(b"w%d" % i) == b"1" for i in written)


def test_killed_between_rename_and_mark(tmp_path):
    """Killed right after renaming the new store over the path, before
    marking the old file moved: the next writer on the old file repairs,
    sees the path naming another file and follows it; nothing is lost."""
    db_path = tmp_path / "s.db"
    with dbm_shm.open(str(db_path), "c") as db:
        db.update({b"old%d" % i: b"v" for i in range(100)})
    make_dump(tmp_path / "d.dump", [(b"new%d" % i, b"w") for i in range(500)])
    held = dbm_shm.open(str(db_path), "w")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               DSHM_CRASH_AT="txn-replace-renamed:1")
    r = subprocess.run([sys.executable, "-m", "dbm_shm", "load", str(tmp_path / "d.dump"),
                        str(db_path)], env=env, capture_output=True, timeout=300)
    assert r.returncode == -9, r.stderr
    held[b"after"] = b"1"
    assert held[b"new499"] == b"w"
    held.close()
    with dbm_shm.open(str(db_path), "r") as db:
        assert len(db) == 601 and db[b"after"] == b"1" and db[b"old0"] == b"v"
        assert db.check() == []


def test_txn_replace_refusals(tmp_path):
    import errno
    from dbm_shm._dshm import lib
    db_path, other, new = tmp_path / "s.db", tmp_path / "o.db", tmp_path / "n.db"
    for p in (db_path, other, new):
        with dbm_shm.open(str(p), "c") as db:
            db[p.name.encode()] = b"1"
    with dbm_shm.open(str(db_path), "w") as db:
        assert lib.dshm_txn_replace(db._h, os.fsencode(new)) == lib.DSHM_INVALID  # no transaction
        assert lib.dshm_txn_begin(db._h, -1) == 0
        os.replace(other, db_path)  # the path now names another store
        assert lib.dshm_txn_replace(db._h, os.fsencode(new)) == -errno.ESTALE
        assert new.exists()          # nothing renamed
        db[b"x"] = b"y"              # and the lock went
    with dbm_shm.open(str(db_path), "r") as db:
        assert list(db.keys()) == [b"o.db"]


def test_counts_and_replace_into_a_filled_store(tmp_path):
    db_path = tmp_path / "s.db"
    with dbm_shm.open(str(db_path), "c") as db:
        db.update({b"k%d" % i: b"old" for i in range(10)})
    items = [(b"k7", b"a"), (b"n1", b"b"), (b"k7", b"c"), (b"k8", b"d")]
    make_dump(tmp_path / "d.dump", items)
    r = run("load", tmp_path / "d.dump", db_path)  # duplicates come first, counted once
    assert r.returncode == 3 and b"1 key(s) appear more than once" in r.stderr, r.stderr
    make_dump(tmp_path / "e.dump", [kv for kv in items if kv != (b"k7", b"c")])
    r = run("load", tmp_path / "e.dump", db_path)
    assert r.returncode == 3 and b"2 key(s) of the dump are already in" in r.stderr, r.stderr
    r = run("load", "--replace", tmp_path / "d.dump", db_path)
    assert r.returncode == 0, r.stderr
    with dbm_shm.open(str(db_path), "r") as db:
        want = {b"k%d" % i: b"old" for i in range(10)}
        want.update({b"k7": b"c", b"n1": b"b", b"k8": b"d"})
        assert dict(db.items()) == want


def test_through_a_symlink_the_target_is_replaced(tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "s.db"
    with dbm_shm.open(str(real), "c") as db:
        db[b"a"] = b"1"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    make_dump(tmp_path / "d.dump", [(b"b", b"2")])
    r = run("load", tmp_path / "d.dump", link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink()
    with dbm_shm.open(str(real), "r") as db:
        assert dict(db.items()) == {b"a": b"1", b"b": b"2"}
    assert [n for n in os.listdir(tmp_path / "real") if n.endswith(".load")] == []
