"""Fixtures for the damaged-file tests: the base files, built once per
session in a subprocess (tests/fuzz/_fuzz_worker.py build)."""

import pytest

from . import _fuzzlib as fl


@pytest.fixture(scope="session")
def bases(tmp_path_factory):
    """name -> _fuzzlib.Base: valid stores of every shape in _fuzzlib.BASES."""
    return fl.build_bases(tmp_path_factory.mktemp("bases"))
