"""Flat-file dump formats for dbm_shm databases.

Two formats:

* **GNU gdbm ASCII dump** (what ``gdbm_dump`` writes by default and
  ``gdbm_load`` reads), so a dbm_shm database can be moved to and from GNU
  gdbm with the stock tools::

      # GDBM dump file created by GDBM version 1.23. 04/02/2022 on Sat Nov 21 11:44:46 2026
      #:version=1.1
      #:file=t.db
      #:uid=0,user=root,gid=0,group=root,mode=644
      #:format=standard
      # End of header
      #:len=5                 <- key length in bytes
      aGVsbG8=                <- key, base64, lines of at most 76 characters
      #:len=5                 <- value length
      d29ybGQ=                <- value
      #:count=1
      # End of data

  Lines starting with ``#`` but not ``#:`` are comments. ``#:`` lines hold
  comma-separated ``name=value`` parameters (a value may be in double
  quotes). A datum of length 0 has no base64 lines.

* **JSON lines** for people and scripts: one object per line,
  ``{"key": ..., "value": ...}``, with ``"key_b64"`` / ``"value_b64"``
  (standard base64) instead when the bytes are not valid UTF-8 (or not
  representable by the chosen value format).

The display formats the command-line tool uses to show and parse keys and
values (gdbmtool's ``define key/content``) live beside it, in
``dbm_shm._valuefmt``; the JSON-lines functions here take any object with
``to_json``/``from_json`` methods (:class:`JsonCodec`), such as those.

``FastDumpReader`` reads a gdbm ASCII dump in big chunks, with the base64
decoding and the checks done by C calls over whole chunks, for ``load``.

This module is pure Python and imports nothing from the compiled core, so it
can be used (and tested) on its own.

Compatibility note (GNU gdbm 1.23, verified against the Debian build):
``gdbm_dump`` writes nothing after ``#:len=0``; its own ``gdbm_load`` then
takes the next ``#:len`` line as part of the same parameter block and
fails with "Malformed data" on any dump with an empty key or value that is
not the last datum. ``gdbm_load`` also rejects an empty datum that comes
before the first non-empty key (or value) of the file, because its decode
buffer is still unallocated (``gdbm_store`` sees a NULL pointer). So by
default (``gdbm_compat=True``) ``write_dump`` writes one empty line after
an empty datum and holds back records with an empty key or value until a
record with both non-empty has been written. Both changes are invisible to
a correct reader (``read_dump`` here reads either form); pass
``gdbm_compat=False`` for output byte-identical to ``gdbm_dump`` apart from
the creator comment.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import os
import re
import time
from operator import itemgetter
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Tuple

from ._valuefmt import ValueFormat


__all__ = [
    "DumpError",
    "DumpReader",
    "GDBM_LINE_LEN",
    "JsonCodec",
    "detect_format",
    "FastDumpReader",
    "NotRegular",
    "read_dump",
    "read_jsonl",
    "write_dump",
    "write_jsonl",
]

#: Width of the base64 lines gdbm writes (``_GDBM_MAX_DUMP_LINE_LEN``).
GDBM_LINE_LEN = 76

# 57 input bytes encode to exactly 76 base64 characters: encode values in
# multiples of that so every chunk ends on a line boundary.
_B64_LINE_BYTES = GDBM_LINE_LEN // 4 * 3
_B64_CHUNK_BYTES = _B64_LINE_BYTES * 1024
_WRITE_BUFFER = 1 << 16

_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")
_LEN_RE = re.compile(r"[0-9]+\Z")

Item = Tuple[bytes, bytes]
#: A binary or a text file object: the readers and writers take either.
AnyFile = IO[Any]


class DumpError(ValueError):
    """A malformed dump file.

    ``lineno`` is the 1-based line where the problem was found (``None``
    when it is not about one line); ``str()`` gives ``"line N: message"``.
    """

    def __init__(self, message: str, lineno: Optional[int] = None):
        self.message = message
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}" if lineno else message)


# ---------------------------------------------------------------------------
# Output helpers


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

    sink = _Sink(fp)
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
    sink.write(header.encode("utf-8", "surrogateescape"))

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
        encoded_keys = _encode_data(list(keys), gdbm_compat)
        encoded_values = _encode_data(list(values), gdbm_compat)
        sink.write(b"".join(itertools.chain.from_iterable(zip(encoded_keys, encoded_values))))
        written += len(batch)
        pending += len(batch)
        if progress is not None:
            progress(pending)
            pending = 0

    sink.write(b"#:count=%d\n# End of data\n" % written)
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


# ---------------------------------------------------------------------------
# Reading the ASCII dump


def _parse_params(text: str, lineno: int) -> List[Tuple[str, str]]:
    """Parse the part of a ``#:`` line after the colon as gdbm does.

    ``name=value`` pairs separated by commas, blanks before a name skipped,
    a value may be double-quoted (and then may hold commas).
    """
    params: List[Tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise DumpError(f"malformed parameter {text[i:]!r} (expected name=value)", lineno)
        name = text[i:eq]
        if "," in name:
            raise DumpError(f"malformed parameter {name!r} (expected name=value)", lineno)
        i = eq + 1
        if i < n and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise DumpError(f"unterminated quoted value for {name!r}", lineno)
            value = text[i + 1:end]
            i = end + 1
            if i < n and text[i] != ",":
                raise DumpError(f"junk after quoted value for {name!r}", lineno)
        else:
            end = text.find(",", i)
            if end < 0:
                end = n
            value = text[i:end]
            i = end
        params.append((name.strip(), value))
        i += 1  # skip the comma
    return params


class DumpReader:
    """Streaming reader of a GNU gdbm ASCII dump.

    Iterate over it for ``(key, value)`` pairs. ``header`` holds the
    ``#:`` parameters of the header (``version``, ``file``, ``uid``,
    ``user``, ``gid``, ``group``, ``mode``, ``format``) once the first
    record (or the end) has been reached; ``count`` the records read so far.

    Every problem raises ``DumpError`` (a ``ValueError``) naming the line:
    a file that is no ASCII dump, a bad parameter, a ``#:len`` that does not
    match its data, bad base64, a key without a value, a missing or wrong
    ``#:count`` trailer (``strict``), data after the trailer.

    ``strict`` (default) also requires the ``#:version`` header (1.x) and the
    ``#:count=`` trailer that every ``gdbm_dump`` writes; it is what catches a
    dump cut off between two records. ``strict=False`` accepts whatever
    ``gdbm_load`` would.
    """

    def __init__(self, fp: AnyFile, *, strict: bool = True):
        self._fp = fp
        self.strict = strict
        self.header: Dict[str, str] = {}
        self.count = 0
        self.trailer_count: Optional[int] = None
        self.lineno = 0
        self._iter: Optional[Iterator[Item]] = None

    def __iter__(self) -> Iterator[Item]:
        if self._iter is None:
            self._iter = self._records()
        return self._iter

    def _lines(self) -> Iterator[bytes]:
        fp = self._fp
        for raw in fp:
            if isinstance(raw, str):
                try:
                    raw = raw.encode("ascii")
                except UnicodeEncodeError:
                    self.lineno += 1
                    raise DumpError("non-ASCII character in dump", self.lineno) from None
            self.lineno += 1
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield raw

    def _records(self) -> Iterator[Item]:
        lines = self._lines()
        header = self.header
        strict = self.strict

        # -- header: '#' lines up to the first '#:len'
        first = True
        datum_len: Optional[int] = None
        datum_line = 0
        for line in lines:
            if first:
                first = False
                if line.startswith(b"!"):
                    raise DumpError(
                        "this is a binary gdbm dump (gdbm_dump -H binary), which is not "
                        "supported; make an ASCII dump with 'gdbm_dump -H ascii'", self.lineno)
                if line.startswith(b"VERSION="):
                    raise DumpError("this is a Berkeley DB dump, not a gdbm ASCII dump",
                                    self.lineno)
                if not line.startswith(b"#"):
                    raise DumpError(
                        "not a gdbm ASCII dump (it should start with '# GDBM dump file' "
                        "or a '#:' line)", self.lineno)
            if not line.startswith(b"#"):
                if not line:
                    continue  # tolerate blank lines in the header
                raise DumpError("base64 data before the first '#:len=' line", self.lineno)
            if not line.startswith(b"#:"):
                continue  # comment
            params = self._params(line)
            if "len" in dict(params):
                datum_len = self._len(dict(params)["len"])
                datum_line = self.lineno
                break
            for name, value in params:
                if name == "count":
                    self._trailer(value)
                else:
                    header[name] = value
            if self.trailer_count is not None:
                break
        if first:
            raise DumpError("empty file: not a gdbm ASCII dump")
        if strict:
            version = header.get("version")
            if version is None:
                raise DumpError("no '#:version=' header line: not a gdbm ASCII dump", 1)
            if not re.fullmatch(r"1(\.[0-9]+)*", version):
                raise DumpError(f"unsupported dump version {version!r} (this reader knows 1.x)")

        # -- records
        key: Optional[bytes] = None
        chunks: List[bytes] = []
        chunk_len = 0
        while datum_len is not None:
            # read the datum's base64 lines up to the next '#' line or EOF
            next_line: Optional[bytes] = None
            for line in lines:
                if line.startswith(b"#"):
                    next_line = line
                    break
                if not line:
                    continue  # empty datum written by a gdbm-compatible writer
                if not _B64_LINE_RE.match(line):
                    raise DumpError("invalid base64 data line", self.lineno)
                chunks.append(line)
                chunk_len += len(line)
            end_line = self.lineno
            data = self._decode(chunks, chunk_len, datum_len, datum_line)
            chunks = []
            chunk_len = 0
            if key is None:
                key = data
            else:
                self.count += 1
                yield key, data
                key = None
            datum_len = None
            # parameters up to the next '#:len' (or the trailer / EOF)
            while next_line is not None and datum_len is None:
                line = next_line
                next_line = None
                if line.startswith(b"#:"):
                    fields = dict(self._params(line))
                    if "count" in fields:
                        if key is not None:
                            raise DumpError("key without a value before '#:count='",
                                            self.lineno)
                        self._trailer(fields["count"])
                        break
                    if "len" in fields:
                        datum_len = self._len(fields["len"])
                        datum_line = self.lineno
                        break
                for line in lines:
                    if line.startswith(b"#"):
                        next_line = line
                        break
                    if line:
                        raise DumpError("base64 data without a '#:len=' line", self.lineno)
            if self.trailer_count is not None:
                break
            if datum_len is None and next_line is None and key is not None:
                raise DumpError("key without a value at end of file", end_line)

        if self.trailer_count is not None:
            # Only comments may follow the trailer.
            for line in lines:
                if line.startswith(b"#:"):
                    raise DumpError("data after the '#:count=' trailer", self.lineno)
                if line and not line.startswith(b"#"):
                    raise DumpError("data after the '#:count=' trailer", self.lineno)
            if self.trailer_count != self.count:
                raise DumpError(
                    f"'#:count={self.trailer_count}' but the dump holds {self.count} "
                    "records (truncated or edited dump?)")
        elif strict:
            raise DumpError(
                f"no '#:count=' trailer after {self.count} records: the dump is "
                "truncated (use strict=False to accept it)", self.lineno)

    def _params(self, line: bytes) -> List[Tuple[str, str]]:
        text = line[2:].decode("utf-8", "surrogateescape")
        return _parse_params(text, self.lineno)

    def _len(self, value: str) -> int:
        if not _LEN_RE.match(value):
            raise DumpError(f"bad length {value!r} in '#:len='", self.lineno)
        return int(value)

    def _trailer(self, value: str) -> None:
        if not _LEN_RE.match(value):
            raise DumpError(f"bad record count {value!r} in '#:count='", self.lineno)
        self.trailer_count = int(value)

    @staticmethod
    def _decode(chunks: List[bytes], chunk_len: int, datum_len: int, lineno: int) -> bytes:
        expected = (datum_len + 2) // 3 * 4
        if chunk_len != expected:
            raise DumpError(
                f"'#:len={datum_len}' needs {expected} base64 characters but "
                f"{chunk_len} follow", lineno)
        if not chunks:
            return b""
        encoded = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise DumpError(f"bad base64 data: {exc}", lineno) from None
        if len(data) != datum_len:
            raise DumpError(
                f"'#:len={datum_len}' but the data decodes to {len(data)} bytes", lineno)
        return data


def read_dump(fp: AnyFile, *, strict: bool = True) -> Iterator[Item]:
    """Yield the ``(key, value)`` pairs of a gdbm ASCII dump, streaming.

    ``fp`` is a binary or text file object. Raises ``DumpError`` (a
    ``ValueError`` whose message starts with ``line N:``) on a malformed
    dump; records before the problem have been yielded already, so a caller
    that must not apply half a dump reads it through once first. See
    ``DumpReader`` for ``strict`` and for the header.
    """
    return iter(DumpReader(fp, strict=strict))


class NotRegular(Exception):
    """The fast reader met something it leaves to :class:`DumpReader`.

    Not an error of the dump: a comment or parameter line between records,
    CRLF line ends, a binary dump, a mistake. The caller reads the dump
    again with :class:`DumpReader`, which accepts every valid dump and
    names the line of every mistake.
    """


#: Bytes the fast reader reads at a time.
FAST_CHUNK_BYTES = 1 << 22

_B64_AND_NL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
_LEN_TAG = b"#:len="
_COUNT_TAG = b"#:count="
# One datum: its '#:len=' line and the base64 lines up to the next '#'.
_DATUM_RE = re.compile(rb"#:len=([0-9]+)\n([^#]*)")


class FastDumpReader:
    """Reads a gdbm ASCII dump in big chunks, for ``dbm-shm load``.

    Iterate over it for ``(keys, values)`` lists, one pair of lists per chunk
    of about :data:`FAST_CHUNK_BYTES` of dump. Each chunk is split on its
    ``#:len=`` lines, every datum decoded by ``binascii.a2b_base64`` and
    checked in bulk (C calls over the whole chunk, no Python per line):
    base64 characters only, the number of characters each length needs,
    decoded lengths equal to the declared ones, a ``#:count=`` trailer that
    matches. ``header`` holds the header's parameters (as
    :class:`DumpReader` reads them) once iteration started; ``count`` the
    records yielded.

    It reads the regular form only: what ``gdbm_dump`` and
    :func:`write_dump` write. Anything else raises :class:`NotRegular`
    (possibly after some chunks were yielded): read the dump again with
    :class:`DumpReader` then, which also gives the messages for mistakes.
    """

    def __init__(self, fp: IO[bytes], *, chunk_bytes: int = FAST_CHUNK_BYTES):
        self._fp = fp
        self._chunk = chunk_bytes
        self.header: Dict[str, str] = {}
        self.count = 0

    def _read(self) -> bytes:
        data = self._fp.read(self._chunk)
        if not isinstance(data, bytes):
            raise NotRegular("text file object")
        return data

    def __iter__(self) -> Iterator[Tuple[List[bytes], List[bytes]]]:
        buf = self._read()
        while True:  # the header ends at the first '#:len=' line
            start = buf.find(b"\n" + _LEN_TAG)
            if start >= 0:
                break
            more = self._read()
            if not more or len(buf) > (1 << 20):
                raise NotRegular("no record in the first megabyte")
            buf += more
        head = DumpReader(io.BytesIO(buf[:start + 1] + b"#:count=0\n"))
        try:
            for _ in head:
                pass
        except DumpError:
            raise NotRegular("header") from None
        self.header = head.header
        buf = buf[start + 1:]
        pending: Optional[bytes] = None
        at_end = False
        while not at_end:
            more = self._read()
            if more:
                buf += more
                cut = buf.rfind(b"\n" + _LEN_TAG)
                if cut < 0:
                    continue  # one datum longer than a chunk
                part, buf = buf[:cut + 1], buf[cut + 1:]
            else:
                at_end = True
                end = buf.rfind(b"\n" + _COUNT_TAG)
                if end < 0:
                    raise NotRegular("no trailer")
                part, trailer = buf[:end + 1], buf[end + 1:]
            data = self._decode(part)
            if pending is not None:
                data.insert(0, pending)
                pending = None
            if len(data) % 2:
                pending = data.pop()
            self.count += len(data) // 2
            yield data[0::2], data[1::2]
        if pending is not None:
            raise NotRegular("key without a value")
        self._trailer(trailer)

    def _trailer(self, trailer: bytes) -> None:
        lines = trailer.split(b"\n")
        count = lines[0][len(_COUNT_TAG):]
        if not count.isdigit() or int(count) != self.count:
            raise NotRegular("trailer")
        for line in lines[1:]:  # only comments may follow
            if line and (not line.startswith(b"#") or line.startswith(b"#:")):
                raise NotRegular("data after the trailer")

    @staticmethod
    def _decode(part: bytes) -> List[bytes]:
        """The data of the datums in ``part`` ('#:len=' lines and base64)."""
        if not part:
            return []
        found = _DATUM_RE.findall(part)
        heads = list(map(itemgetter(0), found))
        bodies = list(map(itemgetter(1), found))
        text = b"".join(bodies)
        if len(part) != len(_LEN_TAG) * len(found) + len(b"".join(heads)) + len(found) + len(text):
            raise NotRegular("a line the datums do not cover")  # findall skipped it
        if part.count(b"\n" + _LEN_TAG) != len(found) - 1:
            raise NotRegular("'#:len=' not at the start of a line")
        if text.translate(None, _B64_AND_NL):
            raise NotRegular("a line that is not base64")
        lens = list(map(int, heads))
        if len(text) - text.count(b"\n") != sum([(n + 2) // 3 * 4 for n in lens]):
            raise NotRegular("a length that does not match its data")
        try:
            data = list(map(binascii.a2b_base64, bodies))
        except binascii.Error:
            raise NotRegular("bad base64") from None
        if list(map(len, data)) != lens:
            raise NotRegular("a length that does not match its data")
        return data


def detect_format(head: bytes) -> Optional[str]:
    """Guess a dump's format from its first bytes.

    Returns ``"ascii"`` (a gdbm ASCII dump), ``"jsonl"``, ``"gdbm-binary"``
    or ``None`` (unknown).
    """
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"#"):
        return "ascii"
    if head.startswith(b"!"):
        return "gdbm-binary"
    if stripped.startswith(b"{"):
        return "jsonl"
    return None


# ---------------------------------------------------------------------------
# JSON lines


class JsonCodec(Protocol):
    """What the JSON-lines functions need of a key or value format."""

    def to_json(self, data: bytes) -> Any:
        """A JSON-serialisable object for ``data``, or ``NotImplemented``."""

    def from_json(self, obj: Any) -> bytes:
        """The bytes for ``obj`` (raises ``ValueError``)."""


def _jsonl_field(out: Dict[str, Any], name: str, data: bytes, fmt: Optional[JsonCodec]) -> None:
    obj = (fmt or _DEFAULT_FORMAT).to_json(data)
    if obj is NotImplemented:
        out[name + "_b64"] = base64.b64encode(data).decode("ascii")
    else:
        out[name] = obj


# The default (ValueFormat's 'auto'): UTF-8 text as a JSON string, other bytes in base64.
_DEFAULT_FORMAT: JsonCodec = ValueFormat()


def write_jsonl(
    fp: AnyFile,
    items: Iterable[Item],
    *,
    key_format: Optional[JsonCodec] = None,
    value_format: Optional[JsonCodec] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> int:
    """Write ``items`` as JSON lines (UTF-8); return the number written.

    Each line is ``{"key": K, "value": V}``. By default K and V are strings
    when the bytes are valid UTF-8, otherwise the line has ``"key_b64"`` /
    ``"value_b64"`` (standard base64) in their place. With a format (``JsonCodec``)
    K or V is what the format makes of the bytes (numbers for ``"<I"``, a
    list for ``"<dd"``, the object for ``json``), and base64 where it cannot.
    """
    sink = _Sink(fp)
    written = 0
    pending = 0
    for key, value in items:
        key = _as_bytes(key, "key")
        value = _as_bytes(value, "value")
        rec: Dict[str, Any] = {}
        _jsonl_field(rec, "key", key, key_format)
        _jsonl_field(rec, "value", value, value_format)
        sink.write(json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
        written += 1
        pending += 1
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0
    sink.flush()
    if progress is not None and pending:
        progress(pending)
    return written


def _jsonl_datum(rec: Dict[str, Any], name: str, fmt: Optional[JsonCodec], lineno: int) -> bytes:
    has_plain = name in rec
    has_b64 = name + "_b64" in rec
    if has_plain and has_b64:
        raise DumpError(f"both {name!r} and {name + '_b64'!r} given", lineno)
    if has_b64:
        text = rec[name + "_b64"]
        if not isinstance(text, str):
            raise DumpError(f"{name + '_b64'!r} must be a string", lineno)
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise DumpError(f"bad base64 in {name + '_b64'!r}: {exc}", lineno) from None
    if not has_plain:
        raise DumpError(f"no {name!r} (or {name + '_b64'!r}) field", lineno)
    try:
        return (fmt or _DEFAULT_FORMAT).from_json(rec[name])
    except ValueError as exc:
        raise DumpError(f"bad {name!r}: {exc}", lineno) from None


def read_jsonl(
    fp: AnyFile,
    *,
    key_format: Optional[JsonCodec] = None,
    value_format: Optional[JsonCodec] = None,
) -> Iterator[Item]:
    """Yield ``(key, value)`` pairs from JSON lines written by ``write_jsonl``.

    Blank lines are skipped; other fields than ``key``/``key_b64``/
    ``value``/``value_b64`` are ignored. Raises ``DumpError`` naming the
    line for invalid JSON, a line that is not an object, or a missing,
    doubled or undecodable key or value.
    """
    for lineno, line in enumerate(fp, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DumpError(f"not UTF-8: {exc}", lineno) from None
        if lineno == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise DumpError(f"invalid JSON: {exc}", lineno) from None
        if not isinstance(rec, dict):
            raise DumpError("expected a JSON object with 'key' and 'value'", lineno)
        yield (_jsonl_datum(rec, "key", key_format, lineno),
               _jsonl_datum(rec, "value", value_format, lineno))
