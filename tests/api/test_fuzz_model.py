"""Property-based test: random operation sequences against a dict model.

A hypothesis RuleBasedStateMachine drives a writable handle and a
read-only handle on one file through set/get/delete/contains/len/keys/
setdefault/clear/reorganize/close+reopen/firstkey-nextkey walks (plus bulk
inserts and deletes that make buckets split) and checks every answer
against a plain dict.
"""

import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

import dbm_shm  # noqa: E402


def enc(x):
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


# Few distinct keys, so operations often hit the same key; binary, str
# (incl. non-ASCII), the empty key and NUL bytes all appear.
key_st = st.one_of(
    st.sampled_from([b"", b"a", b"\x00", b"a\x00", b"key", "ключ", "键", "\u00e9"]),
    st.binary(max_size=6),
    st.text(alphabet="ab\u00e9\U0001f600\x00", max_size=3),
)
small_value_st = st.one_of(st.binary(max_size=40), st.text(max_size=10))
big_value_st = st.tuples(st.integers(0, 255), st.sampled_from([2047, 2048, 4096, 65535, 65536, 65537, 300_000])) \
    .map(lambda t: bytes([t[0]]) * t[1])
value_st = st.one_of(small_value_st, small_value_st, small_value_st, big_value_st)
mutable_st = st.sampled_from([bytes, bytearray, memoryview])

# tmpfs where there is one (the store's home, and no fsync cost for the
# reorganize steps), else the default temporary directory.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class DbmShmModel(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dbm_shm_model_", dir=SCRATCH)
        self.path = os.path.join(self.dir, "db")
        self.db = dbm_shm.open(self.path, "n")
        self.reader = dbm_shm.open(self.path, "r")
        self.model = {}

    @initialize(target=keys, k=key_st)
    def first_key(self, k):
        return k

    @rule(target=keys, k=key_st)
    def new_key(self, k):
        return k

    # -- writes ---------------------------------------------------------------

    @rule(k=keys, v=value_st, wrap=mutable_st)
    def set(self, k, v, wrap):
        arg = wrap(enc(v)) if not isinstance(v, str) else v
        self.db[k] = arg
        self.model[enc(k)] = enc(v)

    @rule(k=keys)
    def delete(self, k):
        if enc(k) in self.model:
            del self.db[k]
            del self.model[enc(k)]
        else:
            with pytest.raises(KeyError):
                del self.db[k]

    @rule(k=keys, v=small_value_st)
    def setdefault(self, k, v):
        expected = self.model.setdefault(enc(k), enc(v))
        assert self.db.setdefault(k, v) == expected

    @rule(prefix=st.binary(min_size=1, max_size=3), n=st.integers(1, 700), size=st.integers(0, 100))
    def bulk_insert(self, prefix, n, size):
        for i in range(n):
            k = prefix + b"/%d" % i
            v = bytes([i % 256]) * size
            self.db[k] = v
            self.model[k] = v

    @rule(step=st.integers(1, 4))
    def bulk_delete(self, step):
        for k in sorted(self.model)[::step]:
            del self.db[k]
            del self.model[k]

    @rule()
    def clear(self):
        self.db.clear()
        self.model.clear()

    @rule(by_reader_handle=st.booleans())
    def reorganize(self, by_reader_handle):
        if by_reader_handle:
            with pytest.raises(dbm_shm.error):
                self.reader.reorganize()
        else:
            self.db.reorganize()

    @rule(flag=st.sampled_from(["w", "c", "wf", "cu", "wu"]))
    def close_and_reopen(self, flag):
        self.db.close()
        with pytest.raises(dbm_shm.error):
            len(self.db)
        self.db = dbm_shm.open(self.path, flag)

    @rule()
    def reopen_reader(self):
        self.reader.close()
        self.reader = dbm_shm.open(self.path, "r")

    # -- reads ------------------------------------------------------------------

    @rule(k=keys, use_reader=st.booleans())
    def get(self, k, use_reader):
        h = self.reader if use_reader else self.db
        if enc(k) in self.model:
            assert h[k] == self.model[enc(k)]
        else:
            with pytest.raises(KeyError):
                h[k]
        assert h.get(k, b"<default>") == self.model.get(enc(k), b"<default>")

    @rule(k=keys)
    def contains(self, k):
        assert (k in self.db) == (enc(k) in self.model)
        assert (k in self.reader) == (enc(k) in self.model)

    @rule()
    def keys_and_items(self):
        keys = self.db.keys()
        assert sorted(keys) == sorted(self.model)
        assert dict(self.reader.items()) == self.model
        assert list(iter(self.reader)) == keys

    @rule(use_reader=st.booleans())
    def walk(self, use_reader):
        h = self.reader if use_reader else self.db
        seen = []
        k = h.firstkey()
        while k is not None:
            seen.append(k)
            assert len(seen) <= len(self.model), "walk does not end"
            k = h.nextkey(k)
        assert len(seen) == len(set(seen)) == len(self.model)
        assert set(seen) == set(self.model)

    @rule(k=keys)
    def nextkey_of_absent_key(self, k):
        if enc(k) not in self.model:
            assert self.db.nextkey(k) is None

    @rule()
    def check(self):
        assert self.db.check() == []

    @invariant()
    def lengths(self):
        n = len(self.model)
        assert len(self.db) == n
        assert len(self.reader) == n
        assert bool(self.db) == (n > 0)

    def teardown(self):
        try:
            if getattr(self, "db", None) is not None:
                assert dict(self.db.items()) == self.model
                assert self.db.check() == []
                self.db.close()
                self.reader.close()
                with dbm_shm.open(self.path, "r") as d:
                    assert dict(d.items()) == self.model
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


TestDbmShmModel = DbmShmModel.TestCase
TestDbmShmModel.settings = settings(
    max_examples=int(os.environ.get("DBM_SHM_HYPOTHESIS_EXAMPLES", "500")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
