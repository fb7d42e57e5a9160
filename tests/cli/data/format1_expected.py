"""The records of tests/cli/data/format1.dshm (made by make_format1.py)."""

import os
from typing import Dict

HERE = os.path.dirname(os.path.abspath(__file__))

#: Keys whose hashes in that file share their top 8 bits (format1_collide.txt).
N_COLLIDE = 230


def expected() -> Dict[bytes, bytes]:
    """key -> value of every record in format1.dshm."""
    want: Dict[bytes, bytes] = {
        b"": b"the empty key",
        b"empty value": b"",
        b"\x00": b"\x00\x01\x02",
        b"\xff\xfe\x00binary\x80": bytes(range(256)),
        b"big": bytes(range(256)) * 400,          # 102400 bytes
        "ключ".encode(): "значение".encode(),
    }
    for i in range(64):
        want[b"key%03d" % i] = b"value %d " % i * (i % 7)
    with open(os.path.join(HERE, "format1_collide.txt")) as f:
        for line in f:
            k = line.rstrip("\n").encode()
            want[k] = b"collide:" + k
    return want
