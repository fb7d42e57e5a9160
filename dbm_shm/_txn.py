"""Transactions: ``with db.transaction() as tx:`` and its asyncio form.

A transaction holds the store's writer lock for its block (``dshm_txn_begin``
in the C core, csrc/dshm_txn.c), so a read-modify-write inside it cannot
interleave with any other writer, in any process. Its writes are held back
in a :class:`~dbm_shm._batch.Pending` (the model of ``batch()``) and
published at the end of the block as one atomic batch under the same hold
(``dshm_txn_commit``); an exception publishes nothing (``dshm_txn_abort``).
Readers never wait: they see the store before the transaction or after it.

The lock is a mutex owned by the OS thread that took it: every C call of a
transaction runs on that thread. For :func:`transaction_async` that is a
thread of the transaction's own (a one-thread executor), so the event loop
never blocks on the lock; the block's reads hand their C call to it.

It imports nothing of ``_db`` (no cycle): it uses the handle's ``_h``,
``_path``, ``_batches``, ``_txn``, ``_check_open()`` and ``_scan()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Iterator, MutableMapping, Optional, TypeVar, Union

from ._batch import DELETE, Pending, count_delta, overlay, pack_batch
from ._dshm import ffi, lib
from ._errors import error, raise_for

__all__ = ["Transaction", "AsyncTransaction", "as_bytes", "parse_int", "NOT_INTEGER"]

Key = Union[str, bytes, bytearray, memoryview]
_T = TypeVar("_T")
_CAP = 64 * 1024
_tls = threading.local()
_get_ident = threading.get_ident
_txn_get = lib.dshm_txn_get
_unpack = ffi.unpack
_NOTFOUND = lib.DSHM_NOTFOUND

#: What ``incr()`` says of a stored value that is not an integer.
NOT_INTEGER = "is not an integer in ASCII decimal (optional sign, digits, nothing else)"


def as_bytes(obj: Any, what: str) -> bytes:
    """``obj`` (str: UTF-8, or bytes-like) as bytes; TypeError otherwise."""
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"{what} must be bytes or str, not {type(obj).__name__}")


def parse_int(v: Optional[bytes], default: int, key: bytes, path: Any) -> int:
    """The integer a counter's stored value ``v`` holds (``default`` when
    absent), as ``dshm_incr`` reads it; ``dbm_shm.error`` if it is none."""
    if v is None:
        return default
    s = v[1:] if v[:1] in (b"-", b"+") else v
    if not s or not s.isdigit() or not s.isascii():
        raise error(f"incr: the value of {key!r} in {path!r} {NOT_INTEGER}: {v[:40]!r}; nothing was changed")
    return int(v)


def _buf() -> Any:
    try:
        return _tls.buf
    except AttributeError:
        _tls.buf = ffi.new("char[]", _CAP)
        return _tls.buf


class Transaction(MutableMapping[bytes, bytes]):
    """What ``db.transaction()`` returns: a context manager, and inside its
    block a mutable mapping of the store plus the block's own writes.

    ``tx[key]``, ``key in tx``, ``tx.get()``, ``len(tx)`` and iteration see
    the store as it is (no other writer can change it while the block
    runs) with this block's sets and deletes applied; ``tx[key] = value``,
    ``del tx[key]``, ``tx.pop()``, ``tx.setdefault()``, ``tx.update()`` are
    held back and published together when the block ends. Keys and values
    are bytes (``str`` is UTF-8 encoded), as for the database.
    """

    __slots__ = {
        "_db": None, "_timeout": None, "_p": None, "_user": None, "_ex": None, "_used": None,
        "_lock_tid": None, "_buf": None, "_handover": None, "_cancelled": None,
        "commit_id": "The commit number the transaction published (None before its end, "
                     "or when it wrote nothing or failed).",
        "__weakref__": None,
    }

    def __init__(self, db: Any, timeout: Optional[float]) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, or None, not {timeout!r}")
        self._db = db
        self._timeout = timeout
        self._p: Optional[Pending] = None
        self._user = 0                      # thread ident allowed to use the block
        self._ex: Optional[concurrent.futures.ThreadPoolExecutor] = None   # async: the lock's thread
        self._used = False
        self._lock_tid = 0                  # thread ident holding the writer lock
        self._buf: Any = None               # the lock thread's value buffer
        self._handover: Any = None          # async: a Lock; the lock's thread hands the block over
        self._cancelled = False             # async: the task gave up waiting
        self.commit_id: Optional[int] = None

    # -- the lock's thread -------------------------------------------------

    def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a C call of the transaction on the thread holding the lock."""
        if self._ex is None or threading.get_ident() == self._lock_tid:
            return fn(*args)
        return self._ex.submit(fn, *args).result()

    def _where(self) -> str:
        return repr(self._db._path)

    # -- begin and end -----------------------------------------------------

    def _begin(self) -> None:
        db = self._db
        if self._p is not None or self._used:
            raise error(f"transaction on {self._where()}: this transaction object was already used; "
                        "call db.transaction() again")
        db._check_open()
        me = threading.get_ident()
        cur = db._txn
        if cur is not None:
            who = "this thread" if cur._user == me else f"thread {_thread_name(cur._user)!r}"
            raise error(f"transaction on {self._where()}: a transaction is already open on this handle "
                        f"in {who}; transactions do not nest, and one handle runs one at a time "
                        "(open a handle per thread)")
        if me in db._batches:
            raise error(f"transaction on {self._where()}: inside a batch() of this thread; "
                        "end the batch first (a transaction publishes as a batch itself)")
        db._txn = self   # claimed before the GIL is let go in the C call
        try:
            ns = -1 if self._timeout is None else int(self._timeout * 1e9)
            rc = self._run(lib.dshm_txn_begin, db._h, ns)
            if rc == lib.DSHM_BUSY:
                raise error(f"transaction on {self._where()}: the writer lock was not free within "
                            f"{self._timeout} s (held by pid {_lock_pid(db)}); nothing was changed")
            if rc:
                raise_for(rc, "transaction", db._path)
        except BaseException:
            db._txn = None
            raise
        self._lock_tid = me
        self._buf = _buf()
        p = Pending()
        p.depth = 1   # a batch() inside the block nests in the transaction
        self._p = p
        self._user = me
        db._batches[me] = p

    def _end(self, publish: bool) -> None:
        db = self._db
        p = self._p
        assert p is not None
        db._batches.pop(self._user, None)
        db._txn = None
        self._p = None
        self._used = True
        if not publish:
            rc = self._run(lib.dshm_txn_abort, db._h)
            if rc and rc != lib.DSHM_CLOSED:
                raise_for(rc, "transaction abort", db._path)
            return
        ops = p.ops
        if not ops:   # nothing to publish: give the lock back, no commit
            rc = self._run(lib.dshm_txn_abort, db._h)
            if rc and rc != lib.DSHM_CLOSED:
                raise_for(rc, "transaction", db._path)
            return
        kbuf, klens, vbuf, vlens = pack_batch(list(ops), list(ops.values()), bool(p.deletes))
        try:
            out = _tls.commit
        except AttributeError:
            out = _tls.commit = ffi.new("uint64_t *")
        rc = self._run(lib.dshm_txn_commit, db._h, len(ops), kbuf, klens, vbuf, vlens, out)
        if rc:
            raise_for(rc, "transaction commit", db._path)
        self.commit_id = int(out[0])

    def __enter__(self) -> "Transaction":
        self._begin()
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if self._p is None:   # ended by close() inside the block
            if et is None:
                raise error(f"transaction on {self._where()}: the database was closed inside the block; "
                            "nothing was published")
            return
        self._check()
        self._end(et is None)

    # -- the mapping -------------------------------------------------------

    def _check(self) -> Pending:
        p = self._p
        if p is None:
            raise error(f"transaction on {self._where()}: used outside its block (it ended, or never began)")
        if threading.get_ident() != self._user:
            raise error(f"transaction on {self._where()}: used from thread "
                        f"{threading.current_thread().name!r}; it belongs to thread "
                        f"{_thread_name(self._user)!r} (the writer lock is that thread's)")
        return p

    def _stored(self, k: bytes) -> Optional[bytes]:
        """The value of ``k`` in the store (under the held lock), or None."""
        h = self._db._h
        buf = self._buf
        if self._ex is None:
            n = _txn_get(h, k, len(k), buf, _CAP)
        else:
            n = self._run(_txn_get, h, k, len(k), buf, _CAP)
        if n > _CAP:   # nobody else writes meanwhile: the size holds
            buf = ffi.new("char[]", n)
            n = self._run(_txn_get, h, k, len(k), buf, n)
        if n >= 0:
            return _unpack(buf, n)
        if n == _NOTFOUND:
            return None
        raise_for(n, "transaction get", self._db._path)

    def _value(self, k: bytes) -> Optional[bytes]:
        p = self._p
        if p is None or _get_ident() != self._user:
            p = self._check()
        ops = p.ops
        if k in ops:
            v = ops[k]
            return None if v is DELETE else v
        return self._stored(k)

    def __getitem__(self, key: Key) -> bytes:
        v = self._value(key if type(key) is bytes else as_bytes(key, "key"))
        if v is None:
            raise KeyError(key)
        return v

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key`` as the block sees it, or ``default``."""
        v = self._value(key if type(key) is bytes else as_bytes(key, "key"))
        return default if v is None else v

    def __setitem__(self, key: Key, value: Key) -> None:
        p = self._p
        if p is None or _get_ident() != self._user:
            p = self._check()
        p.ops[key if type(key) is bytes else as_bytes(key, "key")] = (
            value if type(value) is bytes else as_bytes(value, "value"))

    def __delitem__(self, key: Key) -> None:
        k = key if type(key) is bytes else as_bytes(key, "key")
        if self._value(k) is None:
            raise KeyError(key)
        assert self._p is not None
        self._p.delete(k)

    def __contains__(self, key: object) -> bool:
        return self._value(as_bytes(key, "key")) is not None

    def __len__(self) -> int:
        return self._count()

    def _count(self) -> int:
        p = self._check()
        n = lib.dshm_count(self._db._h)
        if n < 0:
            raise_for(n, "len", self._db._path)
        return int(n) + count_delta(p, lambda k: self._stored(k) is not None)

    def __iter__(self) -> Iterator[bytes]:
        p = self._check()
        # The scan reads lock-free (no other writer runs while it is held).
        for k, _ in overlay(p, self._db._scan(False)):
            yield k

    def __repr__(self) -> str:
        state = "open" if self._p is not None else "not open"
        return f"<dbm_shm.Transaction on {self._db._path!r} ({state})>"

    # -- counters ----------------------------------------------------------

    def incr(self, key: Key, delta: int = 1, default: int = 0) -> int:
        """Add ``delta`` to the integer stored at ``key`` (ASCII decimal;
        ``default`` when absent), inside the transaction; the new value."""
        k = as_bytes(key, "key")
        n = parse_int(self._value(k), default, k, self._db._path) + _int(delta, "delta")
        if not -(2**63) <= n < 2**63:
            raise error(f"incr: {key!r} in {self._db._path!r}: the result {n} is outside a signed 64-bit "
                        "integer; nothing was changed")
        self[k] = str(n).encode()
        return n

    def decr(self, key: Key, delta: int = 1, default: int = 0) -> int:
        """``incr(key, -delta, default)``."""
        return self.incr(key, -_int(delta, "delta"), default)

    def compare_and_set(self, key: Key, expected: Optional[Key], new: Optional[Key]) -> bool:
        """Inside the transaction: if ``key`` holds ``expected`` (None:
        absent), set it to ``new`` (None: delete it) and return True."""
        k = as_bytes(key, "key")
        exp = None if expected is None else as_bytes(expected, "expected")
        if self._value(k) != exp:
            return False
        if new is None:
            if exp is not None:
                del self[k]
        else:
            self[k] = new
        return True


class AsyncTransaction:
    """What ``db.transaction_async()`` returns: ``async with ... as tx``,
    where ``tx`` is a :class:`Transaction` whose writer lock is held by a
    thread of its own, so waiting for it never blocks the event loop."""

    def __init__(self, db: Any, timeout: Optional[float]) -> None:
        self._tx = Transaction(db, timeout)
        self._tx._handover = threading.Lock()

    async def __aenter__(self) -> Transaction:
        tx = self._tx
        ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbm_shm-txn")
        tx._ex = ex
        loop = asyncio.get_running_loop()
        me = threading.get_ident()
        try:
            # The checks and the claim on the loop's thread, the wait on ex's.
            db = tx._db
            db._check_open()
            if db._txn is not None or me in db._batches:
                tx._begin()   # raises the error that says which
            fut = loop.run_in_executor(ex, _begin_for, tx, me)
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled while waiting: the task ends now. If the lock came
            # already, give it back here; if it comes later, the lock's
            # thread gives it back itself (the loop may be gone by then).
            with tx._handover:
                tx._cancelled = True
                handed = tx._p is not None and tx._user == me
            if handed:
                tx._end(False)
            ex.shutdown(wait=False)
            raise
        except BaseException:
            ex.shutdown(wait=False)
            raise
        return tx

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> None:
        tx = self._tx
        ex = tx._ex
        assert ex is not None
        try:
            if tx._p is None:
                tx.__exit__(et, ev, tb)
                return
            tx._check()
            await asyncio.get_running_loop().run_in_executor(ex, tx._end, et is None)
        finally:
            ex.shutdown(wait=False)


def _begin_for(tx: Transaction, user: int) -> None:
    """On the lock's thread: begin, then hand the block to thread ``user``
    (or, if its task was cancelled meanwhile, give the lock back)."""
    tx._ex, ex = None, tx._ex   # run the C call right here
    try:
        tx._begin()
        with tx._handover:
            if tx._cancelled:
                tx._end(False)
                return
            db = tx._db
            p = db._batches.pop(threading.get_ident())
            db._batches[user] = p
            tx._user = user
    finally:
        tx._ex = ex


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    return v


def _thread_name(ident: int) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return str(ident)


def _lock_pid(db: Any) -> int:
    st = ffi.new("dshm_stat_t *")
    return int(st.st_lock_pid) if lib.dshm_stat(db._h, st) == 0 else 0
