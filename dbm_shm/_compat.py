"""Moving to dbm_shm: shelves over shared memory, conversion of other dbm files."""

from __future__ import annotations

import dbm
import os
import shelve
from typing import Any, Callable, Optional

from ._db import PathArg, open
from ._errors import error

__all__ = ["open_shelf", "convert"]


def open_shelf(filename: PathArg, flag: str = "c", protocol: Optional[int] = None,
               writeback: bool = False) -> shelve.Shelf:
    """Open a :class:`shelve.Shelf` (pickled values) over a dbm_shm file.

    Several processes may open the same shelf: a value one stores, the
    others read. With ``writeback=True`` entries read are cached and written
    back on ``sync()``/``close()``, as with ``shelve.open``.
    """
    return shelve.Shelf(open(filename, flag), protocol, writeback)


def convert(src: PathArg, dst: PathArg, *, flag: str = "n",
            progress: Optional[Callable[[int], Any]] = None) -> int:
    """Copy every key of ``src`` — any database the stdlib ``dbm`` can open
    (gdbm, ndbm, dumb, sqlite3, or dbm_shm) — into the dbm_shm file ``dst``.

    ``flag`` opens the destination: ``'n'`` (default) starts it empty,
    ``'c'`` adds to it. ``progress``, if given, is called with the number of
    keys copied so far. Returns the number of keys copied.
    """
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)):
        raise error(f"convert: source and destination are the same file: {os.fspath(src)!r}")
    if flag not in ("n", "c", "w"):
        raise ValueError("convert() flag must be 'n', 'c' or 'w'")
    n = 0
    with dbm.open(os.fspath(src), "r") as source, open(dst, flag) as target:
        for key in source.keys():
            target[key] = source[key]
            n += 1
            if progress is not None and n % 1024 == 0:
                progress(n)
    if progress is not None:
        progress(n)
    return n
