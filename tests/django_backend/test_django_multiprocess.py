"""dbm_shm.DjangoCache across real processes: separate interpreters, each
configuring Django with the same LOCATION (``_djworker.py``), as the worker
processes of one site do.

No timed assertion: where expiry is involved, what is asserted holds
however slow the machine is (a value seen gone was seen so at or after its
earliest possible deadline; after its latest possible deadline it is gone
for everyone).
"""

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("django.core.cache.backends.base", reason="Django is not installed")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_djworker.py")


class Worker:
    """One Django process on ``location`` (see _djworker.py)."""

    def __init__(self, location):
        self.p = subprocess.Popen([sys.executable, WORKER, str(location)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line == "ready\n", f"worker did not start: {line!r}"

    def send(self, *cmd):
        self.p.stdin.write(json.dumps(list(cmd)) + "\n")
        self.p.stdin.flush()

    def reply(self):
        line = self.p.stdout.readline()
        assert line, "worker died"
        return json.loads(line)

    def ask(self, *cmd):
        self.send(*cmd)
        r = self.reply()
        assert "error" not in r, r["error"]
        return r["ok"]

    def call(self, method, *args):
        return self.ask("call", method, list(args))

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def location(tmp_path):
    return tmp_path / "site.dshm"


@pytest.fixture
def workers(location):
    started = []

    def start(n):
        ws = [Worker(location) for _ in range(n)]
        started.extend(ws)
        return ws

    yield start
    for w in started:
        w.close()


def test_set_in_one_is_seen_by_get_in_the_other(workers):
    a, b = workers(2)
    assert b.call("get", "greeting") is None
    a.call("set", "greeting", {"text": "hello", "n": [1, 2]})
    assert b.call("get", "greeting") == {"text": "hello", "n": [1, 2]}
    b.call("set", "reply", "hi", None)
    assert a.call("get_many", ["greeting", "reply", "absent"]) == \
        {"greeting": {"text": "hello", "n": [1, 2]}, "reply": "hi"}
    assert a.call("has_key", "reply") is True
    assert b.call("delete", "greeting") is True
    assert a.call("get", "greeting", "gone") == "gone"
    assert a.call("delete", "greeting") is False
    # Versions and Django's key making are the same in every process.
    a.call("set", "v", "one", None, 1)
    a.call("set", "v", "two", None, 2)
    assert b.call("get", "v", None, 2) == "two"
    assert b.call("incr_version", "v", 1, 2) == 3   # delta 1, version 2
    assert a.call("get", "v", None, 3) == "two"
    assert a.call("get", "v", None, 2) is None
    # clear() in one empties the store for all.
    b.call("clear")
    assert a.call("get_many", ["reply", "v"]) == {}


def test_incr_from_many_processes_gives_the_exact_total(workers):
    n, k = 4, 1500
    ws = workers(n)
    ws[0].call("set", "hits", 1000, None)
    for w in ws:                     # all of them at once: send, then read
        w.send("incr_many", "hits", k)
    results = []
    for w in ws:
        r = w.reply()
        assert "error" not in r, r["error"]
        assert len(r["ok"]) == k
        assert r["ok"] == sorted(r["ok"])   # one process sees its own increments in order
        results.extend(r["ok"])
    assert ws[1].call("get", "hits") == 1000 + n * k
    # Every increment returned a distinct value: none was lost or doubled.
    assert sorted(results) == list(range(1001, 1001 + n * k))
    assert ws[2].call("decr", "hits", 1000 + n * k) == 0


def test_add_race_has_one_winner(workers):
    ws = workers(4)
    for w in ws:
        w.send("add_race", "lock")
    wins = [w.reply()["ok"] for w in ws]
    assert wins.count(True) == 1
    owner = ws[0].call("get", "lock")
    assert owner == ws[wins.index(True)].p.pid


def test_incr_of_a_missing_key_raises_in_every_process(workers):
    a, b = workers(2)
    a.send("call", "incr", ["nothing"])
    assert a.reply()["error"].startswith("ValueError")
    b.call("set", "nothing", 5, 0)             # timeout 0: not kept
    b.send("call", "incr", ["nothing"])
    assert b.reply()["error"].startswith("ValueError")
    assert a.call("get", "nothing") is None


def test_a_timeout_expires_for_both(workers):
    a, b = workers(2)
    ttl = 2.0
    before = time.time()
    a.call("set", "session", "data", ttl)
    after = time.time()
    for w in (a, b):
        seen = w.call("get", "session")
        # Present, unless this machine was so slow that the deadline passed.
        assert seen == "data" or time.time() >= before + ttl
    for w in (a, b):                  # both wait at once
        w.send("wait_gone", "session", 60 + ttl)
    gone = [a.reply()["ok"], b.reply()["ok"]]
    for g in gone:
        assert g["gone"] is True
        assert g["at"] >= before + ttl     # not before its earliest deadline
    # After the latest possible deadline it is gone for both, for good, and
    # add() may store the key anew.
    while time.time() < after + ttl:
        time.sleep(0.05)
    assert a.call("has_key", "session") is False
    assert b.call("get", "session", "default") == "default"
    assert b.call("add", "session", "new", None) is True
    assert a.call("get", "session") == "new"


def test_zero_timeout_is_not_kept_for_anyone(workers):
    a, b = workers(2)
    a.call("set", "k", "old", None)
    a.call("set", "k", "new", 0)
    assert b.call("get", "k") is None
    assert b.call("add", "k", "x", -5) is True
    assert a.call("get", "k") is None
    b.call("set", "k", "kept", None)
    assert a.call("touch", "k", 0) is True
    assert b.call("has_key", "k") is False
