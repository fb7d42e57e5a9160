"""The commands that change a database: ``set``, ``del``, ``reorganize``,
``convert``, ``upgrade``, ``shell``, and the ``demo``."""

from __future__ import annotations

import argparse
import os
import sys

from .._compat import convert
from ._common import (
    EXIT_OK, CLIError, UsageError, NotFound, _line, _os_message, _human_size, _other_kind,
    _is_ours, _open, _parse, _show, _Progress, _want_progress, _same_file,
)


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


def cmd_incr(args: argparse.Namespace) -> int:
    """``incr DB KEY [DELTA]``: add DELTA (default 1) to the counter at KEY
    atomically across processes and print the new value (the value is
    stored as ASCII decimal bytes; an absent key counts as 0)."""
    key = _parse(args.key_format, args.key, "key")
    with _open(args.db, "c" if args.create else "w") as db:
        print(db.incr(key, args.delta))
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


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Convert a format-1 file in place (dbm_shm/_upgrade.py)."""
    from .._upgrade import upgrade

    path = args.db
    if not os.path.lexists(path):
        raise CLIError(f"{path}: No such file or directory")
    if os.path.isdir(path):
        raise CLIError(f"{path}: Is a directory")
    kind = None if _is_ours(path) else _other_kind(path)
    if kind:
        raise CLIError(f"{path}: a {kind} database, not a dbm_shm file; 'dbm-shm convert' "
                       "copies it into a new dbm_shm file")
    result = upgrade(path)
    if not result.converted:
        _line(f"{path}: already file format {result.old_format}, the current one; "
              "nothing to do")
    else:
        _line(f"{path}: converted {result.records} records from file format "
              f"{result.old_format} to {result.new_format}")
    return EXIT_OK


def cmd_shell(args: argparse.Namespace) -> int:
    """gdbmtool's everyday commands, interactive or from a script on stdin."""
    from .. import _shell

    flag = "r" if args.read_only else ("c" if args.create else "w")
    with _open(args.db, flag) as db:
        return _shell.run(db, key_format=args.key_format, value_format=args.value_format)


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import _demo

    try:
        _demo.run(seconds=args.seconds, readers=args.readers, symbols=args.symbols,
                  path=args.path, force=args.force)
    except _demo.DemoUsageError as exc:
        raise UsageError(str(exc)) from None
    except _demo.DemoFailed as exc:
        raise CLIError(str(exc)) from None
    return EXIT_OK
