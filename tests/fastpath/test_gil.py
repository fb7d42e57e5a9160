"""The fast path holds the GIL only for a try that never waits: a get that
has to wait for the writer (its bucket's counter odd under a live writer),
and a set that has to wait for the writer lock, wait with the GIL
released, so the process's other threads run meanwhile.

A writer process is frozen by SIGSTOP inside an insert (the crash hook
with ``DSHM_CRASH_SIGNAL``), its bucket's counter odd and the writer lock
held. A thread of the test process then reads that bucket, or sets a key,
through the fast path: the try is not conclusive (a get) or answers
DSHM_BUSY (a set's ``DSHM_TRY``), and the full call ends up waiting for
the lock. The main thread must keep running meanwhile; once the writer is
killed, the call answers (after the repair).
"""

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

import dbm_shm
from dbm_shm import _fastglue

pytestmark = pytest.mark.skipif(not _fastglue.ENABLED, reason="the C fast path is off or not built")

_READER = textwrap.dedent("""
    import sys, threading, time, dbm_shm
    path = sys.argv[1]
    db = dbm_shm.open(path, "w")
    before = db.stats()
    out = {}
    def read():
        if sys.argv[2] == "get":
            out["v"] = db.get(b"frozen-key", b"absent")
        else:
            db[b"set-key"] = b"w" * 10
            out["v"] = db[b"set-key"]
    t = threading.Thread(target=read)
    t.start()
    # The main thread runs Python while the reader waits for the writer.
    ticks, end = 0, time.monotonic() + 0.5
    while time.monotonic() < end:
        ticks += 1
    print("ticks", ticks, "alive", t.is_alive(), flush=True)
    sys.stdin.readline()          # the test kills the writer, then says go
    t.join(60)
    after = db.stats()
    print("value", out.get("v"), "joined", not t.is_alive(),
          "fast", after["fast_" + sys.argv[2] + "s"] - before["fast_" + sys.argv[2] + "s"],
          "fallbacks", after["fast_fallbacks"] - before["fast_fallbacks"], flush=True)
""")

_WRITER = textwrap.dedent("""
    import sys, dbm_shm
    with dbm_shm.open(sys.argv[1], "w") as db:
        db[b"frozen-key"] = b"v" * 10
""")


@pytest.mark.parametrize("op", ["get", "set"])
def test_a_call_waits_for_a_writer_without_the_gil(tmp_path, op):
    path = str(tmp_path / "db")
    with dbm_shm.open(path, "c") as db:
        for i in range(20):
            db[b"k%d" % i] = b"x"
    env = dict(os.environ, DSHM_CRASH_AT="insert:1", DSHM_CRASH_SIGNAL=str(int(signal.SIGSTOP)))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path], env=env)
    try:
        _, status = os.waitpid(writer.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the writer did not stop at its insert: status {status:#x}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSHM_CRASH")}
        reader = subprocess.Popen([sys.executable, "-c", _READER, path, op], env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            ready, _, _ = select.select([reader.stdout], [], [], 60)
            assert ready, "the reader printed nothing in 60 s: its main thread never ran again"
            first = reader.stdout.readline().split()
            assert first[:1] == ["ticks"], first
            assert int(first[1]) > 1000, f"the main thread hardly ran while a get waited: {first}"
            assert first[3] == "True", f"the {op} did not wait for the frozen writer: {first}"
            writer.kill()
            writer.wait(30)
            out, _ = reader.communicate("go\n", timeout=60)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        words = out.split()
        want = ("b'absent'", "b'vvvvvvvvvv'") if op == "get" else ("b'wwwwwwwwww'",)
        assert words[0] == "value" and words[1] in want, out
        assert words[3] == "True", out
        assert words[5] == "1" and words[7] == "0", f"not served by the fast path: {out}"
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    with dbm_shm.open(path, "r") as db:
        assert db.check() == []
        assert len(db) in ((20, 21) if op == "get" else (21, 22))
