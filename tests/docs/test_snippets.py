"""Every Python and shell example in README.md and docs/ runs, and prints what
the documentation says it prints.

One test case per code block, named after its file and the line of its
opening fence (``docs/faq.md:L42``). Each block runs in a subprocess whose
working directory is a fresh temporary directory; absolute ``/dev/shm/...``
paths in the block are rewritten into that directory, so no two examples see
each other's files.

The conventions, for whoever writes an example:

``python`` blocks
    Written to ``snippet.py`` and run as a script (so ``if __name__ ==
    "__main__":`` and ``multiprocessing`` work). Must exit 0. Its standard
    output must match the block's *output block*: a ``text`` fenced block
    that follows it, either directly (only blank lines between) or after one
    paragraph whose last line ends with ``prints:``. A block without an
    output block must print nothing.

``pycon`` blocks (and ``>>>`` blocks in ``.rst``)
    A doctest transcript: ``>>>``/``...`` lines are run, the lines after
    them are the expected output.

``console``, ``sh``, ``bash``, ``shell`` blocks
    Lines starting with ``$ `` are commands (a trailing backslash continues
    one on the next line); the lines after a command, up to the next ``$ ``,
    are its expected output (standard output and standard error together).
    Every command must exit 0: show a failure with ``; echo $?`` or ``||``.
    ``dbm-shm`` and ``python``/``python3`` run ``sys.executable`` (``-m
    dbm_shm``) with the package under test. A block without any ``$ `` line
    cannot run and fails unless it is marked to be skipped.

Everywhere, ``...`` in an expected output matches anything (doctest's
ELLIPSIS), trailing spaces and trailing blank lines are ignored, and the
temporary directory in the actual output reads as ``/dev/shm``.

Skipping
    ``<!-- snippet: skip (reason) -->`` on the line right before the opening
    fence (in ``.rst``: a comment ``.. snippet: skip (reason)`` as the last
    non-blank line before the ``.. code-block::``). Blocks that need
    ``dbm.gnu``, ``gdbm_dump``/``gdbm_load``/``gdbmtool``, ``jq`` or Django
    are skipped at run time when this machine lacks them.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

import dbm_shm

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20  # seconds per block

RUNNABLE = {
    "python": "python", "py": "python", "python3": "python",
    "pycon": "pycon",
    "console": "console", "sh": "console", "bash": "console",
    "shell": "console", "shell-session": "console",
}
SKIP_MD = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((.+)\)\s*-->\s*$")
SKIP_RST = re.compile(r"^\s*\.\.\s+snippet:\s*skip\s*\((.+)\)\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
OUTPUT_LANGS = {"text", "output"}
# Tools a block may need; it is skipped at run time where they are missing.
TOOLS = ("gdbm_dump", "gdbm_load", "gdbmtool", "jq")
NEEDS_GNU = re.compile(r"import\s+dbm\.gnu|from\s+dbm\s+import\s+gnu|dbm\.gnu\.open")
NEEDS_DJANGO = re.compile(r"^\s*(?:import\s+django\b|from\s+django[\s.])", re.M)


@dataclass
class Snippet:
    path: str                      # relative to the repository, e.g. docs/faq.md
    line: int                      # line of the opening fence, 1-based
    kind: str                      # python | pycon | console
    code: str
    expected: Optional[str] = None  # python: the output block, if any
    skip: Optional[str] = None     # the reason of a skip marker
    problems: List[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path}:L{self.line}"


# -- collecting ------------------------------------------------------------------

def _md_blocks(lines: List[str]):
    """(start index, info, body lines, end index) of every fenced block."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        body = []
        j = i + 1
        while j < len(lines):
            c = FENCE.match(lines[j])
            if c and c["fence"][0] == fence[0] and len(c["fence"]) >= len(fence) and not c["info"].strip():
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        yield i, info, body, j
        i = j + 1


def _lang(info: str) -> str:
    info = info.strip()
    if info.startswith("{"):           # MyST directive: {code-block} python
        m = re.match(r"\{(?:code-block|code|sourcecode)\}\s*(\S*)", info)
        return m.group(1).lower() if m else ""
    return info.split()[0].lower() if info else ""


def collect_md(rel: str, text: str) -> List[Snippet]:
    lines = text.splitlines()
    blocks = list(_md_blocks(lines))
    out = []
    used_as_output = set()
    for n, (start, info, body, end) in enumerate(blocks):
        lang = _lang(info)
        if start in used_as_output or lang not in RUNNABLE:
            continue
        s = Snippet(rel, start + 1, RUNNABLE[lang], "\n".join(body) + "\n")
        if start > 0:
            m = SKIP_MD.match(lines[start - 1])
            if m:
                s.skip = m.group(1).strip()
        if s.kind == "python" and n + 1 < len(blocks):
            nstart, ninfo, nbody, _ = blocks[n + 1]
            if _lang(ninfo) in OUTPUT_LANGS and _introduces_output(lines[end + 1:nstart]):
                s.expected = "\n".join(nbody)
                used_as_output.add(nstart)
        out.append(s)
    return out


def _introduces_output(between: List[str]) -> bool:
    """Blank lines only, or one paragraph whose last line ends with 'prints:'."""
    text = [ln.strip() for ln in between]
    while text and not text[-1]:
        text.pop()
    if not text:
        return True
    if "" in text[text.index(next(t for t in text if t)):]:
        return False      # more than one paragraph
    return text[-1].lower().endswith("prints:")


def collect_rst(rel: str, text: str) -> List[Snippet]:
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\.\s+(?:code-block|code|sourcecode)::\s*(\S*)", line)
        if m or re.match(r"^\s*>>> ", line):
            indent = len(line) - len(line.lstrip())
            if m:
                lang = (m.group(2) or "python").lower()
                j = i + 1
                body = []
                while j < len(lines) and (not lines[j].strip() or
                                          len(lines[j]) - len(lines[j].lstrip()) > indent):
                    body.append(lines[j])
                    j += 1
                body_text = textwrap.dedent("\n".join(
                    b for b in body if not re.match(r"^\s*:\w[\w-]*:", b))).strip("\n")
                if lang in ("python", "py", "python3") and body_text.lstrip().startswith(">>>"):
                    lang = "pycon"
            else:               # a doctest block: the paragraph
                j = i
                while j < len(lines) and lines[j].strip():
                    j += 1
                body_text = textwrap.dedent("\n".join(lines[i:j]))
                lang = "pycon"
            if lang in RUNNABLE:
                s = Snippet(rel, i + 1, RUNNABLE[lang], body_text + "\n")
                if s.kind == "python":
                    # The output: a ``.. code-block:: text`` right after it.
                    n = j
                    while n < len(lines) and not lines[n].strip():
                        n += 1
                    tm = re.match(r"^(\s*)\.\.\s+(?:code-block|code)::\s*text\s*$", lines[n]) \
                        if n < len(lines) else None
                    if tm and len(tm.group(1)) == indent:
                        e = n + 1
                        while e < len(lines) and (not lines[e].strip() or
                                                  len(lines[e]) - len(lines[e].lstrip()) > indent):
                            e += 1
                        s.expected = textwrap.dedent("\n".join(lines[n + 1:e])).strip("\n")
                        j = e
                k = i - 1
                while k >= 0 and not lines[k].strip():
                    k -= 1
                if k >= 0:
                    sm = SKIP_RST.match(lines[k])
                    if sm:
                        s.skip = sm.group(1).strip()
                out.append(s)
            i = max(j, i + 1)
            continue
        i += 1
    return out


def collect() -> List[Snippet]:
    files = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md")) + sorted((REPO / "docs").glob("*.rst"))
    out: List[Snippet] = []
    for f in files:
        if not f.exists():
            continue
        rel = f.relative_to(REPO).as_posix()
        text = f.read_text(encoding="utf-8")
        out += collect_rst(rel, text) if f.suffix == ".rst" else collect_md(rel, text)
    return out


# -- checking output ----------------------------------------------------------------

def normalize(text: str) -> str:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def matches(expected: str, actual: str) -> bool:
    """doctest's ELLIPSIS comparison, after normalizing whitespace at line ends."""
    return doctest._ellipsis_match(normalize(expected), normalize(actual))  # type: ignore[attr-defined]


def parse_console(code: str):
    """[(command, expected output)] of a console block; None if it has no '$ ' line."""
    cmds: List[list] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("$ ") or ln == "$":
            cmd = [ln[2:]]
            while cmd[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd.append(lines[i])
            cmds.append(["\n".join(cmd), []])
        elif cmds:
            cmds[-1][1].append(ln)
        elif ln.strip():
            return None       # output before any command
        i += 1
    if not cmds:
        return None
    return [(c, "\n".join(o)) for c, o in cmds]


# -- running -----------------------------------------------------------------------

def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    pkg_root = str(Path(dbm_shm.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    bindir = tmp.parent / (tmp.name + "-bin")
    bindir.mkdir(exist_ok=True)
    for name, args in (("dbm-shm", ' -m dbm_shm "$@"'), ("python", ' "$@"'), ("python3", ' "$@"')):
        p = bindir / name
        p.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args}\n')
        p.chmod(0o755)
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    env.pop("COLUMNS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _rewrite(text: str, tmp: Path) -> str:
    return text.replace("/dev/shm/", str(tmp) + "/")


def _unrewrite(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "/dev/shm")


def _need(s: Snippet) -> None:
    if s.kind == "console":
        for tool in TOOLS:
            if re.search(rf"(^|[\s|;&(]){re.escape(tool)}\b", s.code, re.M) and not shutil.which(tool):
                pytest.skip(f"{s.id}: needs {tool}, not installed here")
    if "fast_path" in s.code:
        import dbm_shm
        if not dbm_shm.fast_path_enabled():   # the snippets show it on (tox -e nofast turns it off)
            pytest.skip(f"{s.id}: shows the C fast path on, which this run turned off")
    if NEEDS_GNU.search(s.code):
        try:
            import dbm.gnu  # noqa: F401
        except ImportError:
            pytest.skip(f"{s.id}: needs dbm.gnu, which this interpreter lacks")
    if NEEDS_DJANGO.search(s.code):
        try:
            import django.core.cache  # noqa: F401
        except ImportError:
            pytest.skip(f"{s.id}: needs Django, not installed here (tox -e django runs it)")


def _fail(s: Snippet, what: str, expected: str, actual: str) -> None:
    pytest.fail(f"{s.id}: {what}\n--- expected ---\n{expected}\n--- actual ---\n{actual}", pytrace=False)


def run_python(s: Snippet, tmp: Path, env: dict) -> None:
    script = tmp / "snippet.py"
    script.write_text(_rewrite(s.code, tmp), encoding="utf-8")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=TIMEOUT)
    out = _unrewrite(p.stdout, tmp)
    if p.returncode != 0:
        _fail(s, f"exit status {p.returncode}", s.expected or "", out + _unrewrite(p.stderr, tmp))
    expected = s.expected if s.expected is not None else ""
    if not matches(expected, out):
        what = "printed output differs" if s.expected is not None else \
            "printed output, but no output block follows (add a ```text block after it)"
        _fail(s, what, expected, out)


_PYCON_DRIVER = """\
import doctest, sys
text = open(sys.argv[1], encoding="utf-8").read()
test = doctest.DocTestParser().get_doctest(text, {"__name__": "__main__"}, "snippet", "snippet", 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
sys.exit(1 if runner.failures or not test.examples else 0)
"""


def run_pycon(s: Snippet, tmp: Path, env: dict) -> None:
    (tmp / "snippet.txt").write_text(_rewrite(s.code, tmp), encoding="utf-8")
    (tmp.parent / (tmp.name + "-driver.py")).write_text(_PYCON_DRIVER)
    p = subprocess.run([sys.executable, str(tmp.parent / (tmp.name + "-driver.py")), "snippet.txt"],
                       cwd=tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    if p.returncode != 0:
        pytest.fail(f"{s.id}: transcript does not match\n{_unrewrite(p.stdout + p.stderr, tmp)}",
                    pytrace=False)


def run_console(s: Snippet, tmp: Path, env: dict) -> None:
    cmds = parse_console(s.code)
    if cmds is None:
        pytest.fail(f"{s.id}: a shell block without '$ ' command lines cannot run; prefix the "
                    "commands with '$ ' or mark it <!-- snippet: skip (reason) -->", pytrace=False)
    for cmd, expected in cmds:
        p = subprocess.run(["bash", "-o", "pipefail", "-c", _rewrite(cmd, tmp)], cwd=tmp, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=TIMEOUT)
        out = _unrewrite(p.stdout, tmp)
        if p.returncode != 0:
            _fail(s, f"`$ {cmd}` exited {p.returncode} (show failures with '; echo $?')", expected, out)
        if not matches(expected, out):
            _fail(s, f"`$ {cmd}` printed something else", expected, out)


SNIPPETS = collect()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.skip:
        pytest.skip(f"{snippet.id}: {snippet.skip}")
    _need(snippet)
    tmp = tmp_path / "cwd"
    tmp.mkdir()
    env = _env(tmp)
    {"python": run_python, "pycon": run_pycon, "console": run_console}[snippet.kind](snippet, tmp, env)


# -- the runner's own tests ------------------------------------------------------------

def test_collects_every_file():
    files = {s.path for s in SNIPPETS}
    assert "README.md" in files and "docs/index.md" in files


def test_output_block_conventions():
    md = textwrap.dedent("""\
        ```python
        print(1)
        ```

        It prints:

        ```text
        1
        ```

        <!-- snippet: skip (slow) -->
        ```sh
        pip install .
        ```

        ```console
        $ echo a; \\
          echo b
        a
        ...
        ```
        """)
    a, b, c = collect_md("x.md", md)
    assert (a.kind, a.expected, a.line) == ("python", "1", 1)
    assert (b.kind, b.skip) == ("console", "slow")
    assert parse_console(c.code) == [("echo a; \\\n  echo b", "a\n...")]
    assert matches("a\n...", "a\nb\n") and not matches("a\nc", "a\nb")
    assert matches("took ... s", "took 1.5 s  \n\n")


def test_rst_blocks():
    rst = textwrap.dedent("""\
        Text.

        .. snippet: skip (needs a db)

        .. code-block:: python

           db[b"k"] = b"v"

        >>> 1 + 1
        2
        """)
    a, b = collect_rst("x.rst", rst)
    assert (a.kind, a.skip, a.code) == ("python", "needs a db", 'db[b"k"] = b"v"\n')
    assert (b.kind, b.line) == ("pycon", 9)


def test_rst_output_block():
    rst = textwrap.dedent("""\
        .. code-block:: python

           print("hi")

        .. code-block:: text

           hi

        .. code-block:: python

           pass
        """)
    a, b = collect_rst("x.rst", rst)
    assert (a.kind, a.expected, a.line) == ("python", "hi", 1)
    assert (b.kind, b.expected, b.line) == ("python", None, 9)
