"""Errors: ``dbm_shm.error`` and the mapping from C return codes to it.

``error`` subclasses both the stdlib ``dbm`` error class and ``OSError``, so
``except dbm.error`` and ``except OSError`` both catch it, as they catch
``dbm.gnu.error``.
"""

from __future__ import annotations

import dbm
import errno
import os
from typing import NoReturn, Optional, Union

from ._dshm import ffi, lib

__all__ = ["error", "raise_for", "CLOSED_MESSAGE"]

#: The message dbm.gnu uses for a closed database; kept word for word so code
#: (and CPython's own test suite) that matches on it works unchanged.
CLOSED_MESSAGE = "GDBM object has already been closed"

_dbm_error_base = dbm.error[0] if isinstance(dbm.error, tuple) else dbm.error


class error(_dbm_error_base, OSError):  # type: ignore[misc,valid-type]
    """The exception dbm_shm raises: a subclass of ``dbm.error`` and ``OSError``.

    ``errno`` is set for system errors; ``code`` holds the C core's return
    code; ``filename`` names the database file where one applies.
    """

    code: Optional[int] = None

    def __str__(self) -> str:
        # OSError prints "[Errno None] None: 'path'" for an error that has a
        # filename but no errno; ours carry the path in the message.
        if self.errno is None and len(self.args) == 1:
            return str(self.args[0])
        return super().__str__()


# Short, user-facing texts for the library's own codes (the C strerror
# table carries the symbolic name; both appear in the message).
_HINTS = {
    lib.DSHM_BAD_MAGIC: "not a dbm_shm database file",
    lib.DSHM_VERSION_MISMATCH: "database file written by another dbm_shm format version or build",
    lib.DSHM_CORRUPT: "database file is corrupt",
    lib.DSHM_TRUNCATED: "database file is truncated",
    lib.DSHM_READONLY: "database is opened read-only",
    lib.DSHM_NEED_RECOVERY: "a writer died and the file needs repair: open it for writing",
    lib.DSHM_FULL: "file size or address-space limit reached",
    lib.DSHM_TOOBIG: "key or value too large",
    lib.DSHM_BUSY: "database file is being created by another process",
    lib.DSHM_INVALID: "invalid argument",
}


# System errors whose strerror text would mislead for one operation.
_ERRNO_TEXT = {
    # dshm_reorganize: the path names another file than the handle's (it was
    # replaced since the open); the compact copy was not renamed over it.
    ("reorganize", errno.ESTALE):
        "the path now names another file (it was replaced since this handle opened it); "
        "nothing was changed",
}


def raise_for(rc: int, what: str, path: Union[str, bytes, None] = None) -> NoReturn:
    """Raise the ``error`` for C return code ``rc`` from operation ``what``.

    Positive codes (and the -errno that length-returning calls use) are
    errno values and give an errno-style error with ``filename`` set.
    """
    if rc == lib.DSHM_CLOSED:
        raise error(CLOSED_MESSAGE)
    if not -(2**31) <= rc < 2**31:   # not a return code at all: a damaged count
        rc = lib.DSHM_CORRUPT
    if 0 < rc or -4096 < rc < 0:
        eno = abs(rc)
        text = _ERRNO_TEXT.get((what, eno)) or os.strerror(eno)
        e = error(eno, f"{what}: {text}", path) if path is not None \
            else error(eno, f"{what}: {text}")
        e.code = rc
        raise e
    detail = _HINTS.get(rc) or ffi.string(lib.dshm_strerror(rc)).decode()
    name = ffi.string(lib.dshm_strerror(rc)).decode().split(":", 1)[0]
    where = f": {os.fsdecode(path)!r}" if path is not None else ""
    e = error(f"{what}: {detail} ({name}){where}")
    e.filename = path
    e.code = rc
    raise e
