"""The database object: dbm.gnu's interface over the C core.

A thin layer: each method converts its arguments, makes one C call and turns
the return code into a value or an exception. Every C entry point is
thread-safe and runs with the GIL released, so one ``Database`` may be used
by many threads at once.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ._dshm import ffi, lib
from ._errors import CLOSED_MESSAGE, error, raise_for

__all__ = ["Database", "open", "open_flags"]

#: The flags ``open`` accepts, as ``dbm.gnu.open_flags``.
open_flags = "rwcnfsu"

Key = Union[str, bytes, bytearray, memoryview]
PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_BUFCAP = 64 * 1024              # per-thread buffer for values and keys
_SCANCAP = 1024 * 1024           # bytes per bulk-scan call
_tls = threading.local()
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def _bytes_factory() -> Any:
    """``PyBytes_FromStringAndSize(NULL, n)``: a new, unshared bytes object
    the C core may fill in place, as C extensions do, so a large value is
    copied once instead of twice. None where the C API is not reachable."""
    try:
        import ctypes
        fn = ctypes.pythonapi.PyBytes_FromStringAndSize
    except (ImportError, AttributeError):
        return None
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return fn


_new_bytes = _bytes_factory()
_get = lib.dshm_get
_put = lib.dshm_put
_unpack = ffi.unpack
_NOTFOUND = lib.DSHM_NOTFOUND
_U32 = struct.Struct("=I")
_U32U64 = struct.Struct("=IQ")

_STAT_FIELDS = (
    "count", "file_size", "top", "live_bytes", "free_bytes", "depth", "buckets",
    "overflow", "slots", "commit", "format", "page_size", "lock_pid", "recoveries",
    "read_retries", "read_fallbacks", "reopens", "map_size",
)


def _buf() -> Any:
    """This thread's value buffer (the GIL is released only inside the C
    call that fills it, and the bytes are copied out before any other code
    of the thread runs)."""
    try:
        return _tls.buf
    except AttributeError:
        _tls.buf = b = ffi.new("char[]", _BUFCAP)
        return b


def _as_bytes(obj: Any, what: str) -> bytes:
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, bytes):
        return obj
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError(f"dbm_shm {what}s must be str or bytes-like, not {type(obj).__name__}") from None


def _flags(flag: str) -> int:
    if not isinstance(flag, str):
        raise TypeError(f"open() flag must be str, not {type(flag).__name__}")
    if not flag or flag[0] not in "rwcn":
        raise error("First flag must be one of 'r', 'w', 'c' or 'n'")
    bits = {"r": lib.DSHM_RDONLY, "w": 0, "c": lib.DSHM_CREATE,
            "n": lib.DSHM_CREATE | lib.DSHM_TRUNC}[flag[0]]
    for ch in flag[1:]:
        if ch == "s":
            bits |= lib.DSHM_SYNC
        elif ch not in "fu":
            raise error(f"Flag '{ch}' is not supported.")
    return bits


class Database:
    """An open dbm_shm database: the interface of ``dbm.gnu`` objects.

    Keys and values are ``bytes``; ``str`` is accepted and stored UTF-8
    encoded, and so is any bytes-like object. Obtain one with
    :func:`dbm_shm.open`.
    """

    __slots__ = ("_h", "_path", "_closed", "__weakref__")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # As with dbm.gnu's type, instances come only from open().
        raise TypeError(f"cannot create '{type(self).__module__}.{type(self).__qualname__}' instances")

    def _open(self, filename: PathArg, flag: str, mode: int) -> None:
        self._closed = True
        self._h: Any = None
        path = os.fspath(filename)
        bpath = os.fsencode(path)
        if b"\0" in bpath:
            raise ValueError("embedded null character in path")
        self._path = path
        bits = _flags(flag)
        out = ffi.new("dshm_db **")
        rc = lib.dshm_open(bpath, bits, mode, out)
        if rc:
            raise_for(rc, "open", path)
        self._h = ffi.gc(out[0], lib.dshm_free)
        self._closed = False

    # -- mapping interface -------------------------------------------------

    def __getitem__(self, key: Key) -> bytes:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        try:
            buf = _tls.buf
        except AttributeError:
            buf = _buf()
        n = _get(self._h, k, len(k), buf, _BUFCAP)
        if n >= 0:
            return _unpack(buf, n) if n <= _BUFCAP else self._get_large(k, n, key)
        if n == _NOTFOUND:
            raise KeyError(key)
        raise_for(n, "get", self._path)

    def _get_large(self, k: bytes, n: int, key: Key) -> bytes:
        """Fetch a value too big for the thread buffer (it may change size
        between the calls, hence the loop)."""
        while True:
            if _new_bytes is not None:
                out = _new_bytes(None, n)
                m = _get(self._h, k, len(k), ffi.from_buffer(out), n)
                if m == n:
                    return out
            else:
                big = _new_uncleared("char[]", n)
                m = _get(self._h, k, len(k), big, n)
            if m == _NOTFOUND:
                raise KeyError(key)
            if m < 0:
                raise_for(m, "get", self._path)
            if m <= n:   # the value shrank between the two calls
                return out[:m] if _new_bytes is not None else _unpack(big, m)
            n = m

    def __setitem__(self, key: Key, value: Key) -> None:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        v = value if type(value) is bytes else _as_bytes(value, "value")
        rc = _put(self._h, k, len(k), v, len(v), 0)
        if rc:
            raise_for(rc, "set", self._path)

    def __delitem__(self, key: Key) -> None:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        rc = lib.dshm_del(self._h, k, len(k))
        if rc == _NOTFOUND:
            raise KeyError(key)
        if rc:
            raise_for(rc, "delete", self._path)

    def __contains__(self, key: object) -> bool:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        n = _get(self._h, k, len(k), ffi.NULL, 0)
        if n >= 0:
            return True
        if n == _NOTFOUND:
            return False
        raise_for(n, "contains", self._path)

    def __len__(self) -> int:
        n = lib.dshm_count(self._h)
        if n < 0:
            raise_for(n, "len", self._path)
        return n

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[bytes]:
        for key, _ in self._scan(False):
            yield key

    def get(self, key: Key, default: Optional[bytes] = None) -> Optional[bytes]:
        """Return the value for ``key``, or ``default`` if it is absent."""
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: Key, default: Key = b"") -> bytes:
        """Return the value for ``key``; if absent, store ``default`` first.

        Atomic across processes: of two processes racing to set a default,
        both get the value that was stored first.
        """
        k = key if type(key) is bytes else _as_bytes(key, "key")
        v = default if type(default) is bytes else _as_bytes(default, "value")
        while True:
            try:
                return self[k]
            except KeyError:
                pass
            rc = _put(self._h, k, len(k), v, len(v), lib.DSHM_NOOVERWRITE)
            if rc == 0:
                return v
            if rc != lib.DSHM_KEYEXIST:
                raise_for(rc, "setdefault", self._path)

    def keys(self) -> List[bytes]:
        """All keys, as a list (the store's order: by hash)."""
        return [k for k, _ in self._scan(False)]

    def items(self) -> List[Tuple[bytes, bytes]]:
        """All (key, value) pairs, as a list. An extra beyond dbm.gnu."""
        return list(self._scan(True))

    def values(self) -> List[bytes]:
        """All values, as a list. An extra beyond dbm.gnu."""
        return [v for _, v in self._scan(True)]

    def iteritems(self) -> Iterator[Tuple[bytes, bytes]]:
        """Iterate over (key, value) pairs a bucket at a time. Each bucket is
        a consistent snapshot; a key present for the whole iteration is
        seen exactly once, even while other processes write."""
        return self._scan(True)

    def _scan(self, values: bool) -> Iterator[Tuple[bytes, bytes]]:
        cursor = ffi.new("uint64_t *")
        done = ffi.new("int *")
        need = ffi.new("uint64_t *")
        cap = _SCANCAP
        buf = _new_uncleared("char[]", cap)
        flags = lib.DSHM_SCAN_VALUES if values else 0
        while not done[0]:
            n = lib.dshm_scan(self._h, cursor, done, buf, cap, flags, need)
            if n == -34:  # ERANGE: one bucket holds more than the buffer
                cap = max(cap * 2, need[0])
                buf = _new_uncleared("char[]", cap)
                continue
            if n < 0:
                raise_for(n, "scan", self._path)
            data = ffi.buffer(buf, n)[:]
            pos = 0
            if values:
                while pos < n:
                    kl, vl = _U32U64.unpack_from(data, pos)
                    pos += 20
                    yield data[pos:pos + kl], data[pos + kl:pos + kl + vl]
                    pos += kl + vl
            else:
                while pos < n:
                    kl = _U32.unpack_from(data, pos)[0]
                    pos += 12
                    yield data[pos:pos + kl], b""
                    pos += kl

    # -- gdbm extras -------------------------------------------------------

    def _key_call(self, fn: Any, *args: Any) -> Optional[bytes]:
        buf = _buf()
        n = fn(self._h, *args, buf, _BUFCAP)
        while n > _BUFCAP:
            big = _new_uncleared("char[]", n)
            m = fn(self._h, *args, big, n)
            if m <= n:
                return _unpack(big, m) if m >= 0 else self._key_end(m)
            n = m
        return _unpack(buf, n) if n >= 0 else self._key_end(n)

    def _key_end(self, rc: int) -> None:
        if rc != _NOTFOUND:
            raise_for(rc, "iterate", self._path)
        return None

    def firstkey(self) -> Optional[bytes]:
        """The first key in the store's order, or ``None`` if it is empty."""
        return self._key_call(lib.dshm_firstkey)

    def nextkey(self, key: Key) -> Optional[bytes]:
        """The key after ``key`` in the store's order, or ``None`` at the end
        (also if ``key`` is no longer present)."""
        k = key if type(key) is bytes else _as_bytes(key, "key")
        return self._key_call(lib.dshm_nextkey, k, len(k))

    def reorganize(self) -> None:
        """Rewrite the file compactly and give the free space back to the file
        system. Other processes' handles follow the new file on their next
        call."""
        self._call(lib.dshm_reorganize, "reorganize")

    def sync(self) -> None:
        """Make every write so far durable on disk (msync + fsync)."""
        self._call(lib.dshm_sync, "sync")

    def clear(self) -> None:
        """Delete every key."""
        self._call(lib.dshm_clear, "clear")

    def _call(self, fn: Any, what: str) -> None:
        rc = fn(self._h)
        if rc:
            raise_for(rc, what, self._path)

    def commit_id(self) -> int:
        """The commit counter: it grows with every committed write."""
        self._check_open()
        return int(lib.dshm_commit_id(self._h))

    def stats(self) -> Dict[str, int]:
        """Counters of the store and of this handle (see the docs for each)."""
        st = ffi.new("dshm_stat_t *")
        self._call(lambda h: lib.dshm_stat(h, st), "stats")
        return {name: int(getattr(st, "st_" + name)) for name in _STAT_FIELDS}

    def check(self) -> List[str]:
        """Verify the whole file's structure; return the problems found (an
        empty list for a sound file). Writes nothing itself; on a handle that
        may write the file it takes the writer lock for a stable view, which
        first completes a repair a dead writer left owed."""
        cap = 1 << 16
        buf = ffi.new("char[]", cap)
        n = lib.dshm_check(self._h, buf, cap)
        if n < 0:
            raise_for(n, "check", self._path)
        lines = ffi.string(buf).decode("utf-8", "replace").splitlines()
        if n > len(lines):
            lines.append(f"... and {n - len(lines)} more problems")
        return lines

    # -- lifetime ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise error(CLOSED_MESSAGE)

    def close(self) -> None:
        """Close the database. Further use raises ``dbm_shm.error``."""
        if not self._closed:
            self._closed = True
            lib.dshm_close(self._h)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # The handle's memory is freed by ffi.gc; closing is all that is
        # left, and it needs nothing from module globals at shutdown.
        h = getattr(self, "_h", None)
        if h is not None:
            self._closed = True
            _close(h)

    @property
    def filename(self) -> Union[str, bytes]:
        """The path the database was opened with."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<dbm_shm.Database {self._path!r} ({state})>"


_close = lib.dshm_close


def open(filename: PathArg, flag: str = "r", mode: int = 0o666, /) -> Database:
    """Open a dbm_shm database, as ``dbm.gnu.open``.

    ``flag``: ``'r'`` read-only (the default), ``'w'`` read-write, ``'c'``
    read-write and create if missing, ``'n'`` always start empty; followed
    optionally by ``'s'`` (sync after every write), ``'f'`` and ``'u'``
    (accepted for compatibility; dbm_shm never syncs unless asked and is
    always safe for many processes). ``mode`` is the permission of a created
    file, less the umask. Raises :class:`dbm_shm.error` on failure.
    """
    db = Database.__new__(Database)
    db._open(filename, flag, mode)
    return db
