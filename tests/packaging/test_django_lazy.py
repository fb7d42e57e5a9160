"""``dbm_shm.DjangoCache`` is imported lazily: ``import dbm_shm`` never
imports Django, and the package works where Django is not installed.

Each case runs in a fresh interpreter (what a process has imported is the
thing under test). "Django not installed" is made real for the child with
``sys.modules["django"] = None``, Python's way of making an import fail.
"""

import subprocess
import sys
import textwrap

import pytest


def _run(code):
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_import_dbm_shm_imports_no_django(tmp_path):
    out = _run(f"""
        import sys
        import dbm_shm
        from dbm_shm import *
        with dbm_shm.Cache({str(tmp_path / "c")!r}, serializer="pickle") as c:
            c.set("k", [1])
            assert c.get("k") == [1]
        print(sorted(m for m in sys.modules if m == "django" or m.startswith("django.")))
        print("DjangoCache" in dbm_shm.__all__, "DjangoCache" in vars(dbm_shm))
    """)
    assert out == "[]\nFalse False\n"


def test_without_django_the_core_works_and_djangocache_raises_importerror(tmp_path):
    out = _run(f"""
        import sys
        sys.modules["django"] = None          # as if Django were not installed
        import dbm_shm
        with dbm_shm.open({str(tmp_path / "db")!r}, "c") as db:
            db["k"] = "v"
        try:
            dbm_shm.DjangoCache
        except ImportError as e:
            print("ImportError", e.name.split(".")[0])
        try:
            dbm_shm.NoSuchName
        except AttributeError as e:
            print(e)
    """)
    assert out == "ImportError django\nmodule 'dbm_shm' has no attribute 'NoSuchName'\n"


def test_djangocache_is_imported_on_first_lookup():
    pytest.importorskip("django.core.cache.backends.base", reason="Django is not installed")
    out = _run("""
        import sys
        import dbm_shm
        assert "dbm_shm._django" not in sys.modules
        cls = dbm_shm.DjangoCache
        from django.core.cache.backends.base import BaseCache
        from dbm_shm._django import DjangoCache
        print(cls is DjangoCache, issubclass(cls, BaseCache), "DjangoCache" in vars(dbm_shm))
    """)
    assert out == "True True True\n"
