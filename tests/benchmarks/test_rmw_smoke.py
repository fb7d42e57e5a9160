"""Smoke test of ``benchmarks/bench_rmw.py``: ``--quick`` runs end to end
with dbm_shm and the stdlib sqlite3 (the other peers may be missing here:
skipped with a note), every counter checked by the script. Never asserts a
speed: timings in tests are not benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dbm_shm

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_rmw.py"


def test_quick_run(tmp_path: Path) -> None:
    env = dict(os.environ)
    here = str(Path(dbm_shm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--dir", str(tmp_path),
                           "--only", "dbm_shm,sqlite3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| backend")}
    assert set(rows) == {"dbm_shm", "sqlite3"}
    for line in rows.values():
        assert len(re.findall(r"\| [\d,]+ ", line)) == 4, line
    assert "FAILED" not in proc.stdout
