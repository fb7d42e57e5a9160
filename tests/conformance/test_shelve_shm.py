"""shelve over shared memory: dbm_shm.open_shelf, shelve.Shelf(dbm_shm.open()),
and shelve.open() after register(default=True).

Cross-process tests use real processes started with the multiprocessing
"spawn" context; the workers are module-level functions of this module,
which the ``importable`` fixture makes importable in the children whatever
pytest's import mode.
"""

import array
import collections
import dataclasses
import datetime
import dbm
import decimal
import enum
import fractions
import multiprocessing
import os
import pathlib
import pickle
import shelve
import sys
import uuid

import pytest

import dbm_shm

from ._cpython import saved_dbm_state

TIMEOUT = 60


# ---------------------------------------------------------------------------
# Picklable objects of many kinds (module level, so children can unpickle)


@dataclasses.dataclass
class Order:
    symbol: str
    qty: int
    price: decimal.Decimal
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


Quote = collections.namedtuple("Quote", "bid ask")


class Side(enum.Enum):
    BUY = 1
    SELL = 2


class Plain:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __eq__(self, other):
        return type(other) is Plain and vars(self) == vars(other)


def samples():
    """Objects every interpreter can pickle, by name."""
    cyclic = [1, 2]
    cyclic.append(cyclic)
    return {
        "none": None,
        "bool": True,
        "int": -(2 ** 100),
        "float": 1.5e-300,
        "complex": 1 - 2j,
        "str": "naïve café ✓ \U0001f600",
        "bytes": bytes(range(256)),
        "bytearray": bytearray(b"\x00\xff" * 10),
        "empty": "",
        "tuple": (1, "a", (2.5, None)),
        "list": [1, [2, [3, []]]],
        "dict": {"a": 1, 2: "b", (3, 4): [5]},
        "set": {1, 2, 3},
        "frozenset": frozenset({"x", "y"}),
        "decimal": decimal.Decimal("101.2500"),
        "fraction": fractions.Fraction(22, 7),
        "datetime": datetime.datetime(2024, 2, 29, 23, 59, 59, 999999,
                                      tzinfo=datetime.timezone.utc),
        "date": datetime.date(1999, 12, 31),
        "timedelta": datetime.timedelta(days=-1, microseconds=5),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "path": pathlib.PurePosixPath("/dev/shm/prices"),
        "array": array.array("d", [1.0, 2.0]),
        "dataclass": Order("ACME", 100, decimal.Decimal("101.25"), ["x"]),
        "frozen": Point(1.0, -2.0),
        "namedtuple": Quote(1.25, 1.5),
        "enum": Side.SELL,
        "object": Plain([1], {"k": "v"}),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "counter": collections.Counter("mississippi"),
        "deque": collections.deque([1, 2, 3], maxlen=5),
        "big": b"\xab" * (3 * 1024 * 1024),  # beyond the 64 KiB read buffer
        "nested": {"orders": [Order("X", i, decimal.Decimal(i)) for i in range(50)]},
        "cyclic": cyclic,
    }


def same(a, b):
    """Equality, also for the self-referencing list."""
    if isinstance(a, list) and a and a[-1] is a:
        return isinstance(b, list) and b[-1] is b and a[:-1] == b[:-1]
    return type(a) is type(b) and a == b


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "shelf.shm")


@pytest.fixture
def dbm_state():
    with saved_dbm_state():
        yield dbm


@pytest.fixture
def importable(monkeypatch):
    """Put this module's root on sys.path (sent to spawned children)."""
    here = pathlib.Path(__file__).resolve()
    depth = len(__name__.split("."))
    monkeypatch.syspath_prepend(str(here.parents[depth - 1]))
    return multiprocessing.get_context("spawn")


def _join(proc):
    proc.join(TIMEOUT)
    if proc.is_alive():
        proc.kill()
        pytest.fail("child process hung")
    assert proc.exitcode == 0, f"child failed with exit code {proc.exitcode}"


# ---------------------------------------------------------------------------
# One process


@pytest.mark.parametrize("name", sorted(samples()))
def test_object_round_trips(path, name):
    value = samples()[name]
    with dbm_shm.open_shelf(path) as sh:
        sh[name] = value
        assert same(sh[name], value)
    with dbm_shm.open_shelf(path, "r") as sh:
        assert same(sh[name], value)


@pytest.mark.parametrize("protocol", [None, 0, 2, pickle.HIGHEST_PROTOCOL])
def test_protocol_is_used(path, protocol):
    with dbm_shm.open_shelf(path, protocol=protocol) as sh:
        sh["k"] = {"v": 1}
    with dbm_shm.open(path) as db:
        raw = db[b"k"]
    assert pickle.loads(raw) == {"v": 1}
    if protocol is not None and protocol >= 2:
        assert raw[:2] == bytes([0x80, protocol])
    elif protocol == 0:
        assert raw[:1] != b"\x80"


def test_shelf_over_dbm_shm_open(path):
    sh = shelve.Shelf(dbm_shm.open(path, "c"))
    try:
        sh["a"] = [1, 2]
        sh["ключ"] = {"b": 3}
        assert sorted(sh) == ["a", "ключ"]
        assert len(sh) == 2 and "a" in sh and "zz" not in sh
        assert sh.get("zz", 0) == 0
        del sh["a"]
        with pytest.raises(KeyError):
            sh["a"]
    finally:
        sh.close()
    with dbm_shm.open(path) as db:
        assert db.keys() == ["ключ".encode()]


def test_open_shelf_mapping_interface(path):
    with dbm_shm.open_shelf(path, "n") as sh:
        sh.update({"a": 1, "b": 2})
        assert dict(sh.items()) == {"a": 1, "b": 2}
        assert sorted(sh.keys()) == ["a", "b"]
        assert sorted(sh.values()) == [1, 2]
        assert sh.setdefault("c", [3]) == [3]
        assert sh.pop("a") == 1
        sh.clear()
        assert len(sh) == 0


def test_open_shelf_flags(path):
    with dbm_shm.open_shelf(path) as sh:
        sh["x"] = 1
    with dbm_shm.open_shelf(path, "r") as sh:
        assert sh["x"] == 1
        with pytest.raises(dbm.error):
            sh["y"] = 2
    with dbm_shm.open_shelf(path, "w") as sh:
        sh["y"] = 2
    with dbm_shm.open_shelf(path, "n") as sh:
        assert len(sh) == 0
    with pytest.raises(dbm_shm.error):
        dbm_shm.open_shelf(path + ".missing", "r")
    with pytest.raises(dbm_shm.error):
        dbm_shm.open_shelf(path, "x")


def test_open_shelf_pathlike_and_bytes(tmp_path):
    with dbm_shm.open_shelf(tmp_path / "p") as sh:
        sh["k"] = "v"
    with dbm_shm.open_shelf(os.fsencode(tmp_path / "p"), "r") as sh:
        assert sh["k"] == "v"


def test_writeback(path):
    with dbm_shm.open_shelf(path) as sh:
        sh["list"] = []
        sh["list"].append(1)  # lost: no writeback
        assert sh["list"] == []
    with dbm_shm.open_shelf(path, writeback=True) as sh:
        sh["list"].append(1)
        sh["list"].append(2)
        sh["obj"] = Order("ACME", 1, decimal.Decimal(1))
        sh["obj"].qty = 5
        with dbm_shm.open_shelf(path, "r") as other:
            assert other["list"] == []  # cached until sync()
        sh.sync()
        with dbm_shm.open_shelf(path, "r") as other:
            assert other["list"] == [1, 2] and other["obj"].qty == 5
        sh["list"].append(3)
    with dbm_shm.open_shelf(path, "r") as sh:  # close() wrote it back
        assert sh["list"] == [1, 2, 3]


def test_shelve_open_after_register_default(dbm_state, path):
    dbm_shm.register(default=True)
    with shelve.open(path) as sh:
        sh["order"] = Order("ACME", 1, decimal.Decimal("2.5"))
    assert dbm.whichdb(path) == "dbm.shm"
    with dbm_shm.open_shelf(path, "r") as sh:
        assert sh["order"].price == decimal.Decimal("2.5")
    with shelve.open(path, "r") as sh:
        assert isinstance(sh.dict, dbm_shm.Database)


def test_shelve_open_existing_after_plain_register(dbm_state, path):
    with dbm_shm.open_shelf(path) as sh:
        sh["k"] = {"v": 1}
    dbm_shm.register()
    with shelve.open(path) as sh:  # 'c' finds the dbm_shm file
        assert sh["k"] == {"v": 1}
        sh["k2"] = 2
    with dbm_shm.open_shelf(path, "r") as sh:
        assert sh["k2"] == 2


def test_many_objects_property(path):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    leaves = (st.none() | st.booleans() | st.integers() | st.text() | st.binary()
              | st.floats(allow_nan=False) | st.decimals(allow_nan=False)
              | st.datetimes() | st.fractions())
    values = st.recursive(
        leaves,
        lambda inner: (st.lists(inner) | st.tuples(inner, inner)
                       | st.dictionaries(st.text() | st.integers(), inner)
                       | st.frozensets(st.integers() | st.text())),
        max_leaves=20)

    db = dbm_shm.open_shelf(path, "n")
    try:
        @hypothesis.settings(max_examples=200, deadline=None)
        @hypothesis.given(key=st.text(min_size=0, max_size=30), value=values)
        def check(key, value):
            db[key] = value
            assert db[key] == value
            assert key in db

        check()
    finally:
        db.close()


# ---------------------------------------------------------------------------
# Two processes


def _child_write_samples(path):
    with dbm_shm.open_shelf(path) as sh:
        for name, value in samples().items():
            sh[name] = value


def _child_check_samples(path):
    with dbm_shm.open_shelf(path, "r") as sh:
        for name, value in samples().items():
            if not same(sh[name], value):
                sys.exit(f"{name}: {sh[name]!r} != {value!r}")


def test_child_writes_parent_reads(importable, path):
    proc = importable.Process(target=_child_write_samples, args=(path,))
    proc.start()
    _join(proc)
    with dbm_shm.open_shelf(path, "r") as sh:
        for name, value in samples().items():
            assert same(sh[name], value), name


def test_parent_writes_child_reads(importable, path):
    with dbm_shm.open_shelf(path) as sh:
        for name, value in samples().items():
            sh[name] = value
    proc = importable.Process(target=_child_check_samples, args=(path,))
    proc.start()
    _join(proc)


def _child_converse(path, wrote, replied, writeback):
    """Open the shelf while the parent holds it open too; talk through it."""
    with dbm_shm.open_shelf(path, writeback=writeback) as sh:
        sh["from_child"] = Order("ACME", 7, decimal.Decimal("101.25"), ["child"])
        sh.sync()
        wrote.set()
        if not replied.wait(TIMEOUT):
            sys.exit("parent never replied")
        reply = sh["from_parent"]
        if reply != {"ack": Quote(1.0, 2.0), "seen": 7}:
            sys.exit(f"unexpected reply {reply!r}")
        if writeback:
            sh["from_parent"]["seen"] = 8  # written back at close


@pytest.mark.parametrize("writeback", [False, True])
def test_two_processes_share_an_open_shelf(importable, path, writeback):
    ctx = importable
    wrote, replied = ctx.Event(), ctx.Event()
    with dbm_shm.open_shelf(path, "c") as sh:  # open before the child writes
        proc = ctx.Process(target=_child_converse, args=(path, wrote, replied, writeback))
        proc.start()
        try:
            assert wrote.wait(TIMEOUT), "child did not write"
            got = sh["from_child"]  # seen without reopening
            assert got == Order("ACME", 7, decimal.Decimal("101.25"), ["child"])
            sh["from_parent"] = {"ack": Quote(1.0, 2.0), "seen": got.qty}
        finally:
            replied.set()
            _join(proc)
        expected = 8 if writeback else 7
        assert sh["from_parent"]["seen"] == expected


def _child_increment(path, key, times):
    for _ in range(times):
        with dbm_shm.open_shelf(path) as sh:
            sh[f"{key}:{os.getpid()}:{_}"] = {"n": _}


def test_several_writer_processes(importable, path):
    ctx = importable
    procs = [ctx.Process(target=_child_increment, args=(path, f"w{i}", 20)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        _join(p)
    with dbm_shm.open_shelf(path, "r") as sh:
        assert len(sh) == 80
        assert sorted(v["n"] for v in sh.values()) == sorted(list(range(20)) * 4)


# ---------------------------------------------------------------------------
# Third-party objects, where installed


def test_numpy_arrays(path):
    np = pytest.importorskip("numpy")
    arrays = {
        "f8": np.linspace(0, 1, 1000),
        "i4-2d": np.arange(24, dtype=np.int32).reshape(4, 6),
        "big": np.random.default_rng(0).random(200_000),  # 1.6 MB
        "struct": np.array([(1, 2.5, b"ab")], dtype=[("a", "i8"), ("b", "f4"), ("c", "S2")]),
        "fortran": np.asfortranarray(np.ones((3, 5))),
        "scalar": np.float32(3.5),
    }
    with dbm_shm.open_shelf(path) as sh:
        for k, a in arrays.items():
            sh[k] = a
    with dbm_shm.open_shelf(path, "r") as sh:
        for k, a in arrays.items():
            got = sh[k]
            assert type(got) is type(a) and np.asarray(got).dtype == np.asarray(a).dtype
            assert np.array_equal(got, a), k


def _child_numpy(path):
    import numpy as np

    with dbm_shm.open_shelf(path) as sh:
        sh["matrix"] = np.arange(10_000, dtype=np.float64).reshape(100, 100)


def test_numpy_array_across_processes(importable, path):
    np = pytest.importorskip("numpy")
    proc = importable.Process(target=_child_numpy, args=(path,))
    proc.start()
    _join(proc)
    with dbm_shm.open_shelf(path, "r") as sh:
        assert np.array_equal(sh["matrix"], np.arange(10_000.0).reshape(100, 100))


def test_pandas_dataframe(path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({
        "symbol": ["ACME", "INIT", "ACME"],
        "price": [101.25, 7.5, 101.5],
        "ts": pd.to_datetime(["2024-01-02 09:30", "2024-01-02 09:31", "2024-01-02 09:32"]),
        "side": pd.Categorical(["buy", "sell", "buy"]),
    }).set_index("ts")
    with dbm_shm.open_shelf(path) as sh:
        sh["quotes"] = df
        sh["series"] = df["price"]
    with dbm_shm.open_shelf(path, "r") as sh:
        pd.testing.assert_frame_equal(sh["quotes"], df)
        pd.testing.assert_series_equal(sh["series"], df["price"])
