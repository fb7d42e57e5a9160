"""``dbm_shm.upgrade``: convert a file of format 1 to the current format.

A build of dbm_shm opens only files of its own format (``DSHM_FORMAT`` in
csrc/dshm_layout.h); any other gives ``DSHM_VERSION_MISMATCH``. This module
reads a format-1 file in pure Python, without the C core (which no longer
knows that layout once the format changes), and writes its records into a
new store of the current format through the public API, which then
replaces the old file.

The reader needs the store quiescent: no process may have the file open.
It takes the file's flock exclusively (``LOCK_EX | LOCK_NB``; a format-1
handle holds ``LOCK_SH`` for its whole life, csrc/dshm_file.c) and refuses
a file another process has open, or one that a writer left in the middle
of a change (a split, a directory doubling, a batch, a bucket's odd
seqlock, a pending repair): those need the format-1 version's own
recovery first. Every offset read from the file is bounds-checked, and
damage is reported as :class:`dbm_shm.error` saying what and where.

The conversion is restartable: the new store is built under
``PATH + ".upgrade-tmp"`` (a leftover of an interrupted run is removed
first), synced, then renamed over PATH (``os.replace``) and the directory
synced. A kill at any point leaves PATH holding the old file or the
complete new one.

Test hooks (environment variables, for tests/cli/test_upgrade.py):

``DBM_SHM_UPGRADE_KILL_AT``
    ``after-write`` (every record in the new store, not yet synced),
    ``after-sync`` (the new store synced and closed, not yet renamed) or
    ``after-replace`` (renamed over PATH, the directory not yet synced):
    the process SIGKILLs itself there.
``DBM_SHM_UPGRADE_FORCE``
    ``1``: convert a format-1 file even when this build's format is 1 (it
    is then rewritten in the same format): lets the tests run the whole
    conversion before the format changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import signal
import struct
from typing import Dict, Iterator, NamedTuple, NoReturn, Optional, Set, Tuple, Union

from ._errors import _FILE_FORMAT, error

__all__ = ["upgrade", "UpgradeResult", "read_format1", "file_format", "TMP_SUFFIX"]

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

#: The name of the new store beside PATH while it is being built.
TMP_SUFFIX = ".upgrade-tmp"

# -- The format-1 layout (csrc/dshm_layout.h with DSHM_FORMAT 1u) -------------
# Offsets from offsetof() in a C program compiled with gcc against that
# header (x86-64 and aarch64 glibc; all fields are fixed-width and the
# header's cache-line groups are _Alignas(64), so they do not depend on
# the ABI past the size of pthread_mutex_t, which fits its 48-byte pad):
#   dshm_header: hd_magic 0, hd_format 8, hd_header_size 12,
#     hd_bucket_size 16, hd_abi 20, hd_mutex 128, hd_lock_pid 176,
#     hd_repair 184, hd_file_size 192, hd_dir 200, hd_struct_seq 208,
#     hd_commit 216, hd_count 224, hd_moved 232, hd_top 240,
#     hd_intent_op 1760, hd_batch 1808; sizeof 1856 (page 4096)
#   dshm_bucket: bk_seq 0, bk_next 8, bk_prefix 16, bk_depth 24,
#     bk_count 28, bk_kind 32, bk_slots 64; sizeof 4096
#   dshm_slot: sl_hash 0, sl_rec 8; sizeof 16
#   dshm_rec: rc_klen 0, rc_check 4, rc_vlen 8; sizeof 16
# All little-endian (the file is native-endian; dbm_shm runs only on
# little-endian 64-bit machines: it maps the file as its C structs).

MAGIC = b"\x93DSHM\r\n\x1a"
FORMAT1 = 1

_HDR_MAGIC = 0
_HDR_FORMAT = 8
_HDR_HEADER_SIZE = 12
_HDR_BUCKET_SIZE = 16
_HDR_LOCK_PID = 176
_HDR_REPAIR = 184
_HDR_FILE_SIZE = 192
_HDR_DIR = 200
_HDR_STRUCT_SEQ = 208
_HDR_COMMIT = 216
_HDR_COUNT = 224
_HDR_MOVED = 232
_HDR_INTENT_OP = 1760
_HDR_BATCH = 1808

_HEADER_SIZE = 4096
_BUCKET_SIZE = 4096
_BUCKET_HDR = 64
_SLOTS = (_BUCKET_SIZE - _BUCKET_HDR) // 16       # 252
_BK_SEQ = 0
_BK_NEXT = 8
_BK_PREFIX = 16
_BK_DEPTH = 24
_BK_COUNT = 28
_BK_KIND = 32
_BK_PRIMARY = 0x504B    # "KP"
_BK_OVERFLOW = 0x4F4B   # "KO"
_REC_HDR = 16
_ALIGN = 16
_MAX_DEPTH = 28
_MAX_KEY = 0x7FFFFFFF

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_REC = struct.Struct("<IIQ")
_SLOT_TABLE = struct.Struct("<%dQ" % (2 * _SLOTS))

#: Records (and bytes) handed to the new store per ``update`` (one batch).
_CHUNK_RECORDS = 65536
_CHUNK_BYTES = 64 << 20

_KILL_ENV = "DBM_SHM_UPGRADE_KILL_AT"
_FORCE_ENV = "DBM_SHM_UPGRADE_FORCE"


class UpgradeResult(NamedTuple):
    """What :func:`upgrade` did."""

    #: Whether the file was converted (not when it was already of the
    #: current format: then it is unchanged).
    converted: bool
    #: The file's format before.
    old_format: int
    #: The format it has now (this build's).
    new_format: int
    #: Records copied (0 when nothing was converted).
    records: int


def file_format(path: PathArg) -> Optional[int]:
    """The format number of a dbm_shm file (u32 at byte 8), or None when
    the file does not start with dbm_shm's magic (or is shorter than 12
    bytes). Raises OSError when it cannot be read."""
    with open(os.fspath(path), "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:8] != MAGIC:
        return None
    fmt: int = _U32.unpack_from(head, 8)[0]
    return fmt


def _name(path: PathArg) -> str:
    return os.fsdecode(os.fspath(path))


class _Format1:
    """A read-only view of a format-1 file's mapping, every read checked."""

    def __init__(self, mm: "mmap.mmap", name: str):
        self._mm = mm
        self._name = name
        actual = len(mm)
        if actual < _HEADER_SIZE:
            self._fail(f"truncated: {actual} bytes, shorter than the {_HEADER_SIZE}-byte header")
        if mm[0:8] != MAGIC:
            self._fail("not a dbm_shm file (bad magic at byte 0)")
        fmt = self._u32(_HDR_FORMAT)
        if fmt != FORMAT1:
            self._fail(f"header byte {_HDR_FORMAT}: file format {fmt}, not 1")
        for off, want, what in ((_HDR_HEADER_SIZE, _HEADER_SIZE, "header size"),
                                (_HDR_BUCKET_SIZE, _BUCKET_SIZE, "bucket size")):
            got = self._u32(off)
            if got != want:
                self._fail(f"header byte {off}: {what} {got}, expected {want}")
        size = self._u64(_HDR_FILE_SIZE)
        if size > actual:
            self._fail(f"truncated: the header (byte {_HDR_FILE_SIZE}) says {size} bytes, "
                       f"the file has {actual}")
        if size < _HEADER_SIZE:
            self._fail(f"header byte {_HDR_FILE_SIZE}: file size {size} is smaller than "
                       "the header page")
        self.size = size
        # A writer that died in the middle of a change left the structures
        # for the format-1 version's recovery to finish: do not guess.
        unfinished = []
        if self._u64(_HDR_REPAIR):
            unfinished.append("a repair is pending")
        if self._u64(_HDR_INTENT_OP):
            unfinished.append("a bucket split was interrupted")
        if self._u64(_HDR_BATCH):
            unfinished.append("a batch was interrupted")
        if self._u64(_HDR_STRUCT_SEQ) & 1:
            unfinished.append("a directory change was interrupted")
        if unfinished:
            self._unfinished("; ".join(unfinished))
        self.count = self._u64(_HDR_COUNT)
        d = self._u64(_HDR_DIR)
        self.dir_off = d & ~63
        self.depth = d & 63
        if self.depth > _MAX_DEPTH:
            self._fail(f"header byte {_HDR_DIR}: directory depth {self.depth} "
                       f"(at most {_MAX_DEPTH})")
        self._span(self.dir_off, 8 << self.depth, f"the directory (header byte {_HDR_DIR})")

    # -- checked reads --------------------------------------------------------

    def _fail(self, what: str) -> NoReturn:
        e = error(f"upgrade: {self._name}: damaged format-1 file: {what}")
        e.filename = self._name
        raise e

    def _unfinished(self, what: str) -> NoReturn:
        e = error(f"upgrade: {self._name}: {what} (a writer died in the middle of a "
                  "change); open it for writing once with the dbm_shm version that wrote "
                  "it (format 1), which repairs it, then upgrade")
        e.filename = self._name
        raise e

    def _u32(self, off: int) -> int:
        v: int = _U32.unpack_from(self._mm, off)[0]
        return v

    def _u64(self, off: int) -> int:
        v: int = _U64.unpack_from(self._mm, off)[0]
        return v

    def _span(self, off: int, length: int, what: str) -> None:
        """[off, off + length) must lie in the allocated part of the file."""
        if off < _HEADER_SIZE or off + length > self.size:
            self._fail(f"{what}: offset {off} (+{length} bytes) is outside the file "
                       f"[{_HEADER_SIZE}, {self.size})")

    # -- the walk -------------------------------------------------------------

    def _entry(self, i: int) -> int:
        """Directory entry ``i`` (read on demand: up to 2^28 of them)."""
        return self._u64(self.dir_off + 8 * i)

    def records(self, values: bool = True) -> Iterator[Tuple[bytes, bytes]]:
        """Every (key, value), bucket by bucket; checks as it goes, and
        that the number of records is the header's count at the end.
        ``values=False``: the values are not copied (b"" instead): a pass
        that only checks the file."""
        seen_pages: Set[int] = set()
        found = 0
        depth = self.depth
        n_entries = 1 << depth
        i = 0
        while i < n_entries:
            off = self._entry(i)
            where = f"directory entry {i} (at byte {self.dir_off + 8 * i})"
            self._span(off, _BUCKET_SIZE, f"{where}: bucket")
            if off % _ALIGN:
                self._fail(f"{where}: bucket offset {off} is not {_ALIGN}-byte aligned")
            kind = self._u32(off + _BK_KIND)
            if kind != _BK_PRIMARY:
                self._fail(f"{where}: the page at {off} is not a primary bucket "
                           f"(kind 0x{kind:x})")
            ld = self._u32(off + _BK_DEPTH)
            prefix = self._u64(off + _BK_PREFIX)
            if ld > depth:
                self._fail(f"bucket at {off}: local depth {ld} exceeds the directory's {depth}")
            # The 2^(depth - ld) entries of this bucket are consecutive and
            # start at its prefix.
            first = prefix >> (64 - depth) if depth else 0
            span = 1 << (depth - ld)
            mask = ((1 << ld) - 1) << (64 - ld) if ld else 0
            if prefix & ~mask or first != i:
                self._fail(f"{where}: bucket at {off} covers prefix 0x{prefix:016x}/{ld}, "
                           f"not this entry")
            for j in range(i + 1, i + span):
                if self._entry(j) != off:
                    self._fail(f"directory entry {j} (at byte {self.dir_off + 8 * j}): "
                               f"{self._entry(j)}, expected {off} (the bucket of entry {i})")
            if off in seen_pages:
                self._fail(f"{where}: bucket at {off} is reached twice")
            for key, value in self._chain(off, prefix, mask, seen_pages, values):
                found += 1
                yield key, value
            i += span
        if found != self.count:
            self._fail(f"the header (byte {_HDR_COUNT}) counts {self.count} keys, "
                       f"the buckets hold {found}")

    def _chain(self, primary: int, prefix: int, mask: int,
               seen_pages: Set[int], values: bool) -> Iterator[Tuple[bytes, bytes]]:
        """The records of a primary bucket and its overflow pages."""
        keys: Set[bytes] = set()
        page = primary
        n = 0
        while page:
            where = f"bucket page at {page}" + ("" if n == 0 else f" (overflow {n} of the bucket at {primary})")
            if n:
                self._span(page, _BUCKET_SIZE, f"overflow page {n} of the bucket at {primary}")
                if page % _ALIGN:
                    self._fail(f"overflow page {n} of the bucket at {primary}: offset {page} "
                               f"is not {_ALIGN}-byte aligned")
                if page in seen_pages:
                    self._fail(f"overflow chain of the bucket at {primary}: page {page} is "
                               "reached twice (a cycle, or pages shared)")
                kind = self._u32(page + _BK_KIND)
                if kind != _BK_OVERFLOW:
                    self._fail(f"{where}: not an overflow page (kind 0x{kind:x})")
            seen_pages.add(page)
            if self._u64(page + _BK_SEQ) & 1:
                self._unfinished(f"{where}: a change to this bucket was interrupted")
            slots = _SLOT_TABLE.unpack_from(self._mm, page + _BUCKET_HDR)
            used = 0
            for s in range(_SLOTS):
                rec = slots[2 * s + 1]
                if not rec:
                    continue
                used += 1
                h = slots[2 * s]
                swhere = f"{where}, slot {s} (at byte {page + _BUCKET_HDR + 16 * s})"
                if h & mask != prefix:
                    self._fail(f"{swhere}: hash 0x{h:016x} does not belong in this bucket")
                yield self._record(rec, h, swhere, keys, values)
            count = self._u32(page + _BK_COUNT)
            if count != used:
                self._fail(f"{where}: counts {count} slots in use, holds {used}")
            page = self._u64(page + _BK_NEXT)
            n += 1

    def _record(self, off: int, h: int, where: str, keys: Set[bytes],
                values: bool) -> Tuple[bytes, bytes]:
        if off % _ALIGN:
            self._fail(f"{where}: record offset {off} is not {_ALIGN}-byte aligned")
        self._span(off, _REC_HDR, f"{where}: record")
        klen, check, vlen = _REC.unpack_from(self._mm, off)
        if check != h & 0xFFFFFFFF:
            self._fail(f"{where}: the record at {off} is not this slot's (check "
                       f"0x{check:08x}, hash 0x{h:016x})")
        if klen > _MAX_KEY:
            self._fail(f"{where}: the record at {off} has a key of {klen} bytes")
        self._span(off, _REC_HDR + klen + vlen, f"{where}: record of {klen} + {vlen} bytes")
        k = off + _REC_HDR
        key = self._mm[k:k + klen]
        if key in keys:
            self._fail(f"{where}: key {key[:40]!r} appears twice in one bucket")
        keys.add(key)
        return key, self._mm[k + klen:k + klen + vlen] if values else b""


@contextlib.contextmanager
def _locked(path: PathArg, writable: bool, name: Optional[str] = None) -> Iterator[int]:
    """The file's descriptor with its flock held exclusively (``name``:
    the path as the user gave it, for messages)."""
    name = name or _name(path)
    try:
        fd = os.open(os.fspath(path), (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except PermissionError:
        if not writable:
            raise
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            e = error(f"upgrade: {name}: another process has the file open (a handle "
                      "holds its lock); the upgrade needs the store quiescent: close "
                      "every handle on it, then run it again")
            e.filename = name
            raise e from None
        yield fd
    finally:
        os.close(fd)   # releases the flock


@contextlib.contextmanager
def _mapped(fd: int, name: str) -> Iterator["mmap.mmap"]:
    """The file mapped read-only (a file shorter than a header: damaged)."""
    size = os.fstat(fd).st_size
    if size < _HEADER_SIZE:
        e = error(f"upgrade: {name}: damaged format-1 file: truncated: {size} bytes, "
                  f"shorter than the {_HEADER_SIZE}-byte header")
        e.filename = name
        raise e
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
        yield mm


def read_format1(path: PathArg) -> Dict[bytes, bytes]:
    """Every record of the format-1 file ``path``, read without the C core.

    Takes the file's flock exclusively for the read (refused while any
    other process has it open). Raises :class:`dbm_shm.error` for a file
    that is not of format 1, is damaged (the message says what and at
    which byte), or was left in the middle of a change."""
    name = _name(path)
    with _locked(path, writable=False) as fd, _mapped(fd, name) as mm:
        return dict(_Format1(mm, name).records())


def _kill_point(point: str) -> None:
    if os.environ.get(_KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):   # some file systems refuse it
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(old: _Format1, tmp: str, st: os.stat_result) -> int:
    """Build the new store at ``tmp`` from ``old``'s records, synced and
    with ``st``'s permissions (and owner, where allowed). Returns the
    number of records."""
    from ._db import open as open_db   # (the C core: the new store only)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)   # a leftover of an interrupted run
    n = 0
    db = open_db(tmp, "n", 0o600)
    try:
        chunk: Dict[bytes, bytes] = {}
        nbytes = 0
        for key, value in old.records():
            chunk[key] = value
            nbytes += len(key) + len(value)
            if len(chunk) >= _CHUNK_RECORDS or nbytes >= _CHUNK_BYTES:
                db.update(chunk)   # one batch
                n += len(chunk)
                chunk, nbytes = {}, 0
        if chunk:
            db.update(chunk)
            n += len(chunk)
        if len(db) != n:
            raise error(f"upgrade: {tmp}: the new store has {len(db)} keys, expected {n}")
        _kill_point("after-write")
        db.sync()
    finally:
        db.close()
    with contextlib.suppress(OSError):
        os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)   # the mode and owner; the data was synced above
    finally:
        os.close(fd)
    return n


def upgrade(path: PathArg) -> UpgradeResult:
    """Convert the dbm_shm file ``path`` from format 1 to this build's format.

    Reads every record of the old file (without the C core), writes them
    into a new store ``path + ".upgrade-tmp"`` (an older one of that name,
    left by an interrupted run, is replaced), syncs it, gives it the old
    file's permissions (and owner, where allowed) and renames it over
    ``path``, then syncs the directory. A crash at any point leaves the old
    file or the complete new one at ``path``; running it again finishes.
    (Through a symbolic link: the file it names is replaced.)

    The store must be quiescent: no process may have it open (the call
    fails with :class:`dbm_shm.error` if one has; format-1 handles hold a
    shared lock on the file while open). A file already of the current
    format is left alone (``converted`` is False). Damage, and a file some
    writer left in the middle of a change, raise :class:`dbm_shm.error`
    before anything is written.
    """
    name = _name(path)
    target = os.path.realpath(name)
    fmt = file_format(name)
    if fmt is None:
        e = error(f"upgrade: {name}: not a dbm_shm file (no dbm_shm magic at byte 0)")
        e.filename = name
        raise e
    force = os.environ.get(_FORCE_ENV) == "1" and fmt == FORMAT1
    if fmt == _FILE_FORMAT and not force:
        return UpgradeResult(False, fmt, _FILE_FORMAT, 0)
    if fmt != FORMAT1:
        e = error(f"upgrade: {name}: file format {fmt}; this version reads format "
                  f"{_FILE_FORMAT} and converts only format 1")
        e.filename = name
        raise e
    tmp = target + TMP_SUFFIX
    with _locked(target, writable=True, name=name) as fd:
        st = os.fstat(fd)
        with _mapped(fd, name) as mm:
            # Looked at again under the lock: another upgrade may have
            # replaced the file since.
            now = _U32.unpack_from(mm, _HDR_FORMAT)[0] if mm[:8] == MAGIC else None
            if now == _FILE_FORMAT and now != FORMAT1:
                return UpgradeResult(False, now, _FILE_FORMAT, 0)
            old = _Format1(mm, name)
            # The whole file is checked before anything is written; then it
            # is read again, one chunk in memory at a time.
            for _ in old.records(values=False):
                pass
            commit = old._u64(_HDR_COMMIT)
            try:
                n = _write_new(old, tmp, st)
                _kill_point("after-sync")
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        _kill_point("after-replace")
        _fsync_dir(os.path.dirname(target))
        # As a reorganize does (dshm_rename_over): mark the old file moved
        # and bump its commit number, so that a format-1 handle that opened
        # it all the same (it waited for our lock) is told to reopen the path.
        with contextlib.suppress(OSError):
            os.pwrite(fd, _U32.pack(1), _HDR_MOVED)
            os.pwrite(fd, _U64.pack((commit + 1) & 0xFFFFFFFFFFFFFFFF), _HDR_COMMIT)
    return UpgradeResult(True, fmt, _FILE_FORMAT, n)
