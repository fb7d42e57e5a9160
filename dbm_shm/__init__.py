"""dbm_shm: a dbm-compatible key-value store in shared memory.

``import dbm_shm as gdbm`` is a drop-in swap for ``dbm.gnu``; many processes
may open one file at once: one writer at a time, and readers that never wait.
``dbm_shm.register()`` makes it the stdlib backend ``dbm.shm``.
``dbm_shm.DjangoCache`` is a Django cache backend (imported, with Django,
only when first looked up).
"""

# -- Import logic (dbm_shm/_loader.py; keep this block first): where Python
# imported an uncompiled source folder, switch to an installed copy or raise
# an ImportError that says what to run.
import sys as _sys

from . import _loader

_loader.use_compiled_core(_sys.modules[__name__])
del _sys
# -- end of import logic

from typing import Any as _Any

from ._cache import Cache
from ._compat import Shelf, ShelfTransaction, convert, open_shelf
from ._db import Database, Snapshot, open, open_flags
from ._errors import error
from ._fastglue import fast_path_enabled
from ._registry import register, whichdb
from ._salvage import SalvageReport, salvage
from ._txn import AsyncTransaction, Transaction
from ._upgrade import UpgradeResult, upgrade

__version__ = "0.1.0"


def __getattr__(name: str) -> _Any:
    """``dbm_shm.DjangoCache``, imported on first use: the rest of the
    package never imports Django."""
    if name == "DjangoCache":
        from ._django import DjangoCache

        globals()["DjangoCache"] = DjangoCache
        return DjangoCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncTransaction",
    "Cache",
    "Database",
    "Snapshot",
    "convert",
    "error",
    "fast_path_enabled",
    "open",
    "open_flags",
    "open_shelf",
    "register",
    "salvage",
    "SalvageReport",
    "Shelf",
    "ShelfTransaction",
    "Transaction",
    "upgrade",
    "UpgradeResult",
    "whichdb",
    "__version__",
]
