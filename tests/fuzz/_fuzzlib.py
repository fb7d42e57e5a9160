"""Seeded fuzzing of damaged dbm_shm files.

The pieces:

- the on-disk layout (offsets of csrc/dshm_layout.h on x86-64 glibc) and a
  parser that finds every structure of a *valid* file: header fields, the
  directory, primary and overflow bucket pages, pooled pages, records and
  free blocks;
- SipHash-1-3, so a mutation of the checksummed header fields can also fix
  the checksum (and so reach the code behind the header check);
- base files: valid stores of several shapes, built deterministically
  (fixed hash seed) in a subprocess;
- a seeded mutator: ``mutate(base, rng)`` returns damaged bytes and a
  description of what was done (truncation, bit flips and byte ranges in a
  chosen structure, a field set to an interesting value, zeroed pages...);
- a runner: cases are exercised by ``_fuzz_worker.py`` in a subprocess, a
  batch per process; a case that kills the process (a negative return
  code: SIGSEGV, SIGBUS, SIGABRT...) or runs past its time limit is
  recorded, and the worker is restarted after it.

Nothing is mocked: real files, the real C core, real processes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_fuzz_worker.py"
CORPUS = HERE / "corpus"

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
M64 = (1 << 64) - 1

# ---------------------------------------------------------------------------
# Layout (csrc/dshm_layout.h, x86-64 glibc; checked by test_layout_offsets)

PAGE = 4096
HEADER_SIZE = 4096
BUCKET_SIZE = 4096
BUCKET_HDR = 64
SLOTS = 252
MAGIC = b"\x93DSHM\r\n\x1a"

# header field -> (offset, size)
HDR = {
    "magic": (0, 8), "format": (8, 4), "header_size": (12, 4), "bucket_size": (16, 4),
    "abi": (20, 4), "seed0": (24, 8), "seed1": (32, 8), "created": (40, 8),
    "checksum": (48, 8), "pad0": (56, 16),
    "mutex": (128, 40), "lock_pid": (176, 8), "repair": (184, 8),
    "file_size": (192, 8), "dir": (200, 8), "struct_seq": (208, 8), "commit": (216, 8),
    "count": (224, 8), "moved": (232, 4), "waiters": (236, 4),
    "top": (240, 8), "live_bytes": (248, 8), "free_bytes": (256, 8), "buckets": (264, 8),
    "overflow": (272, 8), "bucket_free": (280, 8), "recoveries": (288, 8), "freed": (296, 8),
    "small_map": (304, 16), "small": (320, 1024), "large": (1344, 416),
    "intent_op": (1760, 8), "intent_old": (1768, 8), "intent_lo": (1776, 8),
    "intent_hi": (1784, 8), "intent_first": (1792, 8), "intent_n": (1800, 8),
}
HDR_END = 1808
CHECKSUMMED = 48            # the checksum covers bytes [0, 48)
# bucket page field -> (offset, size)
BK = {"seq": (0, 8), "next": (8, 8), "prefix": (16, 8), "depth": (24, 4),
      "count": (28, 4), "kind": (32, 4)}
BK_PRIMARY, BK_OVERFLOW, BK_FREE = 0x504B, 0x4F4B, 0x464B
REC_HDR = 40                # u32 klen, u32 check, u64 vlen, u64 gen, u64 deadline, u64 stamp


def rd(b: bytes, off: int, size: int = 8) -> int:
    return int.from_bytes(b[off:off + size], "little")


def wr(b: bytearray, off: int, size: int, value: int) -> None:
    b[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


# ---------------------------------------------------------------------------
# SipHash-1-3 (as csrc/dshm_index.c)

def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & M64


def siphash13(k0: int, k1: int, data: bytes) -> int:
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rnd():
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & M64; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)  # noqa: E702
        v2 = (v2 + v3) & M64; v3 = _rotl(v3, 16); v3 ^= v2                      # noqa: E702
        v0 = (v0 + v3) & M64; v3 = _rotl(v3, 21); v3 ^= v0                      # noqa: E702
        v2 = (v2 + v1) & M64; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)  # noqa: E702

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        rnd()
        v0 ^= m
    b = (n << 56) & M64
    b |= int.from_bytes(data[end:], "little")
    v3 ^= b
    rnd()
    v0 ^= b
    v2 ^= 0xFF
    rnd(); rnd(); rnd()  # noqa: E702
    return v0 ^ v1 ^ v2 ^ v3


CHECKSUM_KEY = (0x64626D5F73686D31, 0x6865616465723031)


def header_checksum(b: bytes) -> int:
    return siphash13(CHECKSUM_KEY[0], CHECKSUM_KEY[1], bytes(b[:CHECKSUMMED]))


def fix_checksum(b: bytearray) -> None:
    if len(b) >= HDR["checksum"][0] + 8:
        wr(b, HDR["checksum"][0], 8, header_checksum(b))


def key_hash(b: bytes, key: bytes) -> int:
    return siphash13(rd(b, HDR["seed0"][0]), rd(b, HDR["seed1"][0]), key)


# ---------------------------------------------------------------------------
# Parsing a valid file

@dataclasses.dataclass
class Layout:
    size: int
    file_size: int
    top: int
    dir_off: int
    depth: int
    primaries: List[int]
    overflows: List[int]
    pool: List[int]
    records: List[int]
    free_blocks: List[int]

    def regions(self) -> Dict[str, List[Tuple[int, int]]]:
        """Named byte ranges worth damaging: name -> [(offset, length)]."""
        r: Dict[str, List[Tuple[int, int]]] = {
            "header_identity": [(0, 72)],
            "header_mutex": [(128, 64)],
            "header_published": [(192, 48)],
            "header_alloc": [(240, 64)],
            "header_freelists": [(304, 1456)],
            "header_intent": [(1760, 48)],
            "directory": [(self.dir_off, max(16, 8 << self.depth))],
            "bucket_header": [(p, BUCKET_HDR) for p in self.primaries],
            "bucket_slots": [(p + BUCKET_HDR, BUCKET_SIZE - BUCKET_HDR) for p in self.primaries],
        }
        if self.overflows:
            r["overflow_page"] = [(p, BUCKET_SIZE) for p in self.overflows]
        if self.pool:
            r["pooled_page"] = [(p, BUCKET_SIZE) for p in self.pool]
        if self.records:
            r["record_header"] = [(o, REC_HDR) for o in self.records]
            r["record_body"] = [(o + REC_HDR, 32) for o in self.records]
        if self.free_blocks:
            r["free_block"] = [(o, 16) for o in self.free_blocks]
        if self.size > self.top:
            r["unallocated"] = [(self.top, self.size - self.top)]
        return r


def parse(b: bytes) -> Layout:
    """Every structure of a valid store's bytes."""
    assert b[:8] == MAGIC
    dirv = rd(b, HDR["dir"][0])
    dir_off, depth = dirv & ~63, dirv & 63
    entries = [rd(b, dir_off + 8 * i) for i in range(1 << depth)]
    primaries = sorted(set(entries))
    overflows, records = [], []
    for p in primaries:
        page, hops = p, 0
        while page and hops < 100000:
            if page != p:
                overflows.append(page)
            for s in range(SLOTS):
                r = rd(b, page + BUCKET_HDR + 16 * s + 8)
                if r:
                    records.append(r)
            page = rd(b, page + BK["next"][0])
            hops += 1
    pool, page = [], rd(b, HDR["bucket_free"][0])
    while page and len(pool) < 100000:
        pool.append(page)
        page = rd(b, page + BK["next"][0])
    free_blocks = []
    heads = [rd(b, HDR["small"][0] + 8 * c) for c in range(128)] + \
            [rd(b, HDR["large"][0] + 8 * c) for c in range(52)]
    for off in heads:
        n = 0
        while off and n < 1000:
            free_blocks.append(off)
            off = rd(b, off + 8)
            n += 1
    return Layout(len(b), rd(b, HDR["file_size"][0]), rd(b, HDR["top"][0]), dir_off, depth,
                  primaries, overflows, pool, sorted(records), free_blocks)


# ---------------------------------------------------------------------------
# Base files

# name -> (description, env for building AND using it)
BASES: Dict[str, Tuple[str, Dict[str, str]]] = {
    "empty": ("a new store, no keys", {}),
    "small": ("40 keys, small values, a few deleted", {}),
    "medium": ("3000 keys, 1 in 7 deleted, depth 4, pooled pages, small free lists", {}),
    "large_values": ("values of 3-200 KiB, some deleted and overwritten: large free bins", {}),
    "overflow": ("600 keys all colliding (DSHM_TEST_COLLIDE=64): overflow chains", {"DSHM_TEST_COLLIDE": "64"}),
    "reorganized": ("1500 keys, half deleted, then reorganize(): a trimmed file", {}),
}
TEST_SEED = "f022ed0123456789"


@dataclasses.dataclass
class Base:
    name: str
    path: Path
    data: bytes
    layout: Layout
    keys: Dict[str, str]   # key (hex) -> sha1 of its value, for every key the store holds
    env: Dict[str, str]


def build_bases(directory: Path, names: Optional[List[str]] = None) -> Dict[str, Base]:
    """Build the base files in ``directory`` (one subprocess per base: the
    C core reads its test hooks once per process)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or list(BASES):
        path = directory / f"base-{name}.dshm"
        env = dict(os.environ, DSHM_TEST_SEED=TEST_SEED, **BASES[name][1])
        env.pop("DSHM_CRASH_AT", None)
        if "DSHM_TEST_COLLIDE" not in BASES[name][1]:
            env.pop("DSHM_TEST_COLLIDE", None)
        r = subprocess.run([sys.executable, str(WORKER), "build", name, str(path)],
                           env=env, capture_output=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"building base {name} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
        keys = json.loads(r.stdout)
        data = path.read_bytes()
        out[name] = Base(name, path, data, parse(data), keys, BASES[name][1])
    return out


# ---------------------------------------------------------------------------
# The mutator

def _interesting(lay: Layout, rng: random.Random) -> int:
    choices = [
        0, 1, 15, 16, 63, 64, 4095, 4096, 4097, 8192,
        lay.file_size - 8, lay.file_size - 16, lay.file_size, lay.file_size + 4096,
        lay.size, lay.size + 1, lay.top, lay.top - 16, lay.top + 16,
        2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 40 + 1, 2 ** 62,
        2 ** 63, M64, M64 - 15, 1 << 34, (1 << 34) + 4096,
        rng.getrandbits(64), rng.getrandbits(20) * 16, rng.randrange(lay.size) & ~15,
    ]
    # offsets of other structures: makes cycles and aliases
    for pool in (lay.primaries, lay.overflows, lay.pool, lay.records, lay.free_blocks, [lay.dir_off]):
        if pool:
            choices.append(rng.choice(pool))
    return rng.choice(choices)


def _fields(lay: Layout) -> List[Tuple[str, int, int]]:
    """(name, offset, size) of every integer field worth setting."""
    f = [(f"header.{n}", o, min(s, 8)) for n, (o, s) in HDR.items()
         if n not in ("magic", "small", "large", "small_map", "mutex", "pad0")]
    f += [("header.small_map0", 304, 8), ("header.small_map1", 312, 8)]
    f += [(f"header.mutex+{i}", 128 + i, 4) for i in range(0, 40, 4)]
    for c in range(0, 128, 7):
        f.append((f"header.small[{c}]", 320 + 8 * c, 8))
    for c in range(0, 52, 3):
        f.append((f"header.large[{c}]", 1344 + 8 * c, 8))
    for i in range(min(1 << lay.depth, 64)):
        f.append((f"dir[{i}]", lay.dir_off + 8 * i, 8))
    for kind, pages in (("bucket", lay.primaries), ("overflow", lay.overflows), ("pooled", lay.pool)):
        for p in pages[:64]:
            for n, (o, s) in BK.items():
                f.append((f"{kind}@{p}.{n}", p + o, s))
            for s in (0, 1, 2, 125, 251):
                f.append((f"{kind}@{p}.slot[{s}].hash", p + BUCKET_HDR + 16 * s, 8))
                f.append((f"{kind}@{p}.slot[{s}].rec", p + BUCKET_HDR + 16 * s + 8, 8))
    for r in lay.records[:400]:
        f += [(f"rec@{r}.klen", r, 4), (f"rec@{r}.check", r + 4, 4), (f"rec@{r}.vlen", r + 8, 8)]
    for o in lay.free_blocks[:200]:
        f += [(f"free@{o}.size", o, 8), (f"free@{o}.next", o + 8, 8)]
    return f


def mutate(base: Base, rng: random.Random) -> Tuple[bytes, List[str]]:
    """Damage a copy of ``base``: 1-3 mutations. Returns (bytes, what was done)."""
    b = bytearray(base.data)
    lay = base.layout
    desc: List[str] = []
    regions = lay.regions()
    fields = _fields(lay)
    kinds = ["flip_bits", "flip_bits", "random_bytes", "set_field", "set_field", "set_field",
             "zero_page", "garbage_page", "truncate", "extend", "swap_pages", "copy_page"]
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        kind = rng.choice(kinds)
        if kind in ("flip_bits", "random_bytes"):
            name = rng.choice(sorted(regions))
            off, length = rng.choice(regions[name])
            length = min(length, len(b) - off)
            if length <= 0:
                continue
            if kind == "flip_bits":
                nbits = rng.choice((1, 1, 2, 3, 8))
                pos = []
                for _ in range(nbits):
                    bit = rng.randrange(8 * length)
                    b[off + bit // 8] ^= 1 << (bit % 8)
                    pos.append(off * 8 + bit)
                desc.append(f"flip bits {pos} in {name}")
            else:
                start = off + rng.randrange(length)
                n = min(rng.choice((1, 2, 4, 8, 16, 64)), len(b) - start)
                b[start:start + n] = bytes(rng.getrandbits(8) for _ in range(n))
                desc.append(f"random bytes [{start}, {start + n}) in {name}")
        elif kind == "set_field":
            name, off, size = rng.choice(fields)
            if off + size > len(b):
                continue
            v = _interesting(lay, rng)
            wr(b, off, size, v)
            desc.append(f"set {name} (offset {off}, {size} bytes) = {v & ((1 << 8 * size) - 1):#x}")
        elif kind in ("zero_page", "garbage_page"):
            pages = [0] + [lay.dir_off & ~4095] + lay.primaries + lay.overflows + lay.pool + \
                    [r & ~4095 for r in lay.records[:50]] + [rng.randrange(max(1, len(b) // PAGE)) * PAGE]
            p = rng.choice(pages)
            if p >= len(b):
                continue
            n = min(PAGE, len(b) - p)
            b[p:p + n] = bytes(n) if kind == "zero_page" else \
                (bytes([0xFF]) * n if rng.random() < 0.3 else rng.randbytes(n))
            desc.append(f"{kind.replace('_', ' ')} at {p}")
        elif kind == "truncate":
            cands = [rng.randrange(len(b) + 1), rng.randrange(0, 4096), lay.top,
                     lay.top - rng.randrange(1, 64), rng.randrange(len(b) // PAGE + 1) * PAGE,
                     len(b) - PAGE, len(b) - 1]
            n = max(0, min(len(b), rng.choice(cands)))
            del b[n:]
            desc.append(f"truncate to {n}")
        elif kind == "extend":
            n = rng.choice((1, 100, 4096, 65536))
            b += bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
            desc.append(f"extend by {n}")
        elif kind in ("swap_pages", "copy_page"):
            pages = lay.primaries + lay.overflows + lay.pool + [lay.dir_off & ~4095]
            if len(pages) < 2:
                continue
            p, q = rng.sample(pages, 2)
            if max(p, q) + PAGE > len(b):
                continue
            if kind == "swap_pages":
                b[p:p + PAGE], b[q:q + PAGE] = b[q:q + PAGE], b[p:p + PAGE]
            else:
                b[q:q + PAGE] = b[p:p + PAGE]
            desc.append(f"{kind.replace('_', ' ')} {p} -> {q}")
    if not desc:
        wr(b, HDR["count"][0], 8, rd(b, HDR["count"][0]) + 1)
        desc.append("set header.count += 1")
    if len(b) >= CHECKSUMMED + 8 and rng.random() < 0.5 and b[:CHECKSUMMED] != base.data[:CHECKSUMMED]:
        fix_checksum(b)
        desc.append("checksum fixed")
    return bytes(b), desc


# ---------------------------------------------------------------------------
# Systematic damage: every structure, a handful of telling values each

def _targets(lay: Layout, b: bytes) -> List[Tuple[str, int, int, List[int]]]:
    """(name, offset, size, values) for the systematic cases."""
    fs, top = lay.file_size, lay.top
    off_vals = [0, 8, fs - 8, fs, fs + 4096, 1 << 34, M64 - 7]      # offsets: none, misaligned, edge, past
    t: List[Tuple[str, int, int, List[int]]] = []
    for n in ("file_size", "dir", "struct_seq", "count", "moved", "top", "live_bytes", "free_bytes",
              "buckets", "bucket_free", "freed", "intent_op", "repair", "lock_pid"):
        o, s = HDR[n]
        cur = rd(b, o, s)
        vals = {"file_size": [8192, fs - 4096, fs + 4096, M64 & ~4095],
                "dir": [cur + 1, cur + 64, (cur & ~63) | 29, fs & ~63, 64],
                "struct_seq": [cur | 1], "count": [0, M64, 1 << 63], "moved": [1],
                "top": [4096, fs, fs - 16, 8192], "live_bytes": [0, M64], "free_bytes": [M64],
                "buckets": [0, M64], "bucket_free": off_vals + lay.primaries[:1],
                "freed": [M64 // 2], "intent_op": [1], "repair": [1], "lock_pid": [1, 0x7FFFFFFF]}[n]
        t.append((f"header.{n}", o, s, vals))
    t.append(("header.small_map", 304, 8, [M64]))
    for c in (0, 1, 5):
        t.append((f"header.small[{c}]", 320 + 8 * c, 8, off_vals + lay.records[:1]))
    t.append(("header.large[0]", 1344, 8, off_vals + lay.records[:1]))
    t.append(("header.mutex.lock", 128, 4, [1, 0x7FFFFFFF]))
    t.append(("header.mutex.kind", 128 + 16, 4, [0xFFFF, 0x30]))
    t.append(("header.intent", 1760, 8, [1]))   # with repair: below
    n = 1 << lay.depth
    for i in sorted({0, n - 1}):
        t.append((f"dir[{i}]", lay.dir_off + 8 * i, 8, off_vals + [lay.primaries[-1] + 64, lay.dir_off]
                  + lay.overflows[:1] + lay.pool[:1]))
    pages = [("bucket", lay.primaries[0])]
    if len(lay.primaries) > 1:
        pages.append(("bucket", lay.primaries[-1]))
    pages += [("overflow", p) for p in lay.overflows[:1]] + [("pooled", p) for p in lay.pool[:1]]
    for kind, p in pages:
        t.append((f"{kind}@{p}.seq", p, 8, [rd(b, p) | 1, rd(b, p) + 2]))
        t.append((f"{kind}@{p}.next", p + 8, 8, off_vals + [p, lay.primaries[0]]))
        t.append((f"{kind}@{p}.prefix", p + 16, 8, [M64, 1 << 63, 12345]))
        t.append((f"{kind}@{p}.depth", p + 24, 4, [lay.depth + 1, lay.depth + 2, 27, 28, 63, 64, 0xFFFFFFFF]))
        t.append((f"{kind}@{p}.count", p + 28, 4, [0, 219, 220, 252, 0xFFFFFFFF]))
        t.append((f"{kind}@{p}.kind", p + 32, 4, [BK_FREE, BK_OVERFLOW, BK_PRIMARY, 0]))
        for s in (0, 1):
            so = p + BUCKET_HDR + 16 * s
            t.append((f"{kind}@{p}.slot[{s}].rec", so + 8, 8, off_vals + [lay.dir_off, p]))
            t.append((f"{kind}@{p}.slot[{s}].hash", so, 8, [0, M64]))
    for r in lay.records[:1] + lay.records[-1:]:
        t.append((f"rec@{r}.klen", r, 4, [0, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF]))
        t.append((f"rec@{r}.vlen", r + 8, 8, [fs, fs - r - 16, 1 << 40, (1 << 40) + 1, M64]))
    for f in lay.free_blocks[:1]:
        t.append((f"free@{f}.size", f, 8, [0, 8, fs, M64 & ~15]))
        t.append((f"free@{f}.next", f + 8, 8, off_vals + [f]))
    return t


def systematic_cases(bases: Dict[str, Base], directory: Path, names: List[str]) -> List[Case]:
    """One case per (base, target, value), plus whole structural pages
    zeroed and filled with 0xFF, and truncation at every structure."""
    directory.mkdir(parents=True, exist_ok=True)
    cases: List[Case] = []

    def add(base: Base, b: bytearray, desc: List[str]) -> None:
        cid = f"sys-{base.name}-{len(cases)}"
        path = directory / f"{cid}.dshm"
        path.write_bytes(bytes(b))
        cases.append(Case(cid, base.name, str(path), desc, None))

    for name in names:
        base = bases[name]
        lay = base.layout
        for tname, off, size, vals in _targets(lay, base.data):
            for v in vals:
                b = bytearray(base.data)
                wr(b, off, size, v)
                desc = [f"set {tname} (offset {off}, {size} bytes) = {v & ((1 << 8 * size) - 1):#x}"]
                if tname == "header.intent":   # a recorded split, with the repair flag
                    wr(b, HDR["repair"][0], 8, 1)
                    desc.append("set header.repair = 1")
                add(base, b, desc)
        pages = {"directory page": lay.dir_off & ~4095, "first bucket": lay.primaries[0],
                 "last bucket": lay.primaries[-1]}
        if lay.overflows:
            pages["first overflow page"] = lay.overflows[0]
        if lay.pool:
            pages["first pooled page"] = lay.pool[0]
        if lay.records:
            pages["page of the first record"] = lay.records[0] & ~4095
        for pname, p in pages.items():
            for fill in (0x00, 0xFF):
                b = bytearray(base.data)
                b[p:p + PAGE] = bytes([fill]) * PAGE
                add(base, b, [f"fill {pname} at {p} with {fill:#04x}"])
        for cut in sorted({lay.top, lay.top - 16, lay.primaries[-1] + 100, lay.file_size - 1}):
            add(base, bytearray(base.data[:cut]), [f"truncate to {cut}"])
        # the seed changed and the checksum fixed: every key hashes elsewhere
        b = bytearray(base.data)
        wr(b, HDR["seed0"][0], 8, rd(b, HDR["seed0"][0]) ^ 1)
        fix_checksum(b)
        add(base, b, ["flip seed bit 0, checksum fixed"])
    return cases


# ---------------------------------------------------------------------------
# Cases and the runner

@dataclasses.dataclass
class Case:
    id: str
    base: str
    path: str
    desc: List[str]
    seed: Optional[int] = None
    ops: str = "rw"          # phases the worker runs: r, w


@dataclasses.dataclass
class Outcome:
    case: Case
    status: str              # "ok", "signal", "timeout", "exit", "unexpected", "r_changed", "leftover",
                             # "data_loss"
    detail: str = ""
    ops: Dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    last_op: str = ""
    # for "data_loss": what salvage made of the lost keys (see _fuzz_worker.py)
    salvage: Optional[Dict[str, Any]] = None

    @property
    def salvaged(self) -> bool:
        """Data loss that is only the store's: keys readable before the
        write phase, not written by it, unreadable after it (a repair that
        failed on the damage leaves the store refusing reads), and every
        one of them is in the salvaged copy with its value."""
        sv = self.salvage
        return (self.status == "data_loss" and sv is not None and "error" not in sv
                and sv["lost"] > 0 and sv["back"] == sv["lost"] and not sv["missing"])

    @property
    def bad(self) -> bool:
        """A failure. "data_loss" is one unless salvage brings every lost
        key back with its value (writing to a damaged file may leave it
        unreadable until salvaged, but may not destroy what was readable)."""
        return self.status != "ok" and not self.salvaged

    def line(self) -> str:
        return (f"[{self.status}] case {self.case.id} base={self.case.base} seed={self.case.seed} "
                f"during {self.last_op or '-'}: {self.detail}\n      damage: {'; '.join(self.case.desc)}")


#: Seconds a worker may spend on one case (every operation of it, both
#: phases) before the case counts as a hang.
CASE_TIMEOUT = float(os.environ.get("FUZZ_CASE_TIMEOUT", "10"))


def judge(outcomes: List[Outcome], what: str) -> None:
    """For a test: fail on a new kind of failure; xfail if every failure is
    a known bug. Data loss that salvage fully undoes passes; it is counted
    in the printed summary."""
    import collections

    import pytest
    stats = collections.Counter(o.status for o in outcomes)
    bad = [o for o in outcomes if o.bad]
    unknown = [o for o in bad if not known_bug(o)]
    salvaged = [o for o in outcomes if o.salvaged]
    print(f"{what}: {len(outcomes)} cases {dict(stats)}; in {len(salvaged)} of them keys were lost "
          f"from the store in the write phase and salvage brought back all "
          f"{sum(o.salvage['lost'] for o in salvaged)} of them"
          + (": " + ", ".join(f"{o.case.id} ({o.salvage['lost']})" for o in salvaged[:8]) if salvaged else ""))
    if unknown:
        pytest.fail(f"{what}: {len(unknown)} new failures ({dict(stats)}):\n"
                    + "\n".join(o.line() for o in unknown[:25]), pytrace=False)
    if bad:
        by_bug = collections.Counter(known_bug(o) for o in bad)
        examples: Dict[Optional[str], str] = {}
        for o in bad:
            examples.setdefault(known_bug(o), o.line().splitlines()[0])
        pytest.xfail(f"{what}: {len(bad)} cases hit known bugs {dict(by_bug)}; e.g. "
                     + " | ".join(examples.values()))


def make_cases(bases: Dict[str, Base], directory: Path, seed: int, n: int,
               names: Optional[List[str]] = None) -> List[Case]:
    """n damaged files in ``directory``: case i uses seed*1_000_003 + i."""
    directory.mkdir(parents=True, exist_ok=True)
    names = names or sorted(bases)
    cases = []
    for i in range(n):
        cs = seed * 1_000_003 + i
        rng = random.Random(cs)
        base = bases[names[i % len(names)]]
        data, desc = mutate(base, rng)
        path = directory / f"case-{cs}.dshm"
        path.write_bytes(data)
        cases.append(Case(str(cs), base.name, str(path), desc, cs))
    return cases


def case_env(base_env: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ, **base_env)
    env.pop("DSHM_CRASH_AT", None)
    if "DSHM_TEST_COLLIDE" not in base_env:
        env.pop("DSHM_TEST_COLLIDE", None)
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def _read_tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_cases(cases: List[Case], keys: Dict[str, Dict[str, str]], envs: Dict[str, Dict[str, str]],
              timeout: float = 30.0, workers: int = 2) -> List[Outcome]:
    """Exercise every case in worker subprocesses (grouped by base, since
    a base may need its own environment); returns one Outcome per case."""
    groups: Dict[str, List[Case]] = {}
    for c in cases:
        groups.setdefault(c.base, []).append(c)
    queue = []
    for base, cs in groups.items():
        per = max(1, (len(cs) + workers - 1) // workers)
        for i in range(0, len(cs), per):
            queue.append((base, cs[i:i + per]))
    results: Dict[str, Outcome] = {}
    running: List[_Batch] = []
    while queue or running:
        while queue and len(running) < workers:
            base, cs = queue.pop(0)
            running.append(_Batch(cs, keys[base], case_env(envs.get(base, {})), timeout))
        time.sleep(0.01)
        for bt in list(running):
            done, rest = bt.poll()
            for o in done:
                results[o.case.id] = o
            if bt.finished:
                running.remove(bt)
                if rest:
                    queue.insert(0, (rest[0].base, rest))
    return [results[c.id] for c in cases]


class _Batch:
    """One worker process over a list of cases (same base)."""

    def __init__(self, cases: List[Case], keys: Dict[str, str], env: Dict[str, str], timeout: float):
        self.cases = cases
        self.timeout = timeout
        fd, self.plan = tempfile.mkstemp(prefix="dshm-fuzz-plan-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": keys, "cases": [dataclasses.asdict(c) for c in cases]}, f)
        fd, self.errpath = tempfile.mkstemp(prefix="dshm-fuzz-stderr-")
        self.err = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "run", self.plan],
                                     stdout=subprocess.PIPE, stderr=self.err, env=env)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.idx = 0                 # index of the case in progress
        self.case_start = time.monotonic()
        self.last_op = ""
        self.finished = False

    def _drain(self) -> List[Outcome]:
        try:
            chunk = self.proc.stdout.read()
        except (BlockingIOError, ValueError):
            chunk = None
        if chunk:
            self.buf += chunk
        done = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "begin" in msg:
                self.case_start = time.monotonic()
                self.last_op = ""
            elif "op" in msg:
                self.last_op = msg["op"]
            elif "end" in msg:
                done.append(Outcome(self.cases[self.idx], msg["status"], msg.get("detail", ""),
                                    msg.get("ops", {}), time.monotonic() - self.case_start,
                                    msg.get("last_op", ""), msg.get("salvage")))
                self.idx += 1
        return done

    def poll(self) -> Tuple[List[Outcome], List[Case]]:
        """Outcomes finished since the last poll, and (once the worker is
        gone early) the cases it did not reach."""
        done = self._drain()
        rc = self.proc.poll()
        late = time.monotonic() - self.case_start > self.timeout
        if rc is None and not late:
            return done, []
        stack = ""
        if rc is None:   # a hang: note where, then stop this worker (our own child, by its pid)
            stack = c_stack(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        else:
            done += self._drain()
        self.finished = True
        self.proc.stdout.close()
        self.err.close()
        tail = _read_tail(self.errpath)
        for p in (self.plan, self.errpath):
            try:
                os.unlink(p)
            except OSError:
                pass
        if self.idx >= len(self.cases):
            return done, []
        if rc is None:
            status, detail = "timeout", f"no result after {self.timeout:.0f} s; C stack: {stack}"
        elif rc < 0:
            status, detail = "signal", f"killed by {signal.Signals(-rc).name}"
        else:
            status, detail = "exit", f"worker exited with {rc}"
        done.append(Outcome(self.cases[self.idx], status, detail + "\n" + _indent(tail), {},
                            time.monotonic() - self.case_start, self.last_op))
        return done, self.cases[self.idx + 1:]


def c_stack(pid: int) -> str:
    """The C functions on the main thread's stack of process pid (by gdb,
    if installed), innermost first: "page_put < chain_put < ..."."""
    if not shutil.which("gdb"):
        return "(gdb not installed)"
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "bt 25"],
                           capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "(gdb failed)"
    names = []
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        m = re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(\w+)", line)
        if m and m.group(1) not in names:
            names.append(m.group(1))
        if m and m.group(1).startswith("_cffi_f_"):
            break
    return " < ".join(names) or "(no stack)"


def _indent(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()][-12:]
    return "\n".join("        " + ln for ln in lines)


# ---------------------------------------------------------------------------
# Known bugs: a failure matching one of these is reported as an expected
# failure (the bug was reported to the C core's owner) instead of a new one.
# Remove an entry when the bug is fixed; the run then holds the line.

def _during(op: str):
    return lambda o: o.last_op == op


KNOWN_BUGS: Dict[str, Any] = {
    # Fixed (kept here as a record; their regression tests stay):
    # "chain-cycle-slow", "rebuild-page-cycle": chain walks now stop after
    #     file_size / 4096 hops; "failed-repair-struct-seq-odd": a failed
    #     repair leaves hd_struct_seq even; "count-overflow": an impossible
    #     count is DSHM_CORRUPT. In 508fa3b:
    # "reorganize-unchecked": copy_all() followed every offset unchecked
    #     (SIGSEGV; SIGBUS -> DSHM_TRUNCATED with the copy left behind);
    # "page-put-full-page": page_put() probed forever on a full page whose
    #     count said there was room;
    # "split-trusts-bucket-depth": bucket_split() switched a directory range
    #     computed from a damaged bk_depth, over the whole file.
    # "r-mode-writes": an 'r' open that got the file to itself re-initialised
    #     a damaged writer mutex, and a read-only handle that took the lock
    #     (check(), read fallback) wrote hd_lock_pid, ran the repair hd_repair
    #     asked for, and cleared a stale hd_moved; 'r' handles now write
    #     nothing and report what is owed.
    # "corrupt-read-retries": a lock-free read that met damage retried 64
    #     times (48 after sched_yield) before its locked try said
    #     DSHM_CORRUPT; damage met while no counter moved is now reported at
    #     once.
}


def known(bug: str, why: str) -> Any:
    """pytest marker: a strict xfail while ``bug`` is listed in KNOWN_BUGS.
    Once the bug is fixed the test XPASSes, which fails the run: then
    remove the KNOWN_BUGS entry (the test then runs as a plain test)."""
    import pytest
    return pytest.mark.xfail(bug in KNOWN_BUGS, reason=f"known bug {bug}: {why}", strict=True)


def known_bug(o: Outcome) -> Optional[str]:
    for name, pred in KNOWN_BUGS.items():
        if pred(o):
            return name
    return None


# ---------------------------------------------------------------------------
# One snippet in a subprocess

@dataclasses.dataclass
class Ran:
    rc: Optional[int]        # None: killed after the timeout
    out: str
    err: str
    seconds: float
    stack: str = ""          # C stack at the timeout

    @property
    def crashed(self) -> bool:
        return self.rc is not None and self.rc < 0

    def __str__(self) -> str:
        what = f"timed out after {self.seconds:.0f} s in {self.stack}" if self.rc is None else \
            f"killed by {signal.Signals(-self.rc).name}" if self.crashed else f"exit {self.rc}"
        return f"{what}\nstdout: {self.out[-1500:]}\nstderr: {self.err[-1500:]}"


def run_snippet(code: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 20.0) -> Ran:
    """Run python code (argv[1:] = args) in a subprocess, never in this one:
    a crash is seen as a negative return code, a hang as rc None."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=case_env(env or {}))
    try:
        out, err = p.communicate(timeout=timeout)
        return Ran(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                   time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        stack = c_stack(p.pid)
        p.kill()
        out, err = p.communicate()
        return Ran(None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                   time.monotonic() - t0, stack)


# ---------------------------------------------------------------------------
# Corpus: damaged files that once crashed, kept as regression inputs

def save_corpus(o: Outcome, name: str, directory: Path = CORPUS) -> Path:
    """Keep a failing case: <name>.dshm.gz (the bytes) and <name>.json."""
    directory.mkdir(parents=True, exist_ok=True)
    data = Path(o.case.path).read_bytes()
    gz = directory / f"{name}.dshm.gz"
    with gzip.open(gz, "wb", compresslevel=9) as f:
        f.write(data)
    meta = {"base": o.case.base, "seed": o.case.seed, "damage": o.case.desc,
            "status": o.status, "during": o.last_op, "detail": o.detail.splitlines()[0] if o.detail else "",
            "sha256": hashlib.sha256(data).hexdigest(), "env": BASES.get(o.case.base, ("", {}))[1],
            "known_bug": known_bug(o)}
    (directory / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return gz


def load_corpus(directory: Path = CORPUS) -> List[Tuple[str, bytes, Dict[str, Any]]]:
    out = []
    for meta_path in sorted(directory.glob("*.json")):
        name = meta_path.name[:-5]
        with gzip.open(directory / f"{name}.dshm.gz", "rb") as f:
            data = f.read()
        out.append((name, data, json.loads(meta_path.read_text())))
    return out
