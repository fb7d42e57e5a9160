"""CPython's own ``test.test_shelve``, run over dbm_shm.

``test.test_shelve`` generates ``TestProto<n>File_<suffix>Shelve`` for every
pickle protocol and every module in ``dbm._names`` at import time (each sets
``dbm._defaultmod`` to its backend in ``setUp``); its ``TestCase`` class opens
shelves with ``shelve.open()`` and so uses whatever backend ``dbm.open``
picks for new files.  A private copy of the running interpreter's suite is
imported while ``dbm_shm.register(default=True)`` is in effect, and the tests
run with that registration (``REGISTER`` below, see conftest.py), so:

* ``TestProto<n>File_shmShelve``: the mapping-protocol tests on a shelf
  stored in a dbm.shm file, for every pickle protocol;
* ``TestCase``: ``shelve.open()`` on new files, which must be dbm.shm files
  (checked by ``test_shelve_open_creates_dbm_shm_file`` below).

The in-memory shelves and the other backends' classes test CPython, not
dbm_shm, and are not collected.
"""

import dbm
import shelve

from . import _cpython

REGISTER = {"default": True}

_suite = _cpython.load_suite("test_shelve", register_default=True)

_shm_file_cases = _cpython.testcases(
    _suite, lambda name, cls: name.endswith("File_%sShelve" % _cpython.SUFFIX)
)
assert _shm_file_cases, "test.test_shelve generated no %s classes" % _cpython.BACKEND
globals().update(_shm_file_cases)

TestCase = _suite.TestCase


def test_shelve_open_creates_dbm_shm_file():
    """With register(default=True), shelve.open() makes dbm.shm files.

    Without this, ``TestCase`` above would quietly test another backend.
    """
    with shelve.open("shelf") as shelf:
        shelf["key"] = [1, 2, 3]
    assert dbm.whichdb("shelf") == _cpython.BACKEND
    with shelve.open("shelf", "r") as shelf:
        assert shelf["key"] == [1, 2, 3]
