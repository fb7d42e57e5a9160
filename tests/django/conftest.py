"""tests/django: dbm_shm's Django cache backend (``dbm_shm.DjangoCache``).

Skipped where Django is not installed (the default ``tox`` envs do not
install it; ``tox -e django`` does): each module starts with
``pytest.importorskip``. Where it is, Django's own cache tests are fetched
for the installed version (``_djsuite.py``) and Django is configured once
for the process, here, before any module of this folder is collected.

No ``__init__.py`` here on purpose: a package named ``django`` under
``tests/`` would shadow the real one.
"""

import sys

try:
    # "django.core...", not "django": tests/ is on sys.path (the suite's
    # conftest), so without Django installed "import django" finds this
    # folder as an empty namespace package.
    import django.core.cache.backends.base  # noqa: F401
except ImportError:
    if getattr(sys.modules.get("django"), "__file__", None) is None:
        sys.modules.pop("django", None)    # that namespace package, if it was made
else:
    import _djsuite

    _djsuite.setup()
