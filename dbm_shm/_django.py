"""A Django cache backend over :class:`dbm_shm.Cache`: ``dbm_shm.DjangoCache``.

::

    CACHES = {
        "default": {
            "BACKEND": "dbm_shm.DjangoCache",
            "LOCATION": "/dev/shm/site",           # the store file
            "TIMEOUT": 300,                        # Django's meaning; None: forever
            "OPTIONS": {"MAX_BYTES": 256 << 20},   # the cap on the bytes held
        }
    }

Every process (and thread) of a site that names one LOCATION shares one
cache: a set in one worker is seen by the next get in any other, ``incr()``
is atomic across processes, and a deadline expires for all of them at once.
Values are pickled, ints as decimal text (so ``incr`` is one C call under
the writer lock); ``bool`` stays ``bool``. This module imports Django; the
package imports it only when ``dbm_shm.DjangoCache`` is first looked up.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from django.core.cache.backends.base import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    DEFAULT_TIMEOUT,
    BaseCache,
)
from django.core.exceptions import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    ImproperlyConfigured,
)

from ._cache import Cache

__all__ = ["DjangoCache"]

#: OPTIONS this backend reads (MAX_BYTES), and those of Django's BaseCache
#: it accepts without effect: the cap is on bytes, not on entries.
_OPTIONS = {"MAX_BYTES"}
_IGNORED_OPTIONS = {"MAX_ENTRIES", "CULL_FREQUENCY"}

#: ``incr()``'s start value for a key that vanished between the presence
#: check and the increment (see DjangoCache.incr): far from any counter.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

#: Timeouts longer than this many seconds (317 years) never expire: the
#: store's deadlines (ns since the epoch, 64 bits) end in the year 2554.
_FOREVER = 10**10

# One Cache per (store file, MAX_BYTES) per process, shared by every
# DjangoCache of that process: Django makes one backend object per thread
# (and a thread-per-request server a new thread per request), and opening
# a store maps the file and checks it: some 40 to 60 us with the close, a
# hundred gets. A dbm_shm handle is thread-safe and survives fork(). Each
# entry keeps the (device, inode) of the file it opened: a new backend
# object whose path now names another file (the store was deleted or
# replaced) opens that file instead of sharing the old handle.
_shared: Dict[Tuple[str, Optional[int]], Tuple[Cache, Tuple[int, int]]] = {}
_shared_lock = threading.Lock()


def _file_id(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _open_shared(path: str, max_bytes: Optional[int]) -> Cache:
    key = (path, max_bytes)
    with _shared_lock:
        entry = _shared.get(key)
        if entry is not None and entry[1] == _file_id(path):
            return entry[0]
        c = Cache(path, max_bytes=max_bytes, serializer="pickle")
        fid = _file_id(path)
        if fid is not None:
            _shared[key] = (c, fid)
        return c


class DjangoCache(BaseCache):  # type: ignore[misc,unused-ignore]
    """Django cache backend (``"BACKEND": "dbm_shm.DjangoCache"``) over a
    :class:`dbm_shm.Cache` on the file ``LOCATION``, shared by every process
    that names it.

    ``OPTIONS``: ``MAX_BYTES`` (int) caps the bytes of the records held
    (keys, values and a 40-byte header each, rounded up to 16); a write
    that would pass it evicts expired records first, then approximately the
    least recently stored. It is stored in the file for every process; 0
    removes the cap, and without it the file's cap is left as it is (none
    for a new file). ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` are accepted
    and have no effect. ``TIMEOUT`` has Django's meaning: seconds, None for
    never, 0 or less for "expire at once" (the value is not kept).

    ``incr()``/``decr()`` are atomic across processes and keep the key's
    deadline; they raise ``ValueError`` for a missing key (as every Django
    backend) and :class:`dbm_shm.error` for a value that is not an integer
    (a signed 64-bit one). Errors of the store raise :class:`dbm_shm.error`.
    """

    def __init__(self, location: Any, params: Dict[str, Any]) -> None:
        super().__init__(params)
        if not location:
            raise ImproperlyConfigured("dbm_shm.DjangoCache: LOCATION must name the store file "
                                       "(e.g. '/dev/shm/site')")
        options = params.get("OPTIONS") or {}
        unknown = sorted(set(options) - _OPTIONS - _IGNORED_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(f"dbm_shm.DjangoCache: unknown OPTIONS {unknown}; "
                                       f"it reads MAX_BYTES (and ignores MAX_ENTRIES, CULL_FREQUENCY)")
        max_bytes = options.get("MAX_BYTES")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
            raise ImproperlyConfigured(f"dbm_shm.DjangoCache: OPTIONS MAX_BYTES must be a "
                                       f"non-negative int or None, not {max_bytes!r}")
        self._path = os.fspath(location)
        self._max_bytes: Optional[int] = max_bytes
        self._cache: Optional[Cache] = None

    @property
    def cache(self) -> Cache:
        """The :class:`dbm_shm.Cache` behind this backend (opened on first
        use; one per store file and process): its ``stats()``,
        ``volume()``, ``expire()`` and ``memoize()``. Its keys are Django's
        made keys (``make_key``), its values pickled."""
        c = self._cache
        if c is None:
            c = self._cache = _open_shared(self._path, self._max_bytes)
        return c

    # -- time --------------------------------------------------------------

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> Optional[float]:
        """Django's ``timeout`` as seconds from now: None for never, 0 for
        "expired at once" (for 0 and negative timeouts), else the timeout."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(0.0, float(timeout))

    def _ttl(self, timeout: Any) -> float:
        t = self.get_backend_timeout(timeout)
        # A deadline is ns since the epoch in 64 bits (to the year 2554):
        # a timeout of more than _FOREVER seconds (317 years) is "never".
        return math.inf if t is None or t > _FOREVER else t

    # -- reads -------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        """The value of ``key``, or ``default`` if it is absent or expired
        (a stored None is returned as None). Lock-free."""
        return self.cache.get(self.make_and_validate_key(key, version=version), default)

    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        """``{key: value}`` for the live keys of ``keys``, in one C call."""
        made: Dict[str, Any] = {}
        for k in keys:
            made[self.make_and_validate_key(k, version=version)] = k
        if not made:
            return {}
        found = self.cache.get_many(list(made))
        return {made[mk]: v for mk, v in found.items()}

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        """True if ``key`` is present and not expired."""
        return self.make_and_validate_key(key, version=version) in self.cache

    # -- writes ------------------------------------------------------------

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Optional[int] = None) -> None:
        """Store ``value`` (pickled; an int as decimal text) with Django's
        ``timeout``."""
        self.cache.set(self.make_and_validate_key(key, version=version), value, self._ttl(timeout))

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Optional[int] = None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired: True if it
        was stored. Atomic across processes."""
        return self.cache.add(self.make_and_validate_key(key, version=version), value, self._ttl(timeout))

    def set_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: Optional[int] = None) -> List[Any]:
        """``set()`` each item (each one atomic); returns ``[]``: a key that
        cannot be stored raises instead."""
        if not data:
            return []
        made = {self.make_and_validate_key(k, version=version): v for k, v in data.items()}
        self.cache.set_many(made, self._ttl(timeout))
        return []

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        """Give a live ``key`` a new deadline (Django's ``timeout``): True,
        or False if it is absent or expired."""
        return self.cache.touch(self.make_and_validate_key(key, version=version), self._ttl(timeout))

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        """Remove ``key``: True if a live value was removed."""
        return self.cache.delete(self.make_and_validate_key(key, version=version))

    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        """``delete()`` each key."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            self.cache.delete_many(made)

    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        """Add ``delta`` to the integer at ``key`` and return the result,
        atomically across processes; the key keeps its deadline.
        ``ValueError`` if the key is absent or expired;
        :class:`dbm_shm.error` if its value is not a (64-bit) integer."""
        k = self.make_and_validate_key(key, version=version)
        c = self.cache
        if k not in c:
            raise ValueError(f"Key '{key}' not found")
        # The key may vanish (deleted, expired, evicted) between the check
        # and the increment, which would then create it. So the increment
        # starts a vanished key from a sentinel far from any counter and
        # stores it already expired (ttl 0: absent at once, for everyone):
        # a result of sentinel + delta for a key then absent means it was
        # missing. (A live counter that held exactly the sentinel and was
        # deleted right after this increment would read as missing too.)
        start = _INT64_MIN if delta >= 0 else _INT64_MAX
        out = c.incr(k, delta, default=start, ttl=0)
        if out == start + delta and k not in c:
            raise ValueError(f"Key '{key}' not found")
        return out

    def decr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        """``incr(key, -delta)``."""
        return self.incr(key, -delta, version=version)

    def clear(self) -> None:
        """Remove every key of the store: every KEY_PREFIX and version, and
        anything else stored in the file (as FileBasedCache and Redis's
        ``flushdb`` do)."""
        self.cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to release: Django calls this at the end of every
        request, and the store stays mapped for the next one (as
        LocMemCache keeps its dict). The handle is shared by the process's
        backends of this LOCATION and closed when the process exits."""
