"""Salvage, as gdbm's ``recover``: copy what can still be read from a
damaged store into a new one (``dbm_shm.salvage``, ``dbm-shm recover``).

The C core (``dshm_salvage``, csrc/dshm_salvage.c) reads the source
through a read-only mapping of its own, without a handle or the writer
lock, and hands over the records that pass its checks in batches; this
module writes each batch into the new store with one ``update()``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Union

from ._db import _new_uncleared, open as _open
from ._records import records as _records
from ._dshm import ffi, lib
from ._errors import error, raise_for

__all__ = ["SalvageReport", "salvage"]

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_CAP = 4 * 1024 * 1024   # bytes of records per C call (and per update())
_ERANGE = 34


class SalvageReport(NamedTuple):
    """What :func:`salvage` copied and what it could not."""

    #: keys written to the new store
    copied: int
    #: slots whose record could not be read (outside the file, misaligned,
    #: impossible lengths, a hash tag that does not match the key)
    bad_records: int
    #: bucket pages skipped, or the rest of an overflow chain, where a
    #: directory entry or an overflow link names no bucket page of the right kind
    bad_pages: int
    #: overflow chains that loop back on themselves (cut; nothing lost)
    cycles: int
    #: second copies of a key, dropped (the first copy was kept)
    duplicates: int
    #: the key count the damaged header states (a hint, not a promise)
    expected: int

    @property
    def damaged(self) -> bool:
        """True if anything was skipped, cut or dropped."""
        return bool(self.bad_records or self.bad_pages or self.cycles or self.duplicates)


def salvage(src: PathArg, dst: PathArg, *, force: bool = False, mode: int = 0o666) -> SalvageReport:
    """Copy every record that can still be read from the store ``src`` into
    a new store ``dst``, skipping and counting what cannot be read, as
    gdbm's ``recover``.

    ``src`` is opened read-only, without the writer lock, and never written:
    it may be a store that :func:`dbm_shm.open` refuses (a repair owed by a
    killed writer on a file you may only read, damaged counters, a bad
    allocator checksum). A file that is not a dbm_shm store (bad magic,
    another format) still raises :class:`dbm_shm.error`.

    ``dst`` must not exist unless ``force`` (then it is replaced). When a
    key is met twice (damage can leave two copies), the copy ``get()``
    would have found is kept, else the first met. Returns a
    :class:`SalvageReport`; run it on a store nobody is writing.
    """
    s, d = os.fsdecode(src), os.fsdecode(dst)
    if os.path.exists(d):
        if not force:
            raise FileExistsError(17, "salvage: the new store exists (force=True replaces it)", d)
        if os.path.exists(s) and os.path.samefile(s, d):
            raise error(f"salvage: {d!r} is the damaged store itself")
    sv = ffi.new("dshm_salvage_t *")
    need = ffi.new("uint64_t *")
    cap = _CAP
    buf = _new_uncleared("char[]", cap)
    path = os.fsencode(s)
    n = _call(path, sv, buf, cap, need, s)   # a source salvage cannot read: fail before creating dst
    duplicates = copied = 0
    out = _open(d, "n", mode)
    try:
        while True:
            if n == -_ERANGE:
                cap = max(cap, int(need[0]))
                buf = _new_uncleared("char[]", cap)
            elif n > 0:
                batch: dict[bytes, bytes] = {}
                for k, v in _records(ffi.buffer(buf, n)[:], True):
                    if k in batch:
                        duplicates += 1
                    else:
                        batch[k] = v
                if batch:
                    keys = list(batch)
                    for k, old in zip(keys, out.get_many(keys)):
                        if old is not None:
                            duplicates += 1
                            del batch[k]
                    out.update(batch)
                    copied += len(batch)
            if sv.sv_done:
                break
            n = _call(path, sv, buf, cap, need, s)
        out.sync()
    finally:
        out.close()
    return SalvageReport(copied, int(sv.sv_bad_records), int(sv.sv_bad_pages), int(sv.sv_cycles),
                         duplicates, int(sv.sv_expected))


def _call(path: bytes, sv: Any, buf: Any, cap: int, need: Any, name: str) -> int:
    n = int(lib.dshm_salvage(path, sv, buf, cap, need))
    if n < 0 and n != -_ERANGE:
        raise_for(n, "salvage", name)
    return n
