"""The dbm-shm command-line tool, run as a subprocess: ``python -m dbm_shm ...``.

Every command, the exit codes scripts rely on (0 ok, 1 key not found,
2 usage error, 3 database error), bad arguments (a clear message, a
non-zero exit, and the files byte-for-byte unchanged), interoperation with
the GNU gdbm tools, and a 100,000-key round trip through dump and load.
"""

import base64
import hashlib
import io
import json
import os
import pathlib
import pickle
import random
import shutil
import struct
import subprocess
import sys
import time

import pytest

dbm_shm = pytest.importorskip("dbm_shm")
from dbm_shm import _dumpfmt  # noqa: E402

GDBM_DUMP = shutil.which("gdbm_dump")
GDBM_LOAD = shutil.which("gdbm_load")
GNU_PY = next((exe for exe in (sys.executable, "/usr/bin/python3")
               if os.path.exists(exe) and subprocess.run(
                   [exe, "-c", "import dbm.gnu"], capture_output=True).returncode == 0),
              None)
needs_gdbm_tools = pytest.mark.skipif(
    not (GDBM_DUMP and GDBM_LOAD and GNU_PY),
    reason="needs gdbm_dump, gdbm_load and a Python with dbm.gnu")

COMMANDS = ["info", "list", "keys", "get", "set", "incr", "del", "delete", "count", "dump", "load",
            "convert", "reorganize", "recover", "check", "watch", "demo"]

SAMPLE = {
    b"alpha": b"1",
    b"beta": b"two",
    b"caf\xc3\xa9": "\u20ac5".encode(),
    b"\x00bin\xff": b"\x01\x02\x00",
    b"empty": b"",
    b"big": bytes(range(256)) * 40,
}


def run(*args, input=None, cwd=None, timeout=300, env=None):
    """Run the tool; return the CompletedProcess (stdout/stderr as bytes)."""
    cmd = [sys.executable, "-m", "dbm_shm", *map(os.fsdecode, args)]
    return subprocess.run(cmd, input=input, capture_output=True, cwd=cwd, timeout=timeout,
                          env=env)


def err_line(proc):
    """The tool's stderr as one line of text (and check it is one line)."""
    text = proc.stderr.decode()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, f"no message on stderr (exit {proc.returncode})"
    return lines[-1]


def digest(path):
    path = pathlib.Path(path)
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(path):
    with dbm_shm.open(str(path), "r") as db:
        return {k: db[k] for k in db.keys()}


def make_db(path, items=SAMPLE):
    with dbm_shm.open(str(path), "c") as db:
        for k, v in dict(items).items():
            db[k] = v
    return path


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "sample.shm")


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    # Run from a scratch directory so "-m dbm_shm" finds the installed package.
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------
# Help and usage


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    out = r.stdout.decode()
    for cmd in ("info", "list", "keys", "get", "set", "del", "count", "dump", "load",
                "convert", "reorganize", "check", "watch", "demo"):
        assert cmd in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert b"usage: dbm-shm " in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(b"dbm-shm ")


def test_no_command_is_a_usage_error():
    r = run()
    assert r.returncode == 2
    assert b"usage:" in r.stderr


def test_unknown_command():
    r = run("frobnicate", "x")
    assert r.returncode == 2
    assert b"invalid choice" in r.stderr


# ---------------------------------------------------------------------------
# Commands


def test_info(db):
    r = run("info", db)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "count:" in out
    assert "file_size:" in out


def test_info_json(db):
    r = run("info", "--json", db)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["count"] == len(SAMPLE)
    assert info["path"] == str(db)
    assert info["type"] == "dbm.shm"


def test_info_missing_file(tmp_path):
    missing = tmp_path / "nope.shm"
    r = run("info", missing)
    assert r.returncode == 3
    line = err_line(r)
    assert line.startswith("dbm-shm: info: ")
    assert "nope.shm" in line
    assert not missing.exists()


@pytest.mark.parametrize("command", ["list", "keys"])
def test_list(db, command):
    r = run(command, db)
    assert r.returncode == 0, r.stderr
    shown = set(r.stdout.splitlines())
    assert shown == {b"alpha", b"beta", "caf\u00e9".encode(), b"b'\\x00bin\\xff'", b"empty",
                     b"big"}


def test_list_values_sorted(db):
    r = run("list", "-v", "--sort", db)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    keys = [ln.split(b"\t")[0] for ln in lines]
    assert keys == [b"b'\\x00bin\\xff'", b"alpha", b"beta", b"big", "caf\u00e9".encode(),
                    b"empty"]
    assert b"alpha\t1" in lines
    assert b"empty\t" in lines


def test_list_hex_keys(db):
    r = run("list", "--key-format", "hex", "--sort", db)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == sorted(k.hex().encode() for k in SAMPLE)


def test_get(db):
    r = run("get", db, "beta")
    assert (r.returncode, r.stdout) == (0, b"two\n")
    r = run("get", db, "caf\u00e9")
    assert (r.returncode, r.stdout) == (0, "\u20ac5\n".encode())


def test_get_binary_key_and_raw_value(db):
    r = run("get", "--key-format", "hex", "--value-format", "raw", db, "0062696eff")
    assert (r.returncode, r.stdout) == (0, b"\x01\x02\x00")
    r = run("get", "--key-format", "hex", "--value-format", "hex", db, "0062696eff")
    assert r.stdout == b"010200\n"
    r = run("get", "--key-format", "hex", db, "0062696eff")
    assert r.stdout == b"b'\\x01\\x02\\x00'\n"


def test_get_missing_key_exits_1(db):
    r = run("get", db, "nope")
    assert r.returncode == 1
    assert r.stdout == b""
    assert err_line(r) == "dbm-shm: get: key not found: nope"


def test_set_and_get(db):
    r = run("set", db, "gamma", "3")
    assert r.returncode == 0, r.stderr
    assert contents(db)[b"gamma"] == b"3"
    r = run("set", db, "gamma", "three")  # replace
    assert r.returncode == 0
    assert contents(db)[b"gamma"] == b"three"


def test_set_value_file_and_stdin(db, tmp_path):
    blob = os.urandom(5000)
    f = tmp_path / "blob.bin"
    f.write_bytes(blob)
    assert run("set", db, "blob", "--value-file", f).returncode == 0
    assert contents(db)[b"blob"] == blob
    assert run("set", db, "blob2", "--value-file", "-", input=blob[::-1]).returncode == 0
    assert contents(db)[b"blob2"] == blob[::-1]


def test_set_needs_existing_db_unless_create(tmp_path):
    path = tmp_path / "new.shm"
    r = run("set", path, "k", "v")
    assert r.returncode == 3
    assert err_line(r).startswith("dbm-shm: set: ")
    assert not path.exists()
    r = run("set", "--create", path, "k", "v")
    assert r.returncode == 0, r.stderr
    assert contents(path) == {b"k": b"v"}


def test_struct_formats(tmp_path):
    path = tmp_path / "prices.shm"
    args = ("--key-format", "<I", "--value-format", "<dd")
    r = run("set", "-c", *args, path, "7", "101.5,102.25")
    assert r.returncode == 0, r.stderr
    assert contents(path) == {struct.pack("<I", 7): struct.pack("<dd", 101.5, 102.25)}
    r = run("get", *args, path, "7")
    assert r.stdout == b"101.5,102.25\n"
    r = run("list", "-v", *args, path)
    assert r.stdout == b"7\t101.5,102.25\n"
    r = run("dump", "--format", "jsonl", *args, path)
    assert json.loads(r.stdout) == {"key": 7, "value": [101.5, 102.25]}
    r = run("del", "--key-format", "<I", path, "7")
    assert r.returncode == 0
    assert contents(path) == {}


def test_json_and_pickle_formats(tmp_path):
    path = tmp_path / "obj.shm"
    r = run("set", "-c", "--value-format", "json", path, "cfg", '{"a": [1, 2]}')
    assert r.returncode == 0, r.stderr
    assert json.loads(contents(path)[b"cfg"]) == {"a": [1, 2]}
    r = run("set", "--value-format", "pickle", path, "obj", "{'x': (1, 2)}")
    assert r.returncode == 0, r.stderr
    assert pickle.loads(contents(path)[b"obj"]) == {"x": (1, 2)}
    r = run("get", "--value-format", "pickle", path, "obj")
    assert r.stdout == b"{'x': (1, 2)}\n"


def test_del(db):
    r = run("del", db, "alpha", "beta")
    assert r.returncode == 0, r.stderr
    left = contents(db)
    assert b"alpha" not in left and b"beta" not in left


def test_del_missing_key_exits_1(db):
    r = run("del", db, "alpha", "nope")
    assert r.returncode == 1
    assert err_line(r) == "dbm-shm: del: key not found: nope"
    assert b"alpha" not in contents(db)  # the present one is deleted
    r = run("del", "-f", db, "nope")
    assert r.returncode == 0


def test_count(db):
    r = run("count", db)
    assert (r.returncode, r.stdout) == (0, b"%d\n" % len(SAMPLE))


def test_dump_ascii_to_stdout(db):
    r = run("dump", db)
    assert r.returncode == 0, r.stderr
    reader = _dumpfmt.DumpReader(io.BytesIO(r.stdout))
    assert dict(reader) == SAMPLE
    assert reader.header["file"] == str(db)
    assert r.stdout.startswith(b"# GDBM dump file created by dbm_shm")


def test_dump_to_file_and_jsonl(db, tmp_path):
    out = tmp_path / "out.dump"
    r = run("dump", db, out)
    assert (r.returncode, r.stdout) == (0, b"")
    with open(out, "rb") as fp:
        assert dict(_dumpfmt.read_dump(fp)) == SAMPLE
    r = run("dump", "--format", "jsonl", db)
    assert r.returncode == 0
    assert dict(_dumpfmt.read_jsonl(io.BytesIO(r.stdout))) == SAMPLE
    first = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert {"key": "alpha", "value": "1"} in first
    assert {"key_b64": base64.b64encode(b"\x00bin\xff").decode(),
            "value": "\x01\x02\x00"} in first


def test_dump_empty_db(tmp_path):
    path = make_db(tmp_path / "empty.shm", {})
    r = run("dump", path)
    assert r.returncode == 0
    assert r.stdout.endswith(b"#:count=0\n# End of data\n")


@pytest.mark.parametrize("fmt", ["ascii", "jsonl"])
def test_load_into_new_db(db, tmp_path, fmt):
    dump = tmp_path / f"d.{fmt}"
    assert run("dump", "--format", fmt, db, dump).returncode == 0
    new = tmp_path / "new.shm"
    r = run("load", dump, new)  # format recognised
    assert r.returncode == 0, r.stderr
    assert contents(new) == SAMPLE


def test_load_from_stdin(db, tmp_path):
    data = run("dump", db).stdout
    new = tmp_path / "new.shm"
    r = run("load", "-", new, input=data)
    assert r.returncode == 0, r.stderr
    assert contents(new) == SAMPLE


def test_load_refuses_existing_keys_without_replace(db, tmp_path):
    dump = tmp_path / "d.dump"
    with open(dump, "wb") as fp:
        _dumpfmt.write_dump(fp, [(b"zzz", b"new"), (b"alpha", b"CHANGED")], filename="x")
    before = digest(db)
    r = run("load", dump, db)
    assert r.returncode == 3
    line = err_line(r)
    assert line.startswith("dbm-shm: load: 1 key(s) of the dump are already in")
    assert "alpha" in line and "--replace" in line
    assert digest(db) == before
    r = run("load", "--replace", dump, db)
    assert r.returncode == 0, r.stderr
    got = contents(db)
    assert got[b"alpha"] == b"CHANGED" and got[b"zzz"] == b"new"


def test_load_merges_new_keys(db, tmp_path):
    dump = tmp_path / "d.jsonl"
    dump.write_text('{"key": "new1", "value": "a"}\n{"key": "new2", "value": "b"}\n')
    r = run("load", dump, db)
    assert r.returncode == 0, r.stderr
    assert contents(db) == {**SAMPLE, b"new1": b"a", b"new2": b"b"}


def test_load_duplicate_keys_in_dump(tmp_path):
    dump = tmp_path / "d.jsonl"
    dump.write_text('{"key": "k", "value": "1"}\n{"key": "k", "value": "2"}\n')
    new = tmp_path / "new.shm"
    r = run("load", dump, new)
    assert r.returncode == 3
    assert "more than once" in err_line(r)
    assert not new.exists()
    r = run("load", "--replace", dump, new)
    assert r.returncode == 0
    assert contents(new) == {b"k": b"2"}


def test_load_malformed_dump_changes_nothing(db, tmp_path):
    good = run("dump", db).stdout
    lines = good.split(b"\n")
    # corrupt the base64 of the last record's value
    idx = max(i for i, ln in enumerate(lines) if ln and not ln.startswith(b"#"))
    lines[idx] = b"*" + lines[idx][1:]
    bad = tmp_path / "bad.dump"
    bad.write_bytes(b"\n".join(lines))
    before = digest(db)
    r = run("load", "--replace", bad, db)
    assert r.returncode == 3
    line = err_line(r)
    assert line.startswith(f"dbm-shm: load: {bad}: line {idx + 1}: "), line
    assert digest(db) == before
    new = tmp_path / "new.shm"
    r = run("load", bad, new)
    assert r.returncode == 3
    assert not new.exists()


def test_load_truncated_dump_changes_nothing(db, tmp_path):
    good = run("dump", db).stdout
    cut = tmp_path / "cut.dump"
    cut.write_bytes(good[: good.index(b"#:count=")])
    new = tmp_path / "new.shm"
    r = run("load", cut, new)
    assert r.returncode == 3
    assert "truncated" in err_line(r)
    assert not new.exists()


def test_load_not_a_dump(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    new = tmp_path / "new.shm"
    r = run("load", junk, new)
    assert r.returncode == 3
    assert "not a dump" in err_line(r)
    assert not new.exists()


def test_convert_from_dbm_dumb(tmp_path):
    src = tmp_path / "legacy"
    import dbm.dumb

    with dbm.dumb.open(str(src), "c") as d:
        for k, v in SAMPLE.items():
            d[k] = v
    dst = tmp_path / "converted.shm"
    r = run("convert", src, dst)
    assert r.returncode == 0, r.stderr
    assert contents(dst) == SAMPLE


def test_convert_from_gdbm(tmp_path):
    if not GNU_PY:
        pytest.skip("no Python with dbm.gnu to make a gdbm file")
    src = tmp_path / "gnu.db"
    code = ("import dbm.gnu, sys\n"
            "with dbm.gnu.open(sys.argv[1], 'n') as d:\n"
            "    d[b'a'] = b'1'\n    d[b'\\x00'] = b''\n")
    subprocess.run([GNU_PY, "-c", code, str(src)], check=True)
    dst = tmp_path / "converted.shm"
    r = run("convert", src, dst)
    try:
        import dbm.gnu  # noqa: F401
    except ImportError:
        # this interpreter cannot read gdbm files: a clear error, nothing made
        assert r.returncode == 3
        line = err_line(r)
        assert line.startswith("dbm-shm: convert: ") and "gnu" in line
        assert not dst.exists()
    else:
        assert r.returncode == 0, r.stderr
        assert contents(dst) == {b"a": b"1", b"\x00": b""}


def test_convert_from_dbm_shm(db, tmp_path):
    dst = tmp_path / "copy.shm"
    r = run("convert", db, dst)
    assert r.returncode == 0, r.stderr
    assert contents(dst) == SAMPLE


def test_convert_merge(db, tmp_path):
    src = tmp_path / "legacy"
    import dbm.dumb

    with dbm.dumb.open(str(src), "c") as d:
        d[b"alpha"] = b"from-src"
        d[b"extra"] = b"x"
    r = run("convert", "--merge", src, db)
    assert r.returncode == 0, r.stderr
    assert contents(db) == {**SAMPLE, b"alpha": b"from-src", b"extra": b"x"}


def test_reorganize(db):
    with dbm_shm.open(str(db), "w") as d:
        for i in range(2000):
            d[b"tmp%d" % i] = b"x" * 500
        for i in range(2000):
            del d[b"tmp%d" % i]
    r = run("reorganize", db)
    assert r.returncode == 0, r.stderr
    assert b"->" in r.stdout
    assert contents(db) == SAMPLE


def test_check(db):
    r = run("check", db)
    assert r.returncode == 0, r.stderr
    assert b"ok, %d records" % len(SAMPLE) in r.stdout


def test_check_not_a_database(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("not a database\n" * 100)
    before = digest(f)
    r = run("check", f)
    assert r.returncode == 3
    assert err_line(r).startswith("dbm-shm: check: ")
    assert digest(f) == before


def test_watch(db):
    cmd = [sys.executable, "-m", "dbm_shm", "watch", "--initial", "--timeout", "60",
           "--max-events", "3", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # --initial prints every key first, sorted and marked 'has' (not a
        # change): once they are out, watch is waiting
        initial = [proc.stdout.readline() for _ in SAMPLE]
        assert b"has alpha = 1\n" in initial
        assert all(line.startswith(b"has ") for line in initial), initial
        assert len(set(initial)) == len(SAMPLE)
        with dbm_shm.open(str(db), "w") as d:
            d[b"alpha"] = b"changed"
        time.sleep(0.3)
        with dbm_shm.open(str(db), "w") as d:
            d[b"fresh"] = b"new"
        time.sleep(0.3)
        with dbm_shm.open(str(db), "w") as d:
            del d[b"beta"]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # sorted: two changes that land between two polls come out in hash order
    assert sorted(out.splitlines()) == [b"del beta", b"set alpha = changed", b"set fresh = new"]


def test_watch_times_out_quietly(db):
    t0 = time.monotonic()
    r = run("watch", "--timeout", "0.5", db)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    assert time.monotonic() - t0 < 30


def test_demo():
    r = run("demo", "--seconds", "1", "--readers", "2", "--symbols", "10", timeout=180)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    out = r.stdout.decode()
    assert "writer" in out and "reader-1" in out and "reader-2" in out
    assert "ops/s" in out
    assert "0 torn, 0 out of order" in out


def test_demo_no_arguments_runs(tmp_path):
    r = run("demo", timeout=180)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert "reader-3" in r.stdout.decode()


def test_broken_pipe_is_quiet(tmp_path):
    path = make_db(tmp_path / "many.shm", {b"k%0100d" % i: b"v" for i in range(2000)})
    cmd = f"{sys.executable} -m dbm_shm list {path} | head -1"
    r = subprocess.run(cmd, shell=True, capture_output=True, timeout=120)
    assert r.stdout.startswith(b"k")
    assert b"Traceback" not in r.stderr


# ---------------------------------------------------------------------------
# Bad arguments: clear message, non-zero exit, files unchanged


def _bad_cases(tmp_path, db):
    other = make_db(tmp_path / "other.shm", {b"o": b"1"})
    text = tmp_path / "notes.txt"
    text.write_text("some text that is not a database\n")
    dump = tmp_path / "ok.dump"
    with open(dump, "wb") as fp:
        _dumpfmt.write_dump(fp, [(b"alpha", b"X")], filename="x")
    bad_dump = tmp_path / "bad.dump"
    bad_dump.write_bytes(dump.read_bytes().replace(b"#:len=1\nWA==", b"#:len=9\nWA=="))
    dumb = tmp_path / "legacy"
    import dbm.dumb

    with dbm.dumb.open(str(dumb), "c") as d:
        d[b"a"] = b"b"
    missing = tmp_path / "missing.shm"
    # (argv, expected exit, words in the message)
    return [
        (["set", db], 2, "the following arguments are required"),
        (["set", db, "k"], 2, "no value given: pass VALUE after KEY, or --value-file"),
        (["set", db, "k", "v", "--value-file", "-"], 2, "not both"),
        (["set", db, "k", "v", "--value-file", text], 2, "not both"),
        (["set", db, "k", "--value-file", tmp_path / "nofile"], 2, "cannot read value file"),
        (["set", "--value-format", "<I", db, "alpha", "lots"], 2, "not an integer"),
        (["set", "--value-format", "<I", db, "alpha", "-1"], 2, "cannot pack"),
        (["set", "--value-format", "<dd", db, "alpha", "1.0"], 2, "2 field"),
        (["set", "--value-format", "bogus", db, "alpha", "v"], 2, "unknown format"),
        (["set", "--key-format", "hex", db, "zz", "v"], 2, "not a hex string"),
        (["set", "--value-format", "json", db, "alpha", "{nope"], 2, "not valid JSON"),
        (["del", db], 2, "the following arguments are required"),
        (["del", "--key-format", "hex", db, "alpha"], 2, "not a hex string"),
        (["get", "--key-format", "<I", db, "x"], 2, "not an integer"),
        (["get", db, "k", "extra"], 2, "unrecognized arguments"),
        (["list", "--frobnicate", db], 2, "unrecognized arguments"),
        (["dump", db, db], 2, "the dump file is the database itself"),
        (["dump", db, other], 2, "refusing to overwrite"),
        (["dump", "--format", "xml", db], 2, "invalid choice"),
        (["dump", db, tmp_path / "nodir" / "out.dump"], 3, "does not exist"),
        (["load", db, db], 2, "same file"),
        (["load", db, dump], 2, "is a database, not a dump"),
        (["load", db, other], 2, "is a database, not a dump"),
        (["load", "--mode", "999", dump, db], 2, "bad --mode"),
        (["load", bad_dump, db], 3, "line 9"),
        (["load", dump, db], 3, "already in"),
        (["load", dump, text], 3, "not a dbm_shm database"),
        (["load", dump, dumb], 3, "refusing to load"),
        (["load", tmp_path / "nodump", db], 3, "No such file"),
        (["convert", dumb, db], 2, "exists; pass --merge"),
        (["convert", db, db], 2, "same file"),
        (["convert", text, missing], 3, "is not a database that the stdlib dbm recognises"),
        (["convert", tmp_path / "nosrc", missing], 3, "No such file"),
        (["set", text, "k", "v"], 3, "not a dbm_shm database"),
        (["set", dumb, "k", "v"], 3, "dbm.dumb"),
        (["del", text, "k"], 3, "not a dbm_shm database"),
        (["reorganize", text], 3, "not a dbm_shm database"),
        (["reorganize", missing], 3, "missing.shm"),
        (["info", text], 3, "notes.txt"),
        (["list", missing], 3, "missing.shm"),
        (["watch", "--timeout", "-1", db], 2, "must not be negative"),
        (["watch", "--timeout", "soon", db], 2, "invalid float value"),
        (["demo", "--seconds", "0"], 2, "--seconds must be positive"),
        (["demo", "--readers", "0"], 2, "--readers must be at least 1"),
        (["demo", "--path", db], 2, "exists"),
    ], [db, other, text, dump, bad_dump, dumb, pathlib.Path(str(dumb) + ".dat"), missing]


def test_bad_arguments_change_nothing(db, tmp_path):
    cases, files = _bad_cases(tmp_path, db)
    before = {f: digest(f) for f in files}
    failures = []
    for argv, code, words in cases:
        r = run(*argv)
        msg = r.stderr.decode()
        shown = " ".join(map(os.fsdecode, argv))
        if r.returncode != code:
            failures.append(f"{shown}: exit {r.returncode}, expected {code}: {msg!r}")
        elif words not in msg:
            failures.append(f"{shown}: message lacks {words!r}: {msg!r}")
        elif "Traceback" in msg:
            failures.append(f"{shown}: traceback: {msg}")
        elif code == 3:
            line = err_line(r)
            if not line.startswith(f"dbm-shm: {argv[0]}: ") or len(msg.strip().splitlines()) != 1:
                failures.append(f"{shown}: not a one-line 'dbm-shm: {argv[0]}: ' message: {msg!r}")
        after = {f: digest(f) for f in files}
        changed = [str(f) for f in files if after[f] != before[f]]
        if changed:
            failures.append(f"{shown}: changed {changed}")
            before = after
    assert not failures, "\n".join(failures)
    assert contents(db) == SAMPLE


# ---------------------------------------------------------------------------
# GNU gdbm interoperation through the tool


@needs_gdbm_tools
def test_our_dump_loads_into_gdbm(db, tmp_path):
    dump = tmp_path / "ours.dump"
    assert run("dump", db, dump).returncode == 0
    gdb = tmp_path / "gnu.db"
    r = subprocess.run([GDBM_LOAD, str(dump), str(gdb)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = ("import dbm.gnu, pickle, sys\n"
            "d = dbm.gnu.open(sys.argv[1], 'r')\n"
            "sys.stdout.buffer.write(pickle.dumps({k: d[k] for k in d.keys()}))\n")
    out = subprocess.run([GNU_PY, "-c", code, str(gdb)], capture_output=True, check=True)
    assert pickle.loads(out.stdout) == SAMPLE


@needs_gdbm_tools
def test_gdbm_dump_loads_into_ours(tmp_path):
    gdb = tmp_path / "gnu.db"
    code = ("import dbm.gnu, pickle, sys\n"
            "items = pickle.load(sys.stdin.buffer)\n"
            "with dbm.gnu.open(sys.argv[1], 'n') as d:\n"
            "    for k, v in items.items(): d[k] = v\n")
    subprocess.run([GNU_PY, "-c", code, str(gdb)], input=pickle.dumps(SAMPLE), check=True)
    dump = subprocess.run([GDBM_DUMP, str(gdb)], capture_output=True, check=True).stdout
    new = tmp_path / "from-gnu.shm"
    r = run("load", "-", new, input=dump)
    assert r.returncode == 0, r.stderr
    assert contents(new) == SAMPLE


# ---------------------------------------------------------------------------
# 100,000 binary keys through dump and load


@pytest.mark.parametrize("fmt", ["ascii", "jsonl"])
def test_round_trip_100k_binary(tmp_path, fmt):
    rnd = random.Random(1234)
    items = {}
    while len(items) < 100_000:
        key = rnd.randbytes(rnd.randint(1, 24))
        n = rnd.choice((0, 1, 3, 8, 16, 57, 100, 300))
        items[key] = rnd.randbytes(n)
    src = tmp_path / "src.shm"
    with dbm_shm.open(str(src), "n") as d:
        for k, v in items.items():
            d[k] = v
    dump = tmp_path / f"all.{fmt}"
    r = run("dump", "--format", fmt, src, dump)
    assert r.returncode == 0, r.stderr
    dst = tmp_path / "dst.shm"
    r = run("load", dump, dst)
    assert r.returncode == 0, r.stderr
    with dbm_shm.open(str(dst), "r") as d:
        assert len(d) == len(items)
        got = dict(d.iteritems())
    assert got == items
    r = run("count", dst)
    assert r.stdout == b"100000\n"


def test_incr(tmp_path):
    db = tmp_path / "c.shm"
    assert run("incr", db, "hits").returncode == 3           # no such file without --create
    assert run("incr", "--create", db, "hits").stdout == b"1\n"
    assert run("incr", db, "hits", "10").stdout == b"11\n"
    assert run("incr", db, "hits", "-3").stdout == b"8\n"
    assert run("get", db, "hits").stdout == b"8\n"
    assert run("set", db, "name", "bob").returncode == 0
    p = run("incr", db, "name")
    assert p.returncode == 3
    assert err_line(p).startswith("dbm-shm: incr: the value of b'name'"), err_line(p)
    assert "nothing was changed" in err_line(p)
    assert run("get", db, "name").stdout == b"bob\n"
    p = run("incr", db, "hits", "x")
    assert p.returncode == 2 and b"invalid int value" in p.stderr


def test_incr_from_many_processes(tmp_path):
    db = tmp_path / "c.shm"
    assert run("incr", "--create", db, "n", "0").stdout == b"0\n"
    procs = [subprocess.Popen([sys.executable, "-m", "dbm_shm", "incr", os.fsdecode(db), "n"],
                              stdout=subprocess.PIPE) for _ in range(8)]
    outs = sorted(int(p.communicate(timeout=120)[0]) for p in procs)
    assert outs == list(range(1, 9))                          # each saw its own increment
    assert run("get", db, "n").stdout == b"8\n"
