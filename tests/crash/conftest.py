"""Fixtures for the crash tests: the helpers and fixtures of
tests/multiprocess (_helpers.py, _fixtures.py), shared."""

import sys
from pathlib import Path

_MP = str(Path(__file__).resolve().parent.parent / "multiprocess")
if _MP not in sys.path:
    sys.path.insert(0, _MP)

from _fixtures import _no_robust_mutex_left, procs, store_path  # noqa: E402,F401
