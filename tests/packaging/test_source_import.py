"""Importing dbm_shm where Python finds the uncompiled source folder first.

``pip install . && python -m dbm_shm demo`` runs at the root of a checkout,
where ``./dbm_shm`` (no compiled ``_dshm``) shadows the installed package.
``dbm_shm/_loader.py`` then switches to the installed copy, or raises an
ImportError that says what to run. These tests build the layouts for real
(a temporary "checkout" holding a copy of the source folder, a temporary
"site" directory holding a copy of the installed package) and run Python in
subprocesses from the checkout's root.
"""

import importlib.machinery
import os
import shutil
import subprocess
import sys
import venv

import pytest

import dbm_shm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALLED = os.path.dirname(os.path.abspath(dbm_shm.__file__))
SOURCE = os.path.join(REPO, "dbm_shm")
if not os.path.isfile(os.path.join(SOURCE, "_loader.py")):   # tests/ copied away from a checkout
    SOURCE = INSTALLED


def _is_core(name):
    return name.startswith("_dshm") and any(name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)


def _copy(src, dst, with_binaries):
    def ignore(_dir, names):
        return [n for n in names
                if n in ("__pycache__",) or n.endswith((".pyc", ".o"))
                or (not with_binaries and n.endswith(".so"))]
    shutil.copytree(src, dst, ignore=ignore)


@pytest.fixture
def layout(tmp_path):
    """``checkout/dbm_shm``: the source folder without a compiled core;
    ``site/dbm_shm``: the package as installed (with its core)."""
    checkout = tmp_path / "checkout"
    site = tmp_path / "site"
    _copy(SOURCE, str(checkout / "dbm_shm"), with_binaries=False)
    _copy(INSTALLED, str(site / "dbm_shm"), with_binaries=True)
    assert not any(_is_core(n) for n in os.listdir(checkout / "dbm_shm"))
    assert any(_is_core(n) for n in os.listdir(site / "dbm_shm")), "the installed package has no core"
    return checkout, site


def _run(args, cwd, pythonpath=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


_WHERE = """
import dbm_shm, dbm_shm._db, sys
print(dbm_shm.__file__)
print(dbm_shm._db.__file__)
print(sys.modules["dbm_shm._loader"].__file__)
"""


def test_script_import_from_checkout_root_uses_installed_copy(layout):
    checkout, site = layout
    r = _run(["-c", _WHERE], cwd=checkout, pythonpath=site)
    assert r.returncode == 0, r.stderr
    files = r.stdout.split()
    assert len(files) == 3
    for f in files:
        assert f.startswith(str(site) + os.sep), files


def test_python_m_from_checkout_root_runs_installed_main(layout):
    checkout, site = layout
    r = _run(["-m", "dbm_shm", "--help"], cwd=checkout, pythonpath=site)
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout


def test_demo_from_checkout_root(layout):
    """The README's command: spawn children re-import the package from the
    same directory and must end up in the installed copy too."""
    checkout, site = layout
    r = _run(["-m", "dbm_shm", "demo", "--seconds", "0.5", "--readers", "2"],
             cwd=checkout, pythonpath=site)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "readers    total" in r.stdout
    assert "0 torn, 0 out of order" in r.stdout


def test_no_installed_copy_gives_clear_import_error(layout):
    checkout, _site = layout
    # -S: no site-packages, so no installed dbm_shm anywhere on sys.path.
    r = _run(["-S", "-c", "import dbm_shm"], cwd=checkout)
    assert r.returncode != 0
    err = r.stderr
    assert "ImportError" in err and "ModuleNotFoundError" not in err, err
    assert "compiled C core" in err
    assert str(checkout / "dbm_shm") in err
    assert "pip install ." in err
    assert "build_ext --inplace" in err


def test_in_place_build_uses_the_source_folder(layout):
    """After ``python setup.py build_ext --inplace`` the source folder has its
    core and is used as it is, even when an installed copy exists."""
    checkout, site = layout
    for name in os.listdir(site / "dbm_shm"):
        if _is_core(name):
            shutil.copy2(site / "dbm_shm" / name, checkout / "dbm_shm" / name)
    r = _run(["-c", _WHERE], cwd=checkout, pythonpath=site)
    assert r.returncode == 0, r.stderr
    for f in r.stdout.split():
        assert f.startswith(str(checkout) + os.sep), r.stdout


def test_installed_package_is_left_alone(tmp_path):
    # The package under test stays importable (a PYTHONPATH of a developer's
    # in-place build is kept); nothing may switch it for another copy.
    r = _run(["-c", _WHERE], cwd=tmp_path, pythonpath=os.path.dirname(INSTALLED))
    assert r.returncode == 0, r.stderr
    for f in r.stdout.split():
        assert f.startswith(INSTALLED + os.sep), r.stdout


@pytest.mark.slow
def test_readme_first_command_in_fresh_venv(tmp_path):
    """``pip install . && python -m dbm_shm demo`` verbatim, from (a copy of)
    the checkout's root, in a fresh venv. Needs the network for cffi."""
    if not os.path.isfile(os.path.join(REPO, "pyproject.toml")):
        pytest.skip("not run from a checkout")
    root = tmp_path / "checkout"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(
        ".git", ".tox", "build", "dist", "*.egg-info", ".venv*", "__pycache__", "*.so", "*.o"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(env_dir)
    r = subprocess.run(["bash", "-c", "pip install . && python -m dbm_shm demo"], cwd=root,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "readers    total" in r.stdout
