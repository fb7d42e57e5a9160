"""Random-kill soak (issue 13; DESIGN.md §3 property 9).

A store of 50,000 keys nobody changes (u*) and a churn writer on other
keys (sets, deletes, new keys, a rare reorganize) that is SIGKILLed at a
random moment; then repairers, each SIGKILLed either at a random moment or
at a random repair crash point; then a last repair checked against the
model of acknowledged operations (every key, get and keys(), len(),
check()). All along, a reader in another process reads untouched keys and
checks that each reads back exactly: never missing, never another value.

Zero lost, invented or torn. The soak (marked `soak`) runs until at least
DSHM_SOAK_KILLS kills (default 300); the default run does a few rounds.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _support import child_env
from _support import repair as R
from _support.helpers import Log, apply_op

N_UNTOUCHED = 50_000
POINTS = ("repair-probe", "repair-lock", "repair-begin", "repair-split", "repair-rebuild", "repair-rebuild-move",
          "repair-bucket", "repair-space-reset", "repair-space", "repair-end")


def _wait_file(path, pred, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred(Path(path).read_text()):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _script(args, out, crash_at=None):
    return subprocess.Popen([sys.executable, R.SCRIPT, *args], env=child_env(crash_at),
                            stdout=open(out, "wb"), stderr=subprocess.DEVNULL)


def soak(tmp_path, min_kills, seed):
    rng = random.Random(seed)
    path = str(tmp_path / "store.dshm")
    model = R.populate_untouched(path, N_UNTOUCHED)
    stop, rout = str(tmp_path / "stop"), str(tmp_path / "reader.json")
    reader = _script(["soak-reader", path, str(N_UNTOUCHED), stop, rout], tmp_path / "reader.out")
    stats = {"rounds": 0, "kills": 0, "writers_killed": 0, "repairers_killed": 0,
             "repairs_killed": 0, "repairs_at_point": 0}
    try:
        run = 0
        while stats["kills"] < min_kills:
            run += 1
            wout = tmp_path / f"w{run}.log"
            w = _script(["soak-writer", path, str(rng.randrange(1 << 30)), str(run)], wout)
            _wait_file(wout, lambda t: t.startswith("R\n"), 120, "the writer to start")
            time.sleep(rng.uniform(0.0, 0.25))
            w.send_signal(signal.SIGKILL)
            assert w.wait(120) == -signal.SIGKILL
            stats["writers_killed"] += 1
            stats["kills"] += 1
            log = Log(wout.read_text())
            for op in log.acked:
                apply_op(model, op)
            after = dict(model)
            if log.inflight is not None:
                apply_op(after, log.inflight)
            # Repairers, killed at a random moment or at a repair point.
            for _ in range(rng.choice((1, 1, 2, 3))):
                owed_before = R.repair_owed(path)
                at = f"{rng.choice(POINTS)}:1" if rng.random() < 0.5 else None
                p = _script(["repairer", path, "lock" if rng.random() < 0.3 else "open"],
                            tmp_path / "rep.out", at)
                if at is None:
                    time.sleep(rng.uniform(0.0, 0.03))
                    p.send_signal(signal.SIGKILL)
                code = p.wait(120)
                if code == -signal.SIGKILL:
                    stats["repairers_killed"] += 1
                    stats["kills"] += 1
                    if owed_before and R.repair_owed(path):
                        stats["repairs_killed"] += 1
                        stats["repairs_at_point"] += at is not None
                else:
                    assert code == 0, f"a repairer failed (exit {code})"
            res = R.final_repair(path, [model, after], tmp_path)
            R.assert_final(res)
            model = [model, after][res["chosen"]]
            stats["rounds"] += 1
            if reader.poll() is not None:
                break     # it stopped on its own: too many bad reads
    finally:
        Path(stop).write_text("")
        try:
            reader.wait(120)
        except subprocess.TimeoutExpired:
            reader.kill()
    rd = json.loads(Path(rout).read_text())
    stats.update(reads=rd["reads"], read_errors=rd["errors"])
    print("soak:", stats)
    assert not rd["bad"], f"untouched keys read wrong: {rd['bad'][:10]}"
    assert rd["reads"] > 0
    return stats


def test_repair_soak_short(tmp_path):
    soak(tmp_path, min_kills=12, seed=1)


@pytest.mark.soak
def test_repair_soak(tmp_path):
    stats = soak(tmp_path, min_kills=int(os.environ.get("DSHM_SOAK_KILLS", "300")),
                 seed=int(os.environ.get("DSHM_SOAK_SEED", "7")))
    assert stats["repairs_killed"] > 0
