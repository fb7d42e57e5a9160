"""Code written against ``dbm.gnu``, switched with ``import dbm_shm as gdbm``:
module-level ``open``, ``error``, ``open_flags``, and the handle's
``firstkey``/``nextkey``/``reorganize``/``sync``."""

import os
import tempfile
from typing import List, Optional

import dbm_shm as gdbm


def all_keys(db: gdbm.Database) -> List[bytes]:
    """Walk the keys as gdbm code does."""
    out: List[bytes] = []
    k: Optional[bytes] = db.firstkey()
    while k is not None:
        out.append(k)
        k = db.nextkey(k)
    return out


def main() -> None:
    assert "c" in gdbm.open_flags
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "swap.db")
        try:
            gdbm.open(path, "r")
        except gdbm.error as e:
            print("missing file:", type(e).__name__)
        db = gdbm.open(path, "cs", 0o600)
        for i in range(100):
            db[b"key%d" % i] = b"value"
        for i in range(0, 100, 2):
            del db[b"key%d" % i]
        db.reorganize()
        db.sync()
        keys = all_keys(db)
        assert sorted(keys) == sorted(db.keys()) and len(keys) == 50
        assert db.setdefault(b"key1", b"other") == b"value"
        db.close()
        try:
            len(db)
        except gdbm.error as e:
            print("closed:", e)
    print("gdbm swap ok")


if __name__ == "__main__":
    main()
