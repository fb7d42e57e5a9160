"""cffi build script for the dbm_shm C core (out-of-line API mode).

``setup.py`` names ``csrc/ffi_build.py:ffibuilder`` in ``cffi_modules``; the
compiled module is ``dbm_shm._dshm``. ``DSHM_CFLAGS`` adds compiler flags
(the sanitizer tox environment uses it).
"""

import os
import shlex

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [   # bottom layer first (the table in CONTRIBUTING.md; .ci/layers.py checks it)
    "dshm_err.c",
    "dshm_guard.c",
    "dshm_wake.c",
    "dshm_walk.c",
    "dshm_evict.c",
    "dshm_hash.c",
    "dshm_meta.c",
    "dshm_space.c",
    "dshm_index.c",
    "dshm_lock.c",
    "dshm_journal.c",
    "dshm_recover.c",
    "dshm_commit.c",
    "dshm_file.c",
    "dshm_handle.c",
    "dshm_read.c",
    "dshm_iter.c",
    "dshm_write.c",
    "dshm_take.c",
    "dshm_cache.c",
    "dshm_check.c",
    "dshm_wait.c",
    "dshm_salvage.c",
    "dshm_dump.c",
    "dshm_reorg.c",
    "dshm_rmw.c",
    "dshm_batch.c",
    "dshm_txn.c",
]

#: The project's C flags (.ci/layers.py reads this list too).
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-UNDEBUG"]

ffibuilder = FFI()
with open(os.path.join(HERE, "cdef.h")) as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "dbm_shm._dshm",
    '#include "dbm_shm.h"',
    sources=[os.path.relpath(os.path.join(HERE, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=CFLAGS + shlex.split(os.environ.get("DSHM_CFLAGS", "")),
    extra_link_args=shlex.split(os.environ.get("DSHM_LDFLAGS", "")),
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
