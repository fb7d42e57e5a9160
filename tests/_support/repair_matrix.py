"""The kill-the-repairer matrix (issue 13; DESIGN.md §3 property 9), as
cells that tests/crash/test_repair_crash.py runs (all of them in the tox
env ``crash``, a sample by default) and tests/crash/test_under_load.py
runs a few of under CPU load. Imported as ``_support.repair_matrix``.

A cell is (writer point, repair point, mode): a writer is killed at the
writer point, the process that repairs its store is killed at the repair
point, and a last process repairs and is checked against the model of
acknowledged operations. See test_repair_crash.py for the points and the
modes.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import dbm_shm
from _support import repair as R
from _support.helpers import CrashChild, apply_op
from _support.points import WRITER_POINTS

#: DSHM_TEST_SEED for the stores of the matrix (set by the tests' fixtures)
SEED = "5eed0123456789ab"

# writer point -> (scenario, n-th pass, keys to start with): the points of
# test_sigkill.py (_support/points.py), and more; "batch" is
# _support/repair.py batch-writer (one batch of 900 entries).
# (Not "reorganize-renamed": killed after its rename, the writer leaves the
# path naming a whole copy it never locked, so no repair is owed there to
# kill; tests/hardening/test_leftovers.py has its handles follow the path.)
WRITER = {
    **{p: v for p, v in WRITER_POINTS.items() if p != "reorganize-renamed"},
    "remove-shift": ("delete", 20, 2000),
    "batch-staged": ("batch", 1, 2000),
    "batch-committed": ("batch", 1, 2000),
    "batch-apply": ("batch", 450, 2000),
    # pop()/popitem() (csrc/dshm_take.c), both at the crash point "pop-removed"
    "pop-removed": ("pop", 200, 2000),
    "popitem-removed": ("popitem", 200, 2000),
    # transactions (csrc/dshm_txn.c; issue 21): "txn" is _support/repair.py
    # txn-writer (the batch above, read and written in one transaction).
    # txn-commit: the lock held, nothing published; the others: its publish.
    "txn-commit": ("txn", 1, 2000),
    "txn-staged": ("txn", 1, 2000),
    "txn-committed": ("txn", 1, 2000),
    "txn-apply": ("txn", 450, 2000),
}
#: writer -> its crash point, where the two differ
CRASH_POINT = {"popitem-removed": "pop-removed", "txn-staged": "batch-staged",
               "txn-committed": "batch-committed", "txn-apply": "batch-apply"}
#: writers of a batch (or a transaction) that die before its commit point
UNCOMMITTED = ("batch-staged", "txn-commit", "txn-staged")

ODD_BUCKET = ("insert", "remove", "remove-shift")   # leave a bucket's counter odd
SPLIT = ("split-intent", "split-switch")   # leave a split intent
COMMITTED = ("batch-committed", "batch-apply", "txn-committed", "txn-apply")

GENERIC = ("repair-probe", "repair-begin", "repair-space-reset", "repair-space", "repair-end")

Cell = Tuple[str, str, str]


def cells() -> List[Cell]:
    """Every cell of the matrix: (writer point, repair point, mode)."""
    out: List[Cell] = []
    for w in WRITER:
        for r in GENERIC:
            out.append((w, r, "open"))
        out.append((w, "repair-lock", "lock"))
        if w in SPLIT:
            out.append((w, "repair-split", "open"))
        if w in ODD_BUCKET:
            out += [(w, "repair-rebuild", "open"), (w, "repair-bucket", "open"),
                    (w, "repair-lock", "read")]
        if w == "remove-shift":      # a hole in a probe chain: entries move into it
            out.append((w, "repair-rebuild-move", "open"))
        if w in COMMITTED:
            out.append((w, "repair-batch", "open"))
    return out


#: What the cells did, for the run's summary (tests/crash/conftest.py).
STATS: Dict[str, int] = collections.Counter()


class Killed:
    """A store whose writer died at one writer point, and its candidates."""

    def __init__(self, path: str, candidates: List[R.Model], keys: List[bytes], lose_one: bool = False):
        self.path, self.candidates, self.keys = path, candidates, keys
        self.lose_one = lose_one     # a popitem() in flight: any one key may be gone


class KilledWriters:
    """One killed-writer store per writer point, made on first use in a
    directory of ``tmp_path_factory`` and copied for each cell."""

    def __init__(self, tmp_path_factory: Any):
        self.factory = tmp_path_factory
        self.made: Dict[str, Killed] = {}

    def get(self, point: str) -> Killed:
        if point not in self.made:
            self.made[point] = self._make(point)
        return self.made[point]

    def _make(self, point: str) -> Killed:
        scenario, nth, nkeys = WRITER[point]
        crash_at = f"{CRASH_POINT.get(point, point)}:{nth}"
        d = self.factory.mktemp("w-" + point)
        path = str(d / "store.dshm")
        if scenario in ("batch", "txn"):
            before = R.populate(path, nkeys)
            r = (R.batch_writer if scenario == "batch" else R.txn_writer)(path, crash_at)
            assert R.killed(r), f"{scenario} writer not killed at {crash_at}: {r.returncode} {r.stderr[-2000:]}"
            after = R.apply_batch(before)
            cands = [before] if point in UNCOMMITTED else [after]
            keys = sorted(set(before) | set(after))
        else:
            before = R.populate(path, nkeys) if nkeys else _empty(path)
            child = CrashChild(path, scenario, seed=11, run=1, nops=50_000,
                               crash_at=crash_at, errfile=d / "child.err")
            code, log = child.finish(120)
            assert code == -9, f"writer not killed at {crash_at} (exit {code})\n{child.stderr()}"
            assert log.inflight is not None
            if scenario in ("pop", "popitem"):
                assert len(log.acked) == nth - 1, "each pop before the fatal one passed the point once"
            model = dict(before)
            for op in log.acked:
                apply_op(model, op)
            after = dict(model)
            apply_op(after, log.inflight)
            cands = [model, after]
            keys = sorted(set(model) | set(after))
        assert R.repair_owed(path), "the dead writer left no owed repair"
        STATS["writers killed"] += 1
        return Killed(path, cands, keys, lose_one=scenario == "popitem")


def _empty(path: str) -> Dict[bytes, Tuple[int, int]]:
    dbm_shm.open(path, "n").close()
    return {}


def run_cell(writers: KilledWriters, writer: str, rpoint: str, mode: str, tmp_path: Path) -> Dict[str, Any]:
    """One cell, start to verdict; returns the final repair's report."""
    k = writers.get(writer)
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
    STATS["repairers killed"] += 1
    res = R.final_repair(path, k.candidates, tmp_path, k.lose_one)
    R.assert_final(res)
    assert res["recoveries"] > R.read_u64(k.path, R.HD_RECOVERIES) or res["rec_at_open"] > 0
    STATS["final repairs verified"] += 1
    STATS["reads checked"] += res["reads"]
    return res
