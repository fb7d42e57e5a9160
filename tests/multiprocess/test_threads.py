"""One handle shared by many threads of one process (csrc/dbm_shm.h: every
entry point is thread-safe; cffi releases the GIL during the C calls, so
the threads really run in the C core at the same time)."""

import random
import threading
import time

import dbm_shm
from _support.helpers import BadValue, check_value, key_of, make_value, pick_size


class Shared:
    def __init__(self):
        self.errors = []
        self.stop = threading.Event()
        self.maxver = 0
        self.lock = threading.Lock()

    def run(self, fn, *args):
        def body():
            try:
                fn(*args)
            except BaseException as e:   # noqa: BLE001 - reported below
                import traceback
                self.errors.append(f"{threading.current_thread().name}: {e!r}\n{traceback.format_exc()}")
                self.stop.set()
        return threading.Thread(target=body, name=f"{fn.__name__}{args[:1]}")


def test_readers_writers_scanner_reorganizer_on_one_handle(store_path):
    db = dbm_shm.open(store_path, "c")
    sh = Shared()
    nwriters, per_writer, rounds = 3, 4000, 4
    # writer w owns keys [w*per_writer, (w+1)*per_writer); it publishes
    # done[w] = number of keys written in the first round.
    done = [0] * nwriters
    versions = {}
    counters = {"reads": 0, "scans": 0, "reorganizes": 0}

    def writer(w):
        rng = random.Random(w)
        base = w * per_writer
        for r in range(rounds):
            for i in range(per_writer):
                k = key_of(base + i)
                ver = (r + 1) * 1_000_000 + base + i
                with sh.lock:
                    sh.maxver = max(sh.maxver, ver)
                db[k] = make_value(k, ver, pick_size(rng, big=0.001, big_size=256 << 10))
                if r == 0:
                    done[w] = i + 1
                if sh.stop.is_set():
                    return
        versions[w] = rounds

    def reader(seed):
        rng = random.Random(seed)
        last = {}
        while not sh.stop.is_set():
            w = rng.randrange(nwriters)
            c = done[w]
            if not c:
                continue
            k = key_of(w * per_writer + rng.randrange(c))
            v = db.get(k)
            if v is None:
                raise AssertionError(f"written key {k!r} missing")
            ver = check_value(k, v)
            if ver > sh.maxver:
                raise BadValue(f"{k!r}: version {ver} never written")
            if ver < last.get(k, 0):
                raise BadValue(f"{k!r}: version went back {last[k]} -> {ver}")
            last[k] = ver
            counters["reads"] += 1

    def scanner(_):
        while not sh.stop.is_set():
            seen = set()
            for k, v in db.iteritems():
                assert k not in seen, k
                seen.add(k)
                check_value(k, v)
            counters["scans"] += 1

    def reorganizer(_):
        while not sh.stop.is_set():
            time.sleep(0.3)
            db.reorganize()
            counters["reorganizes"] += 1

    writers = [sh.run(writer, w) for w in range(nwriters)]
    others = [sh.run(reader, s) for s in range(5)] + [sh.run(scanner, 0), sh.run(reorganizer, 0)]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join(120)
    sh.stop.set()
    for t in others:
        t.join(60)
    assert not any(t.is_alive() for t in writers + others)
    assert sh.errors == [], "\n".join(sh.errors)
    print(f"\n[threads] {counters}, stats {db.stats()}")
    assert counters["reads"] > 0 and counters["scans"] > 0 and counters["reorganizes"] > 0
    assert db.check() == []
    assert len(db) == nwriters * per_writer
    for w in range(nwriters):
        for i in range(per_writer):
            k = key_of(w * per_writer + i)
            assert check_value(k, db[k]) == rounds * 1_000_000 + w * per_writer + i
    db.close()


def test_writer_threads_disjoint_ranges(store_path):
    """Eight writer threads, inserts, overwrites and deletes; the end state
    is exact."""
    db = dbm_shm.open(store_path, "c")
    sh = Shared()
    per = 5000

    def writer(t):
        for i in range(per):
            k = key_of(t * per + i)
            db[k] = make_value(k, 1, i % 97)
        for i in range(0, per, 2):
            del db[key_of(t * per + i)]
        for i in range(1, per, 4):
            k = key_of(t * per + i)
            db[k] = make_value(k, 2, i % 1000)

    ths = [sh.run(writer, t) for t in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    assert sh.errors == [], "\n".join(sh.errors)
    assert db.check() == []
    assert len(db) == 8 * per // 2
    for t in range(8):
        for i in range(per):
            k = key_of(t * per + i)
            if i % 2 == 0:
                assert k not in db
            else:
                assert check_value(k, db[k]) == (2 if i % 4 == 1 else 1)
    db.close()


def test_setdefault_race_between_threads(store_path):
    """setdefault is atomic: of many threads racing on one key, all get the
    value that was stored first."""
    db = dbm_shm.open(store_path, "c")
    sh = Shared()
    for round_ in range(20):
        key = b"sd%d" % round_
        got = {}
        barrier = threading.Barrier(8)

        def racer(t):
            barrier.wait()
            got[t] = db.setdefault(key, b"thread%d" % t)

        ths = [sh.run(racer, t) for t in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        assert sh.errors == []
        assert len(set(got.values())) == 1, got
        assert db[key] == next(iter(got.values()))
    db.close()


def test_close_while_other_threads_read_and_write(store_path):
    """close() from one thread while others are inside calls: the others
    get dbm_shm.error (closed) afterwards, nothing crashes."""
    db = dbm_shm.open(store_path, "c")
    for i in range(2000):
        db[key_of(i)] = make_value(key_of(i), 1, i % 300)
    sh = Shared()
    outcome = {}
    started = threading.Barrier(7)

    def user(t):
        rng = random.Random(t)
        started.wait()
        n = 0
        try:
            while True:
                k = key_of(rng.randrange(2000))
                if t % 3 == 0:
                    db[k] = make_value(k, 2, rng.randrange(300))
                elif t % 3 == 1:
                    v = db[k]
                    check_value(k, v)
                else:
                    for k2, v2 in db.iteritems():
                        check_value(k2, v2)
                n += 1
        except dbm_shm.error as e:
            outcome[t] = (n, str(e))

    ths = [sh.run(user, t) for t in range(6)]
    for t in ths:
        t.start()
    started.wait()
    time.sleep(0.3)
    db.close()
    for t in ths:
        t.join(30)
    assert not any(t.is_alive() for t in ths)
    assert sh.errors == [], "\n".join(sh.errors)
    assert sorted(outcome) == list(range(6))
    assert all(n > 0 for n, _ in outcome.values()), outcome
    with dbm_shm.open(store_path, "r") as db2:
        assert db2.check() == []
        assert len(db2) == 2000
        for i in range(2000):
            check_value(key_of(i), db2[key_of(i)])
