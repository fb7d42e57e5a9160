"""Display formats of the command-line tool: how keys and values are shown
and parsed, in the spirit of gdbmtool's ``define key {...}`` /
``define content {...}``.

A format is a ``struct`` format (``"<I"``, ``"<dd"``) or one of ``auto``,
``raw``, ``utf-8``, ``hex``, ``json``, ``pickle``;
:func:`parse_value_format` makes one from its name. Each also serves as a
:class:`dbm_shm._dumpfmt.JsonCodec` for JSON-lines dumps.

Pure Python; imports nothing from the compiled core.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import struct
from typing import Any, Dict, List, Optional, Tuple, Type

__all__ = ["FORMAT_NAMES", "ValueFormat", "parse_value_format"]

_STRUCT_TOKEN = re.compile(r"\s*(\d*)([xcbB?hHiIlLqQnNefdspP])")
_INT_CODES = set("bBhHiIlLqQnNP")
_FLOAT_CODES = set("efd")


class ValueFormat:
    """How to show and parse keys or values.

    ``name`` is the spec it was made from. Methods:

    * ``display(data) -> bytes``: the text to print for ``data`` (never raises;
      falls back to the Python ``bytes`` repr for data the format cannot show);
    * ``parse(arg: str) -> bytes``: turn a command-line argument into bytes
      (raises ``ValueError`` with a message for the user);
    * ``to_json(data)``: a JSON-serialisable object, or ``NotImplemented`` when
      the data cannot be represented (callers then use base64);
    * ``from_json(obj) -> bytes``: the inverse (raises ``ValueError``).
    """

    name = "auto"

    # -- defaults: "auto"
    def display(self, data: bytes) -> bytes:
        return _auto_display(data)

    def parse(self, arg: str) -> bytes:
        return os.fsencode(arg)

    def to_json(self, data: bytes) -> Any:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return NotImplemented

    def from_json(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise ValueError(f"expected a string, got {type(obj).__name__}")
        return obj.encode("utf-8", "surrogatepass")

    def __repr__(self) -> str:
        return f"<ValueFormat {self.name}>"


def _is_printable_text(text: str) -> bool:
    # No tabs or newlines either: a displayed key must fit on one line and
    # never contain the tab that separates it from its value.
    return text.isprintable()


def _auto_display(data: bytes) -> bytes:
    """Printable UTF-8 as itself, anything else as a Python bytes literal."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data).encode("ascii")
    if _is_printable_text(text) and not text.startswith(("b'", 'b"')):
        return data
    return repr(data).encode("ascii")


class _RawFormat(ValueFormat):
    name = "raw"

    def display(self, data: bytes) -> bytes:
        return data


class _Utf8Format(ValueFormat):
    name = "utf-8"

    def display(self, data: bytes) -> bytes:
        return data.decode("utf-8", "backslashreplace").encode("utf-8")

    def parse(self, arg: str) -> bytes:
        try:
            return arg.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"not valid UTF-8: {arg!r}") from None


class _HexFormat(ValueFormat):
    name = "hex"

    def display(self, data: bytes) -> bytes:
        return data.hex().encode("ascii")

    def parse(self, arg: str) -> bytes:
        text = arg[2:] if arg[:2].lower() == "0x" else arg
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not a hex string: {arg!r}") from None

    def to_json(self, data: bytes) -> Any:
        return data.hex()

    def from_json(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise ValueError(f"expected a hex string, got {type(obj).__name__}")
        return self.parse(obj)


class _JsonFormat(ValueFormat):
    name = "json"

    def display(self, data: bytes) -> bytes:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return _auto_display(data)
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")

    def parse(self, arg: str) -> bytes:
        try:
            json.loads(arg)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc}): {arg!r}") from None
        return arg.encode("utf-8")

    def to_json(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return NotImplemented

    def from_json(self, obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _PickleFormat(ValueFormat):
    """Pickled Python objects (what ``shelve`` stores as values).

    Unpickling runs code chosen by whoever wrote the data: use it only on
    databases you trust.
    """

    name = "pickle"

    def _load(self, data: bytes) -> Any:
        return pickle.loads(data)

    def display(self, data: bytes) -> bytes:
        try:
            obj = self._load(data)
        except Exception:
            return _auto_display(data)
        return repr(obj).encode("utf-8", "backslashreplace")

    def parse(self, arg: str) -> bytes:
        try:
            obj = ast.literal_eval(arg)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            obj = arg  # not a Python literal: the string itself
        return pickle.dumps(obj, protocol=pickle.DEFAULT_PROTOCOL)

    def to_json(self, data: bytes) -> Any:
        try:
            obj = self._load(data)
            json.dumps(obj)
        except Exception:
            return NotImplemented
        return obj

    def from_json(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.DEFAULT_PROTOCOL)


class _StructFormat(ValueFormat):
    """A ``struct`` module format; several fields are shown comma-separated."""

    def __init__(self, spec: str):
        try:
            self._struct = struct.Struct(spec)
        except struct.error as exc:
            raise ValueError(f"bad struct format {spec!r}: {exc}") from None
        self.name = spec
        body = spec[1:] if spec[:1] in "@=<>!" else spec
        kinds = []
        pos = 0
        body = body.rstrip()
        while pos < len(body):
            m = _STRUCT_TOKEN.match(body, pos)
            if not m:  # pragma: no cover - struct.Struct accepted it
                raise ValueError(f"bad struct format {spec!r}")
            num, code = m.groups()
            pos = m.end()
            if code == "x":
                continue
            if code in "sp":
                kinds.append(code)
            else:
                kinds.extend(code * (int(num) if num else 1))
        if not kinds:
            raise ValueError(f"struct format {spec!r} has no fields")
        self._kinds = kinds

    def _unpack(self, data: bytes) -> Tuple[Any, ...]:
        return self._struct.unpack(data)

    @staticmethod
    def _show(field: Any) -> str:
        if isinstance(field, bytes):
            try:
                text = field.decode("utf-8")
                if _is_printable_text(text):
                    return text
            except UnicodeDecodeError:
                pass
            return repr(field)
        return repr(field) if isinstance(field, float) else str(field)

    def display(self, data: bytes) -> bytes:
        try:
            fields = self._unpack(data)
        except struct.error:
            return _auto_display(data)
        return ",".join(self._show(f) for f in fields).encode("utf-8")

    def _field(self, kind: str, text: Any, index: int) -> Any:
        if kind in _INT_CODES:
            if isinstance(text, bool) or not isinstance(text, (int, str)):
                raise ValueError(f"field {index + 1}: expected an integer, got {text!r}")
            if isinstance(text, str):
                try:
                    return int(text.strip(), 0)
                except ValueError:
                    raise ValueError(f"field {index + 1}: not an integer: {text!r}") from None
            return text
        if kind in _FLOAT_CODES:
            if isinstance(text, str):
                try:
                    return float(text.strip())
                except ValueError:
                    raise ValueError(f"field {index + 1}: not a number: {text!r}") from None
            if isinstance(text, bool) or not isinstance(text, (int, float)):
                raise ValueError(f"field {index + 1}: expected a number, got {text!r}")
            return float(text)
        if kind == "?":
            if isinstance(text, bool):
                return text
            word = str(text).strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"field {index + 1}: not a boolean: {text!r}")
        if kind in "csp":
            if not isinstance(text, str):
                raise ValueError(f"field {index + 1}: expected a string, got {text!r}")
            raw = os.fsencode(text)
            if kind == "c" and len(raw) != 1:
                raise ValueError(f"field {index + 1}: expected one byte, got {text!r}")
            return raw
        raise ValueError(f"unsupported struct code {kind!r}")  # pragma: no cover

    def _pack(self, values: List[Any]) -> bytes:
        if len(values) != len(self._kinds):
            raise ValueError(
                f"format {self.name!r} has {len(self._kinds)} field(s), got {len(values)}")
        fields = [self._field(k, v, i) for i, (k, v) in enumerate(zip(self._kinds, values))]
        try:
            return self._struct.pack(*fields)
        except struct.error as exc:
            raise ValueError(f"cannot pack {values!r} as {self.name!r}: {exc}") from None

    def parse(self, arg: str) -> bytes:
        if len(self._kinds) == 1:
            values = [arg]
        else:
            values = arg.split(",") if "," in arg else arg.split()
        return self._pack(values)

    def to_json(self, data: bytes) -> Any:
        try:
            fields = self._unpack(data)
        except struct.error:
            return NotImplemented
        out = []
        for f in fields:
            if isinstance(f, bytes):
                try:
                    f = f.decode("utf-8")
                except UnicodeDecodeError:
                    return NotImplemented
            elif isinstance(f, float) and (f != f or f in (float("inf"), float("-inf"))):
                return NotImplemented  # not representable in strict JSON
            out.append(f)
        return out[0] if len(out) == 1 else out

    def from_json(self, obj: Any) -> bytes:
        values = obj if isinstance(obj, list) else [obj]
        return self._pack(values)


_NAMED_FORMATS = {
    "auto": ValueFormat,
    "raw": _RawFormat,
    "utf-8": _Utf8Format,
    "utf8": _Utf8Format,
    "hex": _HexFormat,
    "json": _JsonFormat,
    "pickle": _PickleFormat,
}

#: The format names ``parse_value_format`` accepts besides struct formats.
FORMAT_NAMES = ("auto", "raw", "utf-8", "hex", "json", "pickle")


def parse_value_format(spec: Optional[str]) -> ValueFormat:
    """Make a ``ValueFormat`` from a name or a ``struct`` format string.

    ``None`` or ``"auto"`` gives the default: printable UTF-8 shown as is,
    other bytes as a Python bytes literal; arguments taken as given.
    Raises ``ValueError`` for an unknown spec.
    """
    if spec is None:
        return ValueFormat()
    cls = _NAMED_FORMATS.get(spec.lower())
    if cls is not None:
        return cls()
    try:
        return _StructFormat(spec)
    except ValueError as exc:
        raise ValueError(
            f"unknown format {spec!r}: use one of {', '.join(FORMAT_NAMES)} "
            f"or a struct format such as '<I' or '<dd' ({exc})") from None


