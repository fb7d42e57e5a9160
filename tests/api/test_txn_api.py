"""transaction() and transaction_async() (issue 21): the mapping the block
sees, publishing at the end, nothing on an exception, the timeout, nesting
and other threads, a closed handle, and the handle's own API inside."""

import asyncio
import errno
import threading
import time

import pytest

import dbm_shm


def test_reads_see_store_plus_own_writes(db, other):
    db[b"a"] = b"1"
    db[b"b"] = b"2"
    with db.transaction() as tx:
        assert tx[b"a"] == b"1" and "b" in tx and tx.get(b"zz") is None
        tx[b"a"] = b"10"
        del tx[b"b"]
        tx["c"] = "3"
        assert tx[b"a"] == b"10" and b"b" not in tx and tx[b"c"] == b"3"
        assert len(tx) == 2 and sorted(tx) == [b"a", b"c"]
        assert tx.pop(b"c") == b"3" and tx.setdefault(b"d", b"4") == b"4"
        tx.update({b"e": b"5"})
        # Nothing is published before the block ends.
        assert other[b"a"] == b"1" and other[b"b"] == b"2" and b"d" not in other
        with pytest.raises(KeyError):
            tx[b"b"]
        with pytest.raises(KeyError):
            del tx[b"nope"]
    assert dict(other.items()) == {b"a": b"10", b"d": b"4", b"e": b"5"}
    assert tx.commit_id == other.commit_id()


def test_exception_publishes_nothing_and_reraises(db, other):
    db[b"a"] = b"1"
    before = db.commit_id()
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as tx:
            tx[b"a"] = b"2"
            tx[b"new"] = b"x"
            1 / 0
    assert dict(other.items()) == {b"a": b"1"} and db.commit_id() == before
    db[b"b"] = b"after"   # the lock was given back
    assert other[b"b"] == b"after"


def test_empty_transaction_commits_nothing(db):
    before = db.commit_id()
    with db.transaction() as tx:
        tx.get(b"x")
    assert db.commit_id() == before and tx.commit_id is None


def test_handle_writes_in_the_block_join_it(db, other):
    with db.transaction() as tx:
        db[b"x"] = b"1"
        assert tx[b"x"] == b"1" and db[b"x"] == b"1" and b"x" not in other
        assert db.incr(b"n") == 1 and tx[b"n"] == b"1"
        assert db.compare_and_set(b"x", b"1", b"2") and tx[b"x"] == b"2"
        with db.batch():          # a batch inside nests in the transaction
            db[b"y"] = b"y"
        assert b"y" not in other
        for call in (db.clear, db.reorganize, db.check):
            with pytest.raises(dbm_shm.error, match="inside a transaction"):
                call()
    assert dict(other.items()) == {b"x": b"2", b"n": b"1", b"y": b"y"}


def test_nested_transaction_is_an_error(db):
    with db.transaction():
        with pytest.raises(dbm_shm.error, match="already open on this handle in this thread"):
            with db.transaction():
                pass
    with db.transaction() as tx:   # the outer one still worked and ended
        tx[b"k"] = b"v"
    assert db[b"k"] == b"v"


def test_transaction_inside_batch_is_an_error(db):
    with db.batch():
        with pytest.raises(dbm_shm.error, match="inside a batch"):
            with db.transaction():
                pass


def test_other_thread_using_tx_or_opening_one_is_an_error(db):
    errors = []

    def use(fn):
        try:
            fn()
        except dbm_shm.error as e:
            errors.append(str(e))

    with db.transaction() as tx:
        t = threading.Thread(target=use, args=(lambda: tx.get(b"k"),))
        t.start(); t.join()
        t = threading.Thread(target=use, args=(lambda: db.transaction().__enter__(),))
        t.start(); t.join()
        t = threading.Thread(target=use, args=(db.close,))
        t.start(); t.join()
    assert len(errors) == 3
    assert "it belongs to thread" in errors[0]
    assert "already open on this handle in thread" in errors[1]
    assert "transaction() is open in another thread" in errors[2]


def test_other_thread_writer_waits_for_the_block(db, db_path):
    db2 = dbm_shm.open(db_path, "w")
    done = threading.Event()

    def writer():
        db2[b"k"] = b"other"
        done.set()

    with db.transaction() as tx:
        t = threading.Thread(target=writer)
        t.start()
        assert not done.wait(0.2)   # it waits for the lock (the GIL is free)
        tx[b"k"] = b"tx"
    t.join(30)
    assert done.is_set() and db[b"k"] == b"other"   # it wrote after the block
    db2.close()


def test_timeout(db, db_path):
    db2 = dbm_shm.open(db_path, "w")
    with db.transaction():
        with pytest.raises(dbm_shm.error, match=r"not free within 0.05 s \(held by pid \d+\)"):
            with db2.transaction(timeout=0.05):
                pass
    with db2.transaction(timeout=0) as tx:   # free now: no wait needed
        tx[b"a"] = b"b"
    assert db[b"a"] == b"b"
    with pytest.raises(ValueError):
        db.transaction(timeout=-1)
    db2.close()


def test_closed_handle_and_tx_outside_block(db):
    tx = db.transaction()
    with pytest.raises(dbm_shm.error, match="outside its block"):
        tx[b"a"] = b"1"
    with tx:
        pass
    with pytest.raises(dbm_shm.error, match="already used"):
        with tx:
            pass
    db.close()
    with pytest.raises(dbm_shm.error):
        with db.transaction():
            pass


def test_close_inside_the_block_publishes_nothing(db_path):
    db = dbm_shm.open(db_path, "c")
    with pytest.raises(dbm_shm.error, match="closed inside the block"):
        with db.transaction() as tx:
            tx[b"a"] = b"1"
            db.close()
    with dbm_shm.open(db_path, "w") as db2:
        assert b"a" not in db2
        db2[b"b"] = b"2"   # the lock was given back


def test_readonly_handle(db, db_path):
    with dbm_shm.open(db_path, "r") as ro:
        with pytest.raises(dbm_shm.error, match="read-only"):
            with ro.transaction():
                pass


def test_large_values(db):
    big = b"x" * 300_000
    db[b"big"] = big
    with db.transaction() as tx:
        assert tx[b"big"] == big
        tx[b"big2"] = tx[b"big"] + b"y"
    assert db[b"big2"] == big + b"y"


def test_transaction_async(db, other):
    db[b"n"] = b"1"

    async def main():
        async with db.transaction_async(timeout=5) as tx:
            await asyncio.sleep(0)
            tx[b"n"] = str(int(tx[b"n"]) + 1).encode()
            assert b"n" in tx and other[b"n"] == b"1"
        with pytest.raises(RuntimeError):
            async with db.transaction_async() as tx:
                tx[b"n"] = b"lost"
                raise RuntimeError
        return tx

    asyncio.run(main())
    assert other[b"n"] == b"2"


def test_transaction_async_timeout_keeps_loop_running(db, db_path):
    db2 = dbm_shm.open(db_path, "w")
    ticks = []

    async def ticker():
        for _ in range(5):
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def main():
        t = asyncio.ensure_future(ticker())
        with pytest.raises(dbm_shm.error, match="not free within"):
            async with db2.transaction_async(timeout=0.3):
                pass
        await t

    with db.transaction():
        asyncio.run(main())
    assert len(ticks) == 5   # the loop ran while the lock was waited for
    db2.close()


def test_fork_inside_a_transaction(db, other):
    """A child forked inside the block does not hold the lock: its use of
    the transaction fails, and nothing it does publishes the parent's block."""
    import os
    db[b"k"] = b"1"
    with db.transaction() as tx:
        tx[b"k"] = b"2"
        pid = os.fork()
        if pid == 0:   # the child
            code = 0
            try:
                tx.get(b"other")
                code = 3
            except dbm_shm.error:
                pass
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert other[b"k"] == b"1"
    assert other[b"k"] == b"2"


def test_transaction_async_cancelled_while_waiting(db, db_path):
    """A task cancelled while it waits for the lock ends at once; the lock,
    when it comes, is given back with nothing published."""
    db2 = dbm_shm.open(db_path, "w")

    async def waiter():
        async with db2.transaction_async() as tx:
            tx[b"lost"] = b"1"

    async def main():
        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0.1)   # it is waiting for the lock db holds
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return True

    tx = db.transaction().__enter__()
    try:
        assert asyncio.run(main())
    finally:
        tx.__exit__(None, None, None)
    # The waiter's thread got the lock after db let it go, and gave it back.
    deadline = time.monotonic() + 30
    while db2._txn is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db2._txn is None and not db2._batches
    with db2.transaction(timeout=10) as t2:
        t2[b"after"] = b"1"
    assert b"lost" not in db and db[b"after"] == b"1"
    db2.close()


def test_a_c_write_from_the_holding_thread_is_refused_not_hung(db):
    """Below the Python routing, the core refuses a write from the thread
    that holds the lock (-EDEADLK) instead of waiting for itself."""
    from dbm_shm._dshm import lib
    with db.transaction():
        rc = lib.dshm_put(db._h, b"k", 1, b"v", 1, 0)
        assert rc == -errno.EDEADLK
        with pytest.raises(dbm_shm.error, match="holds the writer lock for a transaction"):
            from dbm_shm._errors import raise_for
            raise_for(rc, "set", db.filename)
    assert b"k" not in db


def test_stats_show_the_transaction_holding_the_lock(db, other):
    import os
    with db.transaction():
        time.sleep(0.01)
        st = other.stats()
        assert st["lock_pid"] == os.getpid() and st["lock_held_ns"] > 0
    assert other.stats()["lock_pid"] == 0
