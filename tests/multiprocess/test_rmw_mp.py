"""Read-modify-write across REAL processes (issue 21): N processes x M
increments through incr(), through transactions and through
compare-and-set loops end at exactly N x M; setdefault, pop and popitem
races; and readers racing transactions that move value between keys never
see part of one (the sum stays constant in every get_many)."""

import multiprocessing
import os

import pytest

import dbm_shm
from _support.helpers import Procs, child_main

FORK = multiprocessing.get_context("fork")
N = 4           # writer processes
M = 500         # operations each (the default run stays in seconds)
BOUND = 120


@child_main
def incr_worker(path, m):
    with dbm_shm.open(path, "w") as db:
        for _ in range(m):
            db.incr(b"counter")
            db.decr(b"down")
    return m


@child_main
def txn_worker(path, m):
    with dbm_shm.open(path, "w") as db:
        for i in range(m):
            with db.transaction() as tx:
                # A plain read-modify-write of a decimal counter, and the
                # same on a pickled-style value, inside one hold.
                tx[b"counter"] = str(int(tx.get(b"counter", b"0")) + 1).encode()
                tx[b"log%d" % os.getpid()] = str(i).encode()
    return m


@child_main
def cas_worker(path, m):
    retries = 0
    with dbm_shm.open(path, "w") as db:
        for _ in range(m):
            while True:
                cur = db.get(b"counter")
                new = str(int(cur or b"0") + 1).encode()
                if db.compare_and_set(b"counter", cur, new):
                    break
                retries += 1
    return retries


@pytest.mark.parametrize("worker", [incr_worker, txn_worker, cas_worker], ids=["incr", "txn", "cas"])
def test_n_processes_m_increments(store_path, worker):
    dbm_shm.open(store_path, "n").close()
    with Procs(FORK) as procs:
        for i in range(N):
            procs.start(f"w{i}", worker, store_path, M)
        procs.wait(BOUND)
    with dbm_shm.open(store_path, "r") as db:
        assert db[b"counter"] == str(N * M).encode()
        if worker is incr_worker:
            assert db[b"down"] == str(-N * M).encode()
        assert db.check() == []


@pytest.mark.soak
def test_two_processes_20000_incr_each(store_path):
    """The issue's own numbers: 2 x 20,000 (in a transaction each) end at 40,000."""
    dbm_shm.open(store_path, "n").close()
    with Procs(FORK) as procs:
        for i in range(2):
            procs.start(f"w{i}", txn_worker, store_path, 20_000)
        procs.wait(600)
    with dbm_shm.open(store_path, "r") as db:
        assert db[b"counter"] == b"40000"


@child_main
def setdefault_worker(path, me):
    with dbm_shm.open(path, "w") as db:
        return [db.setdefault(b"sd%03d" % i, b"p%d" % me) for i in range(200)]


def test_setdefault_race_everyone_gets_the_first_value(store_path):
    dbm_shm.open(store_path, "n").close()
    with Procs(FORK) as procs:
        for i in range(N):
            procs.start(f"w{i}", setdefault_worker, store_path, i)
        res = procs.wait(BOUND)
    with dbm_shm.open(store_path, "r") as db:
        stored = [db[b"sd%03d" % i] for i in range(200)]
    for got in res.values():
        assert got == stored


@child_main
def pop_worker(path, n):
    got = []
    with dbm_shm.open(path, "w") as db:
        for i in range(n):
            v = db.pop(b"p%04d" % i, None)
            if v is not None:
                got.append(i)
        while True:
            try:
                k, _ = db.popitem()
            except KeyError:
                break
            got.append(int(k[1:]))
    return got


def test_pop_and_popitem_take_each_key_once(store_path):
    n = 1000
    with dbm_shm.open(store_path, "n") as db:
        db.update({b"p%04d" % i: b"v" for i in range(n)})
    with Procs(FORK) as procs:
        for i in range(N):
            procs.start(f"w{i}", pop_worker, store_path, n)
        res = procs.wait(BOUND)
    taken = sorted(i for got in res.values() for i in got)
    assert taken == list(range(n))


ACCOUNTS = [b"acct%02d" % i for i in range(10)]
TOTAL = 1000 * len(ACCOUNTS)


@child_main
def mover(path, m, seed):
    import random
    rng = random.Random(seed)
    with dbm_shm.open(path, "w") as db:
        for _ in range(m):
            a, b = rng.sample(ACCOUNTS, 2)
            amount = rng.randrange(1, 50)
            with db.transaction() as tx:
                tx[a] = str(int(tx[a]) - amount).encode()
                tx[b] = str(int(tx[b]) + amount).encode()
                tx.incr(b"moves")
    return m


@child_main
def auditor(path, stop_after):
    reads = 0
    with dbm_shm.open(path, "r") as db:
        while True:
            vals = db.get_many(ACCOUNTS + [b"moves"])
            total = sum(int(v) for v in vals[:-1])
            assert total == TOTAL, f"saw part of a transaction: sum {total}, {vals}"
            reads += 1
            if int(vals[-1] or 0) >= stop_after:
                return reads


def test_readers_never_see_part_of_a_transaction(store_path):
    with dbm_shm.open(store_path, "n") as db:
        db.update({k: b"1000" for k in ACCOUNTS})
    m = 300
    with Procs(FORK) as procs:
        for i in range(2):
            procs.start(f"auditor{i}", auditor, store_path, 2 * m)
        for i in range(2):
            procs.start(f"mover{i}", mover, store_path, m, i)
        res = procs.wait(BOUND)
    assert all(res[f"auditor{i}"] > 0 for i in range(2))
    with dbm_shm.open(store_path, "r") as db:
        assert db[b"moves"] == str(2 * m).encode()
        assert sum(int(db[k]) for k in ACCOUNTS) == TOTAL


def test_threads_with_a_handle_each(store_path):
    """Threads of one process, each with its own handle, take turns on the
    same lock as processes do: T x M transactions and incrs, none lost."""
    import threading
    dbm_shm.open(store_path, "n").close()
    T, m = 4, 200
    errors = []

    def work():
        try:
            with dbm_shm.open(store_path, "w") as db:
                for _ in range(m):
                    with db.transaction(timeout=60) as tx:
                        tx[b"t"] = b"%d" % (int(tx.get(b"t", b"0")) + 1)
                    db.incr(b"i")
        except BaseException as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(T)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert not errors
    with dbm_shm.open(store_path, "r") as db:
        assert db[b"t"] == db[b"i"] == b"%d" % (T * m)
