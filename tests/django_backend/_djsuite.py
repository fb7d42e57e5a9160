"""Django's own cache tests (``tests/cache/`` of Django's source), for the
installed Django, and the minimal settings they run under.

Django's test suite is not in its wheel, only in its source distribution.
:func:`suite_dir` returns a folder holding Django's ``tests/cache/`` package
(imported as ``cache``: ``cache.tests``, ``cache.models``) for exactly the
installed ``django.__version__``:

* ``DSHM_DJANGO_TESTS=<folder>`` names a folder that already holds it (a
  ``cache/`` package inside): nothing is fetched (offline use).
* Otherwise it is taken from the cache folder
  ``$DSHM_DJANGO_TESTS_CACHE`` (``tox -e django`` sets it under ``.tox``;
  default ``$XDG_CACHE_HOME/dbm_shm`` or ``~/.cache/dbm_shm``), in
  ``django-<version>-tests/``.
* If it is not there yet, ``pip download --no-deps --no-binary :all:
  django==<version>`` fetches the sdist from the package index (pip checks
  its hash), and ``tests/cache/*.py`` are extracted from it, into a
  temporary folder renamed into place, so a run that dies half way leaves
  nothing half written.

Nothing is edited: the files are Django's, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict


def _cache_root() -> Path:
    env = os.environ.get("DSHM_DJANGO_TESTS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dbm_shm"


def _extract(sdist: Path, version: str, into: Path) -> None:
    """Django's ``tests/cache/*.py`` of the sdist into ``into/cache/``."""
    prefix = f"django-{version}/tests/cache/"
    (into / "cache").mkdir(parents=True)
    found = 0
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name
            rest = name[len(prefix):] if name.startswith(prefix) else ""
            if not member.isfile() or "/" in rest or not rest.endswith(".py"):
                continue
            src = tar.extractfile(member)
            assert src is not None
            (into / "cache" / rest).write_bytes(src.read())
            found += 1
    if not (into / "cache" / "tests.py").is_file():
        raise RuntimeError(f"{sdist.name} has no {prefix}tests.py ({found} files under {prefix})")


def fetch(version: str, root: Path) -> Path:
    """Download Django ``version``'s sdist and extract its cache tests under
    ``root``; return the folder that holds the ``cache`` package."""
    final = root / f"django-{version}-tests"
    if (final / "cache" / "tests.py").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".django-{version}-", dir=root))
    try:
        dl = work / "dl"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(dl), f"django=={version}"]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        sdists = sorted(dl.glob("[Dd]jango-*.tar.gz")) if dl.is_dir() else []
        if p.returncode != 0 or len(sdists) != 1:
            raise RuntimeError(
                f"could not fetch Django {version}'s source distribution for its cache tests "
                f"({' '.join(cmd[2:])} exited {p.returncode}):\n{p.stdout}{p.stderr}\n"
                "Offline, set DSHM_DJANGO_TESTS to a folder holding Django's tests/cache/ "
                "package as cache/.")
        _extract(sdists[0], version, work / "out")
        try:
            os.rename(work / "out", final)
        except OSError:
            if not (final / "cache" / "tests.py").is_file():   # not another run's rename
                raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def suite_dir() -> Path:
    """The folder holding Django's ``cache`` test package for the installed
    Django (see the module docstring)."""
    import django

    env = os.environ.get("DSHM_DJANGO_TESTS")
    if env:
        path = Path(env)
        if not (path / "cache" / "tests.py").is_file():
            raise RuntimeError(f"DSHM_DJANGO_TESTS={env}: no cache/tests.py in it")
        return path
    return fetch(django.__version__, _cache_root())


#: The settings Django's cache tests run under: an in-memory SQLite
#: database (``BaseCacheTests`` caches model instances of the ``cache``
#: app's ``Poll``), the ``cache`` test app, and no cache configured beyond
#: Django's default (each test class sets CACHES with override_settings).
SETTINGS: Dict[str, Any] = {
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "INSTALLED_APPS": ["cache"],
    "SECRET_KEY": "dbm_shm tests: not secret",
    "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
    "USE_TZ": True,
    "MIDDLEWARE": [],
}


def setup() -> Path:
    """Fetch Django's cache tests, put them on ``sys.path``, configure the
    settings (once per process) and run ``django.setup()``; return the
    folder of the ``cache`` package's parent."""
    import django
    from django.conf import settings

    path = suite_dir()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    # "cache" must be Django's test package, not a namespace package some
    # folder named cache/ on sys.path would make.
    mod = sys.modules.get("cache")
    if mod is not None and getattr(mod, "__file__", None) is None:
        del sys.modules["cache"]
    import cache

    if Path(cache.__file__).resolve().parent != (path / "cache").resolve():
        raise RuntimeError(f"'import cache' found {cache.__file__}, not Django's tests in {path}")
    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()
    return path
