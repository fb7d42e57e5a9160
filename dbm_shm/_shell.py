"""``dbm-shm shell DB``: an interactive shell in the manner of gdbmtool.

Built on the standard library's :class:`cmd.Cmd`, which runs the loop,
the prompt, ``help COMMAND`` and Tab completion. Commands (arguments are
split as a POSIX shell would, with ``shlex``, so ``store "a key" 'a value'``
works)::

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
    help [COMMAND], ?      this list, or what COMMAND does
    quit                   leave (also end of input)

Unique prefixes of the names work (``fe`` for ``fetch``). Tab completes the
command names, the keys of the store after ``fetch``, ``store``, ``delete``
and ``next``, and ``truncate``/``replace`` after ``export``/``import FILE``.

On a terminal it prompts, edits lines and keeps a history with
``readline`` when Python has it (the file ``~/.dbm_shm_history``, or
``$DBM_SHM_HISTORY``; an unreadable or unwritable history file is skipped
silently); an error is reported and the session goes on. Driven by a script
on standard input it prints no prompt, writes no history, and exits with
status 3 if any command failed (after running them all).
"""

from __future__ import annotations

import cmd
import contextlib
import io
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, TextIO, Tuple

from . import _dumpfmt
from ._valuefmt import ValueFormat

__all__ = ["HISTORY_FILE", "Shell", "ShellError", "run"]

#: The history file in the user's home (``$DBM_SHM_HISTORY`` overrides it).
HISTORY_FILE = "~/.dbm_shm_history"
PROMPT = "dbm-shm> "
#: Lines kept in the history file.
HISTORY_LENGTH = 1000
#: At most this many keys are offered by one completion.
MAX_KEY_COMPLETIONS = 1000


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
    ("help", "[COMMAND]", "list the commands, or describe one (also '?')"),
    ("quit", "", "leave the shell"),
)

#: The commands whose first argument is a key of the store (Tab completes it).
_KEY_COMMANDS = ("fetch", "store", "delete", "next")
#: The word that may follow FILE, per command.
_FLAG_WORDS = {"export": "truncate", "import": "replace"}


class Shell(cmd.Cmd):
    """The commands over one open database ``db``; output goes to ``out``.

    ``interactive``: prompt, report errors without a line number, never
    fail the exit status. ``stdin``: where a non-terminal session reads its
    lines (the terminal's go through ``input()`` and readline)."""

    prompt = PROMPT

    def __init__(self, db: Any, out: TextIO, key_format: Optional[ValueFormat] = None,
                 value_format: Optional[ValueFormat] = None, *,
                 stdin: Optional[TextIO] = None, stderr: Optional[TextIO] = None,
                 interactive: bool = False, use_rawinput: bool = False):
        super().__init__(stdin=stdin, stdout=out)
        self.db = db
        self.out = out
        self.err = stderr if stderr is not None else sys.stderr
        self.kf = key_format or ValueFormat()
        self.vf = value_format or ValueFormat()
        self.interactive = interactive
        self.use_rawinput = use_rawinput
        if not interactive:
            self.prompt = ""
        self.failed = 0  # commands that failed
        self.lineno = 0  # lines read
        self._last: Optional[bytes] = None  # the key 'first'/'next' showed last
        #: name -> (arguments, what it does), in the order of 'help'
        self.commands: Dict[str, Tuple[str, str]] = {
            name: (synopsis, text) for name, synopsis, text in COMMANDS}

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
        return ShellError(f"usage: {name} {self.commands[name][0]}".rstrip())

    def _args(self, arg: str, low: int, high: int, name: str) -> List[str]:
        """``arg`` split into words, which must number ``low`` to ``high``."""
        try:
            args = shlex.split(arg, comments=True)
        except ValueError as exc:
            raise ShellError(f"cannot parse the line: {exc}") from None
        if not low <= len(args) <= high:
            raise self._usage(name)
        return args

    def resolve(self, name: str) -> Optional[str]:
        """The command ``name`` names, itself or as a unique prefix; None."""
        if name in self.commands:
            return name
        matches = [c for c in self.commands if c.startswith(name)]
        return matches[0] if len(matches) == 1 else None

    # -- commands (cmd.Cmd calls do_NAME with the rest of the line; 'help
    # NAME' prints its docstring)
    def do_fetch(self, arg: str) -> None:
        """fetch KEY: print the value of KEY (shown with --value-format)."""
        args = self._args(arg, 1, 1, "fetch")
        value = self.db.get(self._key(args[0]))
        if value is None:
            raise ShellError(f"no such key: {args[0]}")
        self._print(self._show(self.vf, value))

    def do_store(self, arg: str) -> None:
        """store KEY VALUE: set KEY to VALUE (parsed with --value-format)."""
        args = self._args(arg, 2, 2, "store")
        try:
            value = self.vf.parse(args[1])
        except ValueError as exc:
            raise ShellError(f"bad value {args[1]!r}: {exc}") from None
        self.db[self._key(args[0])] = value

    def do_delete(self, arg: str) -> None:
        """delete KEY: delete KEY (an error if it is missing)."""
        args = self._args(arg, 1, 1, "delete")
        try:
            del self.db[self._key(args[0])]
        except KeyError:
            raise ShellError(f"no such key: {args[0]}") from None

    def do_list(self, arg: str) -> None:
        """list: print every KEY<TAB>VALUE, sorted by the keys' bytes."""
        self._args(arg, 0, 0, "list")
        for key, value in sorted(self.db.iteritems()):
            self._print(f"{self._show(self.kf, key)}\t{self._show(self.vf, value)}")

    def do_count(self, arg: str) -> None:
        """count: print the number of keys."""
        self._args(arg, 0, 0, "count")
        self._print(str(len(self.db)))

    def _step(self, key: Optional[bytes]) -> None:
        if key is None:
            self._last = None
            raise ShellError("no more keys")
        self._last = key
        value = self.db.get(key)
        shown = "" if value is None else "\t" + self._show(self.vf, value)
        self._print(self._show(self.kf, key) + shown)

    def do_first(self, arg: str) -> None:
        """first: print the first key in the store's order, with its value."""
        self._args(arg, 0, 0, "first")
        self._step(self.db.firstkey())

    def do_next(self, arg: str) -> None:
        """next [KEY]: print the key after the last one shown (or after KEY)."""
        args = self._args(arg, 0, 1, "next")
        after = self._key(args[0]) if args else self._last
        if after is None:
            raise ShellError("no current key: use 'first' (or 'next KEY')")
        self._step(self.db.nextkey(after))

    def do_status(self, arg: str) -> None:
        """status: print the file's name and the store's statistics."""
        self._args(arg, 0, 0, "status")
        self._print(f"file: {os.path.abspath(os.fsdecode(self.db.filename))}")
        for name, value in self.db.stats().items():
            self._print(f"{name}: {value}")

    def do_reorganize(self, arg: str) -> None:
        """reorganize: compact the file."""
        self._args(arg, 0, 0, "reorganize")
        self.db.reorganize()

    def do_export(self, arg: str) -> None:
        """export FILE [truncate]: write a gdbm ASCII dump (truncate: replace FILE)."""
        args = self._args(arg, 1, 2, "export")
        if args[1:] not in ([], ["truncate"]):
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

    def do_import(self, arg: str) -> None:
        """import FILE [replace]: load a gdbm ASCII dump, all or nothing (replace: overwrite)."""
        args = self._args(arg, 1, 2, "import")
        if args[1:] not in ([], ["replace"]):
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

    def do_help(self, arg: str) -> None:
        """help [COMMAND]: list the commands (as '?' does), or describe COMMAND."""
        args = self._args(arg, 0, 1, "help")
        if not args:
            for name, (synopsis, text) in self.commands.items():
                self._print(f"{name + ' ' + synopsis:<23}{text}")
            return
        topic = self.resolve(args[0])
        if topic is None:
            raise ShellError(f"unknown command {args[0]!r} (type 'help')")
        super().do_help(topic)  # the stdlib prints do_NAME's docstring

    def do_quit(self, arg: str) -> bool:
        """quit: leave the shell (end of input does too)."""
        return True

    # -- the loop: cmd.Cmd reads the lines, these run them
    def execute(self, line: str) -> bool:
        """Run one command line; True for quit (or end of input). Raises
        ShellError for a failed command."""
        if line == "EOF":  # what cmd.Cmd reads at the end of input
            if self.interactive:
                self.out.write("\n")
            return True
        stripped = line.lstrip()
        if stripped.startswith("?"):  # gdbmtool's '?': the command list
            line = "help " + stripped[1:]
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ShellError(f"cannot parse the line: {exc}") from None
        if not words:
            return False
        name = self.resolve(words[0])
        if name is None:
            raise ShellError(f"unknown command {words[0]!r} (type 'help')")
        method = getattr(self, "do_" + name)
        try:
            return bool(method(" ".join(shlex.quote(w) for w in words[1:])))
        except OSError as exc:  # dbm_shm.error too: the session goes on
            raise ShellError(str(exc) or type(exc).__name__) from None

    def onecmd(self, line: str) -> bool:
        """Run one line; report a failure on stderr and go on. True to stop."""
        self.lineno += 1
        try:
            stop = self.execute(line)
        except ShellError as exc:
            self.failed += 1
            where = "" if self.interactive else f"line {self.lineno}: "
            self.out.flush()
            self.err.write(f"dbm-shm: shell: {where}{exc}\n")
            self.err.flush()
            stop = False
        self.out.flush()
        return stop

    def emptyline(self) -> bool:
        """An empty line does nothing (cmd.Cmd would repeat the last command)."""
        return False

    # -- completion (readline's Tab; cmd.Cmd.complete dispatches here)
    def completenames(self, text: str, *ignored: Any) -> List[str]:
        """The command names starting with ``text``."""
        return [name for name in self.commands if name.startswith(text)]

    def complete_keys(self, text: str) -> List[str]:
        """The keys of the store that start with ``text``, as a line spells
        them (shown with the key format, quoted where shlex needs it; an
        opening quote in ``text`` is ignored): sorted, at most
        :data:`MAX_KEY_COMPLETIONS`."""
        prefix = text.lstrip("'\"")
        found = sorted(shown for shown in (self._show(self.kf, key) for key in self.db.keys())
                       if shown.startswith(prefix))
        return [shlex.quote(shown) for shown in found[:MAX_KEY_COMPLETIONS]]

    def _complete_args(self, name: str, text: str, line: str, begidx: int) -> List[str]:
        try:
            before = shlex.split(line[:begidx], comments=True)
        except ValueError:
            return []
        index = len(before) - 1  # the argument being completed: 0 is the first
        if name in _KEY_COMMANDS and index == 0:
            return self.complete_keys(text)
        if name in _FLAG_WORDS and index == 1:
            word = _FLAG_WORDS[name]
            return [word] if word.startswith(text) else []
        if name == "help" and index == 0:
            return self.completenames(text)
        return []

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """The arguments of the command the line starts with (also when it
        is given as a prefix: ``fe k<Tab>``)."""
        try:
            words = shlex.split(line[:begidx], comments=True)
        except ValueError:
            return []
        name = self.resolve(words[0]) if words else None
        return [] if name is None else self._complete_args(name, text, line, begidx)

    def complete_fetch(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """Keys."""
        return self._complete_args("fetch", text, line, begidx)

    def complete_store(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """Keys (the first argument)."""
        return self._complete_args("store", text, line, begidx)

    def complete_delete(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """Keys."""
        return self._complete_args("delete", text, line, begidx)

    def complete_next(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """Keys."""
        return self._complete_args("next", text, line, begidx)

    def complete_export(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """'truncate' after FILE."""
        return self._complete_args("export", text, line, begidx)

    def complete_import(self, text: str, line: str, begidx: int, endidx: int) -> List[str]:
        """'replace' after FILE."""
        return self._complete_args("import", text, line, begidx)

    def complete_help(self, *args: Any) -> List[str]:
        """Command names."""
        text = str(args[0]) if args else ""
        return self.completenames(text)


def _readline(history: str) -> Any:
    """readline set up with the history file, or None without readline."""
    try:
        import readline
    except ImportError:
        return None
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(HISTORY_LENGTH)
    # Keys may hold '-', '.', '/', ':'...: split words on whitespace only.
    with contextlib.suppress(Exception):
        readline.set_completer_delims(" \t\n")
    return readline


def _save_history(rl: Any, history: str) -> None:
    """Write the history; an unwritable file or home is no error."""
    with contextlib.suppress(OSError):
        rl.write_history_file(history)


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
    terminal = interactive and stdin is sys.stdin
    shell = Shell(db, stdout, key_format, value_format, stdin=stdin, stderr=stderr,
                  interactive=interactive, use_rawinput=terminal)
    rl = None
    history = os.path.expanduser(os.environ.get("DBM_SHM_HISTORY", HISTORY_FILE))
    intro: Optional[str] = None
    if interactive:
        if terminal:
            rl = _readline(history)
        intro = (f"dbm-shm shell on {os.fsdecode(db.filename)}; type 'help' or '?' for "
                 "the commands, 'quit' to leave.")
    try:
        while True:
            try:
                shell.cmdloop(intro)
                break
            except KeyboardInterrupt:
                if not interactive:
                    raise
                stdout.write("\n")
                intro = ""
    finally:
        if rl is not None:
            _save_history(rl, history)
    return 3 if shell.failed and not interactive else 0
