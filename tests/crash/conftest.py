"""Fixtures for the crash tests: those of tests/multiprocess, shared
through tests/_support (see its __init__ for how it is imported); and a
line in the run's summary on what the kill-the-repairer cells did."""

from _support.fixtures import _no_robust_mutex_left, procs, store_path  # noqa: F401


def pytest_terminal_summary(terminalreporter):
    from _support.repair_matrix import STATS
    if STATS:
        terminalreporter.write_line("kill-the-repairer cells: " + ", ".join(f"{n} {k}" for k, n in STATS.items()))


def pytest_configure(config):
    # pyproject.toml declares these too (and deselects them by default);
    # here for a run from another rootdir (as tests/conftest.py does).
    config.addinivalue_line("markers", "crashmatrix: the kill-the-repairer matrix beyond its sample")
    config.addinivalue_line("markers", "underload: crash and damaged-file cases under CPU load")
