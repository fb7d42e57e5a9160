"""A build without a C compiler or without the Python headers stops with a
message that says which is missing and how to install both (setup.py's
BuildExt), instead of the compiler's bare ENOENT or a missing Python.h."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("setuptools")
pytest.importorskip("cffi")
if not (REPO / "setup.py").is_file():
    pytest.skip("needs the checkout's setup.py", allow_module_level=True)

HINT = "apt install gcc python3-dev"


def _build(tmp_path: Path, env_extra: dict, prelude: str = "") -> subprocess.CompletedProcess:
    """setup.py build_ext, its output in tmp_path, the checkout untouched."""
    script = tmp_path / "run_setup.py"
    script.write_text(prelude + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["setup.py", "build_ext", "-b", {str(tmp_path / 'lib')!r}, "-t", {str(tmp_path / 'tmp')!r}]
        runpy.run_path("setup.py", run_name="__main__")
    """))
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_compiler(tmp_path):
    r = _build(tmp_path, {"CC": str(tmp_path / "no-such-cc")})
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "dbm_shm: cannot build the C core: no C compiler:" in out
    assert "no-such-cc' not found (as CC names it)" in out
    assert HINT in out
    assert "Python headers" in out and "no Python headers" not in out


def test_no_python_headers(tmp_path):
    empty = tmp_path / "include"
    empty.mkdir()
    prelude = textwrap.dedent(f"""
        import sysconfig
        _paths = sysconfig.get_paths
        sysconfig.get_paths = lambda *a, **k: dict(_paths(*a, **k), include={str(empty)!r})
    """)
    r = _build(tmp_path, {}, prelude)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"no Python headers: {empty / 'Python.h'} is missing" in out
    assert HINT in out
