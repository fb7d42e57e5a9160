#!/usr/bin/env python3
"""The whole comparison in one run: a Markdown page and PNG plots.

Runs every scenario against dbm_shm and every peer installed in this
interpreter (dbm.gnu, lmdb, dbm.sqlite3 or sqlitedict, dbm.dumb, UltraDict,
multiprocessing.Manager().dict(), and the in-process dict as reference),
each scenario, size and backend in a fresh process of its own (spawn), and
writes ``benchmark-report.md``, ``_static/bench/*.png`` and every number in
``_static/bench/results.json`` under ``--out`` (default: ``docs/``, where the
page is part of the documentation)::

    bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/report.py

Scenarios: get/set throughput and sampled per-operation latency by store
size; value sizes from 16 B to 1 MiB; shelve round trips of pickled dicts;
reader processes with and without a writer process; file size per stored
byte; open time of a large file. ``--quick`` is a smoke run (under a minute,
every installed peer, small sizes, fewer scenarios); ``--full`` adds 10M
keys. Peers that are not installed are skipped with a note in the page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _scenarios as sc  # noqa: E402
import bench_get_put as bgp  # noqa: E402

PAGE = "benchmark-report.md"
IMAGE_DIR = "_static/bench"
RESULTS = "results.json"  #: every measured number, beside the plots
REFERENCE = "dbm.gnu"
MiB = 1 << 20

PHASES = [  # (label, reader processes, writer process)
    ("1 reader", 1, False),
    ("1 reader + writer", 1, True),
    ("2 readers", 2, False),
    ("2 readers + writer", 2, True),
]


# --------------------------------------------------------------------------
# What to run


@dataclass
class Settings:
    """Sizes and durations of one mode (quick, default or full)."""

    mode: str
    scale_ns: List[int]
    scale_sample: int
    slow_cap: int
    value_sizes: List[int]
    value_budget: int
    value_max_n: int
    value_sample: int
    shelve_n: int
    mp_keys: int
    mp_seconds: float
    mp_phases: List[Tuple[str, int, bool]]
    open_n: int
    open_slow_cap: int
    probes: int
    repeat: int
    timeout: float


def settings_for(args: argparse.Namespace) -> Settings:
    """The sizes of the mode chosen on the command line."""
    if args.quick:
        s = Settings(mode="quick", scale_ns=[5_000], scale_sample=1_000, slow_cap=5_000,
                     value_sizes=[16, 4096, MiB], value_budget=4 * MiB, value_max_n=2_000,
                     value_sample=200, shelve_n=1_000, mp_keys=2_000, mp_seconds=0.25,
                     mp_phases=PHASES[:2], open_n=5_000, open_slow_cap=5_000, probes=1,
                     repeat=1, timeout=300)
    else:
        s = Settings(mode="default", scale_ns=[10_000, 100_000, 1_000_000],
                     scale_sample=10_000, slow_cap=100_000,
                     value_sizes=[16, 256, 4096, 65536, MiB], value_budget=64 * MiB,
                     value_max_n=20_000, value_sample=2_000, shelve_n=100_000,
                     mp_keys=100_000, mp_seconds=3.0, mp_phases=PHASES,
                     open_n=1_000_000, open_slow_cap=1_000_000, probes=3, repeat=3,
                     timeout=1800)
        if args.full:
            s.mode = "full"
            s.scale_ns.append(10_000_000)
            s.slow_cap = 1_000_000
            s.open_n = 10_000_000
            s.timeout = 7200
    if args.repeat is not None:
        s.repeat = args.repeat
    if args.seconds is not None:
        s.mp_seconds = args.seconds
    return s


@dataclass
class Outcome:
    """What one (scenario, size, peer) cell of the report holds."""

    scenario: str
    key: Any
    peer: str
    status: str              # ok | n/a | capped | failed
    data: Dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Task:
    scenario: str
    key: Any
    peer: str
    params: Dict[str, Any]
    label: str


def rounds_for(n: int, slow: bool, repeat: int) -> int:
    """Best of ``repeat`` rounds up to 100,000 keys (10,000 for slow peers), else 1."""
    return repeat if n <= (10_000 if slow else 100_000) else 1


def build_plan(st: Settings, peers: Dict[str, sc.Peer], scenarios: Sequence[str],
               root: str, seed: int) -> Tuple[List[Task], List[Outcome]]:
    """The tasks to run and the cells decided without running anything."""
    tasks: List[Task] = []
    fixed: List[Outcome] = []
    for scenario in scenarios:
        if scenario == "scale":
            keys: List[Any] = list(st.scale_ns)
        elif scenario == "values":
            keys = list(st.value_sizes)
        else:
            keys = [None]
        for key in keys:
            for name, peer in peers.items():
                if scenario not in peer.scenarios:
                    continue
                base = {"seed": seed, "root": root, "key_size": 16, "value_size": 100}
                if scenario == "scale":
                    if peer.slow and key > st.slow_cap:
                        fixed.append(Outcome(scenario, key, name, "capped",
                                             note=f"slow peer, capped at {st.slow_cap:,} keys"))
                        continue
                    params = dict(base, n=key, sample=min(key, st.scale_sample),
                                  rounds=rounds_for(key, peer.slow, st.repeat))
                    label = f"get/set {key:,} keys"
                elif scenario == "values":
                    n = min(st.value_max_n, max(16, st.value_budget // key))
                    params = dict(base, value_size=key, n=n, sample=min(n, st.value_sample),
                                  rounds=rounds_for(n, peer.slow, st.repeat))
                    label = f"values of {human_bytes(key)}"
                elif scenario == "shelve":
                    n = min(st.shelve_n, st.slow_cap) if peer.slow else st.shelve_n
                    params = dict(base, n=n, rounds=1)
                    label = "shelve round trips"
                elif scenario == "multiproc":
                    if peer.mp_readers:
                        fixed.append(Outcome(scenario, key, name, "n/a", note=peer.mp_readers))
                        continue
                    params = dict(base, keys=st.mp_keys, seconds=st.mp_seconds,
                                  phases=st.mp_phases)
                    label = "readers and a writer"
                else:  # opentime
                    if peer.opentime_na:
                        fixed.append(Outcome(scenario, key, name, "n/a", note=peer.opentime_na))
                        continue
                    n = min(st.open_n, st.open_slow_cap) if peer.slow else st.open_n
                    params = dict(base, n=n, probes=st.probes)
                    label = f"open time, {n:,} keys"
                tasks.append(Task(scenario, key, name, params, f"{label}: {name}"))
    return tasks, fixed


# --------------------------------------------------------------------------
# Running


class Progress:
    """A tqdm bar on a terminal when tqdm is installed, else one plain line per task."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, unit="task", file=sys.stderr,
                                dynamic_ncols=True, mininterval=0.2)

    def start(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label[:44].ljust(44))
        else:
            print(f"[{self.done + 1}/{self.total}] {label} ...", file=sys.stderr, flush=True)

    def finish(self, label: str, status: str, seconds: float, detail: str = "") -> None:
        self.done += 1
        line = f"{label}: {status} in {seconds:.1f} s" + (f" ({detail})" if detail else "")
        if self.bar is not None:
            if status != "ok":
                self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        elif status != "ok":
            print(f"    {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        print(f"report: {self.done} tasks in {time.perf_counter() - self.t0:.0f} s",
              file=sys.stderr, flush=True)


def run_plan(tasks: List[Task], token: str, timeout: float, progress: Progress
             ) -> List[Outcome]:
    """Run every task in a process of its own, one after the other."""
    outcomes: List[Outcome] = []
    for task in tasks:
        progress.start(task.label)
        t0 = time.perf_counter()
        status, payload = sc.run_task(
            {"peer": task.peer, "scenario": task.scenario, "params": task.params,
             "token": token}, timeout)
        seconds = time.perf_counter() - t0
        if status == "ok":
            outcomes.append(Outcome(task.scenario, task.key, task.peer, "ok", payload))
            progress.finish(task.label, status, seconds)
        elif status == "skip":
            outcomes.append(Outcome(task.scenario, task.key, task.peer, "n/a",
                                    note=str(payload)))
            progress.finish(task.label, "skipped", seconds, str(payload))
        else:
            first = str(payload).strip().splitlines()[0] if payload else status
            outcomes.append(Outcome(task.scenario, task.key, task.peer, "failed",
                                    note=f"{status}: {first}"))
            progress.finish(task.label, "FAILED", seconds, str(payload))
        sc.remove_shm_leftovers(token)
    return outcomes


# --------------------------------------------------------------------------
# Formatting


def human_bytes(n: float) -> str:
    """16 B, 4 KiB, 1 MiB, 1.5 GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def fmt_us(ns: Optional[float]) -> str:
    """Nanoseconds as microseconds with about three significant digits."""
    if ns is None or ns != ns:
        return "n/a"
    us = ns / 1000
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    if us >= 1:
        return f"{us:.2f}"
    return f"{us:.3f}"


def fmt_ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:,.0f}" if ms >= 100 else (f"{ms:.1f}" if ms >= 10 else f"{ms:.3g}")


def fmt_ratio(x: Optional[float], ref: Optional[float], lower_is_better: bool = False) -> str:
    """``x`` against the reference as ``1.23x`` (above 1 = better than it)."""
    if x is None or not ref:
        return "n/a"
    if lower_is_better:
        x, ref = ref, x
    return bgp.ratio(x, ref)


def fmt_times(x: Optional[float], ref: Optional[float]) -> str:
    """A duration against the reference's, as ``1.4x`` or ``23,000x``."""
    if x is None or not ref:
        return "n/a"
    r = x / ref
    return f"{r:,.0f}x" if r >= 100 else (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned, the rest right."""
    rows = [[c.replace("|", "\\|") for c in row] for row in rows]
    head = [h.replace("|", "\\|") for h in header]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    align = [":---" if i < left else "---:" for i in range(len(head))]
    widths = [max(w, len(a)) for w, a in zip(widths, align)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "| " + " | ".join(a.ljust(w) for a, w in zip(align, widths)) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(
            (c.ljust(w) if i < left else c.rjust(w)) for i, (c, w) in enumerate(zip(r, widths))
        ) + " |")
    return "\n".join(lines)


def code(text: str) -> str:
    return f"`{text}`"


# --------------------------------------------------------------------------
# Machine and versions


def read_proc(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_lines() -> List[str]:
    cpu = read_proc("/proc/cpuinfo", "model name")
    mem = read_proc("/proc/meminfo", "MemTotal")
    try:
        mem = f"{int(mem.split()[0]) / (1 << 20):.0f} GiB"
    except (ValueError, IndexError):
        pass
    distro = ""
    try:
        distro = platform.freedesktop_os_release().get("PRETTY_NAME", "")  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass
    return [
        f"{os.cpu_count()} CPU(s), {cpu}; {mem} of memory",
        f"Linux {platform.release()} ({platform.machine()})" + (f", {distro}" if distro else ""),
        f"{platform.python_implementation()} {platform.python_version()} "
        f"({platform.python_compiler()})",
    ]


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--",
                                "csrc", "dbm_shm", "setup.py", "pyproject.toml"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"commit {head}" + (" with local changes to the C core or package" if dirty else "")


def shown_command(argv: Sequence[str]) -> str:
    """The command as typed from the repository root."""
    def rel(path: str) -> str:
        full = os.path.abspath(path)
        return os.path.relpath(full, REPO) if full.startswith(REPO + os.sep) else path
    # an interpreter outside the checkout by its name alone: its folder names this machine
    exe = rel(sys.executable)
    if os.path.isabs(exe):
        exe = os.path.basename(exe)
    return shlex.join([exe, rel(os.path.abspath(__file__))] + list(argv))


# --------------------------------------------------------------------------
# The page


class Report:
    """Collects the outcomes and renders the Markdown page."""

    def __init__(self, outcomes: List[Outcome], peers: Dict[str, sc.Peer],
                 skipped: Dict[str, str], st: Settings, cpus: Optional[int] = None) -> None:
        self.cpus = cpus or os.cpu_count()
        self.by: Dict[Tuple[str, Any, str], Outcome] = {
            (o.scenario, o.key, o.peer): o for o in outcomes}
        self.outcomes = outcomes
        self.peers = peers
        self.skipped = skipped
        self.st = st

    def get(self, scenario: str, key: Any, peer: str) -> Optional[Outcome]:
        return self.by.get((scenario, key, peer))

    def ok(self, scenario: str, key: Any, peer: str) -> Optional[Dict[str, Any]]:
        o = self.get(scenario, key, peer)
        return o.data if o is not None and o.status == "ok" else None

    def keys(self, scenario: str) -> List[Any]:
        """The sizes a scenario ran at, ascending ([None] for unsized ones)."""
        seen: List[Any] = []
        for o in self.outcomes:
            if o.scenario == scenario and o.key not in seen:
                seen.append(o.key)
        return sorted(seen, key=lambda k: -1 if k is None else k)

    def names(self, scenario: str) -> List[str]:
        present = {o.peer for o in self.outcomes if o.scenario == scenario}
        return [n for n in self.peers if n in present]

    def cell_notes(self, scenario: str, key: Any = "*") -> List[str]:
        """Notes for the cells that hold no number (capped, n/a, failed)."""
        groups: Dict[str, List[str]] = {}
        for o in self.outcomes:
            if o.scenario != scenario or o.status == "ok" or (key != "*" and o.key != key):
                continue
            what = {"capped": "not run at this size", "n/a": "n/a",
                    "failed": "FAILED"}.get(o.status, o.status)
            names = groups.setdefault(f"{what} ({o.note})" if o.note else what, [])
            if o.peer not in names:
                names.append(o.peer)
        return [f"{', '.join(code(n) for n in names)}: {what}" for what, names in groups.items()]

    # -- sections
    def scale_section(self) -> List[str]:
        out = ["## Get and set by number of keys", "",
               "Keys of 16 random bytes, values of 100 random bytes. Set: a fresh "
               "store filled with N keys (timed as a whole). Get: the store reopened "
               "read-only and all N keys looked up in a shuffled order (timed as a "
               "whole; every value checked afterwards). Latency: "
               f"up to {self.st.scale_sample:,} more keys set one at a time into the "
               "full store, and as many keys looked up one at a time, each timed "
               "alone with `time.perf_counter_ns`. Ratios are against "
               f"{code(REFERENCE)} at the same N (above 1 = faster).", ""]
        for n in self.keys("scale"):
            ref = self.ok("scale", n, REFERENCE)
            rows = []
            for name in self.names("scale"):
                d = self.ok("scale", n, name)
                if d is None:
                    continue
                rows.append([
                    code(name), fmt_rate(d["set_ops"]), fmt_rate(d["get_ops"]),
                    fmt_ratio(d["set_ops"], ref and ref["set_ops"]),
                    fmt_ratio(d["get_ops"], ref and ref["get_ops"]),
                    fmt_us(d["set_p50_ns"]), fmt_us(d["set_p99_ns"]),
                    fmt_us(d["get_p50_ns"]), fmt_us(d["get_p99_ns"]),
                ])
            out += [f"### {n:,} keys", ""]
            if rows:
                out += [md_table(["backend", "set ops/s", "get ops/s", f"set vs {REFERENCE}",
                                  f"get vs {REFERENCE}", "set p50 µs", "set p99 µs",
                                  "get p50 µs", "get p99 µs"], rows), ""]
            out += bullets(self.cell_notes("scale", n))
        return out

    def values_section(self) -> List[str]:
        out = ["## Value sizes", "",
               "Keys of 16 bytes; N values of each size, N = "
               f"{human_bytes(self.st.value_budget)} / size, between 16 and "
               f"{self.st.value_max_n:,}; measured as above (latency samples: up to "
               f"{self.st.value_sample:,} operations). MB/s counts value bytes "
               "(10^6 bytes per MB).", ""]
        sizes = self.keys("values")
        names = self.names("values")
        for what in ("set", "get"):
            rows = []
            for name in names:
                row = [code(name)]
                for size in sizes:
                    d = self.ok("values", size, name)
                    ref = self.ok("values", size, REFERENCE)
                    if d is None:
                        row.append("n/a")
                        continue
                    mbs = d[f"{what}_ops"] * size / 1e6
                    cell = f"{mbs:,.1f} MB/s" if mbs >= 1 else f"{mbs:.3g} MB/s"
                    if ref is not None and name != REFERENCE:
                        cell += f" ({fmt_ratio(d[f'{what}_ops'], ref[f'{what}_ops'])})"
                    row.append(cell)
                rows.append(row)
            out += [f"### {what.capitalize()} throughput by value size", "",
                    md_table(["backend"] + [human_bytes(s) for s in sizes], rows), ""]
        rows = []
        for name in names:
            row = [code(name)]
            for size in sizes:
                d = self.ok("values", size, name)
                row.append("n/a" if d is None else
                           f"{fmt_us(d['set_p99_ns'])} / {fmt_us(d['get_p99_ns'])}")
            rows.append(row)
        out += ["### p99 latency by value size", "",
                "Set / get, in µs.", "",
                md_table(["backend"] + [human_bytes(s) for s in sizes], rows), ""]
        n_by_size = []
        for size in sizes:
            d = next((self.ok("values", size, nm) for nm in names if self.ok("values", size, nm)), None)
            if d:
                n_by_size.append(f"{human_bytes(size)}: {d['n']:,}")
        if n_by_size:
            out += [f"N per value size: {'; '.join(n_by_size)}.", ""]
        notes = self.cell_notes("values")
        if "dict" in names:
            notes.append("`dict` stores and returns a reference to the value, copying "
                         "nothing: its MB/s grows with the value size without bound "
                         "and only shows the per-operation cost (it is left out of "
                         "the plot)")
        if "UltraDict" in names:
            notes.append("`UltraDict`: a get reads the process's own dict replica (the "
                         "values were unpickled when the store was opened), so its get "
                         "MB/s, like dict's, copies nothing")
        out += bullets(notes)
        return out

    def shelve_section(self) -> List[str]:
        d0 = next((self.ok("shelve", None, n) for n in self.names("shelve")
                   if self.ok("shelve", None, n)), None)
        size = f"; about {d0['pickled_bytes']} bytes pickled" if d0 else ""
        out = ["## Shelve round trips", "",
               "A dict of six fields (an int, two short strings, a float, a list of "
               f"strings, a bool{size}) stored under N string keys through a "
               "`shelve.Shelf` over each store (its pickling and its `str` key "
               "encoding included), then the store reopened read-only and every "
               "object read back in a shuffled order and compared with the "
               "original. `dict` here is a `shelve.Shelf` over a plain dict: the "
               "cost of pickling alone. A round trip is one set plus one get.", ""]
        ref = self.ok("shelve", None, REFERENCE)
        rows = []
        for name in self.names("shelve"):
            d = self.ok("shelve", None, name)
            if d is None:
                continue
            rt = 1e6 / d["set_ops"] + 1e6 / d["get_ops"]
            ref_rt = (1e6 / ref["set_ops"] + 1e6 / ref["get_ops"]) if ref else None
            rows.append([code(name), f"{d['n']:,}", fmt_rate(d["set_ops"]),
                         fmt_rate(d["get_ops"]), f"{rt:.2f}",
                         fmt_ratio(rt, ref_rt, lower_is_better=True)])
        if rows:
            out += [md_table(["backend", "N", "set ops/s", "get ops/s", "round trip µs",
                              f"round trip vs {REFERENCE}"], rows, left=1), ""]
        out += bullets(self.cell_notes("shelve"))
        return out

    def multiproc_section(self) -> List[str]:
        st = self.st
        phases = [p[0] for p in st.mp_phases]
        writer_phases = [p for p in phases if "writer" in p]
        out = ["## Readers and a writer in separate processes", "",
               f"A store of {st.mp_keys:,} keys (`key%09d`, values of 100 bytes). "
               "Reader processes look up random keys in a loop; the writer process "
               "overwrites random keys in a loop. Every process is started with "
               "spawn, opens the store itself and counts its own operations over "
               "its own time; the readers' rates are added up. Each phase lasts "
               f"{st.mp_seconds:g} s. lmdb readers take one read transaction per "
               "lookup and its writer one write transaction per store, as a dbm "
               "caller would.", "",
               f"This machine has {self.cpus} CPU(s): with 2 readers and a "
               "writer, three busy processes share them, so the \"+ writer\" "
               "columns also measure CPU sharing, not only the stores.", ""]
        ref = self.ok("multiproc", None, REFERENCE)
        names = [n for n in self.names("multiproc") if self.ok("multiproc", None, n)]
        reads, writes = [], []
        for name in names:
            ph = self.ok("multiproc", None, name)["phases"]
            row = [code(name)]
            for label in phases:
                r = ph.get(label)
                refr = ref["phases"].get(label) if ref else None
                if r is None:
                    row.append("n/a")
                elif refr and name != REFERENCE:
                    row.append(f"{fmt_rate(r['reads_s'])} ({fmt_ratio(r['reads_s'], refr['reads_s'])})")
                else:
                    row.append(fmt_rate(r["reads_s"]))
            for label in writer_phases:
                alone, mixed = ph.get(label.replace(" + writer", "")), ph.get(label)
                row.append(f"{mixed['reads_s'] / alone['reads_s']:.0%}"
                           if alone and mixed and alone["reads_s"] else "n/a")
            reads.append(row)
            writes.append([code(name)] + [fmt_rate(ph[label]["writes_s"]) if label in ph
                                          else "n/a" for label in writer_phases])
        if reads:
            out += ["### Reads per second, all readers together", "",
                    md_table(["backend"] + phases
                             + [f"kept beside the writer, {p.split(' +')[0]}"
                                for p in writer_phases], reads), ""]
        if writes and writer_phases:
            out += ["### Writes per second beside the readers", "",
                    md_table(["backend"] + [f"writer + {p.split(' +')[0]}"
                                            for p in writer_phases], writes), ""]
        notes = self.cell_notes("multiproc")
        for name in names:
            peer = self.peers[name]
            if peer.mp_writer:
                notes.append(f"{code(name)}: n/a beside a writer; {peer.mp_writer}")
        out += bullets(notes)
        return out

    def filesize_section(self) -> List[str]:
        out = ["## File size per stored byte", "",
               "Bytes the closed store occupies (all its files, as allocated on "
               "the file system: `st_blocks` x 512) divided by the bytes of keys "
               "and values stored in it, after the set phases above. 1.00 would "
               "be no overhead at all. Where the apparent size (`st_size`) differs "
               "by more than 10 % from the allocated one (sparse files, or "
               "segments reserved but not touched), it follows in parentheses.", ""]

        def cell(d: Optional[Dict[str, Any]]) -> str:
            if d is None or d.get("size_allocated") is None:
                return "n/a"
            alloc = d["size_allocated"] / d["stored_bytes"]
            text = f"{alloc:.2f}"
            app = d["size_apparent"] / d["stored_bytes"]
            if alloc and abs(app - alloc) / alloc > 0.10:
                text += f" ({app:.2f})"
            return text

        scale_keys = self.keys("scale")
        names = [n for n in self.names("scale") if self.peers[n].file_based
                 or n == "UltraDict"]
        if scale_keys and names:
            rows = [[code(name)] + [cell(self.ok("scale", n, name)) for n in scale_keys]
                    for name in names]
            out += ["### By number of keys", "",
                    "Keys of 16 bytes, values of 100 bytes.", "",
                    md_table(["backend"] + [f"{n:,} keys" for n in scale_keys], rows), ""]
        sizes = self.keys("values")
        vnames = [n for n in self.names("values") if self.peers[n].file_based
                  or n == "UltraDict"]
        if sizes and vnames:
            rows = [[code(name)] + [cell(self.ok("values", s, name)) for s in sizes]
                    for name in vnames]
            out += ["### By value size", "",
                    md_table(["backend"] + [human_bytes(s) for s in sizes], rows), ""]
        fileless = [code(n) for n in self.peers if not self.peers[n].file_based
                    and n != "UltraDict"]
        notes = [f"{', '.join(fileless)}: n/a, no file"] if fileless else []
        if "UltraDict" in names:
            notes.append("`UltraDict`: its POSIX shared memory segments instead of a file "
                         "(each process also holds a full dict replica in its own memory)")
        out += bullets(notes)
        return out

    def opentime_section(self) -> List[str]:
        out = ["## Open time of a large file", "",
               f"A store of {self.st.open_n:,} keys (16-byte keys, 100-byte values) "
               "is built and closed; then "
               + (f"each of {self.st.probes} fresh processes" if self.st.probes > 1
                  else "a fresh process")
               + " (spawn; modules imported before the clock starts) times opening "
               "it read-only plus one lookup"
               + (": the median is shown. " if self.st.probes > 1 else ". ") +
               "The file is in the page cache, so this is the cost of the open "
               "itself, not of reading a disk.", ""]
        ref = self.ok("opentime", None, REFERENCE)
        several = self.st.probes > 1
        rows = []
        for name in self.names("opentime"):
            d = self.ok("opentime", None, name)
            if d is None:
                continue
            size = d.get("size_allocated")
            rows.append([code(name), f"{d['n']:,}", human_bytes(size) if size else "n/a",
                         fmt_ms(d["open_median_s"])]
                        + ([fmt_ms(d["open_min_s"])] if several else [])
                        + [fmt_times(d["open_median_s"], ref and ref["open_median_s"])])
        if rows:
            header = ["backend", "keys", "size",
                      "open + 1 get, median ms" if several else "open + 1 get, ms"]
            header += ["fastest ms"] if several else []
            header += [f"time vs {REFERENCE} (below 1 = faster)"]
            out += [md_table(header, rows), ""]
        notes = self.cell_notes("opentime")
        smaller = [code(n) for n in self.names("opentime") if self.ok("opentime", None, n)
                   and self.ok("opentime", None, n)["n"] != self.st.open_n]
        if smaller:
            notes.append(f"{', '.join(smaller)}: slow peers, capped at "
                         f"{self.st.open_slow_cap:,} keys")
        out += bullets(notes)
        return out

    def summary(self) -> List[str]:
        """Headline figures, from whatever ran."""
        lines: List[str] = []
        ns = [n for n in self.keys("scale") if self.ok("scale", n, "dbm_shm")]
        if ns:
            n = ns[-1]
            d = self.ok("scale", n, "dbm_shm")
            ref = self.ok("scale", n, REFERENCE)
            text = (f"{n:,} keys: dbm_shm sets {fmt_rate(d['set_ops'])}/s and gets "
                    f"{fmt_rate(d['get_ops'])}/s")
            if ref:
                text += (f" ({fmt_ratio(d['set_ops'], ref['set_ops'])} and "
                         f"{fmt_ratio(d['get_ops'], ref['get_ops'])} dbm.gnu's "
                         f"{fmt_rate(ref['set_ops'])}/s and {fmt_rate(ref['get_ops'])}/s)")
            text += (f"; p99 latency {fmt_us(d['set_p99_ns'])} µs per set, "
                     f"{fmt_us(d['get_p99_ns'])} µs per get")
            if ref:
                text += (f" (dbm.gnu: {fmt_us(ref['set_p99_ns'])} µs and "
                         f"{fmt_us(ref['get_p99_ns'])} µs)")
            dd = self.ok("scale", n, "dict")
            if dd:
                text += (f"; the in-process dict does {fmt_rate(dd['set_ops'])} and "
                         f"{fmt_rate(dd['get_ops'])} ops/s")
            lines.append(text + ".")
        d = self.ok("shelve", None, "dbm_shm")
        ref = self.ok("shelve", None, REFERENCE)
        if d:
            rt = 1e6 / d["set_ops"] + 1e6 / d["get_ops"]
            text = f"Shelve: a pickled dict round trip takes {rt:.2f} µs with dbm_shm"
            if ref:
                text += f", {1e6 / ref['set_ops'] + 1e6 / ref['get_ops']:.2f} µs with dbm.gnu"
            lines.append(text + ".")
        d = self.ok("multiproc", None, "dbm_shm")
        if d:
            ph = d["phases"]
            a, m = ph.get("1 reader"), ph.get("1 reader + writer")
            if a and m and a["reads_s"]:
                text = (f"Processes: one dbm_shm reader does {fmt_rate(a['reads_s'])} reads/s "
                        f"alone and {fmt_rate(m['reads_s'])} ({m['reads_s'] / a['reads_s']:.0%}) "
                        f"while a writer process stores {fmt_rate(m['writes_s'])}/s")
                lm = self.ok("multiproc", None, "lmdb")
                if lm and lm["phases"].get("1 reader + writer"):
                    lmm = lm["phases"]["1 reader + writer"]
                    text += (f" (lmdb, a transaction per operation: {fmt_rate(lmm['reads_s'])} "
                             f"reads/s beside {fmt_rate(lmm['writes_s'])} writes/s)")
                lines.append(text + ".")
        if ns:
            n = ns[-1]
            d = self.ok("scale", n, "dbm_shm")
            ref = self.ok("scale", n, REFERENCE)
            if d and d.get("size_allocated"):
                text = (f"File size at {n:,} keys: {d['size_allocated'] / d['stored_bytes']:.2f} "
                        "bytes per stored byte for dbm_shm")
                if ref and ref.get("size_allocated"):
                    text += f", {ref['size_allocated'] / ref['stored_bytes']:.2f} for dbm.gnu"
                lines.append(text + ".")
        d = self.ok("opentime", None, "dbm_shm")
        if d:
            ref = self.ok("opentime", None, REFERENCE)
            text = (f"Opening a {d['n']:,}-key file and reading one key: "
                    f"{fmt_ms(d['open_median_s'])} ms with dbm_shm")
            if ref:
                text += f", {fmt_ms(ref['open_median_s'])} ms with dbm.gnu"
            lines.append(text + ".")
        return lines

    def peers_section(self) -> List[str]:
        out = ["## Backends and how they are driven", ""]
        for name, peer in self.peers.items():
            out.append(f"- {code(name)} ({peer.version})" + (f": {peer.note}." if peer.note else "."))
        out.append("")
        if self.skipped:
            out += ["Skipped, not available in this interpreter:", ""]
            out += bullets([f"{code(name)}: {why}" for name, why in self.skipped.items()])
        return out


def bullets(items: Sequence[str]) -> List[str]:
    return [f"- {item}" for item in items] + ([""] if items else [])


def render_page(report: Report, meta: Dict[str, Any], images: Dict[str, str]) -> str:
    st = report.st
    lines = [
        "# Benchmark report", "",
        "dbm_shm beside the stores a Python user would pick instead, from one run "
        "of `benchmarks/report.py`. This page and its plots are generated: do not "
        "edit them by hand, run the command below again.", "",
        f"- Generated {meta['date']} in {meta['wall']:.0f} s ({st.mode} mode) by:", "",
        "  <!-- snippet: skip (the whole benchmark report: minutes, and the peers' venv) -->",
        "  ```sh",
        f"  {meta['command']}",
        "  ```", "",
        f"- Machine: {'; '.join(meta['machine'])}.",
        f"- Stores in {meta['fs_dir']} ({meta['fs_type']})"
        + (", so no disk is involved." if meta["fs_type"] == "tmpfs" else "."),
        f"- dbm_shm {meta['dbm_shm_version']}" + (f", {meta['git']}" if meta["git"] else "") + ".",
        f"- Load average (1 min) {meta['load_before']:.2f} before the run and "
        f"{meta['load_after']:.2f} after it, on {report.cpus} CPU(s).", "",
        "```{note}",
        f"These numbers come from a small shared machine ({report.cpus} CPUs) "
        "where other jobs (builds, test suites) may run beside the benchmark: the "
        "load averages above say how busy it was. Single figures can move by tens "
        "of percent between runs; compare within one table, and rerun the "
        "command on your own machine before quoting a number.",
        "```", "",
        "Method, in short: every scenario runs in a fresh process for each "
        "backend and size (multiprocessing, spawn), so one backend's memory "
        "state does not weigh on the next. Keys and values are random bytes fixed "
        "by a seed, identical for every backend; every value read is checked. "
        "Throughput is timed over whole loops with `time.perf_counter` and the "
        "cyclic garbage collector off; "
        + (f"the best of {st.repeat} rounds (each on a fresh store) is kept up to "
           "100,000 keys (10,000 for the slow peers), one round above. "
           if st.repeat > 1 else "one round each. ")
        + "Latency is sampled per operation with `time.perf_counter_ns`; the "
        f"timer itself costs about {meta['timer_ns']:.0f} ns per sample here, "
        "included in the figures. Every operation goes through the Python API, "
        "as a user's code would: the figures include the interpreter's per-call "
        "cost. Nothing calls `sync`/`fsync`.", "",
    ]
    summary = report.summary()
    if summary:
        lines += ["## Headline figures", ""] + bullets(summary)
    plots = {
        "scale": [("scale_throughput", "Set and get throughput by number of keys"),
                  ("scale_latency", "p50 and p99 latency by number of keys")],
        "values": [("value_sizes", "Throughput by value size")],
        "shelve": [("shelve", "Shelve set and get throughput")],
        "multiproc": [("multiproc", "Reads and writes per second, by phase")],
        "filesize": [("filesize", "Bytes on file per stored byte")],
        "opentime": [("opentime", "Open time of a large file")],
    }
    for name in ("scale", "values", "shelve", "multiproc", "filesize", "opentime"):
        if name == "filesize":
            if not report.keys("scale") and not report.keys("values"):
                continue
            body = report.filesize_section()
        elif not report.keys(name):
            continue
        else:
            body = getattr(report, f"{name}_section")()
        lines += body
        for image, alt in plots.get(name, []):
            if image in images:
                lines += [f"![{alt}]({IMAGE_DIR}/{images[image]})", ""]
    if meta.get("plot_note"):
        lines += [meta["plot_note"], ""]
    lines += report.peers_section()
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line


SCENARIO_NAMES = list(sc.SCENARIOS)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the dbm_shm benchmark comparison and write the report page and plots.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="smoke run: small sizes, fewer phases, every installed peer (< 1 min)")
    mode.add_argument("--full", action="store_true",
                      help="also 10,000,000 keys (slow peers capped at 1,000,000)")
    parser.add_argument("--out", default=os.path.join(REPO, "docs"),
                        help=f"where {PAGE} and {IMAGE_DIR}/*.png go (default: docs/)")
    parser.add_argument("--dir", help="where the stores go, in a fresh subdirectory "
                                      "(default /dev/shm if present, else the temp dir)")
    parser.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                        help="comma-separated backends, from: " + ", ".join(sc.PEERS))
    parser.add_argument("--scenarios", type=lambda s: [x for x in s.split(",") if x],
                        help="comma-separated scenarios, from: " + ", ".join(SCENARIO_NAMES)
                             + " (file sizes come with scale and values)")
    parser.add_argument("--repeat", type=int, help="rounds for sizes up to 100,000 keys "
                        "(default 3; 1 in --quick); the best is kept")
    parser.add_argument("--seconds", type=float, help="length of each multi-process phase "
                        "(default 3; 0.25 in --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of keys and values")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="measure nothing: write the page and plots again from the "
                             f"{IMAGE_DIR}/{RESULTS} an earlier run wrote")
    parser.add_argument("--no-plots", action="store_true", help="write the page only")
    parser.add_argument("--no-progress", action="store_true",
                        help="plain progress lines even on a terminal with tqdm installed")
    args = parser.parse_args(argv)
    for opt in ("only", "scenarios"):
        allowed = sc.PEERS if opt == "only" else SCENARIO_NAMES
        unknown = sorted(set(getattr(args, opt) or ()) - set(allowed))
        if unknown:
            parser.error(f"--{opt}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir} is not a directory")
    return args


def load_peers(names: Sequence[str]) -> Tuple[Dict[str, sc.Peer], Dict[str, str]]:
    peers: Dict[str, sc.Peer] = {}
    skipped: Dict[str, str] = {}
    for name in names:
        try:
            peers[name] = sc.make_peer(name)
        except bgp.Unavailable as exc:
            skipped[name] = str(exc)
    return peers, skipped


def measure(args: argparse.Namespace, argv: Sequence[str]
            ) -> Tuple[Report, Dict[str, Any]]:
    """Run every task; the collected outcomes and what the page says about the run."""
    import shutil
    import tempfile

    st = settings_for(args)
    peers, skipped = load_peers(args.only or list(sc.PEERS))
    base = args.dir or bgp.default_base_dir()
    root = tempfile.mkdtemp(prefix="dshm_report_", dir=base)
    token = uuid.uuid4().hex[:8]
    os.environ["DSHM_BENCH_TOKEN"] = token
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shown_command(argv),
        "machine": machine_lines(),
        "fs_dir": base, "fs_type": bgp.filesystem_type(root),
        "git": git_describe(),
        "dbm_shm_version": peers["dbm_shm"].version if "dbm_shm" in peers else "not installed",
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "timer_ns": sc.timer_overhead_ns(),
    }
    tasks, fixed = build_plan(st, peers, args.scenarios or SCENARIO_NAMES, root, args.seed)
    print(f"report: {len(tasks)} tasks, {len(peers)} backends ({', '.join(peers)}); "
          f"skipped: {', '.join(skipped) or 'none'}; stores in {root}",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    progress = Progress(len(tasks), enabled=not args.no_progress)
    try:
        outcomes = run_plan(tasks, token, st.timeout, progress)
    finally:
        progress.close()
        shutil.rmtree(root, ignore_errors=True)
        sc.remove_shm_leftovers(token)
    meta["wall"] = time.perf_counter() - t0
    meta["load_after"] = os.getloadavg()[0]
    return Report(fixed + outcomes, peers, skipped, st), meta


#: Peer attributes the page uses, kept in the results file for --render.
PEER_FIELDS = ("version", "note", "file_based", "slow", "mp_readers", "mp_writer", "opentime_na")


def save_json(path: str, report: Report, meta: Dict[str, Any]) -> None:
    data = {
        "meta": meta,
        "settings": report.st.__dict__,
        "peers": {n: {f: getattr(p, f) for f in PEER_FIELDS} for n, p in report.peers.items()},
        "skipped": report.skipped,
        "outcomes": [o.__dict__ for o in report.outcomes],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)


def load_json(path: str) -> Tuple[Report, Dict[str, Any]]:
    """The report and meta of an earlier run, from its results file."""
    import types

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    peers = {n: types.SimpleNamespace(**fields) for n, fields in data["peers"].items()}
    outcomes = [Outcome(**o) for o in data["outcomes"]]
    report = Report(outcomes, peers, data["skipped"], Settings(**data["settings"]),  # type: ignore[arg-type]
                    cpus=data["meta"].get("cpus"))
    return report, data["meta"]


def write_outputs(report: Report, meta: Dict[str, Any], args: argparse.Namespace) -> str:
    """Write the plots, the raw results and the page under ``--out``; returns the page's path."""
    image_dir = os.path.join(args.out, *IMAGE_DIR.split("/"))
    images: Dict[str, str] = {}
    meta["plot_note"] = ""
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            meta["plot_note"] = "No plots in this run: matplotlib is not installed."
        else:
            import _plots

            os.makedirs(image_dir, exist_ok=True)
            images = _plots.make_all(report, image_dir)
    os.makedirs(image_dir, exist_ok=True)
    save_json(os.path.join(image_dir, RESULTS), report, meta)
    path = os.path.join(args.out, PAGE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_page(report, meta, images))
    print(f"report: wrote {path}" + (f" and {len(images)} plots in {image_dir}" if images else ""),
          file=sys.stderr)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure (or reload with --render), then write the page and plots."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render:
        report, meta = load_json(args.render)
    else:
        report, meta = measure(args, argv)
    write_outputs(report, meta, args)
    failed = [o for o in report.outcomes if o.status == "failed"]
    for o in failed:
        print(f"report: FAILED {o.scenario} {o.key} {o.peer}: {o.note}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
