"""open(): the flags r/w/c/n, the modifiers f/s/u, mode, and path types."""

import errno
import itertools
import os
import pathlib
import stat

import pytest

import dbm_shm

from ._util import assert_matches, make_file

SAMPLE = {b"a": b"1", b"b": b"two", "ключ".encode(): b"\x00\xff"}
MODIFIERS = ["", "f", "s", "u", "fs", "su", "fu", "fsu", "usf"]


@pytest.fixture
def existing(db_path):
    make_file(db_path, SAMPLE)
    return db_path


def test_open_flags_constant():
    assert dbm_shm.open_flags == "rwcnfsu"


def test_default_flag_is_read_only(existing):
    with dbm_shm.open(existing) as d:
        assert d[b"a"] == b"1"
        with pytest.raises(dbm_shm.error):
            d[b"a"] = b"x"
    with dbm_shm.open(existing) as d:
        assert d[b"a"] == b"1"


@pytest.mark.parametrize("mod", MODIFIERS)
def test_c_creates_missing_file(db_path, mod):
    assert not db_path.exists()
    with dbm_shm.open(db_path, "c" + mod) as d:
        assert db_path.is_file()
        assert len(d) == 0
        assert not d
        d[b"k"] = b"v"
    with dbm_shm.open(db_path, "r") as d:
        assert dict(d.items()) == {b"k": b"v"}


@pytest.mark.parametrize("mod", MODIFIERS)
def test_c_keeps_existing_data(existing, mod):
    with dbm_shm.open(existing, "c" + mod) as d:
        assert_matches(d, SAMPLE)
        d[b"new"] = b"n"
    with dbm_shm.open(existing, "r") as d:
        assert_matches(d, {**SAMPLE, b"new": b"n"})


@pytest.mark.parametrize("mod", MODIFIERS)
def test_n_creates_missing_file(db_path, mod):
    with dbm_shm.open(db_path, "n" + mod) as d:
        assert len(d) == 0
        d[b"k"] = b"v"
    with dbm_shm.open(db_path, "r") as d:
        assert d.keys() == [b"k"]


@pytest.mark.parametrize("mod", MODIFIERS)
def test_n_empties_existing_file(existing, mod):
    with dbm_shm.open(existing, "n" + mod) as d:
        assert len(d) == 0
        assert d.keys() == []
        assert b"a" not in d
        assert d.check() == []
        d[b"fresh"] = b"1"
    with dbm_shm.open(existing, "r") as d:
        assert_matches(d, {b"fresh": b"1"})


def test_n_on_big_file_starts_small(db_path):
    with dbm_shm.open(db_path, "n") as d:
        for i in range(20000):
            d[b"%d" % i] = b"x" * 100
    big = os.path.getsize(db_path)
    with dbm_shm.open(db_path, "n") as d:
        assert len(d) == 0
    assert os.path.getsize(db_path) < big / 4


def test_n_while_another_handle_is_open(existing):
    old = dbm_shm.open(existing, "w")
    try:
        with dbm_shm.open(existing, "n") as new:
            assert len(new) == 0
            # The old handle follows the new, empty store ...
            assert len(old) == 0
            assert b"a" not in old
            # ... and both see each other's writes.
            old[b"x"] = b"1"
            assert new[b"x"] == b"1"
            new[b"y"] = b"2"
            assert old[b"y"] == b"2"
    finally:
        old.close()
    with dbm_shm.open(existing, "r") as d:
        assert_matches(d, {b"x": b"1", b"y": b"2"})


@pytest.mark.parametrize("mod", MODIFIERS)
@pytest.mark.parametrize("flag", ["r", "w"])
def test_r_and_w_on_missing_file_fail(db_path, flag, mod):
    with pytest.raises(dbm_shm.error) as ei:
        dbm_shm.open(db_path, flag + mod)
    assert ei.value.errno == errno.ENOENT
    assert os.fspath(ei.value.filename) == os.fspath(db_path)
    assert not db_path.exists()


@pytest.mark.parametrize("mod", MODIFIERS)
def test_w_is_read_write(existing, mod):
    with dbm_shm.open(existing, "w" + mod) as d:
        assert_matches(d, SAMPLE)
        d[b"a"] = b"changed"
        del d[b"b"]
        d[b"c"] = b"3"
    with dbm_shm.open(existing, "r") as d:
        assert_matches(d, {b"a": b"changed", "ключ".encode(): b"\x00\xff", b"c": b"3"})


@pytest.mark.parametrize("mod", MODIFIERS)
def test_r_reads(existing, mod):
    with dbm_shm.open(existing, "r" + mod) as d:
        assert_matches(d, SAMPLE)
        assert d.get(b"missing") is None
        assert d.setdefault(b"a", b"ignored") == b"1"
        assert d.check() == []
        d.sync()


READ_ONLY_WRITES = {
    "set": lambda d: d.__setitem__(b"a", b"x"),
    "set_new": lambda d: d.__setitem__(b"new", b"x"),
    "delete": lambda d: d.__delitem__(b"a"),
    "delete_missing": lambda d: d.__delitem__(b"missing"),
    "setdefault_missing": lambda d: d.setdefault(b"new", b"x"),
    "clear": lambda d: d.clear(),
    "reorganize": lambda d: d.reorganize(),
}


@pytest.mark.parametrize("mod", ["", "f", "s", "u", "fsu"])
@pytest.mark.parametrize("op", sorted(READ_ONLY_WRITES))
def test_r_refuses_writes(existing, op, mod):
    before = open(existing, "rb").read()
    with dbm_shm.open(existing, "r" + mod) as d:
        commit = d.commit_id()
        with pytest.raises(dbm_shm.error) as ei:
            READ_ONLY_WRITES[op](d)
        assert ei.value.code == dbm_shm._dshm.lib.DSHM_READONLY
        assert_matches(d, SAMPLE)
        assert d.commit_id() == commit
    assert open(existing, "rb").read() == before


def test_all_flag_combinations_accepted(tmp_path):
    """Every first letter with every subset (and order) of f, s, u."""
    path = tmp_path / "db"
    make_file(path, {b"k": b"v"})
    for first in "rwcn":
        for r in range(4):
            for mods in itertools.permutations("fsu", r):
                flag = first + "".join(mods)
                with dbm_shm.open(path, flag) as d:
                    if first == "n":
                        assert len(d) == 0
                        d[b"k"] = b"v"
                    else:
                        assert d[b"k"] == b"v", flag


def test_s_flag_writes_are_visible_and_durable(db_path):
    with dbm_shm.open(db_path, "cs") as d, dbm_shm.open(db_path, "r") as r:
        for i in range(50):
            d[b"%d" % i] = b"v%d" % i
            assert r[b"%d" % i] == b"v%d" % i
        del d[b"0"]
        assert b"0" not in r
    with dbm_shm.open(db_path, "r") as d:
        assert len(d) == 49


@pytest.mark.parametrize("umask, mode, expect", [
    (0o022, 0o666, 0o644),
    (0o022, 0o600, 0o600),
    (0o077, 0o666, 0o600),
    (0o000, 0o640, 0o640),
])
@pytest.mark.parametrize("flag", ["c", "n"])
def test_mode_of_created_file(db_path, flag, umask, mode, expect):
    old = os.umask(umask)
    try:
        dbm_shm.open(db_path, flag, mode).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(db_path).st_mode) == expect


def test_mode_does_not_change_existing_file(existing):
    os.chmod(existing, 0o640)
    dbm_shm.open(existing, "c", 0o600).close()
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    dbm_shm.open(existing, "n", 0o600).close()
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640


def test_n_with_other_handle_keeps_existing_mode(existing):
    os.chmod(existing, 0o600)
    other = dbm_shm.open(existing, "r")
    try:
        old = os.umask(0o022)
        try:
            dbm_shm.open(existing, "n").close()
        finally:
            os.umask(old)
    finally:
        other.close()
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o600


class _FsPath:
    def __init__(self, p):
        self._p = p

    def __fspath__(self):
        return self._p


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib", "fspath_str", "fspath_bytes"])
def test_path_types(tmp_path, kind):
    p = str(tmp_path / "db")
    arg = {
        "str": p,
        "bytes": os.fsencode(p),
        "pathlib": pathlib.Path(p),
        "fspath_str": _FsPath(p),
        "fspath_bytes": _FsPath(os.fsencode(p)),
    }[kind]
    with dbm_shm.open(arg, "c") as d:
        d[b"k"] = b"v"
    with dbm_shm.open(arg, "r") as d:
        assert d[b"k"] == b"v"
    with dbm_shm.open(p, "r") as d:
        assert d[b"k"] == b"v"
    assert os.listdir(tmp_path) == ["db"]


@pytest.mark.parametrize("name", ["dbé_文件", b"db\xff\xfe", "with space", "-leading-dash"])
def test_unusual_filenames(tmp_path, name):
    p = os.path.join(os.fsencode(tmp_path), name) if isinstance(name, bytes) \
        else os.path.join(tmp_path, name)
    with dbm_shm.open(p, "c") as d:
        d["ключ"] = "значение"
    with dbm_shm.open(p, "r") as d:
        assert d["ключ".encode()] == "значение".encode()
    assert os.listdir(os.fsencode(tmp_path)) == [os.fsencode(os.path.basename(p))]


def test_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dbm_shm.open("rel", "c") as d:
        d[b"k"] = b"v"
    assert (tmp_path / "rel").is_file()
    with dbm_shm.open(tmp_path / "rel", "r") as d:
        assert d[b"k"] == b"v"


def test_flag_must_be_str(db_path):
    with pytest.raises(TypeError):
        dbm_shm.open(db_path, b"c")
    with pytest.raises(TypeError):
        dbm_shm.open(db_path, None)
    assert not db_path.exists()


def test_open_arguments_are_positional_only(db_path):
    # As dbm.gnu.open(filename, flag='r', mode=0o666, /).
    with pytest.raises(TypeError):
        dbm_shm.open(filename=db_path, flag="c")
    d = dbm_shm.open(db_path, "c", 0o600)
    d.close()


def test_many_handles_one_file(db_path):
    handles = [dbm_shm.open(db_path, "c")] + [dbm_shm.open(db_path, f) for f in "wwrr"]
    try:
        for i, h in enumerate(handles[:3]):
            h[b"from%d" % i] = b"%d" % i
        for h in handles:
            assert dict(h.items()) == {b"from0": b"0", b"from1": b"1", b"from2": b"2"}
        del handles[1][b"from0"]
        for h in handles:
            assert b"from0" not in h
            assert len(h) == 2
    finally:
        for h in handles:
            h.close()
