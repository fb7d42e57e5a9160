"""The shell on cmd.Cmd: completion of command names and keys, gdbmtool's
'?', 'help COMMAND', and history that never fails."""

import io
import os
import subprocess
import sys

import pytest

import dbm_shm
from dbm_shm import _shell
from dbm_shm._valuefmt import parse_value_format

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def db(tmp_path):
    with dbm_shm.open(str(tmp_path / "c.shm"), "c") as d:
        d.update({b"alpha": b"1", b"alps": b"2", b"beta": b"3", b"b c": b"4",
                  b"\x00\xff": b"5"})
        yield d


def shell(db, **kw):
    out, err = io.StringIO(), io.StringIO()
    return _shell.Shell(db, out, stderr=err, **kw), out, err


def test_is_a_cmd_Cmd(db):
    import cmd
    sh, _out, _err = shell(db)
    assert isinstance(sh, cmd.Cmd)


def test_completes_command_names(db):
    sh, _out, _err = shell(db)
    assert sh.completenames("f") == ["fetch", "first"]
    assert sh.completenames("re") == ["reorganize"]
    assert sh.completenames("") == [name for name, _a, _t in _shell.COMMANDS]
    assert sh.completenames("x") == []
    assert "EOF" not in sh.completenames("E")


def test_completes_keys(db):
    sh, _out, _err = shell(db)
    assert sh.complete_fetch("al", "fetch al", 6, 8) == ["alpha", "alps"]
    assert sh.complete_delete("be", "delete be", 7, 9) == ["beta"]
    every = sh.complete_next("", "next ", 5, 5)
    assert len(every) == 5 and {"alpha", "alps", "beta", "'b c'"} <= set(every)
    # a key with a space comes quoted, as the line must spell it
    assert sh.complete_fetch("b ", "fetch b ", 6, 8) == ["'b c'"]
    assert sh.complete_fetch("'b ", "fetch 'b ", 6, 9) == ["'b c'"]
    # store completes its key, not its value
    assert sh.complete_store("al", "store al", 6, 8) == ["alpha", "alps"]
    assert sh.complete_store("al", "store alpha al", 12, 14) == []
    # the command given by a unique prefix
    assert sh.completedefault("al", "fe al", 3, 5) == ["alpha", "alps"]
    assert sh.completedefault("al", "zz al", 3, 5) == []


def test_completes_keys_in_the_key_format(db):
    sh, _out, _err = shell(db, key_format=parse_value_format("hex"))
    assert sh.complete_fetch("00", "fetch 00", 6, 8) == ["00ff"]


def test_completes_the_flag_words_and_help_topics(db):
    sh, _out, _err = shell(db)
    assert sh.complete_export("t", "export f.dump t", 14, 15) == ["truncate"]
    assert sh.complete_import("", "import f.dump ", 14, 14) == ["replace"]
    assert sh.complete_import("x", "import x", 7, 8) == []
    assert sh.complete_help("st", "help st", 5, 7) == ["store", "status"]


def test_question_mark_lists_the_commands_as_gdbmtool(db):
    sh, out, err = shell(db)
    assert sh.onecmd("?") is False
    listing = out.getvalue()
    assert listing.splitlines()[0].startswith("fetch KEY")
    assert "export FILE [truncate]" in listing and "quit" in listing
    out.truncate(0), out.seek(0)
    sh.onecmd("help")
    assert out.getvalue() == listing
    assert err.getvalue() == ""


def test_help_command_describes_it(db):
    sh, out, err = shell(db)
    sh.onecmd("help fetch")
    assert out.getvalue() == _shell.Shell.do_fetch.__doc__ + "\n"
    out.truncate(0), out.seek(0)
    sh.onecmd("? exp")  # a prefix, after '?'
    assert out.getvalue().startswith("export FILE [truncate]: ")
    sh.onecmd("help bogus")
    assert err.getvalue() == "dbm-shm: shell: line 3: unknown command 'bogus' (type 'help')\n"
    assert sh.failed == 1


def test_every_command_has_help(db):
    sh, out, _err = shell(db)
    for name, synopsis, _text in _shell.COMMANDS:
        out.truncate(0), out.seek(0)
        sh.onecmd(f"help {name}")
        assert out.getvalue().startswith(f"{name} {synopsis}".rstrip() + ":"), name


def test_empty_line_does_not_repeat_the_last_command(db):
    sh, out, _err = shell(db)
    sh.onecmd("count")
    sh.onecmd("")
    sh.onecmd("   # a comment")
    assert out.getvalue() == "5\n"


def test_script_through_cmdloop(db):
    out, err = io.StringIO(), io.StringIO()
    code = _shell.run(db, stdin=io.StringIO("fe alpha\nstore k v\nfetch nope\nquit\ncount\n"),
                      stdout=out, stderr=err, interactive=False)
    assert code == 3
    assert out.getvalue() == "1\n"
    assert err.getvalue() == "dbm-shm: shell: line 3: no such key: nope\n"
    assert db[b"k"] == b"v"


def test_interactive_prompts_and_never_fails_the_exit(db):
    out, err = io.StringIO(), io.StringIO()
    code = _shell.run(db, stdin=io.StringIO("fetch nope\n?\n"), stdout=out, stderr=err,
                      interactive=True)
    assert code == 0
    assert out.getvalue().count(_shell.PROMPT) == 3
    assert "type 'help' or '?'" in out.getvalue()
    assert err.getvalue() == "dbm-shm: shell: no such key: nope\n"


@pytest.mark.parametrize("history", ["unwritable-home", "no-readline"])
def test_history_never_fails(tmp_path, history):
    """On a terminal (a pty), an unwritable history file or a Python
    without readline only lose the history."""
    import pty
    path = tmp_path / "h.shm"
    with dbm_shm.open(str(path), "c") as d:
        d[b"x"] = b"y"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TERM="dumb")
    env.pop("DBM_SHM_HISTORY", None)
    code = "import sys; from dbm_shm.__main__ import main; sys.exit(main(sys.argv[1:]))"
    if history == "no-readline":
        code = "import sys; sys.modules['readline'] = None; " + code
        env["HOME"] = str(tmp_path)
    else:
        env["DBM_SHM_HISTORY"] = str(tmp_path / "no-such-dir" / "history")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code, "shell", str(path)], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"fetch x\nquit\n")
        assert proc.wait(timeout=60) == 0
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = b"".join(chunks).decode()
    # (readline echoes the line after the prompt; without it the tty did)
    assert "dbm-shm> y\r\n" in text or "dbm-shm> fetch x\r\ny\r\n" in text, text
    assert "Traceback" not in text
    assert not (tmp_path / ".dbm_shm_history").exists() or history != "no-readline"
