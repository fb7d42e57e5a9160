#!/usr/bin/env python3
"""Atheris (libFuzzer) harness for damaged dbm_shm files; run by hand:

    pip install atheris
    python tests/fuzz/atheris_open.py -max_total_time=300 -timeout=20 [CORPUS_DIR]

A fuzz input is not a whole file (stores are 64 KiB and up) but a recipe
applied to one of the valid base files of _fuzzlib: the first byte picks
the base, then each group of bytes is one edit (an offset anywhere in the
file, biased to the header and the first pages, and 1-16 bytes to write
there), optionally followed by a truncation. The damaged file is then
opened 'r' and 'w' and exercised in this process, as tests/fuzz/_fuzz_worker.py
does: a crash of the C core is a crash of the harness, which libFuzzer
reports with the input that caused it (crash-<sha1>); a hang past -timeout
likewise (timeout-<sha1>). dbm_shm.error and KeyError are expected.

Coverage feedback comes from the Python code only: the C core is not
built with libFuzzer instrumentation here (that needs clang and
-fsanitize=fuzzer-no-link), so this is close to a random search over the
recipe space; the seeded mutator (tests/fuzz/fuzz.py) knows the structures
and reaches further. Turn a crash input into a regression file with
``python tests/fuzz/atheris_open.py --materialize crash-<sha1> OUT.dshm``.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fuzzlib as fl  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="dshm-atheris-"))
# bases usable in this process (DSHM_TEST_COLLIDE is read once per process)
NAMES = [n for n in sorted(fl.BASES) if not fl.BASES[n][1] or
         all(os.environ.get(k) == v for k, v in fl.BASES[n][1].items())]
BASES = fl.build_bases(WORK / "bases", NAMES)
DATA = [BASES[n].data for n in NAMES]


def materialize(buf: bytes) -> bytes:
    """The damaged file for a fuzz input."""
    import atheris
    fdp = atheris.FuzzedDataProvider(buf)
    b = bytearray(DATA[fdp.ConsumeIntInRange(0, len(DATA) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        if fdp.remaining_bytes() < 3:
            break
        where = fdp.ConsumeIntInRange(0, 3)
        hi = {0: fl.HEADER_SIZE, 1: min(len(b), 64 * 1024), 2: len(b), 3: len(b)}[where]
        off = fdp.ConsumeIntInRange(0, max(0, hi - 1))
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        b[off:off + len(chunk)] = chunk[:max(0, len(b) - off)]
    if fdp.ConsumeBool():
        fl.fix_checksum(b)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        del b[fdp.ConsumeIntInRange(0, len(b)):]
    return bytes(b)


def exercise(path: str) -> None:
    import dbm_shm
    for flag in ("r", "w"):
        try:
            d = dbm_shm.open(path, flag)
        except dbm_shm.error:
            continue
        try:
            for fn in (len, lambda d: d.keys(), lambda d: list(d.iteritems()),
                       lambda d: d.check(), lambda d: d.get(b"key-00001"),
                       lambda d: d.firstkey()):
                try:
                    fn(d)
                except (dbm_shm.error, KeyError):
                    pass
            if flag == "w":
                for i in range(300):
                    try:
                        d[b"atheris-%d" % i] = b"v" * (i % 70)
                    except dbm_shm.error:
                        break
                for op in (lambda: d.__delitem__(b"atheris-1"), d.reorganize, d.clear):
                    try:
                        op()
                    except (dbm_shm.error, KeyError):
                        pass
        finally:
            d.close()


def test_one_input(buf: bytes) -> None:
    path = str(WORK / "case.dshm")
    with open(path, "wb") as f:
        f.write(materialize(buf))
    for name in os.listdir(WORK):
        if name.startswith("case.dshm.dshm-"):
            os.unlink(WORK / name)
    exercise(path)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--materialize":
        Path(sys.argv[3]).write_bytes(materialize(Path(sys.argv[2]).read_bytes()))
        return
    import atheris
    with atheris.instrument_imports():
        import dbm_shm  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
