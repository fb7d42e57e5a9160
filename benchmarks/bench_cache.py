#!/usr/bin/env python3
"""Shared cache: dbm_shm.Cache beside diskcache, Django's LocMemCache, Redis, memcached.

N worker processes (default 1, 2 and ``os.cpu_count()``) each run a 90/10
get/set mix of 1 KiB values over 100,000 keys, prefilled before the clock
starts, for a fixed time (``--seconds``, default 3) per worker. Key choice is
uniform by default (``--dist zipf`` for a Zipf-like skew, s = 0.99). Every
backend runs in this one invocation, so the ratios compare like with like.

=================  ===========================================================
backend            how it is driven
=================  ===========================================================
dbm_shm            ``dbm_shm.Cache(path)`` on ``--dir`` (default /dev/shm):
                   ``c.get(k)``, ``c.set(k, v)``; one store, every worker maps
                   it; no ``max_bytes``, no ``default_ttl``
dbm_shm-disk       the same on ``--disk-dir`` (default /var/tmp; nothing syncs,
                   so this is the page cache of a disk file system)
diskcache          ``diskcache.Cache(dir)`` on ``--dir``, default settings
                   (SQLite in WAL mode): ``get``, ``set``
locmem             Django's ``LocMemCache``, one per process: NOT shared, each
                   worker fills and reads its own copy (a set in one worker is
                   not seen by the others)
redis              ``redis-server`` started here on 127.0.0.1 (a free port,
                   ``--save "" --appendonly no``), redis-py over TCP loopback
memcached          ``memcached`` started here on 127.0.0.1 (a free port,
                   ``-m 1024``, its default 4 threads), pymemcache over TCP
                   loopback (``no_delay=True``)
=================  ===========================================================

Reported per N and backend: gets/s and sets/s summed over the workers, p50 and
p99 latency of a get and of a set (every operation is timed with
``time.perf_counter_ns``; the samples of all workers are pooled), ratios
``dbm_shm / peer`` of gets/s and sets/s (above 1: dbm_shm is faster), and
memory: the workers' RSS (largest) and PSS (summed), the server's RSS, the
store's allocated size. Each configuration runs ``--repeat`` times (default 2,
each round on a fresh store or server); the round with the most operations is
shown, and the spread of gets/s over the rounds is given. A peer that cannot
be imported or started is skipped with the reason; one that fails is reported
as FAILED and makes the exit status 1.

Run it with the interpreter from ``benchmarks/setup_peers.sh``::

    bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/bench_cache.py
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import mmap
import multiprocessing
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

Get = Callable[[Any], Any]
Set = Callable[[Any, bytes], Any]

CYCLE = 1 << 18          # length of each worker's pregenerated op sequence (cycled)
VALUE_POOL = 16          # distinct values a worker's sets store (same size)
AIMS = {"diskcache": 30.0, "redis": 10.0}   # dbm_shm gets/s ÷ peer gets/s

NOTES = {
    "dbm_shm": "dbm_shm.Cache on {dir}; one store mapped by every worker",
    "dbm_shm-disk": "dbm_shm.Cache on {disk_dir} (a disk file system; nothing syncs: the page cache)",
    "diskcache": "diskcache.Cache on {dir}, default settings (SQLite, WAL)",
    "locmem": ("Django LocMemCache: NOT shared; one private copy per worker process, each "
               "prefilled by its worker, so a set in one worker is not seen by the others"),
    "redis": "redis-server {redis_version} on 127.0.0.1, redis-py {redis_py} over TCP loopback",
    "memcached": "memcached {memcached_version} on 127.0.0.1 (4 threads), pymemcache {pymemcache} over TCP loopback",
}


class Unavailable(Exception):
    """The backend cannot run here (not installed, no server binary)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dir_bytes(path: str) -> int:
    """Allocated bytes of a file or of every file under a directory."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


def proc_mem(pid: Any = "self") -> Tuple[int, int]:
    """(RSS, PSS) in bytes of a process, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = v
    return (user + nice + system + irq + softirq) / HZ


def proc_cpu_seconds(pid: Optional[int]) -> float:
    """CPU seconds (user + system) of process `pid`, 0 if unknown."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, ValueError, IndexError):
        return 0.0


# ---------------------------------------------------------------------------
# Backends. Each has a parent side (setup: create the store or start the
# server, prefill; size; teardown) and a worker side (open_client(params) ->
# get, set, close), the latter run in the spawned worker processes.

def open_dbm_shm(params: Dict[str, Any]) -> Tuple[Get, Set, Callable[[], None]]:
    import dbm_shm
    c = dbm_shm.Cache(params["path"])
    return c.get, c.set, c.close


def open_diskcache(params: Dict[str, Any]) -> Tuple[Get, Set, Callable[[], None]]:
    import diskcache
    c = diskcache.Cache(params["path"], timeout=60)
    return c.get, c.set, c.close


def _locmem_cache() -> Any:
    from django.conf import settings
    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.locmem import LocMemCache
    # MAX_ENTRIES above the key count: no culling; TIMEOUT None: no expiry.
    return LocMemCache("bench", {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": 10 ** 9}})


def open_locmem(params: Dict[str, Any]) -> Tuple[Get, Set, Callable[[], None]]:
    c = _locmem_cache()
    value = os.urandom(params["value_size"])
    # Not shared: each worker prefills its own copy (untimed), as each
    # process of a Django site fills its own.
    for k in _keys(params["keys"], str):
        c.set(k, value)
    return c.get, c.set, c.close


def open_redis(params: Dict[str, Any]) -> Tuple[Get, Set, Callable[[], None]]:
    import redis
    r = redis.Redis(host="127.0.0.1", port=params["port"])
    return r.get, r.set, r.close


def open_memcached(params: Dict[str, Any]) -> Tuple[Get, Set, Callable[[], None]]:
    from pymemcache.client.base import Client
    c = Client(("127.0.0.1", params["port"]), no_delay=True, connect_timeout=10, timeout=60)
    return c.get, c.set, c.close


OPENERS: Dict[str, Callable[[Dict[str, Any]], Tuple[Get, Set, Callable[[], None]]]] = {
    "dbm_shm": open_dbm_shm,
    "dbm_shm-disk": open_dbm_shm,
    "diskcache": open_diskcache,
    "locmem": open_locmem,
    "redis": open_redis,
    "memcached": open_memcached,
}
BACKENDS = list(OPENERS)
KEYTYPE = {"locmem": str}


def _keys(n: int, kind: type = bytes) -> List[Any]:
    ks = [b"key:%07d" % i for i in range(n)]
    return [k.decode() for k in ks] if kind is str else ks


class Setup:
    """Parent side of one backend for one round: store or server, prefilled."""

    def __init__(self, name: str, a: argparse.Namespace, root: str, info: Dict[str, str]) -> None:
        self.name = name
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.path: Optional[str] = None
        self.params: Dict[str, Any] = {"keys": a.keys, "value_size": a.value_size}
        keys = _keys(a.keys)
        value = os.urandom(a.value_size)
        if name in ("dbm_shm", "dbm_shm-disk"):
            import dbm_shm  # (ImportError -> the caller's skip)
            if not hasattr(dbm_shm, "Cache"):
                raise Unavailable(f"this dbm_shm ({dbm_shm.__file__}) has no Cache")
            base = root if name == "dbm_shm" else a.disk_root
            self.path = os.path.join(base, "cache.db")
            self.params["path"] = self.path
            c = dbm_shm.Cache(self.path)
            for i in range(0, len(keys), 1000):
                c.set_many({k: value for k in keys[i:i + 1000]})
            if len(c) != len(keys):
                raise RuntimeError(f"the cache holds {len(c)} keys after the prefill")
            c.close()
        elif name == "diskcache":
            try:
                import diskcache
            except ImportError as e:
                raise Unavailable(f"diskcache not importable ({e})") from None
            self.path = os.path.join(root, "diskcache")
            self.params["path"] = self.path
            c = diskcache.Cache(self.path)
            with c.transact():
                for k in keys:
                    c.set(k, value)
            c.close()
        elif name == "locmem":
            try:
                _locmem_cache()
            except ImportError as e:
                raise Unavailable(f"django not importable ({e})") from None
        elif name == "redis":
            try:
                import redis
            except ImportError as e:
                raise Unavailable(f"redis-py not importable ({e})") from None
            exe = shutil.which("redis-server")
            if not exe:
                raise Unavailable("no redis-server on PATH (apt-get install redis-server)")
            port = free_port()
            self.params["port"] = port
            self.proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--protected-mode", "yes", "--logfile", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.params["server_pid"] = self.proc.pid
            r = redis.Redis(host="127.0.0.1", port=port)
            self._wait(lambda: r.ping())
            info["redis_version"] = str(r.info("server").get("redis_version", "?"))
            p = r.pipeline(transaction=False)
            for i, k in enumerate(keys, 1):
                p.set(k, value)
                if i % 1000 == 0:
                    p.execute()
            p.execute()
            if r.dbsize() != len(keys):
                raise RuntimeError(f"redis holds {r.dbsize()} keys after the prefill")
            r.close()
        elif name == "memcached":
            try:
                from pymemcache.client.base import Client
            except ImportError as e:
                raise Unavailable(f"pymemcache not importable ({e})") from None
            exe = shutil.which("memcached") or ("/usr/bin/memcached" if os.path.exists("/usr/bin/memcached") else None)
            if not exe:
                raise Unavailable("no memcached on PATH (apt-get install memcached)")
            port = free_port()
            self.params["port"] = port
            cmd = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "1024"]
            if os.geteuid() == 0:
                cmd += ["-u", "root"]       # memcached refuses to run as root without it
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.params["server_pid"] = self.proc.pid
            c = Client(("127.0.0.1", port), no_delay=True, connect_timeout=2, timeout=60)
            self._wait(lambda: c.version())
            info["memcached_version"] = c.version().decode()
            for i in range(0, len(keys), 1000):
                failed = c.set_many({k: value for k in keys[i:i + 1000]}, noreply=False)
                if failed:
                    raise RuntimeError(f"memcached refused {len(failed)} keys in the prefill")
            c.close()
        else:
            raise ValueError(name)

    def _wait(self, ping: Callable[[], Any]) -> None:
        deadline = time.monotonic() + 10
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited at start (status {self.proc.returncode})")
            try:
                ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def server_rss(self) -> Optional[int]:
        return proc_mem(self.proc.pid)[0] if self.proc else None

    def store_bytes(self) -> Optional[int]:
        return dir_bytes(self.path) if self.path and os.path.exists(self.path) else None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.path:
            if os.path.isdir(self.path):
                shutil.rmtree(self.path, ignore_errors=True)
            elif os.path.exists(self.path):
                os.unlink(self.path)


# ---------------------------------------------------------------------------
# The worker

def _sequence(nkeys: int, set_share: float, dist: str, zipf_s: float, seed: int) -> Tuple["array[int]", bytearray]:
    rng = random.Random(seed)
    if dist == "zipf":
        # Zipf-like: key of rank r drawn with weight 1 / (r + 1) ** s; ranks
        # scattered over the key space so the hot keys are not neighbours.
        cum = list(itertools.accumulate(1.0 / (r + 1) ** zipf_s for r in range(nkeys)))
        perm = list(range(nkeys))
        random.Random(12345).shuffle(perm)
        top = cum[-1]
        idx = array("i", (perm[bisect.bisect_left(cum, rng.random() * top)] for _ in range(CYCLE)))
    else:
        idx = array("i", (rng.randrange(nkeys) for _ in range(CYCLE)))
    ops = bytearray(1 if rng.random() < set_share else 0 for _ in range(CYCLE))
    return idx, ops


def timed_loop(keys: List[Any], idx: "array[int]", ops: bytearray, vals: List[bytes], cget: Get, cset: Set,
               cap: int, seconds_ns: int, glat: Any, slat: Any) -> Tuple[int, int, int, int, int]:
    """Run the mix until `seconds_ns` have passed (or `cap` operations),
    timing each operation into `glat` (gets) and `slat` (sets). Returns
    (start, end, gets, sets, gets that found no value)."""
    pc = time.perf_counter_ns
    mask = CYCLE - 1
    vmask = VALUE_POOL - 1
    start = t1 = pc()
    deadline = start + seconds_ns
    ng = ns = miss = 0
    i = 0
    while i < cap:
        j = i & mask
        k = keys[idx[j]]
        if ops[j]:
            t0 = pc()
            cset(k, vals[i & vmask])
            t1 = pc()
            slat[ns] = t1 - t0
            ns += 1
        else:
            t0 = pc()
            v = cget(k)
            t1 = pc()
            glat[ng] = t1 - t0
            ng += 1
            if v is None:
                miss += 1
        i += 1
        if t1 >= deadline:
            break
    return start, t1, ng, ns, miss


def harness_cost(nkeys: int, value_size: int, cfg: Dict[str, Any]) -> float:
    """Operations per second of the timed loop with a dict's get and set in
    place of a backend, in this process for up to 1 s: the harness's own
    ceiling (two clock reads, the indexing and the sample store per op)."""
    keys = _keys(nkeys)
    idx, ops = _sequence(nkeys, cfg["set_share"], cfg["dist"], cfg["zipf_s"], cfg["seed"] * 1000)
    vals = [os.urandom(value_size) for _ in range(VALUE_POOL)]
    d = dict.fromkeys(keys, vals[0])
    secs = min(1.0, cfg["seconds_ns"] / 1e9)
    cap = int(5_000_000 * secs) + 1
    glat = array("q", bytes(8 * cap))
    slat = array("q", bytes(8 * cap))
    gc.disable()
    try:
        start, end, ng, ns, _ = timed_loop(keys, idx, ops, vals, d.get, d.__setitem__, cap,
                                           int(secs * 1e9), glat, slat)
    finally:
        gc.enable()
    return (ng + ns) / ((end - start) / 1e9)


def _worker(name: str, params: Dict[str, Any], wid: int, cfg: Dict[str, Any], barrier: Any, q: Any) -> None:
    try:
        keys = _keys(params["keys"], KEYTYPE.get(name, bytes))
        idx, ops = _sequence(params["keys"], cfg["set_share"], cfg["dist"], cfg["zipf_s"], cfg["seed"] * 1000 + wid)
        vals = [os.urandom(params["value_size"]) for _ in range(VALUE_POOL)]
        base_rss, base_pss = proc_mem()
        cget, cset, close = OPENERS[name](params)
        for i in range(min(2000, CYCLE)):           # warm up, untimed
            k = keys[idx[i]]
            if ops[i]:
                cset(k, vals[i & (VALUE_POOL - 1)])
            else:
                cget(k)
        cap = cfg["max_ops"]
        sets_in_cycle = sum(ops)
        nset_cap = (cap // CYCLE) * sets_in_cycle + sum(ops[:cap % CYCLE]) + 1
        # Sample buffers in anonymous mappings: only the pages written are
        # resident, and they are subtracted from the RSS reported.
        gbuf = mmap.mmap(-1, 8 * (cap + 1))
        sbuf = mmap.mmap(-1, 8 * nset_cap)
        glat = memoryview(gbuf).cast("q")
        slat = memoryview(sbuf).cast("q")
        gc.collect()
        gc.disable()
        barrier.wait()
        if wid == 0:
            busy0, srv0 = busy_seconds(), proc_cpu_seconds(params.get("server_pid"))
        cpu0 = time.process_time()
        start, t1, ng, ns, miss = timed_loop(keys, idx, ops, vals, cget, cset, cap, cfg["seconds_ns"], glat, slat)
        elapsed = t1 - start
        cpu = time.process_time() - cpu0
        busy = server = 0.0
        if wid == 0:
            busy = busy_seconds() - busy0
            server = proc_cpu_seconds(params.get("server_pid")) - srv0
        gc.enable()
        rss, pss = proc_mem()
        buf_pages = ((ng * 8 + 4095) // 4096 + (ns * 8 + 4095) // 4096) * 4096
        close()
        q.put({"wid": wid, "gets": ng, "sets": ns, "misses": miss, "elapsed_ns": elapsed,
               "start": start, "glat": bytes(glat[:ng].cast("B")), "slat": bytes(slat[:ns].cast("B")),
               "rss": rss - buf_pages, "pss": pss - buf_pages, "base_rss": base_rss,
               "cpu": cpu, "busy": busy, "server_cpu": server, "err": None})
        glat.release()
        slat.release()
    except BaseException as e:   # reported to the parent
        try:
            barrier.abort()          # the other workers stop waiting
        except Exception:
            pass
        q.put({"wid": wid, "err": f"{type(e).__name__}: {e}"})


def percentiles(raw: List[bytes], ps: Tuple[float, ...]) -> List[Optional[float]]:
    """Percentiles (ns) of the int64 samples in `raw` pooled."""
    try:
        import numpy as np
        a = np.concatenate([np.frombuffer(b, dtype=np.int64) for b in raw]) if raw else np.zeros(0)
        if a.size == 0:
            return [None for _ in ps]
        return [float(x) for x in np.percentile(a, ps)]
    except ImportError:
        s = sorted(itertools.chain.from_iterable(array("q", b) for b in raw))
        if not s:
            return [None for _ in ps]
        return [float(s[min(len(s) - 1, int(p / 100 * len(s)))]) for p in ps]


def run_once(name: str, setup: Setup, nproc: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(nproc)
    q = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(name, setup.params, w, cfg, barrier, q)) for w in range(nproc)]
    for p in ps:
        p.start()
    res = []
    try:
        for _ in ps:
            res.append(q.get(timeout=cfg["seconds_ns"] / 1e9 + 600))
    finally:
        for p in ps:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    errs = [r["err"] for r in res if r["err"]]
    if errs:
        raise RuntimeError("; ".join(errs))
    server_rss = setup.server_rss()
    w0 = next(r for r in res if r["wid"] == 0)
    window = w0["elapsed_ns"] / 1e9
    others = w0["busy"] - sum(r["cpu"] for r in res) - w0["server_cpu"]
    g50, g99 = percentiles([r["glat"] for r in res], (50, 99))
    s50, s99 = percentiles([r["slat"] for r in res], (50, 99))
    return {
        "gets_s": sum(r["gets"] / (r["elapsed_ns"] / 1e9) for r in res),
        "sets_s": sum(r["sets"] / (r["elapsed_ns"] / 1e9) for r in res),
        "gets": sum(r["gets"] for r in res), "sets": sum(r["sets"] for r in res),
        "misses": sum(r["misses"] for r in res),
        "g50": g50, "g99": g99, "s50": s50, "s99": s99,
        "rss_max": max(r["rss"] for r in res), "pss_sum": sum(r["pss"] for r in res),
        "base_rss": max(r["base_rss"] for r in res),
        "server_rss": server_rss, "store": setup.store_bytes(),
        # CPUs kept busy, during the timed window, by everything but the
        # workers and the server: other processes, kernel threads (the
        # loopback's softirq work among them). 1 = one CPU.
        "others": max(0.0, others / window) if window > 0 else None,
        "server_cpus": w0["server_cpu"] / window if window > 0 else None,
    }


# ---------------------------------------------------------------------------
# Output

def f_rate(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:,.0f}"


def f_us(ns: Optional[float]) -> str:
    if ns is None:
        return "—"
    us = ns / 1000
    return f"{us:,.1f}" if us < 100 else f"{us:,.0f}"


def f_cpu(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}"


def f_mib(b: Optional[int]) -> str:
    return "—" if b is None else f"{b / 2**20:,.1f}"


def f_ratio(ref: Optional[float], x: Optional[float]) -> str:
    return f"{ref / x:,.1f}×" if ref and x else "—"


def git_commit() -> str:
    """The checkout's commit (+ "-dirty" with uncommitted changes), or "?"."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev + ("-dirty" if dirty else "")) if rev else "?"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions(info: Dict[str, str]) -> None:
    for mod, key in (("diskcache", "diskcache"), ("django", "django"), ("redis", "redis_py"),
                     ("pymemcache", "pymemcache")):
        try:
            info[key] = __import__(mod).__version__
        except Exception:
            info[key] = "?"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", default="", help="comma-separated worker counts (default: 1,2,os.cpu_count())")
    ap.add_argument("--keys", type=int, default=100_000, help="keys, prefilled (default 100,000)")
    ap.add_argument("--value-size", type=int, default=1024, help="value bytes (default 1024)")
    ap.add_argument("--set-share", type=float, default=0.10, help="share of sets in the mix (default 0.10)")
    ap.add_argument("--dist", choices=("uniform", "zipf"), default="uniform", help="key choice (default uniform)")
    ap.add_argument("--zipf-s", type=float, default=0.99, help="exponent of --dist zipf (default 0.99)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per worker (default 3)")
    ap.add_argument("--max-ops", type=int, default=0,
                    help="cap on operations per worker (default: 3,000,000 per second of --seconds)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds per configuration; the best is shown (default 2)")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                    help="where the stores go (default /dev/shm)")
    ap.add_argument("--disk-dir", default="/var/tmp",
                    help="disk directory of the dbm_shm-disk row (default /var/tmp)")
    ap.add_argument("--only", default="", help="comma-separated backends: " + ",".join(BACKENDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2,000 keys, 0.2 s, 1 and 2 workers, one round")
    a = ap.parse_args(argv)
    if a.quick:
        a.keys, a.seconds, a.repeat = 2000, 0.2, 1
        a.procs = a.procs or "1,2"
    procs = sorted({int(p) for p in a.procs.split(",")} if a.procs else {1, 2, os.cpu_count() or 1})
    names = [b for b in BACKENDS if not a.only or b in a.only.split(",")]
    unknown = set(a.only.split(",")) - set(BACKENDS) - {""} if a.only else set()
    if unknown:
        ap.error(f"unknown backends: {', '.join(sorted(unknown))}")
    cfg = {"seconds_ns": int(a.seconds * 1e9), "set_share": a.set_share, "dist": a.dist,
           "zipf_s": a.zipf_s, "seed": a.seed,
           "max_ops": a.max_ops or max(10_000, int(3_000_000 * a.seconds))}
    info: Dict[str, str] = {}
    versions(info)
    load_before = loadavg()
    harness = harness_cost(a.keys, a.value_size, cfg)
    root = tempfile.mkdtemp(prefix="bench-cache-", dir=a.dir)
    a.disk_root = tempfile.mkdtemp(prefix="bench-cache-", dir=a.disk_dir) if "dbm_shm-disk" in names else ""
    results: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
    notes: List[str] = []
    skipped: Dict[str, str] = {}
    failed = False
    try:
        for rnd in range(a.repeat):
            for name in names:
                if name in skipped:
                    continue
                try:
                    setup = Setup(name, a, root, info)
                except (Unavailable, ImportError) as e:
                    skipped[name] = str(e)
                    continue
                except Exception as e:
                    notes.append(f"{name}: FAILED in setup, round {rnd + 1} ({type(e).__name__}: {e})")
                    failed = True
                    continue
                try:
                    for n in procs:
                        try:
                            results.setdefault((name, n), []).append(run_once(name, setup, n, cfg))
                        except Exception as e:
                            notes.append(f"{name} ×{n}: FAILED, round {rnd + 1} ({e})")
                            failed = True
                        print(f"  round {rnd + 1}/{a.repeat}: {name} ×{n} done", file=sys.stderr, flush=True)
                finally:
                    setup.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if a.disk_root:
            shutil.rmtree(a.disk_root, ignore_errors=True)
    load_after = loadavg()

    try:
        import dbm_shm
        where = os.path.dirname(dbm_shm.__file__)
    except ImportError:
        where = "not importable"
    label = {b: b for b in BACKENDS}
    print(f"# Shared cache: {100 - round(a.set_share * 100)}/{round(a.set_share * 100)} get/set, "
          f"{a.value_size:,} B values, {a.keys:,} keys (prefilled), {a.dist} key choice"
          + (f" (s = {a.zipf_s})" if a.dist == "zipf" else "") + "\n")
    print(f"{a.seconds:g} s per worker and run, every operation timed (perf_counter_ns); best of "
          f"{a.repeat} round(s), each on a fresh store/server. Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {load_before} before, {load_after} after; "
          f"dbm_shm from {where}; stores in {a.dir}; commit {git_commit()}.")
    print("\nRatios are dbm_shm's figure divided by the row's (above 1×: dbm_shm is faster). "
          "Latencies in µs. locmem is per process, NOT shared (each worker has its own copy). "
          "spread: (best − worst) / best of gets/s over the rounds. server CPU: CPUs the server "
          "process kept busy during the timed window; other CPU: CPUs kept busy by everything else "
          "but the workers (other processes, kernel threads such as the loopback's softirq work), "
          "from /proc/stat: a figure well above 0 for dbm_shm or diskcache means something else ran.")
    for n in procs:
        rows = {name: best(results[(name, n)]) for name in names if results.get((name, n))}
        if not rows:
            continue
        ref = rows.get("dbm_shm")
        print(f"\n## {n} worker process{'es' if n > 1 else ''}"
              + (f" (more than the {os.cpu_count()} CPUs)" if n > (os.cpu_count() or 1) else "") + "\n")
        head = ["backend", "gets/s", "sets/s", "get p50", "get p99", "set p50", "set p99",
                "dbm_shm/peer gets", "dbm_shm/peer sets", "spread gets/s", "server CPU", "other CPU"]
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
        for name, r in rows.items():
            runs = results[(name, n)]
            gs = [x["gets_s"] for x in runs]
            spread = f"{(max(gs) - min(gs)) / max(gs) * 100:.0f} %" if len(gs) > 1 else "—"
            cells = [label[name], f_rate(r["gets_s"]), f_rate(r["sets_s"]), f_us(r["g50"]), f_us(r["g99"]),
                     f_us(r["s50"]), f_us(r["s99"]),
                     f_ratio(ref["gets_s"] if ref else None, r["gets_s"]),
                     f_ratio(ref["sets_s"] if ref else None, r["sets_s"]),
                     spread, f_cpu(r["server_cpus"]) if r["server_rss"] is not None else "—", f_cpu(r["others"])]
            print("| " + " | ".join(cells) + " |")
            if r["misses"]:
                notes.append(f"{name} ×{n}: {r['misses']:,} gets found no value (of {r['gets']:,})")
        print(f"\nMemory, {n} worker process{'es' if n > 1 else ''} (MiB):\n")
        mhead = ["backend", "worker RSS (largest)", "workers PSS (sum)", "server RSS", "store allocated"]
        print("| " + " | ".join(mhead) + " |")
        print("|---|" + "---:|" * (len(mhead) - 1))
        for name, r in rows.items():
            print("| " + " | ".join([label[name], f_mib(r["rss_max"]), f_mib(r["pss_sum"]),
                                     f_mib(r["server_rss"]), f_mib(r["store"])]) + " |")
        aims = []
        for peer, aim in AIMS.items():
            if ref and peer in rows:
                got = ref["gets_s"] / rows[peer]["gets_s"]
                aims.append(f"gets ≥ {aim:g}× {peer}'s: {got:.1f}× — {'met' if got >= aim else 'NOT met'}")
            else:
                aims.append(f"gets ≥ {aim:g}× {peer}'s: not measured")
        print("\nAims: " + "; ".join(aims) + ".")

    base = [best(v)["base_rss"] for v in results.values() if v]
    print("\nNotes:\n")
    for name in names:
        if name in skipped:
            print(f"- {name}: skipped ({skipped[name]})")
        elif any(results.get((name, n)) for n in procs):
            print(f"- {name}: " + NOTES[name].format_map(_dd(info, dir=a.dir, disk_dir=a.disk_dir)))
    print(f"- The harness alone (the same timed loop over a dict's get and set, one process): "
          f"{harness:,.0f} operations/s, {1e9 / harness:,.0f} ns per operation; every row's figures "
          "include this cost.")
    if base:
        print(f"- A worker's RSS before it opens its backend (interpreter, keys, op sequence): "
              f"{min(base) / 2**20:,.1f} MiB. Worker RSS/PSS exclude the latency sample buffers. "
              "dbm_shm's workers map the store: their RSS and PSS count the store pages they touched, "
              "the same memory as the store's allocated size (tmpfs), not a copy.")
    for line in notes:
        print(f"- {line}")
    return 1 if failed else 0


class _dd(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


def best(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return max(runs, key=lambda r: r["gets_s"] + r["sets_s"])


if __name__ == "__main__":
    sys.exit(main())
