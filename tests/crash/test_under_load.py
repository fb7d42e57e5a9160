"""Crash tests and damaged-file fuzz cases under CPU load (issue 13).

Two busy processes (pure CPU spinners, real processes, killed at teardown)
keep both cores of the CI machine busy while:

- a sample of the damaged-file fuzz cases runs (tests/fuzz/_fuzzlib.py:
  random damage and the systematic sweep of the bases ``medium`` and
  ``reorganized``, each case exercised by the fuzz worker through an 'r'
  handle, then a 'w' handle). Every case must end as in
  tests/fuzz/test_damaged_files.py (every operation answers with a value,
  KeyError or dbm_shm.error; no crash; data lost from the store only if
  salvage brings it back) within the per-case timeout the fuzz suite uses
  (``_fuzzlib.CASE_TIMEOUT``);
- every key of a damaged ``medium`` and ``reorganized`` store is read
  through an 'r' and through a 'w' handle (damage that reads meet: a
  bucket's counter left odd, a directory entry past the end, a bucket page
  of the wrong kind, a split intent with a repair owed): each read answers
  a value (the one the key had) or an error, within the same timeout;
- a few cells of the kill-the-repairer matrix run
  (_support/repair_matrix.py), their killed writers made under the load.

Marked ``underload``: the default run deselects it; the tox env ``crash``
runs it on one interpreter (about a minute).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from _support import repair_matrix as M
from fuzz import _fuzzlib as fl

pytestmark = pytest.mark.underload

FUZZ_SEED = 20250307
RANDOM_CASES = 800            # random damage, split between the two bases
SYSTEMATIC_EVERY = 1          # of the systematic sweep: every n-th case, and every split-intent one


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])      # utime + stime


class Load:
    """Two CPU spinners, started now."""

    def __init__(self, n=2):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        self.t0 = time.monotonic()

    def assert_busy(self):
        """Every spinner is still running."""
        for p in self.procs:
            assert p.poll() is None, f"spinner {p.pid} ended (exit {p.returncode})"

    def cpu_seconds(self):
        return [_cpu_ticks(p.pid) / os.sysconf("SC_CLK_TCK") for p in self.procs]

    def stop(self):
        for p in self.procs:      # our own children, by their pids
            p.kill()
            p.wait(30)


@pytest.fixture(scope="module")
def load():
    ld = Load()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(c > 0 for c in ld.cpu_seconds()):
            time.sleep(0.05)
        ld.assert_busy()
        yield ld
        ld.assert_busy()
        cpu = ld.cpu_seconds()
        wall = time.monotonic() - ld.t0
        print(f"\n[load] spinners used {cpu[0]:.1f} s and {cpu[1]:.1f} s of CPU in {wall:.1f} s")
        # They did spin all along (each got some share of a core; no speed is asserted).
        assert all(c > 0 for c in cpu), cpu
    finally:
        ld.stop()


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fl.build_bases(tmp_path_factory.mktemp("bases"), ["medium", "reorganized"])


def _run(bases, cases):
    return fl.run_cases(cases, {n: b.keys for n, b in bases.items()},
                        {n: b.env for n, b in bases.items()}, fl.CASE_TIMEOUT)


def _assert_both_handles_used(outcomes):
    """The sample did read through 'r' handles and write through 'w' ones."""
    r_ok = sum(o.ops.get("r.get_known", "").startswith("ok") for o in outcomes)
    w_ok = sum(o.ops.get("w.writes", "").startswith("ok") for o in outcomes)
    assert r_ok > len(outcomes) // 4 and w_ok > len(outcomes) // 4, (r_ok, w_ok, len(outcomes))


def test_random_damage_under_load(load, bases, tmp_path):
    t0 = time.monotonic()
    cases = fl.make_cases(bases, tmp_path, FUZZ_SEED, RANDOM_CASES, names=["medium", "reorganized"])
    outcomes = _run(bases, cases)
    assert len(outcomes) == RANDOM_CASES
    load.assert_busy()
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(f"{RANDOM_CASES} cases under load in {time.monotonic() - t0:.1f} s; slowest "
          f"{slowest.case.id} ({slowest.case.base}) {slowest.seconds:.2f} s of {fl.CASE_TIMEOUT:.0f}")
    fl.judge(outcomes, f"random damage under load (seed {FUZZ_SEED})")
    _assert_both_handles_used(outcomes)


def test_systematic_damage_under_load(load, bases, tmp_path):
    t0 = time.monotonic()
    every = fl.systematic_cases(bases, tmp_path, ["medium", "reorganized"])
    cases = [c for i, c in enumerate(every)
             if i % SYSTEMATIC_EVERY == 0 or any("header.intent" in d for d in c.desc)]
    intents = [c for c in cases if any("header.intent" in d for d in c.desc)]
    assert {c.base for c in intents} == {"medium", "reorganized"}
    outcomes = _run(bases, cases)
    load.assert_busy()
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(f"{len(cases)} of {len(every)} systematic cases under load in {time.monotonic() - t0:.1f} s; "
          f"slowest {slowest.case.id} {slowest.seconds:.2f} s of {fl.CASE_TIMEOUT:.0f}")
    fl.judge(outcomes, "systematic damage of medium and reorganized under load")
    _assert_both_handles_used(outcomes)


# -- every key read through an 'r' and a 'w' handle --------------------------------------

READS = """
import dbm_shm, hashlib, json, sys, time
path, flag = sys.argv[1], sys.argv[2]
want = {bytes.fromhex(k): v for k, v in json.load(open(sys.argv[3])).items()}
res = {'open': 'ok', 'ok': 0, 'missing': 0, 'errors': {}, 'wrong': [], 'unexpected': [], 'slowest': 0.0}
try:
    d = dbm_shm.open(path, flag)
except dbm_shm.error as e:
    res['open'] = e.code
    print(json.dumps(res))
    sys.exit(0)
for k in sorted(want):
    t = time.monotonic()
    try:
        v = d[k]
        res['ok'] += 1
        if hashlib.sha1(v).hexdigest() != want[k]:
            res['wrong'].append(k.hex())
    except KeyError:
        res['missing'] += 1
    except dbm_shm.error as e:
        res['errors'][str(e.code)] = res['errors'].get(str(e.code), 0) + 1
    except Exception as e:
        res['unexpected'].append(f'{k!r}: {type(e).__name__}: {e}')
    res['slowest'] = max(res['slowest'], time.monotonic() - t)
for name, fn in [('keys', d.keys), ('len', d.__len__)]:
    try:
        fn()
        res[name] = 'ok'
    except dbm_shm.error as e:
        res[name] = e.code
d.close()
print(json.dumps(res))
"""

LOCAL = ("bucket-seq-odd", "dir-entry-past-eof", "bucket-kind")   # one bucket's keys reached


def _damage(base, what):
    lay = base.layout
    b = bytearray(base.data)
    p = lay.primaries[0]
    if what == "bucket-seq-odd":        # a window no writer will close
        fl.wr(b, p + fl.BK["seq"][0], 8, fl.rd(b, p + fl.BK["seq"][0]) | 1)
    elif what == "dir-entry-past-eof":
        fl.wr(b, lay.dir_off, 8, lay.file_size + 4096)
    elif what == "bucket-kind":
        fl.wr(b, p + fl.BK["kind"][0], 4, 0)
    elif what == "split-intent":        # the fuzz suite's data-loss case
        fl.wr(b, fl.HDR["intent_op"][0], 8, 1)
        fl.wr(b, fl.HDR["repair"][0], 8, 1)
    return bytes(b)


@pytest.mark.parametrize("flag", ["r", "w"])
@pytest.mark.parametrize("damage", LOCAL + ("split-intent",))
@pytest.mark.parametrize("base_name", ["medium", "reorganized"])
def test_reads_of_a_damaged_store_answer_under_load(load, bases, tmp_path, base_name, damage, flag):
    base = bases[base_name]
    path = tmp_path / "damaged.dshm"
    path.write_bytes(_damage(base, damage))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(base.keys))
    ran = fl.run_snippet(READS, str(path), flag, str(keys), env=base.env, timeout=fl.CASE_TIMEOUT)
    assert ran.rc == 0, f"the reads did not all answer within {fl.CASE_TIMEOUT:.0f} s: {ran}"
    res = json.loads(ran.out.strip().splitlines()[-1])
    print(f"{base_name} {damage} '{flag}' under load: {ran.seconds:.2f} s; {res}")
    assert res["unexpected"] == [], res["unexpected"][:5]
    assert res["wrong"] == [], f"values no writer wrote: {res['wrong'][:5]}"
    if res["open"] != "ok":
        assert damage == "split-intent", res
        return
    answered = res["ok"] + res["missing"] + sum(res["errors"].values())
    assert answered == len(base.keys)
    if damage in LOCAL:
        # The damage is one bucket's: the keys elsewhere read their values.
        assert res["ok"] > len(base.keys) // 2, res
    load.assert_busy()


# -- kill-the-repairer cells --------------------------------------------------------------

CELLS = [
    ("insert", "repair-rebuild", "open"),
    ("insert", "repair-lock", "read"),
    ("remove", "repair-bucket", "open"),
    ("remove", "repair-lock", "read"),
    ("remove-shift", "repair-rebuild-move", "open"),
    ("split-intent", "repair-split", "open"),
    ("split-switch", "repair-split", "open"),
    ("double", "repair-begin", "open"),
    ("batch-committed", "repair-batch", "open"),
    ("batch-apply", "repair-batch", "open"),
    ("pop-removed", "repair-lock", "lock"),
    ("popitem-removed", "repair-space-reset", "open"),
]


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    """Killed-writer stores of this module's own, made under the load."""
    return M.KilledWriters(tmp_path_factory)


@pytest.mark.parametrize("writer,rpoint,mode", CELLS, ids=["-".join(c) for c in CELLS])
def test_repair_killed_under_load(load, writers, monkeypatch, writer, rpoint, mode, tmp_path):
    assert (writer, rpoint, mode) in M.cells()
    monkeypatch.setenv("DSHM_TEST_SEED", M.SEED)
    M.run_cell(writers, writer, rpoint, mode, tmp_path)
    load.assert_busy()
