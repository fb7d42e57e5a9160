"""Tests of dbm_shm._dumpfmt (the gdbm ASCII dump and JSON-lines formats) and dbm_shm._valuefmt (display formats).

The module is pure Python; it is loaded from its file so these tests run
without the compiled core. The cross-checks against GNU gdbm need the
Debian tools (gdbm_dump, gdbm_load) and a Python with dbm.gnu
(/usr/bin/python3 with python3-gdbm); they skip cleanly without them.
"""

import base64
import importlib.util
import io
import random
import json
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name):
    """dbm_shm.NAME; from its file alone when the package does not import
    (both modules are pure Python and import nothing from the core)."""
    try:  # the installed package, when it imports
        return importlib.import_module(f"dbm_shm.{name}")
    except Exception:
        pass
    spec = importlib.util.spec_from_file_location(
        f"_dbm_shm{name}_under_test", ROOT / "dbm_shm" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


df = _load("_dumpfmt")
vf = _load("_valuefmt")

GDBM_DUMP = shutil.which("gdbm_dump")
GDBM_LOAD = shutil.which("gdbm_load")


def _gnu_python():
    """An interpreter that has dbm.gnu (this one, or Debian's)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if exe and os.path.exists(exe):
            r = subprocess.run([exe, "-c", "import dbm.gnu"], capture_output=True)
            if r.returncode == 0:
                return exe
    return None


GNU_PY = _gnu_python()
needs_gdbm_tools = pytest.mark.skipif(
    not (GDBM_DUMP and GDBM_LOAD and GNU_PY),
    reason="needs gdbm_dump, gdbm_load and a Python with dbm.gnu")

# Keys and values chosen to hit the encoder's edges: empty, binary, every
# byte, lengths around the 57-byte (76-character) line boundary, long.
SAMPLE = {
    b"hello": b"world",
    b"\x00\x01\xff": b"\xfe\x00",
    b"empty-value": b"",
    b"": b"value-of-empty-key",
    b"every-byte": bytes(range(256)),
    b"k" * 100: b"v" * 1000,
    b"57": b"x" * 57,
    b"56": b"x" * 56,
    b"58": b"x" * 58,
    b"114": b"y" * 114,
    "caf\u00e9".encode(): "\u20ac \u4e2d\u6587".encode(),
    b"newline\nkey": b"line1\nline2\r\n",
    b"long": os.urandom(100_000),
}


def dump_bytes(items, **kw):
    kw.setdefault("filename", "test.db")
    buf = io.BytesIO()
    n = df.write_dump(buf, items, **kw)
    return buf.getvalue(), n


def read_all(data, **kw):
    return list(df.read_dump(io.BytesIO(data), **kw))


def gnu_write(path, items):
    """Create a GNU gdbm file holding items (through dbm.gnu)."""
    code = textwrap.dedent("""
        import dbm.gnu, pickle, sys
        items = pickle.load(sys.stdin.buffer)
        with dbm.gnu.open(sys.argv[1], "n") as db:
            for k, v in items:
                db[k] = v
    """)
    subprocess.run([GNU_PY, "-c", code, str(path)], input=pickle.dumps(list(items)),
                   check=True)


def gnu_read(path):
    """Return the contents of a GNU gdbm file as a dict, in gdbm order too."""
    code = textwrap.dedent("""
        import dbm.gnu, pickle, sys
        out = []
        with dbm.gnu.open(sys.argv[1], "r") as db:
            k = db.firstkey()
            while k is not None:
                out.append((k, db[k]))
                k = db.nextkey(k)
        sys.stdout.buffer.write(pickle.dumps(out))
    """)
    r = subprocess.run([GNU_PY, "-c", code, str(path)], capture_output=True, check=True)
    return pickle.loads(r.stdout)


# ---------------------------------------------------------------------------
# Round trips through our own writer and reader


def test_round_trip_sample():
    data, n = dump_bytes(SAMPLE.items())
    assert n == len(SAMPLE)
    assert dict(read_all(data)) == SAMPLE


@pytest.mark.parametrize("compat", [True, False])
def test_round_trip_both_modes(compat):
    data, _ = dump_bytes(SAMPLE.items(), gdbm_compat=compat)
    assert dict(read_all(data)) == SAMPLE


def test_round_trip_preserves_order_without_empties():
    items = [(b"%d" % i, b"v%d" % i) for i in range(50)]
    data, _ = dump_bytes(items)
    assert read_all(data) == items


def test_empty_database():
    data, n = dump_bytes([])
    assert n == 0
    assert read_all(data) == []
    assert data.decode().splitlines()[-2:] == ["#:count=0", "# End of data"]


def test_header_lines():
    data, _ = dump_bytes([(b"a", b"b")], filename="dir/x.db", mode=0o640, uid=0, gid=0,
                         user="root", group="wheel", created_by="dbm_shm 1.0",
                         timestamp=0)
    lines = data.decode().splitlines()
    assert lines[0].startswith("# GDBM dump file created by dbm_shm 1.0 on ")
    assert lines[1:6] == [
        "#:version=1.1",
        "#:file=dir/x.db",
        "#:uid=0,user=root,gid=0,group=wheel,mode=640",
        "#:format=standard",
        "# End of header",
    ]
    assert lines[6:] == ["#:len=1", "YQ==", "#:len=1", "Yg==", "#:count=1", "# End of data"]


def test_header_parsed_by_reader():
    data, _ = dump_bytes([(b"a", b"b")], filename="x,y.db", mode=0o600, uid=7, gid=8,
                         user="", group="")
    r = df.DumpReader(io.BytesIO(data))
    assert list(r) == [(b"a", b"b")]
    assert r.header["file"] == "x,y.db"
    assert r.header["uid"] == "7" and r.header["gid"] == "8"
    assert "user" not in r.header and "group" not in r.header
    assert r.header["mode"] == "600"
    assert r.header["version"] == "1.1"
    assert r.count == 1 and r.trailer_count == 1


def test_filename_that_cannot_be_written():
    with pytest.raises(ValueError):
        dump_bytes([], filename="a\nb")


def test_base64_lines_are_76_wide():
    data, _ = dump_bytes([(b"k", os.urandom(10_000))])
    body = [ln for ln in data.decode().splitlines() if not ln.startswith("#")]
    assert all(len(ln) <= df.GDBM_LINE_LEN for ln in body)
    assert sum(len(ln) == df.GDBM_LINE_LEN for ln in body) == len(body) - 2  # 'k' + tail


def test_text_file_objects():
    buf = io.StringIO()
    df.write_dump(buf, SAMPLE.items(), filename="t.db")
    text = buf.getvalue()
    assert dict(df.read_dump(io.StringIO(text))) == SAMPLE


def test_writer_accepts_bytes_like_and_rejects_str():
    data, _ = dump_bytes([(bytearray(b"k"), memoryview(b"v"))])
    assert read_all(data) == [(b"k", b"v")]
    with pytest.raises(TypeError):
        dump_bytes([("k", b"v")])


def test_writer_streams_a_generator_and_reports_progress():
    seen = []

    def gen():
        for i in range(2500):
            yield b"%05d" % i, b"x"

    data, n = dump_bytes(gen(), progress=seen.append, count=2500)
    assert n == 2500 and sum(seen) == 2500
    assert len(read_all(data)) == 2500


def test_reader_streams():
    """Records come out before the reader reaches a problem further on."""
    data, _ = dump_bytes([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    broken = data.replace(b"#:len=1\nYw==", b"#:len=1\n!!!!")
    it = df.read_dump(io.BytesIO(broken))
    assert next(it) == (b"a", b"1")
    assert next(it) == (b"b", b"2")
    with pytest.raises(df.DumpError):
        list(it)


def test_megabyte_value():
    big = os.urandom(3 << 20)
    data, _ = dump_bytes([(b"big", big), (b"small", b"s")])
    assert dict(read_all(data)) == {b"big": big, b"small": b"s"}


# ---------------------------------------------------------------------------
# The gdbm_compat workaround


def test_compat_writes_blank_line_after_empty_datum():
    items = [(b"a", b"1"), (b"b", b""), (b"c", b"3")]
    data, _ = dump_bytes(items)
    assert b"#:len=1\nYg==\n#:len=0\n\n#:len=1\nYw==\n" in data
    plain, _ = dump_bytes(items, gdbm_compat=False)
    assert b"#:len=1\nYg==\n#:len=0\n#:len=1\nYw==\n" in plain
    assert read_all(data) == read_all(plain) == items


def test_compat_holds_back_empty_records_until_a_full_one():
    items = [(b"", b"x"), (b"a", b""), (b"", b""), (b"k", b"v"), (b"z", b"")]
    data, n = dump_bytes(items)
    out = read_all(data)
    assert n == 5
    assert out[0] == (b"k", b"v")
    assert sorted(out) == sorted(items)
    # without compat the order is kept
    assert read_all(dump_bytes(items, gdbm_compat=False)[0]) == items


def test_compat_only_empty_records():
    items = [(b"", b""), (b"a", b"")]
    data, _ = dump_bytes(items)
    assert read_all(data) == items


# ---------------------------------------------------------------------------
# Malformed dumps: a DumpError (ValueError) that names the line

GOOD = (
    "# GDBM dump file created by test\n"   # 1
    "#:version=1.1\n"                      # 2
    "#:file=t.db\n"                        # 3
    "#:format=standard\n"                  # 4
    "# End of header\n"                    # 5
    "#:len=1\n"                            # 6
    "YQ==\n"                               # 7
    "#:len=2\n"                            # 8
    "YWI=\n"                               # 9
    "#:count=1\n"                          # 10
    "# End of data\n"                      # 11
)


def test_good_fixture_reads():
    assert list(df.read_dump(io.StringIO(GOOD))) == [(b"a", b"ab")]


@pytest.mark.parametrize("text, lineno, words", [
    ("", None, "empty file"),
    ("hello\n", 1, "not a gdbm ASCII dump"),
    ('{"key": "a", "value": "b"}\n', 1, "not a gdbm ASCII dump"),
    ("!\r\n! GDBM FLAT FILE DUMP -- THIS IS NOT A TEXT FILE\r\n", 1, "binary gdbm dump"),
    ("VERSION=3\nHEADER=END\n", 1, "Berkeley DB"),
    (GOOD.replace("#:len=2\n", "#:len=x2\n"), 8, "bad length"),
    (GOOD.replace("#:len=2\n", "#:len=3\n"), 8, "'#:len=3' but the data decodes to 2"),
    (GOOD.replace("#:len=2\n", "#:len=7\n"), 8, "needs 12 base64 characters but 4"),
    (GOOD.replace("YWI=\n", "YW*=\n"), 9, "invalid base64"),
    (GOOD.replace("YWI=\n", "Y=I=\n"), 9, "invalid base64"),
    (GOOD.replace("#:len=2\nYWI=\n", "#:len=3\nYQ=\na\n"), 8, "bad base64"),
    (GOOD.replace("#:count=1\n", "#:count=2\n"), None, "'#:count=2' but the dump holds 1"),
    (GOOD.replace("#:count=1\n", "#:count=one\n"), 10, "bad record count"),
    (GOOD.replace("#:len=2\nYWI=\n", ""), 8, "key without a value before '#:count='"),
    (GOOD.replace("# End of header\n", "# End of header\nYQ==\n"), 6, "before the first"),
    (GOOD.replace("#:version=1.1\n", ""), 1, "no '#:version=' header"),
    (GOOD.replace("#:version=1.1\n", "#:version=2.0\n"), None, "unsupported dump version"),
    (GOOD.replace("#:file=t.db\n", "#:file\n"), 3, "malformed parameter"),
    (GOOD.replace("#:file=t.db\n", '#:file="t.db\n'), 3, "unterminated quoted value"),
    (GOOD.replace("# End of data\n", "#:len=1\nYQ==\n"), 11, "after the '#:count=' trailer"),
    (GOOD.replace("# End of data\n", "junk\n"), 11, "after the '#:count=' trailer"),
    (GOOD.replace("YWI=\n", "YWI=\n# a comment\nYQ==\n"), 11, "without a '#:len=' line"),
    (GOOD.split("#:count")[0], 9, "no '#:count=' trailer after 1 records"),
    (GOOD.split("#:len=2")[0], 7, "key without a value at end of file"),
    (GOOD.replace("YWI=", "YW\u00e9="), 9, "non-ASCII"),
])
def test_malformed(text, lineno, words):
    with pytest.raises(df.DumpError) as info:
        list(df.read_dump(io.StringIO(text)))
    err = info.value
    assert isinstance(err, ValueError)
    assert words in str(err), str(err)
    assert err.lineno == lineno, str(err)
    if lineno:
        assert str(err).startswith(f"line {lineno}: ")


def test_malformed_bytes_input_same_as_text():
    text = GOOD.replace("#:len=2\n", "#:len=3\n")
    with pytest.raises(df.DumpError, match="^line 8: "):
        list(df.read_dump(io.BytesIO(text.encode())))


def test_not_strict_accepts_what_gdbm_load_accepts():
    no_trailer = GOOD.split("#:count")[0]
    no_version = GOOD.replace("#:version=1.1\n", "")
    for text in (no_trailer, no_version):
        assert list(df.read_dump(io.StringIO(text), strict=False)) == [(b"a", b"ab")]


def test_reader_tolerates_crlf_comments_and_blank_lines():
    text = GOOD.replace("\n", "\r\n").replace("#:len=2", "# note\r\n#:len=2")
    assert list(df.read_dump(io.StringIO(text))) == [(b"a", b"ab")]


def test_reader_accepts_any_line_width():
    value = os.urandom(500)
    b64 = base64.b64encode(value).decode()
    lines = "\n".join(b64[i:i + 10] for i in range(0, len(b64), 10))
    text = GOOD.replace("#:len=2\nYWI=", f"#:len=500\n{lines}")
    assert list(df.read_dump(io.StringIO(text))) == [(b"a", value)]


def test_quoted_and_spaced_parameters():
    text = GOOD.replace("#:file=t.db", '#:file="a, b.db", format=standard')
    r = df.DumpReader(io.StringIO(text))
    list(r)
    assert r.header["file"] == "a, b.db"


def test_detect_format():
    assert df.detect_format(b"# GDBM dump") == "ascii"
    assert df.detect_format(b'{"key":') == "jsonl"
    assert df.detect_format(b"\xef\xbb\xbf{") == "jsonl"
    assert df.detect_format(b"!\r\n! GDBM") == "gdbm-binary"
    assert df.detect_format(b"SQLite format 3\0") is None


# ---------------------------------------------------------------------------
# Against the real GNU tools


def _ordered_sample():
    # gdbm_dump lists records in gdbm's hash order; build the reference the
    # same way so the files can be compared line by line.
    return [(k, v) for k, v in SAMPLE.items() if k != b"long"] + [(b"long", SAMPLE[b"long"])]


@needs_gdbm_tools
def test_gdbm_dump_is_read_by_our_reader(tmp_path):
    db = tmp_path / "gnu.db"
    gnu_write(db, SAMPLE.items())
    dump = tmp_path / "gnu.dump"
    subprocess.run([GDBM_DUMP, str(db), str(dump)], check=True)
    with open(dump, "rb") as fp:
        r = df.DumpReader(fp)
        got = list(r)
    assert dict(got) == SAMPLE
    assert len(got) == len(SAMPLE)
    assert r.header["file"] == str(db)
    assert r.header["format"] == "standard"
    assert r.trailer_count == len(SAMPLE)


@needs_gdbm_tools
def test_gdbm_dump_to_stdout_is_read_by_our_reader(tmp_path):
    db = tmp_path / "gnu.db"
    items = {b"k%d" % i: os.urandom(i % 300) for i in range(2000)}
    gnu_write(db, items.items())
    out = subprocess.run([GDBM_DUMP, str(db)], capture_output=True, check=True).stdout
    assert dict(read_all(out)) == items


@needs_gdbm_tools
@pytest.mark.parametrize("with_empties", [False, True])
def test_plain_mode_is_byte_identical_to_gdbm_dump(tmp_path, with_empties):
    items = dict(SAMPLE) if with_empties else {
        k: v for k, v in SAMPLE.items() if k and v}
    db = tmp_path / "gnu.db"
    gnu_write(db, items.items())
    os.chmod(db, 0o640)
    dump = tmp_path / "gnu.dump"
    subprocess.run([GDBM_DUMP, str(db), str(dump)], check=True)
    theirs = dump.read_bytes()
    st = os.stat(db)
    ours, _ = dump_bytes(gnu_read(db), filename=str(db), mode=st.st_mode & 0o777,
                         uid=st.st_uid, gid=st.st_gid, gdbm_compat=False)
    # only the creator comment (program and date) may differ
    assert ours.split(b"\n", 1)[1] == theirs.split(b"\n", 1)[1]


@needs_gdbm_tools
@pytest.mark.parametrize("items", [
    pytest.param(list(SAMPLE.items()), id="sample"),
    pytest.param([(b"", b""), (b"a", b""), (b"", b"x"), (b"k", b"v"), (b"b", b"")],
                 id="empties-first"),
    pytest.param([(b"\x00" * i, os.urandom(i * 7)) for i in range(1, 300)], id="binary"),
])
def test_our_dump_loads_with_gdbm_load(tmp_path, items):
    # dict semantics: a repeated key keeps its last value
    expected = dict(items)
    items = list(expected.items())
    dump = tmp_path / "ours.dump"
    with open(dump, "wb") as fp:
        df.write_dump(fp, items, filename=str(tmp_path / "from-header.db"), mode=0o600)
    db = tmp_path / "loaded.db"
    r = subprocess.run([GDBM_LOAD, str(dump), str(db)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert dict(gnu_read(db)) == expected


@needs_gdbm_tools
def test_gdbm_load_uses_header_filename_and_mode(tmp_path):
    target = tmp_path / "named-in-header.db"
    dump = tmp_path / "ours.dump"
    with open(dump, "wb") as fp:
        df.write_dump(fp, [(b"a", b"b")], filename=str(target), mode=0o640)
    subprocess.run([GDBM_LOAD, str(dump)], check=True, cwd=tmp_path)
    assert dict(gnu_read(target)) == {b"a": b"b"}
    assert os.stat(target).st_mode & 0o777 == 0o640


@needs_gdbm_tools
def test_full_round_trip_through_gnu(tmp_path):
    """ours -> gdbm_load -> gdbm file -> gdbm_dump -> ours."""
    items = {os.urandom(8): os.urandom(n) for n in (0, 1, 2, 3, 57, 58, 1000, 70_000)}
    items[b"text"] = b"plain"
    dump1 = tmp_path / "1.dump"
    with open(dump1, "wb") as fp:
        df.write_dump(fp, items.items(), filename="x.db")
    db = tmp_path / "x.db"
    subprocess.run([GDBM_LOAD, str(dump1), str(db)], check=True)
    out = subprocess.run([GDBM_DUMP, str(db)], capture_output=True, check=True).stdout
    assert dict(read_all(out)) == items


# ---------------------------------------------------------------------------
# Value formats


def fmt(spec):
    return vf.parse_value_format(spec)


def test_auto_format():
    f = fmt(None)
    assert f.display(b"hello") == b"hello"
    assert f.display("caf\u00e9".encode()) == "caf\u00e9".encode()
    assert f.display(b"\x00\xff") == b"b'\\x00\\xff'"
    assert f.display(b"two\nlines") == b"b'two\\nlines'"
    assert f.display(b"b'looks like bytes'") == b"b\"b'looks like bytes'\""
    assert f.parse("caf\u00e9") == "caf\u00e9".encode()
    assert f.parse(os.fsdecode(b"\xff")) == b"\xff"  # surrogateescape from argv


def test_raw_utf8_hex_formats():
    assert fmt("raw").display(b"\x00\n") == b"\x00\n"
    assert fmt("utf-8").display(b"a\xffb") == b"a\\xffb"
    assert fmt("UTF8").parse("\u20ac") == "\u20ac".encode()
    assert fmt("hex").display(b"\x00\xab") == b"00ab"
    assert fmt("hex").parse("00AB") == b"\x00\xab"
    assert fmt("hex").parse("0x00ab") == b"\x00\xab"
    with pytest.raises(ValueError, match="not a hex string"):
        fmt("hex").parse("xyz")


def test_json_format():
    f = fmt("json")
    assert f.parse('{"a": 1}') == b'{"a": 1}'
    assert f.display(b'{"a":1}') == b'{"a": 1}'
    assert f.display(b"not json") == b"not json"
    with pytest.raises(ValueError, match="not valid JSON"):
        f.parse("{a: 1}")
    assert f.to_json(b'[1, 2]') == [1, 2]
    assert f.from_json({"x": [1]}) == b'{"x":[1]}'


def test_pickle_format():
    f = fmt("pickle")
    assert pickle.loads(f.parse("(1, 'a')")) == (1, "a")
    assert pickle.loads(f.parse("plain words")) == "plain words"
    assert f.display(pickle.dumps({"a": 1})) == b"{'a': 1}"
    assert f.display(b"\x00garbage") == b"b'\\x00garbage'"


def test_struct_format():
    f = fmt("<dd")
    packed = f.parse("101.5,102")
    assert packed == struct.pack("<dd", 101.5, 102.0)
    assert f.parse("101.5 102") == packed
    assert f.display(packed) == b"101.5,102.0"
    assert f.to_json(packed) == [101.5, 102.0]
    assert f.from_json([101.5, 102]) == packed
    assert f.display(b"short") == b"short"  # wrong size: shown as is
    with pytest.raises(ValueError, match="2 field"):
        f.parse("1")
    with pytest.raises(ValueError, match="not a number"):
        f.parse("1,abc")
    i = fmt("<I")
    assert i.parse("0x10") == struct.pack("<I", 16)
    assert i.display(struct.pack("<I", 7)) == b"7"
    assert i.to_json(struct.pack("<I", 7)) == 7
    with pytest.raises(ValueError, match="cannot pack"):
        i.parse("-1")
    s = fmt("<I8s?")
    packed = s.parse("3,abc,true")
    assert struct.unpack("<I8s?", packed) == (3, b"abc" + b"\0" * 5, True)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'nope'"):
        fmt("nope")
    with pytest.raises(ValueError, match="unknown format"):
        fmt("<")


# ---------------------------------------------------------------------------
# JSON lines


def jsonl_bytes(items, **kw):
    buf = io.BytesIO()
    n = df.write_jsonl(buf, items, **kw)
    return buf.getvalue(), n


def test_jsonl_round_trip():
    data, n = jsonl_bytes(SAMPLE.items())
    assert n == len(SAMPLE)
    assert dict(df.read_jsonl(io.BytesIO(data))) == SAMPLE


def test_jsonl_shape():
    data, _ = jsonl_bytes([(b"text", "caf\u00e9".encode()), (b"\xff", b"\x00ok")])
    lines = [json.loads(ln) for ln in data.decode().splitlines()]
    assert lines[0] == {"key": "text", "value": "caf\u00e9"}
    assert lines[1] == {"key_b64": "/w==", "value": "\x00ok"}
    assert "caf\u00e9" in data.decode()  # readable, not \u-escaped


def test_jsonl_with_formats():
    items = [(struct.pack("<I", 1), struct.pack("<dd", 1.5, 2.5)),
             (struct.pack("<I", 2), b"bad")]
    kf, vf = fmt("<I"), fmt("<dd")
    data, _ = jsonl_bytes(items, key_format=kf, value_format=vf)
    lines = [json.loads(ln) for ln in data.decode().splitlines()]
    assert lines[0] == {"key": 1, "value": [1.5, 2.5]}
    assert lines[1] == {"key": 2, "value_b64": "YmFk"}
    assert list(df.read_jsonl(io.BytesIO(data), key_format=kf, value_format=vf)) == items


def test_jsonl_text_io():
    buf = io.StringIO()
    df.write_jsonl(buf, SAMPLE.items())
    assert dict(df.read_jsonl(io.StringIO(buf.getvalue()))) == SAMPLE


@pytest.mark.parametrize("line, words", [
    ("not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"value": "v"}', "no 'key'"),
    ('{"key": "k"}', "no 'value'"),
    ('{"key": "k", "key_b64": "aw==", "value": "v"}', "both 'key' and 'key_b64'"),
    ('{"key_b64": "!!", "value": "v"}', "bad base64"),
    ('{"key": 5, "value": "v"}', "bad 'key'"),
])
def test_jsonl_malformed(line, words):
    text = '{"key": "a", "value": "b"}\n\n' + line + "\n"
    it = df.read_jsonl(io.StringIO(text))
    assert next(it) == (b"a", b"b")
    with pytest.raises(df.DumpError, match=f"^line 3: .*{words}"):
        list(it)


@pytest.mark.parametrize("compat", [True, False])
def test_bulk_encoding_matches_the_record_by_record_form(compat):
    """write_dump encodes all records after the first in bulk (map over
    lists); every datum length around the 57-byte line and the bulk limit
    comes out as _write_datum writes it, and reads back."""
    lengths = [0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 171, 228, 229, 300, 5000]
    rng = random.Random(5)
    items = [(b"first", b"full")] + [
        (bytes(rng.randrange(256) for _ in range(k)), bytes(rng.randrange(256) for _ in range(v)))
        for k in lengths for v in lengths]
    expected = io.BytesIO()
    sink = df._Sink(expected)
    for key, value in items:
        df._write_datum(sink, key, compat)
        df._write_datum(sink, value, compat)
    sink.flush()
    buf = io.BytesIO()
    assert df.write_dump(buf, iter(items), filename="x", gdbm_compat=compat) == len(items)
    body = buf.getvalue().split(b"# End of header\n", 1)[1]
    assert body == expected.getvalue() + b"#:count=%d\n# End of data\n" % len(items)
    if compat or all(k and v for k, v in items):
        assert list(df.read_dump(io.BytesIO(buf.getvalue()))) == items
