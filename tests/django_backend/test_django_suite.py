"""Django's own cache tests (``BaseCacheTests`` of Django's
``tests/cache/tests.py``) against ``dbm_shm.DjangoCache``.

``DbmShmCacheTests`` subclasses Django's ``BaseCacheTests`` mixin and
``django.test.TestCase`` exactly as Django's own ``FileBasedCacheTests`` and
``RedisCacheTests`` do: ``override_settings(CACHES=caches_setting_for_tests(
BACKEND=..., exclude=...))`` with Django's helper, and ``setUp`` pointing
every alias at one new store file (as FileBasedCacheTests points them at one
new directory). Every test of the mixin runs unchanged, except those listed
in :data:`EXCLUDED`, each with its reason (docs/django.md lists them too).

``DSHM_DJANGO_HARNESS_CHECK=1`` also collects Django's own
``LocMemCacheTests`` and ``FileBasedCacheTests`` unchanged: a check of this
harness (settings, test database, import of Django's suite) with Django's
own backends, not a test of dbm_shm.
"""

import os
import shutil
import tempfile

import pytest

pytest.importorskip("django.core.cache.backends.base", reason="Django is not installed")

from django.test import TestCase, override_settings
from django.test.signals import setting_changed
from django.test.utils import setup_databases, setup_test_environment, teardown_databases, \
    teardown_test_environment

import dbm_shm
from cache.tests import BaseCacheTests, caches_setting_for_tests

#: The aliases of Django's test CACHES that configure entry-count culling
#: (``OPTIONS: MAX_ENTRIES / CULL_FREQUENCY``). dbm_shm caps bytes, not
#: entries, so they are left out of the settings exactly as Django's
#: RedisCacheTests (and the memcached tests) leave them out; the three
#: tests that use them (test_cull, test_zero_cull,
#: test_cull_delete_when_store_empty) then skip themselves with Django's
#: own reason, "Culling isn't implemented.".
EXCLUDED_CACHES = {"cull", "zero_cull"}

#: Tests of BaseCacheTests that do not apply, with the reason. Each is
#: replaced by a test that skips with that reason, so the count of Django's
#: tests run is honest.
EXCLUDED = {}


def _excluded(reason):
    def test(self):
        self.skipTest(reason)
    return test


@pytest.fixture(scope="module", autouse=True)
def _django_test_environment():
    """Django's test environment and test database (an in-memory SQLite
    with the ``cache`` app's tables), as Django's test runner sets them up
    around its suite."""
    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(old, verbosity=0)
    teardown_test_environment()


@override_settings(
    CACHES=caches_setting_for_tests(
        BACKEND="dbm_shm.DjangoCache",
        exclude=EXCLUDED_CACHES,
    )
)
class DbmShmCacheTests(BaseCacheTests, TestCase):
    """Django's BaseCacheTests with every cache alias on one dbm_shm store."""

    # What dbm_shm.DjangoCache.incr()/decr() raise for a value that is not
    # an integer (Django's hook for backends whose client raises its own
    # error, as RedisCacheTests and the memcached tests set it).
    incr_decr_type_error = dbm_shm.error

    def setUp(self):
        super().setUp()
        # A new store file for each test, shared by every alias (prefix, v2,
        # custom_key...), as FileBasedCacheTests shares one directory: the
        # settings are changed in place and setting_changed sent by hand,
        # since LOCATION cannot be set through override_settings per test.
        self.dirname = tempfile.mkdtemp(prefix="dshm-django-")
        from django.conf import settings
        for params in settings.CACHES.values():
            params["LOCATION"] = os.path.join(self.dirname, "cache.dshm")
        setting_changed.send(self.__class__, setting="CACHES", enter=False)

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dirname)

    def test_zz_backend_under_test(self):
        """Not Django's: every alias of this class is a dbm_shm.DjangoCache
        on this test's store file (so the tests above tested it)."""
        from django.core.cache import caches
        path = os.path.join(self.dirname, "cache.dshm")
        aliases = ("default", "prefix", "v2", "custom_key", "custom_key2")
        for alias in aliases:
            self.assertIs(type(caches[alias]), dbm_shm.DjangoCache)
            caches[alias].set("probe-" + alias, alias)
        with dbm_shm.Cache(path, serializer="pickle") as raw:
            for alias in aliases:
                self.assertEqual(raw.get(caches[alias].make_key("probe-" + alias)), alias)
        self.assertEqual(sorted(caches.settings), ["custom_key", "custom_key2", "default", "prefix", "v2"])


for _name, _reason in EXCLUDED.items():
    assert hasattr(BaseCacheTests, _name), _name
    setattr(DbmShmCacheTests, _name, _excluded(_reason))


if os.environ.get("DSHM_DJANGO_HARNESS_CHECK") == "1":
    from cache.tests import FileBasedCacheTests, LocMemCacheTests  # noqa: F401
