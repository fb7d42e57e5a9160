"""The fast path and the Python (cffi) path give identical results and
identical errors (type and message) for every mapping operation.

Hypothesis draws operation sequences (get, [], in, set, del, get with a
default or a keyword, wrong arguments; bytes, str, unencodable str,
bytes-like and bad keys; values over the fast path's buffer; inside
batches, nested or aborted; on a closed handle; on a handle reopened
read-only). Each sequence runs in two worker processes, one with the fast
path and one with ``DSHM_NO_FASTPATH=1``, and their outputs must match.
"""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dbm_shm

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dbm_shm.__file__)))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_equiv_worker.py")


class Worker:
    """A worker process running sequences in its own directory."""

    def __init__(self, cwd, fast):
        env = dict(os.environ)
        # The dbm_shm under test, wherever the worker's directory is.
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        env.pop("DSHM_NO_FASTPATH", None)
        if not fast:
            env["DSHM_NO_FASTPATH"] = "1"
        self.proc = subprocess.Popen([sys.executable, WORKER], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.hello = json.loads(self.proc.stdout.readline())

    def run(self, ops):
        self.proc.stdin.write(json.dumps(ops) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "worker died"
        return json.loads(line)

    def finish(self):
        self.proc.stdin.write("null\n")
        self.proc.stdin.flush()
        totals = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=30)
        return totals


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    fast = Worker(tmp_path_factory.mktemp("fast"), True)
    slow = Worker(tmp_path_factory.mktemp("nofast"), False)
    yield fast, slow
    totals = fast.finish()
    slow.finish()
    assert not slow.hello["enabled"]
    if fast.hello["enabled"]:
        # The fast worker really went through the fast path, and handed
        # cases back to Python too.
        assert totals["fast_gets"] > 0 and totals["fast_sets"] > 0 and totals["fast_fallbacks"] > 0, totals


hexes = st.binary(min_size=0, max_size=6).map(bytes.hex)
small_keys = st.sampled_from(["", "00", "61", "6162", "ff00", "c3a9"]) | hexes
keys = st.one_of(
    small_keys.map(lambda h: ["b", h]),
    small_keys.map(lambda h: ["b", h]),
    st.sampled_from(["", "a", "ab", "é", "\u20ac", "\ud800", "a\x00b"]).map(lambda s: ["s", s]),
    small_keys.map(lambda h: ["ba", h]),
    small_keys.map(lambda h: ["mv", h]),
    st.sampled_from([["i", 5], ["n"], ["t"]]),
)
values = st.one_of(
    hexes.map(lambda h: ["b", h]),
    st.sampled_from(["", "v", "é"]).map(lambda s: ["s", s]),
    st.tuples(st.integers(0, 255), st.sampled_from([4095, 4096, 4097, 70000])).map(lambda t: ["big", *t]),
    hexes.map(lambda h: ["ba", h]),
    st.sampled_from([["i", 7], ["n"]]),
)
ops = st.one_of(
    st.tuples(st.just("set"), keys, values),
    st.tuples(st.just("getitem"), keys),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("get_default"), keys, values),
    st.tuples(st.just("get_kw"), keys, values),
    st.tuples(st.just("get_bad_args"), st.lists(keys, max_size=3).filter(lambda a: len(a) not in (1, 2))),
    st.tuples(st.just("get_many"), st.lists(keys, max_size=4)),
    st.tuples(st.just("get_many_default"), st.lists(keys, max_size=4), values),
    st.tuples(st.just("contains"), keys),
    st.tuples(st.just("del"), keys),
    st.just(("batch_begin",)),
    st.tuples(st.just("batch_end"), st.booleans()),
    st.just(("close",)),
    st.tuples(st.just("reopen"), st.sampled_from(["r", "w"])),
).map(list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_fast_and_python_paths_agree(workers, seq):
    fast, slow = workers
    assert fast.run(seq) == slow.run(seq)


def test_fixed_sequence_agrees(workers):
    """Every kind of case at least once, whatever hypothesis draws."""
    seq = [["set", ["b", "61"], ["b", "31"]], ["set", ["s", "é"], ["s", "v"]],
           ["getitem", ["b", "61"]], ["getitem", ["s", "é"]], ["getitem", ["b", "62"]],
           ["get", ["b", "62"]], ["get_default", ["b", "62"], ["b", "78"]], ["get_kw", ["b", "61"], ["b", "78"]],
           ["get_bad_args", []], ["contains", ["i", 5]], ["contains", ["s", "\ud800"]], ["getitem", ["n"]],
           ["set", ["b", "63"], ["big", 1, 70000]], ["getitem", ["b", "63"]], ["get", ["b", "63"]],
           ["batch_begin"], ["set", ["b", "64"], ["b", "00"]], ["getitem", ["b", "64"]], ["del", ["b", "61"]],
           ["contains", ["b", "61"]], ["del", ["b", "61"]], ["batch_end", False],
           ["del", ["b", "61"]], ["reopen", "r"], ["set", ["b", "65"], ["b", "00"]], ["del", ["b", "64"]],
           ["getitem", ["b", "64"]], ["close"], ["getitem", ["b", "64"]], ["get", ["b", "64"]],
           ["contains", ["b", "64"]], ["set", ["b", "64"], ["b", "00"]], ["del", ["b", "64"]],
           ["get_many", [["b", "64"]]], ["reopen", "w"], ["set", ["b", "66"], ["big", 2, 70000]],
           ["get_many", [["b", "66"], ["s", "é"], ["b", "67"], ["ba", "66"], ["s", "\ud800"]]],
           ["get_many", [["b", "66"], ["i", 5]]], ["get_many", []],
           ["get_many_default", [["b", "66"], ["b", "67"]], ["b", "78"]],
           ["batch_begin"], ["set", ["b", "67"], ["b", "01"]], ["get_many", [["b", "67"]]], ["batch_end", True],
           ["close"], ["get_many", [["b", "66"]]]]
    a, b = workers[0].run(seq), workers[1].run(seq)
    assert a == b
    kinds = {r[0] for r in a}
    assert kinds == {"ok", "exc", "state"}
