"""Threads and processes racing a writer through the fast path never see
a torn value (each value carries its own checksum; see _race_worker.py)."""

import json
import os
import subprocess
import sys
import threading

import dbm_shm
from dbm_shm import _fastglue

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _race_worker as rw  # noqa: E402

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dbm_shm.__file__)))
SECONDS = 2.0


def _spawn(mode, path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.Popen([sys.executable, os.path.join(HERE, "_race_worker.py"), mode, str(path), str(SECONDS)],
                            env=env, stdout=subprocess.PIPE, text=True)


def test_no_torn_values_threads_and_processes(db_path):
    db = dbm_shm.open(db_path, "c")
    for k in rw.KEYS:
        db[k] = rw.make(k, 0)
    writer = _spawn("write", db_path)
    reader = _spawn("read", db_path)
    results, errors = [], []

    def thread_reader():
        try:
            results.append(rw.read(db, SECONDS))
        except BaseException as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=thread_reader) for _ in range(3)]
    for t in threads:
        t.start()
    # and a thread of this process writing too, through the fast path
    seq = 1 << 40
    for _ in range(2000):
        for k in rw.KEYS[:4]:
            db[k] = rw.make(k, seq)
        seq += 1
    for t in threads:
        t.join()
    out, _ = reader.communicate(timeout=60)
    assert writer.wait(timeout=60) == 0
    assert reader.returncode == 0, "reader process saw a torn value (see its stderr)"
    assert not errors, errors
    other = json.loads(out)
    assert other["reads"] > 0 and all(r["reads"] > 0 for r in results)
    st = db.stats()
    if _fastglue.ENABLED:
        assert st["fast_gets"] > 0 and st["fast_sets"] > 0
        assert other["fast_gets"] > 0
    db.close()
