"""Glue between :class:`dbm_shm.Database` and its C fast path, ``dbm_shm._fast``.

The fast path is a C base type of ``Database`` (``_fast.FastBase``) that
serves ``db[key]``, ``key in db``, ``db[key] = value``, ``del db[key]`` and
``db.get(key, default)`` by calling the C core directly, and hands every
case it does not handle to the Python methods of ``Database`` (see
``dbm_shm/_fast.c``). This module:

* picks the base class (``FastBase``, or ``object`` where the extension is
  missing or ``DSHM_NO_FASTPATH`` is set to anything but ``""``/``"0"`` at
  import);
* :func:`install`: once ``Database`` is defined, moves its six Python
  methods to ``_py_*`` names and puts the base type's C methods in their
  place, and
  registers the core's entry points (addresses taken from the cffi module,
  so the process holds one copy of the core) and those methods;
* :func:`attach`: gives each opened handle's pointer to its object;
* :func:`counters`: the fast-path counters ``stats()`` reports.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from types import ModuleType

__all__ = ["ENV_VAR", "ENABLED", "OFF_REASON", "Base", "fast_path_enabled", "install",
           "attach", "counters"]

#: Set to anything but ``""`` or ``"0"`` to turn the fast path off (read at import).
ENV_VAR = "DSHM_NO_FASTPATH"

#: The methods the fast path serves; their Python versions stay as ``_py_<name>``.
METHODS = ("__getitem__", "__setitem__", "__delitem__", "__contains__", "get", "get_many")


def _load() -> Tuple[Optional[ModuleType], Optional[str]]:
    """The extension module and None, or None and why not (turned off, or
    missing)."""
    setting = os.environ.get(ENV_VAR, "")
    if setting not in ("", "0"):
        return None, f"turned off by {ENV_VAR}={setting}"
    try:
        from . import _fast
    except ImportError as exc:
        return None, f"the extension dbm_shm._fast could not be imported ({exc})"
    return _fast, None


_fast, OFF_REASON = _load()

#: Whether the fast path serves Database's mapping operations in this process.
ENABLED = _fast is not None


def fast_path_enabled() -> bool:
    """Whether the C fast path serves this process's ``Database`` objects.

    The fast path (``dbm_shm._fast``, a C base type of :class:`Database`)
    answers ``db[key]``, ``key in db``, ``db[key] = value``, ``del db[key]``,
    ``get`` and ``get_many`` without going through Python code, about ten
    times faster than the Python path behind it. It is off when the
    extension was not built or failed to import, or when the environment
    variable ``DSHM_NO_FASTPATH`` was set to anything but ``""`` or ``"0"``
    when ``dbm_shm`` was imported. Everything works either way; only the
    speed differs. ``dbm-shm info`` prints the answer and, when it is off,
    why.
    """
    return ENABLED

class _PlainBase:
    """The base of ``Database`` without the fast path: adds nothing (an empty
    class rather than ``object``, so ``Database`` can also derive from
    ``MutableMapping``)."""

    __slots__ = ()


if TYPE_CHECKING:
    Base = _PlainBase
else:
    Base = _fast.FastBase if _fast is not None else _PlainBase


def _py_name(name: str) -> str:
    return "_py_" + name.strip("_")


def install(cls: type) -> None:
    """Let ``cls``'s C base type serve :data:`METHODS` (call once, right
    after the class statement). A no-op without the fast path."""
    if _fast is None:
        return
    from ._dshm import ffi, lib

    methods = [cls.__dict__[name] for name in METHODS]
    for name, fn in zip(METHODS, methods):
        setattr(cls, _py_name(name), fn)
        # The base type's own descriptor: CPython then fills the slot with
        # the base's C function itself (no call through the descriptor),
        # and the class still lists the method (for help() and the docs).
        setattr(cls, name, _fast.FastBase.__dict__[name])

    def addr(fn: str) -> int:
        return int(ffi.cast("uintptr_t", ffi.addressof(lib, fn)))

    _fast.init(addr("dshm_get"), addr("dshm_put"), addr("dshm_del"), addr("dshm_get_many"),
               addr("dshm_get_try"), int(lib.DSHM_NOTFOUND), int(lib.DSHM_BUSY), int(lib.DSHM_TRY),
               *methods, _raise_for)


def _raise_for(db: Any, rc: int, what: str) -> None:
    """Raise the error of core code ``rc`` for ``db`` as its Python methods do."""
    from ._errors import raise_for

    raise_for(rc, what, db._path)


def attach(db: Any, handle: Any, batches: Dict[int, Any]) -> None:
    """Give ``db`` (just opened) its core handle: ``handle`` is the cffi
    ``dshm_db *`` whose finalizer frees it (the C object keeps it alive),
    ``batches`` the dict of batches open on ``db`` (while non-empty, the
    fast path defers to Python). A no-op without the fast path."""
    if _fast is None:
        return
    from ._dshm import ffi

    db._fast_attach(int(ffi.cast("uintptr_t", handle)), handle, batches)


def counters(db: Any) -> Dict[str, int]:
    """The fast-path counters of ``db`` for ``stats()``: gets (and
    membership tests) and sets (and deletes) done in C, and calls handed to
    the Python path. All zero without the fast path."""
    if _fast is None:
        return {"fast_gets": 0, "fast_sets": 0, "fast_fallbacks": 0}
    gets, sets, fallbacks = db._fast_counters()
    return {"fast_gets": gets, "fast_sets": sets, "fast_fallbacks": fallbacks}
