"""Shared fixtures and markers for the dbm_shm test suite.

Every test works on real files under pytest's ``tmp_path``; nothing is mocked.
"""

import os

import pytest

import dbm_shm

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The core's fsync/fdatasync calls are skipped in the suite (and in the
# processes its tests start): on a disk whose flush takes 10 ms the suite's
# time doubles (about 8,000 flushes), and the machine's disk is not what it
# tests. The commit protocol is unchanged otherwise (every commit still
# writes its meta, in the same order); tests/api/test_flushes.py runs
# without the hook and counts the flushes of each kind of commit, and the
# power-cut simulator (tests/powercut) builds its states from crash points,
# not from flushes. DSHM_TEST_NOFLUSH=0 runs the whole suite with them.
os.environ.setdefault("DSHM_TEST_NOFLUSH", "1")


def pytest_configure(config):
    # pyproject.toml declares these too (and deselects them by default);
    # registering them here keeps `pytest -p no:cacheprovider tests/...`
    # run from another rootdir free of unknown-marker warnings.
    config.addinivalue_line("markers", "slow: long or large cases (1 GiB values); not run by default")
    config.addinivalue_line("markers", "soak: long multi-process soaks; not run by default")
    config.addinivalue_line("markers", "powercut: crash states of a power cut (tests/powercut); not run by default")


@pytest.fixture
def db_path(tmp_path):
    """Path of a database file that does not exist yet."""
    return tmp_path / "db"


@pytest.fixture
def db(db_path):
    """A database opened with flag 'c' on ``db_path``, closed after the test."""
    d = dbm_shm.open(db_path, "c")
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(autouse=True)
def _run_outside_the_checkout(tmp_path, monkeypatch):
    """Run every test (and the subprocesses it starts) from its own temporary
    directory: from the checkout, ``python -c 'import dbm_shm'`` would find
    the source package, which has no compiled core, instead of the installed
    one under test."""
    if os.path.realpath(os.getcwd()).startswith(os.path.realpath(_REPO)):
        monkeypatch.chdir(tmp_path)
