"""``dbm-shm shell DB``: an interactive shell in the manner of gdbmtool.

Commands (arguments are split as a POSIX shell would, with ``shlex``, so
``store "a key" 'a value'`` works)::

    fetch KEY              print KEY's value
    store KEY VALUE        set KEY to VALUE
    delete KEY             delete KEY
    list                   print every KEY<TAB>VALUE
    count                  print the number of keys
    first                  print the first key and its value (iteration order)
    next [KEY]             print the key after the last one shown (or after KEY)
    status                 print the store's statistics
    reorganize             compact the file
    export FILE [truncate] write a gdbm ASCII dump (truncate: replace FILE)
    import FILE [replace]  load a gdbm ASCII dump, all or nothing
                           (replace: overwrite keys that exist)
    help                   this list
    quit                   leave (also end of input)

On a terminal it prompts, edits lines and keeps a history with
``readline`` when Python has it (the file ``~/.dbm_shm_history``, or
``$DBM_SHM_HISTORY``); an error is reported and the session goes on. Driven
by a script on standard input it prints no prompt, writes no history, and
exits with status 3 if any command failed (after running them all).
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from . import _dumpfmt
from ._valuefmt import ValueFormat

__all__ = ["HISTORY_FILE", "Shell", "run"]

#: The history file in the user's home (``$DBM_SHM_HISTORY`` overrides it).
HISTORY_FILE = "~/.dbm_shm_history"
PROMPT = "dbm-shm> "


class ShellError(Exception):
    """A command failed; the message is shown and the shell goes on."""


#: (name, arguments, what it does) of every command, in the order of 'help'.
COMMANDS = (
    ("fetch", "KEY", "print KEY's value"),
    ("store", "KEY VALUE", "set KEY to VALUE"),
    ("delete", "KEY", "delete KEY"),
    ("list", "", "print every KEY<TAB>VALUE"),
    ("count", "", "print the number of keys"),
    ("first", "", "print the first key and its value"),
    ("next", "[KEY]", "print the key after the last shown (or KEY)"),
    ("status", "", "print the store's statistics"),
    ("reorganize", "", "compact the file"),
    ("export", "FILE [truncate]", "write a gdbm ASCII dump"),
    ("import", "FILE [replace]", "load a gdbm ASCII dump, all or nothing"),
    ("help", "", "list the commands"),
    ("quit", "", "leave the shell"),
)


class Shell:
    """The commands over one open database ``db``; output goes to ``out``."""

    def __init__(self, db: Any, out: TextIO, key_format: Optional[ValueFormat] = None,
                 value_format: Optional[ValueFormat] = None):
        self.db = db
        self.out = out
        self.kf = key_format or ValueFormat()
        self.vf = value_format or ValueFormat()
        self._last: Optional[bytes] = None  # the key 'first'/'next' showed last
        #: name -> (method, arguments, what it does), in the order of 'help'
        self.commands: Dict[str, Tuple[Callable[[List[str]], None], str, str]] = {
            name: (getattr(self, "do_" + name), synopsis, text)
            for name, synopsis, text in COMMANDS}

    # -- helpers
    def _print(self, text: str) -> None:
        self.out.write(text + "\n")

    def _show(self, fmt: ValueFormat, data: bytes) -> str:
        return fmt.display(data).decode("utf-8", "backslashreplace")

    def _key(self, arg: str) -> bytes:
        try:
            return self.kf.parse(arg)
        except ValueError as exc:
            raise ShellError(f"bad key {arg!r}: {exc}") from None

    def _usage(self, name: str) -> ShellError:
        return ShellError(f"usage: {name} {self.commands[name][1]}".rstrip())

    def _nargs(self, args: List[str], low: int, high: int, name: str) -> None:
        if not low <= len(args) <= high:
            raise self._usage(name)

    # -- commands
    def do_fetch(self, args: List[str]) -> None:
        """fetch KEY"""
        self._nargs(args, 1, 1, "fetch")
        value = self.db.get(self._key(args[0]))
        if value is None:
            raise ShellError(f"no such key: {args[0]}")
        self._print(self._show(self.vf, value))

    def do_store(self, args: List[str]) -> None:
        """store KEY VALUE"""
        self._nargs(args, 2, 2, "store")
        try:
            value = self.vf.parse(args[1])
        except ValueError as exc:
            raise ShellError(f"bad value {args[1]!r}: {exc}") from None
        self.db[self._key(args[0])] = value

    def do_delete(self, args: List[str]) -> None:
        """delete KEY"""
        self._nargs(args, 1, 1, "delete")
        try:
            del self.db[self._key(args[0])]
        except KeyError:
            raise ShellError(f"no such key: {args[0]}") from None

    def do_list(self, args: List[str]) -> None:
        """list"""
        self._nargs(args, 0, 0, "list")
        for key, value in sorted(self.db.iteritems()):
            self._print(f"{self._show(self.kf, key)}\t{self._show(self.vf, value)}")

    def do_count(self, args: List[str]) -> None:
        """count"""
        self._nargs(args, 0, 0, "count")
        self._print(str(len(self.db)))

    def _step(self, key: Optional[bytes]) -> None:
        if key is None:
            self._last = None
            raise ShellError("no more keys")
        self._last = key
        value = self.db.get(key)
        shown = "" if value is None else "\t" + self._show(self.vf, value)
        self._print(self._show(self.kf, key) + shown)

    def do_first(self, args: List[str]) -> None:
        """first"""
        self._nargs(args, 0, 0, "first")
        self._step(self.db.firstkey())

    def do_next(self, args: List[str]) -> None:
        """next [KEY]"""
        self._nargs(args, 0, 1, "next")
        after = self._key(args[0]) if args else self._last
        if after is None:
            raise ShellError("no current key: use 'first' (or 'next KEY')")
        self._step(self.db.nextkey(after))

    def do_status(self, args: List[str]) -> None:
        """status"""
        self._nargs(args, 0, 0, "status")
        self._print(f"file: {os.path.abspath(os.fsdecode(self.db.filename))}")
        for name, value in self.db.stats().items():
            self._print(f"{name}: {value}")

    def do_reorganize(self, args: List[str]) -> None:
        """reorganize"""
        self._nargs(args, 0, 0, "reorganize")
        self.db.reorganize()

    def do_export(self, args: List[str]) -> None:
        """export FILE [truncate]"""
        if not args or args[1:] not in ([], ["truncate"]):
            raise self._usage("export")
        path = args[0]
        if os.path.exists(path) and args[1:] != ["truncate"]:
            raise ShellError(f"{path} exists (use 'export {path} truncate' to replace it)")
        try:
            with open(path, "wb") as fp:
                n = _dumpfmt.write_dump(fp, self.db.iteritems(),
                                        filename=os.fsdecode(self.db.filename))
        except OSError as exc:
            raise ShellError(f"{path}: {exc.strerror or exc}") from None
        self._print(f"{n} records exported to {path}")

    def do_import(self, args: List[str]) -> None:
        """import FILE [replace]"""
        if not args or args[1:] not in ([], ["replace"]):
            raise self._usage("import")
        path = args[0]
        try:
            with open(path, "rb") as fp:
                records = list(_dumpfmt.read_dump(fp))
        except OSError as exc:
            raise ShellError(f"{path}: {exc.strerror or exc}") from None
        except _dumpfmt.DumpError as exc:
            raise ShellError(f"{path}: {exc}; nothing imported") from None
        data = dict(records)
        if args[1:] != ["replace"]:
            keys = list(data)
            there = [k for k, v in zip(keys, self.db.get_many(keys)) if v is not None]
            if there or len(data) != len(records):
                raise ShellError(f"{path}: {len(there) or 'some'} key(s) exist already or "
                                 "repeat; nothing imported (use 'import FILE replace')")
        self.db.update(data)
        self._print(f"{len(records)} records imported from {path}")

    def do_help(self, args: List[str]) -> None:
        """help"""
        for name, (_fn, synopsis, text) in self.commands.items():
            self._print(f"{name + ' ' + synopsis:<23}{text}")

    def do_quit(self, args: List[str]) -> None:
        """quit"""
        raise EOFError

    # -- the loop
    def execute(self, line: str) -> None:
        """Run one command line; raises ShellError for a failed command and
        EOFError for quit."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ShellError(f"cannot parse the line: {exc}") from None
        if not words:
            return
        name, args = words[0], words[1:]
        entry = self.commands.get(name)
        if entry is None:
            matches = [c for c in self.commands if c.startswith(name)]
            if len(matches) != 1:
                raise ShellError(f"unknown command {name!r} (type 'help')")
            entry = self.commands[matches[0]]
        try:
            entry[0](args)
        except OSError as exc:  # dbm_shm.error too: the session goes on
            raise ShellError(str(exc) or type(exc).__name__) from None


def _readline(history: str) -> Any:
    """readline set up with the history file, or None without readline."""
    try:
        import readline
    except ImportError:
        return None
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(1000)
    return readline


def run(db: Any, *, stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None, interactive: Optional[bool] = None,
        key_format: Optional[ValueFormat] = None,
        value_format: Optional[ValueFormat] = None) -> int:
    """Run the shell over ``db`` until ``quit`` or end of input.

    ``interactive`` defaults to whether ``stdin`` is a terminal. Returns
    0, or 3 when a command of a script failed."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if interactive is None:
        try:
            interactive = stdin.isatty()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            interactive = False
    shell = Shell(db, stdout, key_format, value_format)
    failed = 0
    lineno = 0
    rl = None
    history = os.path.expanduser(os.environ.get("DBM_SHM_HISTORY", HISTORY_FILE))
    if interactive:
        if stdin is sys.stdin:
            rl = _readline(history)
        stdout.write(f"dbm-shm shell on {os.fsdecode(db.filename)}; "
                     "type 'help' for the commands, 'quit' to leave.\n")
    try:
        while True:
            try:
                if interactive and stdin is sys.stdin:
                    line = input(PROMPT)
                else:
                    if interactive:
                        stdout.write(PROMPT)
                        stdout.flush()
                    line = stdin.readline()
                    if not line:
                        raise EOFError
            except KeyboardInterrupt:
                if not interactive:
                    raise
                stdout.write("\n")
                continue
            lineno += 1
            try:
                shell.execute(line)
            except ShellError as exc:
                failed += 1
                where = "" if interactive else f"line {lineno}: "
                stdout.flush()
                stderr.write(f"dbm-shm: shell: {where}{exc}\n")
            stdout.flush()
    except EOFError:
        if interactive:
            stdout.write("\n")
    finally:
        if rl is not None:
            with contextlib.suppress(OSError):
                rl.write_history_file(history)
    return 3 if failed and not interactive else 0
