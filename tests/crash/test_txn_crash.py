"""A writer SIGKILLed inside a transaction (issue 21): it publishes nothing
before its commit, all of it once its publish passed the batch's commit
point, and the next writer repairs and goes on at once.

Two kinds of kill:
- at a C crash point (DSHM_CRASH_AT) of the transaction writer of
  _support/repair.py: "txn-commit" (the lock held across calls, the
  block's reads done, nothing published yet), and the batch's own points
  reached through a transaction's publish; these are cells of the
  kill-the-repairer matrix (_support/repair_matrix.py: the repairer is
  killed too, then a last repair is checked against the model); a sample
  runs here, all of them in the ``crashmatrix`` run;
- from outside, while a process sits inside ``with db.transaction()``
  holding the lock (its block written, not ended), with readers checking
  an invariant the transactions keep and counters acknowledged before.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dbm_shm
from _support import child_env
from _support import repair_matrix as M

HERE = Path(__file__).resolve()

TXN_SAMPLE = [
    ("txn-commit", "repair-begin", "open"),
    ("txn-commit", "repair-lock", "lock"),
    ("txn-staged", "repair-space", "open"),
    ("txn-apply", "repair-batch", "open"),
]


def test_txn_cells_are_in_the_matrix():
    cells = set(M.cells())
    assert set(TXN_SAMPLE) <= cells
    assert {c[0] for c in cells} >= {"txn-commit", "txn-staged", "txn-committed", "txn-apply"}


@pytest.fixture(autouse=True)
def _fixed_seed(monkeypatch):
    monkeypatch.setenv("DSHM_TEST_SEED", M.SEED)


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    return M.KilledWriters(tmp_path_factory)


@pytest.mark.parametrize("writer,rpoint,mode", [pytest.param(*c, id="-".join(c)) for c in TXN_SAMPLE])
def test_txn_writer_killed_then_repairer_killed(writers, writer, rpoint, mode, tmp_path):
    M.run_cell(writers, writer, rpoint, mode, tmp_path)


# ---------------------------------------------------------------------------
# Killed from outside inside the block

ACCOUNTS = [b"acct%02d" % i for i in range(10)]
TOTAL = 1000 * len(ACCOUNTS)


def _child(path: str, mode: str) -> None:
    """Script mode. "incr": acknowledge counter increments ("A n" each),
    then open a transaction, move money and bump the counter inside it,
    say "IN", and sleep holding the lock until killed."""
    db = dbm_shm.open(path, "w")
    n = 0
    for _ in range(50):
        n = db.incr(b"acked")
        os.write(1, b"A %d\n" % n)
    with db.transaction() as tx:
        for i, k in enumerate(ACCOUNTS):
            tx[k] = str(int(tx[k]) + (1 if i % 2 else -1) * 500).encode()
        tx.incr(b"acked", 1000)
        tx[b"marker"] = b"inside"
        os.write(1, b"IN\n")
        time.sleep(600)


def _reader(path: str, stop: str) -> None:
    """Script mode: check the sum invariant with get_many until `stop` exists."""
    from dbm_shm._dshm import lib
    db = dbm_shm.open(path, "r")
    reads = 0
    while not os.path.exists(stop):
        try:
            vals = db.get_many(ACCOUNTS)
        except dbm_shm.error as e:
            # A read-only handle cannot repair: behind a writer killed
            # inside its publish it says so (the next writer repairs).
            if e.code != lib.DSHM_NEED_RECOVERY:
                raise
            continue
        total = sum(int(v) for v in vals)
        if total != TOTAL:
            print(f"BAD sum {total} {vals}", flush=True)
            sys.exit(1)
        reads += 1
    print(f"OK {reads}", flush=True)


def test_sigkill_inside_transaction_publishes_nothing(tmp_path):
    path = str(tmp_path / "store.dshm")
    stop = str(tmp_path / "stop")
    with dbm_shm.open(path, "n") as db:
        db.update({k: b"1000" for k in ACCOUNTS})
    env = child_env(None)
    readers = [subprocess.Popen([sys.executable, str(HERE), "reader", path, stop], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    child = subprocess.Popen([sys.executable, str(HERE), "child", path, "incr"], env=env,
                             stdout=subprocess.PIPE, text=True)
    acked = 0
    try:
        for line in child.stdout:
            if line.startswith("A "):
                acked = int(line.split()[1])
            elif line.strip() == "IN":
                break
        else:
            pytest.fail(f"child ended before its transaction: {child.wait()}")
        with dbm_shm.open(path, "w") as db:
            # The lock is held: a transaction with a short timeout says so.
            with pytest.raises(dbm_shm.error, match="not free within"):
                with db.transaction(timeout=0.05):
                    pass
            child.send_signal(signal.SIGKILL)
            assert child.wait(60) == -signal.SIGKILL
            # The next writer repairs and goes on; nothing of the block is there.
            with db.transaction(timeout=60) as tx:
                assert b"marker" not in tx
                assert int(tx[b"acked"]) == acked == 50
                assert sum(int(tx[k]) for k in ACCOUNTS) == TOTAL
                assert all(tx[k] == b"1000" for k in ACCOUNTS)
                tx[ACCOUNTS[0]] = b"900"
                tx[ACCOUNTS[1]] = b"1100"
            assert db.incr(b"acked") == 51
            assert db.check() == []
            assert db.stats()["recoveries"] >= 1
    finally:
        Path(stop).touch()
        if child.poll() is None:
            child.kill()
        child.wait(60)
    for r in readers:
        out, _ = r.communicate(timeout=60)
        assert r.returncode == 0, out
        assert out.startswith("OK ")


def _looper(path: str, seed: str) -> None:
    """Script mode: transactions until killed, each moving money between
    two accounts and counting itself in b"moves"; "A n" once the n-th
    returned."""
    import random
    rng = random.Random(int(seed))
    db = dbm_shm.open(path, "w")
    os.write(1, b"R\n")
    while True:
        a, b = rng.sample(ACCOUNTS, 2)
        amount = rng.randrange(1, 100)
        with db.transaction() as tx:
            tx[a] = str(int(tx[a]) - amount).encode()
            tx[b] = str(int(tx[b]) + amount).encode()
            n = tx.incr(b"moves")
            # Bulk, so the publish takes a while and kills land inside it too.
            tx.update({b"pad%03d" % i: b"%d" % n * 50 for i in range(100)})
        os.write(1, b"A %d\n" % n)


def test_random_kills_during_transactions(tmp_path):
    """SIGKILL at random moments of a transaction loop: after each, the
    store holds the last acknowledged transaction or the one in flight,
    whole, with the sum of the accounts intact for every reader."""
    import random
    import threading
    path = str(tmp_path / "store.dshm")
    stop = str(tmp_path / "stop")
    with dbm_shm.open(path, "n") as db:
        db.update({k: b"1000" for k in ACCOUNTS})
    env = child_env(None)
    reader = subprocess.Popen([sys.executable, str(HERE), "reader", path, stop], env=env,
                              stdout=subprocess.PIPE, text=True)
    rng = random.Random(21)
    try:
        for run in range(6):
            child = subprocess.Popen([sys.executable, str(HERE), "looper", path, str(run)], env=env,
                                     stdout=subprocess.PIPE, text=True)
            acked = [0]
            assert child.stdout.readline().strip() == "R"

            def drain():
                for line in child.stdout:
                    if line.startswith("A "):
                        acked[0] = int(line.split()[1])

            t = threading.Thread(target=drain, daemon=True)
            t.start()
            time.sleep(rng.uniform(0.05, 0.4))
            child.send_signal(signal.SIGKILL)
            assert child.wait(60) == -signal.SIGKILL
            t.join(30)
            with dbm_shm.open(path, "w") as db:
                moves = int(db.get(b"moves", b"0"))
                assert moves in (acked[0], acked[0] + 1), (moves, acked[0])
                assert sum(int(v) for v in db.get_many(ACCOUNTS)) == TOTAL
                pads = set(db.get_many([b"pad%03d" % i for i in range(100)]))
                assert pads == ({None} if moves == 0 else {b"%d" % moves * 50}), "a transaction seen in part"
                assert db.check() == []
    finally:
        Path(stop).touch()
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0, out
    assert out.startswith("OK ")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    if sys.argv[1] == "child":
        _child(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "reader":
        _reader(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "looper":
        _looper(sys.argv[2], sys.argv[3])
