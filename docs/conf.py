"""Sphinx configuration for the dbm_shm documentation.

Built by ``tox -e docs``, which installs dbm_shm (its cffi extension is
compiled on the way) so that autodoc imports the real package, and runs
``sphinx-build -n -W --keep-going -b html docs docs/_build/html``: nitpicky,
and every warning is an error.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

project = "dbm_shm"
author = "the dbm_shm authors"
copyright = "the dbm_shm authors; MIT licence"
release = importlib.metadata.version("dbm_shm")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_intersphinx", "requirements.txt"]
language = "en"

# -- MyST (Markdown) -----------------------------------------------------------
# Anchors for headings down to ###, so "[info](#info)" style links resolve.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# -- autodoc / napoleon -----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True       # show mode=0o666, not mode=438
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# The type variable of the get()/pop() overloads (a default of any type):
# private, so it has no page to link to.
nitpick_ignore = [("py:class", "dbm_shm._db._T"), ("py:class", "dbm_shm._cache._F")]
napoleon_google_docstring = True
napoleon_numpy_docstring = False


def _hide_database_signature(app: Any, what: str, name: str, obj: Any, options: Any,
                             signature: Any, return_annotation: Any) -> Any:
    """``Database`` objects come only from ``dbm_shm.open()`` (its
    constructor raises ``TypeError``, as ``dbm.gnu``'s type does), so the
    class is shown without a call signature."""
    if what == "class" and name == "dbm_shm.Database":
        return "", None
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _hide_database_signature)


# -- intersphinx ------------------------------------------------------------------
# The build machines reach package registries only, not docs.python.org, so
# the Python inventory is kept in the tree (docs/_intersphinx/python3.inv,
# from Debian's python3.11-doc 3.11.2). It is tried first; the live one is
# the fallback. Refresh it from /usr/share/doc/python3.X/html/objects.inv.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", ("_intersphinx/python3.inv", None)),
}
intersphinx_timeout = 10


# -- HTML -------------------------------------------------------------------------
html_theme = "furo"
html_title = f"dbm_shm {release}"
html_static_path: list = []
