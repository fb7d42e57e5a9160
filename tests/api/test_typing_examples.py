"""The typed examples of tests/typing: each runs as a program, and (where
mypy is installed) ``mypy --strict`` accepts them and rejects the misuses
below, so the overloads say what the docs say."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dbm_shm

TYPING = Path(__file__).resolve().parent.parent / "typing"
EXAMPLES = sorted(p.name for p in TYPING.glob("*.py"))
# Where the package under test lives (an install, or the checkout built in place).
PKG_ROOT = str(Path(dbm_shm.__file__).resolve().parent.parent)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    r = subprocess.run([sys.executable, str(TYPING / name)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(" ok")


def _mypy(tmp_path, *files):
    pytest.importorskip("mypy")
    # --follow-imports=silent: dbm_shm's own modules are typed for the
    # examples but their errors are the CI run's (mypy --strict dbm_shm
    # tests/typing), not this test's.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(tmp_path / "mypy_cache"), *map(str, files)],
        cwd=PKG_ROOT, env=_env(), capture_output=True, text=True, timeout=600)


def test_examples_pass_mypy_strict(tmp_path):
    r = _mypy(tmp_path, *(TYPING / n for n in EXAMPLES))
    assert r.returncode == 0, r.stdout + r.stderr


BAD = '''
import shelve
from typing import Optional
import dbm_shm

db = dbm_shm.open("x", "c")
a: bytes = db.get(b"k")                    # Optional[bytes]: rejected
b: bytes = db.get(b"k", 0)                 # Union[bytes, int]: rejected
c: Optional[bytes] = db.get(b"k", b"d")    # bytes: accepted
db[b"k"] = 1                               # not bytes-like: rejected
d: "shelve.Shelf[int]" = shelve.Shelf(db)  # a MutableMapping[bytes, bytes]: accepted
e: int = db.pop(b"k")                      # bytes: rejected
'''


def test_mypy_rejects_misuse(tmp_path):
    bad = tmp_path / "bad_usage.py"
    bad.write_text(BAD)
    r = _mypy(tmp_path, bad)
    lines = {int(line.split(":")[1]) for line in r.stdout.splitlines() if ": error:" in line}
    text = BAD.splitlines()
    rejected = {i + 1 for i, line in enumerate(text) if line.endswith("rejected")}
    assert lines == rejected, r.stdout


def test_stub_lists_every_cdef_name():
    """dbm_shm/_dshm.pyi types every function and constant of csrc/cdef.h,
    so the typed code sees each C call's int return."""
    import re
    root = Path(__file__).resolve().parent.parent.parent
    cdef = (root / "csrc" / "cdef.h").read_text()
    stub = (root / "dbm_shm" / "_dshm.pyi").read_text()
    names = set(re.findall(r"\b(dshm_\w+)\(", cdef)) | set(re.findall(r"#define (\w+) \.\.\.", cdef))
    missing = {n for n in names if not re.search(rf"\b{n}\b", stub)}
    assert not missing
