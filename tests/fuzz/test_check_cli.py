"""``python -m dbm_shm check FILE`` on damaged files: it reports the problems
(exit 3, one line per problem on stderr) and leaves the file's bytes as
they were; on a sound file it says ok (exit 0)."""

import subprocess
import sys

import pytest

from . import _fuzzlib as fl
from ._fuzzlib import known


def _check(path, env=None):
    r = subprocess.run([sys.executable, "-m", "dbm_shm", "check", str(path)],
                       capture_output=True, text=True, timeout=120, env=fl.case_env(env or {}))
    assert r.returncode >= 0, f"check killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    return r


def _damage(base, what):
    lay = base.layout
    b = bytearray(base.data)
    if what == "count":
        fl.wr(b, fl.HDR["count"][0], 8, fl.rd(b, fl.HDR["count"][0]) + 1)
    elif what == "record-klen":
        fl.wr(b, lay.records[5], 4, 3)
    elif what == "record-vlen-past-end":
        fl.wr(b, lay.records[5] + 8, 8, lay.file_size)
    elif what == "dir-entry-past-eof":
        fl.wr(b, lay.dir_off + 8, 8, lay.file_size + 4096)
    elif what == "bucket-kind":
        fl.wr(b, lay.primaries[1] + fl.BK["kind"][0], 4, 0)
    elif what == "bucket-count":
        fl.wr(b, lay.primaries[1] + fl.BK["count"][0], 4, 7)
    elif what == "slot-hash":
        so = next(lay.primaries[0] + fl.BUCKET_HDR + 16 * s for s in range(fl.SLOTS)
                  if fl.rd(b, lay.primaries[0] + fl.BUCKET_HDR + 16 * s + 8))
        fl.wr(b, so, 8, fl.rd(b, so) ^ 1)
    elif what == "free-block-size":
        fl.wr(b, lay.free_blocks[0], 8, 8)
    elif what == "free-bytes":
        fl.wr(b, fl.HDR["free_bytes"][0], 8, 12345)
    elif what == "bucket-page-copied":
        p, q = lay.primaries[1], lay.primaries[2]
        b[q:q + fl.PAGE] = base.data[p:p + fl.PAGE]
    elif what == "record-page-zeroed":
        p = lay.records[len(lay.records) // 2] & ~4095
        b[p:p + fl.PAGE] = bytes(fl.PAGE)
    elif what == "pool-link-past-eof":
        fl.wr(b, lay.pool[0] + fl.BK["next"][0], 8, lay.file_size + 4096)
    else:
        raise AssertionError(what)
    return bytes(b)


DAMAGES = ["count", "record-klen", "record-vlen-past-end", "dir-entry-past-eof", "bucket-kind",
           "bucket-count", "slot-hash", "free-block-size", "free-bytes", "bucket-page-copied",
           "record-page-zeroed", "pool-link-past-eof"]


def test_check_sound_file(bases):
    base = bases["medium"]
    before = base.path.read_bytes()
    r = _check(base.path)
    assert r.returncode == 0, r.stderr
    assert f"ok, {len(base.keys)} records" in r.stdout
    assert r.stderr == ""
    assert base.path.read_bytes() == before


@pytest.mark.parametrize("what", DAMAGES)
def test_check_reports_damage_and_changes_nothing(bases, tmp_path, what):
    base = bases["medium"]
    data = _damage(base, what)
    p = tmp_path / "damaged.dshm"
    p.write_bytes(data)
    r = _check(p)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    problems = [ln for ln in r.stderr.splitlines() if ln.startswith(f"dbm-shm: check: {p}: ")]
    assert problems, r.stderr
    assert "problem(s) found" in r.stdout
    assert p.read_bytes() == data
    assert sorted(x.name for x in tmp_path.iterdir()) == ["damaged.dshm"]


def test_check_overflow_chain_damage(bases, tmp_path):
    base = bases["overflow"]
    b = bytearray(base.data)
    fl.wr(b, base.layout.overflows[0] + fl.BK["count"][0], 4, 3)
    p = tmp_path / "damaged.dshm"
    p.write_bytes(bytes(b))
    r = _check(p, base.env)
    assert r.returncode == 3, r.stderr
    assert "count says 3" in r.stderr
    assert p.read_bytes() == bytes(b)


@pytest.mark.parametrize("cut", ["half", "header", "7"])
def test_check_truncated_or_foreign(bases, tmp_path, cut):
    data = bases["medium"].data
    data = {"half": data[:len(data) // 2], "header": data[:4096], "7": data[:7]}[cut]
    p = tmp_path / "damaged.dshm"
    p.write_bytes(data)
    r = _check(p)
    assert r.returncode == 3, r.stderr
    assert "truncated" in r.stderr or "not a dbm_shm database" in r.stderr, r.stderr
    assert p.read_bytes() == data


def _check_args(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "dbm_shm", "check", *map(str, args)],
                       capture_output=True, text=True, timeout=120, env=fl.case_env(env or {}))
    assert r.returncode >= 0, f"check killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    return r


def _owed(base, what):
    b = bytearray(base.data)
    if what == "repair-flag":            # a writer died mid-change, or a repair failed
        fl.wr(b, fl.HDR["repair"][0], 8, 1)
    elif what == "owner-died":           # the kernel saw the lock's holder die
        fl.wr(b, fl.HDR["mutex"][0], 4, 0x40000000 | 12345)
    elif what == "vanished-holder":      # a holder from before a machine crash
        fl.wr(b, fl.HDR["mutex"][0], 4, 12345)
    elif what == "bucket-left-odd":      # ... with a bucket left mid-change
        fl.wr(b, fl.HDR["mutex"][0], 4, 0x40000000)
        p = base.layout.primaries[0]
        fl.wr(b, p, 8, fl.rd(b, p) | 1)
    return bytes(b)


@known("r-mode-writes", "the check's read-only handle runs the repair the flag asks for")
@pytest.mark.parametrize("what", ["repair-flag", "owner-died", "vanished-holder", "bucket-left-odd"])
def test_check_of_file_owed_a_repair_reports_it_and_changes_nothing(bases, tmp_path, what):
    """A store owed a repair (its header asks for one, its writer lock's
    holder died or vanished with the machine): check reports it (exit 3,
    "a repair is owed", the way to run it) and does not repair behind the
    user's back: the file's bytes stay as they were (check used to run the
    repair and say "ok")."""
    data = _owed(bases["medium"], what)
    p = tmp_path / "damaged.dshm"
    p.write_bytes(data)
    r = _check(p)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert ("repair is owed" in r.stderr or "no longer exists" in r.stderr), r.stderr
    assert "'dbm-shm check --repair' runs it" in r.stdout, r.stdout
    assert p.read_bytes() == data
    assert sorted(x.name for x in tmp_path.iterdir()) == ["damaged.dshm"]


@pytest.mark.parametrize("what", ["repair-flag", "owner-died", "vanished-holder", "bucket-left-odd"])
def test_check_repair_runs_the_owed_repair(bases, tmp_path, what):
    """`check --repair` opens the store for writing: the owed repair runs
    (one recovery), the check is then clean and every key reads back."""
    base = bases["medium"]
    p = tmp_path / "damaged.dshm"
    p.write_bytes(_owed(base, what))
    r = _check_args("--repair", p)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"ok, {len(base.keys)} records" in r.stdout
    import dbm_shm
    with dbm_shm.open(str(p), "r") as d:
        assert d.stats()["recoveries"] == 1
        assert d.check() == []
        assert len(d.keys()) == len(base.keys)
    r = _check(p)
    assert r.returncode == 0, (r.stdout, r.stderr)
