"""Registration as the stdlib ``dbm`` backend ``dbm.shm``.

The ``dbm`` package has no public plugin API, so this module — and only this
module — touches its private names: ``dbm._names`` (backends in order of
preference for new files), ``dbm._modules`` (imported backends by name),
``dbm._defaultmod`` (the backend for new files, cached on first use) and the
module-global ``dbm.whichdb`` that ``dbm.open`` calls.
"""

from __future__ import annotations

import builtins
import dbm
import os
import sys
import types
from typing import Any, Callable, Optional

from ._db import Database, open, open_flags
from ._errors import error

__all__ = ["register", "whichdb", "MAGIC", "BACKEND_NAME"]

#: The first bytes of every dbm_shm file (see csrc/dshm_layout.h).
MAGIC = b"\x93DSHM\r\n\x1a"
#: The name of the backend in the ``dbm`` package.
BACKEND_NAME = "dbm.shm"

_module: Optional[types.ModuleType] = None


def whichdb(filename: Any) -> Optional[str]:
    """Return ``"dbm.shm"`` if ``filename`` is a dbm_shm file, else ``None``."""
    try:
        with builtins.open(os.fspath(filename), "rb") as f:
            head = f.read(len(MAGIC))
    except (OSError, TypeError, ValueError):
        return None
    return BACKEND_NAME if head == MAGIC else None


def _backend() -> types.ModuleType:
    """The module object registered as ``dbm.shm``."""
    global _module
    if _module is None:
        mod = types.ModuleType(BACKEND_NAME, "dbm_shm registered as a dbm backend.")
        mod.open = open  # type: ignore[attr-defined]
        mod.error = error  # type: ignore[attr-defined]
        mod.open_flags = open_flags  # type: ignore[attr-defined]
        mod.Database = Database  # type: ignore[attr-defined]
        mod.__all__ = ["open", "error", "open_flags"]  # type: ignore[attr-defined]
        _module = mod
    return _module


def _wrap_whichdb(orig: Callable[[Any], Optional[str]]) -> Callable[[Any], Optional[str]]:
    def whichdb_with_shm(filename: Any) -> Optional[str]:
        return whichdb(filename) or orig(filename)

    whichdb_with_shm.__wrapped__ = orig  # type: ignore[attr-defined]
    whichdb_with_shm.__doc__ = orig.__doc__
    whichdb_with_shm._dbm_shm = True  # type: ignore[attr-defined]
    return whichdb_with_shm


def register(default: bool = False) -> None:
    """Make dbm_shm the stdlib backend ``dbm.shm``.

    Afterwards ``import dbm.shm`` works, ``dbm.whichdb()`` recognises our
    files and ``dbm.open()`` opens them with any flag. With ``default=True``,
    new files made by ``dbm.open(path, 'c'|'n')`` — and so by
    ``shelve.open()`` — are dbm_shm files. Idempotent; calling it again with
    ``default=True`` promotes an earlier plain registration.
    """
    mod = _backend()
    sys.modules[BACKEND_NAME] = mod
    dbm.shm = mod  # type: ignore[attr-defined]
    names = dbm._names  # type: ignore[attr-defined]
    if default:
        if BACKEND_NAME in names:
            names.remove(BACKEND_NAME)
        names.insert(0, BACKEND_NAME)
        dbm._defaultmod = mod  # type: ignore[attr-defined]
    elif BACKEND_NAME not in names:
        names.append(BACKEND_NAME)
    dbm._modules[BACKEND_NAME] = mod  # type: ignore[attr-defined]
    if not getattr(dbm.whichdb, "_dbm_shm", False):
        dbm.whichdb = _wrap_whichdb(dbm.whichdb)
