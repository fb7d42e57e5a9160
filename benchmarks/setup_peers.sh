#!/usr/bin/env bash
# Prepare the benchmark environment: a venv `.venv-bench` at the repo root
# that can import every peer store in ONE interpreter.
#
# GNU gdbm reaches Python only through Debian's python3-gdbm package, which
# serves the system interpreter (/usr/bin/python3). The venv is therefore made
# from that interpreter with --system-site-packages (so `dbm.gnu` is visible)
# and holds the PyPI peers (lmdb, sqlitedict, UltraDict, diskcache, django,
# redis, pymemcache), cffi,
# and what benchmarks/report.py draws and shows progress with (matplotlib,
# tqdm). When the repo has a setup.py, dbm_shm itself is (re)built and
# installed into the venv too.
#
# Idempotent: run it again at any time; it only adds what is missing and
# rebuilds dbm_shm from the current source tree.
#
# Environment: BENCH_PYTHON overrides the base interpreter (default
# /usr/bin/python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-bench"
base_python="${BENCH_PYTHON:-/usr/bin/python3}"

log() { printf 'setup_peers: %s\n' "$*" >&2; }

# apt_install PKG...: install Debian packages if apt-get is usable.
apt_install() {
    local sudo=()
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; cannot install $*"
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            log "not root and no sudo; cannot install $*"
            return 1
        fi
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get install -y "$@" \
        || { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y "$@"; }
}

if [ ! -x "$base_python" ]; then
    log "base interpreter $base_python not found (set BENCH_PYTHON)"
    exit 1
fi

if ! "$base_python" -c 'import dbm.gnu' >/dev/null 2>&1; then
    log "dbm.gnu missing for $base_python; installing python3-gdbm"
    apt_install python3-gdbm \
        || log "continuing without dbm.gnu (the benchmark will skip it)"
fi

if [ ! -x "$venv/bin/python" ]; then
    # Debian ships ensurepip (needed by venv) separately, in python3-venv.
    if ! "$base_python" -c 'import ensurepip' >/dev/null 2>&1; then
        log "ensurepip missing for $base_python; installing python3-venv"
        apt_install python3-venv
    fi
    log "creating $venv"
    "$base_python" -m venv --system-site-packages "$venv"
fi

log "installing peers into $venv"
"$venv/bin/python" -m pip install --quiet lmdb sqlitedict cffi
# UltraDict builds from an sdist (needs a C compiler); a failure leaves the
# other peers in place and report.py skips UltraDict with a note.
"$venv/bin/python" -m pip install --quiet UltraDict \
    || log "UltraDict not installed (report.py will skip it)"
# diskcache: the peer of bench_rmw.py's counters (its Cache.incr).
"$venv/bin/python" -m pip install --quiet diskcache \
    || log "diskcache not installed (bench_rmw.py will skip it)"
# bench_cache.py's peers: Django (its LocMemCache), redis-py and pymemcache
# (clients of the redis-server and memcached the benchmark starts on
# loopback; Debian's packages, installed below if missing).
"$venv/bin/python" -m pip install --quiet django redis pymemcache \
    || log "django/redis/pymemcache not all installed (bench_cache.py skips what is missing)"
if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server missing; installing Debian's redis-server"
    apt_install redis-server || log "no redis-server (bench_cache.py will skip Redis)"
fi
if ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
    log "memcached missing; installing Debian's memcached"
    apt_install memcached || log "no memcached (bench_cache.py will skip it)"
fi
"$venv/bin/python" -m pip install --quiet matplotlib tqdm \
    || log "matplotlib/tqdm not installed (report.py: no plots, plain progress)"

if [ -f "$repo_root/setup.py" ]; then
    log "building and installing dbm_shm from $repo_root"
    # Build from a clean copy of the source files (tracked or new, less what
    # .gitignore names): setuptools reuses the object files it finds in the
    # tree's build/, and they may come from another build; `tox -e sanitize`
    # leaves AddressSanitizer objects there, and a core linked from them
    # does not even load in a plain interpreter.
    src="$(mktemp -d)"
    trap 'rm -rf "$src"' EXIT
    if git -C "$repo_root" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$repo_root" ls-files -z --cached --others --exclude-standard \
            | tar -C "$repo_root" --null --ignore-failed-read -T - -cf - \
            | tar -C "$src" -xf -
    else
        tar -C "$repo_root" --exclude=./build --exclude=./.tox --exclude='./.venv*' \
            --exclude='*.so' --exclude='*.o' -cf - . | tar -C "$src" -xf -
    fi
    env -u DSHM_CFLAGS -u DSHM_LDFLAGS \
        "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$src"
else
    log "no setup.py yet; dbm_shm not installed (the benchmark will skip it)"
fi

log "done; run: $venv/bin/python $repo_root/benchmarks/bench_get_put.py"
log "   or: $venv/bin/python $repo_root/benchmarks/report.py (the full report)"
