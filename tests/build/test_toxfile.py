"""toxfile.py (tox's inline plugin) finds pyenv's interpreters in the order
tox should try them, and names environments skipped for lack of one."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def toxfile(monkeypatch):
    try:
        import tox.plugin  # noqa: F401
        import tox.tox_env.errors  # noqa: F401
    except ImportError:  # a test env without tox: the two names toxfile.py uses
        class Skip(Exception):
            pass
        mods = {
            "tox": types.ModuleType("tox"),
            "tox.plugin": types.ModuleType("tox.plugin"),
            "tox.tox_env": types.ModuleType("tox.tox_env"),
            "tox.tox_env.errors": types.ModuleType("tox.tox_env.errors"),
        }
        mods["tox.plugin"].impl = lambda f: f
        mods["tox.tox_env.errors"].Skip = Skip
        for name, mod in mods.items():
            monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("dshm_toxfile", REPO / "toxfile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_version(root: Path, name: str, exe: str) -> str:
    bindir = root / "versions" / name / "bin"
    bindir.mkdir(parents=True)
    path = bindir / exe
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_pyenv_interpreters_order(toxfile, tmp_path):
    p = {n: _fake_version(tmp_path, n, e) for n, e in [
        ("3.9.1", "python3.9"), ("3.9.18", "python3.9"), ("3.13.0", "python3.13"),
        ("3.14.0rc1", "python3.14"), ("3.13.0t", "python3.13t"), ("3.12.1", "python3.12"),
    ]}
    _fake_version(tmp_path, "2.7.18", "python2.7")       # too old
    _fake_version(tmp_path, "3.8.18", "python3.8")       # below requires-python
    (tmp_path / "versions" / "system").mkdir()          # not a version
    (tmp_path / "versions" / "3.10.13" / "bin").mkdir(parents=True)  # no executable
    found = toxfile.pyenv_interpreters({"PYENV_ROOT": str(tmp_path)})
    assert found == [p["3.14.0rc1"], p["3.13.0"], p["3.12.1"], p["3.9.18"], p["3.9.1"], p["3.13.0t"]]


def test_no_pyenv(toxfile, tmp_path):
    assert toxfile.pyenv_interpreters({"PYENV_ROOT": str(tmp_path / "none")}) == []


def test_discover_list_extended(toxfile, tmp_path, monkeypatch):
    exe = _fake_version(tmp_path, "3.11.2", "python3.11")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.delenv("DSHM_TOX_NO_PYENV", raising=False)
    options = types.SimpleNamespace(discover=["/opt/py/bin/python3"])
    state = types.SimpleNamespace(conf=types.SimpleNamespace(options=options))
    toxfile.tox_add_core_config(None, state)
    assert options.discover == ["/opt/py/bin/python3", exe]
    monkeypatch.setenv("DSHM_TOX_NO_PYENV", "1")
    options.discover = []
    toxfile.tox_add_core_config(None, state)
    assert options.discover == []


def test_skipped_env_named(toxfile, capsys):
    skip = sys.modules["tox.tox_env.errors"].Skip

    class Env:
        def __init__(self, name, found):
            self.conf = types.SimpleNamespace(name=name)
            self.found = found

        @property
        def base_python(self):
            if not self.found:
                raise skip("could not find python interpreter with spec(s): " + self.conf.name)
            return object()

    for env in (Env("py39", True), Env("py315", False), Env(".pkg-py315", False), Env("py315", False)):
        toxfile.tox_env_teardown(env)
    toxfile._report()
    toxfile._missing.clear()   # said once here, not again when pytest exits
    out = capsys.readouterr().out
    assert out.startswith("dbm_shm: NOT TESTED ON py315: ")
    assert "pyenv install 3.15" in out and "py39" not in out
    assert os.linesep not in out.rstrip(os.linesep)
