"""Fixtures for the crash tests: those of tests/multiprocess, shared
through tests/_support (see its __init__ for how it is imported)."""

from _support.fixtures import _no_robust_mutex_left, procs, store_path  # noqa: F401
