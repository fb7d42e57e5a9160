"""dbm_shm.fast_path_enabled() and the note in 'dbm-shm info' tell whether
the C fast path serves this process, and why not."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

dbm_shm = pytest.importorskip("dbm_shm")

#: Makes ``import dbm_shm._fast`` fail, as where the extension was not built.
_BLOCK_FAST = textwrap.dedent("""
    import sys
    class _NoFast:
        def find_spec(self, name, path=None, target=None):
            if name == "dbm_shm._fast":
                raise ImportError("blocked for the test")
            return None
    sys.meta_path.insert(0, _NoFast())
""")


def _python(code, **env):
    full = dict(os.environ)
    full.pop("DSHM_NO_FASTPATH", None)
    full.update(env)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_public_and_typed():
    assert "fast_path_enabled" in dbm_shm.__all__
    assert dbm_shm.fast_path_enabled.__annotations__["return"] in (bool, "bool")
    assert dbm_shm.fast_path_enabled.__doc__


def test_on_by_default():
    # the in-place build has the extension
    assert _python("import dbm_shm; print(dbm_shm.fast_path_enabled())") == "True"


@pytest.mark.parametrize("value", ["1", "yes"])
def test_off_with_the_environment_variable(value):
    code = ("import dbm_shm; from dbm_shm import _fastglue; "
            "print(dbm_shm.fast_path_enabled(), _fastglue.OFF_REASON)")
    assert _python(code, DSHM_NO_FASTPATH=value) == f"False turned off by DSHM_NO_FASTPATH={value}"


def test_zero_keeps_it_on():
    assert _python("import dbm_shm; print(dbm_shm.fast_path_enabled())",
                   DSHM_NO_FASTPATH="0") == "True"


def test_off_when_the_extension_is_missing():
    out = _python(_BLOCK_FAST + "import dbm_shm\nprint(dbm_shm.fast_path_enabled())\n"
                  "from dbm_shm import _fastglue\nprint(_fastglue.OFF_REASON)\n")
    enabled, reason = out.splitlines()
    assert enabled == "False"
    assert "dbm_shm._fast" in reason and "blocked for the test" in reason


def _info(path, *extra, **env):
    full = dict(os.environ)
    full.pop("DSHM_NO_FASTPATH", None)
    full.update(env)
    r = subprocess.run([sys.executable, "-m", "dbm_shm", "info", *extra, str(path)],
                       capture_output=True, text=True, env=full)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_info_says_whether_it_is_on(tmp_path):
    path = tmp_path / "p.shm"
    with dbm_shm.open(str(path), "c") as db:
        db[b"k"] = b"v"
    lines = [ln for ln in _info(path).splitlines() if ln.startswith("fast_path:")]
    assert len(lines) == 1 and lines[0].split() == ["fast_path:", "on"]
    off = [ln for ln in _info(path, DSHM_NO_FASTPATH="1").splitlines()
           if ln.startswith("fast_path:")]
    assert len(off) == 1
    assert off[0].split(None, 1)[1].startswith("off (turned off by DSHM_NO_FASTPATH=1")
    assert json.loads(_info(path, "--json"))["fast_path"] is True
    assert json.loads(_info(path, "--json", DSHM_NO_FASTPATH="1"))["fast_path"] is False
