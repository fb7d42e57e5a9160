"""dbm_shm.register(): the stdlib backend ``dbm.shm`` (DESIGN.md section 2).

Every test that registers runs inside the ``dbm_state`` fixture, which puts
the stdlib ``dbm`` package back exactly as it was (``dbm._names``,
``dbm._modules``, ``dbm._defaultmod``, ``dbm.whichdb``, ``dbm.shm`` and
``sys.modules['dbm.shm']``). Facts about a fresh interpreter — importing
dbm_shm changes nothing, registering before the first ``dbm.open`` — are
checked in a subprocess of the same interpreter.
"""

import dbm
import dbm.dumb
import importlib
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import dbm_shm

from ._cpython import saved_dbm_state

HAS_SQLITE3 = importlib.util.find_spec("dbm.sqlite3") is not None
HAS_GNU_HERE = importlib.util.find_spec("_gdbm") is not None
SYSTEM_PY = "/usr/bin/python3"


def _system_python_has_gdbm():
    if not os.path.exists(SYSTEM_PY):
        return False
    r = subprocess.run([SYSTEM_PY, "-c", "import dbm.gnu"], capture_output=True)
    return r.returncode == 0


SYSTEM_GDBM = _system_python_has_gdbm()


@pytest.fixture
def dbm_state():
    """Snapshot the stdlib dbm package's registry; restore it afterwards."""
    with saved_dbm_state():
        yield dbm


def _snapshot():
    return (list(dbm._names), dict(dbm._modules), dbm._defaultmod, dbm.whichdb,
            sys.modules.get("dbm.shm"), getattr(dbm, "shm", None))


@pytest.fixture(autouse=True)
def _restored():
    """Every test of this module leaves the dbm package as it found it."""
    before = _snapshot()
    yield
    assert _snapshot() == before, "the dbm package was left changed"


@pytest.fixture
def fresh_dbm(dbm_state):
    """As if no ``dbm.open`` had run yet: nothing imported or cached."""
    dbm._defaultmod = None
    dbm._modules.clear()
    return dbm


def _stdlib_default_name():
    """The backend the unregistered stdlib uses for new files."""
    for name in dbm._names:
        if name == "dbm.shm":
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    raise AssertionError("no stdlib dbm backend")


def make_ours(path, items=None):
    with dbm_shm.open(path, "c") as db:
        for k, v in (items or {b"k": b"v"}).items():
            db[k] = v
    return str(path)


def make_dumb(path, items=None):
    with dbm.dumb.open(str(path), "c") as db:
        for k, v in (items or {b"k": b"dumb"}).items():
            db[k] = v
    return str(path)


def make_sqlite3(path, items=None):
    import dbm.sqlite3

    with dbm.sqlite3.open(str(path), "c") as db:
        for k, v in (items or {b"k": b"sqlite"}).items():
            db[k] = v
    return str(path)


def make_gdbm(path):
    code = ("import dbm.gnu, sys\n"
            "with dbm.gnu.open(sys.argv[1], 'n') as d:\n"
            "    d[b'k'] = b'gnu'\n")
    subprocess.run([SYSTEM_PY, "-c", code, str(path)], check=True)
    return str(path)


def run_python(code, *args):
    """Run ``code`` in a fresh process of this interpreter; return its JSON."""
    r = subprocess.run([sys.executable, "-c", _STATE + textwrap.dedent(code), *map(str, args)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------
# Importing dbm_shm changes nothing


_STATE = """
import dbm, sys
def state():
    return {
        "names": list(dbm._names),
        "modules": sorted(dbm._modules),
        "defaultmod": getattr(dbm._defaultmod, "__name__", None),
        "whichdb": dbm.whichdb.__module__ + "." + dbm.whichdb.__qualname__,
        "whichdb_wrapped": hasattr(dbm.whichdb, "__wrapped__"),
        "attr": hasattr(dbm, "shm"),
        "sys_modules": "dbm.shm" in sys.modules,
        "open": dbm.open.__module__,
    }
"""


def test_import_alone_changes_nothing():
    out = run_python("""
        import json
        before = state()
        import dbm_shm, dbm_shm._compat, dbm_shm._registry, dbm_shm._db, dbm_shm._errors
        after = state()
        print(json.dumps([before, after]))
    """)
    before, after = out
    assert before == after
    assert after["whichdb"] == "dbm.whichdb" and not after["whichdb_wrapped"]
    assert not after["attr"] and not after["sys_modules"]
    assert "dbm.shm" not in after["names"]


def test_using_dbm_shm_without_register_changes_nothing(tmp_path):
    out = run_python("""
        import json, sys, shelve
        import dbm_shm
        before = state()
        path = sys.argv[1]
        with dbm_shm.open(path, "c") as db:
            db["a"] = "1"
        dbm_shm.whichdb(path)
        with dbm_shm.open_shelf(path + ".shelf") as sh:
            sh["x"] = [1]
        dbm_shm.convert(path, path + ".copy")
        print(json.dumps([before, state(), dbm.whichdb(path)]))
    """, tmp_path / "db")
    before, after, kind = out
    assert before == after
    assert kind == ""  # the unregistered stdlib does not know the format


def test_stdlib_untouched_between_tests():
    # Registrations made by other test modules were undone (fixtures).
    assert "dbm.shm" not in sys.modules
    assert not hasattr(dbm, "shm")
    assert "dbm.shm" not in dbm._names and "dbm.shm" not in dbm._modules
    assert not getattr(dbm.whichdb, "_dbm_shm", False)


# ---------------------------------------------------------------------------
# What register() does


def test_register_makes_backend_module(dbm_state):
    dbm_shm.register()
    mod = sys.modules["dbm.shm"]
    assert mod.__name__ == "dbm.shm"
    assert dbm.shm is mod
    assert dbm._modules["dbm.shm"] is mod
    assert "dbm.shm" in dbm._names
    assert mod.open is dbm_shm.open
    assert mod.error is dbm_shm.error
    assert mod.open_flags == dbm_shm.open_flags == "rwcnfsu"
    assert importlib.import_module("dbm.shm") is mod
    assert importlib.util.find_spec("dbm.shm").name == "dbm.shm"
    ns = {}
    exec("import dbm.shm\nfrom dbm import shm", ns)  # the statements under test
    assert ns["dbm"].shm is mod and ns["shm"] is mod


def test_register_appends_so_stdlib_default_stays(dbm_state, tmp_path):
    default = _stdlib_default_name()
    dbm_shm.register()
    assert dbm._names[-1] == "dbm.shm"
    assert dbm._names[0] != "dbm.shm"
    path = str(tmp_path / "new")
    with dbm.open(path, "c") as db:
        db[b"k"] = b"v"
        assert not isinstance(db, dbm_shm.Database)
    assert dbm.whichdb(path) == default


@pytest.mark.skipif(not HAS_SQLITE3, reason="dbm.sqlite3 is new in Python 3.13")
def test_sqlite3_stays_default_unless_asked(dbm_state, tmp_path):
    dbm_shm.register()
    with dbm.open(str(tmp_path / "a"), "c") as db:
        db[b"k"] = b"v"
    assert dbm.whichdb(str(tmp_path / "a")) == "dbm.sqlite3"
    dbm_shm.register(default=True)
    with dbm.open(str(tmp_path / "b"), "c") as db:
        db[b"k"] = b"v"
        assert isinstance(db, dbm_shm.Database)
    assert dbm.whichdb(str(tmp_path / "b")) == "dbm.shm"
    with dbm.open(str(tmp_path / "a"), "r") as db:  # sqlite3 files still open
        assert db[b"k"] == b"v"


def test_register_is_idempotent(dbm_state):
    orig_whichdb = dbm.whichdb
    for _ in range(3):
        dbm_shm.register()
    mod = sys.modules["dbm.shm"]
    assert dbm._names.count("dbm.shm") == 1
    assert dbm.whichdb.__wrapped__ is orig_whichdb  # wrapped once
    dbm_shm.register()
    assert sys.modules["dbm.shm"] is mod  # the same module object each time
    for _ in range(3):
        dbm_shm.register(default=True)
    assert dbm._names.count("dbm.shm") == 1 and dbm._names[0] == "dbm.shm"
    assert dbm.whichdb.__wrapped__ is orig_whichdb


def test_default_true_after_plain_register_promotes(dbm_state, tmp_path):
    dbm_shm.register()
    dbm.open(str(tmp_path / "warm"), "c").close()  # caches dbm._defaultmod
    assert dbm._defaultmod is not sys.modules["dbm.shm"]
    dbm_shm.register(default=True)
    assert dbm._names[0] == "dbm.shm" and dbm._names.count("dbm.shm") == 1
    assert dbm._defaultmod is sys.modules["dbm.shm"]
    path = str(tmp_path / "new")
    with dbm.open(path, "c") as db:
        assert isinstance(db, dbm_shm.Database)
    assert dbm.whichdb(path) == "dbm.shm"


def test_plain_register_after_default_does_not_demote(dbm_state, tmp_path):
    dbm_shm.register(default=True)
    dbm_shm.register()
    assert dbm._names[0] == "dbm.shm" and dbm._names.count("dbm.shm") == 1
    with dbm.open(str(tmp_path / "new"), "n") as db:
        assert isinstance(db, dbm_shm.Database)


def test_default_true_with_defaultmod_cached_before(dbm_state, tmp_path):
    dumb = make_dumb(tmp_path / "old")
    with dbm.open(str(tmp_path / "cached"), "c"):  # the stdlib caches its default
        pass
    assert dbm._defaultmod is not None
    dbm_shm.register(default=True)
    with dbm.open(str(tmp_path / "new"), "c") as db:
        assert isinstance(db, dbm_shm.Database)
        db["x"] = "y"
    with dbm.open(dumb, "r") as db:  # other backends still open theirs
        assert db[b"k"] == b"dumb"


def test_default_true_before_first_dbm_open(fresh_dbm, tmp_path):
    # Nothing imported or cached yet (a fresh interpreter): registering as
    # the default must leave the other backends usable for existing files.
    dumb = make_dumb(tmp_path / "old")
    dbm_shm.register(default=True)
    with dbm.open(dumb, "r") as db:
        assert db[b"k"] == b"dumb"
    with dbm.open(str(tmp_path / "new"), "c") as db:
        assert isinstance(db, dbm_shm.Database)
    assert dbm._defaultmod is sys.modules["dbm.shm"]


def test_fresh_interpreter_register_default_then_shelve(tmp_path):
    dumb = make_dumb(tmp_path / "old")
    out = run_python("""
        import dbm, json, shelve, sys
        import dbm_shm
        dbm_shm.register(default=True)
        with dbm.open(sys.argv[1], "r") as db:       # existing dumb file
            old = db[b"k"].decode()
        with shelve.open(sys.argv[2]) as sh:          # a new shelf is ours
            sh["obj"] = {"a": [1, 2]}
        print(json.dumps([old, dbm.whichdb(sys.argv[2]), dbm._names[0]]))
    """, dumb, tmp_path / "shelf")
    assert out == ["dumb", "dbm.shm", "dbm.shm"]
    with dbm_shm.open_shelf(str(tmp_path / "shelf"), "r") as sh:
        assert sh["obj"] == {"a": [1, 2]}


@pytest.mark.skipif(not HAS_SQLITE3, reason="dbm.sqlite3 is new in Python 3.13")
def test_fresh_interpreter_plain_register_keeps_sqlite3(tmp_path):
    out = run_python("""
        import dbm, json, sys
        import dbm_shm
        dbm_shm.register()
        dbm.open(sys.argv[1], "c").close()
        print(json.dumps([dbm.whichdb(sys.argv[1]), dbm._names]))
    """, tmp_path / "new")
    assert out[0] == "dbm.sqlite3"
    assert out[1][0] == "dbm.sqlite3" and out[1][-1] == "dbm.shm"


def test_register_over_a_foreign_whichdb_wrapper(dbm_state, tmp_path):
    # Another library wrapped dbm.whichdb first: ours goes around theirs.
    calls = []
    orig = dbm.whichdb

    def theirs(filename):
        calls.append(filename)
        return orig(filename)

    dbm.whichdb = theirs
    dbm_shm.register()
    dbm_shm.register()
    assert dbm.whichdb.__wrapped__ is theirs
    dumb = make_dumb(tmp_path / "d")
    assert dbm.whichdb(dumb) == "dbm.dumb" and calls
    assert dbm.whichdb(make_ours(tmp_path / "o")) == "dbm.shm"


def test_whichdb_wrapper_looks_like_whichdb(dbm_state):
    orig = dbm.whichdb
    dbm_shm.register()
    assert dbm.whichdb is not orig
    assert dbm.whichdb.__name__ == orig.__name__
    assert dbm.whichdb.__doc__ == orig.__doc__
    assert dbm.whichdb.__wrapped__ is orig


# ---------------------------------------------------------------------------
# whichdb


def _kinds(tmp_path):
    """(path, expected whichdb) for files of every kind we can make here."""
    cases = [
        (make_ours(tmp_path / "ours.db"), "dbm.shm"),
        (make_dumb(tmp_path / "dumb"), "dbm.dumb"),
        (str(tmp_path / "missing"), None),
        (str(tmp_path), None),  # a directory
        (str(tmp_path / "ours.db" / "below"), None),  # ENOTDIR
    ]
    (tmp_path / "empty").write_bytes(b"")
    cases.append((str(tmp_path / "empty"), ""))
    (tmp_path / "junk").write_bytes(b"not a database at all" * 50)
    cases.append((str(tmp_path / "junk"), ""))
    (tmp_path / "magic-only").write_bytes(dbm_shm._registry.MAGIC)
    cases.append((str(tmp_path / "magic-only"), "dbm.shm"))
    (tmp_path / "short").write_bytes(dbm_shm._registry.MAGIC[:5])
    cases.append((str(tmp_path / "short"), ""))
    if HAS_SQLITE3:
        cases.append((make_sqlite3(tmp_path / "lite"), "dbm.sqlite3"))
    if SYSTEM_GDBM:
        cases.append((make_gdbm(tmp_path / "gnu"), "dbm.gnu"))
    return cases


@pytest.mark.parametrize("spelling", ["str", "bytes", "pathlike"])
def test_whichdb_registered(dbm_state, tmp_path, spelling):
    dbm_shm.register()
    convert = {"str": str, "bytes": os.fsencode, "pathlike": pathlib.Path}[spelling]
    for path, expected in _kinds(tmp_path):
        assert dbm.whichdb(convert(path)) == expected, path
        assert dbm_shm.whichdb(convert(path)) == expected, path


def test_dbm_shm_whichdb_without_register(tmp_path):
    for path, expected in _kinds(tmp_path):
        assert dbm_shm.whichdb(path) == expected, path
        assert dbm_shm.whichdb(pathlib.Path(path)) == expected, path
    assert not getattr(dbm.whichdb, "_dbm_shm", False)


def test_whichdb_unregistered_does_not_know_ours(tmp_path):
    assert dbm.whichdb(make_ours(tmp_path / "o")) == ""


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_whichdb_unreadable_file(dbm_state, tmp_path):
    path = make_ours(tmp_path / "o")
    os.chmod(path, 0)
    dbm_shm.register()
    assert dbm.whichdb(path) is None
    assert dbm_shm.whichdb(path) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_whichdb_of_a_fifo_is_not_ours_and_does_not_block(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    # The stdlib's own check would wait for a writer; ours returns at once.
    assert dbm_shm._registry._has_magic(fifo) is False


def test_whichdb_wrapper_raises_what_the_stdlib_raises(dbm_state):
    orig = dbm.whichdb
    dbm_shm.register()
    for bad in (12345, None, "nul\0byte"):
        with pytest.raises(Exception) as expected:
            orig(bad)
        with pytest.raises(expected.type):
            dbm.whichdb(bad)
        with pytest.raises(expected.type):
            dbm_shm.whichdb(bad)


def test_whichdb_prefers_our_file_over_stale_side_files(dbm_state, tmp_path):
    # A dumb database left beside PATH (PATH.dat/.dir) and our file at PATH:
    # the file at PATH itself is the database (see docs/compat.md).
    path = make_dumb(tmp_path / "db")
    make_ours(path, {b"k": b"ours"})
    dbm_shm.register()
    assert dbm.whichdb(path) == "dbm.shm"
    with dbm.open(path) as db:
        assert db[b"k"] == b"ours"


# ---------------------------------------------------------------------------
# dbm.open of our files


@pytest.mark.parametrize("flag", ["r", "w", "c", "ru", "wf", "cs", "wu"])
def test_dbm_open_our_file_with_each_flag(dbm_state, tmp_path, flag):
    path = make_ours(tmp_path / "o", {b"k": b"v", "ключ": "значение"})
    dbm_shm.register()
    with dbm.open(path, flag) as db:
        assert isinstance(db, dbm_shm.Database)
        assert db[b"k"] == b"v" and db["ключ"] == "значение".encode()
        if flag[0] == "r":
            with pytest.raises(dbm.error):
                db[b"k"] = b"w"
        else:
            db[b"new"] = b"1"
            del db[b"k"]
    with dbm_shm.open(path) as db:
        assert (b"new" in db) == (flag[0] != "r")


@pytest.mark.parametrize("spelling", [os.fsencode, pathlib.Path])
def test_dbm_open_our_file_bytes_and_pathlike(dbm_state, tmp_path, spelling):
    path = make_ours(tmp_path / "o")
    dbm_shm.register()
    with dbm.open(spelling(path), "w") as db:
        assert db[b"k"] == b"v"


def test_dbm_open_n_with_default_makes_ours_empty(dbm_state, tmp_path):
    path = make_ours(tmp_path / "o")
    dbm_shm.register(default=True)
    with dbm.open(path, "n") as db:
        assert isinstance(db, dbm_shm.Database)
        assert len(db) == 0
        db[b"fresh"] = b"1"
    assert dbm.whichdb(path) == "dbm.shm"


def test_dbm_open_n_without_default_uses_the_stdlib_default(dbm_state, tmp_path):
    # The stdlib never looks at the existing file for 'n': it makes a new
    # database of the default backend (documented in docs/compat.md).
    path = make_ours(tmp_path / "o")
    dbm_shm.register()
    with dbm.open(path, "n") as db:
        assert not isinstance(db, dbm_shm.Database)


def test_dbm_open_c_creates_ours_with_default(dbm_state, tmp_path):
    dbm_shm.register(default=True)
    path = str(tmp_path / "new")
    with dbm.open(path, "c", 0o600) as db:
        assert isinstance(db, dbm_shm.Database)
        db[b"a"] = b"b"
    assert dbm.whichdb(path) == "dbm.shm"
    assert os.stat(path).st_mode & 0o777 == 0o600 & ~_umask()
    with dbm.open(path, "c") as db:  # existing: opened, not recreated
        assert db[b"a"] == b"b"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dbm_open_other_backends_unaffected(dbm_state, tmp_path):
    dumb = make_dumb(tmp_path / "d")
    dbm_shm.register(default=True)
    with dbm.open(dumb, "w") as db:
        assert not isinstance(db, dbm_shm.Database)
        db[b"k2"] = b"v2"
    with dbm.open(dumb, "r") as db:
        assert db[b"k2"] == b"v2"


@pytest.mark.skipif(not SYSTEM_GDBM, reason=f"no {SYSTEM_PY} with dbm.gnu to make a gdbm file")
@pytest.mark.skipif(HAS_GNU_HERE, reason="this interpreter has dbm.gnu")
def test_dbm_open_gdbm_file_without_gnu_module(dbm_state, tmp_path):
    path = make_gdbm(tmp_path / "gnu")
    dbm_shm.register(default=True)
    with pytest.raises(dbm.error, match="dbm.gnu"):
        dbm.open(path, "r")


# ---------------------------------------------------------------------------
# Errors


def test_except_dbm_error_catches_ours(dbm_state, tmp_path):
    assert issubclass(dbm_shm.error, dbm.error)  # the tuple (dbm's, OSError)
    assert issubclass(dbm_shm.error, dbm.error[0]) and issubclass(dbm_shm.error, OSError)
    path = make_ours(tmp_path / "o")
    (tmp_path / "broken").write_bytes(dbm_shm._registry.MAGIC + b"\0" * 8)
    dbm_shm.register()
    with dbm.open(path, "r") as db:
        try:
            db[b"k"] = b"x"
        except dbm.error as exc:
            assert isinstance(exc, dbm_shm.error)
        else:
            pytest.fail("write to a read-only database did not raise")
    with pytest.raises(dbm.error):
        dbm.open(str(tmp_path / "broken"), "r")
    with pytest.raises(dbm.error):
        dbm.open(path, "x")
    db = dbm.open(path, "r")
    db.close()
    with pytest.raises(dbm.error):
        db.keys()
