"""Smoke test of ``benchmarks/bench_get_put.py --sizes`` (one table over sizes)."""

import importlib.util
import os
import sys

from dbm_shm import _fastglue

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "benchmarks", "bench_get_put.py")


def test_sizes_table(capsys, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_get_put", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_get_put", bench)   # for its dataclasses
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "SIZES_MIN_GETS", 300)
    rc = bench.main(["--sizes", "50,200", "--only", "dict,dbm_shm,dbm_shm-py", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ns" not in line and "---" not in line]
    names = [r.split("|")[2].strip() for r in rows]
    expect = ["dict", "dbm_shm"] + (["dbm_shm-py"] if _fastglue.ENABLED else [])
    assert names == expect * 2, out
    assert [r.split("|")[1].strip() for r in rows] == ["50"] * len(expect) + ["200"] * len(expect)
