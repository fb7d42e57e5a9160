"""Wheel check (`tox -e wheel`): a wheel for this interpreter, repaired to a
manylinux tag by auditwheel, installed away from the checkout and run.

1. ``pip wheel . --no-deps`` builds the wheel for the interpreter that runs
   this script (a ``linux_<arch>`` tag: not uploadable as it is);
2. ``auditwheel show`` prints its external libraries and the manylinux
   policy its symbol versions allow; ``auditwheel repair`` retags it (and
   would vendor any external library) into a ``manylinux_*`` wheel, then
   ``auditwheel show`` on the result;
3. a fresh venv outside the checkout; the repaired wheel installed into it
   (its dependency cffi from the index);
4. from a temporary directory away from the checkout: ``import dbm_shm``
   (it must come from the venv), the C core and the fast path loaded, a
   store written and read back, a reader in a second process, and
   ``python -m dbm_shm --help``.

cibuildwheel (``[tool.cibuildwheel]`` in pyproject.toml) makes the wheels
for every CPython and both architectures in manylinux containers; this is
the same pipeline for one interpreter, without containers.

Usage: python .ci/wheel_smoke.py [--keep] [--plat TAG]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import venv
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE = textwrap.dedent("""
    import multiprocessing, os, sys
    import dbm_shm
    from dbm_shm import _dshm, _fastglue

    def reader(path, q):
        with dbm_shm.open(path, "r") as db:
            q.put((db[b"k"], len(db)))

    if __name__ == "__main__":
        print("dbm_shm from", os.path.dirname(dbm_shm.__file__))
        print("C core", os.path.basename(_dshm.__file__), "| fast path", "on" if _fastglue.ENABLED else "OFF")
        path = os.path.join(sys.argv[1], "smoke.shm")
        with dbm_shm.open(path, "n") as db:
            db[b"k"] = b"v" * 1000
            with db.batch():
                for i in range(1000):
                    db[b"%d" % i] = b"%d" % (i * i)
        q = multiprocessing.Queue()
        p = multiprocessing.Process(target=reader, args=(path, q)); p.start()
        value, n = q.get(timeout=60); p.join(60)
        assert value == b"v" * 1000 and n == 1001 and p.exitcode == 0, (value[:10], n, p.exitcode)
        with dbm_shm.open(path, "r") as db:
            assert db[b"999"] == b"998001" and db.get_many([b"2", b"3"]) == [b"4", b"9"]
        print("smoke: 1001 keys written, read back here and in a second process")
""")


def run(cmd: List[str], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> str:
    print(f"\n$ {' '.join(cmd)}" + (f"    (in {cwd})" if cwd else ""), flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise SystemExit(f"wheel smoke: FAILED (exit {proc.returncode}): {' '.join(cmd)}")
    return proc.stdout


def one(pattern: str) -> str:
    found = glob.glob(pattern)
    if len(found) != 1:
        raise SystemExit(f"wheel smoke: expected one file matching {pattern}, found {found}")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--plat", default=None,
                    help="auditwheel repair's --plat (default: the lowest manylinux tag the wheel allows)")
    args = ap.parse_args()

    base = tempfile.gettempdir()
    if os.path.realpath(base).startswith(os.path.realpath(ROOT) + os.sep):
        base = "/tmp"                       # away from the checkout, whatever TMPDIR says
    tmp = tempfile.mkdtemp(prefix="dbm-shm-wheel-", dir=base)
    try:
        raw_dir, fixed_dir = os.path.join(tmp, "raw"), os.path.join(tmp, "repaired")
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
             "-w", raw_dir, ROOT], cwd=tmp)
        raw = one(os.path.join(raw_dir, "dbm_shm-*.whl"))
        run(["auditwheel", "show", raw])
        run(["auditwheel", "repair", "-w", fixed_dir] + (["--plat", args.plat] if args.plat else []) + [raw])
        fixed = one(os.path.join(fixed_dir, "dbm_shm-*.whl"))
        if not any(t in os.path.basename(fixed) for t in ("manylinux", "musllinux")):
            raise SystemExit(f"wheel smoke: the repaired wheel has no manylinux/musllinux tag: {fixed}")
        run(["auditwheel", "show", fixed])

        env_dir = os.path.join(tmp, "venv")
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        py = os.path.join(env_dir, "bin", "python")
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
        env["VIRTUAL_ENV"] = env_dir
        env["PATH"] = os.path.join(env_dir, "bin") + os.pathsep + env.get("PATH", "")
        run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", fixed], cwd=tmp, env=env)

        work = os.path.join(tmp, "run")
        os.makedirs(work)
        with open(os.path.join(work, "smoke.py"), "w") as f:
            f.write(SMOKE)
        out = run([py, "smoke.py", work], cwd=work, env=env)
        where = out.split("dbm_shm from ", 1)[1].split("\n", 1)[0].strip()
        if not os.path.realpath(where).startswith(os.path.realpath(env_dir) + os.sep):
            raise SystemExit(f"wheel smoke: dbm_shm came from {where}, not from the venv")
        run([py, "-m", "dbm_shm", "--help"], cwd=work, env=env)
    finally:
        if args.keep:
            print(f"\n(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwheel smoke: OK ({os.path.basename(fixed)}: built, auditwheel-repaired, "
          "installed into a fresh venv away from the checkout, imported and run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
