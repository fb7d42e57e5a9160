"""Smoke test of ``benchmarks/bench_cache.py``: ``--quick`` runs end to end
with dbm_shm and whichever peers this interpreter can import (a peer whose
client or server is missing is skipped by the script with a note), and
prints a table per worker count with a number in every throughput cell.
Never asserts a speed: timings in tests are not benchmarks."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dbm_shm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_cache.py"


def _available() -> set[str]:
    def has(mod: str) -> bool:
        # A module, not a namespace package some folder of that name on
        # sys.path would make (no origin).
        spec = importlib.util.find_spec(mod)
        return spec is not None and spec.origin not in (None, "namespace")

    names = {"dbm_shm", "dbm_shm-disk"}
    if has("diskcache"):
        names.add("diskcache")
    if has("django"):
        names.add("locmem")
    if has("redis") and shutil.which("redis-server"):
        names.add("redis")
    if has("pymemcache") and (shutil.which("memcached") or os.path.exists("/usr/bin/memcached")):
        names.add("memcached")
    return names


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| backend"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_quick_run_prints_a_table_per_worker_count(tmp_path: Path) -> None:
    env = dict(os.environ)
    here = str(Path(dbm_shm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    store_dir = tmp_path / "stores"
    store_dir.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--procs", "1,2",
                           "--dir", str(store_dir), "--disk-dir", str(store_dir)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "FAILED" not in out, out
    expected = _available()
    sections = re.split(r"^## (\d+) worker process(?:es)?.*$", out, flags=re.M)
    # [preamble, "1", body1, "2", body2]
    assert sections[1::2] == ["1", "2"], out
    for body in sections[2::2]:
        speed, memory = body.split("Memory,", 1)
        rows = _table_rows(speed)
        assert set(rows) == expected, out
        for name, cells in rows.items():
            assert re.fullmatch(r"[\d,]+", cells[0]) and re.fullmatch(r"[\d,]+", cells[1]), (name, cells)
            assert cells[6] == "1.0×" if name == "dbm_shm" else re.fullmatch(r"[\d,.]+×", cells[6]), cells
        assert set(_table_rows(memory)) == expected, out
        assert "Aims: gets ≥ 30× diskcache's" in body
    for name in {"diskcache", "locmem", "redis", "memcached"} - expected:
        assert f"- {name}: skipped (" in out, out
    if "locmem" in expected:
        assert "NOT shared" in out
    # Every store was removed, in both directories.
    assert list(store_dir.iterdir()) == []
