"""Worker process for the damaged-file fuzzer (run by _fuzzlib, never imported
by pytest).

    python _fuzz_worker.py build NAME PATH   build base file NAME at PATH, print
                                             {key hex: sha1 of value} as JSON
    python _fuzz_worker.py run PLAN.json     exercise every case of the plan
    python _fuzz_worker.py one FILE [KEYS.json]  exercise one file (KEYS: as
                                             printed by build), print the
                                             result (for reproducing by hand)

For each case it prints JSON lines: {"begin": id}, {"op": name} before each
operation, and {"end": id, "status": ..., "ops": {...}}. Status "ok" means
every operation either worked or raised dbm_shm.error / KeyError, the
read-only phase left the file's bytes unchanged, and no temporary file was
left behind. A crash of the C core kills this process: the parent sees the
signal and the last {"op"} line says where.

Status "data_loss": keys the read-only phase read (and the write phase did
not write) no longer read the same after the write phase. Then the damaged
file is salvaged (dbm_shm.salvage, into a copy deleted afterwards) and the
end line carries "salvage": {"lost": n, "back": m, "missing": [hex keys
salvage did not bring back with their value], "report": SalvageReport or
"error": what salvage raised}; the parent judges it (_fuzzlib.Outcome).
"""

import hashlib
import json
import os
import random
import sys

import dbm_shm

MAX_GETS = 2000          # gets of listed keys per phase
MAX_GET_ERRORS = 200     # a phase's gets stop after this many errors (an
                         # odd counter costs 64 lock-free tries first)
MAX_WALK = 20000         # firstkey/nextkey steps
# operations to leave out (FUZZ_SKIP=w.reorganize,w.clear): to explore past a known crash
SKIP = set(filter(None, os.environ.get("FUZZ_SKIP", "").split(",")))


def _emit(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _digest(v):
    return hashlib.sha1(v).hexdigest()


def _summary(r):
    if r is None or isinstance(r, dbm_shm.Database):
        return "ok"
    if isinstance(r, (list, bytes)):
        return f"ok:len={len(r)}"
    return f"ok:{r}"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"unreadable: {e}".encode()


def _changed_ranges(a, b, limit=6):
    """Byte ranges where a and b differ (and a length change)."""
    out, i, n = [], 0, min(len(a), len(b))
    while i < n and len(out) < limit:
        if a[i] != b[i]:
            j = i
            while j < n and a[j] != b[j]:
                j += 1
            out.append(f"[{i},{j})")
            i = j
        else:
            i += 1
    if len(a) != len(b):
        out.append(f"size {len(a)} -> {len(b)}")
    return out


class Runner:
    def __init__(self, path, original):
        self.path = path
        self.original = original     # key -> sha1 of its value in the base file
        self.known = list(original)
        self.ops = {}
        self.unexpected = []
        self.last_op = ""
        self.readable = {}      # known key -> value, as the read-only phase saw them
        self.touched = set()    # keys the write phase changed or deleted
        self.cleared = False

    def op(self, name, fn, *args):
        if name in SKIP:
            self.ops[name] = "skipped"
            return None
        self.last_op = name
        _emit({"op": name})
        try:
            r = fn(*args)
            self.ops[name] = _summary(r)
            return r
        except dbm_shm.error as e:
            code = getattr(e, "code", None)
            self.ops[name] = f"error:{code}:{e.errno}"
        except KeyError:
            self.ops[name] = "KeyError"
        except Exception as e:  # noqa: BLE001 - anything else is a finding
            self.ops[name] = f"UNEXPECTED:{type(e).__name__}"
            self.unexpected.append(f"{name}: {type(e).__name__}: {e}")
        return None

    # -- operations -----------------------------------------------------------

    def gets(self, d, keys, into=None):
        n = bad = 0
        for k in keys[:MAX_GETS]:
            try:
                v = d[k]
                n += 1
                if into is not None and self.original.get(k) == _digest(v):
                    into[k] = v
            except KeyError:
                pass
            except dbm_shm.error:
                bad += 1
                if bad >= MAX_GET_ERRORS:
                    break
        return f"{n}/{bad}"

    def walk(self, d):
        k, n = d.firstkey(), 0
        while k is not None and n < MAX_WALK:
            n += 1
            k = d.nextkey(k)
        return n

    def iterate(self, d):
        n = 0
        for _ in d.iteritems():
            n += 1
        return n

    def writes(self, d, rng, listed):
        for i in range(5):
            d[b"fuzz-new-%d" % i] = b"n" * rng.choice((0, 1, 100, 3000, 70000))
        for k in listed[:3]:
            self.touched.add(k)
            d[k] = b"over" * rng.choice((1, 50, 1000))
        return "done"

    def bulk(self, d, n):
        """Enough inserts to split buckets (and double the directory)."""
        for i in range(n):
            d[b"fuzz-bulk-%d" % i] = b"b" * (i % 50)
        return n

    def mass_delete(self, d, keys):
        n = 0
        for k in keys:
            self.touched.add(k)
            try:
                del d[k]
                n += 1
            except KeyError:
                pass
        return n

    def deletes(self, d, listed):
        n = 0
        for k in listed[3:6]:
            self.touched.add(k)
            try:
                del d[k]
                n += 1
            except KeyError:
                pass
        return n

    def del_missing(self, d):
        try:
            del d[b"fuzz-no-such-key"]
        except KeyError:
            return "KeyError"
        return "deleted?!"

    # -- phases -----------------------------------------------------------------

    def phase_r(self):
        before = _read(self.path)
        self.op("whichdb", dbm_shm.whichdb, self.path)
        d = self.op("open_r", dbm_shm.open, self.path, "r")
        if d is not None:
            try:
                self.op("r.len", len, d)
                listed = self.op("r.keys", d.keys) or []
                self.op("r.get_listed", self.gets, d, listed)
                self.op("r.get_known", self.gets, d, self.known, self.readable)
                self.op("r.contains", d.__contains__, b"fuzz-no-such-key")
                self.op("r.iteritems", self.iterate, d)
                self.op("r.walk", self.walk, d)
                self.op("r.stats", lambda: d.stats()["count"])
                self.op("r.check", lambda: len(d.check()))
                self.op("r.set", d.__setitem__, b"k", b"v")    # must be refused
            finally:
                self.op("r.close", d.close)
        after = _read(self.path)
        return _changed_ranges(before, after) if before != after else []

    def phase_w(self, rng):
        d = self.op("open_w", dbm_shm.open, self.path, "w")
        if d is None:
            return
        try:
            self.op("w.len", len, d)
            listed = self.op("w.keys", d.keys) or []
            if not listed:
                listed = list(self.known)
            rng.shuffle(listed)
            self.op("w.get_listed", self.gets, d, listed)
            self.op("w.writes", self.writes, d, rng, listed)
            self.op("w.deletes", self.deletes, d, listed)
            self.op("w.del_missing", self.del_missing, d)
            self.op("w.setdefault", d.setdefault, b"fuzz-sd", b"x")
            if rng.random() < 0.35:
                self.op("w.bulk", self.bulk, d, rng.choice((300, 800)))
            if rng.random() < 0.25:
                self.op("w.mass_delete", self.mass_delete, d, listed[: len(listed) // 2])
            self.op("w.get_known", self.gets, d, self.known)
            self.op("w.check", lambda: len(d.check()))
            if rng.random() < 0.15:
                self.cleared = True
                self.op("w.clear", d.clear)
            self.op("w.reorganize", d.reorganize)
            self.op("w.len2", len, d)
            listed2 = self.op("w.keys2", d.keys) or []
            self.op("w.get2", self.gets, d, listed2)
            self.op("w.iteritems2", self.iterate, d)
            self.op("w.check2", lambda: len(d.check()))
            self.op("w.sync", d.sync)
        finally:
            self.op("w.close", d.close)
        d = self.op("reopen_r", dbm_shm.open, self.path, "r")
        if d is not None:
            self.op("reopen.keys", lambda: len(d.keys()))
            if not self.cleared:
                self.op("reopen.kept", self.kept, d)
            d.close()

    def salvage_lost(self):
        """Salvage the file as the write phase left it and look in the copy
        for every key kept() found lost: is it there with the value the
        read-only phase read?"""
        dst = self.path + ".salvaged"
        out = {"lost": len(self.lost_keys), "back": 0, "missing": []}
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        try:
            rep = self.op("salvage", dbm_shm.salvage, self.path, dst)
            if rep is None:
                out["error"] = self.ops["salvage"]
                out["missing"] = [k.hex() for k in self.lost_keys]
                return out
            out["report"] = rep._asdict()
            with dbm_shm.open(dst, "r") as s:
                for k in self.lost_keys:
                    if s.get(k) == self.readable[k]:
                        out["back"] += 1
                    else:
                        out["missing"].append(k.hex())
        finally:
            try:
                os.unlink(dst)
            except FileNotFoundError:
                pass
        return out

    def kept(self, d):
        """Keys the read-only phase could read, and the write phase did not
        touch, must still read the same after it."""
        lost = []
        for k, v in self.readable.items():
            if k in self.touched:
                continue
            try:
                if d[k] != v:
                    lost.append(k)
            except (KeyError, dbm_shm.error):
                lost.append(k)
        self.lost = len(lost)
        self.lost_keys = lost
        return f"{len(self.readable) - len(lost)}/{len(self.readable)}"


def leftovers(path):
    folder, base = os.path.split(path)
    return sorted(n for n in os.listdir(folder or ".") if n.startswith(base + ".dshm-"))


def run_case(case, original):
    path = case["path"]
    r = Runner(path, original)
    rng = random.Random(case.get("seed") or 0)
    status, detail = "ok", []
    if "r" in case.get("ops", "rw"):
        changed = r.phase_r()
        if changed:
            status = "r_changed"
            detail.append(f"the read-only phase changed the file's bytes: {' '.join(changed)}")
    if "w" in case.get("ops", "rw"):
        r.phase_w(rng)
        left = leftovers(path)
        if left:
            status = "leftover" if status == "ok" else status
            detail.append(f"temporary files left: {left}")
    lost = getattr(r, "lost", 0)
    salvaged = None
    if lost:
        status = "data_loss" if status == "ok" else status
        detail.append(f"{lost} of {len(r.readable)} keys readable before the write phase "
                      f"(and not written by it) were lost or changed")
        salvaged = r.salvage_lost()
        detail.append(f"salvage brought back {salvaged['back']} of them"
                      + (f" ({salvaged['error']})" if "error" in salvaged else "")
                      + (f"; not: {salvaged['missing'][:5]}" if salvaged["missing"] else ""))
    if r.unexpected:
        status = "unexpected"
        detail = r.unexpected + detail
    res = {"status": status, "detail": "; ".join(detail), "ops": r.ops, "last_op": r.last_op}
    if salvaged is not None:
        res["salvage"] = salvaged
    return res


# -- base files ---------------------------------------------------------------------

def build(name, path):
    rng = random.Random(name)
    model = {}
    with dbm_shm.open(path, "n") as d:
        def put(k, v):
            d[k] = v
            model[k] = v

        def delete(k):
            del d[k]
            del model[k]

        if name == "empty":
            pass
        elif name == "small":
            for i in range(40):
                put(b"k%d" % i, b"v%d" % i * rng.randrange(1, 20))
            for i in range(0, 40, 8):
                delete(b"k%d" % i)
        elif name == "medium":
            for i in range(3000):
                put(b"key-%05d" % i, bytes([65 + i % 26]) * rng.randrange(0, 200))
            for i in range(0, 3000, 7):
                delete(b"key-%05d" % i)
        elif name == "large_values":
            for i in range(40):
                put(b"big%d" % i, rng.randbytes(rng.randrange(3000, 200000)))
            for i in range(0, 40, 4):
                delete(b"big%d" % i)
            for i in range(1, 40, 5):
                put(b"big%d" % i, rng.randbytes(rng.randrange(100, 5000)))
        elif name == "overflow":
            for i in range(600):
                put(b"c%d" % i, b"x" * rng.randrange(0, 50))
            for i in range(0, 600, 9):
                delete(b"c%d" % i)
        elif name == "reorganized":
            for i in range(1500):
                put(b"r%d" % i, b"y" * rng.randrange(0, 400))
            for i in range(0, 1500, 2):
                delete(b"r%d" % i)
            d.reorganize()
        else:
            raise SystemExit(f"unknown base {name}")
        assert d.check() == [], d.check()
        assert dict(d.items()) == model
    print(json.dumps({k.hex(): _digest(v) for k, v in sorted(model.items())}))


def main(argv):
    if argv[1] == "build":
        build(argv[2], argv[3])
    elif argv[1] == "run":
        with open(argv[2]) as f:
            plan = json.load(f)
        original = {bytes.fromhex(k): v for k, v in plan["keys"].items()}
        for case in plan["cases"]:
            _emit({"begin": case["id"]})
            res = run_case(case, original)
            res["end"] = case["id"]
            _emit(res)
    elif argv[1] == "one":
        original = {}
        if len(argv) > 3:
            with open(argv[3]) as f:
                original = {bytes.fromhex(k): v for k, v in json.load(f).items()}
        res = run_case({"path": argv[2], "seed": 0, "ops": os.environ.get("FUZZ_OPS", "rw")}, original)
        print(json.dumps(res, indent=1))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
