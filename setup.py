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
import shutil
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, ExecError, PlatformError

TOOLCHAIN_HINT = (
    "Building dbm_shm from source compiles its C core, which needs a C compiler "
    "and the Python headers: on Debian/Ubuntu `apt install gcc python3-dev`, on "
    "Fedora `dnf install gcc python3-devel`, on Alpine `apk add gcc musl-dev "
    "python3-dev` (the headers must be those of the Python that runs pip; a "
    "pyenv or python.org Python brings its own)."
)


def missing_toolchain(compiler_cmd, include_dir):
    """What is missing to compile the C core, one phrase each (empty when
    nothing is): the compiler ``compiler_cmd[0]`` not found, or no
    ``Python.h`` in ``include_dir``."""
    missing = []
    if compiler_cmd and shutil.which(compiler_cmd[0]) is None:
        named_by = " (as CC names it)" if os.environ.get("CC") else ""
        missing.append(f"no C compiler: {compiler_cmd[0]!r} not found{named_by}")
    if include_dir and not os.path.isfile(os.path.join(include_dir, "Python.h")):
        missing.append(f"no Python headers: {os.path.join(include_dir, 'Python.h')} is missing")
    return missing


class BuildExt(build_ext):
    """build_ext that, when the compiler or the Python headers are missing,
    stops with a message that says so and how to get them, before (or
    instead of) the compiler's own error. cffi's build_ext wraps this one."""

    def _check_toolchain(self):
        missing = missing_toolchain(getattr(self.compiler, "compiler_so", None),
                                    sysconfig.get_paths().get("include"))
        if missing:
            raise PlatformError("dbm_shm: cannot build the C core: " + "; ".join(missing)
                                + ".\n" + TOOLCHAIN_HINT)

    def build_extensions(self):
        self._check_toolchain()
        try:
            super().build_extensions()
        except (CompileError, ExecError, OSError):
            self._check_toolchain()     # says what is missing, if that is why
            raise

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
    cmdclass={"build_ext": BuildExt},
    cffi_modules=["csrc/ffi_build.py:ffibuilder"],
    ext_modules=_ext_modules,
    options={"build": {"build_base": _build_base}},
)
