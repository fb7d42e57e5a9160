"""dbm_shm.Cache across real processes: expiry, the cap, memoize, a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dbm_shm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_children(code, args_list, env=None, timeout=120):
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))
             for args in args_list]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, out, err))
    return outs


READER = """
import sys, time, json, dbm_shm
c = dbm_shm.Cache(sys.argv[1])
first, last = int(sys.argv[2]), int(sys.argv[3])   # the stored deadline lies between
seen = []   # (clock before the get, clock after it, present)
while True:
    t0 = time.time_ns()
    v = c.get("k")
    t1 = time.time_ns()
    seen.append((t0, t1, v is not None))
    if t0 > last + 200_000_000:
        break
# A get begun after the latest possible deadline must miss; one ended
# before the earliest possible deadline must hit. (A get that spans the
# deadline may do either.)
late = [t0 for t0, t1, present in seen if present and t0 > last]
early = [t0 for t0, t1, present in seen if not present and t1 < first]
print(json.dumps({"n": len(seen), "late": len(late), "early": len(early),
                  "absent_after": sum(1 for t0, t1, p in seen if not p and t0 > last)}))
"""


def test_expiry_is_seen_by_every_process_at_its_deadline(tmp_path):
    path = tmp_path / "c"
    with dbm_shm.Cache(path) as c:
        ttl = 1.0
        first = time.time_ns() + int(ttl * 1e9)   # the set reads the clock in between
        c.set("k", b"v", ttl=ttl)
        last = time.time_ns() + int(ttl * 1e9)
        outs = run_children(READER, [(path, first, last)] * 3)
    for rc, out, err in outs:
        assert rc == 0, err
        r = json.loads(out)
        # After the deadline no process ever read the value; before it
        # none missed it.
        assert r["late"] == 0 and r["early"] == 0
        assert r["absent_after"] > 0


WRITER = """
import sys, random, dbm_shm
c = dbm_shm.Cache(sys.argv[1], max_bytes=int(sys.argv[2]))
rnd = random.Random(int(sys.argv[3]))
for i in range(4000):
    c.set(b"k%d" % rnd.randrange(20000), b"v" * rnd.randrange(200, 3000))
    if i % 7 == 0:
        c.set(b"t%d" % i, b"x" * 500, ttl=0.01)
print("ok")
"""

WATCHER = """
import sys, time, dbm_shm
db = dbm_shm.open(sys.argv[1], "r")
cap, worst, n = int(sys.argv[2]), 0, 0
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    worst = max(worst, db.stats()["live_bytes"])
    n += 1
print(worst, n)
"""


def test_the_cap_holds_under_two_writers(tmp_path):
    path, cap = tmp_path / "c", 400_000
    dbm_shm.Cache(path, max_bytes=cap).close()
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(path), str(cap), "3"],
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    outs = run_children(WRITER, [(path, cap, 1), (path, cap, 2)])
    worst, n = map(int, watcher.communicate(timeout=60)[0].split())
    for rc, out, err in outs:
        assert rc == 0 and out.strip() == "ok", err
    assert 0 < worst <= cap and n > 10
    with dbm_shm.Cache(path) as c:
        assert c.volume() <= cap
        assert c.stats()["evictions"] > 0
        assert c.db.check() == []


MEMO = """
import sys, time, dbm_shm
c = dbm_shm.Cache(sys.argv[1], serializer="pickle")
start = float(sys.argv[2])
@c.memoize(ttl=60)
def slow(x):
    c.incr("calls")
    time.sleep(0.5)
    return {"x": x, "pid": __import__("os").getpid()}
while time.time() < start:
    time.sleep(0.001)
print(slow(7)["pid"])
"""


def test_memoize_computes_once_across_processes(tmp_path):
    path = tmp_path / "m"
    dbm_shm.Cache(path).close()
    start = time.time() + 1.0   # every child imported and waiting by then
    outs = run_children(MEMO, [(path, start)] * 4)
    pids = set()
    for rc, out, err in outs:
        assert rc == 0, err
        pids.add(out.strip())
    assert len(pids) == 1            # every process got the one result
    with dbm_shm.Cache(path, serializer="pickle") as c:
        assert c.get("calls") == 1


KILLED = """
import sys, dbm_shm
c = dbm_shm.Cache(sys.argv[1], max_bytes=200_000)
for i in range(100000):
    c.set(b"k%d" % i, (b"%d:" % i) * 100)
    print(i, flush=True)          # acknowledged
"""


OPEN = """
import sys, dbm_shm
dbm_shm.Cache(sys.argv[1]).close()
"""


def kill_the_repairer(path, point):
    """Open the store with the repair killed at ``point``: the repair, a
    writer too, dies half-way, and the next opener must finish it."""
    env = dict(os.environ, PYTHONPATH=REPO, DSHM_CRASH_AT="%s:1" % point)
    p = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode in (0, -signal.SIGKILL), p.stderr
    return p.returncode == -signal.SIGKILL


def test_a_writer_killed_inside_an_eviction_loses_nothing_it_acknowledged(tmp_path):
    path = tmp_path / "c"
    repairers_killed = 0
    for n, repair_point in ((1, None), (5, "repair-begin"), (40, "repair-rebuild"), (90, "repair-lock")):
        if path.exists():
            path.unlink()
        env = dict(os.environ, PYTHONPATH=REPO, DSHM_CRASH_AT="evict-removed:%d" % n)
        p = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == -signal.SIGKILL, p.stderr
        acked = [int(x) for x in p.stdout.split()]
        if repair_point:
            repairers_killed += kill_the_repairer(path, repair_point)
        with dbm_shm.Cache(path) as c:     # repairs what the writer (and the repairer) left
            assert c.db.check() == []
            assert c.volume() <= 200_000
            present = {int(k[1:]) for k in c.db.keys()}
            for i in present:
                assert c.get(b"k%d" % i) == (b"%d:" % i) * 100
            # Every acknowledged key is present or was evicted (the eviction
            # the kill cut short is not counted yet: at most one more).
            gone = len([i for i in acked if i not in present])
            assert gone <= c.stats()["evictions"] + 1
    assert repairers_killed >= 1


EXPIRING = """
import sys, time, dbm_shm
c = dbm_shm.Cache(sys.argv[1])
if sys.argv[2] == "fill":
    for i in range(3000):
        c.set(b"k%d" % i, b"v%d" % i, ttl=0.2 if i % 2 else None)
    time.sleep(0.3)
else:
    print(c.expire())
"""


def test_expire_killed_half_way_and_its_repairer_killed(tmp_path):
    path = tmp_path / "c"
    run = lambda mode, **env: subprocess.run(
        [sys.executable, "-c", EXPIRING, str(path), mode], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=REPO, **env), timeout=120)
    assert run("fill").returncode == 0
    p = run("expire", DSHM_CRASH_AT="expire-removed:300")
    assert p.returncode == -signal.SIGKILL, p.stderr
    kill_the_repairer(path, "repair-begin")
    with dbm_shm.Cache(path) as c:
        assert c.db.check() == []
        # 299 dropped before the kill, the 300th half-way (its slot gone or not)
        assert c.expire() in (1200, 1201)
        assert sorted(c.db.keys()) == sorted(b"k%d" % i for i in range(0, 3000, 2))
        assert all(c.get(b"k%d" % i) == b"v%d" % i for i in range(0, 3000, 2))
