"""Kill the repairer (issue 13; DESIGN.md §3 property 9).

A writer is killed at one of its crash points (DSHM_CRASH_AT); the file it
leaves is made once per writer point and copied for each cell. The writer
points include "pop-removed" (csrc/dshm_take.c: the slot removed, the
record not yet freed), reached through pop() and through popitem(): the
key in flight may be present or absent, everything else exact. Then the
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

The cells are _support/repair_matrix.py's. The default run samples them
(SAMPLE); the others are marked ``crashmatrix``, which the default run
deselects and the tox env ``crash`` runs (``tox -e crash``: the whole
matrix, once, on one interpreter).
"""

import pytest

from _support import repair_matrix as M

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
    ("pop-removed", "repair-space", "open"),
    ("popitem-removed", "repair-lock", "lock"),
}


def _params(sample):
    out = []
    for c in M.cells():
        if (c in SAMPLE) != sample:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[c])] if c in XFAIL else []
        if not sample:
            marks.append(pytest.mark.crashmatrix)
        out.append(pytest.param(*c, marks=marks, id="-".join(c)))
    return out


def test_sample_is_in_the_matrix():
    assert SAMPLE <= set(M.cells())
    assert len(set(M.cells())) == len(M.cells())


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    monkeypatch.setenv("DSHM_TEST_SEED", M.SEED)


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    """One killed-writer store per writer point, copied for each cell."""
    return M.KilledWriters(tmp_path_factory)


@pytest.mark.parametrize("writer,rpoint,mode", _params(sample=True))
def test_repair_killed_sample(writers, writer, rpoint, mode, tmp_path):
    M.run_cell(writers, writer, rpoint, mode, tmp_path)


@pytest.mark.parametrize("writer,rpoint,mode", _params(sample=False))
def test_repair_killed_matrix(writers, writer, rpoint, mode, tmp_path):
    M.run_cell(writers, writer, rpoint, mode, tmp_path)
