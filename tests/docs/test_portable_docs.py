"""The documentation reads the same on every machine, and MANIFEST.in says
nothing that matches nothing.

* No machine-specific absolute path (a home folder, ``/root``, ``/tmp/...``,
  the checkout's own folder) in README.md, CONTRIBUTING.md, CHANGELOG.md,
  benchmarks/README.md or docs/*.md / docs/*.rst: a reader has none of
  them. Stores in examples live in ``/dev/shm``; commands use paths relative
  to the checkout.
* No "issue N": the tracker those numbers point into is not one a reader
  can look up, so a page says what was done or meant instead.
* Every line of MANIFEST.in that adds files (``include``, ``graft``,
  ``recursive-include``) matches at least one file of the checkout. Lines
  that take files away (``exclude``, ``prune``, ``global-exclude``) are
  guards against files a build or a test run may leave behind, so they may
  match nothing in a clean checkout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]

PAGES = sorted(
    [REPO / n for n in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "benchmarks/README.md")]
    + list((REPO / "docs").glob("*.md"))
    + list((REPO / "docs").glob("*.rst")),
)

# An absolute path into a home folder, root's home, a temporary folder or a
# checkout's parent folder (/work/...); /tmp alone, /dev/shm and /usr/bin/...
# are the same everywhere.
MACHINE_PATH = re.compile(
    r"(?<![\w.~$/-])(?:/root\b|/home/\w|/Users/\w|/tmp/\w|/var/tmp/\w|/work/\w|~root/)"
)
ISSUE = re.compile(r"\bissues?\s+(?:no\.?\s*)?#?\d+|\bissue\s*#\d+|\B#\d{1,4}\b(?=[\s).,;:]|$)", re.I)


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _hits(pattern: "re.Pattern[str]", path: Path) -> List[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for m in pattern.finditer(line):
            out.append(f"{_rel(path)}:{n}: {m.group(0)!r} in {line.strip()[:120]!r}")
    return out


def test_pages_found() -> None:
    names = {_rel(p) for p in PAGES}
    assert {"README.md", "CHANGELOG.md", "docs/index.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_machine_specific_paths(page: Path) -> None:
    assert _hits(MACHINE_PATH, page) == []


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_issue_numbers(page: Path) -> None:
    assert _hits(ISSUE, page) == []


@pytest.mark.parametrize("text, bad", [
    ("see /root/.pyenv/versions/3.13.0/bin/python", True),
    ("python -m venv /tmp/venv3.13", True),
    ("from /work/main/.venv-bench/lib", True),
    ("in /home/alice/src", True),
    ("store at /dev/shm/prices.shm", False),
    ("`/usr/bin/python3` lacks the tests", False),
    ("from .venv-bench/lib/python3.11/site-packages", False),
    ("fresh venvs in /tmp, by default", False),
    ("PYTHONPATH=$PWD/tmp/x", False),
])
def test_machine_path_pattern(text: str, bad: bool) -> None:
    assert bool(MACHINE_PATH.search(text)) is bad


@pytest.mark.parametrize("text, bad", [
    ("the aims of issue 15", True),
    ("(issues 12 and 14)", True),
    ("Issue #7 says", True),
    ("fixed in #12.", True),
    ("an issue to file", False),
    ("[](benchmarks.md#batches-and-wake-ups)", False),
    ("color #fff and C# 12", False),
])
def test_issue_pattern(text: str, bad: bool) -> None:
    assert bool(ISSUE.search(text)) is bad


# -- MANIFEST.in ------------------------------------------------------------------

ADDING = {"include", "graft", "recursive-include"}
TAKING = {"exclude", "recursive-exclude", "global-include", "global-exclude", "prune"}


def _checkout_files() -> List[str]:
    skip = {".git", ".tox", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache"}
    out = []
    for p in REPO.rglob("*"):
        rel = p.relative_to(REPO)
        if p.is_file() and not (set(rel.parts[:-1]) & skip) and not rel.parts[0].startswith(".venv"):
            out.append(rel.as_posix())
    return out


def _glob_re(pattern: str) -> "re.Pattern[str]":
    """A distutils-style glob: ``*`` and ``?`` stay within one path part."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.index("]", i)
            out += pattern[i:j + 1]
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def _manifest_lines() -> List[str]:
    lines = []
    for raw in (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def test_manifest_lines_are_known_commands() -> None:
    for line in _manifest_lines():
        assert line.split()[0] in ADDING | TAKING, line


@pytest.mark.parametrize("line", [l for l in _manifest_lines() if l.split()[0] in ADDING])
def test_manifest_line_matches_files(line: str) -> None:
    files = _checkout_files()
    command, *args = line.split()
    unmatched = []
    if command == "include":
        unmatched = [a for a in args if not any(_glob_re(a).match(f) for f in files)]
    elif command == "graft":
        unmatched = [a for a in args if not any(f.startswith(a.rstrip("/") + "/") for f in files)]
    elif command == "recursive-include":
        folder, *patterns = args
        below = [f[len(folder.rstrip("/")) + 1:] for f in files if f.startswith(folder.rstrip("/") + "/")]
        unmatched = [p for p in patterns
                     if not any(_glob_re(p).match(b.rsplit("/", 1)[-1]) for b in below)]
    assert unmatched == [], f"MANIFEST.in: {line!r}: nothing matches {unmatched}"


def test_manifest_check_catches_a_dead_pattern() -> None:
    files = _checkout_files()
    assert not any(_glob_re("dbm_shm/*.h").match(f) for f in files)
    assert any(_glob_re("dbm_shm/*.pyi").match(f) for f in files)
    assert not any(_glob_re("*.md").match(f) for f in files if "/" in f)
