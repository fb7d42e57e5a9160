"""dbm-shm load: where the fast reader stops, the exact reader reads on from
the start of the chunk it did not give (not from the start of the dump),
with the same records and the same message, line number included, as a
record-by-record reading of the whole dump."""

import argparse
import io

import pytest

from dbm_shm import _dumpfmt, _dumpread
from dbm_shm.cli import dump as cli_dump

N = 400
ITEMS = [(b"key%05d" % i, b"value %d " % i * (i % 7 + 1)) for i in range(N)]


def _dump(**kw):
    out = io.BytesIO()
    _dumpfmt.write_dump(out, ITEMS, filename="x", gdbm_compat=False, **kw)
    return out.getvalue()


def _read(data, exact, monkeypatch):
    """(records, error message or None, the reader that gave the last chunk)."""
    monkeypatch.setattr(_dumpread, "FAST_CHUNK_BYTES", 2048)
    args = argparse.Namespace(key_format=None, value_format=None)
    got, reader = [], None
    try:
        for reader, keys, values in cli_dump._chunks(io.BytesIO(data), "ascii", args, exact):
            got += zip(keys, values)
    except _dumpfmt.DumpError as exc:
        return got, str(exc), reader
    except _dumpfmt.NotRegular:  # as cmd_load: all again, exactly
        assert not exact
        return _read(data, True, monkeypatch)
    return got, None, reader


def _lines(data):
    return data.split(b"\n")


def _corrupt(data, index, new):
    lines = _lines(data)
    lines[index] = new(lines[index])
    return b"\n".join(lines)


GOOD = _dump()
LAST_DATA = max(i for i, ln in enumerate(_lines(GOOD)) if ln and not ln.startswith(b"#"))
CASES = {
    "bad base64, last value": _corrupt(GOOD, LAST_DATA, lambda ln: b"!" + ln[1:]),
    "bad base64, middle": _corrupt(GOOD, LAST_DATA // 2 | 1, lambda ln: b"*" + ln[1:]),
    "short data, first chunk": _corrupt(GOOD, 7, lambda ln: ln[:-4]),
    "bad length": _corrupt(GOOD, LAST_DATA // 3 - 1, lambda ln: b"#:len=x"),
    "wrong count": GOOD.replace(b"#:count=%d" % N, b"#:count=%d" % (N + 1)),
    "truncated": GOOD[:GOOD.index(b"#:count=")],
    "key without a value": GOOD[:GOOD.rindex(b"#:len=")] + b"#:count=%d\n" % N,
    "comment between records": GOOD[:len(GOOD) // 2]
    + GOOD[len(GOOD) // 2:].replace(b"\n#:len=", b"\n# note\n#:len="),
    "crlf": GOOD.replace(b"\n", b"\r\n"),
    "good": GOOD,
}


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_reading_matches_the_exact_reading(case, monkeypatch):
    data = CASES[case]
    fast = _read(data, False, monkeypatch)
    exact = _read(data, True, monkeypatch)
    assert fast[1] == exact[1]  # the same message, the same line
    if case in ("good", "comment between records", "crlf"):
        assert fast[1] is None and fast[0] == exact[0] == ITEMS
    else:
        assert fast[1] is not None


@pytest.mark.parametrize("case", ["bad base64, last value", "wrong count", "comment between records"])
def test_the_exact_reader_starts_at_the_failing_chunk(case, monkeypatch):
    """The chunks before the mistake are not read again."""
    started = []

    class Spy(_dumpfmt.DumpReader):
        def __init__(self, fp, **kw):
            started.append((fp.tell(), kw.get("resume")))
            super().__init__(fp, **kw)

    monkeypatch.setattr(_dumpfmt, "DumpReader", Spy)
    _read(CASES[case], False, monkeypatch)
    [(at, resume)] = started
    assert resume is not None and at == resume.offset > len(CASES[case]) // 3
    assert resume.records > N // 4


def test_a_dump_without_a_header_is_refused_as_the_exact_reader_does(monkeypatch):
    body = GOOD[GOOD.index(b"#:len="):]
    fast = _read(body, False, monkeypatch)
    assert fast[1] == _read(body, True, monkeypatch)[1]
    assert "version" in fast[1]
