"""CPython's own ``test.test_dbm``, run with dbm_shm registered as ``dbm.shm``.

``test.test_dbm`` generates one ``TestCase_<suffix>`` per module in
``dbm._names`` at import time (``AnyDBMTestCase`` mixed into
``unittest.TestCase`` by ``type()``).  A private copy of the running
interpreter's suite is imported while ``dbm_shm.register()`` is in effect, so
it generates ``TestCase_shm``; the tests then run with dbm_shm registered
(``REGISTER`` below, see conftest.py).

Collected here:

* ``TestCase_shm``: the whole AnyDBMTestCase mixin against ``dbm.shm``.
* ``WhichDBTestCase``: unchanged.  Its ``test_whichdb`` walks every backend in
  ``dbm._names`` (dbm.shm included) but asks a freshly re-executed copy of
  the ``dbm`` package, which cannot know dbm.shm: expected to fail, see
  ``_cpython.EXPECTED_FAILURES``.
* ``WhichDBTestCase_live``: the same tests, asking the live, registered
  ``dbm`` package (``_cpython.on_live_dbm``).

The other backends' generated cases (``TestCase_dumb``, ...) test CPython,
not dbm_shm, and are not collected.
"""

from . import _cpython

REGISTER = {"default": False}

_suite = _cpython.load_suite("test_dbm", register_default=False)

TestCase_shm = _cpython.require(_suite, "TestCase_" + _cpython.SUFFIX)
WhichDBTestCase = _suite.WhichDBTestCase
WhichDBTestCase_live = _cpython.on_live_dbm(_suite.WhichDBTestCase)
