"""Moving to dbm_shm: shelves over shared memory, conversion of other dbm files."""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import os
import shelve
import sys
from typing import Any, Callable, Optional

from ._db import PathArg, open
from ._errors import error
from ._registry import BACKEND_NAME, whichdb

__all__ = ["open_shelf", "convert"]

# Files a stdlib backend may keep beside (or as) the path it is opened with:
# dbm.dumb: .dat/.dir/.bak; dbm.ndbm: .pag/.dir or .db.
_SIDE_SUFFIXES = ("", ".dat", ".dir", ".bak", ".pag", ".db")


def open_shelf(filename: PathArg, flag: str = "c", protocol: Optional[int] = None,
               writeback: bool = False) -> shelve.Shelf:
    """Open a :class:`shelve.Shelf` (pickled values) over a dbm_shm file.

    As ``shelve.open(filename, flag, protocol, writeback)``, but always a
    dbm_shm file and without registering anything. Several processes may
    open the same shelf: a value one stores, the others read. With
    ``writeback=True`` entries read are cached and written back on
    ``sync()``/``close()``, as with ``shelve.open`` (and, as there, another
    process sees such changes only after that).
    """
    db = open(filename, flag)
    try:
        return shelve.Shelf(db, protocol, writeback)
    except BaseException:
        db.close()
        raise


def _is_source_file(src: str, dst: str) -> bool:
    """Whether ``dst`` is ``src`` itself or an existing file of its database."""
    for suffix in _SIDE_SUFFIXES:
        try:
            if os.path.samefile(src + suffix, dst):
                return True
        except OSError:  # one of them does not exist
            if not suffix and os.path.realpath(src) == os.path.realpath(dst):
                return True
    return False


def _open_source(path: str) -> Any:
    """Open ``path`` read-only with the backend that ``whichdb`` names."""
    kind = whichdb(path)
    if kind is None:
        try:
            with builtins.open(path, "rb"):
                pass
        except OSError as exc:
            raise error(exc.errno, f"convert: cannot read the source database: {exc.strerror}",
                        path) from None
        raise error(errno.ENOENT, "convert: cannot read the source database", path)
    if kind == "":
        raise error(f"convert: {path!r} is not a database that the stdlib dbm recognises")
    if kind == BACKEND_NAME:
        return open(path, "r")
    try:
        module = importlib.import_module(kind)
    except ImportError as exc:
        version = "%d.%d" % sys.version_info[:2]
        raise error(
            f"convert: {path!r} is a {kind} database, but the module {kind} is not available "
            f"in this interpreter (Python {version}, {sys.executable}: {exc}); run the "
            f"conversion with a Python that has {kind}, e.g. "
            f"'python3 -m dbm_shm convert SRC DST'") from None
    try:
        return module.open(path, "r")
    except OSError as exc:  # every backend's error is an OSError
        raise error(f"convert: cannot open {path!r} as a {kind} database: {exc}") from exc


def convert(src: PathArg, dst: PathArg, *, flag: str = "n",
            progress: Optional[Callable[[int], Any]] = None) -> int:
    """Copy every key of ``src`` into the dbm_shm file ``dst``.

    ``src`` is any database the stdlib ``dbm`` package can open in this
    interpreter — ``dbm.gnu``, ``dbm.ndbm``, ``dbm.dumb``, ``dbm.sqlite3`` —
    or a dbm_shm file; it is opened read-only with the backend that
    :func:`dbm_shm.whichdb` names, whether or not :func:`register` was
    called. ``flag`` opens the destination: ``'n'`` (default) starts it
    empty, ``'c'`` adds to it (creating it if needed) and ``'w'`` adds to
    an existing one; keys of ``src`` replace those already in ``dst``.
    ``progress``, if given, is called with the number of keys copied so
    far, every 1024 keys and once at the end. The copy is synced to disk.
    Returns the number of keys copied.

    Raises :class:`dbm_shm.error` if ``src`` cannot be read, is of unknown
    type, or its backend module is missing from this interpreter (gdbm and
    ndbm files need a Python built with ``_gdbm``/``_dbm``), and if ``dst``
    is ``src`` or one of its files. If the copy fails, a ``dst`` that it
    created is removed.
    """
    if flag not in ("n", "c", "w"):
        raise ValueError("convert() flag must be 'n', 'c' or 'w'")
    src_path = os.fsdecode(os.fspath(src))
    dst_path = os.fsdecode(os.fspath(dst))
    if _is_source_file(src_path, dst_path):
        raise error(f"convert: the destination {dst_path!r} is the source "
                    f"{src_path!r} or one of its files")
    n = 0
    with contextlib.closing(_open_source(src_path)) as source:
        created = not os.path.lexists(dst_path)
        target = open(dst_path, flag)
        done = False
        try:
            if hasattr(source, "iteritems"):  # dbm_shm: consistent per bucket
                pairs: Any = source.iteritems()
            else:
                pairs = _pairs(source)
            for key, value in pairs:
                target[key] = value
                n += 1
                if progress is not None and n % 1024 == 0:
                    progress(n)
            target.sync()
            done = True
        finally:
            target.close()
            if not done and created:
                with contextlib.suppress(OSError):
                    os.unlink(dst_path)
    if progress is not None:
        progress(n)
    return n


def _pairs(source: Any) -> Any:
    for key in source.keys():
        try:
            value = source[key]
        except KeyError:  # deleted since keys() (a source written meanwhile)
            continue
        yield key, value
