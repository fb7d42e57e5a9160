"""Machinery shared by tests/multiprocess and tests/crash: self-checking
values, worker processes, the crash child and the next writer
(``helpers``), and their pytest fixtures (``fixtures``).

How it is found: ``tests/`` has no ``__init__.py``, so pytest (in its
default ``prepend`` import mode, and in ``append``) puts ``tests/`` on
``sys.path`` when it loads the rootless ``tests/conftest.py``; test files
then import ``_support.helpers`` like any module, and ``multiprocessing``
children (spawn, forkserver) inherit that path. A child started as a
script (``python tests/_support/helpers.py crash-child ...``, or a test
file run as one) gets it through :func:`child_env`'s ``PYTHONPATH``.
"""

import os
from pathlib import Path
from typing import Dict, Optional

#: The tests/ directory: the root under which ``_support`` is a package.
TESTS = Path(__file__).resolve().parent.parent


def child_env(crash_at: Optional[str] = None) -> Dict[str, str]:
    """``os.environ`` for a child process that runs a script: ``tests/``
    first on its ``PYTHONPATH`` (so it imports ``_support`` as the tests
    do), and ``DSHM_CRASH_AT`` set to ``crash_at`` (removed if None, so a
    crash point armed for one child never leaks into another)."""
    env = {k: v for k, v in os.environ.items() if k != "DSHM_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if crash_at:
        env["DSHM_CRASH_AT"] = crash_at
    return env
