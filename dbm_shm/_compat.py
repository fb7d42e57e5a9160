"""Moving to dbm_shm: shelves over shared memory, conversion of other dbm files."""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import os
import pickle
import shelve
import itertools
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, List, MutableMapping, Optional, Set, Tuple

from ._db import PathArg, open
from ._errors import error
from ._registry import BACKEND_NAME, whichdb
from ._txn import Transaction

__all__ = ["open_shelf", "convert", "Shelf", "ShelfTransaction"]

# Files a stdlib backend may keep beside (or as) the path it is opened with:
# dbm.dumb: .dat/.dir/.bak; dbm.ndbm: .pag/.dir or .db.
_SIDE_SUFFIXES = ("", ".dat", ".dir", ".bak", ".pag", ".db")


class ShelfTransaction(MutableMapping[str, Any]):
    """What ``Shelf.transaction()`` gives inside its block: a mutable
    mapping of ``str`` keys to unpickled values over a
    :class:`dbm_shm.Transaction` (values pickled on the way in, unpickled on
    the way out, with the shelf's protocol and key encoding)."""

    def __init__(self, shelf: "Shelf", tx: Transaction) -> None:
        self._shelf = shelf
        self._tx = tx
        self.written: Set[str] = set()   # keys set or deleted in the block

    def __getitem__(self, key: str) -> Any:
        return pickle.loads(self._tx[key.encode(self._shelf.keyencoding)])

    def __setitem__(self, key: str, value: Any) -> None:
        self._tx[key.encode(self._shelf.keyencoding)] = pickle.dumps(value, self._shelf._protocol)
        self.written.add(key)

    def __delitem__(self, key: str) -> None:
        del self._tx[key.encode(self._shelf.keyencoding)]
        self.written.add(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.encode(self._shelf.keyencoding) in self._tx

    def __iter__(self) -> Iterator[str]:
        for k in self._tx:
            yield k.decode(self._shelf.keyencoding)

    def __len__(self) -> int:
        return len(self._tx)


class Shelf(shelve.Shelf):  # type: ignore[type-arg]
    """A :class:`shelve.Shelf` over a dbm_shm database (what
    :func:`open_shelf` returns), with :meth:`transaction` for atomic
    read-modify-writes of pickled values across processes."""

    dict: Any
    # Set by shelve.Shelf.__init__ (typeshed does not declare them).
    keyencoding: str
    writeback: bool
    cache: Dict[str, Any]
    _protocol: Optional[int]

    @contextlib.contextmanager
    def transaction(self, timeout: Optional[float] = None) -> Iterator[ShelfTransaction]:
        """``with shelf.transaction() as tx: tx["k"] = tx["k"] + [1]``.

        Holds the database's writer lock for the block
        (:meth:`dbm_shm.Database.transaction`): ``tx`` reads the store (not
        the shelf's writeback cache) and its writes are published together
        at the end, all or nothing. With ``writeback=True``, keys the block
        wrote are dropped from the cache, so that ``sync()``/``close()``
        does not write the older cached object back over them.
        """
        with self.dict.transaction(timeout) as tx:
            stx = ShelfTransaction(self, tx)
            yield stx
        if self.writeback:
            for k in stx.written:
                self.cache.pop(k, None)


def open_shelf(filename: PathArg, flag: str = "c", protocol: Optional[int] = None,
               writeback: bool = False) -> Shelf:
    """Open a :class:`shelve.Shelf` (pickled values) over a dbm_shm file.

    As ``shelve.open(filename, flag, protocol, writeback)``, but always a
    dbm_shm file and without registering anything, and with
    :meth:`Shelf.transaction`. Several processes may open the same shelf: a
    value one stores, the others read.

    ``writeback=True`` caches every entry read and writes **all of them**
    back on ``sync()``/``close()``, as ``shelve.open`` does: another process
    sees such changes only then, and the write-back silently overwrites
    whatever other processes stored under those keys meanwhile (last writer
    wins, whole values). For a read-modify-write that other processes must
    not lose, use ``with shelf.transaction() as tx:`` instead.
    """
    db = open(filename, flag)
    try:
        return Shelf(db, protocol, writeback)
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


# GNU gdbm file magics (gdbmconst.h): old, 32-bit, 64-bit, and the 1.21+
# "numsync" ones, each in both byte orders.
_GDBM_MAGICS = {m.to_bytes(4, order) for m in (0x13579ACE, 0x13579ACD, 0x13579ACF,
                                              0x13579AD0, 0x13579AD1)
                for order in ("little", "big")}

#: How many records ``convert`` hands to the store per call.
_CHUNK = 65536


def is_gdbm_file(path: str) -> bool:
    """Whether ``path`` starts with a GNU gdbm magic number (no dbm.gnu needed)."""
    try:
        with builtins.open(path, "rb") as fp:
            return fp.read(4) in _GDBM_MAGICS
    except OSError:
        return False


def _open_source(path: str, dst: str = "NEW") -> Any:
    """Open ``path`` read-only with the backend that ``whichdb`` names."""
    kind = whichdb(path)
    if kind == "" and is_gdbm_file(path):
        kind = "dbm.gnu"  # a magic the stdlib whichdb does not know (gdbm 1.21+)
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
        if kind == "dbm.gnu":
            raise error(
                f"convert: {path!r} is a GNU gdbm database, but this Python (Python "
                f"{version}, {sys.executable}) has no dbm.gnu module; convert it with "
                f"gdbm's own tool instead: 'gdbm_dump {path} | dbm-shm load - {dst}' "
                f"(or run the conversion with a Python that has dbm.gnu)") from None
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
    far: after each chunk of keys (the last call gives the total). The copy is synced
    to disk. Returns the number of keys copied.

    All or nothing, and fast: records go to the store thousands per call.
    A new destination (``'n'``, or ``'c'`` of a missing file) is filled
    beside ``dst`` and renamed into place when complete; an existing one
    gets every record in one atomic batch.

    Raises :class:`dbm_shm.error` if ``src`` cannot be read, is of unknown
    type, or its backend module is missing from this interpreter (gdbm and
    ndbm files need a Python built with ``_gdbm``/``_dbm``), and if ``dst``
    is ``src`` or one of its files. If the copy fails, ``dst`` is as it
    was. A gdbm file met by a Python without ``dbm.gnu`` (found by its
    magic number) gets an error naming the way that works:
    ``gdbm_dump SRC | dbm-shm load - DST``.
    """
    if flag not in ("n", "c", "w"):
        raise ValueError("convert() flag must be 'n', 'c' or 'w'")
    src_path = os.fsdecode(os.fspath(src))
    dst_path = os.fsdecode(os.fspath(dst))
    if _is_source_file(src_path, dst_path):
        raise error(f"convert: the destination {dst_path!r} is the source "
                    f"{src_path!r} or one of its files")
    n = 0
    with contextlib.closing(_open_source(src_path, dst_path)) as source:
        if flag == "n" or (flag == "c" and not os.path.lexists(dst_path)):
            # Fill a new store beside dst, put it in place when complete.
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dst_path) + ".",
                                       suffix=".convert",
                                       dir=os.path.dirname(os.path.abspath(dst_path)))
            os.close(fd)
            try:
                with open(tmp, "n", 0o600) as target:
                    for chunk in _chunks(source):
                        target.update(chunk)
                        n += len(chunk)
                        if progress is not None:
                            progress(n)
                    target.sync()
                os.chmod(tmp, 0o666 & ~_umask())
                if flag == "n":
                    os.replace(tmp, dst_path)
                else:
                    _link_new(tmp, dst_path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        else:
            # Into an existing store (opened first: 'w' of a missing one
            # fails before the source is read): one atomic batch.
            with open(dst_path, flag) as target:
                pending: Dict[bytes, bytes] = {}
                for chunk in _chunks(source):
                    pending.update(chunk)
                    n += len(chunk)
                    if progress is not None:
                        progress(n)
                target.update(pending)
                target.sync()
    if progress is not None and n == 0:
        progress(n)
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _link_new(tmp: str, dst: str) -> None:
    """Give the file ``tmp`` the name ``dst``, which must not exist."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise error(errno.EEXIST, "convert: the destination appeared during the copy",
                    dst) from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(dst):
            raise error(errno.EEXIST, "convert: the destination appeared during the copy",
                        dst) from None
        os.rename(tmp, dst)


def _chunks(source: Any) -> Iterator[Dict[bytes, bytes]]:
    """The source's records, as dicts of up to _CHUNK records."""
    if hasattr(source, "iteritems"):  # dbm_shm: consistent per bucket
        items = source.iteritems()
        while True:
            chunk = dict(itertools.islice(items, _CHUNK))
            if not chunk:
                return
            yield chunk
    keys = source.keys()
    for i in range(0, len(keys), _CHUNK):
        part = [k.encode("utf-8") if isinstance(k, str) else k for k in keys[i:i + _CHUNK]]
        try:
            values = list(map(source.__getitem__, part))  # no Python per record
        except KeyError:  # deleted since keys(): the slow way for this chunk
            yield dict(_pairs_of(source, part))
            continue
        yield dict(zip(part, values))


def _pairs_of(source: Any, keys: List[bytes]) -> Iterator[Tuple[bytes, bytes]]:
    for key in keys:
        try:
            value = source[key]
        except KeyError:  # deleted since keys() (a source written meanwhile)
            continue
        yield key, value
