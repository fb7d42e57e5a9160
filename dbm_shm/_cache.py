"""A cache shared by every process on a host: :class:`Cache`.

A :class:`Cache` is a store (a :class:`dbm_shm.Database` on one file) with
cache semantics: a deadline per record, a byte cap with eviction, and
counters. The deadline and the cap live in the file, so every process that
opens it, with :class:`Cache` or with :func:`dbm_shm.open`, sees the same
expiry and obeys the same cap.

- **Expiry.** ``set(key, value, ttl=...)`` stores the record with its
  deadline (ns since the epoch). From the deadline on, every reader in
  every process takes the key for absent: the C read path compares the
  deadline with the clock, and nothing is written on a read. Writers drop
  expired records as they meet them (an overwrite, an eviction,
  ``expire()``, ``reorganize()``).
- **The cap.** ``max_bytes`` bounds the bytes of the records held (keys,
  values and a 40-byte header each, rounded up to 16): a write that would
  pass it evicts first, under the writer lock, so the cap holds with any
  number of writing processes. Eviction takes expired records first, then
  an approximation of the least recently stored: the record with the
  oldest store stamp among 16 sampled (as Redis samples for its LRU). Reads
  write nothing, so a key read often but stored long ago is evicted as
  readily as one never read.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, TypeVar, Union, cast

from ._db import Database, open as _open
from ._dshm import ffi, lib
from ._errors import error, raise_for

_F = TypeVar("_F", bound=Callable[..., Any])
Key = Union[bytes, str]
#: The prefix of the keys Cache.memoize's locks use.
LOCK_PREFIX = b"\0dbm_shm.lock\0"
_NOTFOUND = lib.DSHM_NOTFOUND
_MISSING = object()
_FAR = (1 << 64) - 1   # a deadline that never comes
_tls = threading.local()


def _key(key: Key) -> bytes:
    if type(key) is bytes:
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"cache keys must be bytes or str, not {type(key).__name__}")


class Cache:
    """A cache in a dbm_shm store, shared by every process that opens it.

    ``path``: the store's file (created if absent). ``max_bytes``: the cap
    on the bytes of records held (None: no cap; a value passed is stored
    in the file for every process). ``default_ttl``: seconds for ``set()``
    without a ``ttl`` (None: never expire). ``serializer``: None (keys and
    values are bytes or str, values come back as bytes) or ``"pickle"``
    (values of any picklable type; ints are stored as decimal text so that
    :meth:`incr` works on them).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], max_bytes: Optional[int] = None,
                 default_ttl: Optional[float] = None, serializer: Optional[str] = None) -> None:
        if serializer not in (None, "pickle"):
            raise ValueError(f"serializer must be None or 'pickle', not {serializer!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, not {max_bytes!r}")
        self._check_ttl(default_ttl, "default_ttl")
        self.default_ttl = default_ttl
        self.serializer = serializer
        self._hits = 0
        self._misses = 0
        self.db: Database = _open(path, "c")
        self._h = self.db._h
        self._path = self.db._path
        self._dbget = self.db.get
        self._dbset = self.db.__setitem__
        if max_bytes is not None and self.db.stats()["max_bytes"] != max_bytes:
            rc = lib.dshm_set_max_bytes(self._h, max_bytes)
            if rc:
                raise_for(rc, "set max_bytes of", self._path)

    # -- time --------------------------------------------------------------

    @staticmethod
    def _check_ttl(ttl: Optional[float], what: str = "ttl") -> None:
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl != ttl):
            raise TypeError(f"{what} must be a number of seconds or None, not {ttl!r}")

    def _deadline(self, ttl: Optional[float]) -> int:
        """ns since the epoch (0: never) for a ttl (None: default_ttl)."""
        if ttl is None:
            ttl = self.default_ttl
            if ttl is None:
                return 0
        else:
            self._check_ttl(ttl)
        if ttl == math.inf:
            return 0
        if ttl <= 0:
            return 1   # long past: absent at once
        # A deadline past what 64 bits of ns hold (the year 2554) never comes.
        return min(time.time_ns() + max(1, int(min(ttl, 1e12) * 1e9)), _FAR)

    # -- values ------------------------------------------------------------

    def _dumps(self, value: Any) -> bytes:
        if self.serializer is None:
            if type(value) is bytes:
                return value
            if isinstance(value, str):
                return value.encode("utf-8")
            if isinstance(value, (bytearray, memoryview)):
                return bytes(value)
            raise TypeError(f"values must be bytes or str (or use serializer='pickle'), "
                            f"not {type(value).__name__}")
        if type(value) is int:
            return b"%d" % value   # incr works on it; a pickle starts with 0x80
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def _loads(self, data: bytes) -> Any:
        if self.serializer is None:
            return data
        if data[:1] == b"\x80":
            return pickle.loads(data)
        return int(data)

    # -- reads -------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is absent or expired.
        Lock-free: the store's C read path, no write."""
        v = self._dbget(key)
        if v is None:
            self._misses += 1
            return default
        self._hits += 1
        return v if self.serializer is None else self._loads(v)

    def __contains__(self, key: Key) -> bool:
        return key in self.db

    def get_many(self, keys: Iterable[Key]) -> Dict[Any, Any]:
        """``{key: value}`` for the keys of ``keys`` that are live (the keys
        as given); one C call for all of them."""
        ks = list(keys)
        vals = self.db.get_many([_key(k) for k in ks])
        out: Dict[Any, Any] = {}
        for k, v in zip(ks, vals):
            if v is None:
                self._misses += 1
            else:
                self._hits += 1
                out[k] = v if self.serializer is None else self._loads(v)
        return out

    def __len__(self) -> int:
        """Records held, including expired ones no writer has dropped yet
        (``expire()`` first for an exact count)."""
        return len(self.db)

    def volume(self) -> int:
        """Bytes of the records held: what ``max_bytes`` caps."""
        return int(self.db.stats()["live_bytes"])

    def stats(self) -> Dict[str, int]:
        """``hits`` and ``misses`` (of this Cache object's reads),
        ``evictions`` and ``expired`` (records dropped for the cap and for
        their deadline, by every process since the file was made), ``count``,
        ``volume`` and ``max_bytes`` (0: no cap)."""
        st = self.db.stats()
        return {"hits": self._hits, "misses": self._misses, "evictions": st["evictions"],
                "expired": st["expired"], "count": st["count"], "volume": st["live_bytes"],
                "max_bytes": st["max_bytes"]}

    # -- writes ------------------------------------------------------------

    def _put(self, k: bytes, v: bytes, deadline: int, flags: int, what: str) -> int:
        rc = lib.dshm_put_ttl(self._h, k, len(k), v, len(v), flags, deadline)
        if rc and rc != lib.DSHM_KEYEXIST:
            if rc == lib.DSHM_TOOBIG and self.db.stats()["max_bytes"]:
                raise error(f"{what}: {k[:40]!r} in {self._path!r}: a record of {len(k)} + {len(v)} bytes "
                            "does not fit under the cache's max_bytes; nothing was changed")
            raise_for(rc, what, self._path)
        return int(rc)

    def set(self, key: Key, value: Any, ttl: Optional[float] = None) -> bool:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds (None:
        ``default_ttl``; ``math.inf``: never; 0 or less: at once). Evicts
        first if the cap would be passed. Returns True."""
        k = _key(key)
        v = self._dumps(value)
        deadline = self._deadline(ttl)
        if deadline == 0:
            # No deadline: the store's own set, through the C fast path.
            try:
                self._dbset(k, v)
            except error:
                self._put(k, v, 0, 0, "set")   # the message that names the cap (or the same error)
            return True
        self._put(k, v, deadline, 0, "set")
        return True

    def add(self, key: Key, value: Any, ttl: Optional[float] = None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired: True if
        stored. Atomic across processes (the check and the store are one
        hold of the writer lock)."""
        return self._put(_key(key), self._dumps(value), self._deadline(ttl), lib.DSHM_NOOVERWRITE, "add") == 0

    def set_many(self, mapping: Mapping[Key, Any], ttl: Optional[float] = None) -> None:
        """``set()`` each item (each one atomic; the whole is not)."""
        deadline = self._deadline(ttl)
        for k, v in mapping.items():
            self._put(_key(k), self._dumps(v), deadline, 0, "set_many")

    def delete(self, key: Key) -> bool:
        """Remove ``key``: True if a live value was removed."""
        k = _key(key)
        rc = lib.dshm_del(self._h, k, len(k))
        if rc == _NOTFOUND:
            return False
        if rc:
            raise_for(rc, "delete", self._path)
        return True

    def delete_many(self, keys: Iterable[Key]) -> int:
        """``delete()`` each key; how many live ones were removed."""
        return sum(self.delete(k) for k in keys)

    def touch(self, key: Key, ttl: Optional[float] = None) -> bool:
        """Give a live ``key`` a new deadline (``ttl`` as for ``set()``):
        True, or False if it is absent or expired."""
        k = _key(key)
        rc = lib.dshm_touch(self._h, k, len(k), self._deadline(ttl))
        if rc == _NOTFOUND:
            return False
        if rc:
            raise_for(rc, "touch", self._path)
        return True

    def incr(self, key: Key, delta: int = 1, default: int = 0, ttl: Optional[float] = None) -> int:
        """Add ``delta`` to the integer at ``key`` and return it, atomically
        across processes. An absent or expired key starts at ``default``
        and gets ``ttl``; a live one keeps its deadline. A value that is
        not an integer raises :class:`dbm_shm.error` and changes nothing."""
        k = _key(key)
        if type(delta) is not int or type(default) is not int:
            raise TypeError(f"delta and default must be int, not {type(delta).__name__} "
                            f"and {type(default).__name__}")
        try:
            out = _tls.i64
        except AttributeError:
            out = _tls.i64 = ffi.new("int64_t *")
        try:
            rc = lib.dshm_incr_ttl(self._h, k, len(k), delta, default, self._deadline(ttl), out)
        except OverflowError:
            raise error(f"incr: {key!r} in {self._path!r}: delta {delta} or default {default} is outside "
                        "a signed 64-bit integer; nothing was changed") from None
        if rc == lib.DSHM_INVALID:
            raise error(f"incr: the value of {key!r} in {self._path!r} is not an integer in decimal; "
                        "nothing was changed")
        if rc:
            raise_for(rc, "incr", self._path)
        return int(out[0])

    def decr(self, key: Key, delta: int = 1, default: int = 0, ttl: Optional[float] = None) -> int:
        """``incr(key, -delta, default, ttl)``."""
        if type(delta) is not int:
            raise TypeError(f"delta must be int, not {type(delta).__name__}")
        return self.incr(key, -delta, default, ttl)

    def clear(self) -> None:
        """Remove every key (the cap and the counters stay)."""
        self.db.clear()

    def expire(self) -> int:
        """Drop every expired record now; how many were dropped. (Writers
        also drop them as they meet them; reads never write.)"""
        n = lib.dshm_expire(self._h)
        if n < 0:
            raise_for(int(n), "expire", self._path)
        return int(n)

    # -- memoize -----------------------------------------------------------

    def memoize(self, ttl: Optional[float] = None, key: Optional[Callable[..., Key]] = None,
                lock_ttl: float = 60.0) -> Callable[[_F], _F]:
        """Decorator: cache a function's results (pickled) under a key made
        from its qualified name and arguments (or ``key(*args, **kwargs)``).

        One computation per key across every process where possible: a
        caller that misses takes a short lock (an ``add`` of a lock key
        that expires after ``lock_ttl`` seconds, so a holder that dies does
        not block the others for longer); the others wait for the result
        (``wait_key``) instead of computing it too. A lock that expires
        while its holder still computes lets one more process compute.
        """
        def deco(fn: _F) -> _F:
            name = f"{fn.__module__}.{fn.__qualname__}".encode()

            def make_key(args: Any, kwargs: Any) -> bytes:
                if key is not None:
                    return _key(key(*args, **kwargs))
                blob = pickle.dumps((args, sorted(kwargs.items())), pickle.HIGHEST_PROTOCOL)
                return b"memoize:" + name + b":" + hashlib.sha256(blob).hexdigest().encode()

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                k = make_key(args, kwargs)
                lk = LOCK_PREFIX + k
                while True:
                    raw = self._dbget(k)
                    if raw is not None:
                        self._hits += 1
                        return pickle.loads(raw)
                    self._misses += 1
                    token = b"%d:%d" % (os.getpid(), threading.get_ident())
                    if self._put(lk, token, self._deadline(lock_ttl), lib.DSHM_NOOVERWRITE, "memoize") == 0:
                        try:
                            raw = self._dbget(k)   # stored between our miss and our lock?
                            if raw is not None:
                                return pickle.loads(raw)
                            result = fn(*args, **kwargs)
                            self._put(k, pickle.dumps(result, pickle.HIGHEST_PROTOCOL), self._deadline(ttl),
                                      0, "memoize")
                            return result
                        finally:
                            self.db.compare_and_set(lk, token, None)   # ours only: it may have expired
                    # Another process computes: wait for the key, or for
                    # its lock to go (released, or expired: then retry).
                    while self._dbget(k) is None and self._dbget(lk) is not None:
                        self.db.wait_key(k, timeout=0.05)

            return cast(_F, wrapper)
        return deco

    # -- life --------------------------------------------------------------

    def close(self) -> None:
        """Close the store (commits what this process wrote, as
        ``Database.close()``)."""
        self.db.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dbm_shm.Cache {self._path!r}>"


__all__: List[str] = ["Cache", "LOCK_PREFIX"]
