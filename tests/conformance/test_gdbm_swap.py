"""``import dbm_shm as gdbm``: code written for dbm.gnu runs unchanged.

APP is a small program written against ``dbm.gnu`` the way such code is
usually written. It runs three ways and must report the same thing each
time:

* unchanged, with the real ``dbm.gnu``, under ``/usr/bin/python3`` (Debian's
  Python has ``_gdbm``; the pyenv builds do not) — this checks the program
  itself is faithful gdbm code;
* with only its import line swapped to ``import dbm_shm as gdbm``, in this
  process;
* the same swapped program as a script, in a fresh process of this
  interpreter.
"""

import json
import os
import subprocess
import sys

import pytest

import dbm_shm

SYSTEM_PY = "/usr/bin/python3"
GNU_IMPORT = "import dbm.gnu as gdbm"
SWAP_IMPORT = "import dbm_shm as gdbm"

APP = '''\
import dbm.gnu as gdbm
import dbm
import errno
import json
import os
import sys

# Fast mode where the library offers it: the usual gdbm idiom.
WRITE_FLAG = "cf" if "f" in gdbm.open_flags else "c"


def load_users(path, users):
    """Store a few records: str and bytes keys and values."""
    with gdbm.open(path, WRITE_FLAG, 0o640) as db:
        for uid, name in users.items():
            db["user:%d" % uid] = name                 # str -> UTF-8
        db[b"raw:\\x00\\xff"] = b"\\x01\\x02"           # bytes, with NULs
        db["caf\\xe9"] = "cr\\xe8me br\\xfbl\\xe9e"
        db[b"empty"] = b""
        db.sync()


def walk(db):
    """The classic gdbm traversal."""
    out = []
    key = db.firstkey()
    while key is not None:
        out.append(key)
        key = db.nextkey(key)
    return out


def main(path):
    r = {}
    r["open_flags"] = sorted(set("rwcnfsu") & set(gdbm.open_flags))
    load_users(path, {1: "ada", 2: "grace", 3: "edsger"})

    with gdbm.open(path, "w") as db:
        r["len"] = len(db)
        r["bool"] = bool(db)
        r["get"] = db.get("user:1")
        r["get_bytes_key"] = db.get(b"user:2")
        r["get_default"] = db.get("user:9", b"nobody")
        r["get_missing"] = db.get("user:9")
        r["unicode_value"] = db["caf\\xe9"].decode("utf-8")
        r["raw"] = db[b"raw:\\x00\\xff"].hex()
        r["empty"] = db[b"empty"]
        r["in"] = ["user:1" in db, b"user:1" in db, "user:9" in db]
        r["setdefault_new"] = db.setdefault("counter", b"0")
        r["setdefault_old"] = db.setdefault("counter", b"99")
        keys = walk(db)
        r["walk"] = sorted(k.decode("utf-8", "replace") for k in keys)
        r["walk_equals_keys"] = sorted(keys) == sorted(db.keys())
        r["keys_are_bytes"] = all(type(k) is bytes for k in db.keys())
        r["values_are_bytes"] = all(type(db[k]) is bytes for k in keys)
        db["counter"] = str(int(db["counter"]) + 1)
        r["counter"] = db["counter"]
        try:
            db["user:9"]
        except KeyError as e:
            r["keyerror"] = e.args[0]
        del db["user:3"]
        try:
            del db["user:3"]
        except KeyError:
            r["del_twice"] = "KeyError"
        try:
            db[1] = b"x"
        except TypeError:
            r["int_key"] = "TypeError"
        try:
            db["x"] = 1
        except TypeError:
            r["int_value"] = "TypeError"
        try:
            type(db)()
        except TypeError:
            r["instantiate"] = "TypeError"

        # Churn, then give the space back.
        for i in range(2000):
            db["tmp:%d" % i] = "x" * 200
        for key in [k for k in db.keys() if k.startswith(b"tmp:")]:
            del db[key]
        size = os.path.getsize(path)
        db.reorganize()
        db.sync()
        r["reorganize_shrinks"] = os.path.getsize(path) <= size
        r["after_reorganize"] = sorted(k.decode("utf-8", "replace") for k in db.keys())

    db = gdbm.open(path, "r")
    try:
        db["user:1"] = "mallory"
    except gdbm.error as e:
        r["readonly"] = [isinstance(e, OSError), isinstance(e, dbm.error)]
    r["readonly_value"] = db["user:1"]
    db.close()
    try:
        db["user:1"]
    except gdbm.error as e:
        r["closed"] = str(e)
    db.close()                                         # closing twice is fine

    try:
        gdbm.open(os.path.join(os.path.dirname(path), "missing.db"), "r")
    except gdbm.error as e:
        r["missing"] = [e.errno == errno.ENOENT, os.path.basename(e.filename)]
    try:
        gdbm.open(path, "rx")
    except gdbm.error as e:
        r["bad_flag"] = str(e)
    try:
        gdbm.open(path, "z")
    except gdbm.error as e:
        r["bad_first_flag"] = str(e)
    try:
        gdbm.open(path, 1)
    except TypeError:
        r["flag_type"] = "TypeError"
    try:
        with gdbm.open(os.path.join(os.path.dirname(path), "missing.db"), "w"):
            pass
    except dbm.error:                                  # the stdlib's catch-all
        r["dbm_error"] = True

    with gdbm.open(path, "n") as db:                   # start afresh
        r["n_len"] = len(db)
        db[b"k"] = b"v"
    with gdbm.open(path, "c") as db:                   # 'c' keeps what is there
        r["c_keeps"] = db.keys()
    return r


if __name__ == "__main__":
    result = main(sys.argv[1])
    print(json.dumps(result, sort_keys=True, default=lambda b: "bytes:" + b.hex()))
'''

EXPECTED = {
    "open_flags": ["c", "f", "n", "r", "s", "u", "w"],
    "len": 6,
    "bool": True,
    "get": b"ada",
    "get_bytes_key": b"grace",
    "get_default": b"nobody",
    "get_missing": None,
    "unicode_value": "crème brûlée",
    "raw": "0102",
    "empty": b"",
    "in": [True, True, False],
    "setdefault_new": b"0",
    "setdefault_old": b"0",
    "walk": sorted(["user:1", "user:2", "user:3", "raw:\x00\ufffd", "café", "empty",
                    "counter"]),
    "walk_equals_keys": True,
    "keys_are_bytes": True,
    "values_are_bytes": True,
    "counter": b"1",
    "keyerror": "user:9",
    "del_twice": "KeyError",
    "int_key": "TypeError",
    "int_value": "TypeError",
    "instantiate": "TypeError",
    "reorganize_shrinks": True,
    "after_reorganize": sorted(["user:1", "user:2", "raw:\x00\ufffd", "café", "empty",
                                "counter"]),
    "readonly": [True, True],
    "readonly_value": b"ada",
    "closed": "GDBM object has already been closed",
    "missing": [True, "missing.db"],
    "bad_flag": "Flag 'x' is not supported.",
    "bad_first_flag": "First flag must be one of 'r', 'w', 'c' or 'n'",
    "flag_type": "TypeError",
    "dbm_error": True,
    "n_len": 0,
    "c_keeps": [b"k"],
}


def swapped():
    assert APP.startswith(GNU_IMPORT + "\n")
    return APP.replace(GNU_IMPORT, SWAP_IMPORT, 1)


def as_json(result):
    return json.loads(json.dumps(result, sort_keys=True, default=lambda b: "bytes:" + b.hex()))


def run_script(python, source, path, env=None):
    r = subprocess.run([python, "-c", source, str(path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_swapped_program_in_process(tmp_path):
    namespace = {"__name__": "gdbm_app"}
    exec(compile(swapped(), "gdbm_app.py", "exec"), namespace)
    assert namespace["gdbm"] is dbm_shm
    result = namespace["main"](str(tmp_path / "app.db"))
    assert as_json(result) == as_json(EXPECTED)


def test_swapped_program_as_a_script(tmp_path):
    assert run_script(sys.executable, swapped(), tmp_path / "app.db") == as_json(EXPECTED)


@pytest.mark.skipif(not os.path.exists(SYSTEM_PY), reason=f"no {SYSTEM_PY}")
def test_unchanged_program_with_real_gdbm(tmp_path):
    probe = subprocess.run([SYSTEM_PY, "-c", "import dbm.gnu"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PY} has no dbm.gnu")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    assert run_script(SYSTEM_PY, APP, tmp_path / "app.db", env) == as_json(EXPECTED)


def test_module_interface_matches_dbm_gnu():
    for name in ("open", "error", "open_flags"):
        assert hasattr(dbm_shm, name)
    assert issubclass(dbm_shm.error, OSError)
    assert dbm_shm.open_flags == "rwcnfsu"


GDBM_METHODS = {  # _gdbm.gdbm of Python 3.13 (3.9-3.12 lack clear)
    "clear", "close", "firstkey", "get", "keys", "nextkey", "reorganize",
    "setdefault", "sync", "__enter__", "__exit__", "__contains__",
    "__getitem__", "__setitem__", "__delitem__", "__len__",
}


def test_database_has_every_gdbm_method(tmp_path):
    names = set(GDBM_METHODS)
    if os.path.exists(SYSTEM_PY):
        code = ("import dbm.gnu, sys, json\n"
                "db = dbm.gnu.open(sys.argv[1], 'c')\n"
                "print(json.dumps([n for n in dir(db) if not n.startswith('__') "
                "or n in ('__enter__', '__exit__', '__contains__', '__getitem__', "
                "'__setitem__', '__delitem__', '__len__')]))\n")
        r = subprocess.run([SYSTEM_PY, "-c", code, str(tmp_path / "g")],
                           capture_output=True, text=True)
        if r.returncode == 0:
            names |= set(json.loads(r.stdout))
    with dbm_shm.open(tmp_path / "o", "c") as db:
        missing = {n for n in names if not callable(getattr(db, n, None))}
    assert not missing


def test_iteration_order_is_the_walk_order(tmp_path):
    # Both stores give keys in hash order; keys(), iteration and the
    # firstkey/nextkey walk agree with each other.
    with dbm_shm.open(tmp_path / "o", "c") as db:
        for i in range(500):
            db[b"%d" % i] = b""
        walk = []
        key = db.firstkey()
        while key is not None:
            walk.append(key)
            key = db.nextkey(key)
        assert walk == db.keys() == list(db)
        assert sorted(walk) == sorted(b"%d" % i for i in range(500))


def test_gdbm_writers_lock_each_other_out_but_dbm_shm_does_not(tmp_path):
    path = str(tmp_path / "o")
    with dbm_shm.open(path, "c") as a, dbm_shm.open(path, "w") as b, \
            dbm_shm.open(path, "r") as reader:
        a[b"from"] = b"a"
        b[b"from"] = b"b"  # a second writer: allowed, one write at a time
        assert a[b"from"] == reader[b"from"] == b"b"


@pytest.mark.parametrize("flag", ["cu", "cf", "cs", "cfsu", "wu", "ru"])
def test_modifier_flags_accepted(tmp_path, flag):
    path = str(tmp_path / "o")
    dbm_shm.open(path, "c").close()
    with dbm_shm.open(path, flag) as db:
        if flag[0] != "r":
            db[b"k"] = b"v"
            assert db[b"k"] == b"v"


def test_extras_beyond_gdbm(tmp_path):
    with dbm_shm.open(tmp_path / "o", "c") as db:
        db[b"a"] = b"1"
        db[b"b"] = b"2"
        assert sorted(db.items()) == [(b"a", b"1"), (b"b", b"2")]
        assert sorted(db.values()) == [b"1", b"2"]
        assert sorted(db.iteritems()) == [(b"a", b"1"), (b"b", b"2")]
        assert sorted(db) == [b"a", b"b"]
        before = db.commit_id()
        db[b"c"] = b"3"
        assert db.commit_id() > before
        assert db.stats()["count"] == 3
        assert db.check() == []
        db.clear()  # dbm.gnu has clear() only from Python 3.13
        assert len(db) == 0


def test_error_messages_are_readable(tmp_path):
    # Messages differ from gdbm's (docs/compat.md) but say what went wrong.
    path = str(tmp_path / "o")
    dbm_shm.open(path, "c").close()
    with dbm_shm.open(path, "r") as db:
        with pytest.raises(dbm_shm.error) as info:
            db[b"k"] = b"v"
    assert "read-only" in str(info.value) and path in str(info.value)
    assert "Errno None" not in str(info.value)
    for size in (100, 10000):  # shorter and longer than a header
        junk = str(tmp_path / f"junk{size}")
        with open(junk, "wb") as f:
            f.write(b"x" * size)
        for flag in ("r", "w", "c"):
            with pytest.raises(dbm_shm.error) as info:
                dbm_shm.open(junk, flag)
            assert "not a dbm_shm database" in str(info.value), (size, flag)
            assert info.value.filename == junk
    with pytest.raises(dbm_shm.error) as info:
        dbm_shm.open(str(tmp_path / "missing"), "r")
    assert str(info.value).endswith("No such file or directory: %r" % str(tmp_path / "missing"))
