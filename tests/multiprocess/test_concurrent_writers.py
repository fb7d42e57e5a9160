"""Several writer processes, several threads in each, one store
(DESIGN.md §3 property 3: writers serialize on the robust lock).

Each thread owns a disjoint key range: it inserts every key, overwrites
every 3rd and deletes every 7th, so the final state is known key by key.
"""

import multiprocessing
import time

import pytest

import dbm_shm
from _support.helpers import check_value, key_of, range_expected, range_writer

SPAWN = multiprocessing.get_context("spawn")


def _run(procs, store_path, nprocs, nthreads, per_thread, reorganize, timeout):
    dbm_shm.open(store_path, "n").close()
    sh = {"ready": SPAWN.Value("i", 0), "go": SPAWN.Event()}
    for w in range(nprocs):
        procs.start(f"writer{w}", range_writer, store_path, w, nthreads, per_thread,
                    reorganize and w == 0, sh)
    deadline = time.monotonic() + 60
    while sh["ready"].value < nprocs and time.monotonic() < deadline:
        time.sleep(0.01)
    sh["go"].set()
    res = procs.wait(timeout)
    spans = {n: round(r["end"] - r["start"], 2) for n, r in sorted(res.items())}
    print(f"\n[{nprocs} processes x {nthreads} threads x {per_thread} keys] seconds: {spans}")
    # They really ran at the same time.
    assert max(r["start"] for r in res.values()) < min(r["end"] for r in res.values())
    total = nprocs * nthreads * per_thread
    with dbm_shm.open(store_path, "r") as db:
        assert db.check() == []
        expected = 0
        wrong = []
        for i in range(total):
            k = key_of(i)
            want = range_expected(i, per_thread)
            got = db.get(k)
            if want is None:
                if got is not None:
                    wrong.append(f"{k!r}: deleted, but present")
                continue
            expected += 1
            if got is None:
                wrong.append(f"{k!r}: missing")
            elif check_value(k, got) != want:
                wrong.append(f"{k!r}: version {check_value(k, got)}, want {want}")
        assert wrong == []
        assert len(db) == expected
        assert sorted(db.keys()) == sorted(key_of(i) for i in range(total)
                                           if range_expected(i, per_thread) is not None)


def test_concurrent_writer_processes_and_threads(procs, store_path):
    """4 processes x 3 threads x 8000 keys, one reorganize in the middle."""
    _run(procs, store_path, 4, 3, 8000, reorganize=True, timeout=180)


def test_concurrent_writer_processes_no_threads(procs, store_path):
    """6 single-threaded writer processes: lock hand-over between processes only."""
    _run(procs, store_path, 6, 1, 4000, reorganize=False, timeout=180)


@pytest.mark.soak
def test_concurrent_writers_soak(procs, store_path):
    _run(procs, store_path, 8, 4, 40_000, reorganize=True, timeout=1800)
