"""Records as the C core hands them out in bulk (``dshm_scan``,
``dshm_snapshot``), the :class:`Snapshot` mapping built from them, and the
conversion of keys and values to bytes."""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterator, Mapping, Tuple, Union

__all__ = ["Key", "Snapshot", "as_bytes", "records"]

Key = Union[str, bytes, bytearray, memoryview]

_U32 = struct.Struct("=I")
_U32U64 = struct.Struct("=IQ")


def as_bytes(obj: Any, what: str) -> bytes:
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, bytes):
        return obj
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError(f"dbm_shm {what}s must be str or bytes-like, not {type(obj).__name__}") from None


def records(data: bytes, values: bool) -> Iterator[Tuple[bytes, bytes]]:
    """The (key, value) pairs of a buffer of scan records (``dshm_scan``,
    ``dshm_snapshot``): ``[u32 klen][u64 vlen][u64 hash][key][value]``, or
    without values ``[u32 klen][u64 hash][key]`` (value ``b""``)."""
    pos, n = 0, len(data)
    if values:
        while pos < n:
            kl, vl = _U32U64.unpack_from(data, pos)
            pos += 20
            yield data[pos:pos + kl], data[pos + kl:pos + kl + vl]
            pos += kl + vl
    else:
        while pos < n:
            kl = _U32.unpack_from(data, pos)[0]
            pos += 12
            yield data[pos:pos + kl], b""
            pos += kl


class Snapshot(Mapping[bytes, bytes]):
    """Values of a :class:`Database` that were all current at one instant
    (see :meth:`Database.snapshot`): a read-only mapping of ``bytes`` to
    ``bytes``, held in this process's memory."""

    __slots__ = ("_data", "commit_id")

    def __init__(self, data: Dict[bytes, bytes], commit_id: int) -> None:
        self._data = data
        #: The commit number the values belong to (see Database.commit_id()).
        self.commit_id = commit_id

    def __getitem__(self, key: Key) -> bytes:
        k = key if type(key) is bytes else as_bytes(key, "key")
        return self._data[k]

    def __contains__(self, key: object) -> bool:
        k = key if type(key) is bytes else as_bytes(key, "key")
        return k in self._data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc: object) -> None:
        self._data = {}

    def __repr__(self) -> str:
        return f"<dbm_shm.Snapshot of {len(self._data)} keys at commit {self.commit_id}>"
