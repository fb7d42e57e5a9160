"""Helpers for the hardening tests: run Python code in a child process (a
crash is a negative return code, never this process dying), with resource
limits, as another user, with test hooks in its environment."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any, Callable, Dict, Optional


@dataclasses.dataclass
class Result:
    rc: Optional[int]          # None: killed after the timeout
    out: str
    err: str

    def describe(self) -> str:
        if self.rc is None:
            what = "timed out"
        elif self.rc < 0:
            what = f"killed by {signal.Signals(-self.rc).name}"
        else:
            what = f"exit {self.rc}"
        return f"{what}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"

    def json(self) -> Any:
        """The last stdout line, as JSON; fails the test unless exit 0."""
        assert self.rc == 0, self.describe()
        return json.loads(self.out.strip().splitlines()[-1])


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DSHM_CRASH_AT", "DSHM_TEST_COLLIDE", "DSHM_TEST_SEED")}
    env.update(extra or {})
    return env


def run_py(code: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
           preexec_fn: Optional[Callable[[], None]] = None) -> Result:
    """Run ``code`` (dedented) with ``python -X faulthandler -c``; argv[1:] = args."""
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(env),
                         preexec_fn=preexec_fn)
    try:
        out, err = p.communicate(timeout=timeout)
        return Result(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return Result(None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


NOBODY = 65534


def as_nobody() -> None:
    """preexec_fn: drop root for user/group nobody."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def run_forked(fn: Callable[..., Any], *args: Any, user: Optional[int] = None,
               timeout: float = 120) -> Result:
    """Run ``fn(*args)`` in a forked child (as ``user`` if given: the
    interpreter lives under /root, so a child that is to run as 'nobody'
    cannot exec it and must be a fork). Its return value comes back as
    JSON in Result.out; an exception as exit 1 with the traceback in
    Result.err; a crash as a negative rc; a hang as rc None (the child is
    killed)."""
    import select
    import time
    import traceback
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # child
        code = 1
        try:
            os.close(r)
            if user is not None:
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)
            out = json.dumps(fn(*args)).encode()
            os.write(w, b"OK" + out)
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent
            try:
                os.write(w, b"EX" + traceback.format_exc().encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    status = None
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if ready:
            b = os.read(r, 1 << 16)
            if b:
                chunks.append(b)
                continue
            break                    # EOF: the child is done (or dead)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return Result(None, "", "timed out")
    os.close(r)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    if data.startswith(b"OK"):
        return Result(rc, data[2:].decode(), "")
    return Result(rc, "", data[2:].decode("utf-8", "replace"))
