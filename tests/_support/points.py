"""The writer crash points the crash tests kill a crash child at (the
child of ``_support.helpers``: ``CrashChild``), shared by
tests/crash/test_sigkill.py and tests/crash/test_repair_crash.py.

Each is named by its ``DSHM_CRASH_POINT`` in csrc/ and maps to
(scenario of the crash child, n-th pass of the point to die at, keys the
store starts with): the scenario and the store are picked so that the
n-th pass comes well inside the child's run.
"""

from typing import Dict, Tuple

#: crash point -> (scenario, n-th pass, keys to start with)
WRITER_POINTS: Dict[str, Tuple[str, int, int]] = {
    "put-written": ("set", 300, 2000),
    "put-replaced": ("set", 300, 2000),
    "insert": ("grow", 500, 2000),
    "remove": ("delete", 200, 2000),
    "del-removed": ("delete", 200, 2000),
    "double": ("grow", 4, 0),
    "split-intent": ("grow", 20, 0),
    "split-switch": ("grow", 20, 0),
    "clear": ("clear", 1, 2000),
    "reorganize": ("reorganize", 2, 2000),
    "reorganize-renamed": ("reorganize", 2, 2000),
    # a bucket chain copied (copy on write after a commit) and switched in
    "cow-switched": ("set", 5, 2000),
    # a commit (sync()), between its steps (csrc/dshm_commit.c)
    "commit-begin": ("sync", 3, 2000),
    "commit-flushed": ("sync", 3, 2000),
    "commit-meta": ("sync", 3, 2000),
    "commit-synced": ("sync", 3, 2000),
}
