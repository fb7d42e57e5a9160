"""The flushes of each kind of commit, counted in a real process.

The rest of the suite runs with DSHM_TEST_NOFLUSH=1 (tests/conftest.py):
the core skips its fsync and fdatasync calls there. These tests run a
child without the hook, with a small preloaded library that counts the
calls (and passes them on), and check what docs/durability.md promises:
two flushes per commit, a commit for sync(), for each 's' write on a disk
file system, and for close() after writes; none for writes in between.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
static long n_fdatasync, n_fsync;
long shim_fdatasync(void) { return n_fdatasync; }
long shim_fsync(void) { return n_fsync; }
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    n_fdatasync++;
    return real(fd);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    n_fsync++;
    return real(fd);
}
"""

CHILD = textwrap.dedent("""
    import ctypes, json, os, sys
    import dbm_shm
    lib = ctypes.CDLL(None)
    lib.shim_fdatasync.restype = lib.shim_fsync.restype = ctypes.c_long
    def count():
        return (lib.shim_fdatasync(), lib.shim_fsync())
    path = sys.argv[1]
    out = {}
    def step(name, fn):
        a = count()
        fn()
        b = count()
        out[name] = [b[0] - a[0], b[1] - a[1]]
    db = dbm_shm.open(path, "c")
    step("puts", lambda: [db.__setitem__(b"k%d" % i, b"v" * i) for i in range(300)])
    step("sync", db.sync)
    step("sync-again", db.sync)
    step("put-after-sync", lambda: db.__setitem__(b"k1", b"w"))
    step("close", db.close)
    db = dbm_shm.open(path, "w")
    step("close-unchanged", db.close)
    db = dbm_shm.open(path, "ws")
    step("put-s", lambda: db.__setitem__(b"k2", b"s"))
    step("batch-s", lambda: db.update({b"a": b"1", b"b": b"2"}))
    db.close()
    step("n-over-existing", lambda: dbm_shm.open(path, "n").close())
    print(json.dumps(out))
""")


def _volatile(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() in ("tmpfs", "ramfs")


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (the package itself needs one to build)"
    d = tmp_path_factory.mktemp("flushes")
    (d / "shim.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=str(d / "shim.so"), DSHM_TEST_NOFLUSH="0")
    r = subprocess.run([sys.executable, "-c", CHILD, str(d / "db")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout.splitlines()[-1]), _volatile(d)


def test_writes_between_commits_do_not_flush(counts):
    c, _ = counts
    assert c["puts"] == [0, 0]
    assert c["put-after-sync"] == [0, 0]


def test_sync_is_two_flushes(counts):
    c, _ = counts
    assert c["sync"] == [2, 0]
    assert c["sync-again"] == [2, 0]   # sync() commits even with nothing new


def test_close_commits_what_the_handle_wrote(counts):
    c, _ = counts
    assert c["close"] == [2, 0]
    assert c["close-unchanged"] == [0, 0]


def test_s_flag_commits_each_write_on_a_disk(counts):
    c, volatile = counts
    want = [0, 0] if volatile else [2, 0]
    assert c["put-s"] == want
    assert c["batch-s"] == want


def test_n_over_a_store_flushes_the_new_file_and_its_directory(counts):
    c, _ = counts
    # the new file's first meta (fdatasync), the whole file before the
    # rename and the directory after it (fsync)
    assert c["n-over-existing"] == [1, 2]
