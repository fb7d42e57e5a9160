"""The commands that read a database: ``info``, ``list``, ``get``, ``count``,
``check`` and ``recover`` (which reads a damaged one and writes a new one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Iterable, Tuple, cast

from .. import _fastglue
from .._salvage import salvage
from ._common import (
    PROG, EXIT_OK, EXIT_DB_ERROR, EXIT_SALVAGE_LOSS, CLIError, UsageError, NotFound, _out,
    _line, _os_message, _human_size, _open, _parse, _show, _Progress, _want_progress,
    _counted, _same_file,
)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.db, "r") as db:
        stats: Dict[str, object] = {"path": os.path.abspath(args.db), "type": "dbm.shm",
                                    **db.stats()}
    stats["fast_path"] = _fastglue.ENABLED
    cap = int(cast(int, stats["max_bytes"]))
    if cap or stats["evictions"] or stats["expired"]:
        # A cache's figures (dbm_shm.Cache): the cap and how full it is.
        stats["cache"] = (f"{stats['live_bytes']} of {cap} bytes ({100 * int(cast(int, stats['live_bytes'])) / cap:.1f}%)"
                          if cap else "no cap") + \
            f", {stats['evictions']} evicted, {stats['expired']} expired dropped"
    if args.json:
        _line(json.dumps(stats, indent=2, sort_keys=False, default=str))
        return EXIT_OK
    sizes = {"file_size", "top", "live_bytes", "free_bytes", "map_size", "page_size", "max_bytes"}
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


def cmd_count(args: argparse.Namespace) -> int:
    with _open(args.db, "r") as db:
        _line(str(len(db)))
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
