"""The database object: dbm.gnu's interface over the C core.

A thin layer: each method converts its arguments, makes one C call and turns
the return code into a value or an exception. Every C entry point is
thread-safe and runs with the GIL released, so one ``Database`` may be used
by many threads at once.
"""

from __future__ import annotations

import errno
import os
import threading
from array import array
from typing import (Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Mapping,
                    MutableMapping, Optional, Tuple, TypeVar, Union, overload)

from . import _fastglue, _waiting   # C fast path (issue 15)
from ._dshm import ffi, lib
from ._batch import DELETE as _DELETE
from ._batch import (BatchContext, Pending, apply_to_values, count_delta, open_batches_message, overlay,
                     pairs_of, write_lists)
from ._errors import CLOSED_MESSAGE, error, raise_for
from ._records import Key, Snapshot
from ._records import as_bytes as _as_bytes
from ._records import records as _records
from ._txn import NOT_INTEGER, AsyncTransaction, Transaction

__all__ = ["Database", "Snapshot", "open", "open_flags"]

#: The flags ``open`` accepts, as ``dbm.gnu.open_flags``.
open_flags = "rwcnfsu"

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
_incr = lib.dshm_incr
_unpack = ffi.unpack
_NOTFOUND = lib.DSHM_NOTFOUND

_STAT_FIELDS = (
    "count", "file_size", "top", "live_bytes", "free_bytes", "depth", "buckets",
    "overflow", "slots", "commit", "format", "page_size", "lock_pid", "recoveries",
    "read_retries", "read_fallbacks", "reopens", "map_size", "lock_held_ns", "waiters",
    "writes", "batches", "batch_ops", "lock_waits", "lock_wait_ns", "waits", "wakeups",
    "multi_retries", "max_bytes", "evictions", "expired",
)
_get_ident = threading.get_ident
_T = TypeVar("_T")


def _buf() -> Any:
    """This thread's value buffer (the GIL is released only inside the C
    call that fills it, and the bytes are copied out before any other code
    of the thread runs)."""
    try:
        return _tls.buf
    except AttributeError:
        _tls.buf = b = ffi.new("char[]", _BUFCAP)
        return b


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


class _Missing:
    """The type of ``_MISSING``: no default was given."""


_MISSING = _Missing()


class Database(_fastglue.Base, MutableMapping[bytes, bytes]):   # fast path: C slots for [], in, get (_fastglue)
    """An open dbm_shm database: the interface of ``dbm.gnu`` objects, and a
    :class:`collections.abc.MutableMapping` of ``bytes`` to ``bytes``.

    Keys and values are ``bytes``; ``str`` is accepted and stored UTF-8
    encoded, and so is any bytes-like object. Obtain one with
    :func:`dbm_shm.open`.

    Where ``dbm.gnu`` and ``MutableMapping`` differ, ``dbm.gnu`` wins:
    :meth:`keys` (and :meth:`values`, :meth:`items`) return lists, and
    handles hash by identity (``==`` compares contents, as for mappings).
    """

    __slots__ = ("_h", "_path", "_closed", "_batches", "_txn", "__weakref__")

    # dbm.gnu objects hash by identity; Mapping's __eq__ would make them
    # unhashable.
    __hash__ = object.__hash__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # As with dbm.gnu's type, instances come only from open().
        raise TypeError(f"cannot create '{type(self).__module__}.{type(self).__qualname__}' instances")

    def _open(self, filename: PathArg, flag: str, mode: int) -> None:
        self._closed = True
        self._h: Any = None
        self._batches: Dict[int, Pending] = {}   # thread id -> its open batch
        self._txn: Optional[Transaction] = None   # the transaction open on this handle
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
        _fastglue.attach(self, self._h, self._batches)   # fast path
        self._closed = False

    # -- mapping interface -------------------------------------------------

    def __getitem__(self, key: Key) -> bytes:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        if self._batches:
            p = self._batches.get(_get_ident())
            if p is not None and k in p.ops:
                v: bytes = p.ops[k]
                if v is _DELETE:
                    raise KeyError(key)
                return v
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
                out: bytes = _new_bytes(None, n)
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
        if self._batches:
            p = self._batches.get(_get_ident())
            if p is not None:
                p.ops[k] = v
                return
        rc = _put(self._h, k, len(k), v, len(v), 0)
        if rc:
            raise_for(rc, "set", self._path)

    def __delitem__(self, key: Key) -> None:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        if self._batches:
            p = self._batches.get(_get_ident())
            if p is not None:
                if k not in self:
                    raise KeyError(key)
                p.delete(k)
                return
        rc = lib.dshm_del(self._h, k, len(k))
        if rc == _NOTFOUND:
            raise KeyError(key)
        if rc:
            raise_for(rc, "delete", self._path)

    def __contains__(self, key: object) -> bool:
        k = key if type(key) is bytes else _as_bytes(key, "key")
        if self._batches:
            p = self._batches.get(_get_ident())
            if p is not None and k in p.ops:
                return p.ops[k] is not _DELETE
        return self._stored(k)

    def __len__(self) -> int:
        n = lib.dshm_count(self._h)
        if n < 0:
            raise_for(n, "len", self._path)
        p = self._pending()
        return n if p is None else n + count_delta(p, self._stored)

    def _pending(self) -> Optional[Pending]:
        """This thread's open batch on this handle, if any."""
        return self._batches.get(threading.get_ident()) if self._batches else None

    def _stored(self, k: bytes) -> bool:
        """Is ``k`` in the store (not counting a batch in progress)?"""
        n = _get(self._h, k, len(k), ffi.NULL, 0)
        if n < 0 and n != _NOTFOUND:
            raise_for(n, "contains", self._path)
        return n >= 0

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over the keys a bucket at a time (see :meth:`iteritems`)."""
        for key, _ in self._overlay(self._scan(False)):
            yield key

    def __eq__(self, other: object) -> bool:
        """Equal to any mapping with the same keys and values (a ``dict``,
        a :class:`Snapshot`, another database), as ``Mapping`` compares."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    @overload
    def get(self, key: Key) -> Optional[bytes]: ...
    @overload
    def get(self, key: Key, default: Union[bytes, _T]) -> Union[bytes, _T]: ...

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value for ``key``, or ``default`` if it is absent."""
        try:
            return self[key]
        except KeyError:
            return default

    @overload
    def pop(self, key: Key) -> bytes: ...
    @overload
    def pop(self, key: Key, default: Union[bytes, _T]) -> Union[bytes, _T]: ...

    def pop(self, key: Key, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; if it is absent, return
        ``default``, or raise ``KeyError`` if none is given.

        One atomic call under the writer lock (``dshm_pop``): of processes
        popping the same key at once, exactly one gets its value. Inside a
        :meth:`batch`, it reads and deletes through the batch (the delete
        is applied when the batch commits).
        """
        k = key if type(key) is bytes else _as_bytes(key, "key")
        p = self._pending()
        if p is not None:
            try:
                v = self[k]
            except KeyError:
                if default is _MISSING:
                    raise
                return default
            p.delete(k)
            return v
        buf, cap = _buf(), _BUFCAP
        while True:
            n = lib.dshm_pop(self._h, k, len(k), buf, cap)
            if n > cap:   # too big for the buffer: nothing was removed
                cap = n
                buf = _new_uncleared("char[]", n)
            elif n >= 0:
                return _unpack(buf, n)
            elif n == _NOTFOUND:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            else:
                raise_for(n, "pop", self._path)

    def popitem(self) -> Tuple[bytes, bytes]:
        """Remove some (key, value) pair and return it; ``KeyError`` if the
        database is empty. Which pair is unspecified (not LIFO as for
        ``dict``): the store's order, from where this thread last took one.

        One atomic call under the writer lock (``dshm_popitem``): of
        processes calling it at once, each gets a different pair. Inside a
        :meth:`batch`, it takes a pair as the batch sees the store (the
        delete is applied when the batch commits).
        """
        p = self._pending()
        if p is not None:
            for k in self:
                v = self[k]
                p.delete(k)
                return k, v
            raise KeyError("popitem(): dbm_shm database is empty")
        buf, cap = _buf(), _BUFCAP
        klen = ffi.new("uint64_t *")
        while True:
            n = lib.dshm_popitem(self._h, buf, cap, klen)
            if n > cap:   # too big for the buffer: nothing was removed
                cap = n
                buf = _new_uncleared("char[]", n)
            elif n >= 0:
                data = _unpack(buf, n)
                return data[:klen[0]], data[klen[0]:]
            elif n == _NOTFOUND:
                raise KeyError("popitem(): dbm_shm database is empty")
            else:
                raise_for(n, "popitem", self._path)

    def setdefault(self, key: Key, default: Key = b"") -> bytes:
        """Return the value for ``key``; if absent, store ``default`` first.

        Atomic across processes: the store is one put that fails if the key
        exists (``DSHM_NOOVERWRITE``, under the writer lock), retried with a
        read, so of processes racing to set a default exactly one stores its
        own and every one of them gets the value that was stored first.
        Inside a :meth:`transaction` or :meth:`batch`, it goes through it.
        """
        k = key if type(key) is bytes else _as_bytes(key, "key")
        v = default if type(default) is bytes else _as_bytes(default, "value")
        if self._pending() is not None:
            if k not in self:
                self[k] = v
            return self[k]
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

    def keys(self) -> List[bytes]:  # type: ignore[override]
        """All keys, as a list (the store's order: by hash), as dbm.gnu."""
        return [k for k, _ in self._overlay(self._scan(False))]

    def items(self) -> List[Tuple[bytes, bytes]]:  # type: ignore[override]
        """All (key, value) pairs, as a list (like :meth:`keys`). An extra
        beyond dbm.gnu."""
        return list(self._overlay(self._scan(True)))

    def values(self) -> List[bytes]:  # type: ignore[override]
        """All values, as a list (like :meth:`keys`). An extra beyond
        dbm.gnu."""
        return [v for _, v in self._overlay(self._scan(True))]

    def iteritems(self) -> Iterator[Tuple[bytes, bytes]]:
        """Iterate over (key, value) pairs a bucket at a time. Each bucket is
        a consistent snapshot; a key present for the whole iteration is
        seen exactly once, even while other processes write. For pairs all
        current at one instant, use :meth:`snapshot`."""
        return self._overlay(self._scan(True))

    def _overlay(self, pairs: Iterator[Tuple[bytes, bytes]]) -> Iterator[Tuple[bytes, bytes]]:
        """``pairs`` as this thread's open batch would leave them."""
        return overlay(self._pending(), pairs)

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
            yield from _records(ffi.buffer(buf, n)[:], values)

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

    def _key_end(self, rc: int) -> Optional[bytes]:
        """None at the end of the keys; else raise for ``rc``."""
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
        self._refuse_in_txn("reorganize()")
        self._call(lib.dshm_reorganize, "reorganize")

    def sync(self) -> None:
        """Commit: make every write so far, by any process, durable on disk,
        so that a power loss or a kernel crash keeps it (two flushes; on
        tmpfs nothing to do). See docs/durability.md."""
        self._call(lib.dshm_sync, "sync")

    def clear(self) -> None:
        """Delete every key."""
        self._refuse_in_txn("clear()")
        if self._pending() is not None:
            raise error(f"clear() inside a batch of {self._path!r}: end the batch first")
        self._call(lib.dshm_clear, "clear")

    def _call(self, fn: Any, what: str) -> None:
        rc = fn(self._h)
        if rc:
            raise_for(rc, what, self._path)

    def commit_id(self) -> int:
        """The commit counter: it grows with every committed write."""
        self._check_open()
        out = ffi.new("uint64_t *")
        self._call(lambda h: lib.dshm_commit_id(h, out), "commit_id")
        return int(out[0])

    # -- batches and consistent reads --------------------------------------

    def batch(self) -> ContextManager["Database"]:
        """Group writes into one atomic batch: ``with db.batch(): ...``.

        Inside the block, this thread's sets and deletes on this handle are
        held back (and seen by its own reads); when the block ends they are
        applied together: readers in every process see all of them or none,
        and a writer killed part-way leaves none of them (before the commit
        point) or all (the next writer finishes the batch). If the block
        raises, nothing is written. Batches nest (an inner one that raises
        drops only its own writes). Many writes in one batch are also much
        faster than the same writes one by one: one lock, one commit.
        ``firstkey()``/``nextkey()`` inside a batch see the store without it;
        ``clear()`` inside a batch is an error, and so is :meth:`close`
        while any thread's batch on the handle is open (nothing is lost:
        the batch goes on and commits at its end).
        """
        return BatchContext(self)

    def update(self, other: Any = (), /, **kwargs: Key) -> None:
        """Set many keys at once, atomically, as ``dict.update``: from a
        mapping, an iterable of (key, value) pairs, or keyword arguments.
        One batch (see :meth:`batch`); inside an open batch, joins it."""
        p = self._pending()
        if (type(other) is dict and not kwargs and p is None
                and set(map(type, other)) <= {bytes} and set(map(type, other.values())) <= {bytes}):
            # The common case without a Python loop: all bytes, one call.
            keys, vals = list(other), list(other.values())
        else:
            ops: Dict[bytes, Any] = {}
            for k, v in pairs_of(other, kwargs):
                ops[k if type(k) is bytes else _as_bytes(k, "key")] = v if type(v) is bytes else _as_bytes(v, "value")
            if p is not None:
                p.ops.update(ops)
                return
            keys, vals = list(ops), list(ops.values())
        if keys:
            self._write_lists(keys, vals, False)
        else:
            self._check_open()

    def _write_batch(self, ops: Dict[bytes, Any], deletes: int) -> int:
        """Apply ops (key -> value or a pending delete) as one batch; its commit id."""
        return self._write_lists(list(ops), list(ops.values()), bool(deletes))

    def _write_lists(self, keys: List[bytes], vals: List[Any], deletes: bool) -> int:
        """Apply keys[i] -> vals[i] (bytes, or a pending delete) as one batch."""
        return write_lists(self._h, self._path, keys, vals, deletes)

    def _get_many(self, keys: List[bytes]) -> Tuple[List[Optional[bytes]], int]:
        """Values of keys (None: absent) as of one commit, and that commit."""
        n = len(keys)
        kbuf = b"".join(keys)
        klens = array("Q", map(len, keys))
        vlens = array("q", bytes(8 * n))
        commit = ffi.new("uint64_t *")
        need = ffi.new("uint64_t *")
        cap = _BUFCAP
        buf = _buf()
        pk = ffi.from_buffer("uint64_t[]", klens)
        pv = ffi.from_buffer("int64_t[]", vlens)
        while True:
            r = lib.dshm_get_many(self._h, n, kbuf, pk, buf, cap, pv, commit, need)
            if r != -errno.ERANGE:
                break
            cap = max(cap * 2, need[0])
            buf = _new_uncleared("char[]", cap)
        if r < 0:
            raise_for(r, "get_many", self._path)
        data = ffi.buffer(buf, r)[:] if r else b""
        out: List[Optional[bytes]] = []
        pos = 0
        for vl in vlens:
            if vl < 0:
                out.append(None)
            else:
                out.append(data[pos:pos + vl])
                pos += vl
        return out, int(commit[0])

    def get_many(self, keys: Iterable[Key], default: Optional[bytes] = None) -> List[Optional[bytes]]:
        """The values of ``keys``, in order (``default`` for an absent key),
        all current at one instant: no write committed between the first
        read and the last. Read lock-free and checked against the commit
        counter; retried if a write came between, then read under the
        writer lock after too many losses."""
        ks = [k if type(k) is bytes else _as_bytes(k, "key") for k in keys]
        values, _ = self._get_many(ks)
        p = self._pending()
        if p is not None:
            apply_to_values(p, ks, values)
        if default is not None:
            values = [default if v is None else v for v in values]
        return values

    def snapshot(self, keys: Optional[Iterable[Key]] = None) -> Snapshot:
        """A read-only mapping of the store (or of ``keys``, those present)
        as it was at one instant, copied into this process:
        ``with db.snapshot() as s: ...``. Its ``commit_id`` says which
        commit it shows. The same rule as :meth:`get_many`: lock-free,
        checked against the commit counter, retried, then read under the
        writer lock. A batch open in this thread is not part of it."""
        if keys is not None:
            ks = [k if type(k) is bytes else _as_bytes(k, "key") for k in keys]
            values, commit = self._get_many(ks)
            return Snapshot({k: v for k, v in zip(ks, values) if v is not None}, commit)
        out = ffi.new("char **")
        commit = ffi.new("uint64_t *")
        n = lib.dshm_snapshot(self._h, out, commit)
        if n < 0:
            raise_for(n, "snapshot", self._path)
        try:
            data = ffi.buffer(out[0], n)[:] if n else b""
        finally:
            lib.dshm_release(out[0])
        return Snapshot(dict(_records(data, True)), int(commit[0]))

    # -- read-modify-write: counters, compare-and-set, transactions -------

    def transaction(self, timeout: Optional[float] = None) -> Transaction:
        """Hold the writer lock for a block: ``with db.transaction() as tx:``.

        ``tx`` is a mutable mapping of the store plus the block's own
        writes: read, compute and write through it, and the block is a
        read-modify-write no other writer, in any process, can interleave
        with. When the block ends its writes are published at once, all or
        nothing, exactly as a :meth:`batch`; if it raises, nothing is
        published and the exception goes on. A process killed inside the
        block publishes nothing (the next writer repairs, as after any dead
        writer). Readers never wait: they see the store before the block or
        after it, never part of it. Other writers wait for the block.

        ``timeout``: seconds to wait for the lock at most (``None``: as long
        as it takes); past it, ``dbm_shm.error`` saying which pid holds it.
        The GIL is released while waiting.

        In the thread running the block, the handle's own writes
        (``db[k] = v``, ``del db[k]``, ``pop``, ``setdefault``, ``update``,
        ``incr``, ``compare_and_set``) go into the transaction, as they go
        into a batch, and its reads see them; ``clear()``, ``reorganize()``
        raise ``dbm_shm.error``. One transaction per handle at a time:
        opening a second one (nested, or from another thread on the same
        handle), or using ``tx`` from another thread, raises
        ``dbm_shm.error``; threads that need their own transactions open a
        handle each. Keep the block short: every writer waits for it.
        """
        return Transaction(self, timeout)

    def transaction_async(self, timeout: Optional[float] = None) -> AsyncTransaction:
        """:meth:`transaction` for asyncio: ``async with
        db.transaction_async() as tx:``. The lock is taken (and later given
        back) by a thread of the transaction's own, so waiting for it never
        blocks the event loop; ``tx``'s reads hand their C call to that
        thread. Use ``tx`` only from the task that opened it: other tasks'
        writes through this handle meanwhile would join the transaction (it
        belongs to the loop's thread), so give them a handle of their own.
        """
        return AsyncTransaction(self, timeout)

    def _txn_here(self) -> Optional[Transaction]:
        """The transaction this thread is running on this handle, if any."""
        tx = self._txn
        return tx if tx is not None and tx._user == _get_ident() else None

    def _refuse_in_txn(self, what: str) -> None:
        if self._txn_here() is not None:
            raise error(f"{what} inside a transaction() of {self._path!r}: end the transaction first")

    def incr(self, key: Key, delta: int = 1, default: int = 0) -> int:
        """Add ``delta`` to the counter at ``key`` and return the new value,
        atomically across processes (one C call, one hold of the writer
        lock: ``dshm_incr``).

        The counter is stored as ASCII decimal bytes (``b"42"``), as Redis
        and Django's caches store theirs, so ``db[key]`` reads it and
        ``db[key] = b"0"`` resets it; an absent key counts as ``default``.
        Values are signed 64-bit. A stored value that is not such an integer
        raises ``dbm_shm.error`` (and changes nothing), and so does a result
        outside 64 bits. Inside a :meth:`transaction` it goes through it;
        inside a :meth:`batch` it raises ``dbm_shm.error`` (a batch reads
        outside the lock: use a transaction).
        """
        k = key if type(key) is bytes else _as_bytes(key, "key")
        if type(delta) is not int or type(default) is not int:
            raise TypeError(f"delta and default must be int, not {type(delta).__name__} "
                            f"and {type(default).__name__}")
        if self._batches:
            tx = self._txn_here()
            if tx is not None:
                return tx.incr(k, delta, default)
            if self._pending() is not None:
                raise error(f"incr() inside a batch() of {self._path!r}: a batch reads outside the writer "
                            "lock; use transaction() for a read-modify-write")
        try:
            out = _tls.i64
        except AttributeError:
            out = _tls.i64 = ffi.new("int64_t *")
        try:
            rc = _incr(self._h, k, len(k), delta, default, out)
        except OverflowError:
            raise error(f"incr: {key!r} in {self._path!r}: delta {delta} or default {default} is outside "
                        "a signed 64-bit integer; nothing was changed") from None
        if rc == 0:
            return int(out[0])
        if rc == lib.DSHM_INVALID:
            cur = self.get(k)
            raise error(f"incr: the value of {key!r} in {self._path!r} {NOT_INTEGER}: "
                        f"{cur[:40] if cur is not None else cur!r}; nothing was changed")
        if rc == -errno.ERANGE:
            raise error(f"incr: {key!r} in {self._path!r}: the result would be outside a signed 64-bit "
                        "integer; nothing was changed")
        raise_for(rc, "incr", self._path)

    def decr(self, key: Key, delta: int = 1, default: int = 0) -> int:
        """Subtract ``delta`` from the counter at ``key``: ``incr(key,
        -delta, default)`` (see :meth:`incr`)."""
        if type(delta) is not int:
            raise TypeError(f"delta must be int, not {type(delta).__name__}")
        return self.incr(key, -delta, default)

    def compare_and_set(self, key: Key, expected: Optional[Key], new: Optional[Key]) -> bool:
        """If ``key`` holds ``expected``, replace it with ``new`` and return
        True; otherwise change nothing and return False. Atomic across
        processes (one C call under the writer lock: ``dshm_cas``).

        ``expected=None`` means "absent" (create only if missing);
        ``new=None`` deletes the key. The building block of optimistic
        loops: read, compute, ``compare_and_set``, retry on False. Inside a
        :meth:`transaction` it goes through it; inside a :meth:`batch` it
        raises ``dbm_shm.error``.
        """
        k = key if type(key) is bytes else _as_bytes(key, "key")
        exp = None if expected is None else (expected if type(expected) is bytes else _as_bytes(expected, "expected"))
        nv = None if new is None else (new if type(new) is bytes else _as_bytes(new, "value"))
        if self._batches:
            tx = self._txn_here()
            if tx is not None:
                return tx.compare_and_set(k, exp, nv)
            if self._pending() is not None:
                raise error(f"compare_and_set() inside a batch() of {self._path!r}: a batch reads outside "
                            "the writer lock; use transaction()")
        rc = lib.dshm_cas(self._h, k, len(k), ffi.NULL if exp is None else exp, -1 if exp is None else len(exp),
                          ffi.NULL if nv is None else nv, -1 if nv is None else len(nv))
        if rc < 0:
            raise_for(rc, "compare_and_set", self._path)
        return rc == 1

    # -- waiting for changes -----------------------------------------------

    def wait(self, timeout: Optional[float] = None, since: Optional[int] = None) -> Optional[int]:
        """Sleep until a write commits after commit number ``since``
        (default: :meth:`commit_id` now, i.e. the next write), in any
        process. Returns the commit number then current, or ``None`` if
        ``timeout`` seconds passed first. No polling: the waiter sleeps on
        a futex in the shared mapping, and every writer wakes it.

        To see every change without a gap, pass the number returned by the
        previous call (or read before the first)::

            seen = db.commit_id()
            while True:
                ...  # read what you need
                seen = db.wait(since=seen)
        """
        return self._wait(timeout, since, None)

    def wait_key(self, key: Key, timeout: Optional[float] = None) -> bool:
        """Sleep until the value of ``key`` changes (set to another value,
        created or deleted) in any process; ``True`` then, ``False`` if
        ``timeout`` seconds passed first. The value at the call is the one
        compared against."""
        return self._wait_key(key, timeout, None)

    def _wait(self, timeout: Optional[float], since: Optional[int],
              cancel: Optional[threading.Event]) -> Optional[int]:
        return _waiting.wait(self, timeout, since, cancel)

    def _wait_key(self, key: Key, timeout: Optional[float], cancel: Optional[threading.Event]) -> bool:
        return _waiting.wait_key(self, key, timeout, cancel)

    async def _in_thread(self, fn: Callable[[threading.Event], _T]) -> _T:
        return await _waiting.in_thread(self, fn)

    async def wait_async(self, timeout: Optional[float] = None, since: Optional[int] = None) -> Optional[int]:
        """:meth:`wait` for asyncio: ``await db.wait_async(...)``. The wait
        runs in a thread of its own, so the event loop goes on; cancelling
        the task ends the wait at once."""
        if since is None:
            since = self.commit_id()
        return await self._in_thread(lambda cancel: self._wait(timeout, since, cancel))

    async def wait_key_async(self, key: Key, timeout: Optional[float] = None) -> bool:
        """:meth:`wait_key` for asyncio (see :meth:`wait_async`)."""
        return await self._in_thread(lambda cancel: self._wait_key(key, timeout, cancel))

    def stats(self) -> Dict[str, int]:
        """Counters of the store and of this handle (see the docs for each)."""
        st = ffi.new("dshm_stat_t *")
        self._call(lambda h: lib.dshm_stat(h, st), "stats")
        return {**{name: int(getattr(st, "st_" + name)) for name in _STAT_FIELDS},
                **_fastglue.counters(self)}   # fast path

    def check(self) -> List[str]:
        """Verify the whole file's structure; return the problems found (an
        empty list for a sound file). Writes nothing itself. On a handle
        opened for writing it takes the writer lock for a stable view, which
        first completes a repair a dead writer left owed; on one opened
        ``'r'`` it repairs nothing and lists an owed repair as a problem.
        Inside a :meth:`transaction` of this thread it raises
        ``dbm_shm.error`` (end the transaction first)."""
        self._refuse_in_txn("check()")
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
        """Close the database. Further use raises ``dbm_shm.error``.

        Closing while a :meth:`batch` is still open on this handle, in any
        thread, raises ``dbm_shm.error`` (saying which threads) and changes
        nothing: the handle stays open, and the batch goes on and commits
        when its block ends. End the batch first, then close.

        Closing inside a :meth:`transaction` block, from the thread that
        runs it, ends the transaction first, publishing nothing (the block's
        end then raises ``dbm_shm.error`` unless it is already raising);
        from another thread it raises ``dbm_shm.error`` and changes nothing.
        """
        tx = self._txn
        if tx is not None and not self._closed:
            if tx._user != _get_ident():
                raise error(f"close() of {self._path!r} while a transaction() is open in another thread: "
                            "end it first; nothing was changed")
            tx._end(False)
        if not self._closed:
            msg = open_batches_message(self._batches, "close()", self._path)
            if msg is not None:
                raise error(msg)
            # What this handle (or another) wrote since the last commit is
            # committed first, as gdbm syncs on close (docs/durability.md).
            # A store that cannot be written (cut, damaged) is closed all the
            # same; a flush the system refused (EIO, ENOSPC) is reported.
            rc = lib.dshm_commit_due_sync(self._h, 1)
            self._closed = True
            lib.dshm_close(self._h)
            if -4096 < rc < 0:
                raise_for(rc, "close", self._path)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # The handle's memory is freed by ffi.gc; closing is all that is
        # left, and it needs nothing from module globals at shutdown.
        try:
            h = getattr(self, "_h", None)
            if h is not None and not self._closed:
                self._closed = True
                _commit_due(h, 0)   # never waits for a lock from a finalizer
                _close(h)
        except Exception:   # never raise from a finalizer  # pragma: no cover
            pass

    @property
    def filename(self) -> Union[str, bytes]:
        """The path the database was opened with."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<dbm_shm.Database {self._path!r} ({state})>"


_fastglue.install(Database)   # fast path: moves the six methods to _py_*
_close = lib.dshm_close
_commit_due = lib.dshm_commit_due_sync


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
