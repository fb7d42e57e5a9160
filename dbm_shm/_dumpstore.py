"""A store written as a GNU gdbm ASCII dump, in bulk: what ``dbm-shm dump``
runs.

The records come out of the store a megabyte of scan records at a time
(``dshm_scan``, the call behind ``Database.iteritems``), and the core turns
each buffer into the dump's body with one call (``dshm_dump_encode``,
csrc/dshm_dump.c: ``#:len=N`` lines and base64, 76 characters a line), so
no Python code runs per record. The output is byte for byte what
:func:`dbm_shm._dumpwrite.write_dump` writes for ``db.iteritems()``
(tests/cli/test_dumpfmt.py compares them), including the GNU gdbm 1.23
compatibility rules (a record with a non-empty key and value first; an
empty line after an empty datum).

It uses the handle's ``_h`` and ``_path`` (as ``_txn`` does), and reads the
store as stored: a batch open in this thread is not part of the dump.
"""

from __future__ import annotations

import errno
import struct
from typing import IO, Any, Callable, Iterator, List, Optional, Tuple

from ._dshm import ffi, lib
from ._dumpwrite import dump_header, dump_trailer, encode_records
from ._errors import raise_for

__all__ = ["write_store_dump"]

#: Bytes of scan records per ``dshm_scan`` call.
SCAN_BYTES = 1 << 20
_REC = struct.Struct("=IQ")     # a scan record's klen, vlen (then u64 hash, key, value)
_REC_HEAD = 20
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def _scan_buffers(db: Any) -> Iterator[Tuple[Any, int]]:
    """``(buffer, size)`` for each ``dshm_scan`` call with values; the
    buffer is reused by the next call."""
    cursor = ffi.new("uint64_t *")
    done = ffi.new("int *")
    need = ffi.new("uint64_t *")
    cap = SCAN_BYTES
    buf = _new_uncleared("char[]", cap)
    while not done[0]:
        n = lib.dshm_scan(db._h, cursor, done, buf, cap, lib.DSHM_SCAN_VALUES, need)
        if n == -errno.ERANGE:  # one bucket holds more than the buffer
            cap = max(cap * 2, need[0])
            buf = _new_uncleared("char[]", cap)
            continue
        if n < 0:
            raise_for(n, "scan", db._path)
        if n:
            yield buf, n


def _first_full(data: bytes, held: List[Tuple[bytes, bytes]]) -> Optional[int]:
    """The offset just past the first record of ``data`` (scan records)
    whose key and value are both non-empty, or None; the records before it
    are appended to ``held`` and that record is put first in ``held``."""
    pos, n = 0, len(data)
    while pos < n:
        kl: int
        vl: int
        kl, vl = _REC.unpack_from(data, pos)
        start = pos + _REC_HEAD
        key, value = data[start:start + kl], data[start + kl:start + kl + vl]
        pos = start + kl + vl
        if kl and vl:
            held.insert(0, (key, value))
            return pos
        held.append((key, value))
    return None


def write_store_dump(
    fp: IO[bytes],
    db: Any,
    *,
    filename: str,
    gdbm_compat: bool = True,
    progress: Optional[Callable[[int], None]] = None,
    **header: Any,
) -> int:
    """Write the records of the open database ``db`` to the binary file
    ``fp`` as a GNU gdbm ASCII dump; return the record count. ``filename``,
    ``gdbm_compat`` and the ``header`` arguments (``mode``, ``uid``, ``gid``,
    ``user``, ``group``, ``created_by``, ``timestamp``) are those of
    :func:`dbm_shm._dumpwrite.write_dump`; ``progress`` is called with the
    number of records written since its previous call."""
    write = fp.write
    write(dump_header(filename=filename, **header))
    flags = lib.DSHM_DUMP_COMPAT if gdbm_compat else 0
    cap = 3 * SCAN_BYTES
    out = _new_uncleared("char[]", cap)
    pos = ffi.new("size_t *")
    count = ffi.new("uint64_t *")
    need = ffi.new("uint64_t *")
    held: List[Tuple[bytes, bytes]] = []   # compat: records before the first full one
    seen_full = not gdbm_compat
    written = 0
    for buf, n in _scan_buffers(db):
        pos[0] = 0
        if not seen_full:  # rare: the store's first records have an empty part
            at = _first_full(ffi.buffer(buf, n)[:], held)
            if at is None:
                continue
            write(encode_records(held, gdbm_compat))
            count[0] += len(held)
            held = []
            seen_full = True
            pos[0] = at
        while pos[0] < n:
            m = lib.dshm_dump_encode(buf, n, pos, out, cap, flags, count, need)
            if m == -errno.ERANGE:  # one record larger than the output buffer
                cap = max(cap * 2, need[0])
                out = _new_uncleared("char[]", cap)
                continue
            if m < 0:
                raise_for(m, "dump", db._path)
            write(ffi.buffer(out, m))
        if progress is not None:
            progress(count[0] - written)
        written = count[0]
    if held:  # no record had both parts non-empty
        write(encode_records(held, gdbm_compat))
        if progress is not None:
            progress(len(held))
        written += len(held)
    write(dump_trailer(written))
    return written
