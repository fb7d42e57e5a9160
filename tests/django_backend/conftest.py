"""tests/django_backend: dbm_shm's Django cache backend (``dbm_shm.DjangoCache``).

Skipped where Django is not installed (the default ``tox`` envs do not
install it; ``tox -e django`` does): each module starts with
``pytest.importorskip``. Where it is, Django's own cache tests are fetched
for the installed version (``_djsuite.py``) and Django is configured once
for the process, here, before any module of this folder is collected.

The folder is not named ``django``: with ``tests/`` on ``sys.path`` (the
suite's conftest) it would be a namespace package that shadows the real
one for every test of the suite.
"""

import sys

try:
    import django.core.cache.backends.base  # noqa: F401
except ImportError:
    pass
else:
    import _djsuite

    _djsuite.setup()
