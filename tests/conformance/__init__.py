"""CPython's own dbm test suites run against dbm_shm (see _cpython.py)."""
