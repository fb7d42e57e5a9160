"""dbm_shm.Cache in one process: expiry, the cap, the calls, the dbm view."""

import math
import pickle
import time

import pytest

import dbm_shm


@pytest.fixture
def cache(tmp_path):
    c = dbm_shm.Cache(tmp_path / "c")
    yield c
    c.close()


def wait_past(seconds):
    time.sleep(seconds + 0.02)


def test_set_get_and_types(cache):
    assert cache.set("a", "1") is True
    cache.set(b"b", b"\x00\xff")
    cache.set("c", bytearray(b"z"))
    assert cache.get("a") == b"1"
    assert cache.get(b"b") == b"\x00\xff"
    assert cache.get("c") == b"z"
    assert cache.get("missing") is None
    assert cache.get("missing", 5) == 5
    with pytest.raises(TypeError):
        cache.set("x", 3)
    with pytest.raises(TypeError):
        cache.set(3, b"x")


def test_expired_key_is_absent_everywhere_at_once(cache):
    cache.set("k", b"v", ttl=0.2)
    cache.set("keep", b"v")
    assert cache.get("k") == b"v" and "k" in cache
    wait_past(0.2)
    assert cache.get("k") is None
    assert "k" not in cache
    assert "k" not in cache.db
    assert cache.db.get(b"k") is None
    with pytest.raises(KeyError):
        cache.db[b"k"]
    assert sorted(cache.db.keys()) == [b"keep"]
    assert dict(cache.db.items()) == {b"keep": b"v"}
    assert cache.db.get_many([b"k", b"keep"]) == [None, b"v"]
    with pytest.raises(KeyError):
        cache.db.pop(b"k")
    # Nothing was written by those reads: the record is still held ...
    assert len(cache) == 2
    # ... until a writer drops it.
    assert cache.expire() == 1
    assert len(cache) == 1
    assert cache.stats()["expired"] == 1


def test_ttl_meanings(tmp_path):
    with dbm_shm.Cache(tmp_path / "c", default_ttl=0.2) as c:
        c.set("default", b"1")
        c.set("forever", b"1", ttl=math.inf)
        c.set("zero", b"1", ttl=0)
        c.set("negative", b"1", ttl=-5)
        assert c.get("zero") is None and c.get("negative") is None
        assert c.get("default") == b"1"
        wait_past(0.2)
        assert c.get("default") is None
        assert c.get("forever") == b"1"
        with pytest.raises(TypeError):
            c.set("x", b"1", ttl="10")


def test_add_counts_an_expired_key_as_absent(cache):
    assert cache.add("k", b"1", ttl=0.2)
    assert not cache.add("k", b"2")
    assert cache.get("k") == b"1"
    wait_past(0.2)
    assert cache.add("k", b"3")
    assert cache.get("k") == b"3"


def test_delete_and_touch(cache):
    cache.set("k", b"v", ttl=0.2)
    assert cache.touch("k", ttl=60)
    wait_past(0.2)
    assert cache.get("k") == b"v"          # the new deadline holds
    assert cache.touch("k", ttl=0.1)
    wait_past(0.1)
    assert cache.touch("k", ttl=60) is False   # expired: absent
    assert cache.delete("k") is False
    cache.set("d", b"v")
    assert cache.delete("d") is True
    assert cache.delete("d") is False
    assert cache.touch("nothing") is False


def test_incr_keeps_the_deadline_of_a_live_counter(cache):
    assert cache.incr("n") == 1
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 2) == 9
    assert cache.get("n") == b"9"
    cache.set("t", b"5", ttl=0.2)
    assert cache.incr("t") == 6
    wait_past(0.2)
    assert cache.get("t") is None           # incr kept the 0.2 s deadline
    assert cache.incr("t", default=100) == 101   # expired: starts again
    cache.set("s", b"abc")
    with pytest.raises(dbm_shm.error, match="not an integer"):
        cache.incr("s")
    assert cache.get("s") == b"abc"


def test_many(cache):
    cache.set_many({"a": b"1", b"b": "2"}, ttl=60)
    cache.set("gone", b"x", ttl=0.1)
    wait_past(0.1)
    assert cache.get_many(["a", b"b", "gone", "nope"]) == {"a": b"1", b"b": b"2"}
    assert cache.delete_many(["a", "nope", b"b"]) == 2
    assert len(cache) == 1   # the expired record, not dropped yet
    cache.clear()
    assert len(cache) == 0


def test_stats_count_hits_and_misses(cache):
    cache.set("a", b"1")
    cache.get("a"), cache.get("a"), cache.get("b")
    s = cache.stats()
    assert (s["hits"], s["misses"], s["count"]) == (2, 1, 1)
    assert s["volume"] == cache.volume() > 0


def test_pickle_serializer(tmp_path):
    with dbm_shm.Cache(tmp_path / "p", serializer="pickle") as c:
        c.set("obj", {"a": [1, 2.5, None]})
        c.set("int", 41)
        c.set("bool", True)
        c.set("bytes", b"\x80abc")
        assert c.get("obj") == {"a": [1, 2.5, None]}
        assert c.incr("int") == 42 and c.get("int") == 42
        assert c.get("bool") is True
        assert c.get("bytes") == b"\x80abc"
        assert c.db[b"int"] == b"42"
        assert pickle.loads(c.db[b"obj"]) == {"a": [1, 2.5, None]}


def test_cap_holds_and_evicts_the_oldest_first(tmp_path):
    cap = 300_000
    with dbm_shm.Cache(tmp_path / "c", max_bytes=cap) as c:
        for i in range(3000):
            c.set(b"k%05d" % i, b"x" * 1000)
            assert c.volume() <= cap
        s = c.stats()
        assert s["max_bytes"] == cap and s["evictions"] > 2000
        present = [i for i in range(3000) if c.get(b"k%05d" % i) is not None]
        # Approximately least recently stored: what is left is mostly recent.
        assert len(present) == len(c) > 200
        assert sum(i >= 2000 for i in present) > 0.8 * len(present)
        assert c.get(b"k02999") is not None
        assert c.db.check() == []


def test_eviction_takes_expired_records_first(tmp_path):
    # An expired record met in the sample goes before any live one: with
    # most records expired, the live ones all stay.
    with dbm_shm.Cache(tmp_path / "c", max_bytes=120_000) as c:
        for i in range(10):
            c.set(b"live%d" % i, b"x" * 1000)
        for i in range(100):
            c.set(b"short%d" % i, b"x" * 1000, ttl=0.2)
        wait_past(0.2)
        for i in range(50):
            c.set(b"new%d" % i, b"x" * 1000)
        assert all(c.get(b"live%d" % i) == b"x" * 1000 for i in range(10))
        assert all(c.get(b"new%d" % i) is not None for i in range(50))
        s = c.stats()
        assert s["expired"] >= 20 and s["evictions"] == 0


def test_too_big_for_the_cap(tmp_path):
    with dbm_shm.Cache(tmp_path / "c", max_bytes=10_000) as c:
        c.set("small", b"1")
        with pytest.raises(dbm_shm.error, match="max_bytes"):
            c.set("big", b"x" * 20_000)
        assert c.get("small") == b"1"


def test_lowering_the_cap_evicts_at_once(tmp_path):
    with dbm_shm.Cache(tmp_path / "c") as c:
        for i in range(200):
            c.set(b"k%d" % i, b"x" * 1000)
        assert c.volume() > 150_000
    with dbm_shm.Cache(tmp_path / "c", max_bytes=50_000) as c:
        assert c.volume() <= 50_000
        assert c.stats()["max_bytes"] == 50_000
    with dbm_shm.Cache(tmp_path / "c") as c:   # not passed: the file's cap stays
        assert c.stats()["max_bytes"] == 50_000


def test_dbm_interface_obeys_the_cap_and_reorganize_keeps_deadlines(tmp_path):
    with dbm_shm.Cache(tmp_path / "c", max_bytes=100_000) as c:
        c.set("short", b"v", ttl=0.3)
        c.set("long", b"v", ttl=60)
    with dbm_shm.open(tmp_path / "c", "w") as db:
        for i in range(500):
            db[b"k%d" % i] = b"y" * 1000
        assert db.stats()["live_bytes"] <= 100_000
        db[b"short"] = b"v"      # the plain interface stores without a deadline
    with dbm_shm.Cache(tmp_path / "c") as c:
        c.set("short", b"v", ttl=0.3)
        c.db.reorganize()
        assert c.get("short") == b"v" and c.stats()["max_bytes"] == 100_000
        wait_past(0.3)
        assert c.get("short") is None
        c.db.reorganize()        # the copy leaves expired records behind
        assert b"short" not in c.db.keys()


def test_memoize_in_one_process(tmp_path):
    calls = []
    with dbm_shm.Cache(tmp_path / "m") as c:
        @c.memoize(ttl=60)
        def f(x, y=1):
            calls.append((x, y))
            return {"sum": x + y}

        assert f(1) == {"sum": 2} and f(1) == {"sum": 2}
        assert f(1, y=2) == {"sum": 3}
        assert calls == [(1, 1), (1, 2)]
        assert not any(k.startswith(dbm_shm._cache.LOCK_PREFIX) for k in c.db.keys())

        @c.memoize(key=lambda x: "fixed:%d" % x)
        def g(x):
            calls.append(("g", x))
            return x

        assert g(5) == 5 and g(5) == 5 and c.get("fixed:5") is not None
        assert calls.count(("g", 5)) == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        dbm_shm.Cache(tmp_path / "c", serializer="json")
    with pytest.raises(ValueError):
        dbm_shm.Cache(tmp_path / "c", max_bytes=-1)
    with pytest.raises(TypeError):
        dbm_shm.Cache(tmp_path / "c", default_ttl="1")


def test_cli_info_shows_the_cache_figures(tmp_path):
    import os
    import subprocess
    import sys
    with dbm_shm.Cache(tmp_path / "c", max_bytes=50_000) as c:
        for i in range(100):
            c.set(b"k%d" % i, b"x" * 1000)
        evicted = c.stats()["evictions"]
    out = subprocess.run([sys.executable, "-m", "dbm_shm", "info", str(tmp_path / "c")],
                         capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith("cache:")]
    assert len(line) == 1
    assert "of 50000 bytes" in line[0] and f"{evicted} evicted" in line[0]
    assert "max_bytes:" in out and "evictions:" in out


def test_a_batch_on_a_capped_store_evicts_room_first(tmp_path):
    with dbm_shm.Cache(tmp_path / "c", max_bytes=100_000) as c:
        for i in range(80):
            c.set(b"k%d" % i, b"x" * 1000)
        c.db.update({b"b%d" % i: b"y" * 1000 for i in range(50)})
        assert c.volume() <= 100_000
        assert all(c.get(b"b%d" % i) == b"y" * 1000 for i in range(50))
        with c.db.transaction() as tx:
            for i in range(30):
                tx[b"t%d" % i] = b"z" * 1000
        assert c.volume() <= 100_000
        assert c.db.check() == []
        with pytest.raises(dbm_shm.error):
            c.db.update({b"huge%d" % i: b"h" * 1000 for i in range(200)})


def test_salvage_and_dump_leave_expired_records_behind(tmp_path):
    with dbm_shm.Cache(tmp_path / "c") as c:
        c.set("live", b"1")
        c.set("gone", b"2", ttl=0.1)
        wait_past(0.1)
    dbm_shm.salvage(tmp_path / "c", tmp_path / "copy")
    with dbm_shm.open(tmp_path / "copy", "r") as db:
        assert db.keys() == [b"live"]


def test_check_reports_records_over_the_cap(tmp_path):
    import struct
    with dbm_shm.Cache(tmp_path / "c", max_bytes=100_000) as c:
        for i in range(20):
            c.set(b"k%d" % i, b"x" * 1000)
        assert c.db.check() == []
    # hd_max_bytes: the first field after hd_boot (docs/file-format.md)
    with open(tmp_path / "c", "r+b") as f:
        f.seek(1880)
        assert struct.unpack("<Q", f.read(8))[0] == 100_000
        f.seek(1880)
        f.write(struct.pack("<Q", 5_000))
    with dbm_shm.open(tmp_path / "c", "r") as db:
        problems = db.check()
    assert any("over the cap of 5000" in p for p in problems), problems


def test_a_ttl_beyond_the_clock_never_expires(cache):
    for ttl in (1e10, 2e10, 1e300):
        cache.set("far", b"v", ttl=ttl)
        assert cache.get("far") == b"v"
        assert cache.touch("far", ttl=ttl)
    assert cache.incr("n", ttl=1e300) == 1 and cache.get("n") == b"1"
