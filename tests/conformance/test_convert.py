"""dbm_shm.convert(src, dst): any database the stdlib dbm can open, into a
dbm_shm file, every key checked.

gdbm and ndbm files need a Python built with ``_gdbm``/``_dbm``; the pyenv
interpreters have neither, Debian's ``/usr/bin/python3`` has both. So those
files are made by a subprocess of ``/usr/bin/python3``; this interpreter must
refuse them with a clear ``dbm_shm.error``, and the real conversion is run
under ``/usr/bin/python3`` with a copy of the dbm_shm package under test on
its ``PYTHONPATH`` (its cffi module is built for the abi3 stable ABI, so one
build serves both; where it is not, those tests are skipped with the reason).
"""

import dbm
import dbm.dumb
import errno
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess

import pytest

import dbm_shm

from ._cpython import saved_dbm_state

SYSTEM_PY = "/usr/bin/python3"
HAS_SQLITE3 = importlib.util.find_spec("dbm.sqlite3") is not None
HAS_GNU_HERE = importlib.util.find_spec("_gdbm") is not None


def _system_python_has(module):
    if not os.path.exists(SYSTEM_PY):
        return False
    r = subprocess.run([SYSTEM_PY, "-c", f"import {module}"], capture_output=True)
    return r.returncode == 0


SYSTEM_GDBM = _system_python_has("dbm.gnu")
SYSTEM_NDBM = _system_python_has("dbm.ndbm")


def sample(n=3000):
    """Keys and values of every shape: binary, empty, Unicode, large."""
    items = {b"k%05d" % i: b"value %d " % i * (i % 7) for i in range(n)}
    items.update({
        b"": b"empty key",
        b"\x00\xff\x00": b"\x00" * 3,
        b"empty value": b"",
        "ключ".encode(): "значение ✓".encode(),
        b"large": bytes(range(256)) * 800,  # 200 KiB: beyond the read buffer
        b"k" * 1000: b"long key",
    })
    return items


def fill(db, items):
    for k, v in items.items():
        db[k] = v


def contents(path):
    with dbm_shm.open(path, "r") as db:
        return dict(db.items())


@pytest.fixture
def dbm_state():
    with saved_dbm_state():
        yield dbm


def make_dumb(path, items):
    with dbm.dumb.open(str(path), "n") as db:
        fill(db, items)
    return str(path)


# ---------------------------------------------------------------------------
# Sources this interpreter can read


def test_from_dumb(tmp_path):
    items = sample()
    src = make_dumb(tmp_path / "legacy", items)
    dst = tmp_path / "new.shm"
    seen = []
    n = dbm_shm.convert(src, dst, progress=seen.append)
    assert n == len(items)
    assert contents(dst) == items
    assert dbm_shm.whichdb(dst) == "dbm.shm"
    assert seen == sorted(seen) and seen[-1] == n and len(set(seen)) == len(seen)
    with dbm.dumb.open(src, "r") as db:  # the source is untouched
        assert len(db) == len(items)


@pytest.mark.skipif(not HAS_SQLITE3, reason="dbm.sqlite3 is new in Python 3.13")
def test_from_sqlite3(tmp_path):
    import dbm.sqlite3

    items = sample()
    src = str(tmp_path / "legacy.sqlite")
    with dbm.sqlite3.open(src, "n") as db:
        fill(db, items)
    dst = str(tmp_path / "new.shm")
    assert dbm_shm.convert(src, dst) == len(items)
    assert contents(dst) == items


@pytest.mark.skipif(not HAS_GNU_HERE, reason="this interpreter has no dbm.gnu (_gdbm)")
def test_from_gdbm_in_process(tmp_path):
    import dbm.gnu

    items = sample()
    src = str(tmp_path / "legacy.gdbm")
    with dbm.gnu.open(src, "n") as db:
        fill(db, items)
    dst = str(tmp_path / "new.shm")
    assert dbm_shm.convert(src, dst) == len(items)
    assert contents(dst) == items


def test_from_dbm_shm_without_register(tmp_path):
    items = sample(100)
    src = str(tmp_path / "a.shm")
    with dbm_shm.open(src, "c") as db:
        fill(db, items)
    assert not getattr(dbm.whichdb, "_dbm_shm", False)
    assert dbm_shm.convert(src, tmp_path / "b.shm") == len(items)
    assert contents(tmp_path / "b.shm") == items


def test_registered_dbm_open_reads_the_result(dbm_state, tmp_path):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    dst = str(tmp_path / "new")
    dbm_shm.convert(src, dst)
    dbm_shm.register()
    with dbm.open(dst) as db:
        assert isinstance(db, dbm_shm.Database) and db[b"a"] == b"1"


@pytest.mark.parametrize("spelling", [os.fsencode, pathlib.Path])
def test_path_spellings(tmp_path, spelling):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    dst = str(tmp_path / "new")
    assert dbm_shm.convert(spelling(src), spelling(dst)) == 1
    assert contents(dst) == {b"a": b"1"}


# ---------------------------------------------------------------------------
# The destination flag


def test_flag_n_replaces_existing_destination(tmp_path):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    dst = str(tmp_path / "new")
    with dbm_shm.open(dst, "c") as db:
        db[b"old"] = b"x"
    dbm_shm.convert(src, dst)
    assert contents(dst) == {b"a": b"1"}


@pytest.mark.parametrize("flag", ["c", "w"])
def test_flag_c_and_w_merge(tmp_path, flag):
    src = make_dumb(tmp_path / "legacy", {b"a": b"new", b"b": b"2"})
    dst = str(tmp_path / "new")
    with dbm_shm.open(dst, "c") as db:
        db[b"a"] = b"old"
        db[b"keep"] = b"k"
    assert dbm_shm.convert(src, dst, flag=flag) == 2
    assert contents(dst) == {b"a": b"new", b"b": b"2", b"keep": b"k"}


def test_flag_w_needs_an_existing_destination(tmp_path):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    with pytest.raises(dbm_shm.error) as info:
        dbm_shm.convert(src, tmp_path / "new", flag="w")
    assert info.value.errno == errno.ENOENT
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag", ["r", "x", "cs", ""])
def test_bad_flag(tmp_path, flag):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    with pytest.raises(ValueError):
        dbm_shm.convert(src, tmp_path / "new", flag=flag)


# ---------------------------------------------------------------------------
# Refusals: clear errors, nothing left behind


def test_missing_source(tmp_path):
    with pytest.raises(dbm_shm.error) as info:
        dbm_shm.convert(tmp_path / "nothing", tmp_path / "new")
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(tmp_path / "nothing")
    assert isinstance(info.value, dbm.error)
    assert not (tmp_path / "new").exists()


def test_directory_source(tmp_path):
    with pytest.raises(dbm_shm.error) as info:
        dbm_shm.convert(tmp_path, tmp_path / "new")
    assert info.value.errno == errno.EISDIR
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("content", [b"", b"plain text, not a database\n" * 20])
def test_unknown_source(tmp_path, content):
    (tmp_path / "text").write_bytes(content)
    with pytest.raises(dbm_shm.error, match="not a database"):
        dbm_shm.convert(tmp_path / "text", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_same_file(tmp_path):
    src = str(tmp_path / "a.shm")
    with dbm_shm.open(src, "c") as db:
        db[b"a"] = b"1"
    for dst in (src, tmp_path / "." / "a.shm"):
        with pytest.raises(dbm_shm.error, match="is the source"):
            dbm_shm.convert(src, dst, flag="c")
    os.link(src, tmp_path / "hardlink")
    with pytest.raises(dbm_shm.error, match="is the source"):
        dbm_shm.convert(src, tmp_path / "hardlink")
    assert contents(src) == {b"a": b"1"}


def test_destination_is_a_file_of_a_dumb_source(tmp_path):
    src = make_dumb(tmp_path / "legacy", {b"a": b"1"})
    for suffix in (".dat", ".dir"):
        with pytest.raises(dbm_shm.error, match="is the source"):
            dbm_shm.convert(src, src + suffix)
    with dbm.dumb.open(src, "r") as db:
        assert db[b"a"] == b"1"
    # A name that only looks like a side file of a backend is fine.
    assert dbm_shm.convert(src, src + ".db") == 1


def test_failure_midway_removes_a_destination_it_created(tmp_path, monkeypatch):
    src = make_dumb(tmp_path / "legacy", sample(50))
    calls = []

    def failing_getitem(self, key, _orig=dbm.dumb._Database.__getitem__):
        calls.append(key)
        if len(calls) > 10:
            raise OSError(errno.EIO, "simulated read error")
        return _orig(self, key)

    monkeypatch.setattr(dbm.dumb._Database, "__getitem__", failing_getitem)
    with pytest.raises(OSError, match="simulated"):
        dbm_shm.convert(src, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # An existing destination is left in place.
    with dbm_shm.open(tmp_path / "old", "c") as db:
        db[b"keep"] = b"1"
    calls.clear()
    with pytest.raises(OSError, match="simulated"):
        dbm_shm.convert(src, tmp_path / "old", flag="c")
    assert contents(tmp_path / "old")[b"keep"] == b"1"


# ---------------------------------------------------------------------------
# gdbm and ndbm files, made by /usr/bin/python3


def make_with_system_python(module, path, items):
    code = (f"import {module} as m, json, sys\n"
            "items = json.load(sys.stdin)\n"
            "with m.open(sys.argv[1], 'n') as d:\n"
            "    for k, v in items:\n"
            "        d[bytes.fromhex(k)] = bytes.fromhex(v)\n")
    data = json.dumps([[k.hex(), v.hex()] for k, v in items.items()])
    subprocess.run([SYSTEM_PY, "-c", code, str(path)], input=data, text=True, check=True)
    return str(path)


needs_system_gdbm = pytest.mark.skipif(
    not SYSTEM_GDBM, reason=f"no {SYSTEM_PY} with dbm.gnu to make a gdbm file")


@needs_system_gdbm
@pytest.mark.skipif(HAS_GNU_HERE,
                    reason="this interpreter has dbm.gnu (see test_from_gdbm_in_process)")
def test_gdbm_source_without_gnu_module_is_a_clear_error(tmp_path, dbm_state):
    src = make_with_system_python("dbm.gnu", tmp_path / "legacy.gdbm", {b"a": b"1"})
    dst = tmp_path / "new"
    assert dbm.whichdb(src) == "dbm.gnu"
    for registered in (False, True):
        if registered:
            dbm_shm.register()
        with pytest.raises(dbm_shm.error) as info:
            dbm_shm.convert(src, dst)
        message = str(info.value)
        assert "has no dbm.gnu module" in message, message
        assert f"gdbm_dump {src} | dbm-shm load - {dst}" in message, message
        assert "python" in message.lower()
        assert not dst.exists()


@pytest.fixture(scope="module")
def system_python_with_dbm_shm(tmp_path_factory):
    """Run ``/usr/bin/python3`` with a copy of the dbm_shm under test."""
    if not os.path.exists(SYSTEM_PY):
        pytest.skip(f"no {SYSTEM_PY}")
    root = tmp_path_factory.mktemp("syspath")
    shutil.copytree(os.path.dirname(dbm_shm.__file__), root / "dbm_shm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONNOUSERSITE="1")
    probe = subprocess.run([SYSTEM_PY, "-c", "import dbm_shm; dbm_shm.open"],
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{SYSTEM_PY} cannot import this build of dbm_shm ({last}); "
                    "the CLI tests cover conversion from gdbm with a Python that can")

    def run(code, *args):
        r = subprocess.run([SYSTEM_PY, "-c", code, *map(str, args)], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    return run


@pytest.mark.parametrize("module", ["dbm.gnu", "dbm.ndbm"])
def test_real_conversion_under_system_python(tmp_path, system_python_with_dbm_shm, module):
    if not _system_python_has(module):
        pytest.skip(f"{SYSTEM_PY} has no {module}")
    items = sample()
    src = make_with_system_python(module, tmp_path / "legacy", items)
    dst = tmp_path / "new.shm"
    out = system_python_with_dbm_shm(
        "import dbm_shm, sys\n"
        "print(dbm_shm.whichdb(sys.argv[1]), dbm_shm.convert(sys.argv[1], sys.argv[2]))\n",
        src, dst)
    kind, n = out.split()
    assert kind == module and int(n) == len(items)
    assert contents(dst) == items  # read back here, by this interpreter
