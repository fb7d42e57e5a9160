"""Read-modify-write, typed as a user writes it: ``incr``, ``compare_and_set``,
``transaction()`` (a ``MutableMapping[bytes, bytes]``), its asyncio form and
a shelf transaction."""

import asyncio
import os
import tempfile
from typing import MutableMapping, Optional

import dbm_shm


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rmw.db")
        with dbm_shm.open(path, "c") as db:
            hits: int = db.incr("hits")
            hits = db.decr("hits", 1, default=0)
            assert hits == 0
            swapped: bool = db.compare_and_set("owner", None, b"me")
            assert swapped
            with db.transaction(timeout=5.0) as tx:
                view: MutableMapping[bytes, bytes] = tx
                old: Optional[bytes] = view.get(b"owner")
                view[b"owner"] = (old or b"") + b"!"
            assert db[b"owner"] == b"me!"

            async def bump() -> int:
                async with db.transaction_async(timeout=5.0) as atx:
                    return atx.incr("hits", 2)

            assert asyncio.run(bump()) == 2
        with dbm_shm.open_shelf(os.path.join(tmp, "shelf.db"), "c") as shelf:
            shelf["list"] = [1]
            with shelf.transaction() as stx:
                stx["list"] = stx["list"] + [2]
            assert shelf["list"] == [1, 2]
    print("read_modify_write ok")


if __name__ == "__main__":
    main()
