"""The shell (through a pseudo-terminal and through stdin), load's
all-or-nothing, progress without tqdm, and the messages of issue 14."""

import io
import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pytest

import dbm_shm
from dbm_shm import _dumpfmt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env(**extra):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(extra)
    return e


def cli(*args, input=None, python=sys.executable, **kw):
    return subprocess.run([python, "-m", "dbm_shm", *map(str, args)], input=input,
                          capture_output=True, env=env(**kw), timeout=300)


def make_db(path, items):
    with dbm_shm.open(str(path), "n") as db:
        db.update(items)


def contents(path):
    with dbm_shm.open(str(path), "r") as db:
        return dict(db.items())


def dump_bytes(items):
    buf = io.BytesIO()
    _dumpfmt.write_dump(buf, list(items), filename="x")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Messages


def test_set_without_value_names_the_missing_source(tmp_path):
    db = tmp_path / "m.db"
    make_db(db, {b"a": b"1"})
    r = cli("set", db, "k")
    assert r.returncode == 2
    assert b"no value given: pass VALUE after KEY, or --value-file FILE" in r.stderr
    assert contents(db) == {b"a": b"1"}


def test_set_value_after_value_format_and_dash_values(tmp_path):
    db = tmp_path / "m.db"
    make_db(db, {})
    assert cli("set", db, "k", "--value-format", "hex", "6869").returncode == 0
    assert cli("set", db, "neg", "-5").returncode == 0
    assert cli("set", db, "opt", "-abc").returncode == 0
    assert cli("set", db, "dd", "--", "--x").returncode == 0
    assert contents(db) == {b"k": b"hi", b"neg": b"-5", b"opt": b"-abc", b"dd": b"--x"}
    r = cli("set", db, "k", "a", "b")
    assert r.returncode == 2 and b"unrecognized arguments: b" in r.stderr


def _gdbm_file(tmp_path):
    if not shutil.which("gdbm_load"):
        pytest.skip("needs gdbm_load (apt-get install gdbmtool)")
    dump = tmp_path / "g.dump"
    dump.write_bytes(dump_bytes([(b"a", b"1"), (b"b", b"2")]))
    g = tmp_path / "g.gdbm"
    subprocess.run(["gdbm_load", str(dump), str(g)], check=True)
    return g


def test_convert_gdbm_without_dbm_gnu_names_the_alternative(tmp_path):
    g = _gdbm_file(tmp_path)
    # An interpreter without dbm.gnu: this one with the module blocked.
    code = ("import sys; sys.modules['dbm.gnu'] = None; sys.modules['_gdbm'] = None; "
            "from dbm_shm.cli import main; sys.exit(main(sys.argv[1:]))")
    new = tmp_path / "new.db"
    r = subprocess.run([sys.executable, "-c", code, "convert", str(g), str(new)],
                       capture_output=True, env=env(), timeout=60)
    assert r.returncode == 3, r.stderr
    msg = r.stderr.decode()
    assert "is a GNU gdbm database" in msg and "has no dbm.gnu module" in msg
    assert f"gdbm_dump {g} | dbm-shm load - {new}" in msg
    assert not new.exists()
    # ... and the alternative works.
    out = subprocess.run(["gdbm_dump", str(g)], capture_output=True, check=True).stdout
    assert cli("load", "-", new, input=out).returncode == 0
    assert contents(new) == {b"a": b"1", b"b": b"2"}


def test_gdbm_magic_detection(tmp_path):
    from dbm_shm._compat import is_gdbm_file
    g = _gdbm_file(tmp_path)
    assert is_gdbm_file(str(g))
    (tmp_path / "t").write_bytes(b"hello")
    assert not is_gdbm_file(str(tmp_path / "t"))


# ---------------------------------------------------------------------------
# load: all or nothing, fast and exact readers


ITEMS = [(b"k%05d" % i, b"v" * (i % 300)) for i in range(3000)]


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("damage", ["bad-base64-at-end", "wrong-count", "truncated"])
def test_malformed_dump_changes_nothing(tmp_path, existing, damage):
    raw = dump_bytes(ITEMS)
    if damage == "bad-base64-at-end":
        i = raw.rindex(b"#:len=")
        raw = raw[:i] + raw[i:].replace(b"dnZ2", b"d!Z2", 1)
        j = raw.rindex(b"\n#:len=")
        raw = raw[:j] + b"\n#:len=3\n!!!!" + raw[j:]
    elif damage == "wrong-count":
        raw = raw.replace(b"#:count=3000", b"#:count=3001")
    else:
        raw = raw[:-200]
    dump = tmp_path / "bad.dump"
    dump.write_bytes(raw)
    db = tmp_path / "t.db"
    if existing:
        make_db(db, {b"old": b"value"})
        before = db.read_bytes()
    r = cli("load", dump, db)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith(b"dbm-shm: load: ")
    if existing:
        assert contents(db) == {b"old": b"value"}
        assert db.read_bytes() == before
    else:
        assert not db.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["bad.dump"] + (["t.db"] if existing else []))


@pytest.mark.parametrize("existing", [False, True])
def test_load_fast_and_irregular_dumps(tmp_path, existing):
    raw = dump_bytes(ITEMS)
    # A comment between records and CRLF line ends: the exact reader's job.
    i = raw.index(b"\n#:len=", len(raw) // 2)
    variants = {"plain": raw, "comment": raw[:i] + b"\n# a comment" + raw[i:],
                "crlf": raw.replace(b"\n", b"\r\n")}
    for name, data in variants.items():
        db = tmp_path / f"{name}.db"
        if existing:
            make_db(db, {b"old": b"value"})
        r = cli("load", "-", db, input=data)
        assert r.returncode == 0, (name, r.stderr)
        want = dict(ITEMS)
        if existing:
            want[b"old"] = b"value"
        assert contents(db) == want, name


def test_fast_reader_matches_exact_reader_at_every_chunk_size():
    raw = dump_bytes(ITEMS + [(b"", b"e"), (b"z", b"")])
    want = list(_dumpfmt.read_dump(io.BytesIO(raw)))
    for size in (64, 1000, 4096, 1 << 22):
        reader = _dumpfmt.FastDumpReader(io.BytesIO(raw), chunk_bytes=size)
        got = [kv for keys, vals in reader for kv in zip(keys, vals)]
        assert got == want, size
        assert reader.header["version"] == "1.1"


def test_load_existing_store_refuses_clashes_and_duplicates(tmp_path):
    db = tmp_path / "t.db"
    make_db(db, {b"k00001": b"mine"})
    dump = tmp_path / "d.dump"
    dump.write_bytes(dump_bytes(ITEMS))
    r = cli("load", dump, db)
    assert r.returncode == 3 and b"already in" in r.stderr
    assert contents(db) == {b"k00001": b"mine"}
    dump.write_bytes(dump_bytes(ITEMS + [(b"k00002", b"again")]))
    r = cli("load", dump, tmp_path / "new.db")
    assert r.returncode == 3 and b"more than once" in r.stderr
    assert not (tmp_path / "new.db").exists()
    assert cli("load", "--replace", dump, db).returncode == 0
    assert contents(db)[b"k00002"] == b"again"


# ---------------------------------------------------------------------------
# Progress without tqdm


BLOCK_TQDM = ("import sys; sys.modules['tqdm'] = None; "
              "from dbm_shm.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["load", "convert", "check", "dump"])
def test_progress_without_tqdm_is_a_plain_meter(tmp_path, command):
    src = tmp_path / "src.db"
    make_db(src, dict(ITEMS))
    dump = tmp_path / "d.dump"
    dump.write_bytes(dump_bytes(ITEMS))
    argv = {"load": ["load", dump, tmp_path / "new.db"],
            "convert": ["convert", src, tmp_path / "conv.db"],
            "check": ["check", src],
            "dump": ["dump", src, tmp_path / "out.dump"]}[command]
    r = subprocess.run([sys.executable, "-c", BLOCK_TQDM, *map(str, argv), "--progress"],
                       capture_output=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    last = r.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"{command}: 3,000") and " records, " in last, r.stderr


# ---------------------------------------------------------------------------
# The shell through stdin


SCRIPT = """\
store a 1
store "b c" 'two words'
fetch a
fetch missing
list
count
first
next
export {dump}
delete a
import {dump}
import {dump} replace
count
bogus
quit
store never run
"""


def test_shell_script_on_stdin(tmp_path):
    db = tmp_path / "s.db"
    dump = tmp_path / "s.dump"
    r = cli("shell", "-c", db, input=SCRIPT.format(dump=dump).encode())
    assert r.returncode == 3  # a command failed, like gdbmtool
    out = r.stdout.decode()
    assert "dbm-shm>" not in out  # no prompts when not a terminal
    lines = out.splitlines()
    # 'first'/'next' walk the store's hash order, which the per-file random
    # hash seed makes differ from file to file: both records, in either order.
    assert sorted(lines[4:6]) == ["a\t1", "b c\ttwo words"]
    del lines[4:6]
    assert lines == [
        "1", "a\t1", "b c\ttwo words", "2",
        f"2 records exported to {dump}", f"2 records imported from {dump}", "2"]
    err = r.stderr.decode().splitlines()
    assert err == [
        "dbm-shm: shell: line 4: no such key: missing",
        f"dbm-shm: shell: line 11: {dump}: 1 key(s) exist already or repeat; nothing "
        "imported (use 'import FILE replace')",
        "dbm-shm: shell: line 14: unknown command 'bogus' (type 'help')"]
    assert contents(db) == {b"a": b"1", b"b c": b"two words"}
    assert not (tmp_path / "home").exists()


def test_shell_script_success_and_no_history(tmp_path):
    db = tmp_path / "s.db"
    make_db(db, {b"x": b"y"})
    home = tmp_path / "home"
    home.mkdir()
    r = cli("shell", db, input=b"fetch x\nhelp\n", HOME=str(home))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[0] == "y"
    assert "export FILE [truncate]" in r.stdout.decode()
    assert os.listdir(home) == []  # no history file from a script


def test_shell_read_only(tmp_path):
    db = tmp_path / "s.db"
    make_db(db, {b"x": b"y"})
    r = cli("shell", "-r", db, input=b"store x z\nfetch x\n")
    assert r.returncode == 3 and b"line 1:" in r.stderr
    assert r.stdout == b"y\n"


# ---------------------------------------------------------------------------
# The shell through a pseudo-terminal


def _read_until(fd, want, timeout=30.0):
    buf = b""
    end = time.monotonic() + timeout
    while want not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {want!r}; got {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_shell_on_a_terminal_edits_and_recalls_history(tmp_path):
    pytest.importorskip("readline")
    db = tmp_path / "t.db"
    home = tmp_path / "home"
    home.mkdir()
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dbm_shm", "shell", "-c", str(db)],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=env(HOME=str(home), TERM="xterm"), start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, b"dbm-shm> ")
        assert b"type 'help'" in out
        os.write(master, b"store k hello\r")
        _read_until(master, b"dbm-shm> ")
        os.write(master, b"fetch k\r")
        out = _read_until(master, b"dbm-shm> ")
        assert b"hello" in out
        os.write(master, b"fetch nope\r")  # an error: the session goes on
        out = _read_until(master, b"dbm-shm> ")
        assert b"no such key: nope" in out
        # Up arrow twice recalls 'fetch k'; Enter runs it again.
        os.write(master, b"\x1b[A\x1b[A\r")
        out = _read_until(master, b"dbm-shm> ")
        assert b"hello" in out
        # Line editing: type, move left, insert.
        os.write(master, b"fetch \x1b[D k\x1b[C\r")  # 'fetch  k' after the edit
        out = _read_until(master, b"dbm-shm> ")
        assert b"hello" in out
        os.write(master, b"quit\r")
        assert proc.wait(timeout=30) == 0  # interactive: errors do not fail the exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    history = (home / ".dbm_shm_history").read_text()
    assert "store k hello" in history and "fetch nope" in history
