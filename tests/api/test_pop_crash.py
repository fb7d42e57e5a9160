"""A writer killed by SIGKILL inside pop()/popitem() (at "pop-removed",
right after the slot was removed): as for a delete, the next writer
repairs at once, the key is gone and nothing else changed."""

import os
import signal
import subprocess
import sys

import pytest

import dbm_shm


@pytest.mark.parametrize("call", ["db.pop(b'k5')", "db.popitem()"])
def test_killed_inside_pop(tmp_path, call):
    path = str(tmp_path / "db")
    model = {b"k%d" % i: b"v%d" % i * 50 for i in range(200)}
    with dbm_shm.open(path, "n") as db:
        db.update(model)
    code = f"import dbm_shm\ndb = dbm_shm.open({path!r}, 'w')\n{call}\n"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DSHM_CRASH_AT": "pop-removed:1"},
                       capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with dbm_shm.open(path, "w") as db:
        assert db.stats()["recoveries"] == 1
        assert db.check() == []
        gone = set(model) - set(db.keys())
        assert len(gone) == 1 and len(db) == 199
        if "pop(" in call:
            assert gone == {b"k5"}
        assert all(db[k] == v for k, v in model.items() if k not in gone)
        # The store goes on: pop and popitem work after the repair.
        k, v = db.popitem()
        assert model[k] == v
