"""``get`` is typed as ``Optional[bytes]`` without a default, as ``bytes``
with a ``bytes`` default, and as ``Union[bytes, T]`` with another; ``pop``
likewise (``bytes`` without a default: it raises ``KeyError``)."""

import os
import tempfile
from typing import Optional, Union

import dbm_shm


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with dbm_shm.open(os.path.join(tmp, "db"), "c") as db:
            db[b"k"] = b"v"
            db["text"] = "UTF-8 stored"
            maybe: Optional[bytes] = db.get(b"k")
            sure: bytes = db.get(b"missing", b"default")
            either: Union[bytes, int] = db.get("missing", 0)
            assert maybe == b"v" and sure == b"default" and either == 0
            value: bytes = db[b"k"]
            assert value.decode() == "v"
            popped: bytes = db.pop(b"k")
            gone: Optional[bytes] = db.pop(b"k", None)
            count: Union[bytes, int] = db.pop(b"k", 0)
            assert (popped, gone, count) == (b"v", None, 0)
            key, val = db.popitem()
            assert (key, val) == (b"text", b"UTF-8 stored")
    print("get ok")


if __name__ == "__main__":
    main()
