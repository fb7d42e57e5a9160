"""Build of dbm_shm: the C core in csrc/ compiled through cffi, and the C
fast path of Database (``dbm_shm._fast``, CPython C API).

Metadata lives in pyproject.toml; this file only names the cffi module and
the extension. A build with extra compiler flags (DSHM_CFLAGS/DSHM_LDFLAGS,
as the sanitizer tox environment sets them) gets a build directory of its
own, so its objects are never reused by an ordinary build, nor the reverse;
the flags apply to both modules.

``dbm_shm._fast`` is built on CPython on Linux with the GIL, and there a
failed build fails the install (a missing fast path must be loud). Elsewhere
(PyPy, other systems, free-threaded builds) it is left out and the package
runs on the cffi path alone.
"""

import hashlib
import os
import platform
import shlex
import sys
import sysconfig

from setuptools import Extension, setup

_flags = os.environ.get("DSHM_CFLAGS", "") + "|" + os.environ.get("DSHM_LDFLAGS", "")
_build_base = "build" if _flags == "|" else "build/flags-" + hashlib.sha1(_flags.encode()).hexdigest()[:10]


def _fast_wanted() -> bool:
    """Is the C fast path built here (and then required)?"""
    return (platform.python_implementation() == "CPython" and sys.platform.startswith("linux")
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))


_ext_modules = []
if _fast_wanted():
    _ext_modules.append(Extension(
        "dbm_shm._fast",
        sources=["dbm_shm/_fast.c"],
        extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-UNDEBUG"]
        + shlex.split(os.environ.get("DSHM_CFLAGS", "")),
        extra_link_args=shlex.split(os.environ.get("DSHM_LDFLAGS", "")),
        optional=False,
    ))

setup(
    cffi_modules=["csrc/ffi_build.py:ffibuilder"],
    ext_modules=_ext_modules,
    options={"build": {"build_base": _build_base}},
)
