"""Errors: ``dbm_shm.error`` and the mapping from C return codes to it.

``error`` subclasses both the stdlib ``dbm`` error class and ``OSError``, so
``except dbm.error`` and ``except OSError`` both catch it, as they catch
``dbm.gnu.error``.
"""

from __future__ import annotations

import dbm
import errno
import os
import shlex
import threading
from types import TracebackType
from typing import NoReturn, Optional, Type, Union

from ._dshm import ffi, lib

__all__ = ["error", "raise_for", "CLOSED_MESSAGE"]

#: The file format this build reads and writes. MUST match DSHM_FORMAT in
#: csrc/dshm_layout.h (the C core does not export it; the test
#: tests/cli/test_upgrade.py::test_file_format_constant compares the two, and
#: with the format of a file the built core creates). Used for messages
#: and by ``dbm_shm.upgrade`` (dbm_shm/_upgrade.py).
_FILE_FORMAT = 2

_MAGIC = b"\x93DSHM\r\n\x1a"

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


# System errors whose strerror text would mislead for one operation.
_ERRNO_TEXT = {
    # dshm_reorganize: the path names another file than the handle's (it was
    # replaced since the open); the compact copy was not renamed over it.
    ("reorganize", errno.ESTALE):
        "the path now names another file (it was replaced since this handle opened it); "
        "nothing was changed",
}

# -EDEADLK from any write: the calling thread holds the writer lock for a
# transaction on the handle (csrc/dshm_txn.c); the mutex is not recursive.
_EDEADLK_TEXT = ("this thread holds the writer lock for a transaction() on this handle; "
                 "do this through the transaction, or after it; nothing was changed")


# -- Interrupting a wait for the writer lock --------------------------------
# The C core waits for the writer lock in slices and calls this hook between
# two (dshm_set_interrupt_hook): it runs the interpreter's pending signal
# handlers (in the main thread), and an exception one raises (Ctrl-C's
# KeyboardInterrupt) ends the wait: the call returns -EINTR having changed
# nothing, and raise_for() raises that exception in its place.

_interrupted = threading.local()


def _tick() -> None:
    """A Python-level call: entering it runs pending signal handlers."""


def _stash(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> int:
    _interrupted.exc = exc
    return 1


@ffi.def_extern(error=1, onerror=_stash)
def _dshm_interrupt_hook() -> int:
    _tick()
    return 0


lib.dshm_set_interrupt_hook(lib._dshm_interrupt_hook)


def raise_for(rc: int, what: str, path: Union[str, bytes, None] = None) -> NoReturn:
    """Raise the ``error`` for C return code ``rc`` from operation ``what``.

    The C core returns -errno for a system error: that gives an
    errno-style error with ``filename`` set, and ``code`` the errno value.
    The library's own codes give a message with the code's user-facing text
    and its name, both from the C core (``dshm_errhint``, ``dshm_strerror``).
    """
    if rc == lib.DSHM_CLOSED:
        raise error(CLOSED_MESSAGE)
    if rc == -errno.EINTR:
        exc = getattr(_interrupted, "exc", None)
        if exc is not None:   # a signal handler's exception ended a wait for the lock
            _interrupted.exc = None
            raise exc
    if not -(2**31) <= rc < 2**31:   # not a return code at all: a damaged count
        rc = lib.DSHM_CORRUPT
    if 0 < rc or -4096 < rc < 0:
        eno = abs(rc)
        text = _ERRNO_TEXT.get((what, eno)) or (_EDEADLK_TEXT if eno == errno.EDEADLK else os.strerror(eno))
        e = error(eno, f"{what}: {text}", path) if path is not None \
            else error(eno, f"{what}: {text}")
        e.code = eno
        raise e
    if rc == lib.DSHM_VERSION_MISMATCH and what == "open" and path is not None:
        _raise_other_format(rc, path)
    text = ffi.string(lib.dshm_strerror(rc)).decode()
    hint = lib.dshm_errhint(rc)
    detail = ffi.string(hint).decode() if hint != ffi.NULL else text
    name = text.split(":", 1)[0]
    where = f": {os.fsdecode(path)!r}" if path is not None else ""
    e = error(f"{what}: {detail} ({name}){where}")
    e.filename = path
    e.code = rc
    raise e


def _raise_other_format(rc: int, path: Union[str, bytes]) -> None:
    """For an open that failed with DSHM_VERSION_MISMATCH: raise an error
    that says which format the file has and what to do, where the file
    starts with dbm_shm's magic and names another format; else return
    (the generic message follows)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return
    if len(head) < 12 or head[:8] != _MAGIC:
        return
    fmt = int.from_bytes(head[8:12], "little")
    name = os.fsdecode(path)
    if fmt == 1 and _FILE_FORMAT != 1:
        msg = (f"open: {name}: written by dbm_shm file format 1; this version reads format "
               f"{_FILE_FORMAT}; convert it with: dbm-shm upgrade {shlex.quote(name)}")
    elif fmt > _FILE_FORMAT:
        msg = (f"open: {name}: written by a newer dbm_shm (file format {fmt}); this version "
               f"reads format {_FILE_FORMAT}: open it with a version that reads format {fmt}")
    else:
        return
    e = error(msg)
    e.filename = path
    e.code = rc
    raise e
