"""Writer and reader of test_race.py: ``_race_worker.py write|read PATH SECONDS``.

Values describe themselves: ``crc32(body) || body`` where ``body`` is
``key || seq || filler`` of a length that depends on ``seq`` (from a few
bytes to past the fast path's 4 KiB buffer), so a torn value (parts of two
writes) fails the check. A reader prints its counts as JSON.
"""

import json
import struct
import sys
import time
import zlib

import dbm_shm

KEYS = [b"key%02d" % i for i in range(16)]
SIZES = (0, 7, 100, 1000, 4080, 5000)


def make(key, seq):
    filler = bytes([(seq + len(key)) % 251]) * SIZES[seq % len(SIZES)]
    body = key + struct.pack("=Q", seq) + filler
    return struct.pack("=I", zlib.crc32(body)) + body


def check(key, value):
    """The sequence number of a well-formed value of key; raises if torn."""
    crc, body = struct.unpack_from("=I", value)[0], value[4:]
    if zlib.crc32(body) != crc or not body.startswith(key):
        raise AssertionError(f"torn value for {key!r}: {len(value)} bytes")
    seq = struct.unpack_from("=Q", body, len(key))[0]
    if value != make(key, seq):
        raise AssertionError(f"wrong value for {key!r} seq {seq}")
    return seq


def write(path, seconds):
    db = dbm_shm.open(path, "w")
    seq = 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for k in KEYS:
            db[k] = make(k, seq)
        if seq % 7 == 0:
            del db[KEYS[seq % len(KEYS)]]
        seq += 1
    db.close()


def read(db, seconds):
    """Read KEYS through every fast operation for ``seconds``; counts."""
    n = missing = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for k in KEYS:
            v = db.get(k)
            if v is None:
                missing += 1
            else:
                check(k, v)
            try:
                check(k, db[k])
            except KeyError:
                missing += 1
            k in db
            n += 2
    return {"reads": n, "missing": missing}


if __name__ == "__main__":
    mode, path, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if mode == "write":
        write(path, secs)
    else:
        d = dbm_shm.open(path, "r")
        counts = read(d, secs)
        counts.update(d.stats())
        d.close()
        print(json.dumps(counts))
