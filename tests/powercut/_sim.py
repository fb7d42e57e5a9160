"""A crash-state simulator for power loss (property 11 of the design).

A power cut or kernel crash leaves on disk the image of the last completed
``sync()`` plus ANY subset of the pages written since, in any order, each
page possibly torn at 512-byte sectors, and the file's size old or new.
This module builds exactly those states from a traced workload and judges
each one in a fresh process against a model of what was synced:

- ``trace()`` runs a workload in a child process on a real file: it copies
  the file's image after every completed ``sync()`` (with the model of the
  store then), and at points between two syncs (with every model
  acknowledged since), also with a writer frozen (``SIGSTOP``) at a crash
  point inside a write (``DSHM_CRASH_AT``/``DSHM_CRASH_SIGNAL``).
- ``states()`` makes crash states from a synced image and a later one:
  random subsets of the 4 KiB pages that differ, each page whole or torn
  at 512-byte sectors, the size old or new (a grown file's new pages read
  as zeros where they did not reach the disk).
- ``judge()`` opens a state in a fresh process (``'w'``: a repair may run),
  reads every key, runs ``check()``, and gives a verdict: ``ok`` (every
  synced key at its synced value or a later acknowledged one, nothing
  invented, nothing torn, ``check()`` clean), ``refused`` (the open or a
  read raised), ``lost``, ``invented``, ``torn``, and ``check-lies``
  (``check()`` clean on a wrong store) or ``check-false`` (problems listed
  on a right one).

Run by tests/powercut/test_powercut.py (marker ``powercut``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PAGE = 4096
SECTOR = 512

Model = Dict[str, str]          # hex key -> hex value


@dataclass
class Cut:
    """A synced image and a later image of the same store."""
    synced: bytes
    model: Model                 # the store at the sync
    later: bytes
    acked: List[Model] = field(default_factory=list)   # models acknowledged since, in order
    where: str = ""              # what the workload was doing


# -- Tracing ------------------------------------------------------------------

_WORKLOAD = r'''
import json, os, random, shutil, signal, sys, time
import dbm_shm
path, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
model = {}
n_img = [0]

def image(tag):
    n_img[0] += 1
    dst = os.path.join(out, "%03d-%s" % (n_img[0], tag))
    shutil.copyfile(path, dst + ".img")
    with open(dst + ".json", "w") as f:
        json.dump({k.hex(): v.hex() for k, v in model.items()}, f)

def val(k, i):
    n = rng.choice([0, 3, 40, 200, 1000, 5000, 20000])
    return (b"%s=%d;" % (k, i) * (n // (len(k) + 8) + 1))[:n]

db = dbm_shm.open(path, "n")
for i in range(300):
    k = b"key%05d" % i
    model[k] = db[k] = val(k, 0)
db.sync(); image("sync")
step = 0
for period in range(int(sys.argv[4])):
    for j in range(rng.choice([20, 60, 200])):
        step += 1
        r = rng.random()
        if r < 0.45:
            k = b"key%05d" % rng.randrange(1200)       # new keys grow the store: splits, doubling, growth
            v = val(k, step)
            db[k] = v
            model[k] = v
        elif r < 0.65 and model:
            k = rng.choice(sorted(model))
            del db[k]
            del model[k]
        elif r < 0.75:
            ops = {}
            for _ in range(rng.randrange(1, 40)):
                k = b"key%05d" % rng.randrange(1200)
                ops[k] = None if (k in model and rng.random() < 0.3) else val(k, step)
            with db.batch() as b:
                for k, v in ops.items():
                    if v is None:
                        if k in model:
                            del b[k]
                            del model[k]
                    else:
                        b[k] = v
                        model[k] = v
        else:
            k = rng.choice(sorted(model)) if model else b"key00000"
            v = val(k, step)
            db[k] = v
            model[k] = v
        if rng.random() < 0.08:
            image("between")
    image("between")
    db.sync(); image("sync")
db.close()
'''


def trace(workdir: Path, seed: int, periods: int = 4, env: Optional[Dict[str, str]] = None) -> List[Cut]:
    """Run the workload in a child on ``workdir/store``; the cuts it gave:
    each image between two syncs against the sync before it."""
    out = workdir / f"trace-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    path = str(workdir / f"store-{seed}")
    r = subprocess.run([sys.executable, "-c", _WORKLOAD, path, str(out), str(seed), str(periods)],
                       capture_output=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"workload failed: {r.stderr.decode()[-3000:]}")
    return cuts_from(out)


def cuts_from(out: Path) -> List[Cut]:
    cuts: List[Cut] = []
    synced: Optional[Tuple[bytes, Model]] = None
    acked: List[Model] = []
    for img in sorted(out.glob("*.img")):
        model = json.loads(img.with_suffix(".json").read_text())
        data = img.read_bytes()
        if img.stem.endswith("sync"):
            if synced is not None:      # the next sync itself: a cut just before it completed
                cuts.append(Cut(synced[0], synced[1], data, acked + [model], "before-sync"))
            synced, acked = (data, model), []
        else:
            assert synced is not None
            acked.append(model)
            cuts.append(Cut(synced[0], synced[1], data, list(acked), img.stem.split("-", 1)[1]))
    return cuts


def frozen_cut(workdir: Path, base: bytes, model: Model, point: str, nth: int, ops: str,
               env: Optional[Dict[str, str]] = None) -> Cut:
    """A writer frozen at crash point ``point`` (its ``nth`` pass) while it
    runs ``ops`` (python statements on ``db``) on a copy of a synced image:
    the image it leaves, with what it had acknowledged before."""
    path = workdir / f"frozen-{point}-{nth}"
    path.write_bytes(base)
    code = textwrap.dedent('''
        import sys, dbm_shm
        db = dbm_shm.open(sys.argv[1], "w")
        acked = []
        def ack(k, v):
            sys.stdout.write("%s %s\\n" % (k.hex(), "-" if v is None else "=" + v.hex())); sys.stdout.flush()
    ''') + textwrap.dedent(ops)
    e = dict(os.environ if env is None else env)
    e.update({"DSHM_CRASH_AT": f"{point}:{nth}", "DSHM_CRASH_SIGNAL": str(int(signal.SIGSTOP))})
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=e)
    try:
        deadline = time.monotonic() + 60
        while True:
            with open(f"/proc/{p.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state == "T":
                break
            if p.poll() is not None:
                raise RuntimeError(f"the writer was not frozen at {point}:{nth} (exit {p.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the writer did not reach {point}:{nth}")
            time.sleep(0.01)
        later = path.read_bytes()
    finally:
        p.kill()
        out = p.communicate()[0].decode()
    m = dict(model)
    acked = []
    for line in out.splitlines():
        k, v = line.split()
        if v == "-":
            m.pop(k, None)
        else:
            m[k] = v[1:]
        acked.append(dict(m))
    return Cut(base, model, later, acked, f"frozen:{point}")


# -- Crash states -------------------------------------------------------------

def changed_pages(a: bytes, b: bytes) -> List[int]:
    n = (max(len(a), len(b)) + PAGE - 1) // PAGE
    return [i for i in range(n) if a[i * PAGE:(i + 1) * PAGE] != b[i * PAGE:(i + 1) * PAGE]]


def states(cut: Cut, rng: random.Random, count: int) -> List[Tuple[str, bytes]]:
    """``count`` crash states of a cut: (how it was made, bytes)."""
    pages = changed_pages(cut.synced, cut.later)
    out: List[Tuple[str, bytes]] = []
    sizes = sorted({len(cut.synced), len(cut.later)})
    for i in range(count):
        size = rng.choice(sizes)
        img = bytearray(cut.synced[:size].ljust(size, b"\0"))
        kind = rng.choice(["subset", "subset", "torn", "one", "all-but-one"])
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
        out.append((f"{cut.where}/{kind}/size={'old' if size == len(cut.synced) else 'new'}"
                    f"/{len(chosen)}of{len(pages)}", bytes(img)))
    return out


# -- Judging ------------------------------------------------------------------

_JUDGE = r'''
import json, sys
import dbm_shm
out = {}
try:
    with dbm_shm.open(sys.argv[1], "w") as db:
        items = {}
        for k in db.keys():
            items[k.hex()] = db[k].hex()
        out["items"] = items
        out["check"] = db.check()
except (dbm_shm.error, KeyError) as e:
    out["error"] = str(e)
print(json.dumps(out))
'''


def allowed(cut: Cut) -> Dict[str, set]:
    """key -> the values it may have ('' hex for b''), None for absent."""
    keys = set(cut.model)
    for m in cut.acked:
        keys |= set(m)
    ok: Dict[str, set] = {}
    for k in keys:
        vals = {cut.model.get(k)}
        for m in cut.acked:
            vals.add(m.get(k))
        ok[k] = vals
    return ok


def judge(cut: Cut, state: bytes, path: Path, env: Optional[Dict[str, str]] = None) -> Tuple[str, str]:
    """(verdict, detail) for one crash state, opened in a fresh process."""
    path.write_bytes(state)
    r = subprocess.run([sys.executable, "-c", _JUDGE, str(path)], capture_output=True, env=env, timeout=120)
    if r.returncode != 0:
        return "crashed", f"exit {r.returncode}: {r.stderr.decode()[-500:]}"
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    if "error" in res:
        return "refused", res["error"]
    items: Dict[str, str] = res["items"]
    ok = allowed(cut)
    # Synced keys are kept at their synced value or a later acknowledged
    # one; a key deleted later may be absent only then.
    invented = [k for k in items if k not in ok]
    torn = [k for k, v in items.items() if k in ok and v not in ok[k]]
    lost = [k for k, vals in ok.items() if k not in items and None not in vals]
    wrong = invented or torn or lost
    if invented:
        verdict, detail = "invented", f"{len(invented)} keys never written, e.g. {bytes.fromhex(invented[0])!r}"
    elif torn:
        verdict, detail = "torn", f"{len(torn)} values never written, e.g. key {bytes.fromhex(torn[0])!r}"
    elif lost:
        verdict, detail = "lost", f"{len(lost)} synced keys missing, e.g. {bytes.fromhex(lost[0])!r}"
    else:
        verdict, detail = "ok", ""
    if wrong and not res["check"]:
        verdict = "check-lies:" + verdict
    elif not wrong and res["check"]:
        verdict, detail = "check-false", "; ".join(res["check"][:2])
    return verdict, detail


def summarize(verdicts: Sequence[Tuple[str, str, str]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for _, v, _ in verdicts:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))
