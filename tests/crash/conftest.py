"""Fixtures for the crash tests. The helpers are shared with
tests/multiprocess (tests/multiprocess/_helpers.py)."""

import sys
from pathlib import Path

import multiprocessing

import pytest

_MP = str(Path(__file__).resolve().parent.parent / "multiprocess")
if _MP not in sys.path:
    sys.path.insert(0, _MP)

from _helpers import Procs, robust_list_next, store_dir  # noqa: E402


@pytest.fixture
def store_path(tmp_path):
    """Path (str) of a store file that does not exist yet."""
    return str(store_dir(tmp_path) / "store.dshm")


@pytest.fixture(autouse=True)
def _no_robust_mutex_left():
    """After each test this thread holds no robust mutex: its robust-futex
    list is empty. (A list left pointing into a closed store's mapping
    makes the next lock of any store by this thread segfault.)"""
    yield
    r = robust_list_next()
    if r is not None and r[0] != r[1]:
        pytest.fail(f"this thread's robust-futex list is not empty after the test "
                    f"(head {r[0]:#x} -> {r[1]:#x}): a writer lock is held or was left on the list")


@pytest.fixture
def procs():
    """Worker processes (spawn context) for one test; any still running
    when the test ends (it failed) are killed."""
    p = Procs(multiprocessing.get_context("spawn"))
    yield p
    p.kill_all()
