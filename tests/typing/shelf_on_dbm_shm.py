"""The documented shelve layering: ``shelve.Shelf(dbm_shm.open(p, "c"))``.

typeshed's ``Shelf`` takes a ``MutableMapping[bytes, bytes]``, which
``dbm_shm.Database`` is."""

import os
import shelve
import tempfile
from typing import Any, Dict, List, MutableMapping

import dbm_shm


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shelf.db")
        backing: MutableMapping[bytes, bytes] = dbm_shm.open(path, "c")
        shelf: "shelve.Shelf[object]" = shelve.Shelf(backing)
        with shelf:
            shelf["prices"] = {"EURUSD": 1.0843, "GBPUSD": 1.2641}
            shelf["symbols"] = ["EURUSD", "GBPUSD"]
        ro: "shelve.Shelf[Any]" = shelve.Shelf(dbm_shm.open(path, "r"))
        with ro:
            prices: Dict[str, float] = ro["prices"]
            symbols: List[str] = ro["symbols"]
            assert prices["EURUSD"] == 1.0843
            assert symbols == ["EURUSD", "GBPUSD"]
            assert sorted(ro) == ["prices", "symbols"]
    print("shelf ok")


if __name__ == "__main__":
    main()
