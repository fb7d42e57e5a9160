"""Worker of test_equivalence.py: runs operation sequences on dbm_shm and
prints what each operation returned or raised, one JSON line per sequence.

Reads one JSON list of operations per line on stdin; runs each sequence on
a fresh store named ``db`` in the current directory (so error messages,
which carry the path, are the same in every worker). Whether the fast path
serves the calls is decided by the environment (``DSHM_NO_FASTPATH``).
"""

import hashlib
import json
import re
import sys

import dbm_shm
from dbm_shm import _fastglue


def decode(spec):
    """A key or value from its JSON form."""
    tag = spec[0]
    if tag == "b":
        return bytes.fromhex(spec[1])
    if tag == "s":
        return spec[1]
    if tag == "ba":
        return bytearray.fromhex(spec[1])
    if tag == "mv":
        return memoryview(bytes.fromhex(spec[1]))
    if tag == "big":   # a value over the fast path's stack buffer
        return bytes([spec[1] % 256]) * spec[2]
    if tag == "i":
        return spec[1]
    if tag == "n":
        return None
    if tag == "t":
        return (1, 2)
    raise ValueError(spec)


def encode(result):
    """A result as JSON: bytes by content (a digest for big ones), the rest by repr."""
    if isinstance(result, list):
        return ["list", [encode(x) for x in result]]
    if isinstance(result, bytes):
        return ["bytes", result.hex() if len(result) <= 64 else f"{len(result)}:{hashlib.sha1(result).hexdigest()}"]
    return ["repr", repr(result)]


TOTALS = {"fast_gets": 0, "fast_sets": 0, "fast_fallbacks": 0}


def tally(db):
    """Add the fast-path counters of a handle about to be dropped."""
    for k, v in _fastglue.counters(db).items():
        TOTALS[k] += v


def run(ops):
    out = []
    db = dbm_shm.open("db", "n")
    batches = []
    for op in ops:
        name = op[0]
        try:
            if name == "set":
                db[decode(op[1])] = decode(op[2])
                r = None
            elif name == "getitem":
                r = db[decode(op[1])]
            elif name == "get":
                r = db.get(decode(op[1]))
            elif name == "get_default":
                r = db.get(decode(op[1]), decode(op[2]))
            elif name == "get_kw":
                r = db.get(decode(op[1]), default=decode(op[2]))
            elif name == "get_bad_args":
                r = db.get(*[decode(a) for a in op[1]])
            elif name == "get_many":
                r = db.get_many([decode(a) for a in op[1]])
            elif name == "get_many_default":
                r = db.get_many(iter([decode(a) for a in op[1]]), decode(op[2]))
            elif name == "contains":
                r = decode(op[1]) in db
            elif name == "del":
                del db[decode(op[1])]
                r = None
            elif name == "batch_begin":
                ctx = db.batch()
                ctx.__enter__()
                batches.append(ctx)
                r = None
            elif name == "batch_end":
                r = None
                if batches:
                    ctx = batches.pop()
                    if op[1]:
                        ctx.__exit__(ValueError, ValueError("abort"), None)
                    else:
                        ctx.__exit__(None, None, None)
            elif name == "close":
                db.close()
                r = None
            elif name == "reopen":
                batches.clear()
                db.close()
                tally(db)
                db = dbm_shm.open("db", op[1])
                r = None
            else:
                raise AssertionError(name)
            out.append(["ok", encode(r)])
        except Exception as e:   # compared, type and message
            # (addresses, as in a memoryview's repr, differ between processes)
            out.append(["exc", type(e).__module__ + "." + type(e).__qualname__,
                        re.sub(r"0x[0-9a-f]+", "0x...", str(e))])
    tally(db)
    try:
        db.close()
        db = dbm_shm.open("db", "r")
        out.append(["state", sorted((k.hex(), encode(v)) for k, v in db.items())])
        db.close()
    except Exception as e:
        out.append(["exc", type(e).__qualname__, str(e)])
    return out


def main():
    print(json.dumps({"enabled": _fastglue.ENABLED}), flush=True)
    for line in sys.stdin:
        ops = json.loads(line)
        if ops is None:
            break
        print(json.dumps(run(ops)), flush=True)
    print(json.dumps(TOTALS), flush=True)


if __name__ == "__main__":
    main()
