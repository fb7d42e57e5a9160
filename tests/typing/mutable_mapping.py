"""A ``Database`` wherever a ``MutableMapping[bytes, bytes]`` is wanted, and
the mapping methods typed; writes in a batch, and a consistent snapshot."""

import os
import tempfile
from typing import Dict, Iterator, List, Mapping, MutableMapping, Tuple

import dbm_shm


def count_into(counts: MutableMapping[bytes, bytes], words: List[str]) -> None:
    """Generic code over any mutable mapping of bytes."""
    for w in words:
        k = w.encode()
        counts[k] = b"%d" % (int(counts.get(k, b"0")) + 1)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with dbm_shm.open(os.path.join(tmp, "db"), "c") as db:
            count_into(db, ["a", "b", "a"])
            plain: Dict[bytes, bytes] = {}
            count_into(plain, ["a", "b", "a"])
            assert db == plain
            with db.batch():
                db.update({b"x": b"1"}, y=b"2")
                db.update([(b"z", b"3")])
                assert db.setdefault(b"x", b"9") == b"1"
            items: List[Tuple[bytes, bytes]] = db.items()
            values: List[bytes] = db.values()
            keys: List[bytes] = db.keys()
            it: Iterator[bytes] = iter(db)
            assert len(items) == len(values) == len(keys) == len(list(it)) == 5
            snap: Mapping[bytes, bytes] = db.snapshot()
            assert dict(snap) == dict(items)
            first: Tuple[bytes, bytes] = db.popitem()
            assert first[0] not in db
            db.clear()
            assert not db
    print("mapping ok")


if __name__ == "__main__":
    main()
