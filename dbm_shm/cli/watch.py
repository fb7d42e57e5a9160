"""``watch``: print keys as other processes change them."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any, Dict, Optional, Tuple

from ._common import (
    EXIT_OK, UsageError, _out, _open, _parse,
)


def wait_for_change(db: Any, last_commit: int, timeout: Optional[float]) -> int:
    """Sleep until a write commits after ``last_commit`` (``db.wait``: a
    futex, no polling). Returns the new commit id, or ``last_commit`` if
    ``timeout`` seconds (``None``: forever) passed first."""
    commit = db.wait(timeout=timeout, since=last_commit)
    return last_commit if commit is None else commit


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def cmd_watch(args: argparse.Namespace) -> int:
    kf, vf = args.key_format, args.value_format
    prefix = _parse(kf, args.prefix, "prefix") if args.prefix is not None else None
    if args.timeout is not None and args.timeout < 0:
        raise UsageError("--timeout must not be negative")
    events = 0
    stop_at = None if args.timeout is None else time.monotonic() + args.timeout

    def emit(kind: str, key: bytes, value: Optional[bytes] = None) -> None:
        stamp = ""
        if args.timestamps:
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d} "
        text = stamp.encode() + kind.encode() + b" " + kf.display(key)
        if value is not None:
            text += b" = " + vf.display(value)
        _out(text + b"\n")

    def snapshot(db: Any) -> Tuple[Dict[bytes, Tuple[bytes, bytes]], int]:
        """The watched keys as of one commit (a batch is seen whole), and
        that commit: the next wait starts from it, so no write is missed."""
        snap = {}
        with db.snapshot() as whole:
            for key, value in whole.items():
                if prefix is None or key.startswith(prefix):
                    snap[key] = (_digest(value), value)
            return snap, whole.commit_id

    with _open(args.db, "r") as db:
        first, commit = snapshot(db)
        old = {k: d for k, (d, _v) in first.items()}
        if args.initial:
            # 'has', not 'set': what was there already is not a change
            for key, (_d, value) in sorted(first.items()):
                emit("has", key, value)
            sys.stdout.buffer.flush()
        while args.max_events is None or events < args.max_events:
            left = None if stop_at is None else max(0.0, stop_at - time.monotonic())
            if wait_for_change(db, commit, left) == commit:
                break  # timed out
            current, commit = snapshot(db)
            for key, (digest, value) in current.items():
                if old.get(key) != digest:
                    emit("set", key, value)
                    events += 1
            for key in old.keys() - current.keys():
                emit("del", key)
                events += 1
            sys.stdout.buffer.flush()
            old = {k: d for k, (d, _v) in current.items()}
    return EXIT_OK
