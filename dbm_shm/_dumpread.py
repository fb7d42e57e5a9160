"""Reading the GNU gdbm ASCII dump: :class:`DumpReader` (record by
record, every mistake named by its line), :class:`FastDumpReader` (whole
chunks decoded by C calls, for ``dbm-shm load``), :func:`detect_format`.
The format is described in :mod:`dbm_shm._dumpfmt`.

Pure Python: imports nothing from the compiled core.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from operator import itemgetter
from typing import IO, Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

__all__ = ["DumpError", "DumpReader", "FastDumpReader", "NotRegular", "Resume",
           "detect_format", "read_dump"]

Item = Tuple[bytes, bytes]
#: A binary or a text file object: the readers and writers take either.
AnyFile = IO[Any]

_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")
_LEN_RE = re.compile(r"[0-9]+\Z")


class DumpError(ValueError):
    """A malformed dump file.

    ``lineno`` is the 1-based line where the problem was found (``None``
    when it is not about one line); ``str()`` gives ``"line N: message"``.
    """

    def __init__(self, message: str, lineno: Optional[int] = None):
        self.message = message
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}" if lineno else message)


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

    def __init__(self, fp: AnyFile, *, strict: bool = True,
                 resume: Optional["Resume"] = None):
        self._fp = fp
        self.strict = strict
        self.header: Dict[str, str] = {}
        self.count = 0
        self.trailer_count: Optional[int] = None
        self.lineno = 0
        self._iter: Optional[Iterator[Item]] = None
        self._resume = resume
        if resume is not None:
            self.header = dict(resume.header)
            self.count = resume.records
            self.lineno = resume.lineno

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
        key: Optional[bytes] = None
        if self._resume is not None:
            # mid-dump, where FastDumpReader stopped: at a '#:len=' line
            first = False
            key = self._resume.key
            line = next(lines, b"")
            at = dict(self._params(line)) if line.startswith(b"#:") else {}
            if "len" not in at:
                raise NotRegular("resumed reading not at a '#:len=' line")
            datum_len = self._len(at["len"])
            datum_line = self.lineno
            strict = False  # the header was read and checked before
        for line in lines if self._resume is None else ():
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
        strict = self.strict
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


class Resume(NamedTuple):
    """Where :class:`FastDumpReader` stopped, for a :class:`DumpReader`
    to read on from (``DumpReader(fp, resume=...)`` after
    ``fp.seek(resume.offset)``): the byte offset of a ``#:len=`` line, the
    number of lines before it, the key read before it whose value comes
    next (or None), the records before it and the dump's header."""

    offset: int
    lineno: int
    key: Optional[bytes]
    records: int
    header: Dict[str, str]


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
    (possibly after some chunks were yielded; the last one is given only
    once the trailer was checked): ``resume`` then says where the chunk it
    did not give starts, for a :class:`DumpReader` to read on from there
    (``DumpReader(fp, resume=reader.resume)`` after seeking to
    ``resume.offset``), which also gives the messages for mistakes.
    """

    def __init__(self, fp: IO[bytes], *, chunk_bytes: Optional[int] = None):
        self._fp = fp
        self._chunk = FAST_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        self.header: Dict[str, str] = {}
        self.count = 0
        #: Where to read on after NotRegular: the start of the chunk that
        #: was not yielded; None if the header was not read (read it all
        #: again with :class:`DumpReader` then).
        self.resume: Optional[Resume] = None

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
        offset = start + 1                  # of buf in the file
        lines = buf.count(b"\n", 0, offset)  # lines before buf
        buf = buf[offset:]
        pending: Optional[bytes] = None
        at_end = False
        while not at_end:
            self.resume = Resume(offset, lines, pending, self.count, self.header)
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
            data, part_lines = self._decode(part)
            if pending is not None:
                data.insert(0, pending)
                pending = None
            if len(data) % 2:
                pending = data.pop()
            if at_end:  # everything checked before the last chunk is given
                if pending is not None:
                    raise NotRegular("key without a value")
                self._trailer(trailer, self.count + len(data) // 2)
            self.count += len(data) // 2
            offset += len(part)
            lines += part_lines
            yield data[0::2], data[1::2]

    def _trailer(self, trailer: bytes, total: int) -> None:
        lines = trailer.split(b"\n")
        count = lines[0][len(_COUNT_TAG):]
        if not count.isdigit() or int(count) != total:
            raise NotRegular("trailer")
        for line in lines[1:]:  # only comments may follow
            if line and (not line.startswith(b"#") or line.startswith(b"#:")):
                raise NotRegular("data after the trailer")

    @staticmethod
    def _decode(part: bytes) -> Tuple[List[bytes], int]:
        """The data of the datums in ``part`` ('#:len=' lines and base64),
        and the number of lines of ``part``."""
        if not part:
            return [], 0
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
        newlines = text.count(b"\n")
        if len(text) - newlines != sum([(n + 2) // 3 * 4 for n in lens]):
            raise NotRegular("a length that does not match its data")
        try:
            data = list(map(binascii.a2b_base64, bodies))
        except binascii.Error:
            raise NotRegular("bad base64") from None
        if list(map(len, data)) != lens:
            raise NotRegular("a length that does not match its data")
        return data, len(found) + newlines


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
