"""Three process-crash leftovers, each shown with real processes and files.

1. A reader that never follows the path: an ``'n'`` open or a
   ``reorganize()`` killed between its ``rename()`` and marking the old
   file moved left every handle that only reads on the old file for ever.
   A handle now looks at its path at a bounded interval (and at every
   ``wait()`` wake-up and timeout) and follows it.
2. A put on a damaged file destroyed a healthy key: it found its slot, its
   first allocation rebuilt the free space (which drops wild slots and
   moves the entries behind them), and it then wrote the slot it had found
   before. The allocation now runs before the lookup.
3. A hang after truncation below one page: a writer waiting for the lock
   whose holder died with the file cut under the lock word slept for ever,
   deaf to Ctrl-C. Lock waits are now sliced: each slice looks at the file
   and at interrupts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dbm_shm

from _support import repair as R
from _support.helpers import make_value
from ._hardlib import clean_env

HD_SMALL_MAP = 304        # hd_small_map[2]
HD_SMALL = 320            # hd_small[DSHM_NSMALL]
NSMALL = 128


# ---------------------------------------------------------------------------
# 2. A put whose first allocation repairs the free space

def test_put_after_free_space_rebuild_keeps_its_neighbours(tmp_path):
    path = str(tmp_path / "s.dshm")
    model = R.populate(path, 2000)
    slot, _, wild_key, moved_key = R.displaced(path)
    R.write_u64(path, slot + 8, (1 << 47) - 16)   # slot s: a record far past the file
    # Every small free list claims a block at a misaligned offset: the
    # put's first allocation finds it damaged and rebuilds the free space,
    # which drops the wild slot and moves the entries behind it up.
    R.write_u64(path, HD_SMALL_MAP, (1 << 64) - 1)
    R.write_u64(path, HD_SMALL_MAP + 8, (1 << 64) - 1)
    for c in range(NSMALL):
        R.write_u64(path, HD_SMALL + 8 * c, 8)
    with dbm_shm.open(path, "w") as db:
        db[moved_key] = b"new value"
        assert db[moved_key] == b"new value"
    with dbm_shm.open(path, "r") as db:
        keys = db.keys()
        assert len(keys) == len(set(keys)), "a key is listed twice"
        assert db[moved_key] == b"new value"
        for k, (ver, size) in model.items():
            if k in (wild_key, moved_key):
                continue
            assert db[k] == make_value(k, ver, size), k
        assert wild_key not in db                  # its record is lost with the damage
        assert len(db) == len(model) - 1
        assert db.check() == []


# ---------------------------------------------------------------------------
# 3. A wait for the writer lock is bounded and interruptible

_FROZEN_WRITER = """
    import sys, dbm_shm
    with dbm_shm.open(sys.argv[1], "w") as db:
        db[b"frozen"] = b"x" * 100        # stops itself (SIGSTOP) holding the lock
"""

_WAITING_WRITER = """
    import json, sys, time, dbm_shm
    db = dbm_shm.open(sys.argv[1], "w")
    print("ready", flush=True)
    t0 = time.monotonic()
    try:
        db[b"waiter"] = b"y"
        out = "ok"
    except dbm_shm.error as e:
        out = getattr(e, "code", str(e))
    except KeyboardInterrupt:
        out = "KeyboardInterrupt"
    print(json.dumps({"out": out, "took": time.monotonic() - t0}), flush=True)
"""


def _wait_for(cond, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _freeze_a_writer(path):
    """A writer stopped (SIGSTOP) at put-written, holding the writer lock."""
    env = clean_env({"DSHM_CRASH_AT": "put-written:1", "DSHM_CRASH_SIGNAL": str(int(signal.SIGSTOP)),
                     "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    a = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_FROZEN_WRITER), path], env=env)
    _wait_for(lambda: _proc_state(a.pid) == "T", what="the writer to stop inside its put")
    assert R.lock_word(path) & 0x3fffffff, "the frozen writer holds the lock"
    return a


def _start_waiter(path):
    b = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WAITING_WRITER), path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    assert b.stdout.readline().strip() == b"ready"
    # It is asleep on the lock: its wait channel is a futex, or it has
    # been sleeping a while.
    _wait_for(lambda: _proc_state(b.pid) == "S", what="the waiter to sleep")
    time.sleep(0.3)
    return b


def _result(b, timeout=30):
    import json
    try:
        out, err = b.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        b.kill()
        out, err = b.communicate()
        raise AssertionError(f"the waiting writer never returned: {err.decode()[-2000:]}")
    assert b.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("size", [0, 100, 4095, 4096, 8191])
def test_waiter_returns_when_file_cut_under_the_lock(tmp_path, size):
    """Writer A holds the lock, writer B waits for it; the file is cut to
    `size` bytes and A dies. B answers (DSHM_TRUNCATED) instead of sleeping
    for ever on a lock word that is gone (or was zeroed) with the file."""
    path = str(tmp_path / "s.dshm")
    with dbm_shm.open(path, "n") as db:
        for i in range(3000):
            db[b"k%05d" % i] = b"v" * 200
    a = _freeze_a_writer(path)
    b = _start_waiter(path)
    try:
        os.truncate(path, size)
        a.kill()
        a.wait()
        res = _result(b)
    finally:
        a.kill()
        b.kill()
    assert res["out"] == -31012, res                    # DSHM_TRUNCATED
    for flag in ("r", "w"):                              # and to every later handle
        with pytest.raises(dbm_shm.error):
            with dbm_shm.open(path, flag) as db:
                db.get(b"k00001")
                db[b"k00001"]


def test_waiter_for_the_lock_is_interruptible(tmp_path):
    """Ctrl-C reaches a writer that waits for the lock of a live holder."""
    path = str(tmp_path / "s.dshm")
    with dbm_shm.open(path, "n") as db:
        db[b"a"] = b"1"
    a = _freeze_a_writer(path)
    b = _start_waiter(path)
    try:
        b.send_signal(signal.SIGINT)
        res = _result(b)
        assert res["out"] == "KeyboardInterrupt", res
        # The store is untouched: the holder goes on once it runs again.
        a.send_signal(signal.SIGCONT)
        assert a.wait(timeout=30) == 0
    finally:
        a.kill()
        b.kill()
    with dbm_shm.open(path, "r") as db:
        assert db[b"frozen"] == b"x" * 100
        assert b"waiter" not in db
        assert db.check() == []


# ---------------------------------------------------------------------------
# 1. A handle that only reads follows a path replaced without a mark

_READER = """
    import json, sys, threading, time, dbm_shm
    path, flag = sys.argv[1], sys.argv[2]
    db = dbm_shm.open(path, flag)
    waiter = dbm_shm.open(path, flag)
    woke = []
    def wait():
        woke.append(waiter.wait(since=waiter.commit_id()))   # no timeout
    t = threading.Thread(target=wait, daemon=True)
    t.start()
    assert db[b"a"] == b"old"
    print("ready", flush=True)
    sys.stdin.readline()                       # the path was replaced meanwhile
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < 20:
        if db.get(b"a") == b"new":
            seen = time.monotonic() - t0
            break
        time.sleep(0.005)
    t.join(20)
    print(json.dumps({"seen": seen, "woke": bool(woke) and not t.is_alive()}), flush=True)
"""

_KILLED_REPLACER = """
    import sys, dbm_shm
    path, how = sys.argv[1], sys.argv[2]
    if how == "n":
        dbm_shm.open(path, "n")                # killed at n-rename
    else:
        with dbm_shm.open(path, "w") as db:
            db.reorganize()                    # killed at reorganize-renamed
    sys.exit(3)
"""


@pytest.mark.parametrize("flag", ["r", "w"])
@pytest.mark.parametrize("how,point", [("n", "n-rename"), ("reorganize", "reorganize-renamed")])
def test_reader_follows_a_path_replaced_by_a_killed_writer(tmp_path, flag, how, point):
    path = str(tmp_path / "s.dshm")
    with dbm_shm.open(path, "n") as db:
        db[b"a"] = b"old"
        for i in range(500):
            db[b"k%d" % i] = b"v%d" % i
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_READER), path, flag],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env())
    try:
        assert reader.stdout.readline().strip() == b"ready"
        env = clean_env({"DSHM_CRASH_AT": point + ":1"})
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_REPLACER), path, how],
                           env=env, capture_output=True, timeout=60)
        assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
        assert R.read_u64(path, R.HD_MOVED) & 0xffffffff == 0   # the new file
        with dbm_shm.open(path, "w") as db:     # new openers write to the new file
            if how == "reorganize":
                assert db[b"a"] == b"old" and len(db) == 501
            db[b"a"] = b"new"
        reader.stdin.write(b"go\n")
        reader.stdin.flush()
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err.decode()[-2000:]
    import json
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res["seen"] is not None, "the reader never followed the path"
    assert res["woke"], "the waiter on the old file was never woken"


# ---------------------------------------------------------------------------
# Found by CI: an open racing a growth read the header after the size

_GROWER = """
    import sys, time, dbm_shm
    with dbm_shm.open(sys.argv[1], "w") as db:
        print("go", flush=True)
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < 3:
            db[b"g%07d" % i] = b"x" * 3000      # the file grows every few puts
            i += 1
"""


def test_open_while_another_process_grows_the_file(tmp_path):
    path = str(tmp_path / "s.dshm")
    dbm_shm.open(path, "n").close()
    g = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_GROWER), path],
                         stdout=subprocess.PIPE, env=clean_env())
    try:
        assert g.stdout.readline().strip() == b"go"
        opens = 0
        while g.poll() is None:
            with dbm_shm.open(path, "r") as db:   # never "truncated": the file only grows
                db.get(b"g0000000")
            opens += 1
        assert g.returncode == 0 and opens > 100, (g.returncode, opens)
    finally:
        g.kill()
