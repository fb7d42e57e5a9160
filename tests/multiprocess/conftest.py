"""Fixtures for the multi-process tests (helpers live in _helpers.py,
fixtures in _fixtures.py, shared with tests/crash)."""

from _fixtures import _no_robust_mutex_left, procs, store_path  # noqa: F401
