"""Regression tests for the bugs the damaged-file fuzzer found, each on a
small, hand-made damaged file (and the saved fuzzer inputs in corpus/).

Every damaged file is exercised in a subprocess: a crash is seen as a
negative return code, a hang as a timeout (with the C stack, by gdb).
A test for a bug not fixed yet is a strict xfail naming the bug (the key of
_fuzzlib.KNOWN_BUGS): when the fix lands it XPASSes, which fails the run,
so the marker and the KNOWN_BUGS entry are removed together.
"""

import json
import os

import pytest

from . import _fuzzlib as fl
from ._fuzzlib import known


def _write(tmp_path, data, name="damaged.dshm"):
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def _json(ran):
    assert ran.rc == 0, str(ran)
    return json.loads(ran.out.strip().splitlines()[-1])


READ_ALL = """
import dbm_shm, json, sys, hashlib
path, keys = sys.argv[1], [bytes.fromhex(k) for k in json.loads(sys.argv[2])]
def readable(d):
    n = 0
    for k in keys:
        try:
            d[k]
            n += 1
        except (KeyError, dbm_shm.error):
            pass
    return n
"""


# -- reorganize() on a damaged file ---------------------------------------------

def _reorganize_cases(b, lay):
    fs = lay.file_size
    return {
        "dir-entry-past-eof": (lay.dir_off, 8, fs + 4096),          # SIGBUS -> TRUNCATED
        "dir-entry-past-reservation": (lay.dir_off, 8, 1 << 40),      # SIGSEGV
        "slot-rec-past-reservation": (lay.primaries[0] + fl.BUCKET_HDR + 8, 8, 1 << 40),
        "record-klen-huge": (lay.records[0], 4, 0x7FFFFFFF),
        "overflow-link-past-eof": (lay.primaries[0] + 8, 8, fs + 4096),
    }


@known("reorganize-unchecked", "copy_all() trusts every offset and length")
@pytest.mark.parametrize("damage", ["dir-entry-past-eof", "dir-entry-past-reservation",
                                    "slot-rec-past-reservation", "record-klen-huge",
                                    "overflow-link-past-eof"])
def test_reorganize_damaged_file_is_an_error(bases, tmp_path, damage):
    """reorganize() of a damaged store: dbm_shm.error (DSHM_CORRUPT), no
    crash, no temporary copy left, and the file left as it was."""
    base = bases["small"]
    off, size, value = _reorganize_cases(base.data, base.layout)[damage]
    b = bytearray(base.data)
    fl.wr(b, off, size, value)
    path = _write(tmp_path, b)
    code = """
import dbm_shm, sys, json
d = dbm_shm.open(sys.argv[1], 'w')
try:
    d.reorganize()
    res = 'ok'
except dbm_shm.error as e:
    res = e.code
d.close()
print(json.dumps(res))
"""
    before = open(path, "rb").read()
    res = _json(fl.run_snippet(code, path))
    assert res == -31003, f"reorganize gave {res}, expected DSHM_CORRUPT"
    assert sorted(os.listdir(tmp_path)) == ["damaged.dshm"]
    assert open(path, "rb").read() == before


# -- writes into a damaged bucket -------------------------------------------------

@known("page-put-full-page", "page_put() loops when bk_count understates the used slots")
def test_insert_into_page_with_every_slot_used_ends(bases, tmp_path):
    """A bucket page whose 252 slots are all in use but whose count says 0
    (what a page overwritten with other data looks like): an insert must
    end, with an error or not, instead of probing forever."""
    base = bases["small"]
    lay = base.layout
    b = bytearray(base.data)
    pg = lay.primaries[0]
    for s in range(fl.SLOTS):
        so = pg + fl.BUCKET_HDR + 16 * s
        if not fl.rd(b, so + 8):
            fl.wr(b, so + 8, 8, lay.records[0])
            fl.wr(b, so, 8, 12345)
    fl.wr(b, pg + fl.BK["count"][0], 4, 0)
    path = _write(tmp_path, b)
    code = """
import dbm_shm, sys
d = dbm_shm.open(sys.argv[1], 'w')
for i in range(50):
    try:
        d[b'new%d' % i] = b'x'
    except dbm_shm.error:
        pass
print('"done"')
"""
    ran = fl.run_snippet(code, path, timeout=15)
    assert _json(ran) == "done"


@known("split-trusts-bucket-depth", "bucket_split() computes its directory range from the damaged page")
def test_split_of_bucket_with_bad_depth_keeps_other_buckets(bases, tmp_path):
    """One bucket whose local depth (one byte) says more than the global
    depth: inserts that split it may fail, but every key of the other
    buckets stays readable. (Today the split's directory switch runs far
    past the directory, over the whole file: 0 keys readable after.)"""
    base = bases["medium"]
    lay = base.layout
    b = bytearray(base.data)
    fl.wr(b, lay.primaries[3] + fl.BK["depth"][0], 4, lay.depth + 2)
    path = _write(tmp_path, b)
    code = READ_ALL + """
with dbm_shm.open(path, 'r') as d:
    before = readable(d)
d = dbm_shm.open(path, 'w')
err = None
try:
    for i in range(3000):
        d[b'x%d' % i] = b'y'
except dbm_shm.error as e:
    err = e.code
d.close()
with dbm_shm.open(path, 'r') as d:
    after = readable(d)
print(json.dumps([before, after, err]))
"""
    before, after, err = _json(fl.run_snippet(code, path, json.dumps(list(base.keys))))
    in_bad_bucket = sum(1 for k in base.keys
                        if fl.key_hash(base.data, bytes.fromhex(k)) >> (64 - lay.depth) in
                        [i for i in range(1 << lay.depth)
                         if fl.rd(base.data, lay.dir_off + 8 * i) == lay.primaries[3]])
    assert after >= before - in_bad_bucket, (before, after, err)


@pytest.mark.parametrize("delta", [1, 3, 8, -5])
def test_writes_after_a_misaligned_top_end_cleanly(bases, tmp_path, delta):
    """hd_top moved off the 16-byte grid (the fuzzer: random bytes over
    it): allocations from the top used to hand out misaligned blocks, and a
    split's alignment remainder indexed a free list far outside the header
    (SIGSEGV). Now the allocator rebuilds the space from the structures
    first: every write works, no key is lost, and check() is clean."""
    base = bases["small"]
    b = bytearray(base.data)
    fl.wr(b, fl.HDR["top"][0], 8, fl.rd(b, fl.HDR["top"][0]) + delta)
    path = _write(tmp_path, b)
    code = READ_ALL + """
d = dbm_shm.open(path, 'w')
for i in range(800):
    d[b'fuzz-bulk-%d' % i] = b'b' * (i % 50)
res = [readable(d), len(d), d.check(), d[b'fuzz-bulk-799'].decode()]
d.close()
print(json.dumps(res))
"""
    n, count, problems, last = _json(fl.run_snippet(code, path, json.dumps(list(base.keys))))
    assert n == len(base.keys) and count == len(base.keys) + 800
    assert problems == [] and last == "b" * 49


# -- reads of a damaged chain ------------------------------------------------------

@known("chain-cycle-slow", "a chain cycle costs 2^20 hops per walk, 65 walks per read")
@pytest.mark.parametrize("base_name", ["small", "overflow"])
def test_overflow_chain_cycle_reads_end_quickly(bases, tmp_path, base_name):
    """A bucket whose overflow link points back at itself: get() of a
    missing key, keys() and iteritems() end within a second or two (a chain
    can never be longer than the file has pages)."""
    base = bases[base_name]
    lay = base.layout
    b = bytearray(base.data)
    last = (lay.overflows or lay.primaries)[-1]
    fl.wr(b, last + fl.BK["next"][0], 8, lay.primaries[0])
    path = _write(tmp_path, b)
    code = """
import dbm_shm, sys, time, json
d = dbm_shm.open(sys.argv[1], 'r')
out = {}
for name, fn in [('get', lambda: d[b'no such key']), ('keys', d.keys), ('items', d.items)]:
    t = time.monotonic()
    try:
        fn()
    except (KeyError, dbm_shm.error):
        pass
    out[name] = time.monotonic() - t
print(json.dumps(out))
"""
    times = _json(fl.run_snippet(code, path, env=base.env, timeout=15))
    assert max(times.values()) < 2.0, times


# -- repairs ------------------------------------------------------------------------------

@known("failed-repair-struct-seq-odd", "dshm_recover() bails out with hd_struct_seq odd")
def test_failed_repair_leaves_the_store_readable(bases, tmp_path):
    """A store flagged for repair whose repair fails (an unfinishable split
    recorded): the failed repair must not make readable keys unreadable.
    (Today it leaves hd_struct_seq odd, and every read of every key fails
    from then on: a read-only check() is enough to lose them all.)"""
    base = bases["small"]
    b = bytearray(base.data)
    fl.wr(b, fl.HDR["intent_op"][0], 8, 1)
    fl.wr(b, fl.HDR["repair"][0], 8, 1)
    path = _write(tmp_path, b)
    code = READ_ALL + """
with dbm_shm.open(path, 'r') as d:
    before = readable(d)
    try:
        d.check()
        chk = 'ok'
    except dbm_shm.error as e:
        chk = e.code
    after = readable(d)
print(json.dumps([before, chk, after]))
"""
    before, chk, after = _json(fl.run_snippet(code, path, json.dumps(list(base.keys)), timeout=60))
    assert before == len(base.keys)
    assert after == before, f"check() gave {chk}; {before} keys readable before it, {after} after"


@known("rebuild-page-cycle", "dshm_index_rebuild_page() walks a chain without a hop limit")
def test_repair_of_bucket_with_chain_cycle_ends(bases, tmp_path):
    """A repair (hd_repair set, a bucket left mid-change: odd counter) of a
    bucket whose overflow chain loops back to itself must end."""
    base = bases["overflow"]
    lay = base.layout
    b = bytearray(base.data)
    fl.wr(b, fl.HDR["repair"][0], 8, 1)
    prim = lay.primaries[0]
    fl.wr(b, prim, 8, fl.rd(b, prim) | 1)
    fl.wr(b, lay.overflows[-1] + fl.BK["next"][0], 8, prim)
    path = _write(tmp_path, b)
    code = """
import dbm_shm, sys
d = dbm_shm.open(sys.argv[1], 'w')
try:
    d.check()
except dbm_shm.error:
    pass
print('"done"')
"""
    assert _json(fl.run_snippet(code, path, env=base.env, timeout=20)) == "done"


# -- the Python layer -------------------------------------------------------------------

@known("count-overflow", "a count >= 2^63 reaches dshm_strerror(int) as a negative code")
@pytest.mark.parametrize("count", [1 << 63, (1 << 64) - 1])
def test_len_of_absurd_count_is_a_dbm_error(bases, tmp_path, count):
    b = bytearray(bases["small"].data)
    fl.wr(b, fl.HDR["count"][0], 8, count)
    path = _write(tmp_path, b)
    code = """
import dbm_shm, sys, json
d = dbm_shm.open(sys.argv[1], 'r')
try:
    res = ['len', len(d)]
except dbm_shm.error as e:
    res = ['error', e.code]
except Exception as e:
    res = ['other', type(e).__name__ + ': ' + str(e)]
print(json.dumps(res))
"""
    res = _json(fl.run_snippet(code, path))
    assert res == ["error", -31003], res


# -- read-only handles write nothing ---------------------------------------------------------

R_ONLY = """
import dbm_shm, sys, json
d = dbm_shm.open(sys.argv[1], 'r')
res = {}
def gets():
    n = 0
    for k in d.keys():
        n += d.get(k) is not None
    return n
for name, fn in [('len', lambda: len(d)), ('keys', lambda: len(d.keys())),
                 ('items', lambda: len(d.items())), ('gets', gets), ('check', d.check),
                 ('stats', lambda: {k: d.stats()[k] for k in ('reopens', 'read_retries')})]:
    try:
        res[name] = fn()
    except dbm_shm.error as e:
        res[name] = e.code
d.close()
print(json.dumps(res))
"""

MUTEX = fl.HDR["mutex"][0]
# damage -> (offset, size, value, a line check() on an 'r' handle must report, or None)
R_DAMAGE = {
    "mutex-lock-word": (MUTEX, 4, 0x7FFFFFFF, "writer lock: its holder died; a repair is owed"),
    "mutex-kind": (MUTEX + 16, 4, 0xFFFF, "writer lock: its bytes are damaged"),
    "mutex-kind-priority-protect": (MUTEX + 16, 4, 0x40, "writer lock: its bytes are damaged"),
    "mutex-count": (MUTEX + 4, 4, 0, "writer lock: its bytes are damaged"),
    "mutex-owner": (MUTEX + 8, 4, 0x2020, "writer lock: its bytes are damaged"),
    "mutex-list": (MUTEX + 24, 8, 0x10001, "writer lock: its bytes are damaged"),
    "mutex-waiters-no-holder": (MUTEX, 4, 0x80000000, "writer lock: held by a process that no longer exists"),
    "mutex-vanished-holder": (MUTEX, 4, 1, "writer lock: held by a process that no longer exists"),
    "lock-pid": (fl.HDR["lock_pid"][0], 8, 1, None),
    "moved-flag": (fl.HDR["moved"][0], 4, 1, None),
    "repair-flag": (fl.HDR["repair"][0], 8, 1, "header: a repair is owed"),
}


@known("r-mode-writes", "'r' handles re-initialise a damaged mutex, reset lock_pid/moved, run repairs")
@pytest.mark.parametrize("damage", list(R_DAMAGE))
def test_read_only_use_leaves_the_bytes_unchanged(bases, tmp_path, damage):
    """An 'r' handle (len, keys, items, get of every key, check, stats) on
    a store damaged in the writer-lock area changes none of the file's
    bytes, reads every key, and its check() reports what is owed instead of
    repairing it. (A stale "moved" flag costs no reopen per call.)"""
    base = bases["small"]
    b = bytearray(base.data)
    off, size, value, line = R_DAMAGE[damage]
    fl.wr(b, off, size, value)
    path = _write(tmp_path, b)
    before = open(path, "rb").read()
    res = _json(fl.run_snippet(R_ONLY, path))
    after = open(path, "rb").read()
    assert after == before, [i for i in range(len(before)) if before[i] != after[i]][:16]
    n = len(base.keys)
    assert [res["len"], res["keys"], res["items"], res["gets"]] == [n] * 4, res
    assert res["stats"] == {"reopens": 0, "read_retries": 0}, res
    if line is None:
        assert res["check"] == [], res
    else:
        assert any(p.startswith(line) for p in res["check"]), res["check"]
        assert len(res["check"]) == 1, res["check"]


R_SNAPSHOT = """
import dbm_shm, sys, json
d = dbm_shm.open(sys.argv[1], 'r')
try:
    res = len(d.snapshot())
except dbm_shm.error as e:
    res = e.code
d.close()
print(json.dumps(res))
"""


@pytest.mark.parametrize("repair", [0, 1])
def test_read_only_snapshot_writes_nothing(bases, tmp_path, repair):
    """snapshot() on an 'r' handle whose lock-free copies keep failing (a
    bucket left mid-change) falls back like every read of an 'r' handle:
    the lock is taken without writing hd_lock_pid, and an owed repair is
    reported (DSHM_NEED_RECOVERY), not run. The file's bytes stay as they
    were. (Its fallback took the writer's lock, which wrote hd_lock_pid
    and ran the repair.)"""
    base = bases["small"]
    b = bytearray(base.data)
    p = base.layout.primaries[0]
    fl.wr(b, p, 8, fl.rd(b, p) | 1)
    fl.wr(b, fl.HDR["lock_pid"][0], 8, 1)
    fl.wr(b, fl.HDR["repair"][0], 8, repair)
    path = _write(tmp_path, b)
    res = _json(fl.run_snippet(R_SNAPSHOT, path))
    assert open(path, "rb").read() == bytes(b)
    assert res == (-31005 if repair else len(base.keys)), res


VANISHED = """
import dbm_shm, sys, json, time
path = sys.argv[1]
before = open(path, 'rb').read()
r = dbm_shm.open(path, 'r')
res = {'r_open_wrote': open(path, 'rb').read() != before, 'r_check': r.check()}
t = time.monotonic()
w = dbm_shm.open(path, 'w')      # the 'r' handle gave up its flock: this one is alone
w[b'new'] = b'value'
res['w_seconds'] = time.monotonic() - t
res['recoveries'] = w.stats()['recoveries']
res['w_check'] = w.check()
res['r_sees'] = r.get(b'new', b'').decode()
res['r_check_after'] = r.check()
w.close()
r.close()
print(json.dumps(res))
"""


def test_writer_opened_beside_a_reader_resets_a_lock_whose_holder_vanished(bases, tmp_path):
    """The writer lock names a holder that no process can be (the machine
    went down with the file on disk). The first opener is an 'r' handle:
    it may not reset the lock, so it writes nothing, reports it, and gives
    up its flock. A writer opened while that 'r' handle is still open then
    has the file to itself: it resets the lock and repairs, and writes
    without waiting for ever on the vanished holder."""
    b = bytearray(bases["small"].data)
    fl.wr(b, MUTEX, 4, 4242)
    path = _write(tmp_path, b)
    res = _json(fl.run_snippet(VANISHED, path, timeout=20))
    assert res["r_open_wrote"] is False
    assert any("no longer exists" in p for p in res["r_check"]), res
    assert res["w_seconds"] < 2, res
    assert res["recoveries"] == 1
    assert res["w_check"] == [] and res["r_check_after"] == []
    assert res["r_sees"] == "value"


# -- damage met by reads is reported at once ---------------------------------------------------

FAST_READS = """
import dbm_shm, sys, json, time
path, flag = sys.argv[1], sys.argv[2]
keys = [bytes.fromhex(k) for k in json.loads(sys.argv[3])]
d = dbm_shm.open(path, flag)
res = {'ok': 0, 'errors': {}}
t = time.monotonic()
for k in keys:
    try:
        d[k]
        res['ok'] += 1
    except KeyError:
        res['errors']['KeyError'] = res['errors'].get('KeyError', 0) + 1
    except dbm_shm.error as e:
        res['errors'][str(e.code)] = res['errors'].get(str(e.code), 0) + 1
for name, fn in [('keys', d.keys), ('items', d.items)]:
    try:
        fn()
        res[name] = 'ok'
    except dbm_shm.error as e:
        res[name] = e.code
res['seconds'] = time.monotonic() - t
st = d.stats()
res['retries'], res['fallbacks'] = st['read_retries'], st['read_fallbacks']
d.close()
print(json.dumps(res))
"""


def _fast_damage(base, what):
    lay = base.layout
    b = bytearray(base.data)
    if what == "dir-entry-past-eof":
        fl.wr(b, lay.dir_off, 8, lay.file_size + 4096)
    elif what == "dir-entry-misaligned":
        fl.wr(b, lay.dir_off, 8, lay.primaries[0] + 8)
    elif what == "bucket-kind":
        fl.wr(b, lay.primaries[0] + fl.BK["kind"][0], 4, 0)
    elif what == "bucket-prefix":
        fl.wr(b, lay.primaries[0] + fl.BK["prefix"][0], 8, (1 << 64) - 1)
    elif what == "overflow-link-past-eof":
        fl.wr(b, lay.primaries[0] + fl.BK["next"][0], 8, lay.file_size + 4096)
    return bytes(b)


@known("corrupt-read-retries", "a read that meets damage retries 64 times before DSHM_CORRUPT")
@pytest.mark.parametrize("flag", ["r", "w"])
@pytest.mark.parametrize("what, base_name", [("dir-entry-past-eof", "medium"), ("dir-entry-misaligned", "medium"),
                                             ("bucket-kind", "medium"), ("bucket-prefix", "medium"),
                                             ("overflow-link-past-eof", "overflow")])
def test_damage_met_by_reads_is_reported_at_once(bases, tmp_path, what, base_name, flag):
    """Reads that meet damage while no seqlock counter moves (nothing is
    writing) report DSHM_CORRUPT at once: no lock-free retries at all (a
    handle that may write makes its one definitive try under the lock,
    where an owed repair would run first). Keys elsewhere read normally.
    (Each such read used to retry 64 times, 48 of them after sched_yield,
    which made reading a badly damaged store crawl on a busy machine.)"""
    base = bases[base_name]
    path = _write(tmp_path, _fast_damage(base, what))
    res = _json(fl.run_snippet(FAST_READS, path, flag, json.dumps(list(base.keys)), env=base.env, timeout=60))
    assert res["errors"].get("-31003", 0) > 0, res
    assert set(res["errors"]) <= {"-31003"}, res
    assert res["ok"] + res["errors"]["-31003"] == len(base.keys)
    if base_name == "medium":
        assert res["ok"] > len(base.keys) // 2, res
    assert res["keys"] == res["items"] == -31003
    assert res["retries"] == 0, res
    if flag == "r":
        assert res["fallbacks"] == 0, res
    else:
        assert res["fallbacks"] == res["errors"]["-31003"] + 2, res


# -- saved fuzzer inputs ---------------------------------------------------------------------

CORPUS = fl.load_corpus()


@pytest.mark.parametrize("name, data, meta", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus(tmp_path, request, name, data, meta):
    """A damaged file that once crashed or hung the fuzzer's worker (seed,
    base and damage in corpus/<name>.json) now runs clean."""
    bug = meta.get("known_bug")
    if bug in fl.KNOWN_BUGS:
        request.applymarker(pytest.mark.xfail(reason=f"known bug {bug}", strict=True))
    path = _write(tmp_path, data)
    keys = tmp_path / "keys.json"
    keys.write_text("{}")
    ran = fl.run_snippet("import runpy, sys; sys.argv = sys.argv[1:]; "
                         "runpy.run_path(sys.argv[0], run_name='__main__')",
                         str(fl.WORKER), "one", path, str(keys), env=meta.get("env") or {}, timeout=30)
    assert ran.rc == 0, str(ran)
    res = json.loads(ran.out[ran.out.index("{\n"):])
    assert res["status"] in ("ok", "data_loss"), (res["status"], res["detail"])
    if res["status"] == "data_loss":   # nothing really lost: salvage brings every key back
        sv = res.get("salvage") or {}
        assert "error" not in sv and not sv.get("missing") and sv.get("back") == sv.get("lost"), \
            (res["detail"], sv)
