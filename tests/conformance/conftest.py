"""Fixtures for running CPython's dbm test suites against dbm_shm.

See _cpython.py for how the suites are loaded.
"""

import os

import pytest

from . import _cpython


def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in _cpython.EXPECTED_FAILURES xfail(strict)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        path = os.path.abspath(str(item.path))
        if os.path.dirname(path) != here:
            continue
        key = "::".join([os.path.basename(path)] + item.nodeid.split("::")[1:])
        reason = _cpython.EXPECTED_FAILURES.get(key)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(autouse=True, scope="module")
def _dbm_shm_registered(request):
    """Keep the target registered while a module's tests run.

    A test module asks for it with a module global
    ``REGISTER = {"default": <bool>}``; the stdlib ``dbm`` package is
    restored after the module's last test.
    """
    kwargs = getattr(request.module, "REGISTER", None)
    if kwargs is None:
        yield None
        return
    with _cpython.registered(**kwargs) as module:
        yield module


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path, monkeypatch):
    """Run each test in its own empty directory.

    CPython's suites create their files at relative paths (``TESTFN``,
    e.g. ``@test_1234_tmp``), as regrtest runs them in a scratch directory.
    """
    monkeypatch.chdir(tmp_path)
