"""``dump`` and ``load``: a database to and from a GNU gdbm ASCII dump or
JSON lines (the formats are in ``dbm_shm._dumpfmt``)."""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import sys
import tempfile
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from .. import _dumpfmt
from .._db import open as open_db
from .._dshm import lib
from .._errors import raise_for
from .._dumpfmt import DumpError
from .._dumpstore import write_store_dump
from ._common import (
    PROG, EXIT_OK, CLIError, UsageError, _version, _os_message, _other_kind, _is_ours,
    _probe_writable, _open, _show, _Progress, _want_progress, _same_file, _umask,
)


def _check_output_path(out: str, db_path: str, force: bool) -> None:
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CLIError(f"{out}: directory {parent} does not exist")
    if os.path.exists(out):
        if _same_file(out, db_path):
            raise UsageError(f"{out}: the dump file is the database itself")
        if os.path.isdir(out):
            raise UsageError(f"{out}: is a directory")
        if not force and (_is_ours(out) or _other_kind(out)):
            raise UsageError(
                f"{out}: is a database file; refusing to overwrite it with a dump "
                "(remove it first, or pass --force)")


def cmd_dump(args: argparse.Namespace) -> int:
    if args.dump_file is not None and args.dump_file != "-":
        _check_output_path(args.dump_file, args.db, args.force)
    to_stdout = args.dump_file in (None, "-")
    with _open(args.db, "r") as db:
        st = os.stat(args.db)
        total = len(db)
        with _Progress(_want_progress(args, to_stdout), total, "dump") as bar:
            def write(fp: Any) -> None:
                if args.format == "jsonl":
                    _dumpfmt.write_jsonl(fp, db.iteritems(), key_format=args.key_format,
                                         value_format=args.value_format,
                                         progress=bar.update)
                else:
                    write_store_dump(fp, db, filename=args.db, mode=st.st_mode & 0o777,
                                     uid=st.st_uid, gid=st.st_gid,
                                     created_by=f"dbm_shm version {_version()}",
                                     progress=bar.update)

            if to_stdout:
                write(sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return EXIT_OK
            target = os.path.abspath(args.dump_file)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".",
                                       suffix=".tmp", dir=os.path.dirname(target))
            try:
                with os.fdopen(fd, "wb") as fp:
                    write(fp)
                    fp.flush()
                    os.fsync(fp.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    return EXIT_OK


_DB_KINDS_NOT_DUMPS = ("dbm.shm", "dbm.gnu", "dbm.ndbm", "dbm.dumb", "dbm.sqlite3", "dbm.bsd")


def _open_dump_source(path: str, stack: contextlib.ExitStack[Optional[bool]]) -> IO[bytes]:
    """A re-readable binary file object for the dump (stdin is spooled)."""
    if path == "-":
        spool = stack.enter_context(tempfile.TemporaryFile())
        while True:
            chunk = sys.stdin.buffer.read(1 << 20)
            if not chunk:
                break
            spool.write(chunk)
        spool.seek(0)
        return spool
    try:
        return stack.enter_context(open(path, "rb"))
    except OSError as exc:
        raise CLIError(_os_message(exc)) from None


#: Records handed to the store per call (one C call of ``update``).
_LOAD_CHUNK = 65536


def _grouped(items: Iterator[Tuple[bytes, bytes]]) -> Iterator[Tuple[List[bytes], List[bytes]]]:
    """``items`` as (keys, values) lists of up to ``_LOAD_CHUNK`` records."""
    while True:
        chunk = list(itertools.islice(items, _LOAD_CHUNK))
        if not chunk:
            return
        keys, values = map(list, zip(*chunk))
        yield keys, values


def _chunks(fp: Any, fmt: str, args: argparse.Namespace,
            exact: bool) -> Iterator[Tuple[Any, List[bytes], List[bytes]]]:
    """The dump's records as (reader, keys, values) chunks.

    A gdbm ASCII dump goes through ``FastDumpReader`` (bulk decoding)
    unless ``exact``. Where that reader stops (a mistake, or a form it
    leaves alone: comments between records, CRLF), ``DumpReader`` reads on
    from the start of the chunk it did not give, record by record, and
    names the line of a mistake; the chunks before are not read again.
    (``NotRegular`` still comes out if it cannot resume there: the caller
    reads the whole dump again with ``exact``.) JSON lines, and ``exact``,
    go through the record-by-record readers from the start. ``reader`` is
    the object whose ``header`` holds the dump's header, or None."""
    if fmt == "ascii" and not exact:
        fast = _dumpfmt.FastDumpReader(fp)
        try:
            for keys, values in fast:
                yield fast, keys, values
            return
        except _dumpfmt.NotRegular:
            if fast.resume is None:  # stopped in the header: all again, exactly
                raise
        fp.seek(fast.resume.offset)
        reader: Any = _dumpfmt.DumpReader(fp, resume=fast.resume)
        for keys, values in _grouped(iter(reader)):
            yield reader, keys, values
        return
    reader = None
    if fmt == "jsonl":
        items: Iterator[Tuple[bytes, bytes]] = _dumpfmt.read_jsonl(
            fp, key_format=args.key_format, value_format=args.value_format)
    else:
        reader = _dumpfmt.DumpReader(fp)
        items = iter(reader)
    for keys, values in _grouped(items):
        yield reader, keys, values


class _NewStoreLoad:
    """Load into a database that does not exist yet: fill a new store
    beside it, then link it into place, so a failure leaves no file."""

    def __init__(self, args: argparse.Namespace, mode: Optional[int]):
        self._args = args
        self._mode = mode
        self._tmp: Optional[str] = None
        self._db: Any = None
        self.count = 0
        self.header: Dict[str, str] = {}

    def reset(self) -> None:
        """Forget what was added (a new, empty store beside the target)."""
        self.abort()
        target = os.path.abspath(self._args.db)
        fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                         suffix=".load", dir=os.path.dirname(target))
        os.close(fd)
        self._db = open_db(self._tmp, "n", 0o600)
        self.count = 0

    def add(self, keys: List[bytes], values: List[bytes]) -> None:
        """Store one chunk (one ``update`` call)."""
        chunk = dict(zip(keys, values))
        if not self._args.replace and (len(chunk) != len(keys) or any(
                v is not None for v in self._db.get_many(list(chunk)))):
            raise CLIError(f"{self._args.dump_file}: key(s) appear more than once in "
                           "the dump (use --replace to keep the last one)")
        self._db.update(chunk)
        self.count += len(keys)

    def finish(self) -> None:
        """Make the file durable and put it in place (never over a file)."""
        assert self._db is not None and self._tmp is not None
        self._db.sync()
        self._db.close()
        self._db = None
        mode = self._mode
        if mode is None:
            mode = 0o666
            with contextlib.suppress(ValueError, TypeError):
                mode = int(self.header.get("mode", "666"), 8) & 0o777
        os.chmod(self._tmp, mode & ~_umask())
        try:
            os.link(self._tmp, self._args.db)
        except FileExistsError:
            raise CLIError(f"{self._args.db}: was created by someone else during the "
                           "load; nothing loaded") from None
        except OSError:  # a file system without hard links
            if os.path.lexists(self._args.db):
                raise CLIError(f"{self._args.db}: was created by someone else during "
                               "the load; nothing loaded") from None
            os.rename(self._tmp, self._args.db)
        self.abort()

    def abort(self) -> None:
        """Remove the new store (after ``finish``: its temporary name)."""
        if self._db is not None:
            with contextlib.suppress(OSError):
                self._db.close()
            self._db = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


class _ExistingStoreLoad:
    """Load into an existing database with memory bounded by a chunk: hold
    its writer lock (a transaction) for the whole load, put the dump's
    records into a new store beside it chunk by chunk, then its own records
    (those the dump did not replace), and put the new store in its place
    (``dshm_txn_replace``: renamed over it, the old file marked moved so
    every handle follows). No other writer commits meanwhile, so none is
    lost; readers see the old store until the rename, then the new one:
    all of the dump or none of it."""

    def __init__(self, args: argparse.Namespace):
        self._args = args
        self._db: Any = None      # the store, holding its writer lock
        self._old: Any = None     # the store again, read-only (lock-free reads)
        self._new: Any = None     # the merged store being built
        self._tmp: Optional[str] = None
        self.count = 0
        self.header: Dict[str, str] = {}

    def reset(self) -> None:
        """Start again: lock the store, make an empty new one beside it."""
        self.abort()
        args = self._args
        self.count = 0
        self._duplicates = 0
        self._clashes = 0
        self._clash_keys: List[bytes] = []   # the 3 smallest
        self._db = _open(args.db, "w")
        rc = lib.dshm_txn_begin(self._db._h, -1)
        if rc:
            raise_for(rc, "load", args.db)
        self._old = _open(args.db, "r")
        # beside the file itself (through a symlink: its target), so the
        # rename stays on one file system and replaces what the core renames
        target = os.path.realpath(args.db)
        fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                         suffix=".load", dir=os.path.dirname(target))
        os.close(fd)
        self._new = open_db(self._tmp, "n", 0o600)

    def add(self, keys: List[bytes], values: List[bytes]) -> None:
        """Count one chunk's clashes and duplicates; store it."""
        chunk = dict(zip(keys, values))
        self.count += len(keys)
        if not self._args.replace:
            self._duplicates += len(keys) - len(chunk)
            ks = list(chunk)
            # The new store holds only the dump's records so far: a key
            # there came earlier in the dump; a first one may be a clash.
            first = [k for k, v in zip(ks, self._new.get_many(ks)) if v is None]
            self._duplicates += len(ks) - len(first)
            clash = [k for k, v in zip(first, self._old.get_many(first)) if v is not None]
            if clash:
                self._clashes += len(clash)
                self._clash_keys = heapq.nsmallest(3, self._clash_keys + clash)
        self._new.update(chunk)

    def _copy_old(self) -> None:
        """Add the store's own records the dump did not replace."""
        items = self._old.iteritems()
        while True:
            batch = list(itertools.islice(items, _LOAD_CHUNK))
            if not batch:
                return
            keys, values = map(list, zip(*batch))
            if self._args.replace:  # without it, no key of the dump is there
                keep = [v is None for v in self._new.get_many(keys)]
                keys = list(itertools.compress(keys, keep))
                values = list(itertools.compress(values, keep))
            if keys:
                self._new._write_lists(keys, values, False)

    def finish(self) -> None:
        """Report duplicates and clashes, or put the new store in place."""
        args = self._args
        if self._duplicates:
            raise CLIError(f"{args.dump_file}: {self._duplicates} key(s) appear more than once "
                           "in the dump (use --replace to keep the last one)")
        if self._clashes:
            shown = ", ".join(_show(args.key_format, k) for k in self._clash_keys)
            more = f" and {self._clashes - 3} more" if self._clashes > 3 else ""
            raise CLIError(f"{self._clashes} key(s) of the dump are already in "
                           f"{args.db}: {shown}{more} (use --replace to "
                           "overwrite them)")
        assert self._tmp is not None
        self._copy_old()
        self._new.sync()
        self._new.close()
        self._new = None
        st = os.stat(args.db)
        with contextlib.suppress(OSError):
            os.chown(self._tmp, st.st_uid, st.st_gid)
        os.chmod(self._tmp, st.st_mode & 0o7777)
        rc = lib.dshm_txn_replace(self._db._h, os.fsencode(self._tmp))
        if rc:
            raise_for(rc, "load", args.db)
        self._tmp = None
        self.abort()

    def abort(self) -> None:
        """Give the lock back and remove the new store (nothing changed)."""
        for name in ("_new", "_old"):
            handle = getattr(self, name)
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
                setattr(self, name, None)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None
        if self._db is not None:
            lib.dshm_txn_abort(self._db._h)  # DSHM_INVALID if the lock went already
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None


def cmd_load(args: argparse.Namespace) -> int:
    """Read the dump once and store it all or nothing (see docs/cli.md)."""
    mode = None
    if args.mode is not None:
        try:
            mode = int(args.mode, 8)
            if not 0 <= mode <= 0o777:
                raise ValueError
        except ValueError:
            raise UsageError(f"bad --mode {args.mode!r}: give octal permissions like 644") from None
    if args.dump_file != "-":
        if not os.path.exists(args.dump_file):
            raise CLIError(f"{args.dump_file}: No such file or directory")
        if os.path.exists(args.db) and _same_file(args.dump_file, args.db):
            raise UsageError("the dump file and the database are the same file")
        if _is_ours(args.dump_file) or _other_kind(args.dump_file) in _DB_KINDS_NOT_DUMPS:
            raise UsageError(
                f"{args.dump_file}: is a database, not a dump (usage: "
                f"{PROG} load DUMP_FILE DB_FILE)")
    db_exists = os.path.exists(args.db)
    if db_exists:
        _probe_writable(args.db)
    ours = db_exists and _is_ours(args.db)
    kind = None if ours else _other_kind(args.db)
    if kind or (db_exists and os.path.getsize(args.db) > 0 and not ours):
        what = f"a {kind} database" if kind else "not a dbm_shm database"
        raise CLIError(f"{args.db}: {what}; refusing to load into it")
    if not db_exists and not os.path.isdir(os.path.dirname(os.path.abspath(args.db))):
        raise CLIError(f"{args.db}: directory {os.path.dirname(os.path.abspath(args.db))} "
                       "does not exist")

    with contextlib.ExitStack() as stack:
        fp = _open_dump_source(args.dump_file, stack)
        fmt = args.format
        if fmt == "auto":
            head = fp.read(64)
            fp.seek(0)
            fmt = _dumpfmt.detect_format(head)
            if fmt == "gdbm-binary":
                fmt = "ascii"  # the reader explains that this is unsupported
            if fmt is None:
                raise CLIError(f"{args.dump_file}: not a dump (neither a gdbm ASCII dump "
                               "nor JSON lines); use --format to say which")
        load: Any = _ExistingStoreLoad(args) if db_exists else _NewStoreLoad(args, mode)
        bar = stack.enter_context(_Progress(_want_progress(args), None, "load"))
        try:
            # The fast reader, then the exact one from where it stopped; a
            # dump where that fails is read again from the start, record
            # by record. Nothing reaches the target before the end.
            for exact in (False, True):
                fp.seek(0)
                load.reset()
                bar.reset()
                try:
                    for reader, keys, values in _chunks(fp, fmt, args, exact):
                        load.add(keys, values)
                        bar.update(len(keys))
                        if reader is not None:
                            load.header = reader.header
                except _dumpfmt.NotRegular:
                    continue
                except DumpError as exc:
                    raise CLIError(f"{args.dump_file}: {exc}") from None
                load.finish()
                break
        finally:
            load.abort()
    return EXIT_OK
