"""JSON lines for people and scripts: :func:`write_jsonl` and
:func:`read_jsonl` (the format is described in :mod:`dbm_shm._dumpfmt`).

Pure Python: imports nothing from the compiled core.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import IO, Any, Callable, Dict, Iterable, Iterator, Optional, Protocol, Tuple

from ._dumpread import DumpError
from ._dumpwrite import _as_bytes, _Sink
from ._valuefmt import ValueFormat

__all__ = ["JsonCodec", "read_jsonl", "write_jsonl"]

Item = Tuple[bytes, bytes]
AnyFile = IO[Any]


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
