"""Regression tests for the six causes of issue 13 (recovery that survives
its own crash), one each; numbers are the issue's.

1. a repair killed inside dshm_index_rebuild_page loses the bucket's keys;
2. an 'n' open killed between rename() and mark_moved() splits the store;
3. a kill between dshm_mutex_probe's unlock and hd_repair = 1 loses the
   owed repair;
4. a repair that fails leaves hd_struct_seq even over a half-applied batch;
5. dropping a damaged slot breaks the probe chain (no backward shift); a
   record with impossible lengths is followed;
6. a SIGBUS inside refresh() leaves db_lock held: close() deadlocks.
"""

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

import dbm_shm
from _support import child_env
from _support import repair as R

DSHM_NEED_RECOVERY = -31005
from _support.helpers import CrashChild, apply_op, make_value

REPO = HERE.parent.parent


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    monkeypatch.setenv("DSHM_TEST_SEED", "5eed0123456789ab")


def test_header_offsets(tmp_path):
    """The offsets _support/repair.py pokes at are those of this build's layout."""
    p = str(tmp_path / "s.dshm")
    with dbm_shm.open(p, "n") as db:
        db[b"a"] = b"1"
        db[b"b"] = b"2"
        st = db.stats()
    assert R.read_u64(p, R.HD_COUNT) == 2
    assert R.read_u64(p, R.HD_FILE_SIZE) == st["file_size"] == os.path.getsize(p)
    assert R.read_u64(p, R.HD_STRUCT_SEQ) % 2 == 0
    assert R.read_u64(p, R.HD_MOVED) & 0xffffffff == 0
    assert R.read_u64(p, R.HD_REPAIR) == 0 and R.read_u64(p, R.HD_BATCH) == 0


def _killed_insert(path, tmp_path, point="insert:500", scenario="grow"):
    """A store whose writer died inside a bucket's odd window (insert)."""
    before = R.populate(path, 2000)
    child = CrashChild(path, scenario, seed=11, run=1, nops=50_000, crash_at=point,
                       errfile=tmp_path / "child.err")
    code, log = child.finish(120)
    assert code == -9, child.stderr()
    model = dict(before)
    for op in log.acked:
        apply_op(model, op)
    after = dict(model)
    apply_op(after, log.inflight)
    return [model, after]


def test_cause1_rebuild_killed_loses_nothing(tmp_path):
    path = str(tmp_path / "s.dshm")
    cands = _killed_insert(path, tmp_path)
    r = R.repairer(path, "open", "repair-rebuild:1")
    assert R.killed(r), f"repairer not killed in the rebuild: {r.returncode} {r.stderr[-2000:]}"
    res = R.final_repair(path, cands, tmp_path)
    R.assert_final(res)


def test_cause3_probe_killed_keeps_the_owed_repair(tmp_path):
    path = str(tmp_path / "s.dshm")
    # A delete dies inside its bucket's odd window before it touches the
    # allocator: nothing but the lock tells the next holder a repair is owed.
    cands = _killed_insert(path, tmp_path, "remove:200", "delete")
    rec0 = R.read_u64(path, R.HD_RECOVERIES)
    r = R.repairer(path, "open", "repair-probe:1")
    assert R.killed(r), f"repairer not killed at the probe: {r.returncode} {r.stderr[-2000:]}"
    res = R.final_repair(path, cands, tmp_path)
    # The interrupted bucket's odd counter is only closed by a repair: the
    # next opener must run one.
    assert res["recoveries"] == rec0 + 1, "the owed repair was lost: nobody repaired the odd bucket"
    R.assert_final(res)


def test_cause2_n_killed_after_rename_no_split_brain(tmp_path):
    path = str(tmp_path / "s.dshm")
    with dbm_shm.open(path, "n") as db:
        db[b"old"] = b"1"
    held = dbm_shm.open(path, "w")   # keeps the old file open, and writing
    try:
        r = R.run_script(["n-open", path], crash_at="n-rename:1")
        assert R.killed(r), f"'n' open not killed at n-rename: {r.returncode} {r.stderr[-2000:]}"
        held[b"x"] = b"after"          # must land in the store the path names
        assert held.get(b"x") == b"after"
    finally:
        held.close()
    with dbm_shm.open(path, "r") as db:
        assert db.get(b"x") == b"after", "a write through an open handle went to the replaced file"
        assert db.get(b"old") is None, "'n' left the old contents"


def test_cause4_failed_repair_leaves_struct_seq_odd(tmp_path):
    path = str(tmp_path / "s.dshm")
    before = R.populate(path, 2000)
    r = R.batch_writer(path, "batch-apply:450")
    assert R.killed(r), r.stderr[-2000:]
    # Damage a journal entry the dead writer had not applied yet: its
    # record's hash tag no longer matches, so re-applying it fails.
    jr = R.read_u64(path, R.HD_BATCH)
    assert jr
    n = R.read_u64(path, jr + 24)
    ent = R.read_u64(path, jr + 32 + 8 * (n - 1))
    rec = ent & ~1
    with open(path, "r+b") as f:
        f.seek(rec + 4)
        tag = struct.unpack("<I", f.read(4))[0]
        f.seek(rec + 4)
        f.write(struct.pack("<I", tag ^ 0x5a5a5a5a))
    r = R.repairer(path, "open", None)
    assert r.returncode != 0, "the repair of a damaged journal cannot succeed"
    assert R.read_u64(path, R.HD_STRUCT_SEQ) % 2 == 1, (
        "a failed repair left hd_struct_seq even over a half-applied batch")
    # Readers see all of the batch or none of it, or are told to repair:
    # with hd_struct_seq left odd no lock-free read validates, and the
    # read-only handle's locked try finds the repair owed.
    after = R.apply_batch(before)
    keys = sorted(set(before) | set(after))
    with dbm_shm.open(path, "r") as db:
        with pytest.raises(dbm_shm.error) as ei:
            db.get_many(keys)
        assert ei.value.code == DSHM_NEED_RECOVERY, ei.value
        for k in keys[:50]:                       # single gets too: none reads half a state
            with pytest.raises(dbm_shm.error) as ei:
                db[k]
            assert ei.value.code == DSHM_NEED_RECOVERY, (k, ei.value)


def _displaced_slot(path):
    """(slot offset, slot index) of an occupied slot s whose successor s+1
    is occupied by an entry whose home is not s+1 (it probed past s)."""
    return R.displaced(path)[:2]


def test_cause5_dropped_slot_keeps_probe_chain(tmp_path):
    path = str(tmp_path / "s.dshm")
    model = R.populate(path, 2000)
    slot, _ = _displaced_slot(path)
    R.write_u64(path, slot + 8, (1 << 47) - 16)    # a record offset far past the file
    R.write_u64(path, R.HD_REPAIR, 1)
    with dbm_shm.open(path, "w") as db:
        db[R.PROBE] = b"p"                          # the lock runs the repair
        assert db.check() == []
        keys = [k for k in db.keys() if k != R.PROBE]
        assert len(keys) == len(set(keys)) == len(model) - 1   # only the damaged slot is lost
        missing = [k for k in keys if db.get(k) is None]
        assert not missing, f"listed by keys() but not found by get: {missing[:5]}"
        for k in keys:                               # setting again makes no duplicate
            db[k] = make_value(k, 7, 10)
        assert len(db) == len(model)                 # + the probe
        assert len(set(db.keys())) == len(db.keys())


def test_cause5_impossible_lengths_dropped(tmp_path):
    path = str(tmp_path / "s.dshm")
    model = R.populate(path, 2000)
    slot, _ = _displaced_slot(path)
    rec = R.read_u64(path, slot + 8)
    R.write_u64(path, rec + 8, (1 << 64) - 16)      # rc_vlen: the size wraps around
    R.write_u64(path, R.HD_REPAIR, 1)
    with dbm_shm.open(path, "w") as db:
        db[R.PROBE] = b"p"
        assert db.check() == []
        keys = [k for k in db.keys() if k != R.PROBE]
        assert len(keys) == len(set(keys)) == len(model) - 1
        assert not [k for k in keys if db.get(k) is None]


_CAUSE6 = textwrap.dedent(r"""
    import mmap, os, shutil, struct, sys, threading
    import dbm_shm
    from _support import repair as R
    tmpl, path = sys.argv[1], sys.argv[2]
    for attempt in range(30):
        shutil.copyfile(tmpl, path)
        db = dbm_shm.open(path, "w")
        rec0 = R.read_u64(path, R.HD_RECOVERIES)
        R.write_u64(path, R.HD_REPAIR, 1)
        with open(path, "r+b") as f:           # a stale moved flag: refresh() looks at the path
            f.seek(R.HD_MOVED); f.write(struct.pack("<I", 1))
        fd = os.open(path, os.O_RDWR)
        hdr = mmap.mmap(fd, 4096)
        go, done = threading.Event(), threading.Event()
        def cut():
            go.set()
            while struct.unpack_from("<Q", hdr, R.HD_LOCK_PID)[0] != os.getpid():
                if done.is_set():
                    return                      # the get ended first: a miss, try again
            os.ftruncate(fd, 4096)              # the file shrinks under the repair
        t = threading.Thread(target=cut); t.start(); go.wait()
        try:
            db.get(b"k000001")
            err = None
        except dbm_shm.error as e:
            err = e
        done.set()
        t.join()
        hit = err is not None and struct.unpack_from("<Q", hdr, R.HD_RECOVERIES)[0] == rec0
        hdr.close(); os.close(fd)
        if not hit:
            db.close()
            continue
        c = threading.Thread(target=db.close, daemon=True); c.start(); c.join(15)
        print("HANG" if c.is_alive() else "CLOSED", attempt, flush=True)
        os._exit(0)
    print("MISSED", flush=True)
    os._exit(0)
""")


def test_cause6_sigbus_in_refresh_releases_db_lock(tmp_path):
    tmpl = str(tmp_path / "t.dshm")
    R.populate_untouched(tmpl, 30000)
    r = subprocess.run([sys.executable, "-c", _CAUSE6, tmpl, str(tmp_path / "s.dshm")],
                       # the C fast path runs get() with the GIL held: the
                       # thread that truncates must run during the repair
                       env=dict(child_env(), DSHM_NO_FASTPATH="1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.split()
    assert out and out[0] != "MISSED", "never truncated the file inside the repair"
    assert out[0] == "CLOSED", "close() deadlocked: db_lock left held by the SIGBUS in refresh()"


_HOLD_LOCK = textwrap.dedent(r"""
    import ctypes, mmap, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    mm = mmap.mmap(fd, 4096)
    libc = ctypes.CDLL(None)
    m = ctypes.addressof(ctypes.c_char.from_buffer(mm, 128))   # hd_mutex
    assert libc.pthread_mutex_lock(ctypes.c_void_p(m)) == 0
    print("L", flush=True)
    time.sleep(600)
""")


def test_cause2_n_with_a_live_writer_fails_cleanly(tmp_path):
    """'n' waits for the old file's writer lock for a bounded time: a live
    holder makes it fail with an error, and the old store is untouched."""
    path = str(tmp_path / "s.dshm")
    with dbm_shm.open(path, "n") as db:
        db[b"old"] = b"1"
    held = dbm_shm.open(path, "r")       # the file is in use: 'n' must rename
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "L"
        with pytest.raises(dbm_shm.error):
            dbm_shm.open(path, "n")
        assert held.get(b"old") == b"1"
    finally:
        holder.kill()
        holder.wait(60)
        held.close()
    with dbm_shm.open(path, "w") as db:   # the holder died: repaired, still the old store
        assert db.get(b"old") == b"1"


# ---------------------------------------------------------------------------
# check() as the oracle the tests trust: it sees every kind of damage a
# repair could leave.

def _check_r(path):
    with dbm_shm.open(path, "r") as db:
        return db.check()


def test_check_sees_a_broken_probe_chain(tmp_path):
    path = str(tmp_path / "s.dshm")
    R.populate(path, 2000)
    slot, _ = _displaced_slot(path)
    R.write_u64(path, slot + 8, 0)            # a hole before a displaced entry
    probs = _check_r(path)
    assert any("not reachable from its home slot" in p for p in probs), probs


def test_check_sees_a_key_filed_twice(tmp_path):
    path = str(tmp_path / "s.dshm")
    R.populate(path, 2000)
    slot, s = _displaced_slot(path)
    page = slot - 64 - 16 * s
    with open(path, "r+b") as f:
        f.seek(slot)
        entry = f.read(16)
        for t in range(252):                   # an empty slot of the same page
            f.seek(page + 64 + 16 * t + 8)
            if struct.unpack("<Q", f.read(8))[0] == 0:
                f.seek(page + 64 + 16 * t)
                f.write(entry)
                break
    probs = _check_r(path)
    assert any("filed twice" in p for p in probs), probs


def test_check_sees_a_pending_journal(tmp_path):
    path = str(tmp_path / "s.dshm")
    R.populate(path, 2000)
    r = R.batch_writer(path, "batch-apply:450")
    assert R.killed(r)
    jr = R.read_u64(path, R.HD_BATCH)
    assert jr
    probs = _check_r(path)                  # the dead holder: a repair is owed
    assert any("repair is owed" in p for p in probs), probs
    # A journal left behind in a store whose lock nobody holds.
    path2 = str(tmp_path / "s2.dshm")
    R.populate(path2, 10)
    R.write_u64(path2, R.HD_BATCH, 4096 * 3)
    probs = _check_r(path2)
    assert any("batch journal is pending" in p for p in probs), probs


# ---------------------------------------------------------------------------
# The SIGBUS guard: in front of handlers installed later, chaining foreign
# signals, never left replaced.

_LATER_HANDLER = textwrap.dedent(r"""
    import os, signal, sys
    import dbm_shm
    a = dbm_shm.open(sys.argv[1] + ".a", "n"); a[b"x"] = b"1"
    # A SIGBUS handler installed after ours that does not chain (Python's
    # returns, so a fault it got would re-run for ever).
    signal.signal(signal.SIGBUS, lambda s, f: None)
    db = dbm_shm.open(sys.argv[1], "n")
    for i in range(3000):
        db[b"k%d" % i] = b"v" * 100
    os.truncate(sys.argv[1], 4096)       # pages of the mapping now fault
    try:
        db.get(b"k2999")
        print("NOERROR")
    except dbm_shm.error as e:
        print("ERROR", e)
""")


def test_sigbus_guard_in_front_of_a_later_handler(tmp_path):
    try:
        r = subprocess.run([sys.executable, "-c", _LATER_HANDLER, str(tmp_path / "s.dshm")],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the fault went to the later handler, which returned: a loop")
    assert r.returncode == 0, f"died ({r.returncode}): {r.stderr[-2000:]}"
    assert r.stdout.startswith("ERROR"), r.stdout


_SENT = textwrap.dedent(r"""
    import os, signal, sys
    import dbm_shm
    got = []
    signal.signal(signal.SIGBUS, lambda s, f: got.append(s))   # installed before ours
    db = dbm_shm.open(sys.argv[1], "n"); db[b"x"] = b"1"
    os.kill(os.getpid(), signal.SIGBUS)   # a sent SIGBUS: not ours, chained
    os.kill(os.getpid(), signal.SIGBUS)
    print("GOT", len(got), flush=True)
""")

_SENT_DFL = textwrap.dedent(r"""
    import os, signal, sys
    import dbm_shm
    db = dbm_shm.open(sys.argv[1], "n"); db[b"x"] = b"1"
    os.kill(os.getpid(), signal.SIGBUS)   # no handler before ours: the default action
    print("SURVIVED", flush=True)
""")


def test_sigbus_sent_is_chained_or_default(tmp_path):
    r = subprocess.run([sys.executable, "-c", _SENT, str(tmp_path / "s.dshm")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "GOT 2" in r.stdout, (r.stdout, r.stderr[-2000:])
    r = subprocess.run([sys.executable, "-c", _SENT_DFL, str(tmp_path / "t.dshm")],
                       capture_output=True, text=True, timeout=120)
    # As without the library; the old handler reset itself to SIG_DFL and
    # returned, so the process went on with its guard gone.
    assert "SURVIVED" not in r.stdout
    assert r.returncode == -7, r.returncode   # SIGBUS
