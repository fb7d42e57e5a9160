"""The compiled cffi module agrees with the C headers.

csrc/cdef.h is a hand-kept copy of the part of csrc/dbm_shm.h that Python
calls; this checks that every constant it names reaches ``lib`` with the
value dbm_shm.h gives it, that every function it declares is declared in
dbm_shm.h with the same signature (and the other way round), and that the
stat struct and error strings line up.
"""

import ast
import errno
import os
import re

import pytest

import dbm_shm
from dbm_shm._dshm import ffi, lib

CSRC = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "csrc")


def _read(name):
    path = os.path.join(CSRC, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not found (running from an installed package?)")
    with open(path) as f:
        return f.read()


def _strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def _defines(src):
    """{name: value text} for every object-like #define."""
    out = {}
    for line in _strip_comments(src).splitlines():
        m = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)(?!\()\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _eval_c(expr, defines, depth=0):
    """Value of a simple C integer constant expression from dbm_shm.h."""
    assert depth < 10, expr
    e = re.sub(r"\((?:u?int\d+_t|unsigned|int|long|size_t)\)", "", expr)   # casts
    e = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", e)             # suffixes
    e = re.sub(r"\b(DSHM_\w+)\b", lambda m: "(%d)" % _eval_c(defines[m.group(1)], defines, depth + 1), e)
    tree = ast.parse(e, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.USub, ast.UAdd,
               ast.LShift, ast.RShift, ast.BitOr, ast.BitAnd, ast.Add, ast.Sub, ast.Mult, ast.Invert)
    for node in ast.walk(tree):
        assert isinstance(node, allowed), (expr, type(node).__name__)
    return eval(compile(tree, "<define>", "eval"))  # noqa: S307 - checked above


def _functions(src):
    """{name: normalised prototype} for every function declaration."""
    src = _strip_comments(src)
    src = re.sub(r"^\s*#.*$", " ", src, flags=re.M)
    src = re.sub(r'extern\s+"C"\s*\{|^\s*\}\s*$', " ", src, flags=re.M)
    out = {}
    for decl in src.split(";"):
        decl = " ".join(decl.split())
        if "(" not in decl or decl.startswith("typedef") or "{" in decl or "}" in decl:
            continue
        if decl.startswith('extern "Python"'):
            continue   # a callback the binding defines in Python (ffi.def_extern), not a C function
        m = re.search(r"([A-Za-z_]\w*)\s*\(", decl)
        decl = re.sub(r"\s*([(),*])\s*", r"\1", decl)
        out[m.group(1)] = decl
    return out


def _struct_fields(src, name):
    src = _strip_comments(src)
    m = re.search(r"typedef\s+struct\s+%s\s*\{(.*?)\}\s*%s\s*;" % (name, name), src, flags=re.S)
    assert m, name
    return [" ".join(f.split()) for f in m.group(1).split(";") if f.strip()]


@pytest.fixture(scope="module")
def headers():
    return _read("cdef.h"), _read("dbm_shm.h")


def test_cdef_constants_match_header(headers):
    cdef, header = headers
    cdef_defs = _defines(cdef)
    header_defs = _defines(header)
    assert cdef_defs, "no #define found in cdef.h"
    for name, value in cdef_defs.items():
        assert value == "...", f"cdef.h should let the compiler fill {name} in"
        assert name in header_defs, f"{name} is in cdef.h but not in dbm_shm.h"
        assert hasattr(lib, name), f"lib.{name} is missing"
        expected = _eval_c(header_defs[name], header_defs)
        assert getattr(lib, name) == expected, name


def test_header_constants_are_all_in_cdef(headers):
    cdef, header = headers
    missing = set(_defines(header)) - set(_defines(cdef)) - {"DBM_SHM_H"}
    assert missing == set()


def test_cdef_functions_declared_in_header(headers):
    cdef, header = headers
    cdef_fns = _functions(cdef)
    header_fns = _functions(header)
    assert len(cdef_fns) >= 15, sorted(cdef_fns)
    for name, proto in cdef_fns.items():
        assert name in header_fns, f"{name} is in cdef.h but not declared in dbm_shm.h"
        assert header_fns[name] == proto, name
        assert callable(getattr(lib, name)), name


def test_header_functions_are_all_in_cdef(headers):
    cdef, header = headers
    assert set(_functions(header)) - set(_functions(cdef)) == set()


def test_stat_struct_matches(headers):
    cdef, header = headers
    fields = _struct_fields(cdef, "dshm_stat_t")
    assert fields == _struct_fields(header, "dshm_stat_t")
    assert ffi.sizeof("dshm_stat_t") == 8 * len(fields)
    names = [f.split()[-1] for f in fields]
    assert all(n.startswith("st_") for n in names)
    # Database.stats() reports every field, under the name without st_.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with dbm_shm.open(os.path.join(d, "db"), "c") as db:
            # ... then the C fast path's counters (dbm_shm/_fastglue.py).
            assert list(db.stats()) == [n[3:] for n in names] + ["fast_gets", "fast_sets", "fast_fallbacks"]


ERROR_NAMES = ["DSHM_NOTFOUND", "DSHM_BAD_MAGIC", "DSHM_VERSION_MISMATCH", "DSHM_CORRUPT",
               "DSHM_READONLY", "DSHM_NEED_RECOVERY", "DSHM_FULL", "DSHM_TOOBIG", "DSHM_CLOSED",
               "DSHM_KEYEXIST", "DSHM_BUSY", "DSHM_INVALID", "DSHM_TRUNCATED"]


def test_error_codes_band_and_order():
    codes = [getattr(lib, n) for n in ERROR_NAMES]
    assert lib.DSHM_SUCCESS == 0
    assert codes == list(range(-31000, -31000 - len(codes), -1))
    assert lib.DSHM_LAST_ERRCODE == codes[-1]
    # clear of BerkeleyDB (-30800..-30999) and LMDB (-30779..-30799), and of -errno
    assert all(-31099 <= c <= -31000 for c in codes)


@pytest.mark.parametrize("name", ERROR_NAMES + ["DSHM_SUCCESS"])
def test_strerror_names_the_code(name):
    text = ffi.string(lib.dshm_strerror(getattr(lib, name))).decode()
    assert text.startswith(name + ": ")
    assert len(text) > len(name) + 5


@pytest.mark.parametrize("eno", [errno.ENOENT, errno.EACCES, errno.ENOSPC, errno.EISDIR])
def test_strerror_passes_errno_through(eno):
    assert ffi.string(lib.dshm_strerror(eno)).decode() == os.strerror(eno)
    assert ffi.string(lib.dshm_strerror(-eno)).decode() == os.strerror(eno)


def test_strerror_unknown_code_is_a_string():
    for rc in (lib.DSHM_LAST_ERRCODE - 1, -31099, -(1 << 30)):
        assert ffi.string(lib.dshm_strerror(rc))


def test_flag_bits():
    bits = [lib.DSHM_RDONLY, lib.DSHM_CREATE, lib.DSHM_TRUNC, lib.DSHM_SYNC]
    assert all(b and b & (b - 1) == 0 for b in bits), "each flag is one bit"
    assert len(set(bits)) == 4
    assert lib.DSHM_MAX_KEY >= (1 << 31) - 1
    assert lib.DSHM_MAX_VALUE >= 1 << 30


def test_c_api_round_trip(tmp_path):
    """The raw C API: open, put, get, count, del, close, and NULL-safety."""
    out = ffi.new("dshm_db **")
    path = os.fsencode(tmp_path / "raw")
    assert lib.dshm_open(path, lib.DSHM_CREATE, 0o600, out) == 0
    h = out[0]
    try:
        assert lib.dshm_put(h, b"k", 1, b"value", 5, 0) == 0
        assert lib.dshm_put(h, b"k", 1, b"other", 5, lib.DSHM_NOOVERWRITE) == lib.DSHM_KEYEXIST
        buf = ffi.new("char[]", 16)
        assert lib.dshm_get(h, b"k", 1, buf, 16) == 5
        assert ffi.unpack(buf, 5) == b"value"
        assert lib.dshm_get(h, b"k", 1, ffi.NULL, 0) == 5      # length only
        assert lib.dshm_get(h, b"k", 1, buf, 2) == 5           # too small: length reported
        assert lib.dshm_get(h, b"x", 1, buf, 16) == lib.DSHM_NOTFOUND
        assert lib.dshm_count(h) == 1
        assert lib.dshm_firstkey(h, buf, 16) == 1
        assert lib.dshm_nextkey(h, b"k", 1, buf, 16) == lib.DSHM_NOTFOUND
        assert lib.dshm_del(h, b"k", 1) == 0
        assert lib.dshm_del(h, b"k", 1) == lib.DSHM_NOTFOUND
        assert lib.dshm_firstkey(h, buf, 16) == lib.DSHM_NOTFOUND
        commit = ffi.new("uint64_t *")
        assert lib.dshm_commit_id(h, commit) == 0 and commit[0] >= 2
        assert lib.dshm_sync(h) == 0
        lib.dshm_close(h)
        assert lib.dshm_count(h) == lib.DSHM_CLOSED
        assert lib.dshm_put(h, b"k", 1, b"v", 1, 0) == lib.DSHM_CLOSED
        assert lib.dshm_get(h, b"k", 1, buf, 16) == lib.DSHM_CLOSED
        lib.dshm_close(h)   # twice is fine
    finally:
        lib.dshm_free(h)
    lib.dshm_close(ffi.NULL)
    lib.dshm_free(ffi.NULL)


def test_c_api_rejects_contradictory_flags(tmp_path):
    out = ffi.new("dshm_db **")
    path = os.fsencode(tmp_path / "raw")
    assert lib.dshm_open(path, lib.DSHM_RDONLY | lib.DSHM_CREATE, 0o600, out) == lib.DSHM_INVALID
    assert lib.dshm_open(path, 0x100, 0o600, out) == lib.DSHM_INVALID
    assert lib.dshm_open(ffi.NULL, lib.DSHM_CREATE, 0o600, out) == lib.DSHM_INVALID
    assert not os.path.exists(path)
    assert lib.dshm_open(path, 0, 0o600, out) == -errno.ENOENT
