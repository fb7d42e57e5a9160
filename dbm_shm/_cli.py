"""dbm-shm: the command-line tool for dbm_shm databases.

A gdbmtool for shared-memory databases: inspect, edit, dump, load, convert,
check and watch a store, and a demo of several processes sharing one.

Run ``dbm-shm --help`` or ``python -m dbm_shm --help``; each command has its
own ``--help``. docs/cli.md has an example for every command.

Exit status, for scripts:

* 0  success
* 1  key not found (``get``, ``del``)
* 2  usage error: bad arguments or options (nothing was opened for writing)
* 3  database error: cannot open, corrupt, malformed dump, I/O error;
     one line ``dbm-shm: <command>: <message>`` on stderr

The rule behind every write command: parse and check all arguments (keys,
values, formats, the whole dump for ``load``) before the database is
opened for writing, so a mistake on the command line never changes it.
"""

from __future__ import annotations

import argparse
import contextlib
import dbm
import hashlib
import heapq
import importlib
import itertools
import json
import os
import sys
import tempfile
import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, TypeVar

from . import _dumpfmt, _fastglue
from ._compat import convert
from ._db import Database
from ._db import open as open_db
from ._dumpfmt import DumpError
from ._registry import whichdb
from ._salvage import salvage
from ._valuefmt import ValueFormat, parse_value_format

T = TypeVar("T")

PROG = "dbm-shm"

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_DB_ERROR = 3
#: recover: some records could not be read (the new store has the rest)
EXIT_SALVAGE_LOSS = 1


class CLIError(Exception):
    """A failure reported as ``dbm-shm: <command>: <message>``."""

    exit_code = EXIT_DB_ERROR


class UsageError(CLIError):
    exit_code = EXIT_USAGE


class NotFound(CLIError):
    exit_code = EXIT_NOT_FOUND


# ---------------------------------------------------------------------------
# Helpers


def _version() -> str:
    from . import __version__  # the package's, set after its imports

    return __version__


def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data)


def _line(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _os_message(exc: BaseException) -> str:
    """One line for an OSError (dbm_shm.error included) or other exception."""
    if isinstance(exc, OSError):
        msg = exc.strerror or (str(exc.args[0]) if exc.args else "") or str(exc)
        if exc.strerror is None and len(exc.args) > 1:
            msg = str(exc)
        name = exc.filename
        if name is not None:
            name = os.fsdecode(name)
            if name not in msg:
                return f"{name}: {msg}"
        return msg
    return str(exc) or type(exc).__name__


def _human_size(n: Any) -> str:
    try:
        n = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _other_kind(path: str) -> Optional[str]:
    """The stdlib dbm type of ``path`` when it is some other database."""
    try:
        kind = dbm.whichdb(path)
    except Exception:
        return None
    if kind and kind != "dbm.shm":
        return kind
    return None


def _is_ours(path: str) -> bool:
    try:
        return whichdb(path) == "dbm.shm"
    except Exception:
        return False


def _probe_writable(path: str) -> None:
    """Raise what the OS says (``PATH: open: Is a directory``, ``Permission
    denied``) when an existing ``path`` cannot be opened for reading and
    writing, before anyone guesses at its contents: a file we cannot read
    is not "not a dbm_shm database". A missing file passes (``'c'`` creates
    it; the open reports it otherwise)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CLIError(f"{path}: open: {exc.strerror or exc}") from None
    os.close(fd)


def _open(path: str, flag: str = "r", mode: int = 0o666) -> Database:
    """Open a database; every failure becomes a CLIError with a hint."""
    writing = flag[:1] in ("w", "c", "n")
    if writing:
        _probe_writable(path)
    # A write open of an existing file that is not a dbm_shm store is
    # refused here, before the core sees it: never touch a foreign file.
    if writing and flag[:1] != "n":
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        # _other_kind also sees dbm.dumb / dbm.ndbm files stored as PATH.dat,
        # PATH.dir, PATH.db: never create a dbm_shm file over or beside them.
        kind = None if size > 0 and _is_ours(path) else _other_kind(path)
        if kind or (size > 0 and not _is_ours(path)):
            what = f"a {kind} database" if kind else "not a dbm_shm database"
            hint = "; 'dbm-shm convert' copies it into a new dbm_shm file" if kind else ""
            raise CLIError(f"{path}: {what}{hint}")
    try:
        return open_db(path, flag, mode)
    except OSError as exc:
        msg = _os_message(exc)
        if path not in msg:
            msg = f"{path}: {msg}"
        kind = _other_kind(path)
        if kind:
            msg += f" (it is a {kind} database; 'dbm-shm convert' copies it into a dbm_shm file)"
        raise CLIError(msg) from None


def _fmt_type(spec: str) -> ValueFormat:
    try:
        return parse_value_format(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse(fmt: ValueFormat, arg: str, what: str) -> bytes:
    try:
        return fmt.parse(arg)
    except ValueError as exc:
        raise UsageError(f"bad {what} {arg!r} for format {fmt.name!r}: {exc}") from None


def _show(fmt: ValueFormat, data: bytes) -> str:
    return _text(fmt.display(data))


class _Progress:
    """A progress display on stderr while enabled: a tqdm bar when tqdm is
    installed, else a plain meter (one line redrawn on a terminal, a line
    a second otherwise). Never silent when asked for."""

    #: Seconds between two redraws of the plain meter (terminal / not).
    TTY_EVERY = 0.2
    LOG_EVERY = 1.0

    def __init__(self, enabled: bool, total: Optional[int], desc: str):
        self._bar: Any = None
        self._plain = False
        self._n = 0
        self._total = total
        self._desc = desc
        if not enabled:
            return
        try:  # optional, and untyped: an Any through importlib
            tqdm = importlib.import_module("tqdm").tqdm
        except ImportError:
            self._plain = True
            self._tty = _isatty(sys.stderr)
            self._t0 = self._last = time.monotonic()
            return
        self._bar = tqdm(total=total, desc=desc, unit=" rec", unit_scale=True,
                         file=sys.stderr, dynamic_ncols=True)

    def _text(self, now: float) -> str:
        done = f"{self._n:,}"
        if self._total:
            done += f"/{self._total:,} ({100 * self._n / self._total:.0f}%)"
        took = now - self._t0
        rate = f", {self._n / took:,.0f}/s" if took > 0 else ""
        return f"{self._desc}: {done} records, {took:.1f} s{rate}"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more records done."""
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain:
            self._n += n
            now = time.monotonic()
            if now - self._last >= (self.TTY_EVERY if self._tty else self.LOG_EVERY):
                self._last = now
                sys.stderr.write(("\r" if self._tty else "") + self._text(now)
                                 + ("" if self._tty else "\n"))
                sys.stderr.flush()

    def close(self) -> None:
        """End the display (the plain meter prints its final line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain:
            self._plain = False
            sys.stderr.write(("\r" if self._tty else "") + self._text(time.monotonic()) + "\n")
            sys.stderr.flush()

    def reset(self) -> None:
        """Start counting from 0 again (the dump is read a second time)."""
        if self._bar is not None:
            self._bar.reset()
        elif self._plain:
            self._n = 0

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _want_progress(args: argparse.Namespace, data_on_stdout: bool = False) -> bool:
    if args.progress is not None:
        return bool(args.progress)
    if data_on_stdout:
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _counted(items: Iterable[T], progress: _Progress, every: int = 1000) -> Iterator[T]:
    n = 0
    for item in items:
        yield item
        n += 1
        if n == every:
            progress.update(n)
            n = 0
    if n:
        progress.update(n)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


# ---------------------------------------------------------------------------
# Commands


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.db, "r") as db:
        stats: Dict[str, object] = {"path": os.path.abspath(args.db), "type": "dbm.shm",
                                    **db.stats()}
    stats["fast_path"] = _fastglue.ENABLED
    if args.json:
        _line(json.dumps(stats, indent=2, sort_keys=False, default=str))
        return EXIT_OK
    sizes = {"file_size", "top", "live_bytes", "free_bytes", "map_size", "page_size"}
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        shown = str(value)
        if key in sizes and isinstance(value, int) and value >= 1024:
            shown = f"{value} ({_human_size(value)})"
        elif key.endswith("_ns") and isinstance(value, int) and value:
            shown = f"{value} ({value / 1e6:.3f} ms)"
        elif key == "fast_path":
            # about 10x slower without it, and silent otherwise: say why
            shown = ("on" if value else
                     f"off ({_fastglue.OFF_REASON or 'reason unknown'}; "
                     "gets and sets take the slower Python path)")
        _line(f"{key + ':':<{width + 1}} {shown}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    kf, vf = args.key_format, args.value_format
    with _open(args.db, "r") as db:
        if args.values:
            items: Iterable[Tuple[bytes, bytes]] = db.iteritems()
            if args.sort:
                items = sorted(items)
            for key, value in items:
                _out(kf.display(key) + b"\t" + vf.display(value) + b"\n")
        else:
            keys = db.keys()
            if args.sort:
                keys.sort()
            for key in keys:
                _out(kf.display(key) + b"\n")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    kf, vf = args.key_format, args.value_format
    key = _parse(kf, args.key, "key")
    with _open(args.db, "r") as db:
        try:
            value = db[key]
        except KeyError:
            raise NotFound(f"key not found: {_show(kf, key)}") from None
    data = vf.display(value)
    _out(data if vf.name == "raw" else data + b"\n")
    return EXIT_OK


def _read_value_file(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as fp:
            return fp.read()
    except OSError as exc:
        raise UsageError(f"cannot read value file: {_os_message(exc)}") from None


def cmd_set(args: argparse.Namespace) -> int:
    kf, vf = args.key_format, args.value_format
    if args.value is None and args.value_file is None:
        raise UsageError("no value given: pass VALUE after KEY, or --value-file FILE "
                         "('-': standard input)")
    if args.value is not None and args.value_file is not None:
        raise UsageError("give the value either as VALUE or with --value-file, not both")
    key = _parse(kf, args.key, "key")
    if args.value_file is not None:
        value = _read_value_file(args.value_file)
    else:
        value = _parse(vf, args.value, "value")
    with _open(args.db, "c" if args.create else "w") as db:
        db[key] = value
    return EXIT_OK


def cmd_del(args: argparse.Namespace) -> int:
    kf = args.key_format
    keys = [_parse(kf, k, "key") for k in args.keys]
    missing = []
    with _open(args.db, "w") as db:
        for key in keys:
            try:
                del db[key]
            except KeyError:
                missing.append(key)
    if missing and not args.force:
        shown = ", ".join(_show(kf, k) for k in missing)
        raise NotFound(f"key not found: {shown}")
    return EXIT_OK


def cmd_count(args: argparse.Namespace) -> int:
    with _open(args.db, "r") as db:
        _line(str(len(db)))
    return EXIT_OK


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
                    _dumpfmt.write_dump(fp, db.iteritems(), filename=args.db, count=total,
                                        mode=st.st_mode & 0o777, uid=st.st_uid,
                                        gid=st.st_gid,
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _chunks(fp: Any, fmt: str, args: argparse.Namespace,
            exact: bool) -> Iterator[Tuple[Any, List[bytes], List[bytes]]]:
    """The dump's records as (reader, keys, values) chunks.

    A gdbm ASCII dump goes through ``FastDumpReader`` (bulk decoding; may
    raise ``NotRegular``) unless ``exact``; then, and for JSON lines, the
    record-by-record readers, grouped. ``reader`` is the object whose
    ``header`` holds the dump's header, or None."""
    if fmt == "ascii" and not exact:
        fast = _dumpfmt.FastDumpReader(fp)
        for keys, values in fast:
            yield fast, keys, values
        return
    reader: Any = None
    if fmt == "jsonl":
        items: Iterator[Tuple[bytes, bytes]] = _dumpfmt.read_jsonl(
            fp, key_format=args.key_format, value_format=args.value_format)
    else:
        reader = _dumpfmt.DumpReader(fp)
        items = iter(reader)
    while True:
        chunk = list(itertools.islice(items, _LOAD_CHUNK))
        if not chunk:
            return
        keys, values = map(list, zip(*chunk))
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
        self._seen: Set[bytes] = set()
        self.count = 0

    def add(self, keys: List[bytes], values: List[bytes]) -> None:
        """Store one chunk (one ``update`` call)."""
        chunk = dict(zip(keys, values))
        if not self._args.replace:
            self._seen.update(keys)
            if len(self._seen) != self.count + len(keys):
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
    """Load into an existing database: every record in one atomic batch
    (one ``update`` call), after the whole dump was read and checked."""

    def __init__(self, args: argparse.Namespace):
        self._args = args
        self._all: Dict[bytes, bytes] = {}
        self.count = 0
        self.header: Dict[str, str] = {}

    def reset(self) -> None:
        """Forget what was added."""
        self._all = {}
        self.count = 0

    def add(self, keys: List[bytes], values: List[bytes]) -> None:
        """Collect one chunk."""
        self._all.update(zip(keys, values))
        self.count += len(keys)

    def finish(self) -> None:
        """Check for duplicates and clashes, then write everything at once."""
        args = self._args
        duplicates = self.count - len(self._all)
        if duplicates and not args.replace:
            raise CLIError(f"{args.dump_file}: {duplicates} key(s) appear more than once "
                           "in the dump (use --replace to keep the last one)")
        with _open(args.db, "w") as db:
            if not args.replace and self._all:
                keys = list(self._all)
                clash = [k for i in range(0, len(keys), _LOAD_CHUNK)
                         for k, v in zip(keys[i:i + _LOAD_CHUNK],
                                         db.get_many(keys[i:i + _LOAD_CHUNK]))
                         if v is not None]
                if clash:
                    shown = ", ".join(_show(args.key_format, k) for k in heapq.nsmallest(3, clash))
                    more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
                    raise CLIError(f"{len(clash)} key(s) of the dump are already in "
                                   f"{args.db}: {shown}{more} (use --replace to "
                                   "overwrite them)")
            db.update(self._all)
            db.sync()

    def abort(self) -> None:
        """Nothing was written: drop the records."""
        self.reset()


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
            # The fast reader first; a dump it leaves alone is read again,
            # record by record. Nothing reaches the target before the end.
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


def cmd_convert(args: argparse.Namespace) -> int:
    """Copy another database into a dbm_shm one with ``dbm_shm.convert``."""
    if not os.path.exists(args.src) and not any(
            os.path.exists(args.src + ext) for ext in (".db", ".dat", ".pag", ".dir")):
        raise CLIError(f"{args.src}: No such file or directory")
    if os.path.exists(args.dst):
        if _same_file(args.src, args.dst):
            raise UsageError("SRC and DST are the same file")
        if not args.merge:
            raise UsageError(f"{args.dst} exists; pass --merge to copy into it "
                             "(keys of SRC overwrite those in DST)")
        if not _is_ours(args.dst):
            kind = _other_kind(args.dst)
            raise CLIError(f"{args.dst}: {f'a {kind} database' if kind else 'not a dbm_shm database'}"
                           "; refusing to copy into it")
    elif not os.path.isdir(os.path.dirname(os.path.abspath(args.dst))):
        raise CLIError(f"{args.dst}: directory "
                       f"{os.path.dirname(os.path.abspath(args.dst))} does not exist")
    done = 0
    with _Progress(_want_progress(args), None, "convert") as bar:
        def progress(n: int) -> None:
            nonlocal done
            bar.update(n - done)
            done = n

        try:
            convert(args.src, args.dst, flag="c" if args.merge else "n",
                    progress=progress)
        except OSError as exc:
            msg = _os_message(exc)
            raise CLIError(msg[len("convert: "):] if msg.startswith("convert: ") else msg) from None
    return EXIT_OK


def cmd_reorganize(args: argparse.Namespace) -> int:
    with _open(args.db, "w") as db:
        before = os.stat(args.db).st_size
        db.reorganize()
    after = os.stat(args.db).st_size
    _line(f"{args.db}: {_human_size(before)} -> {_human_size(after)}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    # 'r' writes nothing: a repair the store is owed (a writer died, or a
    # repair failed) is reported, not run. --repair opens it for writing,
    # and the check's writer lock runs the repair first.
    with _open(args.db, "w" if args.repair else "r") as db:
        problems = list(db.check())
        commit = db.commit_id()
        expected = len(db)
        seen = 0
        nbytes = 0
        with _Progress(_want_progress(args), expected, "check") as bar:
            try:
                for _key, value in _counted(db.iteritems(), bar):
                    seen += 1
                    nbytes += len(value)
            except OSError as exc:
                problems.append(f"scan failed after {seen} records: {_os_message(exc)}")
        if seen != expected and db.commit_id() == commit and not problems:
            problems.append(f"len() says {expected} records but a scan found {seen}")
    if problems:
        for p in problems:
            sys.stderr.write(f"{PROG}: check: {args.db}: {p}\n")
        _line(f"{args.db}: {len(problems)} problem(s) found")
        if not args.repair and any("repair is owed" in p or p.startswith("writer lock:") for p in problems):
            _line(f"{args.db}: a repair is owed; 'dbm-shm check --repair' runs it")
        return EXIT_DB_ERROR
    _line(f"{args.db}: ok, {seen} records, {_human_size(nbytes)} of values")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    new = args.new if args.new is not None else args.db + ".recovered"
    if not os.path.exists(args.db):
        raise CLIError(f"{args.db}: no such file")
    if os.path.exists(new):
        if _same_file(new, args.db):
            raise UsageError(f"{new}: the new store is the damaged one itself")
        if not args.force:
            raise UsageError(f"{new}: exists; refusing to overwrite it (pass --force)")
    r = salvage(args.db, new, force=args.force)
    _line(f"{args.db} -> {new}: {r.copied} records copied "
          f"(the header states {r.expected})")
    _line(f"  bad records skipped: {r.bad_records}")
    _line(f"  bad pages skipped:   {r.bad_pages}")
    _line(f"  chain cycles cut:    {r.cycles}")
    _line(f"  duplicates dropped:  {r.duplicates}")
    return EXIT_SALVAGE_LOSS if r.damaged else EXIT_OK


# -- watch


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


def cmd_shell(args: argparse.Namespace) -> int:
    """gdbmtool's everyday commands, interactive or from a script on stdin."""
    from . import _shell

    flag = "r" if args.read_only else ("c" if args.create else "w")
    with _open(args.db, flag) as db:
        return _shell.run(db, key_format=args.key_format, value_format=args.value_format)


def cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo

    try:
        _demo.run(seconds=args.seconds, readers=args.readers, symbols=args.symbols,
                  path=args.path, force=args.force)
    except _demo.DemoUsageError as exc:
        raise UsageError(str(exc)) from None
    except _demo.DemoFailed as exc:
        raise CLIError(str(exc)) from None
    return EXIT_OK


# ---------------------------------------------------------------------------
# Argument parsing


_FORMAT_HELP = ("one of auto (default: printable UTF-8 as is, other bytes as a b'...' "
                "literal), raw, utf-8, hex, json, pickle, or a struct format such as "
                "'<I' or '<dd' (fields comma-separated)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and manage dbm_shm databases (a gdbmtool for shared memory).",
        epilog="Exit status: 0 ok, 1 key not found (recover: records skipped), 2 usage error, "
               "3 database error. "
               "'%(prog)s COMMAND --help' describes each command.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s (dbm_shm {_version()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fmt = argparse.ArgumentParser(add_help=False)
    g = fmt.add_argument_group("data formats (like gdbmtool's 'define key/content')")
    g.add_argument("--key-format", type=_fmt_type, default=ValueFormat(), metavar="FMT",
                   help="how keys are shown and parsed: " + _FORMAT_HELP)
    g.add_argument("--value-format", type=_fmt_type, default=ValueFormat(), metavar="FMT",
                   help="how values are shown and parsed (same choices)")

    prog_opt = argparse.ArgumentParser(add_help=False)
    prog_opt.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="show progress on stderr (a tqdm bar if tqdm is installed, "
                               "else a plain meter); default: when stdout is a terminal")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            parents: Tuple[argparse.ArgumentParser, ...] = (), **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=list(parents), **kw)
        p.set_defaults(func=func)
        return p

    p = add("info", cmd_info, "show the database's statistics")
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("--json", action="store_true", help="print them as JSON")

    p = add("list", cmd_list, "list the keys (with -v, the values too)", (fmt,),
            aliases=["keys"])
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("-v", "--values", action="store_true",
                   help="print 'KEY<TAB>VALUE' lines")
    p.add_argument("--sort", action="store_true", help="sort by the keys' bytes")

    p = add("get", cmd_get, "print the value of a key (exit 1 if it is missing)", (fmt,))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("key", metavar="KEY")

    p = add("set", cmd_set, "store a value under a key", (fmt,))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", nargs="?")
    p.add_argument("--value-file", metavar="FILE",
                   help="take the value's bytes from FILE ('-': standard input)")
    p.add_argument("-c", "--create", action="store_true",
                   help="create the database if it does not exist")

    p = add("del", cmd_del, "delete keys (exit 1 if one is missing)", (fmt,),
            aliases=["delete"])
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("keys", metavar="KEY", nargs="+")
    p.add_argument("-f", "--force", action="store_true",
                   help="a missing key is not an error")

    p = add("count", cmd_count, "print the number of keys")
    p.add_argument("db", metavar="DB_FILE")

    p = add("dump", cmd_dump,
            "write every record to a dump file (GNU gdbm ASCII dump, loadable by "
            "gdbm_load, or JSON lines)", (fmt, prog_opt))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("dump_file", metavar="DUMP_FILE", nargs="?",
                   help="output file (default: standard output)")
    p.add_argument("--format", choices=("ascii", "jsonl"), default="ascii",
                   help="ascii: gdbm_dump's format (default); jsonl: one JSON object a line")
    p.add_argument("--force", action="store_true",
                   help="overwrite DUMP_FILE even if it is a database file")

    p = add("load", cmd_load,
            "add the records of a dump (gdbm ASCII dump or JSON lines) to a database, "
            "creating it if needed", (fmt, prog_opt))
    p.add_argument("dump_file", metavar="DUMP_FILE", help="the dump ('-': standard input)")
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("--format", choices=("auto", "ascii", "jsonl"), default="auto",
                   help="the dump's format (default: recognise it)")
    p.add_argument("--replace", action=argparse.BooleanOptionalAction, default=False,
                   help="overwrite keys already in the database (default: refuse to load "
                        "a dump that has any, and change nothing)")
    p.add_argument("--mode", metavar="OCTAL",
                   help="permissions of a new database file (default: the dump's, or 666 "
                        "less the umask)")

    p = add("convert", cmd_convert,
            "copy any database the stdlib dbm can open (dbm.gnu, dbm.ndbm, dbm.dumb, "
            "dbm.sqlite3, ...) into a new dbm_shm database", (prog_opt,))
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--merge", action="store_true",
                   help="DST may exist: add SRC's records to it, overwriting equal keys")

    p = add("reorganize", cmd_reorganize,
            "compact the file, giving the space of deleted values back to the file system")
    p.add_argument("db", metavar="DB_FILE")

    p = add("recover", cmd_recover,
            "copy every record that can still be read from a damaged database into a new "
            "one, as gdbm's recover (exit 1 if some could not be read)")
    p.add_argument("db", metavar="DB_FILE", help="the damaged database (only read)")
    p.add_argument("new", metavar="NEW", nargs="?",
                   help="the new database (default: DB_FILE.recovered)")
    p.add_argument("--force", action="store_true", help="replace NEW if it exists")

    p = add("check", cmd_check,
            "verify the file's structures and read every record (exit 3 on problems)",
            (prog_opt,))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("--repair", action="store_true",
                   help="open the file for writing, so that a repair it is owed (a writer "
                        "died) runs first; without it, check writes nothing and reports it")

    p = add("watch", cmd_watch, "print keys as other processes change them", (fmt,))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("--prefix", metavar="KEY_PREFIX",
                   help="only keys starting with this (parsed with --key-format)")
    p.add_argument("--initial", action="store_true",
                   help="first print every key present now, as 'has KEY = VALUE' "
                        "lines (changes are 'set' and 'del' lines)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="start each line with the time")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop after SECONDS (default: run until interrupted)")
    p.add_argument("--max-events", type=int, metavar="N",
                   help="stop after N changes")

    p = add("shell", cmd_shell,
            "an interactive shell like gdbmtool's (fetch, store, delete, list, count, "
            "first/next, status, reorganize, export/import, help, quit); reads a script "
            "from standard input when it is not a terminal", (fmt,))
    p.add_argument("db", metavar="DB_FILE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-c", "--create", action="store_true",
                   help="create the database if it does not exist")
    g.add_argument("-r", "--read-only", action="store_true",
                   help="open it read-only (store, delete, import, reorganize fail)")

    p = add("demo", cmd_demo,
            "run one writer and N reader processes on one store and show their throughput")
    p.add_argument("--seconds", type=float, default=3.0, help="how long (default 3)")
    p.add_argument("--readers", type=int, default=3, help="reader processes (default 3)")
    p.add_argument("--symbols", type=int, default=100,
                   help="number of symbols with prices (default 100)")
    p.add_argument("--path", metavar="DB_FILE",
                   help="store file (default: a temporary file under /dev/shm)")
    p.add_argument("--force", action="store_true", help="replace --path if it exists")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # 'set DB KEY --value-format hex 6869' and 'set DB KEY -x': argparse
        # leaves a value after an option, or one that starts with '-', over.
        if args.command == "set" and args.value is None and len(extra) == 1:
            args.value = extra[0]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command = args.command
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except CLIError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: {command}: {exc}\n")
        return exc.exit_code
    except DumpError as exc:
        sys.stderr.write(f"{PROG}: {command}: {exc}\n")
        return EXIT_DB_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: {command}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (dbm-shm list x | head).
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # dbm_shm.error is an OSError too
        sys.stderr.write(f"{PROG}: {command}: {_os_message(exc)}\n")
        return EXIT_DB_ERROR
