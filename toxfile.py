"""tox's inline plugin for dbm_shm (tox 4 loads ``toxfile.py`` beside
``tox.ini`` by itself; nothing to install).

Two things:

* **pyenv's interpreters are found without being on PATH.** pyenv puts only
  its shims on PATH, and a shim such as ``python3.9`` runs only while that
  version is selected (``pyenv global``/``local``), so tox would skip
  ``py39`` although ``$PYENV_ROOT/versions/3.9.x`` exists. Every CPython
  3.9 or later under ``$PYENV_ROOT/versions`` (default ``~/.pyenv``) is
  added to tox's ``--discover`` list: an environment takes the first of
  them that matches its version (newest patch release first), else the
  usual search of PATH. (The plugin virtualenv-pyenv does the same through
  virtualenv, but fails on the ``VIRTUALENV_PYTHON=<0`` that tox 4.6x
  sets.) ``DSHM_TOX_NO_PYENV=1`` turns this off.
* **A missing interpreter is said loudly.** tox lists an environment
  skipped for lack of an interpreter as ``SKIP`` and may still end with
  "congratulations"; this prints, after tox's summary, one line naming
  every such environment.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path
from typing import Any, List, Tuple

from tox.plugin import impl
from tox.tox_env.errors import Skip

_VERSION = re.compile(r"^(3)\.(\d+)\.(\d+)(?:(a|b|rc)(\d+))?(t?)$")


def pyenv_interpreters(env: "os._Environ[str] | dict[str, str]" = os.environ) -> List[str]:
    """CPython >= 3.9 executables under ``$PYENV_ROOT/versions``: final
    releases before pre-releases, newest first, free-threaded builds last."""
    root = Path(env.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found: List[Tuple[Tuple[int, ...], str]] = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        m = _VERSION.match(name)
        if not m or int(m.group(2)) < 9:
            continue
        major, minor, micro = int(m.group(1)), int(m.group(2)), int(m.group(3))
        exe = root / name / "bin" / f"python{major}.{minor}{m.group(6)}"
        if not os.access(exe, os.X_OK):
            continue
        final = m.group(4) is None
        key = (bool(m.group(6)), -minor, not final, -micro, -int(m.group(5) or 0))
        found.append((key, str(exe)))
    return [exe for _, exe in sorted(found)]


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    if os.environ.get("DSHM_TOX_NO_PYENV"):
        return
    options = state.conf.options
    discover = list(getattr(options, "discover", None) or [])
    options.discover = discover + [p for p in pyenv_interpreters() if p not in discover]


_missing: List[str] = []


def _report() -> None:
    if _missing:
        versions = [f"{m.group(1)}.{m.group(2)}" for m in map(re.compile(r"py(3)(\d+)$").match, _missing) if m]
        print(
            f"dbm_shm: NOT TESTED ON {', '.join(_missing)}: no such interpreter found "
            "(tox looks in pyenv's versions, then on PATH); install it "
            f"(e.g. `pyenv install {' '.join(versions) or '3.X'}`) or choose environments with -e; "
            "TOX_SKIP_MISSING_INTERPRETERS=false makes this an error",
            flush=True,
        )


atexit.register(_report)


@impl
def tox_env_teardown(tox_env: Any) -> None:
    name = tox_env.conf.name
    if name.startswith(".") or name in _missing or not hasattr(type(tox_env), "base_python"):
        return
    try:
        tox_env.base_python  # found (cached), or raises Skip as it did at setup
    except Skip:
        _missing.append(name)
    except Exception:  # a failure that tox reports itself
        pass
