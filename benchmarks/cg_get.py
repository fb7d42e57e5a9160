"""Callgrind driver of docs/benchmarks.md: N gets of a 1,000-key store.

Usage: ``python benchmarks/cg_get.py N`` (under ``valgrind --tool=callgrind``);
the difference between N=100000 and N=0 is the cost of 100,000 gets.
"""
import random, sys, dbm_shm
n = int(sys.argv[1]); path = "/dev/shm/fast_cg_db"
rng = random.Random(0)
keys = [rng.randbytes(16) for _ in range(1000)]
db = dbm_shm.open(path, "n")
for k in keys:
    db[k] = rng.randbytes(100)
db.close()
db = dbm_shm.open(path, "r")
ks = (keys * (n // 1000 + 1))[:n]
def loop(db, ks):
    for k in ks:
        db[k]
loop(db, ks)
db.close()
