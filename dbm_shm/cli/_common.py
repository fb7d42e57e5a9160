"""What the commands of ``dbm-shm`` share: exit statuses, errors, output,
opening a database (every failure a :class:`CLIError` with a hint), the
key/value formats on the command line and the progress display."""

from __future__ import annotations

import argparse
import dbm
import importlib
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TypeVar

from .._db import Database
from .._db import open as open_db
from .._registry import whichdb
from .._valuefmt import ValueFormat
from .._valuefmt import parse_value_format


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


def _version() -> str:
    from .. import __version__  # the package's, set after its imports

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
