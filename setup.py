"""Build of dbm_shm: the C core in csrc/ compiled through cffi.

Metadata lives in pyproject.toml; this file only names the cffi module.
A build with extra compiler flags (DSHM_CFLAGS/DSHM_LDFLAGS, as the
sanitizer tox environment sets them) gets a build directory of its own, so
its objects are never reused by an ordinary build, nor the reverse.
"""

import hashlib
import os

from setuptools import setup

_flags = os.environ.get("DSHM_CFLAGS", "") + "|" + os.environ.get("DSHM_LDFLAGS", "")
_build_base = "build" if _flags == "|" else "build/flags-" + hashlib.sha1(_flags.encode()).hexdigest()[:10]

setup(
    cffi_modules=["csrc/ffi_build.py:ffibuilder"],
    options={"build": {"build_base": _build_base}},
)
