"""tests/django: dbm_shm's Django cache backend (``dbm_shm.DjangoCache``).

Skipped as a whole where Django is not installed (the default ``tox`` envs
do not install it; ``tox -e django`` does). Where it is, Django's own cache
tests are fetched for the installed version (``_djsuite.py``) and Django is
configured once for the process.

No ``__init__.py`` here on purpose: a package named ``django`` under
``tests/`` would shadow the real one.
"""

import pytest

# "django.core.cache", not "django": tests/ is on sys.path (the suite's
# conftest), so without Django installed "import django" would find this
# folder as an empty namespace package.
pytest.importorskip("django.core.cache.backends.base", reason="Django is not installed")

import _djsuite  # noqa: E402

_djsuite.setup()
