"""Property-based model of every mapping method against a ``dict``.

A hypothesis RuleBasedStateMachine calls pop, popitem, update, setdefault,
get, items, values, keys, ``__iter__``, ``__eq__``, ``__len__``,
``__contains__``, del and clear on a handle and the same on a dict, and
compares every answer; rules open, commit and abort batches, so the same
calls also run inside a batch (read-your-writes), and a second handle
checks that the committed state is the model as it was when the last batch
ended (or the model, outside a batch).
"""

import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule  # noqa: E402

import dbm_shm  # noqa: E402

keys_st = st.sampled_from([b"", b"a", b"b", b"c", b"\x00", b"key", "\u00e9".encode(), b"k" * 300])
# Some values bigger than the 64 KiB per-thread buffer (the retry protocol).
values_st = st.one_of(st.binary(max_size=12), st.sampled_from([70000, 5000]).map(lambda n: b"V" * n))
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Abort(Exception):
    """Ends a batch without committing it."""


class MappingModel(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dbm_shm_mapping_", dir=SCRATCH)
        self.path = os.path.join(self.dir, "db")
        self.db = dbm_shm.open(self.path, "n")
        self.other = dbm_shm.open(self.path, "r")
        self.model = {}
        self.committed = {}      # what other handles must see
        self.batches = []        # open batch contexts, with the model at their start

    # -- batches ----------------------------------------------------------

    @precondition(lambda self: len(self.batches) < 3)
    @rule()
    def begin_batch(self):
        ctx = self.db.batch()
        ctx.__enter__()
        self.batches.append((ctx, dict(self.model)))

    @precondition(lambda self: self.batches)
    @rule()
    def end_batch(self):
        ctx, _ = self.batches.pop()
        ctx.__exit__(None, None, None)
        if not self.batches:
            self.committed = dict(self.model)

    @precondition(lambda self: self.batches)
    @rule()
    def abort_batch(self):
        ctx, saved = self.batches.pop()
        ctx.__exit__(Abort, Abort(), None)
        self.model = saved

    def _wrote(self):
        if not self.batches:
            self.committed = dict(self.model)

    # -- writes -----------------------------------------------------------

    @rule(k=keys_st, v=values_st)
    def setitem(self, k, v):
        self.db[k] = v
        self.model[k] = v
        self._wrote()

    @rule(k=keys_st)
    def delitem(self, k):
        if k in self.model:
            del self.db[k]
            del self.model[k]
            self._wrote()
        else:
            with pytest.raises(KeyError):
                del self.db[k]

    @rule(k=keys_st, default=st.sampled_from([None, b"d", 5, "missing"]))
    def pop(self, k, default):
        if default == "missing":
            if k in self.model:
                assert self.db.pop(k) == self.model.pop(k)
            else:
                with pytest.raises(KeyError):
                    self.db.pop(k)
        else:
            assert self.db.pop(k, default) == self.model.pop(k, default)
        self._wrote()

    @rule()
    def popitem(self):
        if not self.model:
            with pytest.raises(KeyError):
                self.db.popitem()
            return
        k, v = self.db.popitem()
        assert self.model.pop(k) == v
        self._wrote()

    @rule(items=st.dictionaries(keys_st, values_st, max_size=4), as_pairs=st.booleans())
    def update(self, items, as_pairs):
        self.db.update(list(items.items()) if as_pairs else items)
        self.model.update(items)
        self._wrote()

    @rule(v=values_st)
    def update_kwargs(self, v):
        self.db.update(kw=v)
        self.model[b"kw"] = v
        self._wrote()

    @rule(k=keys_st, v=values_st)
    def setdefault(self, k, v):
        assert self.db.setdefault(k, v) == self.model.setdefault(k, v)
        self._wrote()

    @precondition(lambda self: not self.batches)
    @rule()
    def clear(self):
        self.db.clear()
        self.model.clear()
        self._wrote()

    # -- reads ------------------------------------------------------------

    @rule(k=keys_st)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k)
        assert self.db.get(k, b"dflt") == self.model.get(k, b"dflt")
        assert (k in self.db) == (k in self.model)

    @invariant()
    def same_contents(self):
        db, model = self.db, self.model
        assert len(db) == len(model)
        assert bool(db) == bool(model)
        keys = db.keys()
        assert isinstance(keys, list) and sorted(keys) == sorted(model)
        assert list(db) == keys
        assert dict(db.items()) == model
        assert sorted(db.values()) == sorted(model.values())
        assert db == model and model == db
        assert not (db != model)

    @invariant()
    def committed_state(self):
        assert self.other == self.committed

    def teardown(self):
        try:
            for ctx, _ in reversed(self.batches):
                ctx.__exit__(Abort, Abort(), None)
            self.db.close()
            self.other.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


MappingModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("DBM_SHM_MODEL_EXAMPLES", "100")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_mapping_model = MappingModel.TestCase
