"""dbm_shm.DjangoCache's own behaviour, beyond Django's BaseCacheTests:
its settings (LOCATION, TIMEOUT, OPTIONS), how values lie in the store,
the byte cap, the shared handle, and threads.

Real stores under pytest's tmp_path; backends built through Django's
``caches`` with ``override_settings`` (or directly, as Django does, from
``(LOCATION, params)``). No timed assertion.
"""

import pickle
import threading

import pytest

pytest.importorskip("django.core.cache.backends.base", reason="Django is not installed")

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import dbm_shm
from dbm_shm import DjangoCache


def settings_for(location, **params):
    return {"default": {"BACKEND": "dbm_shm.DjangoCache", "LOCATION": str(location), **params}}


@pytest.fixture
def location(tmp_path):
    return tmp_path / "site.dshm"


@pytest.fixture
def cache(location):
    with override_settings(CACHES=settings_for(location)):
        yield caches["default"]


def raw(location, key):
    """The bytes stored for Django's made ``key`` (version 1, no prefix)."""
    with dbm_shm.open(str(location), "r") as db:
        return db.get(":1:" + key)


# -- settings -------------------------------------------------------------------


def test_backend_string_builds_a_djangocache(cache, location):
    assert type(cache) is DjangoCache
    cache.set("k", "v")
    assert location.exists()
    assert cache.get("k") == "v"


def test_location_is_required():
    for loc in (None, ""):
        with pytest.raises(ImproperlyConfigured, match="LOCATION"):
            DjangoCache(loc, {})


def test_options(location):
    DjangoCache(str(location), {"OPTIONS": {"MAX_BYTES": None}})
    DjangoCache(str(location), {"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}})   # accepted, no effect
    with pytest.raises(ImproperlyConfigured, match="MAX_ITEMS"):
        DjangoCache(str(location), {"OPTIONS": {"MAX_ITEMS": 10}})
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(ImproperlyConfigured, match="MAX_BYTES"):
            DjangoCache(str(location), {"OPTIONS": {"MAX_BYTES": bad}})


def test_pathlike_location(location):
    c = DjangoCache(location, {})
    c.set("k", 1)
    assert raw(location, "k") == b"1"


def test_timeout_setting_none_means_forever(location):
    with override_settings(CACHES=settings_for(location, TIMEOUT=None)):
        c = caches["default"]
        assert c.default_timeout is None
        assert c.get_backend_timeout() is None
        c.set("k", "v")
        assert c.get("k") == "v"


@pytest.mark.parametrize("timeout", [0, -1, -300])
def test_timeout_setting_zero_or_negative_keeps_nothing(location, timeout):
    with override_settings(CACHES=settings_for(location, TIMEOUT=timeout)):
        c = caches["default"]
        c.set("k", "v")
        assert c.get("k") is None
        assert c.add("k", "v") is True
        assert c.has_key("k") is False
        c.set("k", "v", None)                  # an explicit None still keeps it
        assert c.get("k") == "v"


def test_backend_timeout(cache):
    assert cache.default_timeout == 300
    assert cache.get_backend_timeout() == 300
    assert cache.get_backend_timeout(None) is None
    assert cache.get_backend_timeout(0) == 0
    assert cache.get_backend_timeout(-5) == 0
    assert cache.get_backend_timeout(2.5) == 2.5


def test_timeouts_past_the_deadline_range_are_forever(cache):
    """A deadline is 64-bit ns since the epoch (to the year 2554): a longer
    timeout is stored as never expiring instead of failing."""
    for timeout in (10**10, 10**11, 1e300, float("inf")):
        cache.set("k", timeout, timeout)
        assert cache.get("k") == timeout
        assert cache.add("a", 1, timeout) is True
        assert cache.touch("a", timeout) is True
        cache.delete("a")


def test_touch_zero_drops_and_none_keeps(cache):
    cache.set("a", 1, 5)
    assert cache.touch("a", None) is True
    assert cache.get("a") == 1
    assert cache.touch("a", 0) is True
    assert cache.get("a") is None
    assert cache.touch("a", None) is False


# -- values -------------------------------------------------------------------------


def test_values_are_pickled_and_ints_are_decimal_text(cache, location):
    cache.set("i", 42)
    cache.set("neg", -7)
    cache.set("b", True)
    cache.set("s", "text")
    cache.set("n", None)
    cache.set("bytes", b"\x80\x00")
    assert raw(location, "i") == b"42"
    assert raw(location, "neg") == b"-7"
    for key, value in (("b", True), ("s", "text"), ("n", None), ("bytes", b"\x80\x00")):
        data = raw(location, key)
        assert data[:1] == b"\x80"
        assert pickle.loads(data) == value
    assert cache.get("b") is True                  # bool stays bool
    assert cache.get("i") == 42 and type(cache.get("i")) is int
    assert cache.get_many(["i", "b", "n", "absent"]) == {"i": 42, "b": True, "n": None}


def test_a_plain_cache_reads_what_django_stored(cache, location):
    cache.set("config", {"workers": 8})
    cache.set("hits", 3)
    with dbm_shm.Cache(str(location), serializer="pickle") as c:
        assert c.get(cache.make_key("config")) == {"workers": 8}
        assert c.incr(cache.make_key("hits")) == 4
    assert cache.get("hits") == 4


# -- incr / decr --------------------------------------------------------------------


def test_incr_decr(cache):
    cache.set("n", 10)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n", 20) == -4
    assert cache.get("n") == -4
    with pytest.raises(ValueError):
        cache.incr("missing")
    with pytest.raises(ValueError):
        cache.decr("missing")
    assert cache.has_key("missing") is False


def test_incr_of_an_expired_key_raises_and_creates_nothing(cache, location):
    cache.set("n", 10, 0)
    with pytest.raises(ValueError):
        cache.incr("n")
    assert cache.get("n") is None
    assert raw(location, "n") is None


def test_incr_of_a_non_integer_raises_dbm_shm_error_and_changes_nothing(cache):
    for value in ("ten", None, 1.5, True, [1]):
        cache.set("v", value)
        with pytest.raises(dbm_shm.error):
            cache.incr("v")
        assert cache.get("v") == value


def test_incr_past_64_bits_raises(cache):
    cache.set("n", 2**63 - 1)
    with pytest.raises(dbm_shm.error):
        cache.incr("n")
    assert cache.get("n") == 2**63 - 1
    cache.set("big", 2**70)                     # stored, read back; incr refuses it
    assert cache.get("big") == 2**70
    with pytest.raises(dbm_shm.error):
        cache.incr("big")


def test_incr_at_the_extremes_of_64_bits(cache):
    cache.set("lo", -(2**63) + 1)
    assert cache.decr("lo") == -(2**63)
    assert cache.incr("lo", 0) == -(2**63)     # the sentinel's own value, live: not "missing"
    cache.set("hi", 2**63 - 2)
    assert cache.incr("hi") == 2**63 - 1


# -- the cap, the store ------------------------------------------------------------------


def test_max_bytes_caps_the_store_for_every_alias(location):
    cap = 64 * 1024
    with override_settings(CACHES=settings_for(location, TIMEOUT=None, OPTIONS={"MAX_BYTES": cap})):
        c = caches["default"]
        for i in range(2000):
            c.set(f"k{i}", "x" * 200)
        st = c.cache.stats()
        assert st["max_bytes"] == cap
        assert c.cache.volume() <= cap
        assert st["evictions"] > 0
        assert c.get("k1999") == "x" * 200          # the newest is there
        with pytest.raises(dbm_shm.error, match="max_bytes"):
            c.set("huge", "y" * (2 * cap))
        assert c.has_key("huge") is False
    # The cap is in the file: a backend without MAX_BYTES keeps it.
    with override_settings(CACHES=settings_for(location)):
        assert caches["default"].cache.stats()["max_bytes"] == cap
    with override_settings(CACHES=settings_for(location, OPTIONS={"MAX_BYTES": 0})):
        assert caches["default"].cache.stats()["max_bytes"] == 0


def test_prefixes_share_the_store_and_clear_empties_it(location):
    with override_settings(CACHES={"a": settings_for(location)["default"],
                                   "b": {**settings_for(location)["default"], "KEY_PREFIX": "b"}}):
        a, b = caches["a"], caches["b"]
        a.set("k", "from a")
        b.set("k", "from b")
        assert (a.get("k"), b.get("k")) == ("from a", "from b")
        assert a.cache is b.cache                 # one handle per file and process
        b.clear()                                 # the whole store, as FileBasedCache
        assert a.get("k") is None


def test_a_new_backend_opens_the_file_now_at_location(location):
    a = DjangoCache(str(location), {})
    a.set("k", 1)
    assert DjangoCache(str(location), {}).cache is a.cache      # shared
    location.unlink()                          # deleted while open (don't, in production)
    b = DjangoCache(str(location), {})
    assert b.cache is not a.cache
    assert b.get("k") is None
    b.set("k", 2)
    assert a.get("k") == 1                     # an older backend keeps the file it opened
    assert DjangoCache(str(location), {}).get("k") == 2


def test_close_keeps_the_backend_usable(cache):
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1
    cache.close()
    assert cache.incr("k") == 2


def test_threads_share_the_store(location):
    """Django makes one backend per thread; they share one handle and the
    increments of all threads add up."""
    errors, handles = [], []
    n, k = 4, 500
    with override_settings(CACHES=settings_for(location, TIMEOUT=None)):
        caches["default"].set("n", 0)

        def work():
            try:
                c = caches["default"]
                handles.append(c.cache)
                for _ in range(k):
                    c.incr("n")
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert caches["default"].get("n") == n * k
        assert len(handles) == n and all(h is handles[0] for h in handles)


def test_invalid_key_warns_as_django_backends_do(cache):
    from django.core.cache import CacheKeyWarning
    with pytest.warns(CacheKeyWarning):
        cache.set("key with spaces", 1)
    with pytest.warns(CacheKeyWarning):
        assert cache.get("key with spaces") == 1

