"""Find the compiled core when Python imported the uncompiled source folder.

``pip install . && python -m dbm_shm demo`` run at the root of a checkout
makes Python import ``./dbm_shm`` (the current directory comes first on
``sys.path``), a folder without the compiled ``_dshm`` module. ``dbm_shm``'s
``__init__`` calls :func:`use_compiled_core` before anything else:

- the package's own folder holds ``_dshm`` for this interpreter (an installed
  copy, or a checkout built with ``python setup.py build_ext --inplace``):
  nothing happens;
- otherwise, when another ``dbm_shm`` with a compiled core is on ``sys.path``
  (the copy ``pip install .`` put into site-packages), that copy replaces this
  one wholesale: ``sys.modules["dbm_shm"]`` becomes the installed package, so
  every submodule (``__main__`` under ``python -m``, and those a
  ``multiprocessing`` child imports) comes from the installed copy;
- otherwise an ImportError says what happened and what to run.

This module imports nothing from the package and only the standard library.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import List, Optional

__all__ = ["has_core", "find_installed", "use_compiled_core"]

_CORE = "_dshm"


def has_core(folder: str) -> bool:
    """Whether *folder* holds the compiled core for this interpreter."""
    return any(os.path.isfile(os.path.join(folder, _CORE + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_installed(name: str, source: str,
                   path: Optional[List[str]] = None) -> Optional[importlib.machinery.ModuleSpec]:
    """The spec of the first package *name* on *path* (default ``sys.path``)
    that is not the folder *source* and holds the compiled core."""
    parent = os.path.dirname(source)
    for entry in sys.path if path is None else path:
        where = os.path.abspath(entry or os.curdir)
        if _same(where, parent):
            continue
        spec = importlib.machinery.PathFinder.find_spec(name, [where])
        locations = spec.submodule_search_locations if spec is not None else None
        if spec is None or spec.loader is None or not locations:
            continue
        folder = list(locations)[0]
        if not _same(folder, source) and has_core(folder):
            return spec
    return None


def _message(source: str) -> str:
    return (
        f"dbm_shm: the compiled C core (dbm_shm.{_CORE}) is missing: Python imported the "
        f"uncompiled source folder {source} (a dbm_shm checkout in the current directory "
        f"or on sys.path), and no installed dbm_shm with a compiled core was found elsewhere "
        f"on sys.path. Either run `pip install .` in the checkout (then `python -m dbm_shm` "
        f"and `import dbm_shm` use the installed copy, from any directory), or build the "
        f"core in place for development: `pip install 'setuptools>=77' cffi && "
        f"python setup.py build_ext --inplace`.")


def use_compiled_core(module: ModuleType) -> bool:
    """Make sure the package *module* (being imported) has its compiled core.

    Returns False when it has it. Returns True after ``sys.modules`` was
    re-pointed to an installed copy, whose ``__init__`` has then run; the
    rest of the source ``__init__`` then only re-binds names from the
    installed submodules. Raises ImportError when no copy has a core.
    """
    name = module.__name__
    source = os.path.dirname(os.path.abspath(module.__file__ or ""))
    if has_core(source):
        return False
    spec = find_installed(name, source)
    if spec is None:
        raise ImportError(_message(source), name=f"{name}.{_CORE}", path=source)
    # Forget what was imported from the source folder (this module, so far),
    # so the installed package imports its own copies.
    for mod in [m for m in sys.modules if m.startswith(name + ".")]:
        del sys.modules[mod]
    installed = importlib.util.module_from_spec(spec)
    sys.modules[name] = installed
    try:
        assert spec.loader is not None
        spec.loader.exec_module(installed)
    except BaseException:
        sys.modules[name] = module
        raise
    return True
