"""Pending batches: what ``Database.batch()`` holds back until it ends.

A batch is per thread and per handle: a thread's sets and deletes inside
``with db.batch():`` go into its :class:`Pending` (a dict of key -> value,
or :data:`DELETE`) and are applied by one ``dshm_write_batch`` call when
the outermost block ends. This module is the model of that: the pending
writes, nesting, the overlay that gives the batch's own thread
read-your-writes, and the C call that commits. ``_db.Database`` keeps only
the few inline checks its hot paths need (``if self._batches: ...``).

It imports nothing of ``_db`` (no cycle): the context manager uses only the
handle's ``_batches``, ``_check_open()`` and ``_write_batch()``.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ._dshm import ffi, lib
from ._errors import raise_for

_from_buffer = ffi.from_buffer

__all__ = ["DELETE", "Pending", "BatchContext", "overlay", "count_delta", "apply_to_values",
           "open_batches_message", "pack_batch", "write_lists"]

#: A pending delete in a batch (a value no key can have).
DELETE: Any = object()


class Pending:
    """One thread's open batch on one handle: the writes it holds back."""

    __slots__ = ("ops", "deletes", "depth", "saves")

    def __init__(self) -> None:
        self.ops: Dict[bytes, Any] = {}   # key -> value, or DELETE
        self.deletes = 0                  # DELETE entries ever put in ops
        self.depth = 0
        self.saves: List[Tuple[Dict[bytes, Any], int]] = []   # nested batches

    def delete(self, k: bytes) -> None:
        """Hold back a delete of ``k`` (the caller checked it is present)."""
        self.ops[k] = DELETE
        self.deletes += 1


class BatchContext:
    """What ``Database.batch()`` returns: see there."""

    __slots__ = ("_db",)

    def __init__(self, db: Any) -> None:
        self._db = db

    def __enter__(self) -> Any:
        db = self._db
        db._check_open()
        tid = threading.get_ident()
        p = db._batches.get(tid)
        if p is None:
            p = Pending()
            db._batches[tid] = p
        elif p.depth:
            p.saves.append((dict(p.ops), p.deletes))
        p.depth += 1
        return db

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        db = self._db
        tid = threading.get_ident()
        p = db._batches[tid]
        p.depth -= 1
        if p.depth:
            saved = p.saves.pop()
            if et is not None:   # an inner batch that failed: drop its writes only
                p.ops, p.deletes = saved
            return
        del db._batches[tid]
        if et is None and p.ops:
            db._write_batch(p.ops, p.deletes)


def overlay(p: Optional[Pending], pairs: Iterator[Tuple[bytes, bytes]]) -> Iterator[Tuple[bytes, bytes]]:
    """``pairs`` (the store's) as the open batch ``p`` would leave them:
    its sets replace or add, its deletes remove; new keys come last."""
    if p is None:
        yield from pairs
        return
    ops = dict(p.ops)
    for k, v in pairs:
        if k in ops:
            nv = ops.pop(k)
            if nv is not DELETE:
                yield k, nv
        else:
            yield k, v
    for k, nv in ops.items():
        if nv is not DELETE:
            yield k, nv


def count_delta(p: Pending, stored: Callable[[bytes], bool]) -> int:
    """How many keys the batch ``p`` will add (minus those it removes),
    given ``stored(k)``: is ``k`` in the store now?"""
    n = 0
    for k, v in p.ops.items():
        s = stored(k)
        n += (v is not DELETE and not s) - (v is DELETE and s)
    return n


def apply_to_values(p: Pending, keys: List[bytes], values: List[Optional[bytes]]) -> None:
    """Replace, in place, the stored ``values`` of ``keys`` (None: absent)
    by what the batch ``p`` holds for them."""
    ops = p.ops
    for i, k in enumerate(keys):
        if k in ops:
            v = ops[k]
            values[i] = None if v is DELETE else v


def open_batches_message(batches: Dict[int, Pending], what: str, path: Any) -> Optional[str]:
    """The error text for ``what`` (e.g. ``close()``) refused because
    batches are open on the handle of ``path``, or None if none is."""
    if not batches:
        return None
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    where = []
    for tid, p in list(batches.items()):
        who = "this thread" if tid == me else f"thread {names.get(tid, tid)!r}"
        where.append(f"{who} ({len(p.ops)} pending writes, nested {p.depth} deep)")
    return (f"{what} of {path!r} while a batch() is still open in " + ", ".join(where)
            + ": end the batch first; nothing was lost (the handle stays open and the"
            " batch commits when its block ends)")


def pack_batch(keys: List[bytes], vals: List[Any], deletes: bool) -> Tuple[bytes, Any, bytes, Any]:
    """The arguments after the count that ``dshm_write_batch`` and
    ``dshm_txn_commit`` take for ``keys[i] -> vals[i]`` (bytes, or DELETE
    when ``deletes``): ``(keys, klens, values, vlens)``.

    ``keys`` and ``values`` are the keys and the non-deleted values joined
    end to end; ``klens`` (``uint64_t[]``) and ``vlens`` (``int64_t[]``, -1
    for a delete) are cdata views of arrays they keep alive, no copy.
    Hot: two joins, two arrays, two ``from_buffer`` views, nothing more.
    """
    if deletes:
        vlens = array("q", [-1 if v is DELETE else len(v) for v in vals])
        vbuf = b"".join([v for v in vals if v is not DELETE])
    else:
        vlens = array("q", map(len, vals))
        vbuf = b"".join(vals)
    klens = array("Q", map(len, keys))
    return b"".join(keys), _from_buffer("uint64_t[]", klens), vbuf, _from_buffer("int64_t[]", vlens)


def write_lists(h: Any, path: Any, keys: List[bytes], vals: List[Any], deletes: bool) -> int:
    """Apply ``keys[i] -> vals[i]`` (bytes, or DELETE when ``deletes``) as one
    atomic batch through ``dshm_write_batch``; its commit number."""
    kbuf, klens, vbuf, vlens = pack_batch(keys, vals, deletes)
    out = ffi.new("uint64_t *")
    rc = lib.dshm_write_batch(h, len(keys), kbuf, klens, vbuf, vlens, out)
    if rc:
        raise_for(rc, "batch", path)
    return int(out[0])


def pairs_of(other: Any, kwargs: Dict[str, Any]) -> Iterable[Tuple[Any, Any]]:
    """The (key, value) pairs ``dict.update(other, **kwargs)`` would take."""
    if hasattr(other, "keys"):
        yield from (other.items() if isinstance(other, dict) else ((k, other[k]) for k in other.keys()))
    else:
        yield from other
    for k, v in kwargs.items():
        yield k, v
