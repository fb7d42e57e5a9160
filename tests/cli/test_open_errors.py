"""Write commands on a path they cannot open say what the OS said.

``set``, ``del``, ``reorganize``, ``shell`` and ``load`` on a directory, or
on a file the user may not write (or read), report ``PATH: open: <the OS's
words>`` (exit 3) as the read commands and the Python API do, never "not a
dbm_shm database".
"""

import io
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

dbm_shm = pytest.importorskip("dbm_shm")

#: (arguments before DB_FILE, arguments after it, standard input) of each write command.
WRITE_COMMANDS = {
    "set": (["set"], ["k", "v"], b""),
    "set -c": (["set", "-c"], ["k", "v"], b""),
    "del": (["del"], ["k"], b""),
    "reorganize": (["reorganize"], [], b""),
    "shell": (["shell"], [], b"count\n"),
    "load": (["load", "DUMP"], [], b""),
}


def _dump(directory):
    """A good one-record dump in ``directory``."""
    path = os.path.join(directory, "one.dump")
    src = os.path.join(directory, "src.shm")
    with dbm_shm.open(src, "c") as db:
        db[b"fresh"] = b"1"
    r = subprocess.run([sys.executable, "-m", "dbm_shm", "dump", src, path],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    return path


def _argv(name, db_path, dump_path):
    before, after, stdin = WRITE_COMMANDS[name]
    return [dump_path if a == "DUMP" else a for a in before] + [db_path] + after, stdin


@pytest.mark.parametrize("name", sorted(WRITE_COMMANDS))
def test_write_command_on_a_directory(tmp_path, name):
    target = tmp_path / "adir"
    target.mkdir()
    argv, stdin = _argv(name, str(target), _dump(str(tmp_path)))
    r = subprocess.run([sys.executable, "-m", "dbm_shm", *argv], input=stdin,
                       capture_output=True, cwd=tmp_path)
    assert r.returncode == 3
    line = r.stderr.decode().strip()
    command = argv[0]
    assert line == f"dbm-shm: {command}: {target}: open: Is a directory", line
    assert os.listdir(target) == []


def _as_nobody(argv, stdin):
    """Run the CLI's main(argv) in a forked child that dropped root for
    nobody (uid 65534); returns (exit status, stderr). Forked rather than
    exec'd: nobody may not be able to read this Python's files."""
    from dbm_shm.__main__ import main
    import dbm_shm._shell  # noqa: F401  (imported now: nobody may not read it later)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.dup2(w, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False))
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
            code = main(argv)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fp:
        err = fp.read()
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err.decode()


def _can_drop_root():
    return hasattr(os, "fork") and hasattr(os, "setuid") and os.geteuid() == 0


@pytest.fixture
def shared_dir():
    """A directory nobody can enter (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="dshm-open-errors-", dir="/dev/shm" if os.path.isdir(
        "/dev/shm") else None)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(not _can_drop_root() and os.geteuid() == 0,
                    reason="running as root without fork/setuid: root cannot be denied")
@pytest.mark.parametrize("mode", [0o444, 0o222, 0o000])
@pytest.mark.parametrize("name", sorted(WRITE_COMMANDS))
def test_write_command_on_a_file_it_may_not_write(shared_dir, name, mode):
    db_path = os.path.join(shared_dir, "prices.shm")
    with dbm_shm.open(db_path, "c") as db:
        db[b"k"] = b"v"
    dump_path = _dump(shared_dir)
    os.chmod(dump_path, 0o644)
    os.chmod(db_path, mode)
    before = open(db_path, "rb").read()
    argv, stdin = _argv(name, db_path, dump_path)
    if os.geteuid() == 0:
        code, err = _as_nobody(argv, stdin)
    else:
        r = subprocess.run([sys.executable, "-m", "dbm_shm", *argv], input=stdin,
                           capture_output=True)
        code, err = r.returncode, r.stderr.decode()
    assert code == 3, err
    assert err.strip() == f"dbm-shm: {argv[0]}: {db_path}: open: Permission denied"
    assert open(db_path, "rb").read() == before
