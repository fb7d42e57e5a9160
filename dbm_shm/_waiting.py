"""Waiting for changes: the loops behind :meth:`Database.wait`,
:meth:`Database.wait_key` and their asyncio forms (a wait in a thread of
its own that a cancelled task ends at once)."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from ._dshm import ffi, lib
from ._errors import raise_for
from ._records import Key
from ._records import as_bytes as _as_bytes

__all__ = ["wait", "wait_key", "in_thread"]

_T = TypeVar("_T")


def wait(db: Any, timeout: Optional[float], since: Optional[int],
          cancel: Optional[threading.Event]) -> Optional[int]:
    if since is None:
        since = db.commit_id()
    if not isinstance(since, int) or since < 0:
        raise ValueError(f"since must be a commit number (an int >= 0), not {since!r}")
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative or None")
    deadline = None if timeout is None else time.monotonic() + timeout
    out = ffi.new("uint64_t *")
    while True:
        if cancel is not None and cancel.is_set():
            return None
        left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))
        rc = lib.dshm_wait(db._h, since, left, out)
        if rc == 0:
            return int(out[0])
        if rc == -errno.ETIMEDOUT:
            return None
        if rc != -errno.EINTR:   # EINTR: a signal (its handler runs now) or an interrupt
            raise_for(rc, "wait", db._path)

def wait_key(db: Any, key: Key, timeout: Optional[float], cancel: Optional[threading.Event]) -> bool:
    k = key if type(key) is bytes else _as_bytes(key, "key")
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative or None")
    deadline = None if timeout is None else time.monotonic() + timeout
    (old,), seen = db._get_many([k])
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if wait(db, left, seen, cancel) is None:
            return False
        (new,), seen = db._get_many([k])
        if new != old:
            return True

async def in_thread(db: Any, fn: Callable[[threading.Event], _T]) -> _T:
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[_T]" = loop.create_future()
    cancel = threading.Event()

    def done(result: Any, exc: Optional[BaseException]) -> None:
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def run() -> None:
        try:
            r, e = fn(cancel), None
        except BaseException as exc:   # handed to the awaiting task
            r, e = None, exc
        try:
            loop.call_soon_threadsafe(done, r, e)
        except RuntimeError:
            # The loop was closed meanwhile (the task was cancelled as
            # the loop ended): nobody is waiting for this result.
            pass

    db._check_open()
    threading.Thread(target=run, name="dbm_shm-wait", daemon=True).start()
    try:
        return await fut
    except asyncio.CancelledError:
        cancel.set()
        if not db._closed:
            lib.dshm_interrupt(db._h)
        raise

