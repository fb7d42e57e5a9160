"""Helpers for the repair-crash tests (issue 13; DESIGN.md §3 property 9:
repairs survive their own crash).

Imported as ``_support.repair``. Run as a script it is one of the processes the tests start, each in a
process of its own so that its SIGKILL (DSHM_CRASH_AT) ends only it:

  python tests/_support/repair.py repairer PATH MODE [KEYSFILE]
      the process that finds a dead writer and repairs: MODE "open" opens
      the path alone (repair at open), "lock" opens it while the test holds
      a handle and then writes (repair at the lock), "read" opens it the
      same way and reads every key in KEYSFILE (repair in a read's
      fallback). Prints "DONE" if it lives to the end.
  python tests/_support/repair.py final PATH JSON
      the last repair and the verdict: open 'w', write a probe key,
      check() == [], every key read with get, keys() without duplicates,
      len(), every value self-checking; the store must equal one of the
      candidate models in JSON (or, with "lose_one", one of them less any
      one key: a popitem() was in flight). Prints one JSON line.
  python tests/_support/repair.py n-open PATH
      opens PATH with 'n' (DSHM_CRASH_AT="n-rename:1" kills it after its rename).
  python tests/_support/repair.py batch-writer PATH
      writes BATCH (below) as one batch (DSHM_CRASH_AT kills it inside).
  python tests/_support/repair.py txn-writer PATH
      reads then writes BATCH in one transaction (DSHM_CRASH_AT kills it
      inside: txn-commit holds the lock with nothing published).

Header offsets are those of csrc/dshm_layout.h (format 1, x86_64 glibc);
test_repair_regressions.py checks them against the file it makes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from _support import child_env
from _support.helpers import (MIN_VALUE, bad_values, check_value, make_value,
                              value_version)

SCRIPT = str(Path(__file__).resolve())

# ---- header offsets (struct dshm_header) ----
HD_MUTEX = 128          # hd_mutex; glibc's futex word is its first 4 bytes
HD_REPAIR = 184
HD_FILE_SIZE = 192
HD_DIR = 200
HD_STRUCT_SEQ = 208
HD_COUNT = 224
HD_MOVED = 232
HD_LOCK_PID = 176
HD_RECOVERIES = 288
HD_BATCH = 1808
HD_ALLOC_SUM = 1824
OWNER_DIED = 0x40000000

PROBE = b"__probe__"

Model = Dict[bytes, Tuple[int, int]]   # key -> (version, size)


def read_u64(path: str, off: int) -> int:
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack("<Q", f.read(8))[0]


def write_u64(path: str, off: int, v: int) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack("<Q", v))


def lock_word(path: str) -> int:
    with open(path, "rb") as f:
        f.seek(HD_MUTEX)
        return struct.unpack("<I", f.read(4))[0]


def repair_owed(path: str) -> bool:
    """The file says a repair is owed: hd_repair set, or the writer lock's
    holder died (the kernel marked its futex word)."""
    return read_u64(path, HD_REPAIR) != 0 or bool(lock_word(path) & OWNER_DIED)


# ---------------------------------------------------------------------------
# Stores and models

def populate_model(n: int, seed: int = 1) -> Model:
    rng = random.Random(seed)
    model: Model = {}
    for i in range(n):
        size = rng.randrange(300) if i % 50 else rng.randrange(2048, 40000)
        model[b"k%06d" % i] = (i + 1, size)
    return model


def populate(path: str, n: int, seed: int = 1) -> Model:
    import dbm_shm
    model = populate_model(n, seed)
    with dbm_shm.open(path, "n") as db:
        items = list(model.items())
        for i in range(0, len(items), 500):
            db.update({k: make_value(k, ver, size) for k, (ver, size) in items[i:i + 500]})
    return model


# The batch of batch-writer: overwrite 400 keys, delete 200, create 300.
BATCH_VER = 1 << 40


def batch_ops() -> Dict[bytes, Optional[Tuple[int, int]]]:
    ops: Dict[bytes, Optional[Tuple[int, int]]] = {}
    for i in range(400):
        ops[b"k%06d" % i] = (BATCH_VER + i, 50 + i % 200)
    for i in range(400, 600):
        ops[b"k%06d" % i] = None
    for j in range(300):
        ops[b"n%06d" % j] = (BATCH_VER + j, 30 + j % 100)
    return ops


def apply_batch(model: Model) -> Model:
    out = dict(model)
    for k, v in batch_ops().items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _batch_writer(path: str) -> None:
    import dbm_shm
    db = dbm_shm.open(path, "w")
    print("R", flush=True)
    with db.batch():
        for k, v in batch_ops().items():
            if v is None:
                del db[k]
            else:
                db[k] = make_value(k, v[0], v[1])
    print("A", flush=True)
    db.close()


def _txn_writer(path: str) -> None:
    """The batch of batch-writer through a transaction: every key read
    under the held lock first (the reads of a read-modify-write), then
    written, published at the block's end (issue 21)."""
    import dbm_shm
    db = dbm_shm.open(path, "w")
    print("R", flush=True)
    with db.transaction() as tx:
        for k, v in batch_ops().items():
            old = tx.get(k)
            if old is not None:
                check_value(k, old)
            if v is None:
                tx.pop(k, None)
            else:
                tx[k] = make_value(k, v[0], v[1])
    print("A", flush=True)
    db.close()


def run_script(args: Sequence[str], crash_at: Optional[str] = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], env=child_env(crash_at),
                          capture_output=True, text=True, timeout=timeout)


def batch_writer(path: str, crash_at: str) -> subprocess.CompletedProcess:
    return run_script(["batch-writer", path], crash_at)


def txn_writer(path: str, crash_at: str) -> subprocess.CompletedProcess:
    return run_script(["txn-writer", path], crash_at)


def killed(r: subprocess.CompletedProcess) -> bool:
    return r.returncode == -signal.SIGKILL


# ---------------------------------------------------------------------------
# The repairer

def _repairer(path: str, mode: str, keysfile: Optional[str]) -> None:
    import dbm_shm
    db = dbm_shm.open(path, "w")
    if mode == "lock":
        db[PROBE] = b"p"
    elif mode == "read":
        for k in Path(keysfile).read_text().split():
            db.get(k.encode())
    print("DONE", flush=True)
    db.close()


def repairer(path: str, mode: str, crash_at: Optional[str], keysfile: Optional[str] = None,
             ) -> subprocess.CompletedProcess:
    args = ["repairer", path, mode] + ([keysfile] if keysfile else [])
    return run_script(args, crash_at)


# ---------------------------------------------------------------------------
# The final repair and the verdict

def _match(got: Model, c: Model, lose_one: bool) -> bool:
    if got == c:
        return True
    if not lose_one or len(got) != len(c) - 1:
        return False
    gone = set(c) - set(got)
    return len(gone) == 1 and all(c.get(k) == v for k, v in got.items())


def verify_store(db: Any, candidates: List[Model], skip: Sequence[bytes] = (PROBE,),
                 lose_one: bool = False, counts: Optional[Dict[str, int]] = None) -> int:
    """The store equals one of the candidate models: its index. Every key
    read by iteration and by get, no duplicates in keys(), len() right,
    every value one a writer wrote. ``lose_one``: a candidate less any one
    of its keys matches too (a popitem() in flight, its key unknown).
    ``counts["reads"]`` (if given) grows by the gets done."""
    skip = set(skip)
    keys = [k for k in db.keys() if k not in skip]
    if len(keys) != len(set(keys)):
        dups = sorted(k for k in set(keys) if keys.count(k) > 1)[:10]
        raise AssertionError(f"keys() lists {len(keys) - len(set(keys))} keys twice: {dups}")
    state: Dict[bytes, bytes] = {}
    missing = []
    counts = counts if counts is not None else {}
    counts.setdefault("reads", 0)
    for k in keys:
        v = db.get(k)
        counts["reads"] += 1
        if v is None:
            missing.append(k)
        else:
            state[k] = v
    if missing:
        raise AssertionError(f"{len(missing)} keys listed by keys() are not found by get: {missing[:10]}")
    problems = bad_values(state)
    if problems:
        raise AssertionError("invalid values:\n" + "\n".join(problems[:20]))
    got = {k: (value_version(v), len(v) - MIN_VALUE) for k, v in state.items()}
    for i, c in enumerate(candidates):
        if _match(got, c, lose_one):
            n = len(db) - len([k for k in skip if k in db])
            if n != len(got):
                raise AssertionError(f"len() says {n} keys, the store holds {len(got)}")
            for k in got:        # point reads of keys the model holds
                counts["reads"] += 1
                if db.get(k) is None:
                    raise AssertionError(f"{k!r} not found by get")
            return i
    best = min(candidates, key=lambda c: len(set(c.items()) ^ set(got.items())))
    lost = sorted(k for k in best if k not in got)
    invented = sorted(k for k in got if k not in best)
    changed = sorted(k for k in got if k in best and got[k] != best[k])
    raise AssertionError(
        f"store differs from every acknowledged state: {len(lost)} lost {lost[:8]}, "
        f"{len(invented)} invented {invented[:8]}, {len(changed)} changed {changed[:8]}")


def _final(path: str, infile: str) -> None:
    import dbm_shm
    data = json.loads(Path(infile).read_text())
    cands = [{k.encode(): tuple(v) for k, v in c.items()} for c in data["candidates"]]
    db = dbm_shm.open(path, "w")
    rec0 = db.stats()["recoveries"]
    db[PROBE] = b"p"
    problems = db.check()
    res: Dict[str, Any] = {"recoveries": db.stats()["recoveries"], "rec_at_open": rec0,
                           "check": problems, "reads": 0}
    try:
        res["chosen"] = verify_store(db, cands, lose_one=data.get("lose_one", False), counts=res)
    except AssertionError as e:
        res["error"] = str(e)
    db.close()
    print(json.dumps(res))


def final_repair(path: str, candidates: List[Model], workdir: Path,
                 lose_one: bool = False) -> Dict[str, Any]:
    infile = workdir / "final.json"
    infile.write_text(json.dumps({"candidates": [{k.decode(): list(v) for k, v in c.items()}
                                                 for c in candidates], "lose_one": lose_one}))
    r = run_script(["final", path, str(infile)])
    if r.returncode != 0:
        how = (f"killed by {signal.Signals(-r.returncode).name}" if r.returncode < 0
               else f"exit code {r.returncode}")
        raise AssertionError(f"the final repair failed: {how}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_final(res: Dict[str, Any]) -> None:
    assert res["check"] == [], f"check() after the final repair: {res['check']}"
    assert "error" not in res, res.get("error")


# ---------------------------------------------------------------------------
# The soak: a store of untouched keys, a churn writer, a reader

def untouched_key(i: int) -> bytes:
    return b"u%06d" % i


def untouched_size(i: int) -> int:
    return (i * 7) % 40


def untouched_model(n: int) -> Model:
    return {untouched_key(i): (1, untouched_size(i)) for i in range(n)}


def populate_untouched(path: str, n: int) -> Model:
    import dbm_shm
    model = untouched_model(n)
    items = list(model.items())
    with dbm_shm.open(path, "n") as db:
        for i in range(0, len(items), 2000):
            db.update({k: make_value(k, v, sz) for k, (v, sz) in items[i:i + 2000]})
    return model


def _soak_writer(path: str, seed: int, run: int) -> None:
    """Churn on keys c*/g* (never u*), logging intent ("I op S key ver
    size", "I op D key", "I op O") and acknowledgement ("A op") to stdout
    in the format of _support.helpers.Log."""
    import dbm_shm
    rng = random.Random(seed)
    db = dbm_shm.open(path, "w")
    existing = [k for k in db.keys() if not k.startswith(b"u")]
    out = 1
    os.write(out, b"R\n")
    grow = 0
    for op in range(1 << 30):
        ver = (run << 32) + op + 1
        r = rng.random()
        if r < 0.002:
            os.write(out, f"I {op} O\n".encode())
            db.reorganize()
        elif r < 0.3 and existing:
            k = existing.pop(rng.randrange(len(existing)))
            os.write(out, f"I {op} D {k.decode()}\n".encode())
            del db[k]
        else:
            if r < 0.5:
                k = b"g%d-%06d" % (run, grow)
                grow += 1
            else:
                k = b"c%05d" % rng.randrange(3000)
            size = rng.randrange(200) if rng.random() < 0.98 else rng.randrange(4000, 30000)
            os.write(out, f"I {op} S {k.decode()} {ver} {size}\n".encode())
            was = k in db
            db[k] = make_value(k, ver, size)
            if not was:
                existing.append(k)
        os.write(out, f"A {op}\n".encode())


def _soak_reader(path: str, n: int, stopfile: str, outfile: str) -> None:
    """Read untouched keys until stopfile appears: each must read back
    exactly (never missing, never another value). An 'r' handle: while a
    repair is owed its reads answer dbm_shm.error (the store needs
    recovery) rather than guess; such errors are counted (per call of 64
    keys), not failures."""
    import dbm_shm
    rng = random.Random(os.getpid())
    reads = errors = 0
    bad: List[str] = []
    expect = {}
    db = dbm_shm.open(path, "r")
    while not os.path.exists(stopfile) and len(bad) < 20:
        idx = [rng.randrange(n) for _ in range(64)]
        keys = [untouched_key(i) for i in idx]
        try:
            if rng.random() < 0.5:
                vals = [db.get(k) for k in keys]
            else:
                vals = db.get_many(keys)
        except dbm_shm.error:
            errors += 1
            continue
        for i, k, v in zip(idx, keys, vals):
            reads += 1
            if i not in expect:
                expect[i] = make_value(k, 1, untouched_size(i))
            if v != expect[i]:
                bad.append(f"{k!r}: {'missing' if v is None else 'wrong value'}")
    db.close()
    Path(outfile).write_text(json.dumps({"reads": reads, "errors": errors, "bad": bad}))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "repairer":
        _repairer(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "final":
        _final(sys.argv[2], sys.argv[3])
    elif cmd == "soak-writer":
        _soak_writer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "soak-reader":
        _soak_reader(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif cmd == "n-open":
        import dbm_shm
        dbm_shm.open(sys.argv[2], "n").close()
        print("DONE", flush=True)
    elif cmd == "batch-writer":
        _batch_writer(sys.argv[2])
    elif cmd == "txn-writer":
        _txn_writer(sys.argv[2])
    else:
        sys.exit(__doc__)


# ---------------------------------------------------------------------------
# Finding slots in a file

SLOTS = 252               # slots of a bucket page
REC_HDR = 40              # record header: u32 klen, u32 tag, u64 vlen, u64 gen, u64 deadline, u64 stamp


def _key_at(f: Any, rec: int) -> bytes:
    f.seek(rec)
    klen = struct.unpack("<I", f.read(4))[0]
    f.seek(rec + REC_HDR)
    return f.read(klen)


def displaced(path: str) -> Tuple[int, int, bytes, bytes]:
    """(offset of slot s, s, the key in slot s, the key in slot s+1) for an
    occupied slot s of a bucket page whose successor s+1 holds an entry
    whose home is not s+1 (it probed past s)."""
    dirw = read_u64(path, HD_DIR)
    doff, depth = dirw & ~63, dirw & 63
    seen = set()
    with open(path, "rb") as f:
        for i in range(1 << depth):
            f.seek(doff + 8 * i)
            b = struct.unpack("<Q", f.read(8))[0]
            if b in seen:
                continue
            seen.add(b)
            f.seek(b + 64)
            slots = [struct.unpack("<QQ", f.read(16)) for _ in range(SLOTS)]
            for s in range(SLOTS - 1):
                h1, r1 = slots[s + 1]
                if slots[s][1] and r1 and h1 % SLOTS != s + 1:
                    return b + 64 + 16 * s, s, _key_at(f, slots[s][1]), _key_at(f, r1)
    raise AssertionError("no displaced slot found")
