"""Three process-crash leftovers, each shown with real processes and files.

1. A reader that never follows the path: an ``'n'`` open or a
   ``reorganize()`` killed between its ``rename()`` and marking the old
   file moved left every handle that only reads on the old file for ever.
   A handle now looks at its path at a bounded interval (and at every
   ``wait()`` wake-up and timeout) and follows it.
2. A put on a damaged file destroyed a healthy key: it found its slot, its
   first allocation rebuilt the free space (which drops wild slots and
   moves the entries behind them), and it then wrote the slot it had found
   before. The allocation now runs before the lookup.
3. A hang after truncation below one page: a writer waiting for the lock
   whose holder died with the file cut under the lock word slept for ever,
   deaf to Ctrl-C. Lock waits are now sliced: each slice looks at the file
   and at interrupts.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import dbm_shm

from _support import repair as R
from _support.helpers import make_value
from ._hardlib import clean_env

HD_SMALL_MAP = 304        # hd_small_map[2]
HD_SMALL = 320            # hd_small[DSHM_NSMALL]
NSMALL = 128
SLOTS = 252               # slots of a bucket page
REC_HDR = 16              # record header: u32 klen, u32 tag, u64 vlen


def _slots(f, page):
    f.seek(page + 64)
    return [struct.unpack("<QQ", f.read(16)) for _ in range(SLOTS)]


def _key_of(f, rec):
    f.seek(rec)
    klen = struct.unpack("<I", f.read(4))[0]
    f.seek(rec + REC_HDR)
    return f.read(klen)


def _displaced_pair(path):
    """(slot offset of s, key in slot s, key in slot s+1) for an occupied
    slot s whose successor holds an entry that probed past s."""
    dirw = R.read_u64(path, R.HD_DIR)
    doff, depth = dirw & ~63, dirw & 63
    seen = set()
    with open(path, "rb") as f:
        for i in range(1 << depth):
            f.seek(doff + 8 * i)
            b = struct.unpack("<Q", f.read(8))[0]
            if b in seen:
                continue
            seen.add(b)
            slots = _slots(f, b)
            for s in range(SLOTS - 1):
                h1, r1 = slots[s + 1]
                if slots[s][1] and r1 and h1 % SLOTS != s + 1:
                    return b + 64 + 16 * s, _key_of(f, slots[s][1]), _key_of(f, r1)
    raise AssertionError("no displaced slot found")


# ---------------------------------------------------------------------------
# 2. A put whose first allocation repairs the free space

def test_put_after_free_space_rebuild_keeps_its_neighbours(tmp_path):
    path = str(tmp_path / "s.dshm")
    model = R.populate(path, 2000)
    slot, wild_key, moved_key = _displaced_pair(path)
    R.write_u64(path, slot + 8, (1 << 47) - 16)   # slot s: a record far past the file
    # Every small free list claims a block at a misaligned offset: the
    # put's first allocation finds it damaged and rebuilds the free space,
    # which drops the wild slot and moves the entries behind it up.
    R.write_u64(path, HD_SMALL_MAP, (1 << 64) - 1)
    R.write_u64(path, HD_SMALL_MAP + 8, (1 << 64) - 1)
    for c in range(NSMALL):
        R.write_u64(path, HD_SMALL + 8 * c, 8)
    with dbm_shm.open(path, "w") as db:
        db[moved_key] = b"new value"
        assert db[moved_key] == b"new value"
    with dbm_shm.open(path, "r") as db:
        keys = db.keys()
        assert len(keys) == len(set(keys)), "a key is listed twice"
        assert db[moved_key] == b"new value"
        for k, (ver, size) in model.items():
            if k in (wild_key, moved_key):
                continue
            assert db[k] == make_value(k, ver, size), k
        assert wild_key not in db                  # its record is lost with the damage
        assert len(db) == len(model) - 1
        assert db.check() == []
