"""Package smoke test (`tox -e package`): build, install away from the checkout, run.

1. ``python -m build`` makes the sdist, then the wheel from that sdist (so an
   sdist missing a file fails here), into a temporary directory;
2. for each of the two: a fresh venv outside the checkout, the artifact
   installed into it (the sdist compiles the C core from source);
3. from a temporary directory away from the checkout: ``python -m dbm_shm
   demo``, and one test module (a copy of ``tests/``, ``--rootdir`` the
   temporary directory) against the installed package;
4. ``mypy --strict dbm_shm tests/typing`` in the checkout (``tests/typing``
   when it exists).

Usage: python .ci/package_smoke.py [--keep] [--test MODULE]   (MODULE relative to tests/)
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: List[str], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> str:
    print(f"\n$ {' '.join(cmd)}" + (f"    (in {cwd})" if cwd else ""), flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise SystemExit(f"package smoke: FAILED (exit {proc.returncode}): {' '.join(cmd)}")
    return proc.stdout


def clean_env() -> Dict[str, str]:
    """The environment without tox's venv, so a child venv is on its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    return env


def smoke(kind: str, artifact: str, tmp: str, test_module: str) -> None:
    print(f"\n=== {kind}: {os.path.basename(artifact)} ===", flush=True)
    env_dir = os.path.join(tmp, f"venv-{kind}")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = os.path.join(env_dir, "bin", "python")
    env = clean_env()
    env["VIRTUAL_ENV"] = env_dir
    env["PATH"] = os.path.join(env_dir, "bin") + os.pathsep + env.get("PATH", "")
    run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         artifact, "pytest>=7", "hypothesis>=6"], cwd=tmp, env=env)

    work = os.path.join(tmp, f"run-{kind}")
    os.makedirs(work)
    where = run([py, "-c", "import dbm_shm; print(dbm_shm.__file__)"], cwd=work, env=env).strip()
    if not os.path.realpath(where).startswith(os.path.realpath(env_dir) + os.sep):
        raise SystemExit(f"package smoke: dbm_shm came from {where}, not from the venv {env_dir}")

    # the console script (entry point dbm_shm.cli:main) and the cli package
    out = run([os.path.join(env_dir, "bin", "dbm-shm"), "--help"], cwd=work, env=env)
    if "reorganize" not in out:
        raise SystemExit("package smoke: 'dbm-shm --help' lists no commands")

    out = run([py, "-m", "dbm_shm", "demo"], cwd=work, env=env)
    if "readers    total" not in out:
        raise SystemExit("package smoke: the demo printed no throughput table")

    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(work, "tests"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis"))
    run([py, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", work,
         "-m", "not slow and not soak", os.path.join("tests", test_module)], cwd=work, env=env)


def run_mypy() -> None:
    targets = ["dbm_shm"]
    typing_dir = os.path.join(ROOT, "tests", "typing")
    if os.path.isdir(typing_dir):
        targets.append(os.path.join("tests", "typing"))
    else:
        print("\n(tests/typing does not exist: mypy checks the package alone)")
    run([sys.executable, "-m", "mypy", "--strict", *targets], cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--test", default="api/test_mapping.py",
                    help="test module to run against each install, relative to tests/")
    ap.add_argument("--no-mypy", action="store_true")
    args = ap.parse_args()

    base = tempfile.gettempdir()
    if os.path.realpath(base).startswith(os.path.realpath(ROOT) + os.sep):
        base = "/tmp"                       # away from the checkout, whatever TMPDIR says
    tmp = tempfile.mkdtemp(prefix="dbm-shm-package-", dir=base)
    try:
        dist = os.path.join(tmp, "dist")
        run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=tmp)
        sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
        wheels = glob.glob(os.path.join(dist, "*.whl"))
        if len(sdists) != 1 or len(wheels) != 1:
            raise SystemExit(f"package smoke: expected one sdist and one wheel in {dist}")
        smoke("sdist", sdists[0], tmp, args.test)
        smoke("wheel", wheels[0], tmp, args.test)
        if not args.no_mypy:
            run_mypy()
    finally:
        if args.keep:
            print(f"\n(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\npackage smoke: OK (sdist and wheel built, installed away from the checkout, "
          "demo and tests/" + args.test + " passed against each; mypy --strict passed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
