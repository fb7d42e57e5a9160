#!/usr/bin/env python3
"""Run the damaged-file fuzzer by hand.

    python tests/fuzz/fuzz.py --cases 2000 --seed 7
    python tests/fuzz/fuzz.py --cases 500 --bases medium,overflow --save corpus-new/

Prints one line per failing case (a crash, a hang, an exception other than
dbm_shm.error/KeyError, a read-only phase that changed the file, or a
temporary file left behind) with the seed that reproduces it:

    python tests/fuzz/fuzz.py --replay SEED --base NAME --keep DIR

writes that one damaged file to DIR and exercises it in a subprocess.
"""

import argparse
import collections
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fuzzlib as fl  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bases", default="", help="comma-separated base names (default: all)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--save", default="", help="save failing cases to this corpus directory")
    ap.add_argument("--systematic", action="store_true", help="the systematic cases instead of random ones")
    ap.add_argument("--replay", type=int, default=None, help="one case seed to replay")
    ap.add_argument("--base", default="", help="base for --replay")
    ap.add_argument("--skip", default="", help="operations the worker leaves out (e.g. w.reorganize)")
    ap.add_argument("--keep", default="", help="directory to keep files in (default: a temporary one)")
    args = ap.parse_args(argv)

    if args.skip:
        os.environ["FUZZ_SKIP"] = args.skip
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dshm-fuzz-"))
    try:
        return _run(args, work)
    finally:
        if not args.keep and args.replay is None:   # a replay prints its file's path
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    names = [n for n in args.bases.split(",") if n] or None
    if args.replay is not None:
        names = [args.base] if args.base else sorted(fl.BASES)
    t0 = time.monotonic()
    bases = fl.build_bases(work / "bases", names)
    print(f"bases built in {time.monotonic() - t0:.1f} s: {', '.join(bases)}")
    if args.replay is not None:
        base = bases[args.base] if args.base else bases[sorted(bases)[0]]
        data, desc = fl.mutate(base, random.Random(args.replay))
        path = work / f"case-{args.replay}.dshm"
        path.write_bytes(data)
        cases = [fl.Case(str(args.replay), base.name, str(path), desc, args.replay)]
    elif args.systematic:
        cases = fl.systematic_cases(bases, work / "systematic", names or sorted(bases))
    else:
        cases = fl.make_cases(bases, work / "cases", args.seed, args.cases, names)
    t0 = time.monotonic()
    outcomes = fl.run_cases(cases, {n: b.keys for n, b in bases.items()},
                            {n: b.env for n, b in bases.items()}, args.timeout, args.workers)
    took = time.monotonic() - t0
    bad = [o for o in outcomes if o.bad]
    stats = collections.Counter(o.status for o in outcomes)
    print(f"{len(outcomes)} cases in {took:.1f} s: {dict(stats)}")
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:3]
    print("slowest: " + ", ".join(f"{o.case.id} {o.seconds:.1f}s" for o in slow))
    for o in bad:
        kb = fl.known_bug(o)
        print(o.line() + (f"\n      known bug: {kb}" if kb else ""))
        if args.save:
            print("      saved", fl.save_corpus(o, f"{o.case.base}-{o.case.seed}", Path(args.save)))
    if args.replay is not None:
        for k, v in outcomes[0].ops.items():
            print(f"  {k:16} {v}")
        print("damage:", "; ".join(cases[0].desc))
        print("file:", cases[0].path)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
