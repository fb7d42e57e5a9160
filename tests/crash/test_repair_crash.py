"""Kill the repairer (issue 13; DESIGN.md §3 property 9).

A writer is killed at one of its crash points (DSHM_CRASH_AT); the file it
leaves is made once per writer point and copied for each cell. Then the
process that repairs it is killed at one of the repair crash points, and a
last process repairs and is checked against the model of acknowledged
operations (present, absent, or either for the one in flight; a batch all
or nothing): get of every key, keys() without duplicates, len(), check().

Each cell asserts that the repairer really died by SIGKILL at its named
point with a repair owed in the file: a point never reached fails the cell.

Repair crash points (csrc/):
  repair-probe        dshm_mutex_probe: dead holder's mutex made consistent
                      and unlocked (repair at open)
  repair-lock         dshm_lock0: EOWNERDEAD, mutex made consistent
  repair-begin        dshm_recover: hd_struct_seq odd
  repair-split        dshm_recover: split intent finished
  repair-rebuild      dshm_index_rebuild_page: duplicates dropped, pages not
                      yet repaired
  repair-rebuild-move dshm_page_mend: an entry copied into the hole
                      on its probe sequence, its old slot not yet cleared
  repair-bucket       dshm_recover: one odd bucket rebuilt and made even
  repair-space-reset  dshm_space_rebuild: free lists reset, not refilled
  repair-space        dshm_recover: free space rebuilt
  repair-batch        dshm_batch_recover: one journal entry re-applied
  repair-end          dshm_recover: all done, hd_struct_seq still odd

Modes (how the repairer meets the dead writer):
  open  opens the path alone: the repair runs at open
  lock  opens it while the test holds a handle, then writes: the repair
        runs at the lock (EOWNERDEAD)
  read  as lock, but reads every key: the repair runs in a read's fallback

The full matrix is marked slow; the default run samples it (SAMPLE).
"""

import shutil
import sys
from pathlib import Path

import pytest

import dbm_shm
from _support import repair as R
from _support.helpers import CrashChild, apply_op
from _support.points import WRITER_POINTS

# writer point -> (scenario, n-th pass, keys to start with): the points of
# test_sigkill.py (_support/points.py), and more; "batch" is
# _support/repair.py batch-writer (one batch of 900 entries).
WRITER = {
    **WRITER_POINTS,
    "remove-shift": ("delete", 20, 2000),
    "batch-staged": ("batch", 1, 2000),
    "batch-committed": ("batch", 1, 2000),
    "batch-apply": ("batch", 450, 2000),
}

ODD_BUCKET = ("insert", "remove", "remove-shift")   # leave a bucket's counter odd
SPLIT = ("split-intent", "split-switch")   # leave a split intent
COMMITTED = ("batch-committed", "batch-apply")

GENERIC = ("repair-probe", "repair-begin", "repair-space-reset", "repair-space", "repair-end")


def _cells():
    cells = []
    for w in WRITER:
        for r in GENERIC:
            cells.append((w, r, "open"))
        cells.append((w, "repair-lock", "lock"))
        if w in SPLIT:
            cells.append((w, "repair-split", "open"))
        if w in ODD_BUCKET:
            cells += [(w, "repair-rebuild", "open"), (w, "repair-bucket", "open"),
                      (w, "repair-lock", "read")]
        if w == "remove-shift":      # a hole in a probe chain: entries move into it
            cells.append((w, "repair-rebuild-move", "open"))
        if w in COMMITTED:
            cells.append((w, "repair-batch", "open"))
    return cells


# Cells that fail on the code before the issue-13 fixes, and why.
XFAIL = {}

SAMPLE = {
    ("insert", "repair-rebuild", "open"),
    ("insert", "repair-probe", "open"),
    ("remove", "repair-bucket", "open"),
    ("remove-shift", "repair-rebuild-move", "open"),
    ("split-switch", "repair-split", "open"),
    ("batch-apply", "repair-batch", "open"),
    ("insert", "repair-lock", "read"),
    ("put-replaced", "repair-space-reset", "open"),
    ("del-removed", "repair-lock", "lock"),
    ("clear", "repair-end", "open"),
}


def _params(sample):
    out = []
    for c in _cells():
        if (c in SAMPLE) != sample:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[c])] if c in XFAIL else []
        if not sample:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(*c, marks=marks, id="-".join(c)))
    return out


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    monkeypatch.setenv("DSHM_TEST_SEED", "5eed0123456789ab")


class Killed:
    """A store whose writer died at one writer point, and its candidates."""

    def __init__(self, path, candidates, keys):
        self.path, self.candidates, self.keys = path, candidates, keys


_killed_cache = {}


def _killed_writer(point, tmp_path_factory):
    if point in _killed_cache:
        return _killed_cache[point]
    scenario, nth, nkeys = WRITER[point]
    d = tmp_path_factory.mktemp("w-" + point)
    path = str(d / "store.dshm")
    if scenario == "batch":
        before = R.populate(path, nkeys)
        r = R.batch_writer(path, f"{point}:{nth}")
        assert R.killed(r), f"batch writer not killed at {point}:{nth}: {r.returncode} {r.stderr[-2000:]}"
        after = R.apply_batch(before)
        cands = [before] if point == "batch-staged" else [after]
        keys = sorted(set(before) | set(after))
    else:
        before = R.populate(path, nkeys) if nkeys else _empty(path)
        child = CrashChild(path, scenario, seed=11, run=1, nops=50_000,
                           crash_at=f"{point}:{nth}", errfile=d / "child.err")
        code, log = child.finish(120)
        assert code == -9, f"writer not killed at {point}:{nth} (exit {code})\n{child.stderr()}"
        assert log.inflight is not None
        model = dict(before)
        for op in log.acked:
            apply_op(model, op)
        after = dict(model)
        apply_op(after, log.inflight)
        cands = [model, after]
        keys = sorted(set(model) | set(after))
    assert R.repair_owed(path), "the dead writer left no owed repair"
    _killed_cache[point] = Killed(path, cands, keys)
    return _killed_cache[point]


def _empty(path):
    dbm_shm.open(path, "n").close()
    return {}


def run_cell(writer, rpoint, mode, tmp_path, tmp_path_factory):
    k = _killed_writer(writer, tmp_path_factory)
    path = str(tmp_path / "store.dshm")
    shutil.copyfile(k.path, path)
    keysfile = None
    held = None
    if mode in ("lock", "read"):
        held = dbm_shm.open(path, "r")     # the repairer is not alone with the file
        if mode == "read":
            keysfile = str(tmp_path / "keys.txt")
            Path(keysfile).write_text("\n".join(x.decode() for x in k.keys))
    try:
        r = R.repairer(path, mode, f"{rpoint}:1", keysfile)
    finally:
        if held is not None:
            held.close()
    assert R.killed(r), (f"the repairer did not die at {rpoint} (exit {r.returncode}, "
                         f"out {r.stdout.strip()!r}): point never reached\n{r.stderr[-3000:]}")
    assert "DONE" not in r.stdout
    assert R.repair_owed(path), f"the repairer died at {rpoint} but the file owes no repair"
    res = R.final_repair(path, k.candidates, tmp_path)
    R.assert_final(res)
    assert res["recoveries"] > R.read_u64(k.path, R.HD_RECOVERIES) or res["rec_at_open"] > 0


@pytest.mark.parametrize("writer,rpoint,mode", _params(sample=True))
def test_repair_killed_sample(writer, rpoint, mode, tmp_path, tmp_path_factory):
    run_cell(writer, rpoint, mode, tmp_path, tmp_path_factory)


@pytest.mark.parametrize("writer,rpoint,mode", _params(sample=False))
def test_repair_killed_matrix(writer, rpoint, mode, tmp_path, tmp_path_factory):
    run_cell(writer, rpoint, mode, tmp_path, tmp_path_factory)
