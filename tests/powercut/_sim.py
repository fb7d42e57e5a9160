"""A crash-state simulator for power loss (property 11 of the design).

A power cut or kernel crash leaves on disk the image of the last completed
``sync()`` plus ANY subset of the pages written since, in any order, each
page possibly torn at 512-byte sectors, and the file's size old or new.
This module builds exactly those states from traced workloads and judges
each one in a fresh process against a model of what was synced:

- ``trace()`` runs a named workload (``WORKLOADS``) in a child process on a
  real file. The child logs every write as a *step* before it makes it
  (``log.jsonl``: the keys it sets or deletes, values as fingerprints) and
  copies the file's image after every acknowledged sync (a ``sync()``, an
  ``'s'`` store's write, an ``open(path, 'n')``) and at points between.
  Workloads that rename a file over the path (``open(path, 'n')`` over a
  store someone has open, ``reorganize()``) are frozen (``SIGSTOP`` at a
  crash point, ``DSHM_CRASH_AT``/``DSHM_CRASH_SIGNAL``) right after the
  rename, where the parent copies both files: the new file as its first
  synced image (the point comes after the core's ``fsync`` of it), the old
  one as it was then. An ``'s'`` batch is frozen after its staging sync
  the same way, which gives the image that sync made durable.
- ``cuts_from()`` turns the log into *cuts*: a synced image and its model,
  a later image of the same file, and the steps between. Until the sync
  after a rename, the old file's cuts stand beside the new file's: the
  directory entry may be either.
- ``frozen_cut()`` freezes a writer at a crash point inside a write on a
  copy of a synced image: a cut whose last step is in flight.
- ``states()`` makes crash states from a cut: random subsets of the 4 KiB
  pages that differ, each page whole or torn at 512-byte sectors, the size
  old or new (a grown file's new pages read as zeros where they did not
  reach the disk).
- ``judge()`` opens a state in a fresh process (``'w'``: a repair may run),
  reads every key, runs ``check()``; ``assess()`` gives the verdict: ``ok``
  (every synced key at its synced value or one a later step wrote, nothing
  invented, nothing torn, every step all or nothing, ``check()`` clean),
  ``refused`` (the open or a read raised), ``crashed`` (the process died),
  ``invented``, ``torn``, ``lost``, ``partial`` (a step, e.g. a batch, a
  transaction or a ``clear()``, seen in part), and ``check-lies:<verdict>``
  (``check()`` clean on a wrong store) or ``check-false`` (problems listed
  on a right one). The detail names keys, synced and read values.
- ``run()`` does all of it for some workloads, judging in parallel.

Run by tests/powercut/test_powercut.py (marker ``powercut``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

PAGE = 4096
SECTOR = 512

Value = Optional[str]           # a value's fingerprint (see fingerprint()), None: absent
Model = Dict[str, str]          # hex key -> fingerprint of its value


@dataclass
class Step:
    """One write call: the keys it sets (a fingerprint) or deletes (None).
    All of it or none of it may be on disk after a crash."""
    op: str
    delta: Dict[str, Value]


@dataclass
class Cut:
    """A synced image and a later image of the same file, with what was
    written between."""
    synced: bytes
    model: Model                 # the store at the sync: what must survive
    later: bytes
    steps: List[Step] = field(default_factory=list)   # written since, in order (the last may be in flight)
    where: str = ""              # what the workload was doing
    workload: str = ""
    sizes: List[int] = field(default_factory=list)    # file sizes a crash may leave besides old and new
    earlier: List[bytes] = field(default_factory=list)  # images of the file between synced and later

    def final(self) -> Model:
        """The model after every step."""
        m = dict(self.model)
        for s in self.steps:
            apply_delta(m, s.delta)
        return m


def fingerprint(v: bytes) -> str:
    """A value's fingerprint in models: length, digest, first bytes."""
    return "%d:%s:%s" % (len(v), hashlib.sha1(v).hexdigest()[:12], v[:16].hex())


def show(v: Value) -> str:
    """A fingerprint for a message: ``absent`` or ``len=N b'first bytes'... #digest``."""
    if v is None:
        return "absent"
    n, digest, head = v.split(":", 2)
    return f"len={n} {bytes.fromhex(head)!r}{'...' if int(n) > 16 else ''} #{digest}"


def apply_delta(m: Model, delta: Dict[str, Value]) -> None:
    for k, v in delta.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v


# -- Tracing ------------------------------------------------------------------

# What every workload runs first: the log, images, the write helpers. A
# step is logged before its call (so a writer frozen inside it has it in
# the log); ``image(tag)`` copies the file after what was logged so far.
_PRELUDE = r'''
import hashlib, json, os, random, shutil, sys
import dbm_shm
path, out, seed, periods = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
model = {}
_log = open(os.path.join(out, "log.jsonl"), "a")

def fp(v):
    return "%d:%s:%s" % (len(v), hashlib.sha1(v).hexdigest()[:12], v[:16].hex())

def log(**e):
    _log.write(json.dumps(e) + "\n"); _log.flush()

def step(op, d, **kw):
    log(e="step", op=op, d={k.hex(): None if v is None else fp(v) for k, v in d.items()}, **kw)
    for k, v in d.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v

def image(tag, src=None, **kw):
    n = len([f for f in os.listdir(out) if f.endswith(".img")]) + 1
    name = "%04d-%s.img" % (n, tag)
    shutil.copyfile(src or path, os.path.join(out, name))
    log(e="image", tag=tag, img=name, **kw)

def val(k, i, sizes=(0, 3, 40, 200, 1000, 5000, 20000)):
    n = rng.choice(sizes)
    return (b"%s=%d;" % (k, i) * (n // (len(k) + 8) + 1))[:n]

def put(db, k, v):
    step("put", {k: v}); db[k] = v

def delete(db, k):
    step("del", {k: None}); del db[k]

def batch(db, ops):
    step("batch", ops)
    with db.batch() as b:
        for k, v in ops.items():
            if v is None:
                del b[k]
            else:
                b[k] = v

def txn(db, keys, i):
    """A read-modify-write of keys: each value read in the block, a tail appended."""
    before = {k: model.get(k) for k in keys}
    ops = {k: ((before[k] or b"")[:60] + b"+%d" % i) for k in keys}
    step("txn", ops)
    with db.transaction() as tx:
        for k in keys:
            assert tx.get(k) == before[k], k
            tx[k] = ops[k]

def clear(db):
    step("clear", {k: None for k in model}); db.clear()

def sync(db):
    db.sync(); image("sync")

def random_ops(db, i, nkeys=1200):
    """One random write: a put (often a new key), a delete, a batch, an overwrite."""
    r = rng.random()
    if r < 0.45:
        k = b"key%05d" % rng.randrange(nkeys)       # new keys grow the store: splits, doubling, growth
        put(db, k, val(k, i))
    elif r < 0.65 and model:
        delete(db, rng.choice(sorted(model)))
    elif r < 0.75:
        ops = {}
        for _ in range(rng.randrange(1, 40)):
            k = b"key%05d" % rng.randrange(nkeys)
            ops[k] = None if (k in model and rng.random() < 0.3) else val(k, i)
        batch(db, ops)
    else:
        k = rng.choice(sorted(model)) if model else b"key00000"
        put(db, k, val(k, i))

def fill(db, n=300):
    for i in range(n):
        k = b"key%05d" % i
        put(db, k, val(k, 0))

def renamed_over(call, new_model, gen):
    """Run call(), which renames a new file over the path, frozen by the
    parent right after the rename (it copies both files then): the old file
    stays reachable through a hard link for its image after the call."""
    os.link(path, path + ".old")
    log(e="rename", model={k.hex(): fp(v) for k, v in new_model.items()}, gen=gen)
    r = call()
    image("old-after", src=path + ".old", gen=gen - 1)
    os.unlink(path + ".old")
    model.clear(); model.update(new_model)
    return r
'''

#: name -> (statements after the prelude, crash point the parent freezes at (or None))
WORKLOADS: Dict[str, Tuple[str, Optional[str]]] = {
    # Puts, deletes, batches and overwrites over 1200 keys; images at random
    # points between syncs.
    "mixed": ('''
db = dbm_shm.open(path, "n")
fill(db); sync(db)
i = 0
for period in range(periods):
    for j in range(rng.choice([20, 60, 200])):
        i += 1
        random_ops(db, i)
        if rng.random() < 0.08:
            image("between")
    image("between")
    sync(db)
db.close()
''', None),
    # Many inserts of large values between syncs: the file (and
    # hd_file_size) grows inside every period.
    "grow": ('''
db = dbm_shm.open(path, "n")
fill(db, 100); sync(db)
n = 0
for period in range(periods):
    for j in range(rng.choice([30, 60])):
        n += 1
        k = b"big%05d" % n
        put(db, k, val(k, n, (20000, 50000, 120000)))
        if rng.random() < 0.1:
            image("between")
    image("between")
    sync(db)
db.close()
''', None),
    # clear() amid writes, and a clear() right before a sync.
    "clear": ('''
db = dbm_shm.open(path, "n")
fill(db); sync(db)
for period in range(periods):
    for i in range(30):
        random_ops(db, 1000 * period + i)
    image("between")
    clear(db)
    image("between")
    for i in range(30):
        random_ops(db, 1000 * period + 100 + i)
    image("between")
    sync(db)
    clear(db)
    sync(db)
    fill(db, 150)
    sync(db)
db.close()
''', None),
    # Transactions (read-modify-write of several keys) between syncs.
    "txn": ('''
db = dbm_shm.open(path, "n")
fill(db); sync(db)
i = 0
for period in range(periods):
    for j in range(rng.choice([10, 30])):
        i += 1
        txn(db, rng.sample([b"key%05d" % x for x in range(400)], rng.randrange(1, 30)), i)
        if rng.random() < 0.2:
            random_ops(db, i)
        if rng.random() < 0.15:
            image("between")
    image("between")
    sync(db)
db.close()
''', None),
    # open(path, 'n') over a store this process has open: a fresh file is
    # renamed over the path (frozen after the rename); then 'n' on a store
    # no one has open, which is renamed over just the same.
    "renew": ('''
db = dbm_shm.open(path, "n")
fill(db); sync(db)
for i in range(40):
    random_ops(db, i)
image("between")
db2 = renamed_over(lambda: dbm_shm.open(path, "n"), {}, 1)
db.close(); db = db2
image("between", gen=1)
for i in range(40):
    random_ops(db, 100 + i)
image("between", gen=1)
sync(db)
for i in range(40):
    random_ops(db, 200 + i)
db.close()
# 'n' on a store no one has open: a fresh file renamed over it as well.
db = renamed_over(lambda: dbm_shm.open(path, "n"), {}, 2)
image("sync", gen=2)
fill(db, 50)
sync(db)
db.close()
''', "n-rename"),
    # reorganize(): a compact copy renamed over the path (frozen after the
    # rename); writes to the new file after it.
    "reorganize": ('''
db = dbm_shm.open(path, "n")
fill(db, 600); sync(db)
for i in range(150):
    if model and rng.random() < 0.6:
        delete(db, rng.choice(sorted(model)))
    else:
        random_ops(db, i)
image("between")
renamed_over(db.reorganize, dict(model), 1)
image("between", gen=1)
for i in range(40):
    random_ops(db, 200 + i)
image("between", gen=1)
sync(db)
db.close()
''', "reorganize-renamed"),
    # An 's' store ('cs'): every write is durable when it returns (an image
    # after each); one batch, frozen after its staging sync (the image that
    # sync made durable), all or nothing in every state.
    "sflag-batch": ('''
db = dbm_shm.open(path, "n")
fill(db, 200); sync(db); db.close()
db = dbm_shm.open(path, "cs")
for i in range(12):
    random_ops_s = rng.random()
    k = b"key%05d" % rng.randrange(400)
    if k in model and random_ops_s < 0.3:
        delete(db, k)
    else:
        put(db, k, val(k, i))
    image("sync")
ops = {}
for x in rng.sample(range(600), 60):
    k = b"key%05d" % x
    ops[k] = None if (k in model and rng.random() < 0.3) else val(k, 1000 + x, (40, 1000, 5000))
batch(db, ops)
image("sync")
for i in range(5):
    k = b"key%05d" % rng.randrange(400)
    put(db, k, val(k, 2000 + i))
    image("sync")
db.close()
''', None),
    # A cache (dbm_shm.Cache): puts with deadlines under a byte cap, so
    # that puts evict (each eviction a step, logged after the put from the
    # keys it took), touch, delete, keys that expire (a step once past
    # their deadline: absent for every reader from then on), expire().
    "cache": ('''
import time
c = dbm_shm.Cache(path, max_bytes=300_000)
db = c.db

def cset(k, v, ttl=3600.0):
    step("put", {k: v}); c.set(k, v, ttl=ttl)
    gone = {x: None for x in sorted(model) if x != k and db.get(x) is None}
    if gone:
        step("evict", gone)

for i in range(150):
    k = b"key%05d" % i
    cset(k, val(k, 0, (40, 1000, 5000)))
sync(db)
i = 0
for period in range(periods):
    for j in range(rng.choice([20, 60])):
        i += 1
        r = rng.random()
        k = b"key%05d" % rng.randrange(600)
        if r < 0.6:
            cset(k, val(k, i, (40, 1000, 5000, 20000)))
        elif r < 0.7 and model:
            t = rng.choice(sorted(model))
            step("touch", {t: model[t]}); c.touch(t, 3600)
        elif r < 0.8 and model:
            t = rng.choice(sorted(model))
            step("del", {t: None}); c.delete(t)
        elif r < 0.92:
            cset(k, val(k, i, (40, 1000)), ttl=0.02)
            time.sleep(0.03)
            if k in model:
                step("expired", {k: None})
        else:
            c.expire()
        if rng.random() < 0.1:
            image("between")
    image("between")
    sync(db)
c.close()
''', None),
    # The same with a transaction on the 's' store (its commit is a batch).
    "sflag-txn": ('''
db = dbm_shm.open(path, "n")
fill(db, 200); sync(db); db.close()
db = dbm_shm.open(path, "cs")
for i in range(6):
    k = b"key%05d" % rng.randrange(400)
    put(db, k, val(k, i))
    image("sync")
txn(db, rng.sample([b"key%05d" % x for x in range(300)], 50), 1000)
image("sync")
clear(db)
image("sync")
db.close()
''', None),
}


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except FileNotFoundError:
        return False


def _copy_frozen(path: str, out: Path, freeze: str) -> None:
    """The child is frozen at ``freeze``: copy what the crash point makes
    durable, into the child's log (the child logs nothing while frozen)."""
    def image(tag: str, src: str, **kw: object) -> None:
        n = len(list(out.glob("*.img"))) + 1
        name = "%04d-%s.img" % (n, tag)
        (out / name).write_bytes(Path(src).read_bytes())
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(dict(e="image", tag=tag, img=name, **kw)) + "\n")
    if freeze == "commit-flushed":
        # A commit's first flush has returned: the file as it is now is on
        # disk (its new meta not yet written); the commit is not
        # acknowledged until the call returns.
        image("sync-mid", path)
    elif freeze == "commit-synced":
        # Its second flush has returned: the new meta is on disk, the commit
        # durable, before it frees what waited for it and returns.
        image("sync-durable", path)
    else:
        # The path names the new file, fsynced before the rename.
        image("renamed-old", path + ".old")
        image("renamed-new", path)


def trace(workdir: Path, seed: int, periods: int = 4, env: Optional[Dict[str, str]] = None,
          workload: str = "mixed") -> List[Cut]:
    """Run ``workload`` in a child on ``workdir/store-<workload>-<seed>``;
    the cuts it gave (see ``cuts_from``)."""
    code, freeze = WORKLOADS[workload]
    out = workdir / f"trace-{workload}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    path = str(workdir / f"store-{workload}-{seed}")
    e = dict(os.environ if env is None else env)
    # Frozen at the workload's point (once), and at every commit between
    # its two flushes: what the first flush made durable is an image of
    # its own (the data of the commit, without its meta).
    note = out / "crash-note"
    e.update({"DSHM_CRASH_AT": (f"{freeze}:every," if freeze else "") + "commit-flushed:every,commit-synced:every",
              "DSHM_CRASH_SIGNAL": str(int(signal.SIGSTOP)), "DSHM_CRASH_NOTE": str(note)})
    p = subprocess.Popen([sys.executable, "-c", _PRELUDE + code, path, str(out), str(seed), str(periods)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        deadline = time.monotonic() + 600
        frozen = not freeze
        while p.poll() is None:
            if _stopped(p.pid):
                point = note.read_text()
                _copy_frozen(path, out, point)
                if point == freeze:
                    frozen = True
                os.kill(p.pid, signal.SIGCONT)
            if time.monotonic() > deadline:
                raise RuntimeError(f"workload {workload} did not finish")
            time.sleep(0.005)
        err = p.communicate()[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"workload {workload} failed: {err.decode()[-3000:]}")
    if not frozen:
        raise RuntimeError(f"workload {workload} never reached {freeze}")
    cuts = cuts_from(out)
    for c in cuts:
        c.workload = workload
    return cuts


@dataclass
class _File:
    """One file's history in cuts_from: its last synced image and model,
    the steps since, the file sizes a crash may leave besides old and new,
    the images taken since."""
    synced: bytes
    model: Model
    steps: List[Step] = field(default_factory=list)
    sizes: List[int] = field(default_factory=list)
    images: List[bytes] = field(default_factory=list)


def cuts_from(out: Path) -> List[Cut]:
    """The cuts of a traced workload's log: each image between two syncs
    against the sync before it, each sync against the one before (a crash
    just before it completed), and after a rename the old file's images
    against its last sync (until the next sync, the directory entry may
    still name the old file)."""
    cuts: List[Cut] = []
    cur: Optional[_File] = None
    old: Optional[_File] = None
    durable = False      # a commit's meta reached the disk since the last "sync" image
    model: Model = {}
    renamed: Model = {}

    def cut(f: _File, img: bytes, where: str) -> None:
        cuts.append(Cut(f.synced, f.model, img, list(f.steps), where, sizes=list(f.sizes), earlier=list(f.images)))
        f.images.append(img)

    for line in (out / "log.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["e"] == "step":
            durable = False      # a "sync" image after this is a sync of its own
            s = Step(ev["op"], ev["d"])
            apply_delta(model, s.delta)
            assert cur is not None or ev["op"] == "put"
            if cur is not None:
                cur.steps.append(s)
                cur.sizes += ev.get("sizes", [])
            continue
        if ev["e"] == "rename":
            renamed = ev["model"]
            continue
        tag = ev["tag"]
        data = (out / ev["img"]).read_bytes()
        if tag == "sync-durable":
            # The commit's meta is on disk: the new synced image (the model
            # holds every step begun, the one in flight included).
            if cur is not None:
                cut(cur, data, "before-sync")
            cur, old, durable = _File(data, dict(model)), None, True
        elif tag == "sync":
            if durable and cur is not None:
                # The call returned after freeing what waited for the
                # commit: those writes belong to the next period.
                cut(cur, data, "after-commit")
                cur.model = dict(model)
            else:
                if cur is not None:
                    cut(cur, data, "before-sync")
                # The fill before the first sync is part of its model.
                cur, old = _File(data, dict(model)), None
            durable = False
        elif tag == "sync-mid":
            # Durable now, yet the call (its last step) has not returned:
            # the model to keep is still the last acknowledged one. (Before
            # the first sync nothing is kept: the fill is not a cut.)
            if cur is None:
                continue
            cut(cur, data, "before-first-flush")
            cur = _File(data, cur.model, cur.steps, cur.sizes)
        elif tag == "renamed-old" or tag == "old-after":
            assert (old or cur) is not None
            f = old if tag == "old-after" else cur
            assert f is not None
            cut(f, data, f"renamed:{tag}")
        elif tag == "renamed-new":
            old, cur = cur, _File(data, dict(renamed))
            model = dict(renamed)
        else:
            assert cur is not None
            cut(cur, data, tag)
    return cuts


#: The frozen writer's helpers: a step is printed before its call.
_FROZEN_PRELUDE = '''
import json, sys, dbm_shm
db = dbm_shm.open(sys.argv[1], "w")
def step(op, d):
    print(json.dumps([op, {k.hex(): None if v is None else fp(v) for k, v in d.items()}]), flush=True)
def fp(v):
    import hashlib
    return "%d:%s:%s" % (len(v), hashlib.sha1(v).hexdigest()[:12], v[:16].hex())
def put(k, v):
    step("put", {k: v}); db[k] = v
def batch(ops):
    step("batch", ops)
    with db.batch() as b:
        for k, v in ops.items():
            b[k] = v
def txn(ops):
    step("txn", ops)
    with db.transaction() as tx:
        for k, v in ops.items():
            tx[k] = v
def delete(k):
    step("del", {k: None}); del db[k]
def clear():
    step("clear", {k: None for k in db.keys()}); db.clear()
'''


def frozen_cut(workdir: Path, base: bytes, model: Model, point: str, nth: int, ops: str,
               env: Optional[Dict[str, str]] = None) -> Cut:
    """A writer frozen at crash point ``point`` (its ``nth`` pass) while it
    runs ``ops`` (python statements using ``put``, ``delete``, ``batch``,
    ``txn``, ``clear``, or ``step`` then ``db``) on a copy of a synced image: the
    image it leaves, with the steps it had begun (the last in flight)."""
    path = workdir / f"frozen-{point}-{nth}"
    path.write_bytes(base)
    code = _FROZEN_PRELUDE + textwrap.dedent(ops)
    e = dict(os.environ if env is None else env)
    e.update({"DSHM_CRASH_AT": f"{point}:{nth}", "DSHM_CRASH_SIGNAL": str(int(signal.SIGSTOP))})
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=e)
    try:
        deadline = time.monotonic() + 60
        while not _stopped(p.pid):
            if p.poll() is not None:
                raise RuntimeError(f"the writer was not frozen at {point}:{nth} (exit {p.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the writer did not reach {point}:{nth}")
            time.sleep(0.01)
        later = path.read_bytes()
    finally:
        p.kill()
        out = p.communicate()[0].decode()
    steps = [Step(op, d) for op, d in (json.loads(line) for line in out.splitlines())]
    return Cut(base, model, later, steps, f"frozen:{point}", workload=f"frozen:{point}")


# -- Crash states -------------------------------------------------------------

def changed_pages(a: bytes, b: bytes) -> List[int]:
    n = (max(len(a), len(b)) + PAGE - 1) // PAGE
    return [i for i in range(n) if a[i * PAGE:(i + 1) * PAGE] != b[i * PAGE:(i + 1) * PAGE]]


def states(cut: Cut, rng: random.Random, count: int) -> List[Tuple[str, bytes]]:
    """``count`` crash states of a cut: (how it was made, bytes). Kinds:
    ``subset`` (each changed page of the later image or not), ``torn`` (each
    sector of a changed page), ``one``, ``all-but-one``, and ``versions``
    (each changed page from any image since the sync, the size any of
    theirs: pages written back at different moments)."""
    pages = changed_pages(cut.synced, cut.later)
    out: List[Tuple[str, bytes]] = []
    sizes = sorted({len(cut.synced), len(cut.later), *cut.sizes})
    kinds = ["subset", "subset", "torn", "one", "all-but-one"] + (["versions"] * 2 if cut.earlier else [])
    for i in range(count):
        kind = rng.choice(kinds)
        if kind == "versions":
            size = rng.choice(sorted({*sizes, *map(len, cut.earlier)}))
            img = bytearray(cut.synced[:size].ljust(size, b"\0"))
            imgs = [cut.synced, *cut.earlier, cut.later]
            vpages = sorted({p for e in cut.earlier for p in changed_pages(cut.synced, e)} | set(pages))
            for p in vpages:
                lo, hi = p * PAGE, min(p * PAGE + PAGE, size)
                if lo < hi:
                    img[lo:hi] = rng.choice(imgs)[lo:hi].ljust(hi - lo, b"\0")
            out.append((f"{cut.where}/versions/size={size}/{len(vpages)}pages/{len(imgs)}images", bytes(img)))
            continue
        size = rng.choice(sizes)
        img = bytearray(cut.synced[:size].ljust(size, b"\0"))
        if kind == "one":
            chosen = [rng.choice(pages)] if pages else []
        elif kind == "all-but-one":
            chosen = [p for p in pages if p != (rng.choice(pages) if pages else -1)]
        else:
            chosen = [p for p in pages if rng.random() < 0.5]
        for p in chosen:
            lo = p * PAGE
            if lo >= size:
                continue
            new = cut.later[lo:lo + PAGE].ljust(PAGE, b"\0")
            if kind == "torn":
                for s in range(PAGE // SECTOR):
                    if rng.random() < 0.5:
                        a, b = lo + s * SECTOR, min(lo + (s + 1) * SECTOR, size)
                        if a < b:
                            img[a:b] = new[s * SECTOR:s * SECTOR + (b - a)]
            else:
                hi = min(lo + PAGE, size)
                img[lo:hi] = new[:hi - lo]
        label = {len(cut.synced): "old", len(cut.later): "new"}.get(size, str(size))
        out.append((f"{cut.where}/{kind}/size={label}/{len(chosen)}of{len(pages)}", bytes(img)))
    return out


# -- Judging ------------------------------------------------------------------

_JUDGE = r'''
import hashlib, json, sys
import dbm_shm
def fp(v):
    return "%d:%s:%s" % (len(v), hashlib.sha1(v).hexdigest()[:12], v[:16].hex())
out = {}
try:
    with dbm_shm.open(sys.argv[1], "w") as db:
        items = {}
        for k in db.keys():
            items[k.hex()] = fp(db[k])
        out["items"] = items
        out["check"] = db.check()
except (dbm_shm.error, KeyError) as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
'''

#: Examples of each kind of wrong outcome a detail names.
EXAMPLES = 3


def _histories(cut: Cut) -> Dict[str, List[Tuple[int, Value]]]:
    """key -> its values in order: (the version from which it holds, value);
    version 0 is the sync, version i+1 follows step i."""
    h: Dict[str, List[Tuple[int, Value]]] = {k: [(0, v)] for k, v in cut.model.items()}
    for i, s in enumerate(cut.steps):
        for k, v in s.delta.items():
            h.setdefault(k, [(0, None)]).append((i + 1, v))
    return h


def _key(k: str) -> str:
    return repr(bytes.fromhex(k))


def assess(cut: Cut, items: Dict[str, str], check: Sequence[str]) -> Tuple[str, str]:
    """(verdict, detail) for a store read as ``items`` (hex key ->
    fingerprint) whose ``check()`` listed ``check``."""
    hist = _histories(cut)
    found: Dict[str, List[str]] = {}
    # Keys: at their synced value or one a later step wrote; absent only if
    # absent at the sync or deleted since.
    for k, v in sorted(items.items()):
        if k not in hist:
            found.setdefault("invented", []).append(f"key {_key(k)}: never written, read {show(v)}")
        elif v not in {x for _, x in hist[k]}:
            found.setdefault("torn", []).append(
                f"key {_key(k)}: synced {show(cut.model.get(k))}, read {show(v)} (neither the synced value nor one written since)")
    for k, h in sorted(hist.items()):
        if k not in items and None not in {x for _, x in h}:
            found.setdefault("lost", []).append(f"key {_key(k)}: synced {show(cut.model.get(k))}, read absent")
    # Steps: all or nothing. Step i is seen applied through a key whose
    # value only step i wrote, and not applied through a key whose value
    # held only before it; both at once is a step seen in part.
    for i, s in enumerate(cut.steps):
        if len(s.delta) < 2:
            continue
        applied: List[str] = []
        missed: List[str] = []
        for k in s.delta:
            v = items.get(k)
            at = [n for n, (_, x) in enumerate(hist[k]) if x == v]
            if not at:
                continue
            mine = next(n for n, (ver, _) in enumerate(hist[k]) if ver == i + 1)
            if at == [mine]:
                applied.append(k)
            elif all(hist[k][n][0] <= i for n in at) and hist[k][mine][1] != v:
                missed.append(k)
        if applied and missed:
            a, m = applied[0], missed[0]
            found.setdefault("partial", []).append(
                f"step {i} ({s.op} of {len(s.delta)} keys): {len(applied)} applied, e.g. {_key(a)} "
                f"read {show(items.get(a))}; {len(missed)} not, e.g. {_key(m)} read {show(items.get(m))}, "
                f"the step wrote {show(s.delta[m])}")
    wrong = [kind for kind in ("invented", "torn", "lost", "partial") if kind in found]
    detail = "; ".join(f"{kind} {len(found[kind])}: " + " | ".join(found[kind][:EXAMPLES]) for kind in wrong)
    if wrong:
        verdict = wrong[0]
        if not check:
            verdict = "check-lies:" + verdict
        return verdict, detail
    if check:
        return "check-false", "; ".join(check[:EXAMPLES])
    return "ok", ""


def judge(cut: Cut, state: bytes, path: Path, env: Optional[Dict[str, str]] = None,
          reboot: bool = True) -> Tuple[str, str]:
    """(verdict, detail) for one state, opened in a fresh process. A crash
    state is opened "after the reboot" (another kernel boot id, as the core
    sees it through DSHM_TEST_BOOT_ID); reboot=False: in this boot, as after
    a killed process (the page cache kept every write)."""
    path.write_bytes(state)
    e = dict(os.environ if env is None else env)
    if reboot:
        e["DSHM_TEST_BOOT_ID"] = "powercut-simulator-reboot"
    r = subprocess.run([sys.executable, "-c", _JUDGE, str(path)], capture_output=True, env=e, timeout=120)
    if r.returncode != 0:
        return "crashed", f"exit {r.returncode}: {r.stderr.decode()[-500:]}"
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    if "error" in res:
        return "refused", res["error"]
    return assess(cut, res["items"], res["check"])


# -- Running ------------------------------------------------------------------

@dataclass
class Result:
    workload: str
    how: str                     # how the state was made
    verdict: str
    detail: str


def sample_states(cuts: Sequence[Cut], rng: random.Random, per_workload: int) -> List[Tuple[Cut, str, bytes]]:
    """About ``per_workload`` crash states of each workload's cuts, spread
    over its cuts (every cut gets one while there are enough)."""
    by: Dict[str, List[Cut]] = {}
    for c in cuts:
        by.setdefault(c.workload, []).append(c)
    out: List[Tuple[Cut, str, bytes]] = []
    for w, cs in by.items():
        picked = cs if len(cs) <= per_workload else rng.sample(cs, per_workload)
        n = max(1, per_workload // len(picked))
        extra = per_workload - n * len(picked)
        for j, c in enumerate(picked):
            for how, data in states(c, rng, n + (1 if j < extra else 0)):
                out.append((c, how, data))
    return out


def judge_all(work: Sequence[Tuple[Cut, str, bytes]], tmp: Path, jobs: int = 2,
              env: Optional[Dict[str, str]] = None, reboot: bool = True) -> List[Result]:
    """Judge every (cut, how, state), ``jobs`` at a time (see ``judge``)."""
    def one(n: int) -> Result:
        cut, how, data = work[n]
        verdict, detail = judge(cut, data, tmp / f"state-{n}", env, reboot)
        (tmp / f"state-{n}").unlink(missing_ok=True)
        return Result(cut.workload, how, verdict, detail)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, range(len(work))))


def summarize(results: Sequence[Result]) -> Dict[str, Dict[str, int]]:
    """workload -> verdict -> count, with ``all`` for the totals."""
    counts: Dict[str, Dict[str, int]] = {}
    for r in results:
        for w in (r.workload, "all"):
            c = counts.setdefault(w, {})
            c[r.verdict] = c.get(r.verdict, 0) + 1
    return {w: dict(sorted(c.items())) for w, c in sorted(counts.items(), key=lambda x: (x[0] == "all", x[0]))}


def report(results: Sequence[Result], examples: int = EXAMPLES) -> str:
    """The summary table, then up to ``examples`` wrong states per verdict
    with their details."""
    lines = ["power-cut states (workload: verdict counts):"]
    for w, c in summarize(results).items():
        lines.append(f"  {w:<24} {sum(c.values()):>4}  " + ", ".join(f"{v}={n}" for v, n in c.items()))
    by: Dict[str, List[Result]] = {}
    for r in results:
        if r.verdict != "ok":
            by.setdefault(r.verdict, []).append(r)
    for v, rs in sorted(by.items()):
        lines.append(f"{v}: {len(rs)}")
        for r in rs[:examples]:
            lines.append(f"  [{r.workload}] {r.how}: {r.detail[:600]}")
    return "\n".join(lines)


def workload_names() -> List[str]:
    return list(WORKLOADS)


def seen(results: Sequence[Result]) -> Set[str]:
    return {r.workload for r in results}
