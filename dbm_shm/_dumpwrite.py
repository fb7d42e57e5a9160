"""Writing the GNU gdbm ASCII dump (what ``gdbm_dump`` writes and
``gdbm_load`` reads): :func:`write_dump`, and the pieces of it that
``dbm-shm dump`` puts around the C encoder of the core
(:func:`dump_header`, :func:`dump_trailer`, :func:`encode_records`). The
format and the GNU gdbm 1.23 compatibility rules are described in
:mod:`dbm_shm._dumpfmt`.

Pure Python: imports nothing from the compiled core.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import os
import time
from operator import itemgetter
from typing import IO, Any, Callable, Iterable, List, Optional, Tuple

__all__ = ["GDBM_LINE_LEN", "dump_header", "dump_trailer", "encode_records", "write_dump"]

Item = Tuple[bytes, bytes]
#: A binary or a text file object: the readers and writers take either.
AnyFile = IO[Any]

#: Width of the base64 lines gdbm writes (``_GDBM_MAX_DUMP_LINE_LEN``).
GDBM_LINE_LEN = 76

# 57 input bytes encode to exactly 76 base64 characters: encode values in
# multiples of that so every chunk ends on a line boundary.
_B64_LINE_BYTES = GDBM_LINE_LEN // 4 * 3
_B64_CHUNK_BYTES = _B64_LINE_BYTES * 1024
_WRITE_BUFFER = 1 << 16


class _Sink:
    """Buffered writer over a binary or text file object (ASCII only)."""

    def __init__(self, fp: AnyFile):
        self._text = isinstance(fp, io.TextIOBase)
        self._fp = fp
        self._parts: List[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= _WRITE_BUFFER:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self._text:
            self._fp.write(data.decode("utf-8"))
        else:
            self._fp.write(data)


def _as_bytes(obj: Any, what: str) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"{what} must be bytes-like, not {type(obj).__name__}")


def _header_value(value: str, name: str) -> str:
    """Format a header parameter value the way gdbm's reader parses it."""
    if "\n" in value or "\r" in value or '"' in value:
        raise ValueError(f"{name} cannot contain a newline or a double quote: {value!r}")
    if "," in value or value[:1] in (" ", "\t"):
        return f'"{value}"'
    return value


def _default_creator() -> str:
    return "dbm_shm"


def _write_datum(sink: _Sink, data: bytes, compat: bool) -> None:
    n = len(data)
    sink.write(b"#:len=%d\n" % n)
    if n == 0:
        if compat:
            sink.write(b"\n")
        return
    view = memoryview(data)
    for start in range(0, n, _B64_CHUNK_BYTES):
        encoded = base64.b64encode(view[start:start + _B64_CHUNK_BYTES])
        lines = [encoded[i:i + GDBM_LINE_LEN] for i in range(0, len(encoded), GDBM_LINE_LEN)]
        lines.append(b"")
        sink.write(b"\n".join(lines))


#: Records encoded per bulk step of :func:`write_dump`.
_ENCODE_BATCH = 16384
#: Data up to this many base64 lines are encoded in bulk passes, one pass a
#: line; longer data one datum at a time (``base64.encodebytes``).
_BULK_LINES = 4
_LEN_LINE = b"#:len=%d\n".__mod__
_NL = b"\n"


def _encode_data(data: List[bytes], compat: bool) -> List[bytes]:
    """Each datum of ``data`` as its ``#:len=N`` line and base64 lines (76
    characters, each ending in a newline), as :func:`_write_datum` writes
    it, with C calls over the whole list (``map``) rather than Python per
    datum: line ``i`` of every datum is one ``map`` of ``b2a_base64`` over
    the slices ``[57*i:57*(i+1)]`` (57 bytes are exactly one 76-character
    line; base64 of consecutive 57-byte pieces is the base64 of the whole),
    and the newline an empty slice gives is stripped."""
    lens = list(map(len, data))
    longest = max(lens, default=0)
    b2a = binascii.b2a_base64
    if longest <= _B64_LINE_BYTES:
        encoded = list(map(b2a, data))  # b"" -> b"\n": the compat blank line
    else:
        passes = min(_BULK_LINES, -(-longest // _B64_LINE_BYTES))
        encoded = list(map(b2a, map(itemgetter(slice(0, _B64_LINE_BYTES)), data)))
        for i in range(1, passes):
            piece = itemgetter(slice(i * _B64_LINE_BYTES, (i + 1) * _B64_LINE_BYTES))
            encoded = list(map(bytes.__add__, encoded, map(b2a, map(piece, data))))
        # an empty slice added b"\n": back to one newline at the end
        encoded = list(map(bytes.__add__, map(bytes.rstrip, encoded, [_NL] * len(encoded)),
                           [_NL] * len(encoded)))
        if longest > _BULK_LINES * _B64_LINE_BYTES:
            for i in [i for i, n in enumerate(lens) if n > _BULK_LINES * _B64_LINE_BYTES]:
                encoded[i] = base64.encodebytes(data[i])
    if not compat and 0 in lens:  # gdbm_dump writes nothing after '#:len=0'
        for i in [i for i, n in enumerate(lens) if n == 0]:
            encoded[i] = b""
    return list(map(bytes.__add__, map(_LEN_LINE, lens), encoded))


def _encode_pairs(keys: List[bytes], values: List[bytes], compat: bool) -> bytes:
    """The dump body of the records ``zip(keys, values)``, in bulk."""
    encoded_keys = _encode_data(keys, compat)
    encoded_values = _encode_data(values, compat)
    return b"".join(itertools.chain.from_iterable(zip(encoded_keys, encoded_values)))


def encode_records(items: List[Item], compat: bool = True) -> bytes:
    """The dump body of ``items`` (a list of ``(key, value)`` bytes), as
    :func:`write_dump` writes it after its first record; in compat mode the
    caller has put a record with a non-empty key and value first."""
    if not items:
        return b""
    keys, values = zip(*items)
    return _encode_pairs(list(keys), list(values), compat)


def dump_header(
    *,
    filename: str,
    mode: int = 0o600,
    uid: Optional[int] = None,
    gid: Optional[int] = None,
    user: Optional[str] = None,
    group: Optional[str] = None,
    created_by: Optional[str] = None,
    timestamp: Optional[float] = None,
) -> bytes:
    """The header lines of a dump, up to ``# End of header`` (the arguments
    as for :func:`write_dump`)."""
    if uid is None:
        uid = os.getuid()
    if gid is None:
        gid = os.getgid()
    if user is None:
        user = _user_name(uid)
    if group is None:
        group = _group_name(gid)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode out of range: {mode!r}")
    creator = created_by or _default_creator()
    if "\n" in creator or "\r" in creator:
        raise ValueError("created_by cannot contain a newline")
    when = time.ctime(time.time() if timestamp is None else timestamp)
    owner = f"#:uid={int(uid)},"
    if user:
        owner += f"user={_header_value(user, 'user')},"
    owner += f"gid={int(gid)},"
    if group:
        owner += f"group={_header_value(group, 'group')},"
    owner += f"mode={mode & 0o777:03o}\n"
    header = (
        f"# GDBM dump file created by {creator} on {when}\n"
        "#:version=1.1\n"
        f"#:file={_header_value(os.fsdecode(filename), 'filename')}\n"
        f"{owner}"
        "#:format=standard\n"
        "# End of header\n"
    )
    return header.encode("utf-8", "surrogateescape")


def dump_trailer(count: int) -> bytes:
    """The lines after the last record: the record count and the end mark."""
    return b"#:count=%d\n# End of data\n" % count


def write_dump(
    fp: AnyFile,
    items: Iterable[Item],
    *,
    filename: str,
    count: Optional[int] = None,
    mode: int = 0o600,
    uid: Optional[int] = None,
    gid: Optional[int] = None,
    user: Optional[str] = None,
    group: Optional[str] = None,
    created_by: Optional[str] = None,
    timestamp: Optional[float] = None,
    gdbm_compat: bool = True,
    progress: Optional[Callable[[int], None]] = None,
) -> int:
    """Write ``items`` as a GNU gdbm ASCII dump to ``fp``; return the record count.

    ``fp`` is a binary or text file object. ``items`` is any iterable of
    ``(key, value)`` bytes-like pairs; it is consumed once, streaming.

    ``filename`` goes to the ``#:file=`` line (``gdbm_load`` uses it when
    no database file is named). ``mode``, ``uid``/``gid`` and
    ``user``/``group`` go to the ``#:uid=...`` line; ``gdbm_load`` applies
    them to the file it creates. ``uid``/``gid`` default to the current
    process's, and the names are looked up from the ids when not given
    (and left out when unknown, as gdbm does).

    ``count`` is the number of records the caller expects, if it knows; it
    is only used as the total for ``progress`` and never written: the
    ``#:count=`` trailer always holds the number actually written.
    ``progress`` is called with the number of records written since the
    previous call.

    ``gdbm_compat`` (default ``True``) works around GNU gdbm 1.23's
    ``gdbm_load`` bugs with empty keys and values (see the module
    docstring); ``False`` writes exactly what ``gdbm_dump`` writes.
    """
    del count  # a progress total only; accepted for callers that pass it
    sink = _Sink(fp)
    sink.write(dump_header(filename=filename, mode=mode, uid=uid, gid=gid, user=user,
                           group=group, created_by=created_by, timestamp=timestamp))

    written = 0
    pending = 0  # records written since the last progress call
    held: List[Item] = []  # records held back until a full record is out (compat)
    seen_full = not gdbm_compat

    def emit(key: bytes, value: bytes) -> None:
        nonlocal written, pending
        _write_datum(sink, key, gdbm_compat)
        _write_datum(sink, value, gdbm_compat)
        written += 1
        pending += 1
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0

    it = iter(items)
    for key, value in it:
        key = _as_bytes(key, "key")
        value = _as_bytes(value, "value")
        if not seen_full:
            if not key or not value:
                held.append((key, value))
                continue
            emit(key, value)
            seen_full = True
            for k, v in held:
                emit(k, v)
            held.clear()
        else:
            emit(key, value)
        break  # the rest in bulk
    for k, v in held:  # no record had both parts non-empty
        emit(k, v)
    held.clear()
    # The records after the first, _ENCODE_BATCH at a time: base64 by
    # C calls over lists, one write of each batch.
    sink.flush()
    while True:
        batch = list(itertools.islice(it, _ENCODE_BATCH))
        if not batch:
            break
        keys, values = list(zip(*batch))
        if set(map(type, keys)) != {bytes} or set(map(type, values)) != {bytes}:
            keys = tuple(_as_bytes(k, "key") for k in keys)
            values = tuple(_as_bytes(v, "value") for v in values)
        sink.write(_encode_pairs(list(keys), list(values), gdbm_compat))
        written += len(batch)
        pending += len(batch)
        if progress is not None:
            progress(pending)
            pending = 0

    sink.write(dump_trailer(written))
    sink.flush()
    if progress is not None and pending:
        progress(pending)
    return written


def _user_name(uid: int) -> Optional[str]:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError, OverflowError):
        return None


def _group_name(gid: int) -> Optional[str]:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError, OverflowError):
        return None
