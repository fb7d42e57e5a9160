"""The prebuilt-wheel configuration: cibuildwheel's settings in pyproject.toml
build what the README promises and test files that exist; `tox -e wheel`
is defined and runs .ci/wheel_smoke.py."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
if not (REPO / "pyproject.toml").is_file() or not (REPO / "tox.ini").is_file():
    pytest.skip("needs the checkout", allow_module_level=True)


def _cibw() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["cibuildwheel"]


def test_cpython_39_to_314_manylinux_two_archs() -> None:
    cfg = _cibw()
    assert cfg["build"] == [f"cp3{m}-*" for m in range(9, 15)]
    assert "*-musllinux_*" in cfg["skip"]
    assert cfg["linux"]["archs"] == ["x86_64", "aarch64"]
    assert cfg["manylinux-x86_64-image"].startswith("manylinux")
    assert cfg["manylinux-aarch64-image"].startswith("manylinux")


def test_test_command_runs_files_that_exist() -> None:
    cfg = _cibw()
    for src in cfg["test-sources"]:
        assert (REPO / src).exists(), src
    words = [w for part in cfg["test-command"].split("&&") for w in shlex.split(part)]
    tests = [w for w in words if w.startswith("tests/")]
    assert tests, cfg["test-command"]
    for t in tests:
        assert (REPO / t).exists(), t
    assert all(re.match(r"pytest|hypothesis", r) for r in cfg["test-requires"])


def test_tox_wheel_env() -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    env = ini["testenv:wheel"]
    assert "auditwheel" in env["deps"]
    assert env["commands"].strip().startswith("python .ci/wheel_smoke.py")
    assert (REPO / ".ci" / "wheel_smoke.py").is_file()
