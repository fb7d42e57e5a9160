"""A closed database: every call raises dbm_shm.error with dbm.gnu's message;
closing twice is fine; the file and other handles are unaffected."""

import dbm

import pytest

import dbm_shm

MESSAGE = "GDBM object has already been closed"

CALLS = {
    "getitem": lambda d: d[b"k"],
    "getitem_missing": lambda d: d[b"missing"],
    "setitem": lambda d: d.__setitem__(b"k", b"v"),
    "delitem": lambda d: d.__delitem__(b"k"),
    "contains": lambda d: b"k" in d,
    "len": len,
    "bool": bool,
    "get": lambda d: d.get(b"k"),
    "get_default": lambda d: d.get(b"missing", b"default"),
    "setdefault": lambda d: d.setdefault(b"k", b"v"),
    "keys": lambda d: d.keys(),
    "items": lambda d: d.items(),
    "values": lambda d: d.values(),
    "iteritems": lambda d: list(d.iteritems()),
    "iter": lambda d: list(iter(d)),
    "firstkey": lambda d: d.firstkey(),
    "nextkey": lambda d: d.nextkey(b"k"),
    "reorganize": lambda d: d.reorganize(),
    "sync": lambda d: d.sync(),
    "clear": lambda d: d.clear(),
    "stats": lambda d: d.stats(),
    "check": lambda d: d.check(),
    "commit_id": lambda d: d.commit_id(),
}


@pytest.mark.parametrize("flag", ["c", "r"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_closed_raises(db_path, call, flag):
    dbm_shm.open(db_path, "c").close()
    with dbm_shm.open(db_path, "w") as w:
        w[b"k"] = b"v"
    d = dbm_shm.open(db_path, flag)
    d.close()
    with pytest.raises(dbm_shm.error) as ei:
        CALLS[call](d)
    assert str(ei.value) == MESSAGE
    assert isinstance(ei.value, OSError)
    assert isinstance(ei.value, dbm.error)
    # nothing was changed by the failed call
    with dbm_shm.open(db_path, "r") as r:
        assert dict(r.items()) == {b"k": b"v"}


def test_close_twice(db_path):
    d = dbm_shm.open(db_path, "c")
    d.close()
    d.close()
    with pytest.raises(dbm_shm.error):
        len(d)


def test_close_inside_context_manager(db_path):
    with dbm_shm.open(db_path, "c") as d:
        d[b"k"] = b"v"
        d.close()
    with pytest.raises(dbm_shm.error):
        d.keys()


def test_iterator_started_before_close(db_path):
    d = dbm_shm.open(db_path, "c")
    for i in range(3000):
        d[b"%d" % i] = b"x"
    it = d.iteritems()
    next(it)
    d.close()
    # Either the iterator already holds a copy of the current chunk or it
    # fails cleanly; it must never crash or yield garbage.
    try:
        rest = list(it)
    except dbm_shm.error as e:
        assert str(e) == MESSAGE
    else:
        assert all(v == b"x" for _, v in rest)


def test_closing_one_handle_leaves_others_working(db_path):
    a = dbm_shm.open(db_path, "c")
    b = dbm_shm.open(db_path, "w")
    a[b"k"] = b"v"
    a.close()
    assert b[b"k"] == b"v"
    b[b"k2"] = b"v2"
    b.close()
    with dbm_shm.open(db_path, "r") as r:
        assert dict(r.items()) == {b"k": b"v", b"k2": b"v2"}


def test_repr_and_filename_after_close(db_path):
    d = dbm_shm.open(db_path, "c")
    assert "open" in repr(d)
    d.close()
    assert "closed" in repr(d)
    assert d.filename == str(db_path)

