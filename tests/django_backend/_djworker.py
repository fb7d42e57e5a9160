"""A separate Django process for tests/django_backend/test_django_multiprocess.py.

``python _djworker.py LOCATION`` configures Django with one cache,
``{"BACKEND": "dbm_shm.DjangoCache", "LOCATION": LOCATION}``, as a site's
worker process would, prints ``ready`` and then answers one JSON command
per line of standard input with one JSON line:

* ``["call", method, args]``: ``caches["default"].<method>(*args)``;
  answers ``{"ok": result}`` or ``{"error": "<exception class>: <message>"}``.
* ``["incr_many", key, n]``: ``incr(key)`` n times; answers the results.
* ``["add_race", key]``: ``add(key, <pid>)``; answers ``{"ok": bool}``.
* ``["wait_gone", key, limit]``: polls ``get(key)`` until it is None (at
  most ``limit`` seconds); answers ``{"ok": {"gone": bool, "at": time}}``.
* ``["time"]``: answers ``{"ok": time.time()}``.

End of input ends the process.
"""

import json
import os
import sys
import time


def main() -> None:
    location = sys.argv[1]
    import django
    from django.conf import settings

    settings.configure(
        CACHES={"default": {"BACKEND": "dbm_shm.DjangoCache", "LOCATION": location}},
        SECRET_KEY="dbm_shm tests: not secret",
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.cache import caches

    cache = caches["default"]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd[0] == "call":
                out = getattr(cache, cmd[1])(*cmd[2])
            elif cmd[0] == "incr_many":
                out = [cache.incr(cmd[1]) for _ in range(cmd[2])]
            elif cmd[0] == "add_race":
                out = cache.add(cmd[1], os.getpid())
            elif cmd[0] == "wait_gone":
                end = time.monotonic() + cmd[2]
                gone = cache.get(cmd[1]) is None
                while not gone and time.monotonic() < end:
                    time.sleep(0.01)
                    gone = cache.get(cmd[1]) is None
                out = {"gone": gone, "at": time.time()}
            elif cmd[0] == "time":
                out = time.time()
            else:
                raise ValueError(f"unknown command {cmd[0]!r}")
            reply = {"ok": out}
        except Exception as e:  # reported to the test, which asserts on it
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
