"""Build of dbm_shm: the C core in csrc/ compiled through cffi.

Metadata lives in pyproject.toml; this file only names the cffi module.
"""

from setuptools import setup

setup(cffi_modules=["csrc/ffi_build.py:ffibuilder"])
