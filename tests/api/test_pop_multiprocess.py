"""pop() and popitem() from several real processes at once: every key is
taken exactly once (each is one call under the writer lock)."""

import multiprocessing
import os

import pytest

import dbm_shm

N_PROCS = 4
N_KEYS = 4000


def _drain_popitem(path, out, start):
    """Child: popitem() until the store is empty; write the keys taken."""
    taken = []
    with dbm_shm.open(path, "w") as db:
        start.wait(30)
        while True:
            try:
                k, v = db.popitem()
            except KeyError:
                break
            assert v == b"value-" + k
            taken.append(k)
    with open(out, "wb") as f:
        f.write(b"\n".join(taken))


def _pop_all(path, out, start, keys):
    """Child: pop() every key (another process may have taken it)."""
    taken = []
    with dbm_shm.open(path, "w") as db:
        start.wait(30)
        for k in keys:
            v = db.pop(k, None)
            if v is not None:
                assert v == b"value-" + k
                taken.append(k)
    with open(out, "wb") as f:
        f.write(b"\n".join(taken))


def _run(tmp_path, target, extra):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    path = str(tmp_path / "db")
    keys = [b"key%05d" % i for i in range(N_KEYS)]
    with dbm_shm.open(path, "n") as db:
        db.update({k: b"value-" + k for k in keys})
    start = ctx.Event()
    outs = [str(tmp_path / f"out{i}") for i in range(N_PROCS)]
    procs = [ctx.Process(target=target, args=(path, outs[i], start) + extra(i, keys))
             for i in range(N_PROCS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    taken = []
    for o in outs:
        with open(o, "rb") as f:
            data = f.read()
        taken.extend(data.split(b"\n") if data else [])
    assert len(taken) == len(set(taken)), "a key was taken twice"
    assert sorted(taken) == keys
    with dbm_shm.open(path, "r") as db:
        assert len(db) == 0
        assert db.check() == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX processes")
def test_concurrent_popitem_takes_each_key_once(tmp_path):
    _run(tmp_path, _drain_popitem, lambda i, keys: ())


@pytest.mark.skipif(os.name != "posix", reason="POSIX processes")
def test_concurrent_pop_of_the_same_keys_takes_each_once(tmp_path):
    # Every process pops every key, each in another order.
    _run(tmp_path, _pop_all, lambda i, keys: (keys[i * 997 % len(keys):] + keys[:i * 997 % len(keys)],))
