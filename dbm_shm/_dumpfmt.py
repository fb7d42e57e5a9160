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

This module gathers the public names of three: ``_dumpwrite`` (the writer),
``_dumpread`` (the readers) and ``_dumpjsonl`` (JSON lines). All are pure
Python and import nothing from the compiled core, so they can be used (and
tested) on their own.

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

from ._dumpjsonl import JsonCodec, read_jsonl, write_jsonl
from ._dumpread import (
    DumpError, DumpReader, FastDumpReader, NotRegular, detect_format, read_dump,
    FAST_CHUNK_BYTES, AnyFile, Item, Resume,
)
from ._dumpwrite import (
    GDBM_LINE_LEN, dump_header, dump_trailer, encode_records, write_dump,
    _Sink, _encode_data, _write_datum,
)

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

# Names the tests and older callers reach through this module.
_ = (FAST_CHUNK_BYTES, AnyFile, Item, Resume, dump_header, dump_trailer, encode_records, _Sink,
     _encode_data, _write_datum)
