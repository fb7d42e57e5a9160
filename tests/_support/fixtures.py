"""Fixtures shared by tests/multiprocess and tests/crash (each conftest
imports them, which is how pytest finds them): ``_support.fixtures``."""

import multiprocessing

import pytest

from .helpers import Procs, robust_list_next, store_dir


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
