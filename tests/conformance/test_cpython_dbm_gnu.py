"""CPython's own ``test.test_dbm_gnu``, run with dbm_shm in place of dbm.gnu.

DESIGN.md section 2: ``import dbm_shm as gdbm`` is a drop-in swap for
``dbm.gnu``.  The suite's module global is ``gdbm = import_module("dbm.gnu")``;
a private copy of the running interpreter's suite is imported with
``sys.modules['dbm.gnu']`` (and ``'_gdbm'``) set to dbm_shm, so every
``gdbm.open`` / ``gdbm.error`` / ``gdbm.open_flags`` in it is dbm_shm's.
Every TestCase class the suite defines is collected under its own name.
"""

from . import _cpython

_suite = _cpython.load_suite("test_dbm_gnu", substitute=("dbm.gnu", "_gdbm"))
assert _suite.gdbm is _cpython.target(), (
    "test.test_dbm_gnu did not pick up the substituted module: "
    "its 'gdbm' global is %r" % (_suite.gdbm,)
)

globals().update(_cpython.testcases(_suite))
