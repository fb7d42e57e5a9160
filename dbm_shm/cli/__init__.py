"""dbm-shm: the command-line tool for dbm_shm databases.

A gdbmtool for shared-memory databases: inspect, edit, dump, load, convert,
check and watch a store, and a demo of several processes sharing one.

Run ``dbm-shm --help`` or ``python -m dbm_shm --help``; each command has its
own ``--help``. docs/cli.md has an example for every command.

The package: this module holds the argument parser and ``main``; the
commands are in ``read``, ``write``, ``dump`` and ``watch``, what they
share in ``_common``.

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
import os
import sys
from typing import Any, Callable, List, Optional, Tuple

from .._dumpfmt import DumpError
from .._valuefmt import ValueFormat
from ._common import (
    PROG, EXIT_DB_ERROR, CLIError, _version, _os_message, _fmt_type,
)
from .read import cmd_info, cmd_list, cmd_get, cmd_count, cmd_check, cmd_recover
from .write import (
    cmd_set, cmd_del, cmd_incr, cmd_convert, cmd_reorganize, cmd_upgrade, cmd_shell, cmd_demo,
)
from .dump import cmd_dump, cmd_load
from .watch import cmd_watch

__all__ = ["main", "build_parser"]


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

    p = add("incr", cmd_incr, "add DELTA (default 1) to the counter at KEY atomically and print "
            "the new value (ASCII decimal; an absent key counts as 0)", (fmt,))
    p.add_argument("db", metavar="DB_FILE")
    p.add_argument("key", metavar="KEY")
    p.add_argument("delta", metavar="DELTA", nargs="?", type=int, default=1,
                   help="an integer, negative to subtract (default 1)")
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

    p = add("upgrade", cmd_upgrade,
            "convert a database file written by an older dbm_shm (file format 1) to "
            "this version's format, in place; no process may have it open meanwhile")
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
        msg = _os_message(exc)
        # The library's messages start with the operation ("incr: ..."):
        # once is enough where it is the command's name.
        if msg.startswith(f"{command}: "):
            msg = msg[len(command) + 2:]
        sys.stderr.write(f"{PROG}: {command}: {msg}\n")
        return EXIT_DB_ERROR
