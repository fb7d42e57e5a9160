"""How tests/cli/data/format1.dshm was made (kept for the record; the tests
do not run it: the file must stay a file of format 1, which only a build of
that format writes).

Run from the repository root with a build of file format 1:

    PYTHONPATH=$PWD python tests/cli/data/make_format1.py

It writes format1.dshm and format1_collide.txt beside itself. The store
holds the records of ``format1_expected.expected()``: an empty key, an
empty value, binary keys, a 100 KiB value, and keys chosen so that their
hashes share their top bits, which the file's extendible hash cannot split
apart: it has split buckets and an overflow chain. It is reorganized at
the end (a compact file; the seed stays). The hash is keyed by a
random seed per file, so those keys are picked by hashing candidates in a
copy of the empty store (same seed) and reading the hashes from its slots.
"""

import os
import shutil
import struct
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dbm_shm  # noqa: E402
from dbm_shm import _upgrade as u  # noqa: E402

import format1_expected  # noqa: E402


def slot_hashes(path):
    """key -> 64-bit hash, from the slots of a format-1 file."""
    with open(path, "rb") as f:
        data = f.read()
    d = struct.unpack_from("<Q", data, u._HDR_DIR)[0]
    off, depth = d & ~63, d & 63
    pages = set()
    for (b,) in struct.iter_unpack("<Q", data[off:off + (8 << depth)]):
        while b and b not in pages:
            pages.add(b)
            b = struct.unpack_from("<Q", data, b + u._BK_NEXT)[0]
    out = {}
    for p in pages:
        for s in range(u._SLOTS):
            h, rec = struct.unpack_from("<QQ", data, p + u._BUCKET_HDR + 16 * s)
            if rec:
                klen = struct.unpack_from("<I", data, rec)[0]
                out[data[rec + 16:rec + 16 + klen]] = h
    return out


def main():
    target = os.path.join(HERE, "format1.dshm")
    scratch = target + ".scratch"
    dbm_shm.open(target, "n", 0o644).close()
    shutil.copyfile(target, scratch)          # the same seed
    with dbm_shm.open(scratch, "w") as db:
        for i in range(60000):
            db[b"c%06d" % i] = b""
    by_top = defaultdict(list)
    for k, h in slot_hashes(scratch).items():
        by_top[h >> 56].append(k)
    os.unlink(scratch)
    top = max(by_top, key=lambda t: len(by_top[t]))
    collide = sorted(by_top[top])[:format1_expected.N_COLLIDE]
    with open(os.path.join(HERE, "format1_collide.txt"), "w") as f:
        f.write("".join(k.decode() + "\n" for k in collide))
    want = format1_expected.expected()
    with dbm_shm.open(target, "w") as db:
        with db.batch():
            for k, v in want.items():
                db[k] = v
        db[b"deleted"] = b"gone"              # leaves a free block behind
        del db[b"deleted"]
        db.reorganize()                       # compact: a smaller file to commit
    with dbm_shm.open(target, "r") as db:
        assert dict(db.items()) == want
    with open(target, "rb") as f:
        hdr = f.read(4096)
    buckets, overflow = struct.unpack_from("<QQ", hdr, 264)
    print(f"{len(want)} records, {buckets} buckets, {overflow} overflow pages, "
          f"{os.path.getsize(target)} bytes")
    assert buckets > 1 and overflow > 0


if __name__ == "__main__":
    main()
