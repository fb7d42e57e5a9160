"""Smoke test of ``benchmarks/bench_batch_wait.py``: ``--quick`` runs end to end.

It checks that both tables come out with every dbm_shm row and a number in
each cell, and that every wake-up was seen (the script raises otherwise).
It never asserts a speed: timings in tests are not benchmarks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dbm_shm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_batch_wait.py"


def test_quick_run_prints_both_tables(tmp_path: Path) -> None:
    env = dict(os.environ)
    here = str(Path(dbm_shm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for row in ("dbm_shm, one write at a time", "dbm_shm, one `with db.batch()`",
                "dbm_shm, one `db.update(dict)`", "dbm_shm db.wait() (futex)",
                "polling commit_id() every 1 ms", "os.pipe read"):
        line = next((ln for ln in out.splitlines() if row in ln), None)
        assert line is not None, f"no row {row!r} in:\n{out}"
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        assert cells and all(re.fullmatch(r"[\d,.]+x?", c) for c in cells), line
    # The files went where asked, and were removed.
    assert list(tmp_path.iterdir()) == []
