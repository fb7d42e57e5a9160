"""Registration as the stdlib ``dbm`` backend ``dbm.shm``.

The ``dbm`` package has no public plugin API, so this module — and only this
module — touches its private names:

``dbm._names``
    Backends in order of preference for new files. ``register()`` appends
    ``"dbm.shm"`` (so ``dbm.sqlite3`` on 3.13, or ``dbm.gnu``/``dbm.dumb``,
    stays the default) or, with ``default=True``, moves it to the front.
``dbm._modules``
    Imported backends by name; ``dbm.open`` looks up the module for the
    type ``whichdb`` reports here. Filled lazily, on the first ``dbm.open``,
    and never again, so an entry is added here directly.
``dbm._defaultmod``
    The backend for new files, chosen from ``_names`` on the first
    ``dbm.open`` and cached forever; replaced by ``register(default=True)``
    when already cached.
``dbm.whichdb``
    The module global that ``dbm.open`` calls; wrapped so it reports
    ``"dbm.shm"`` for our files.

Importing ``dbm_shm`` changes none of this; only ``register()`` does.
"""

from __future__ import annotations

import dbm
import functools
import importlib.machinery
import os
import stat
import sys
import types
from typing import Any, Callable, Optional, cast

from ._db import Database, open, open_flags
from ._errors import error

__all__ = ["register", "whichdb", "MAGIC", "BACKEND_NAME"]

#: The first bytes of every dbm_shm file (see csrc/dshm_layout.h).
MAGIC = b"\x93DSHM\r\n\x1a"
#: The name of the backend in the ``dbm`` package.
BACKEND_NAME = "dbm.shm"
_ATTR = BACKEND_NAME.split(".", 1)[1]  # "shm": the attribute on ``dbm``

# O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

_module: Optional[types.ModuleType] = None


def _fspath(filename: Any) -> Any:
    """``filename`` as a ``str`` path, or ``filename`` unchanged if it is not
    a path (the stdlib's ``whichdb`` then raises its own ``TypeError``).

    ``dbm.whichdb`` of Python < 3.11 accepts only ``str``; a ``str`` works
    with every version and names the same file as the bytes or PathLike.
    """
    try:
        return os.fsdecode(os.fspath(filename))
    except TypeError:
        return filename


def _has_magic(path: Any) -> bool:
    """Whether ``path`` is a regular file that starts with our magic.

    Never raises and never blocks: a missing or unreadable path, a directory,
    a FIFO or device, or a path the OS rejects is simply not ours.
    """
    if not isinstance(path, str):
        return False
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):  # ValueError: embedded NUL
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(MAGIC)) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def _stdlib_whichdb() -> Callable[[Any], Optional[str]]:
    """``dbm.whichdb`` without our wrapper around it."""
    fn: Any = dbm.whichdb
    while getattr(fn, "_dbm_shm", False) and hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return cast("Callable[[Any], Optional[str]]", fn)


def whichdb(filename: Any) -> Optional[str]:
    """Guess which ``dbm`` backend can open ``filename``, knowing dbm_shm.

    As ``dbm.whichdb``, without registering anything: ``"dbm.shm"`` for a
    dbm_shm file, otherwise what the stdlib reports — a backend name such as
    ``"dbm.gnu"`` or ``"dbm.dumb"``, ``""`` for a file of unknown type, or
    ``None`` if there is no readable file. Accepts ``str``, ``bytes`` and
    path-like names on every Python version.
    """
    path = _fspath(filename)
    if _has_magic(path):
        return BACKEND_NAME
    return _stdlib_whichdb()(path)


def _backend() -> types.ModuleType:
    """The module object registered as ``dbm.shm`` (one per process)."""
    global _module
    if _module is None:
        mod = types.ModuleType(BACKEND_NAME, "dbm_shm, registered as the stdlib dbm backend.")
        mod.__package__ = "dbm"
        mod.__spec__ = importlib.machinery.ModuleSpec(BACKEND_NAME, None, origin=__file__)
        mod.open = open  # type: ignore[attr-defined]
        mod.error = error  # type: ignore[attr-defined]
        mod.open_flags = open_flags  # type: ignore[attr-defined]
        mod.Database = Database  # type: ignore[attr-defined]
        mod.__all__ = ["open", "error", "open_flags"]  # type: ignore[attr-defined]
        _module = mod
    return _module


def _wrap_whichdb(orig: Callable[[Any], Optional[str]]) -> Callable[[Any], Optional[str]]:
    @functools.wraps(orig)
    def whichdb(filename: Any) -> Optional[str]:
        path = _fspath(filename)
        if _has_magic(path):
            return BACKEND_NAME
        return orig(path)

    whichdb._dbm_shm = True  # type: ignore[attr-defined]
    return whichdb


def _whichdb_wrapped() -> bool:
    fn: Any = dbm.whichdb
    while fn is not None:
        if getattr(fn, "_dbm_shm", False):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def register(default: bool = False) -> None:
    """Make dbm_shm the stdlib backend ``dbm.shm``.

    Afterwards ``import dbm.shm`` works, ``dbm.whichdb()`` recognises our
    files and ``dbm.open()`` opens them with flags ``'r'``, ``'w'`` and
    ``'c'``. The stdlib's default backend for new files is unchanged.

    With ``default=True``, new files made by ``dbm.open(path, 'c'|'n')`` —
    and so by ``shelve.open()`` — are dbm_shm files, even if ``dbm.open``
    has already been used in this process. ``dbm.open(path, 'n')`` never
    looks at the existing file: it makes a new file of the default backend.

    Idempotent: calling it again changes nothing, except that
    ``default=True`` promotes an earlier plain registration; a later plain
    ``register()`` does not demote it.
    """
    mod = _backend()
    sys.modules[BACKEND_NAME] = mod
    setattr(dbm, _ATTR, mod)
    dbm._modules[BACKEND_NAME] = mod  # type: ignore[attr-defined]
    names = dbm._names  # type: ignore[attr-defined]
    if default:
        if names[:1] != [BACKEND_NAME]:
            while BACKEND_NAME in names:
                names.remove(BACKEND_NAME)
            names.insert(0, BACKEND_NAME)
        # Not yet cached: the first dbm.open() picks the first of _names that
        # imports — ours — and imports the others into _modules as usual.
        if dbm._defaultmod is not None:  # type: ignore[attr-defined]
            dbm._defaultmod = mod  # type: ignore[attr-defined]
    elif BACKEND_NAME not in names:
        names.append(BACKEND_NAME)
    if not _whichdb_wrapped():
        setattr(dbm, "whichdb", _wrap_whichdb(dbm.whichdb))   # typeshed's signature is narrower
