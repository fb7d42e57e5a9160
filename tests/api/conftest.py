"""Fixtures shared by the API tests (beside tests/conftest.py's)."""

import pytest

import dbm_shm


@pytest.fixture
def other(db, db_path):
    """A second, read-only handle on the file of ``db``: it sees only
    committed state."""
    o = dbm_shm.open(db_path, "r")
    try:
        yield o
    finally:
        o.close()
