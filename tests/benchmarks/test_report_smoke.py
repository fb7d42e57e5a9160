"""Smoke test of ``benchmarks/report.py``: ``--quick`` runs end to end.

It runs the report with the interpreter that runs pytest (peers missing here
are skipped by the script itself), writing into ``tmp_path`` instead of
``docs/``, and checks what was written: the page, its dbm_shm rows, the plots
it references. It never asserts a speed: timings in tests are not benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dbm_shm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "report.py"
SCENARIOS = ("scale", "values", "shelve", "multiproc", "opentime")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One ``--quick`` run for the module: (output dir, results.json, stderr)."""
    tmp_path = tmp_path_factory.mktemp("report")
    out = tmp_path / "out"
    stores = tmp_path / "stores"
    stores.mkdir()
    env = dict(os.environ)
    # The script (and its spawned children) must import the dbm_shm this
    # test imported: the installed wheel under tox, the tree otherwise.
    here = str(Path(dbm_shm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--out", str(out),
         "--dir", str(stores)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"report.py failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert not list(stores.iterdir()), "report.py left stores behind"
    results = out / "_static" / "bench" / "results.json"
    return out, json.loads(results.read_text(encoding="utf-8")), proc.stderr


def test_quick_report_writes_page_and_plots(quick_run: tuple[Path, dict, str]) -> None:
    out, results, stderr = quick_run

    page_path = out / "benchmark-report.md"
    assert page_path.is_file()
    page = page_path.read_text(encoding="utf-8")
    assert page.startswith("# Benchmark report\n")
    assert "report.py --quick" in page  # the exact command is quoted

    # dbm_shm rows in the tables, and the reference dict in the get/set one.
    rows = [line for line in page.splitlines() if line.startswith("| `dbm_shm`")]
    assert len(rows) >= 5, page
    getset = page.split("## Get and set by number of keys", 1)[1].split("\n## ", 1)[0]
    assert "| `dbm_shm`" in getset and "| `dict`" in getset
    cells = [c.strip() for c in next(
        line for line in getset.splitlines() if line.startswith("| `dbm_shm`")).split("|")[1:-1]]
    assert len(cells) == 9 and all(cells[1:3]), cells

    # dbm_shm took part in every scenario and succeeded in each.
    mine = {o["scenario"]: o["status"] for o in results["outcomes"] if o["peer"] == "dbm_shm"}
    assert mine == {s: "ok" for s in SCENARIOS}, mine
    assert not [o for o in results["outcomes"] if o["status"] == "failed"]

    # Every image the page references exists; with matplotlib, there are some.
    images = re.findall(r"!\[[^\]]*\]\((_static/bench/[^)]+\.png)\)", page)
    for image in images:
        data = (out / image).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), image
    if importlib.util.find_spec("matplotlib") is not None:
        assert {"scale_throughput.png", "value_sizes.png", "multiproc.png"} <= {
            Path(i).name for i in images}
    else:
        assert not images and "No plots in this run" in page
    assert "report: wrote" in stderr


def test_render_rewrites_the_same_page(quick_run: tuple[Path, dict, str],
                                       tmp_path: Path) -> None:
    """``--render`` writes the page again from results.json, measuring nothing."""
    out = quick_run[0]
    again = tmp_path / "again"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--render", str(out / "_static" / "bench" / "results.json"),
         "--out", str(again)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (again / "benchmark-report.md").read_text(encoding="utf-8") == \
        (out / "benchmark-report.md").read_text(encoding="utf-8")
