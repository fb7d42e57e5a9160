"""Helpers shared by the API tests."""

import os

import dbm_shm


def walk(db):
    """Every key, in order, by firstkey()/nextkey(). Fails on a cycle."""
    out = []
    limit = len(db) + 1
    k = db.firstkey()
    while k is not None:
        out.append(k)
        assert len(out) <= limit, "firstkey/nextkey walk does not end"
        k = db.nextkey(k)
    return out


def assert_matches(db, model):
    """The database holds exactly ``model`` (a dict of bytes -> bytes),
    by every read interface."""
    assert len(db) == len(model)
    assert bool(db) == bool(model)
    keys = db.keys()
    assert isinstance(keys, list)
    assert len(keys) == len(set(keys)) == len(model)
    assert set(keys) == set(model)
    assert dict(db.items()) == model
    assert len(db.items()) == len(model)
    assert sorted(db.values()) == sorted(model.values())
    assert list(iter(db)) == keys
    w = walk(db)
    assert w == keys
    for k, v in model.items():
        assert k in db
        assert db[k] == v


def make_file(path, items, flag="n"):
    """Create a database file at ``path`` holding ``items`` (a dict)."""
    with dbm_shm.open(path, flag) as d:
        for k, v in items.items():
            d[k] = v


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def size(path):
    return os.path.getsize(path)
