"""Damaged files (DESIGN.md §3 properties 2 and 7): a seeded mutator damages
valid stores of several shapes (truncation, bit flips and byte ranges in the
header, the directory, bucket pages, records and free lists, fields set to
telling values, whole pages zeroed or filled, pages swapped), and a
subprocess opens and exercises each damaged file: open 'r' (len, keys, get
every key, iteritems, firstkey/nextkey, stats, check), then 'w' (writes,
deletes, bulk inserts that split buckets, check, sometimes clear,
reorganize), then 'r' again.

Every case must end normally: dbm_shm.error and KeyError are the only
exceptions allowed, the process must not die (SIGSEGV, SIGBUS, SIGABRT...)
or hang, the read-only phase must leave the file's bytes unchanged, and no
temporary file may be left behind. How to run more by hand:
``python tests/fuzz/fuzz.py --help``.

Failures that match a bug already reported (``_fuzzlib.KNOWN_BUGS``) make
the test xfail with a summary; any other failure fails it. Keys readable
before the write phase and lost after it ("data_loss": seen where the write
phase's repair fails on a damaged split intent and leaves the store
refusing reads) pass only if ``dbm_shm.salvage`` of the damaged file brings
every one of them back with its value; such cases are counted in the
test's printed summary, and a key salvage cannot bring back fails the test.
"""

import os
import random
import subprocess
import sys
import time

import pytest

import dbm_shm

from . import _fuzzlib as fl

SHORT_SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
SHORT_CASES = int(os.environ.get("FUZZ_CASES", "200"))
CASE_TIMEOUT = fl.CASE_TIMEOUT


# -- the layout the mutator relies on ---------------------------------------

def test_layout_offsets_match_the_core(tmp_path):
    """The offsets in _fuzzlib are those of the C core (else the mutator
    would damage the wrong bytes)."""
    p = tmp_path / "db"
    with dbm_shm.open(p, "n") as d:
        for i in range(1000):
            d[b"k%d" % i] = b"v" * i
        for i in range(0, 1000, 3):
            del d[b"k%d" % i]
        d.sync()   # the commit close would make (it frees what waited for it) is made now
        st = d.stats()
    b = p.read_bytes()
    assert b[:8] == fl.MAGIC
    assert fl.rd(b, fl.HDR["format"][0], 4) == st["format"]
    assert fl.rd(b, fl.HDR["header_size"][0], 4) == fl.HEADER_SIZE
    assert fl.rd(b, fl.HDR["bucket_size"][0], 4) == fl.BUCKET_SIZE == st["page_size"]
    assert fl.rd(b, fl.HDR["checksum"][0]) == fl.header_checksum(b)
    assert fl.rd(b, fl.HDR["file_size"][0]) == st["file_size"] == len(b)
    assert fl.rd(b, fl.HDR["count"][0]) == st["count"] == 666
    assert fl.rd(b, fl.HDR["dir"][0]) & 63 == st["depth"]
    assert fl.rd(b, fl.HDR["commit"][0]) == st["commit"]
    for name in ("top", "live_bytes", "free_bytes", "buckets", "overflow", "recoveries"):
        assert fl.rd(b, fl.HDR[name][0]) == st[name], name
    assert st["slots"] == fl.SLOTS
    lay = fl.parse(b)
    assert len(lay.primaries) == st["buckets"]
    assert len(lay.records) == st["count"]
    # every record's key hashes (SipHash-1-3 under the file's seed) to its slot
    for p_ in lay.primaries:
        for s in range(fl.SLOTS):
            r = fl.rd(b, p_ + fl.BUCKET_HDR + 16 * s + 8)
            if r:
                klen = fl.rd(b, r, 4)
                key = b[r + fl.REC_HDR:r + fl.REC_HDR + klen]
                assert fl.rd(b, p_ + fl.BUCKET_HDR + 16 * s) == fl.key_hash(b, key)
                assert fl.rd(b, r + 4, 4) == fl.key_hash(b, key) & 0xFFFFFFFF


def test_bases_are_sound_and_deterministic(bases, tmp_path):
    for name, base in bases.items():
        # in a subprocess: a base may need a test hook (read once per process)
        code = ("import dbm_shm, sys\n"
                "with dbm_shm.open(sys.argv[1], 'r') as d:\n"
                "    print(len(d.check()), len(d))\n")
        r = subprocess.run([sys.executable, "-c", code, str(base.path)], env=fl.case_env(base.env),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0", str(len(base.keys))], name
        lay = base.layout
        assert lay.primaries, name
        if name == "overflow":
            assert lay.overflows
        if name == "medium":
            assert lay.pool and lay.free_blocks and lay.depth >= 3
        if name == "large_values":
            assert any(fl.rd(base.data, fl.HDR["large"][0] + 8 * i) for i in range(52))
    again = fl.build_bases(tmp_path, ["medium"])["medium"]
    assert again.keys == bases["medium"].keys
    assert again.data[24:40] == bases["medium"].data[24:40]     # the fixed test seed


def test_mutator_is_seeded(bases):
    a = fl.mutate(bases["medium"], random.Random(5))
    b = fl.mutate(bases["medium"], random.Random(5))
    assert a == b
    assert a[0] != bases["medium"].data


# -- the runs ---------------------------------------------------------------------------

def test_random_damage_short(bases, tmp_path):
    """SHORT_CASES damaged files (FUZZ_SEED, FUZZ_CASES to vary)."""
    t0 = time.monotonic()
    cases = fl.make_cases(bases, tmp_path, SHORT_SEED, SHORT_CASES)
    outcomes = fl.run_cases(cases, {n: b.keys for n, b in bases.items()},
                            {n: b.env for n, b in bases.items()}, CASE_TIMEOUT)
    assert len(outcomes) == SHORT_CASES
    print(f"{SHORT_CASES} cases in {time.monotonic() - t0:.1f} s")
    fl.judge(outcomes, f"random damage (seed {SHORT_SEED})")


@pytest.mark.parametrize("base", ["small", "overflow"])
def test_systematic_damage(bases, tmp_path, base):
    """Every structure of the base, a handful of telling values each."""
    cases = fl.systematic_cases(bases, tmp_path, [base])
    outcomes = fl.run_cases(cases, {n: b.keys for n, b in bases.items()},
                            {n: b.env for n, b in bases.items()}, CASE_TIMEOUT)
    fl.judge(outcomes, f"systematic damage of {base}")


@pytest.mark.soak
def test_random_damage_soak(bases, tmp_path):
    """A long run: FUZZ_SOAK_CASES (default 5000) cases, seed FUZZ_SOAK_SEED
    (default: from the clock, printed so a failure replays)."""
    seed = int(os.environ.get("FUZZ_SOAK_SEED") or time.time())
    n = int(os.environ.get("FUZZ_SOAK_CASES", "5000"))
    print(f"soak seed {seed}, {n} cases")
    outcomes = []
    for start in range(0, n, 500):     # in slices: the damaged files take disk space
        d = tmp_path / f"slice{start}"
        cases = fl.make_cases(bases, d, seed + start, min(500, n - start))
        outcomes += fl.run_cases(cases, {k: b.keys for k, b in bases.items()},
                                 {k: b.env for k, b in bases.items()}, 30.0)
        for f in d.iterdir():
            f.unlink()
    fl.judge(outcomes, f"soak (seed {seed})")


@pytest.mark.soak
def test_systematic_damage_soak(bases, tmp_path):
    cases = fl.systematic_cases(bases, tmp_path, sorted(bases))
    outcomes = fl.run_cases(cases, {k: b.keys for k, b in bases.items()},
                            {k: b.env for k, b in bases.items()}, 30.0)
    fl.judge(outcomes, "systematic damage of every base")
