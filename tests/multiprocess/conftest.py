"""Fixtures for the multi-process tests (helpers live in tests/_support/:
helpers.py and fixtures.py, shared with tests/crash)."""

from _support.fixtures import _no_robust_mutex_left, procs, store_path  # noqa: F401
