"""PNG plots of ``benchmarks/report.py`` (matplotlib, Agg backend).

Importing this module fails with ImportError when matplotlib is missing;
``report.py`` then writes the page without plots and says so.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

#: One colour per backend, the same in every plot.
COLORS = {
    "dbm_shm": "#d62728", "dbm.gnu": "#1f77b4", "lmdb": "#2ca02c",
    "lmdb-1txn": "#98df8a", "dbm.sqlite3": "#9467bd", "sqlitedict": "#8c564b",
    "dbm.dumb": "#7f7f7f", "UltraDict": "#ff7f0e", "Manager.dict": "#e377c2",
    "dict": "#17becf",
}
MARKERS = {
    "dbm_shm": "o", "dbm.gnu": "s", "lmdb": "^", "lmdb-1txn": "v", "dbm.sqlite3": "D",
    "sqlitedict": "P", "dbm.dumb": "X", "UltraDict": "*", "Manager.dict": "h", "dict": ".",
}
DPI = 110


def _style(name: str) -> Dict[str, Any]:
    return {"color": COLORS.get(name, "black"), "marker": MARKERS.get(name, "o"),
            "linewidth": 2.6 if name == "dbm_shm" else 1.4,
            "markersize": 7 if name == "dbm_shm" else 5,
            "zorder": 3 if name == "dbm_shm" else 2,
            "linestyle": "--" if name == "dict" else "-"}


def _si(x: float, _pos: Any = None) -> str:
    """Tick labels: 100, 10k, 1M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _bytes(x: float, _pos: Any = None) -> str:
    for div, suffix in ((1 << 20, " MiB"), (1 << 10, " KiB")):
        if x >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g} B"


def _finish(fig: Any, axes: Sequence[Any], path: str, legend_names: Sequence[str]) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    order = [labels.index(n) for n in legend_names if n in labels]
    if order:
        fig.legend([handles[i] for i in order], [labels[i] for i in order],
                   loc="lower center", ncol=min(len(order), 5), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    rows = (len(order) + 4) // 5
    fig.tight_layout(rect=(0, 0.06 * rows + 0.01, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _lines(ax: Any, series: Dict[str, List[Tuple[float, float]]]) -> None:
    for name, points in series.items():
        pts = [(x, y) for x, y in points if y is not None and y > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **_style(name))


def _log_axes(ax: Any, xfmt: Callable = _si, yfmt: Callable = _si) -> None:
    """Log-log axes with plain tick labels (minor ones only on a short y range)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(xfmt))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(yfmt))
    low, high = ax.get_ylim()
    short = low > 0 and high / low < 12
    ax.yaxis.set_minor_formatter(FuncFormatter(yfmt) if short else NullFormatter())
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def plot_scale(report: Any, out: str) -> Dict[str, str]:
    ns = report.keys("scale")
    names = report.names("scale")
    if not ns:
        return {}
    images = {}

    def series(field: str, scale: float = 1.0) -> Dict[str, List[Tuple[float, float]]]:
        s: Dict[str, List[Tuple[float, float]]] = {}
        for name in names:
            pts = []
            for n in ns:
                d = report.ok("scale", n, name)
                if d is not None:
                    pts.append((n, d[field] * scale))
            s[name] = pts
        return s

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), sharey=True)
    for ax, what in zip(axes, ("set", "get")):
        _lines(ax, series(f"{what}_ops"))
        _log_axes(ax)
        ax.set_title(f"{what} throughput (16 B keys, 100 B values)")
        ax.set_xlabel("keys in the store (N)")
        ax.set_ylabel("operations per second (higher is better)")
        ax.set_xticks(ns)
    _finish(fig, axes, os.path.join(out, "scale_throughput.png"), names)
    images["scale_throughput"] = "scale_throughput.png"

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.4), sharex=True)
    for ax, (what, q) in zip(axes.flat, (("set", "p50"), ("set", "p99"),
                                         ("get", "p50"), ("get", "p99"))):
        _lines(ax, series(f"{what}_{q}_ns", 1e-3))
        _log_axes(ax, yfmt=lambda x, _p=None: f"{x:g}")
        ax.set_title(f"{what} latency, {q}")
        ax.set_ylabel("µs per operation (lower is better)")
        ax.set_xticks(ns)
        if what == "get":
            ax.set_xlabel("keys in the store (N)")
    _finish(fig, list(axes.flat), os.path.join(out, "scale_latency.png"), names)
    images["scale_latency"] = "scale_latency.png"
    return images


def plot_values(report: Any, out: str) -> Dict[str, str]:
    sizes = report.keys("values")
    # dict copies nothing (it keeps a reference): its MB/s only grows with
    # the size and would squash every store's line; the page says so.
    names = [n for n in report.names("values") if n != "dict"]
    if not sizes:
        return {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), sharey=True)
    for ax, what in zip(axes, ("set", "get")):
        s = {name: [(size, (report.ok("values", size, name) or {}).get(f"{what}_ops", 0) * size / 1e6)
                    for size in sizes] for name in names}
        _lines(ax, s)
        _log_axes(ax, xfmt=_bytes)
        ax.set_xticks(sizes)
        ax.set_title(f"{what} throughput by value size (dict left out)")
        ax.set_xlabel("value size")
        ax.set_ylabel("MB of values per second (higher is better)")
    _finish(fig, axes, os.path.join(out, "value_sizes.png"), names)
    return {"value_sizes": "value_sizes.png"}


def _bar_label(ax: Any, bars: Any, fmt: Callable[[float], str], horizontal: bool) -> None:
    for bar in bars:
        v = bar.get_width() if horizontal else bar.get_height()
        if v <= 0:
            continue
        if horizontal:
            ax.annotate(fmt(v), (v, bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7)
        else:
            ax.annotate(fmt(v), (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=6, rotation=90)


def plot_shelve(report: Any, out: str) -> Dict[str, str]:
    names = [n for n in report.names("shelve") if report.ok("shelve", None, n)]
    if not names:
        return {}
    names = names[::-1]  # first backend on top
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.8))
    h = 0.38
    for i, what in enumerate(("set", "get")):
        vals = [report.ok("shelve", None, n)[f"{what}_ops"] for n in names]
        bars = ax.barh([k + (i - 0.5) * h for k in range(len(names))], vals, height=h,
                       label=f"{what} (store a pickled dict)" if what == "set"
                       else f"{what} (load and unpickle it)",
                       color="#4c72b0" if what == "set" else "#dd8452")
        _bar_label(ax, bars, _si, horizontal=True)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    for label in ax.get_yticklabels():
        if label.get_text() == "dbm_shm":
            label.set_fontweight("bold")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_si))
    ax.set_xlabel("operations per second (log scale; higher is better)")
    ax.set_title("shelve: pickled dicts stored and read back")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(right=ax.get_xlim()[1] * 3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "shelve.png"), dpi=DPI)
    plt.close(fig)
    return {"shelve": "shelve.png"}


PHASE_COLORS = ["#9ecae1", "#3182bd", "#fdae6b", "#e6550d"]


def plot_multiproc(report: Any, out: str) -> Dict[str, str]:
    names = [n for n in report.names("multiproc") if report.ok("multiproc", None, n)]
    if not names:
        return {}
    phases = [p[0] for p in report.st.mp_phases]
    writer_phases = [p for p in phases if "writer" in p]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4),
                             gridspec_kw={"width_ratios": [len(phases), max(1, len(writer_phases))]})
    for ax, which, labels, key in ((axes[0], "reads", phases, "reads_s"),
                                   (axes[1], "writes", writer_phases, "writes_s")):
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            vals = []
            for n in names:
                r = report.ok("multiproc", None, n)["phases"].get(label)
                vals.append(r[key] if r else 0)
            color = PHASE_COLORS[phases.index(label) % len(PHASE_COLORS)]
            xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(names))]
            bars = ax.bar(xs, vals, width=width, label=label, color=color)
            _bar_label(ax, bars, _si, horizontal=False)
            for x, v in zip(xs, vals):
                if not v:
                    ax.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"),
                                xytext=(0, 3), textcoords="offset points", ha="center",
                                fontsize=6, rotation=90, color="gray")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        for tick in ax.get_xticklabels():
            if tick.get_text() == "dbm_shm":
                tick.set_fontweight("bold")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_si))
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylabel(f"{which} per second, all processes (log scale)")
        ax.set_title(f"{which} by phase")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_ylim(top=ax.get_ylim()[1] * 4)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "multiproc.png"), dpi=DPI)
    plt.close(fig)
    return {"multiproc": "multiproc.png"}


def plot_filesize(report: Any, out: str) -> Dict[str, str]:
    panels = []
    ns = report.keys("scale")
    if ns:
        panels.append(("scale", ns, "keys in the store (16 B keys, 100 B values)", _si))
    sizes = report.keys("values")
    if sizes:
        panels.append(("values", sizes, "value size (16 B keys)", _bytes))
    if not panels:
        return {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), squeeze=False)
    all_names: List[str] = []
    for ax, (scenario, xs, xlabel, xfmt) in zip(axes[0], panels):
        s: Dict[str, List[Tuple[float, Optional[float]]]] = {}
        for name in report.names(scenario):
            pts = []
            for x in xs:
                d = report.ok(scenario, x, name)
                if d and d.get("size_allocated"):
                    pts.append((x, d["size_allocated"] / d["stored_bytes"]))
            if pts:
                s[name] = pts
                if name not in all_names:
                    all_names.append(name)
        _lines(ax, s)
        _log_axes(ax, xfmt=xfmt, yfmt=lambda y, _p=None: f"{y:g}")
        ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.6)
        ax.set_xticks(xs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("bytes allocated per byte stored (lower is better)")
        ax.set_title("file size / payload" + (" by value size" if scenario == "values" else ""))
    order = [n for n in report.peers if n in all_names]
    _finish(fig, list(axes[0]), os.path.join(out, "filesize.png"), order)
    return {"filesize": "filesize.png"}


def plot_opentime(report: Any, out: str) -> Dict[str, str]:
    names = [n for n in report.names("opentime") if report.ok("opentime", None, n)]
    if not names:
        return {}
    names = names[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.8))
    vals = [report.ok("opentime", None, n)["open_median_s"] * 1e3 for n in names]
    bars = ax.barh(range(len(names)), vals, color=[COLORS.get(n, "gray") for n in names])
    _bar_label(ax, bars, lambda v: f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms",
               horizontal=True)
    labels = []
    for n in names:
        d = report.ok("opentime", None, n)
        labels.append(f"{n} ({_si(d['n'])} keys)")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(labels)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p=None: f"{x:,g}"))
    ax.set_xlabel("ms to open read-only and read one key (log scale; lower is better)")
    ax.set_title("open time in a fresh process")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlim(right=ax.get_xlim()[1] * 4)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "opentime.png"), dpi=DPI)
    plt.close(fig)
    return {"opentime": "opentime.png"}


def make_all(report: Any, out: str) -> Dict[str, str]:
    """Draw every plot the results allow; returns {plot name: file name}."""
    images: Dict[str, str] = {}
    for fn in (plot_scale, plot_values, plot_shelve, plot_multiproc, plot_filesize,
               plot_opentime):
        images.update(fn(report, out))
    return images
