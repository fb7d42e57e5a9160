/**
 * @file dshm_store.c
 * @brief The public API: open/close, get/put/delete, iteration, sync,
 *        clear, reorganize, statistics, check and recovery.
 *
 * Every entry point is thread-safe. Readers (get, firstkey, nextkey, scan,
 * count) take no lock: they retry while a bucket's seqlock moves, and after
 * DSHM_READ_TRIES tries fall back to reading under the writer lock, so
 * they always finish. Writers take the robust writer lock (dshm_lock.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dshm_internal.h"

#define DSHM_INITIAL_SIZE ((uint64_t)64 << 10)  /* a new file */
#define DSHM_RESV_MIN     ((uint64_t)1 << 34)   /* 16 GiB of address space per mapping */
#define DSHM_RESV_FLOOR   ((uint64_t)1 << 26)   /* least slack tried under a tight ulimit -v */
#define DSHM_OPEN_WAIT_NS ((uint64_t)5000000000) /* wait for a creator this long */

/* ---------------------------------------------------------------------- */
/* Test hook: DSHM_CRASH_AT="point:n"                                      */

int dshm_crash_armed;
static char crash_point[64];
static long crash_count;
static pthread_once_t crash_once = PTHREAD_ONCE_INIT;

static void crash_init(void) {
    const char *s = getenv("DSHM_CRASH_AT");
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || (size_t)(colon - s) >= sizeof crash_point)
        return;
    memcpy(crash_point, s, (size_t)(colon - s));
    crash_point[colon - s] = 0;
    crash_count = strtol(colon + 1, NULL, 10);
    dshm_crash_armed = crash_count > 0;
}

/* ---------------------------------------------------------------------- */
/* SIGBUS guard                                                            */

/* Another process may truncate the file under a mapping; touching a page
 * past the new end raises SIGBUS. Every public call that touches the
 * mapping runs under a per-thread guard: the handler jumps back to the
 * call, which returns DSHM_TRUNCATED instead of the process dying. A
 * SIGBUS outside a guarded call goes to the handler that was there
 * before (or the default action). */
__attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;
static struct sigaction old_bus;

static void bus_handler(int sig, siginfo_t *si, void *uc) {
    dshm_guard *g = &dshm_guard_tls;
    /* Ours: a fault the kernel raised (si_code > 0, e.g. BUS_ADRERR past
     * the end of a truncated file) inside a guarded call. A SIGBUS sent
     * with kill() or sigqueue() (si_code <= 0) is never taken for one. */
    if (g->active && si && si->si_code > 0) {
        g->active = 0;
        siglongjmp(g->jb, 1);
    }
    /* Foreign: to the handler that was there before ours. */
    if (old_bus.sa_flags & SA_SIGINFO) {
        if (old_bus.sa_sigaction) {
            old_bus.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old_bus.sa_handler == SIG_IGN) {
        return;
    } else if (old_bus.sa_handler != SIG_DFL) {
        old_bus.sa_handler(sig);
        return;
    }
    /* The default action, as without this library: a fault re-runs the
     * access on return and ends the process; a sent signal is raised
     * again now (our handler is not left replaced by SIG_DFL in a process
     * that goes on). */
    signal(SIGBUS, SIG_DFL);
    if (!si || si->si_code <= 0)
        raise(SIGBUS);
}

static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;

/* Install bus_handler, keeping the handler it replaces (to chain to). Run
 * at the first open, and again at every open if another handler was
 * installed since (faulthandler, a runtime's own): ours goes back in
 * front, chaining to it. */
static void guard_init(void) {
    struct sigaction sa, cur;
    pthread_mutex_lock(&guard_mu);
    if (sigaction(SIGBUS, NULL, &cur) == 0 &&
        !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == bus_handler)) {
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = bus_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        old_bus = cur;
        sigaction(SIGBUS, &sa, NULL);
    }
    pthread_mutex_unlock(&guard_mu);
}

static void leave(dshm_db *db);

/* Back from a SIGBUS inside a guarded call: unblock the signal, give back
 * the writer lock if this thread held it (marking the store for repair),
 * and end the call. */
void dshm_guard_fault(dshm_guard *g) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    dshm_env *env = g->locked;
    int ro = g->locked_ro;
    g->locked = NULL;
    g->locked_ro = 0;
    struct stat st;
    if (env && fstat(env->ev_fd, &st) == 0 && st.st_size >= (off_t)DSHM_HEADER_SIZE) {
        if (ro) {
            dshm_unlock_ro(env);   /* a read-only taker changed nothing */
        } else {
            DSHM_HDR(env)->hd_repair = 1;
            dshm_unlock0(env);
        }
    }
    if (g->db_locked) {
        pthread_mutex_t *m = g->db_locked;
        g->db_locked = NULL;
        pthread_mutex_unlock(m);
    }
    if (g->entered)
        leave(g->entered);
}

/* Test hooks, read once per process at the first open. */
static void hooks_init(void) {
    const char *c = getenv("DSHM_TEST_COLLIDE");
    if (c && *c) {
        long n = strtol(c, NULL, 10);
        dshm_test_collide = n < 0 ? 0 : n > 64 ? 64 : (int)n;
    }
    crash_init();
    guard_init();
}

void dshm_crash_point0(const char *point) {
    if (strcmp(point, crash_point) == 0 && --crash_count == 0)
        kill(getpid(), SIGKILL);
}

/* ---------------------------------------------------------------------- */
/* Mappings                                                                */

static void env_free(dshm_env *env) {
    while (env) {
        dshm_env *older = env->ev_older;
        if (env->ev_base)
            munmap(env->ev_base, env->ev_resv);
        if (env->ev_hdr_rw)
            munmap(env->ev_hdr_rw, DSHM_HEADER_SIZE);
        if (env->ev_fd >= 0)
            close(env->ev_fd);
        free(env);
        env = older;
    }
}

static uint64_t pow2_at_least(uint64_t x) {
    uint64_t p = 1;
    while (p < x && p < ((uint64_t)1 << 62))
        p <<= 1;
    return p;
}

/* Map fd (of `size` bytes) into a reservation of at least `want` bytes.
 * The whole reservation maps the file: bytes past the end of the file are
 * never touched (readers bound every access by hd_file_size), and growth
 * is fallocate with no remap. Under a tight address-space limit the
 * reservation shrinks, down to the file size plus a little. */
static int env_map(dshm_env *env, uint64_t size, uint64_t want) {
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t floor = size + DSHM_RESV_FLOOR;
    uint64_t resv = pow2_at_least(want > DSHM_RESV_MIN ? want : DSHM_RESV_MIN);
    int prot = PROT_READ | (env->ev_writable ? PROT_WRITE : 0);
    for (;;) {
        resv = (resv + (uint64_t)pg - 1) & ~((uint64_t)pg - 1);
        void *p = mmap(NULL, resv, prot, MAP_SHARED | MAP_NORESERVE, env->ev_fd, 0);
        if (p != MAP_FAILED) {
            env->ev_base = p;
            env->ev_resv = resv;
            return 0;
        }
        if (errno != ENOMEM || resv <= size)
            return errno == ENOMEM ? DSHM_FULL : errno;
        resv = resv / 2 > floor ? resv / 2 : resv > floor ? floor : size;
    }
}

/* ---------------------------------------------------------------------- */
/* Creating and validating files                                           */

static int fill_seed(uint64_t seed[2]) {
    const char *t = getenv("DSHM_TEST_SEED");   /* tests: a known seed */
    if (t && *t) {
        seed[0] = strtoull(t, NULL, 16);
        seed[1] = seed[0] ^ 0x5bd1e9955bd1e995ULL;
        return 0;
    }
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom((char *)seed + got, 16 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Initialise an empty file held exclusively. seed may be NULL (random).
 * The magic is written last: a creator that dies leaves a file without
 * magic, which the next exclusive opener initialises again. */
static int init_file(int fd, const uint64_t *seed) {
    int rc = posix_fallocate(fd, 0, (off_t)DSHM_INITIAL_SIZE);
    if (rc == EOPNOTSUPP || rc == ENOSYS)
        rc = ftruncate(fd, (off_t)DSHM_INITIAL_SIZE) ? errno : 0;
    if (rc)
        return rc;
    dshm_env env = { .ev_fd = fd, .ev_writable = 1, .ev_resv = DSHM_INITIAL_SIZE };
    env.ev_base = mmap(NULL, DSHM_INITIAL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (env.ev_base == MAP_FAILED)
        return errno;
    dshm_header *hd = DSHM_HDR(&env);
    memset(hd, 0, DSHM_HEADER_SIZE);
    hd->hd_format = DSHM_FORMAT;
    hd->hd_header_size = DSHM_HEADER_SIZE;
    hd->hd_bucket_size = DSHM_BUCKET_SIZE;
    hd->hd_abi = DSHM_ABI;
    if (seed) {
        hd->hd_seed[0] = seed[0];
        hd->hd_seed[1] = seed[1];
    } else if ((rc = fill_seed(hd->hd_seed))) {
        goto out;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hd->hd_created = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if ((rc = dshm_mutex_init(hd)))
        goto out;
    atomic_store_explicit(&hd->hd_file_size, DSHM_INITIAL_SIZE, memory_order_relaxed);
    dshm_space_reset(&env, DSHM_HEADER_SIZE);
    if ((rc = dshm_index_init(&env)))
        goto out;
    memcpy(hd->hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN);
    hd->hd_checksum = dshm_header_checksum(hd);
    hd->hd_alloc_sum = dshm_alloc_checksum(hd);
out:
    munmap(env.ev_base, DSHM_INITIAL_SIZE);
    return rc;
}

/* Check the header page read with pread, before anything is mapped. */
static int validate_header(const dshm_header *hd, uint64_t fsize) {
    if (memcmp(hd->hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN) != 0)
        return DSHM_BAD_MAGIC;
    if (hd->hd_format != DSHM_FORMAT)
        return DSHM_VERSION_MISMATCH;
    if (hd->hd_header_size != DSHM_HEADER_SIZE || hd->hd_bucket_size != DSHM_BUCKET_SIZE)
        return DSHM_CORRUPT;
    if (hd->hd_abi != DSHM_ABI)
        return DSHM_VERSION_MISMATCH;
    if (hd->hd_checksum != dshm_header_checksum(hd))
        return DSHM_CORRUPT;
    uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    if (size < DSHM_HEADER_SIZE + DSHM_BUCKET_SIZE || size % 4096)
        return DSHM_CORRUPT;
    if (size > fsize)
        return DSHM_TRUNCATED;
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    if (DSHM_DIR_DEPTH(dir) > DSHM_MAX_DEPTH ||
        !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(DSHM_DIR_DEPTH(dir)), size))
        return DSHM_CORRUPT;
    if (hd->hd_top > size || hd->hd_top < DSHM_HEADER_SIZE)
        return DSHM_CORRUPT;
    return 0;
}

/* A file a creator died in the middle of initialising: the initial size,
 * no magic yet, and a header that is all zero or carries our constants
 * (init_file writes the magic last). Anything else is not ours to wipe. */
static bool half_made(const dshm_header *hd, ssize_t got, uint64_t size) {
    static const char zero[sizeof(dshm_header)];
    if (got != (ssize_t)sizeof *hd || size != DSHM_INITIAL_SIZE ||
        memcmp(hd->hd_magic, zero, DSHM_MAGIC_LEN) != 0)
        return false;
    return memcmp(hd, zero, sizeof *hd) == 0 ||
           (hd->hd_format == DSHM_FORMAT && hd->hd_header_size == DSHM_HEADER_SIZE &&
            hd->hd_bucket_size == DSHM_BUCKET_SIZE);
}

static int flock_retry(int fd, int op) {
    while (flock(fd, op) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* Open path into a new mapping. With `create`, an empty or new file is
 * initialised. The handle keeps a shared flock for its lifetime; an
 * opener that gets the file exclusively (no one else has it open) also
 * checks the writer lock for a holder the kernel could not clean up after
 * and repairs the store. */
static int env_open(const char *path, int flags, int mode, uint64_t want, dshm_env **out, bool *repaired) {
    bool rdonly = flags & DSHM_RDONLY, create = flags & (DSHM_CREATE | DSHM_TRUNC);
    dshm_env *env = calloc(1, sizeof *env);
    int rc = 0;
    if (!env)
        return ENOMEM;
    if (repaired)
        *repaired = false;
    env->ev_fd = -1;
    /* A read-only handle still opens O_RDWR where it may: that lets its
     * reads fall back to the writer lock and lets it repair after a dead
     * writer. The API refuses its writes all the same. */
    env->ev_fd = open(path, O_RDWR | O_CLOEXEC | (create && !rdonly ? O_CREAT : 0), mode);
    env->ev_writable = env->ev_fd >= 0;
    if (env->ev_fd < 0 && rdonly && (errno == EACCES || errno == EROFS || errno == EPERM))
        env->ev_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (env->ev_fd < 0) {
        rc = errno;
        goto fail;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        bool exclusive = flock(env->ev_fd, LOCK_EX | LOCK_NB) == 0;
        if (!exclusive && (rc = flock_retry(env->ev_fd, LOCK_SH)))
            goto fail;
        struct stat st;
        if (fstat(env->ev_fd, &st) != 0) {
            rc = errno;
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = DSHM_BAD_MAGIC;
            goto fail;
        }
        dshm_header hdr;
        memset(&hdr, 0, sizeof hdr);
        ssize_t got = pread(env->ev_fd, &hdr, sizeof hdr, 0);
        if (got < 0) {
            rc = errno;
            goto fail;
        }
        bool blank = st.st_size == 0 || half_made(&hdr, got, (uint64_t)st.st_size);
        if (blank && st.st_size < (off_t)DSHM_HEADER_SIZE && !exclusive) {
            /* Someone else is creating it: wait for the magic. */
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((uint64_t)(now.tv_sec - start.tv_sec) * 1000000000u + (uint64_t)now.tv_nsec -
                    (uint64_t)start.tv_nsec > DSHM_OPEN_WAIT_NS) {
                rc = DSHM_BUSY;
                goto fail;
            }
            flock(env->ev_fd, LOCK_UN);
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            continue;
        }
        if (blank && exclusive && create && env->ev_writable) {
            if (st.st_size && ftruncate(env->ev_fd, 0) != 0) {
                rc = errno;
                goto fail;
            }
            if ((rc = init_file(env->ev_fd, NULL)))
                goto fail;
            continue;   /* validate what was written, like any opener */
        }
        if (got != (ssize_t)sizeof hdr) {
            /* Shorter than a header: ours but cut short, or not ours. */
            rc = got >= DSHM_MAGIC_LEN && memcmp(hdr.hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN) == 0
               ? DSHM_TRUNCATED : DSHM_BAD_MAGIC;
            goto fail;
        }
        if ((rc = validate_header(&hdr, (uint64_t)st.st_size)))
            goto fail;
        if ((rc = env_map(env, (uint64_t)st.st_size, want)))
            goto fail;
        if (exclusive) {
            /* Alone with the file: no process can hold the writer lock now.
             * A handle that may write the file checks the lock and repairs
             * (dshm_mutex_probe). A read-only one ('r') writes nothing: it
             * only looks at the lock word. One that names a holder is left
             * by a process the kernel could not clean up after; the handle
             * remembers it (it never waits for that lock) and gives up its
             * flock, so that the next writable opener has the file to
             * itself and resets the lock and repairs. (A holder that died
             * and was seen dying is no obstacle: the next writer's lock
             * returns EOWNERDEAD and repairs.) */
            int shared = LOCK_SH;
            if (rdonly) {
                uint32_t w;
                if (dshm_lock_word(DSHM_HDR(env), &w) && w != 0 && !(w & DSHM_LOCK_OWNER_DIED)) {
                    env->ev_ghost_lock = w;
                    shared = LOCK_UN;
                }
            } else if (env->ev_writable) {
                bool repair, reinit;
                dshm_header *hd = DSHM_HDR(env);
                if ((rc = dshm_mutex_probe(hd, &repair, &reinit)))
                    goto fail;
                if (repair)
                    hd->hd_repair = 1;   /* before a reset mutex forgets its dead holder */
                if (reinit && (rc = dshm_mutex_init(hd)))
                    goto fail;
                if (repair) {
                    /* Repair now, before anyone writes. */
                    if ((rc = dshm_lock0(env, repaired)))
                        goto fail;
                    dshm_unlock0(env);
                }
            }
            if ((rc = flock_retry(env->ev_fd, shared)))
                goto fail;
        }
        break;
    }
    *out = env;
    return 0;
fail:
    env_free(env);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Recovery                                                                */

int dshm_recover(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (!env->ev_writable)
        return DSHM_NEED_RECOVERY;
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    if (!(ss & 1))
        atomic_store_explicit(&hd->hd_struct_seq, ++ss, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    DSHM_CRASH_POINT("repair-begin");
    int rc = dshm_index_finish_split(env);
    if (rc)
        goto out;
    DSHM_CRASH_POINT("repair-split");
    /* Rebuild every bucket its writer left inside an odd window. */
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(dir);
    if (gd > DSHM_MAX_DEPTH || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), limit)) {
        rc = DSHM_CORRUPT;
        goto out;
    }
    const _Atomic uint64_t *d = DSHM_AT(env, DSHM_DIR_OFF(dir));
    for (uint64_t i = 0; i < ((uint64_t)1 << gd); i++) {
        uint64_t b = atomic_load_explicit(&d[i], memory_order_relaxed);
        if (b % 64 || !dshm_in(b, DSHM_BUCKET_SIZE, limit)) {
            rc = DSHM_CORRUPT;
            goto out;
        }
        dshm_bucket *bk = DSHM_AT(env, b);
        uint64_t s = atomic_load_explicit(&bk->bk_seq, memory_order_relaxed);
        if (s & 1) {
            if ((rc = dshm_index_rebuild_page(env, b)))
                goto out;
            atomic_store_explicit(&bk->bk_seq, s + 1, memory_order_release);
            DSHM_CRASH_POINT("repair-bucket");
        }
    }
    /* A batch that never reached its commit point is dropped (its records
     * become free space in the rebuild); a committed one is finished. */
    dshm_batch_drop_staged(env);
    if ((rc = dshm_space_rebuild(env, false)))
        goto out;
    DSHM_CRASH_POINT("repair-space");
    if ((rc = dshm_batch_recover(env)))
        goto out;
    DSHM_CRASH_POINT("repair-end");
    hd->hd_recoveries++;
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    /* A recovery is a commit (a batch it finished became visible): wake
     * the waiters now, whichever call (a write, check(), a read's
     * fallback) is running it. A rare path: the system call under the
     * lock does not matter. */
    dshm_wake_waiters(env);
out:
    /* Parity restored (odd -> even) only by a repair that finished. One
     * that failed leaves the window odd, never even over a half-applied
     * batch or a half-rebuilt bucket: readers fall back to the lock, which
     * repairs (a writer: hd_repair stays set) or reports. */
    if (rc == 0)
        atomic_store_explicit(&hd->hd_struct_seq, ss + 1, memory_order_release);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Handles                                                                 */

/* A read-only handle found hd_moved stale (the path still names this
 * file) at this commit, and nothing was committed since. */
static bool moved_stale(dshm_env *env, uint64_t commit) {
    uint64_t m = atomic_load_explicit(&env->ev_stale_moved, memory_order_relaxed);
    return m != 0 && m == commit + 1;
}

/* Replace the handle's mapping: after a reorganize (the path now names a
 * new file), or when the file outgrew this mapping's reservation. The old
 * mapping is retired, and unmapped by reclaim() once no call that may have
 * loaded it is in flight. */
static int refresh(dshm_db *db, dshm_env **envp, uint64_t want) {
    int rc = 0;
    pthread_mutex_lock(&db->db_lock);
    dshm_guard_tls.db_locked = &db->db_lock;   /* a SIGBUS below gives it back */
    dshm_env *cur = atomic_load_explicit(&db->db_env, memory_order_acquire);
    dshm_header *hd = DSHM_HDR(cur);
    dshm_env *nenv = NULL;
    uint64_t commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    if (atomic_load_explicit(&hd->hd_moved, memory_order_acquire) && !moved_stale(cur, commit)) {
        rc = env_open(db->db_path, db->db_flags & DSHM_RDONLY, 0, want, &nenv, NULL);
        struct stat a, b;
        if (!rc && fstat(nenv->ev_fd, &a) == 0 && fstat(cur->ev_fd, &b) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            /* The path still names this file: the flag outlived a crash
             * between reorganize's rename and its directory sync. A handle
             * that may write clears it under the lock; a read-only one
             * writes nothing and remembers it as stale until the next
             * commit (a writer clears it before it commits). */
            env_free(nenv);
            nenv = NULL;
            if (!(db->db_flags & DSHM_RDONLY) && cur->ev_writable) {
                if (dshm_lock0(cur, NULL) == 0) {
                    /* Looked at again under the lock: an 'n' or reorganize
                     * renames over the path while it holds this lock. */
                    struct stat named;
                    if (stat(db->db_path, &named) == 0 && named.st_ino == b.st_ino && named.st_dev == b.st_dev)
                        atomic_store_explicit(&hd->hd_moved, 0, memory_order_release);
                    dshm_unlock0(cur);
                }
            } else {
                atomic_store_explicit(&cur->ev_stale_moved, commit + 1, memory_order_relaxed);
            }
        } else if (!rc) {
            atomic_fetch_add_explicit(&db->db_reopens, 1, memory_order_relaxed);
        }
    } else {
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
        if (size > cur->ev_resv || want > cur->ev_resv) {
            nenv = calloc(1, sizeof *nenv);
            if (!nenv) {
                rc = ENOMEM;
            } else {
                nenv->ev_writable = cur->ev_writable;
                nenv->ev_fd = fcntl(cur->ev_fd, F_DUPFD_CLOEXEC, 0);
                if (nenv->ev_fd < 0)
                    rc = errno;
                else
                    rc = env_map(nenv, size, (size > want ? size : want) * 2);
                if (rc) {
                    env_free(nenv);
                    nenv = NULL;
                }
            }
        }
    }
    if (nenv) {
        atomic_store_explicit(&db->db_env, nenv, memory_order_seq_cst);
        cur->ev_older = db->db_retired;
        db->db_retired = cur;
        atomic_store_explicit(&db->db_has_retired, 1, memory_order_relaxed);
        cur = nenv;
    }
    dshm_guard_tls.db_locked = NULL;
    pthread_mutex_unlock(&db->db_lock);
    *envp = cur;
    return rc;
}

/* Enter a call: count it in flight, refuse a closed handle, follow a
 * reorganize or a growth past this mapping. Two loads of the header on the
 * fast path, no system call. */
static int enter(dshm_db *db, dshm_env **envp) {
    if (!db)
        return DSHM_INVALID;
    atomic_fetch_add_explicit(&db->db_inflight, 1, memory_order_seq_cst);
    dshm_guard_tls.entered = db;   /* from here a SIGBUS ends the call with leave() */
    if (atomic_load_explicit(&db->db_closed, memory_order_seq_cst)) {
        leave(db);
        return DSHM_CLOSED;
    }
    /* seq_cst, paired with the swap in refresh() and the check in
     * reclaim(): a call that loaded a mapping is counted in flight. */
    dshm_env *env = atomic_load_explicit(&db->db_env, memory_order_seq_cst);
    dshm_header *hd = DSHM_HDR(env);
    if (__builtin_expect(atomic_load_explicit(&hd->hd_moved, memory_order_relaxed) ||
                         atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) > env->ev_resv, 0) &&
        !(atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) <= env->ev_resv &&
          moved_stale(env, atomic_load_explicit(&hd->hd_commit, memory_order_acquire)))) {
        int rc = refresh(db, &env, 0);
        if (rc) {
            leave(db);
            return rc;
        }
    }
    *envp = env;
    return 0;
}

/* Unmap superseded mappings once no call is in flight: a call that
 * entered later loads the current mapping, never a retired one. */
static void reclaim(dshm_db *db) {
    dshm_env *old = NULL;
    pthread_mutex_lock(&db->db_lock);
    if (atomic_load_explicit(&db->db_inflight, memory_order_seq_cst) == 0) {
        old = db->db_retired;
        db->db_retired = NULL;
        atomic_store_explicit(&db->db_has_retired, 0, memory_order_relaxed);
    }
    pthread_mutex_unlock(&db->db_lock);
    env_free(old);
}

static void leave(dshm_db *db) {
    dshm_guard_tls.entered = NULL;
    if (atomic_fetch_sub_explicit(&db->db_inflight, 1, memory_order_seq_cst) == 1 &&
        __builtin_expect(atomic_load_explicit(&db->db_has_retired, memory_order_relaxed), 0))
        reclaim(db);
}

/* Remove "<path>.dshm-reorg-<pid>" and "<path>.dshm-new-<pid>" copies whose
 * writer died before renaming them into place (found after a recovery). */
static void remove_orphans(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : copy) : ".";
    const char *base = slash ? slash + 1 : copy;
    if (slash)
        *slash = 0;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *name = de->d_name, *rest;
        if (strncmp(name, base, blen) != 0)
            continue;
        rest = name + blen;
        if (strncmp(rest, ".dshm-reorg-", 12) == 0)
            rest += 12;
        else if (strncmp(rest, ".dshm-new-", 10) == 0)
            rest += 10;
        else
            continue;
        char *end;
        long pid = strtol(rest, &end, 10);
        bool dead = *end == 0 && pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (dead)
            unlinkat(dirfd(d), name, 0);
    }
    if (d)
        closedir(d);
    free(copy);
}

/* After a recovery: a writer that died inside reorganize between the rename
 * and marking this file moved left the path naming another store. Mark
 * this one moved so every handle follows the path. Runs under the lock. */
static void remove_orphans(const char *path);

static void check_replaced(dshm_db *db, dshm_env *env) {
    struct stat mine, named;
    remove_orphans(db->db_path);
    if (fstat(env->ev_fd, &mine) != 0 || stat(db->db_path, &named) != 0)
        return;
    if (mine.st_ino != named.st_ino || mine.st_dev != named.st_dev)
        atomic_store_explicit(&DSHM_HDR(env)->hd_moved, 1, memory_order_release);
}

/* Take the writer lock on the current file, with room in the mapping for
 * `room` more bytes. Follows a reorganize that happened while waiting. */
static int wlock(dshm_db *db, dshm_env **envp, uint64_t room) {
    for (;;) {
        dshm_env *env = *envp;
        if (!env->ev_writable)
            return DSHM_READONLY;
        bool recovered;
        dshm_header *hd = DSHM_HDR(env);
        /* Time the wait only when the lock looked taken: no clock read on
         * the uncontended path. */
        bool held = atomic_load_explicit(&hd->hd_lock_pid, memory_order_relaxed) != 0;
        uint64_t t0 = held ? dshm_now_ns() : 0;
        int rc = dshm_lock0(env, &recovered);
        if (rc)
            return rc;
        if (held) {
            atomic_fetch_add_explicit(&db->db_lock_waits, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&db->db_lock_wait_ns, dshm_now_ns() - t0, memory_order_relaxed);
        }
        if (recovered)
            check_replaced(db, env);
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
        uint64_t need = hd->hd_top + room;
        bool moved = atomic_load_explicit(&hd->hd_moved, memory_order_relaxed);
        if (!moved && size <= env->ev_resv && need <= env->ev_resv && need >= hd->hd_top)
            return 0;
        dshm_unlock0(env);
        if (need < hd->hd_top)
            return DSHM_FULL;
        if ((rc = refresh(db, envp, moved ? 0 : need)))
            return rc;
        if (!moved && (*envp)->ev_resv < need)
            return DSHM_FULL;
    }
}

/* Create an initialised store with permissions `mode` in a private name
 * beside path and rename it over path. */
/* fsync the directory holding path, so a rename in it is durable. */
static void sync_parent(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash) {
        *slash = 0;
        dir = slash == copy ? "/" : copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0) { /* best effort: some file systems refuse */ }
        close(fd);
    }
    free(copy);
}

static int create_renamed(const char *path, int mode, uint64_t commit) {
    size_t n = strlen(path) + 48;
    char *tmp = malloc(n);
    if (!tmp)
        return ENOMEM;
    snprintf(tmp, n, "%s.dshm-new-%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    int rc = fd < 0 ? errno : fchmod(fd, (mode_t)mode) ? errno : init_file(fd, NULL);
    /* The commit numbers go on from the store it replaces: a waiter's
     * next wait(since=...) on the new file is not behind it. */
    if (!rc && commit &&
        pwrite(fd, &commit, sizeof commit, (off_t)offsetof(dshm_header, hd_commit)) != (ssize_t)sizeof commit)
        rc = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = errno;
    if (rc && fd >= 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* 'n' on a file others have open: a fresh store is renamed over the path
 * while the old file's writer lock is held, and the old file is marked
 * moved before that lock is given back, so no writer can commit to the
 * old file between the rename and the mark. Waits for the lock at most
 * DSHM_OPEN_WAIT_NS (a live writer makes 'n' fail with DSHM_BUSY rather
 * than wait for ever). A death between the rename and the mark leaves the
 * lock's holder dead: the next lock holder repairs, finds the path naming
 * another file (check_replaced) and marks it moved. */
static int replace_in_use(int fd, const char *path) {
    struct stat st;
    dshm_header hdr;
    if (fstat(fd, &st) != 0)
        return errno;
    dshm_header *hd = MAP_FAILED;
    int lrc = EINVAL;
    if (pread(fd, &hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr && validate_header(&hdr, UINT64_MAX) == 0)
        hd = mmap(NULL, DSHM_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (hd != MAP_FAILED && dshm_mutex_kind_ours(hd)) {
        uint64_t until = dshm_now_ns() + DSHM_OPEN_WAIT_NS;   /* monotonic deadline */
        struct timespec rt;
        for (;;) {
            clock_gettime(CLOCK_REALTIME, &rt);
            rt.tv_nsec += 100000000;   /* wake every 0.1 s to look at the monotonic deadline */
            if (rt.tv_nsec >= 1000000000) {
                rt.tv_sec++;
                rt.tv_nsec -= 1000000000;
            }
            lrc = pthread_mutex_timedlock(&hd->hd_mutex.m, &rt);
            if (lrc != ETIMEDOUT || dshm_now_ns() >= until)
                break;
        }
        if (lrc == ETIMEDOUT) {
            munmap(hd, DSHM_HEADER_SIZE);
            return DSHM_BUSY;
        }
        if (lrc == EOWNERDEAD) {
            hd->hd_repair = 1;   /* in the file before the mutex is made consistent */
            pthread_mutex_consistent(&hd->hd_mutex.m);
            lrc = 0;
        }
    }
    /* The commit numbers go on from the old store's (it is bumped below). */
    uint64_t commit = hd == MAP_FAILED ? 0
                    : atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) + 1;
    int rc = create_renamed(path, (int)(st.st_mode & 07777), commit);
    if (!rc)
        DSHM_CRASH_POINT("n-rename");
    if (hd != MAP_FAILED) {
        if (!rc) {
            atomic_store_explicit(&hd->hd_moved, 1, memory_order_release);
            atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        }
        if (lrc == 0)
            pthread_mutex_unlock(&hd->hd_mutex.m);
        if (!rc) {
            dshm_env tmp = { .ev_fd = fd, .ev_writable = 1, .ev_base = (char *)hd, .ev_resv = DSHM_HEADER_SIZE };
            dshm_wake_waiters(&tmp);
        }
        munmap(hd, DSHM_HEADER_SIZE);
    }
    return rc;
}

static int dshm_open0(const char *path, int flags, int mode, dshm_db **out) {
    if (!path || !out || (flags & ~(DSHM_RDONLY | DSHM_CREATE | DSHM_TRUNC | DSHM_SYNC)) ||
        ((flags & DSHM_RDONLY) && (flags & (DSHM_CREATE | DSHM_TRUNC))))
        return DSHM_INVALID;
    dshm_db *db = calloc(1, sizeof *db);
    if (!db)
        return ENOMEM;
    db->db_path = strdup(path);
    db->db_flags = flags & (DSHM_RDONLY | DSHM_SYNC);
    db->db_pid = (int)getpid();
    if (!db->db_path) {
        free(db);
        return ENOMEM;
    }
    pthread_mutex_init(&db->db_lock, NULL);
    dshm_env *env = NULL;
    int rc = 0;
    if (flags & DSHM_TRUNC) {
        /* 'n': a new, empty store. In place if no one else has the file
         * open; otherwise a fresh file is renamed over the path and the
         * old one marked moved, so its users follow. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
        if (fd < 0) {
            rc = errno;
            goto fail;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            rc = ftruncate(fd, 0) ? errno : init_file(fd, NULL);
        else
            rc = replace_in_use(fd, path);
        close(fd);
        if (rc)
            goto fail;
    }
    bool repaired;
    rc = env_open(path, flags & (DSHM_RDONLY | DSHM_CREATE), mode, 0, &env, &repaired);
    if (rc)
        goto fail;
    /* Reopen and reorganize use the file's absolute, resolved name: a
     * chdir() or a symlink must not send them elsewhere. */
    char *resolved = realpath(path, NULL);
    if (resolved) {
        free(db->db_path);
        db->db_path = resolved;
    }
    if (repaired)
        check_replaced(db, env);
    atomic_store_explicit(&db->db_env, env, memory_order_release);
    *out = db;
    return 0;
fail:
    pthread_mutex_destroy(&db->db_lock);
    free(db->db_path);
    free(db);
    return rc;
}

int dshm_open(const char *path, int flags, int mode, dshm_db **out) {
    pthread_once(&crash_once, hooks_init);
    guard_init();   /* back in front of a SIGBUS handler installed since */
    /* The probe and a repair at open touch the mapping: under the guard. */
    GUARDED(int, dshm_open0(path, flags, mode, out));
}

void dshm_close(dshm_db *db) {
    if (!db || atomic_exchange_explicit(&db->db_closed, 1, memory_order_seq_cst))
        return;
    /* This handle's threads asleep in dshm_wait() end their call. */
    dshm_close_wake(db);
    /* Wait for the calls other threads have in flight; a child after
     * fork() has none (its copy of the counter may hold its parent's). */
    while (db->db_pid == (int)getpid() && atomic_load_explicit(&db->db_inflight, memory_order_seq_cst) != 0)
        sched_yield();
    pthread_mutex_lock(&db->db_lock);
    dshm_env *env = atomic_exchange_explicit(&db->db_env, NULL, memory_order_acq_rel);
    dshm_env *old = db->db_retired;
    db->db_retired = NULL;
    pthread_mutex_unlock(&db->db_lock);
    env_free(env);
    env_free(old);
}

void dshm_free(dshm_db *db) {
    if (!db)
        return;
    dshm_close(db);
    pthread_mutex_destroy(&db->db_lock);
    free(db->db_path);
    free(db);
}

/* ---------------------------------------------------------------------- */
/* Reads                                                                   */

/* Wait a little after losing to the writer: spin first, then yield. */
static void backoff(int attempt) {
    if (attempt < 16) {
        for (int i = 0; i < (1 << (attempt / 2)); i++)
            dshm_pause();
    } else {
        sched_yield();
    }
}

/* A read attempt: without the lock it returns DSHM_RETRY when a seqlock
 * counter was odd or moved, DSHM_CORRUPT only for damage met while nothing
 * moved (see dshm_index_read); with the lock, a definitive answer. */
typedef int64_t (*read_fn)(dshm_env *env, bool locked, void *ctx);

/* Lock-free tries after the 16th stop once this much time went by. */
#define DSHM_READ_SPIN_NS ((uint64_t)2000000)      /* 2 ms */
/* A handle that cannot take the lock keeps trying this long at most. */
#define DSHM_READ_WAIT_NS ((uint64_t)5000000000)   /* 5 s */

/* Where this thread's last lock-free read met an odd counter. */
_Thread_local dshm_odd dshm_read_odd;

/* Take the writer lock for a read-only handle's definitive read: no
 * hd_lock_pid, no repair (dshm_lock_ro). Follows a reorganize, or a growth
 * past the mapping, that happened while it waited, as wlock() does. */
static int rlock(dshm_db *db, dshm_env **envp, bool *owed) {
    for (;;) {
        dshm_env *env = *envp;
        int rc = dshm_lock_ro(env, owed);
        if (rc)
            return rc;
        dshm_header *hd = DSHM_HDR(env);
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
        bool moved = atomic_load_explicit(&hd->hd_moved, memory_order_relaxed) &&
                     !moved_stale(env, atomic_load_explicit(&hd->hd_commit, memory_order_relaxed));
        if (!moved && size <= env->ev_resv)
            return 0;
        dshm_unlock_ro(env);
        if ((rc = refresh(db, envp, 0)))
            return rc;
        if (*envp == env && !moved)
            return DSHM_FULL;   /* could not map the grown file */
    }
}

/* A lock-free try gave up on an odd counter that no live writer holds: the
 * writer lock was free after the counter was seen odd, and the counter has
 * not moved since (a writer holds the lock for the whole of every odd
 * window, and closing one makes the counter grow). The window was left by
 * a writer that died; only a repair closes it. Needs glibc's lock word. */
static bool window_abandoned(dshm_env *env) {
    dshm_odd o = dshm_read_odd;
    if (!o.at)
        return false;
    uint32_t w;
    if (!dshm_lock_word(DSHM_HDR(env), &w) || w != 0)   /* acquire: the counter is read after */
        return false;
    return atomic_load_explicit(o.at, memory_order_relaxed) == o.val;
}

/* Run a read: lock-free tries first, while a writer is in the way (a hot
 * key, a huge value); after DSHM_READ_TRIES of them, or at once for damage
 * met while nothing moved, the definitive try under the writer lock. A
 * handle opened 'r' takes the lock without writing anything (rlock); it
 * answers DSHM_NEED_RECOVERY where a repair is owed and DSHM_CORRUPT for
 * damage without taking it. A handle on a file it may not write cannot
 * take the lock: it keeps trying, sleeping in between, for up to ~5 s,
 * unless a repair is plainly owed (DSHM_NEED_RECOVERY at once). */
static int64_t read_retry_n(dshm_db *db, dshm_env **envp, read_fn fn, void *ctx, int tries) {
    int64_t r = DSHM_RETRY;
    uint64_t t0 = 0;
    for (int i = 0; i < tries && r == DSHM_RETRY; i++) {
        if (i) {
            /* Bounded in time, not only in count (a yield under load can
             * take a whole time slice), and not at all for a window nobody
             * will close (a dead writer's, or a failed repair's): the
             * locked try repairs or reports at once. */
            if (window_abandoned(*envp))
                break;
            if (i == 16)
                t0 = dshm_now_ns();
            else if (i > 16 && dshm_now_ns() - t0 > DSHM_READ_SPIN_NS)
                break;
            atomic_fetch_add_explicit(&db->db_retries, 1, memory_order_relaxed);
            backoff(i);
            dshm_env *env = *envp;
            if (atomic_load_explicit(&DSHM_HDR(env)->hd_file_size, memory_order_acquire) > env->ev_resv) {
                int rc = refresh(db, envp, 0);   /* the file grew past this mapping */
                if (rc)
                    return rc > 0 ? -rc : rc;
            }
        }
        dshm_read_odd.at = NULL;
        r = fn(*envp, false, ctx);
    }
    if (r != DSHM_RETRY && r != DSHM_CORRUPT)
        return r;
    bool rdonly = db->db_flags & DSHM_RDONLY;
    if (r == DSHM_CORRUPT && (rdonly || !(*envp)->ev_writable))
        return r;   /* met with nothing moving: a locked try would read the same bytes */
    atomic_fetch_add_explicit(&db->db_fallbacks, 1, memory_order_relaxed);
    if (!rdonly) {
        /* A writable handle: its lock first runs a repair that is owed. */
        int rc = wlock(db, envp, 0);
        if (rc)
            return rc > 0 ? -rc : rc;
        r = fn(*envp, true, ctx);
        dshm_unlock0(*envp);
        return r;
    }
    if ((*envp)->ev_writable) {
        bool owed;
        int rc = rlock(db, envp, &owed);
        if (rc)
            return rc > 0 ? -rc : rc;
        /* A repair is owed (hd_repair): the store may hold a half-made
         * change that only the repair undoes. Say so rather than guess. */
        r = owed ? DSHM_NEED_RECOVERY : fn(*envp, true, ctx);
        dshm_unlock_ro(*envp);
        return r;
    }
    struct timespec ms = {0, 1000000};
    uint64_t until = dshm_now_ns() + DSHM_READ_WAIT_NS;   /* a bound in time, whatever the load */
    for (int i = 0; i < 5000 && r == DSHM_RETRY && dshm_now_ns() < until; i++) {
        if (dshm_lock_owner_died(DSHM_HDR(*envp)) || window_abandoned(*envp))
            return DSHM_NEED_RECOVERY;
        nanosleep(&ms, NULL);
        dshm_read_odd.at = NULL;
        r = fn(*envp, false, ctx);
    }
    return r == DSHM_RETRY ? DSHM_NEED_RECOVERY : r;
}

static int64_t read_retry(dshm_db *db, dshm_env **envp, read_fn fn, void *ctx) {
    return read_retry_n(db, envp, fn, ctx, DSHM_READ_TRIES);
}

typedef struct get_ctx {
    const char *key;
    size_t klen;
    char *buf;
    size_t cap;
    dshm_env *env;    /* the mapping h was computed for (the seed is per file) */
    uint64_t h;
} get_ctx;

static int64_t get_once(dshm_env *env, bool locked, void *p) {
    get_ctx *c = p;
    if (c->env != env) {
        c->h = dshm_key_hash(DSHM_HDR(env), c->key, c->klen);
        c->env = env;
    }
    return dshm_index_read(env, c->h, c->key, c->klen, c->buf, c->cap, locked);
}

static int64_t dshm_get0(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    if (!key && klen) {
        leave(db);
        return DSHM_INVALID;
    }
    get_ctx c = { key, klen, buf, cap, NULL, 0 };
    int64_t r = get_once(env, false, &c);
    if (r == DSHM_RETRY || r == DSHM_CORRUPT)
        r = read_retry(db, &env, get_once, &c);
    leave(db);
    return r;
}

static int64_t dshm_count0(dshm_db *db) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    uint64_t n = atomic_load_explicit(&DSHM_HDR(env)->hd_count, memory_order_acquire);
    leave(db);
    return n > (uint64_t)INT64_MAX ? DSHM_CORRUPT : (int64_t)n;
}

static uint64_t dshm_commit_id0(dshm_db *db) {
    dshm_env *env;
    if (enter(db, &env))
        return 0;
    uint64_t c = atomic_load_explicit(&DSHM_HDR(env)->hd_commit, memory_order_acquire);
    leave(db);
    return c;
}

/* ---------------------------------------------------------------------- */
/* Bucket snapshots: the unit of iteration.                                 */

typedef dshm_snap snap;

/* Copy the entries of the bucket covering `cursor` whose hash is >=
 * `from`, in slot order. Returns 0, DSHM_RETRY, DSHM_CORRUPT, or -ERANGE
 * with sn->used set to the size needed. */
static int snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, snap *sn) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    uint64_t limit = size;
    if (limit > env->ev_resv) {
        if (!locked)
            return DSHM_RETRY;   /* the file outgrew this mapping: read_retry maps it again */
        limit = env->ev_resv;
    }
    uint64_t ss1 = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
    if ((ss1 & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &hd->hd_struct_seq, ss1 };
        return DSHM_RETRY;
    }
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_acquire);
    uint64_t b = dshm_bucket_for(env, dir, cursor, limit);
    dshm_bucket *bk = NULL;
    uint64_t s1 = 0;
    unsigned ld = 0;
    uint64_t prefix = 0;
    size_t need = 0;
    int rc = DSHM_CORRUPT;
    sn->used = 0;
    if (!b)
        goto validate;
    bk = DSHM_AT(env, b);
    s1 = atomic_load_explicit(&bk->bk_seq, memory_order_acquire);
    if ((s1 & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &bk->bk_seq, s1 };
        return DSHM_RETRY;
    }
    ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
    prefix = atomic_load_explicit(&bk->bk_prefix, memory_order_relaxed);
    if (!dshm_bucket_covers(bk, cursor))   /* reused for another bucket, or damaged */
        goto validate;
    rc = 0;
    uint64_t page = b;
    for (unsigned hops = 0; page && !rc; hops++) {
        if (page % 64 || !dshm_in(page, DSHM_BUCKET_SIZE, limit) || hops > limit / DSHM_BUCKET_SIZE) {
            rc = DSHM_CORRUPT;
            break;
        }
        dshm_bucket *pg = DSHM_AT(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++) {
            uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
            uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
            if (!r || h < from)
                continue;
            if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, limit)) {
                rc = DSHM_CORRUPT;
                break;
            }
            const volatile dshm_rec *rec = DSHM_AT(env, r);
            uint64_t kl = rec->rc_klen, vl = values ? rec->rc_vlen : 0;
            if (vl > DSHM_MAX_VALUE || !dshm_in(r, DSHM_REC_HDR + kl + vl, limit)) {
                rc = DSHM_CORRUPT;
                break;
            }
            size_t sz = 4 + (values ? 8 : 0) + 8 + kl + vl;
            need += sz;
            if (need > sn->cap)
                continue;
            char *p = sn->buf + sn->used;
            uint32_t kl32 = (uint32_t)kl;
            memcpy(p, &kl32, 4); p += 4;
            if (values) { memcpy(p, &vl, 8); p += 8; }
            memcpy(p, &h, 8); p += 8;
            memcpy(p, (const char *)DSHM_AT(env, r + DSHM_REC_HDR), kl + vl);
            sn->used += sz;
        }
        page = atomic_load_explicit(&pg->bk_next, memory_order_relaxed);
    }
validate:
    if (!locked) {
        /* As in dshm_index_read: a counter that moved is a race; damage met
         * with nothing moved (counters, file size, directory and its entry
         * for the cursor) is real, and reported at once. */
        atomic_thread_fence(memory_order_acquire);
        if ((bk && atomic_load_explicit(&bk->bk_seq, memory_order_relaxed) != s1) ||
            atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) != ss1)
            return DSHM_RETRY;
        if (rc && (atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) != size ||
                   atomic_load_explicit(&hd->hd_dir, memory_order_relaxed) != dir ||
                   dshm_bucket_for(env, dir, cursor, limit) != b))
            return DSHM_RETRY;
    }
    if (rc)
        return rc;
    uint64_t span = ld ? (uint64_t)1 << (64 - ld) : 0;
    sn->last = ld == 0 || prefix + span == 0;
    sn->next = sn->last ? 0 : prefix + span;
    if (need > sn->cap) {
        sn->used = need;
        return -ERANGE;
    }
    return 0;
}

typedef struct snap_ctx {
    uint64_t cursor, from;
    bool values;
    snap *sn;
} snap_ctx;

static int64_t snap_once(dshm_env *env, bool locked, void *p) {
    snap_ctx *c = p;
    return snap_read(env, c->cursor, c->from, c->values, locked, c->sn);
}

/* snap_read with retries and the locked fallback. */
static int snap_get(dshm_db *db, dshm_env **envp, uint64_t cursor, uint64_t from, bool values, snap *sn) {
    snap_ctx c = { cursor, from, values, sn };
    return (int)read_retry(db, envp, snap_once, &c);
}

/* Grow sn to hold `need` bytes. */
static int snap_reserve(snap *sn, size_t need) {
    if (need <= sn->cap)
        return 0;
    size_t cap = sn->cap ? sn->cap : 65536;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sn->buf, cap);
    if (!p)
        return ENOMEM;
    sn->buf = p;
    sn->cap = cap;
    return 0;
}

/* Snapshot of the bucket at cursor, growing the buffer as needed. */
static int snap_full(dshm_db *db, dshm_env **envp, uint64_t cursor, uint64_t from, snap *sn) {
    for (;;) {
        int r = snap_get(db, envp, cursor, from, false, sn);
        if (r != -ERANGE)
            return r;
        if ((r = snap_reserve(sn, sn->used)))
            return r;
    }
}

/* Walk the entries of sn: returns the next record after pos. */
static bool snap_entry(const snap *sn, size_t *pos, const char **key, uint32_t *klen, uint64_t *hash) {
    if (*pos >= sn->used)
        return false;
    const char *p = sn->buf + *pos;
    memcpy(klen, p, 4);
    memcpy(hash, p + 4, 8);
    *key = p + 12;
    *pos += 12 + *klen;
    return true;
}

static int64_t copy_key(const char *key, uint32_t klen, char *buf, size_t cap) {
    if (klen <= cap && klen)
        memcpy(buf, key, klen);
    return klen;
}

/* First key at or after cursor, in the store's (hash) order. */
static int64_t key_from(dshm_db *db, dshm_env **envp, uint64_t cursor, snap *sn, char *buf, size_t cap) {
    for (;;) {
        int r = snap_full(db, envp, cursor, cursor, sn);
        if (r)
            return r > 0 ? -r : r;
        size_t pos = 0;
        const char *k;
        uint32_t kl;
        uint64_t h;
        if (snap_entry(sn, &pos, &k, &kl, &h))
            return copy_key(k, kl, buf, cap);
        if (sn->last)
            return DSHM_NOTFOUND;
        cursor = sn->next;
    }
}

static int64_t dshm_firstkey0(dshm_db *db, char *buf, size_t cap) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    snap sn = {0};
    int64_t r = key_from(db, &env, 0, &sn, buf, cap);
    free(sn.buf);
    leave(db);
    return r;
}

static int64_t dshm_nextkey0(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    if (!key && klen) {
        leave(db);
        return DSHM_INVALID;
    }
    /* The order is bucket by bucket in hash order, and slot order inside
     * a bucket: the successor is the entry after key in its bucket's
     * snapshot, or the first entry of a following bucket. */
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    snap sn = {0};
    int64_t r = snap_full(db, &env, h, 0, &sn);
    if (r) {
        r = r > 0 ? -r : r;
        goto out;
    }
    size_t pos = 0;
    const char *k;
    uint32_t kl;
    uint64_t eh;
    bool seen = false;
    r = DSHM_NOTFOUND;
    while (snap_entry(&sn, &pos, &k, &kl, &eh)) {
        if (seen) {
            r = copy_key(k, kl, buf, cap);
            goto out;
        }
        seen = eh == h && kl == klen && memcmp(k, key, klen) == 0;
    }
    if (seen && !sn.last)      /* an absent key has no successor, as in gdbm */
        r = key_from(db, &env, sn.next, &sn, buf, cap);
out:
    free(sn.buf);
    leave(db);
    return r;
}

static int64_t dshm_scan0(dshm_db *db, uint64_t *cursor, int *done, char *buf, size_t cap,
                  int flags, uint64_t *need) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    if (!cursor || !done || (!buf && cap)) {
        leave(db);
        return DSHM_INVALID;
    }
    bool values = flags & DSHM_SCAN_VALUES;
    size_t used = 0;
    int64_t r = 0;
    *done = 0;
    while (!*done) {
        snap sn = { .buf = buf + used, .cap = cap - used };
        int sr = snap_get(db, &env, *cursor, *cursor, values, &sn);
        if (sr == -ERANGE) {
            if (used == 0) {
                if (need)
                    *need = sn.used;
                r = -ERANGE;
            }
            break;
        }
        if (sr) {
            r = sr > 0 ? -sr : sr;
            break;
        }
        used += sn.used;
        if (sn.last)
            *done = 1;
        else
            *cursor = sn.next;
    }
    leave(db);
    return r < 0 ? r : (int64_t)used;
}

/* ---------------------------------------------------------------------- */
/* Writes                                                                  */

static int sync_env(dshm_env *env) {
    uint64_t size = atomic_load_explicit(&DSHM_HDR(env)->hd_file_size, memory_order_acquire);
    if (env->ev_writable && msync(env->ev_base, size, MS_SYNC) != 0)
        return errno;
    if (fsync(env->ev_fd) != 0 && errno != EINVAL)
        return errno;
    return 0;
}

/* Room a write may need beyond the top: the record, pages for a split
 * with overflow, and a directory doubling. */
static uint64_t write_room(dshm_env *env, uint64_t rsize) {
    unsigned gd = DSHM_DIR_DEPTH(atomic_load_explicit(&DSHM_HDR(env)->hd_dir, memory_order_relaxed));
    return rsize + 8 * (uint64_t)DSHM_BUCKET_SIZE + dshm_dir_bytes(gd + 1) + 128;
}

/* Store under the lock: write the record into free space, then publish. */
static int put_locked(dshm_env *env, uint64_t h, const char *key, size_t klen,
                      const char *val, size_t vlen, int flags) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_pos pos;
    int rc = dshm_index_find(env, h, key, klen, &pos);
    if (rc && rc != DSHM_NOTFOUND)
        return rc;
    bool found = rc == 0;
    if (found && (flags & DSHM_NOOVERWRITE))
        return DSHM_KEYEXIST;
    uint64_t rsize = dshm_rec_size(klen, vlen), off;
    if ((rc = dshm_alloc_record(env, rsize, &off)))
        return rc;
    dshm_rec *rec = DSHM_AT(env, off);
    rec->rc_klen = (uint32_t)klen;
    rec->rc_check = (uint32_t)h;
    rec->rc_vlen = vlen;
    if (klen)
        memcpy((char *)rec + DSHM_REC_HDR, key, klen);
    if (vlen)
        memcpy((char *)rec + DSHM_REC_HDR + klen, val, vlen);
    DSHM_CRASH_POINT("put-written");
    if (found) {
        dshm_bucket *pg = DSHM_AT(env, pos.ps_page);
        uint64_t old = atomic_load_explicit(&pg->bk_slots[pos.ps_slot].sl_rec, memory_order_relaxed);
        dshm_rec *orec = DSHM_AT(env, old);
        uint64_t osize = dshm_rec_size(orec->rc_klen, orec->rc_vlen);
        if (orec->rc_vlen > DSHM_MAX_VALUE || !dshm_in(old, osize, hd->hd_top)) {
            dshm_free_block(env, off, rsize);
            return DSHM_CORRUPT;
        }
        dshm_index_replace(env, &pos, off);
        DSHM_CRASH_POINT("put-replaced");
        dshm_free_block(env, old, osize);
        hd->hd_live_bytes += rsize - osize;
    } else {
        if ((rc = dshm_index_insert(env, h, off))) {
            dshm_free_block(env, off, rsize);
            return rc;
        }
        hd->hd_live_bytes += rsize;
        atomic_fetch_add_explicit(&hd->hd_count, 1, memory_order_release);
    }
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    return 0;
}

static int finish_write(dshm_db *db, dshm_env *env, int rc) {
    dshm_unlock0(env);
    /* Outside the lock: a waker's system call does not lengthen it. */
    dshm_wake_waiters(env);
    if (!rc) {
        atomic_fetch_add_explicit(&db->db_writes, 1, memory_order_relaxed);
        if (db->db_flags & DSHM_SYNC)
            rc = sync_env(env);
    }
    leave(db);
    return rc;
}

static int dshm_put0(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    if ((!key && klen) || (!val && vlen) || (flags & ~DSHM_NOOVERWRITE)) {
        leave(db);
        return DSHM_INVALID;
    }
    if (db->db_flags & DSHM_RDONLY) {
        leave(db);
        return DSHM_READONLY;
    }
    if (klen > DSHM_MAX_KEY || vlen > DSHM_MAX_VALUE) {
        leave(db);
        return DSHM_TOOBIG;
    }
    if ((rc = wlock(db, &env, write_room(env, dshm_rec_size(klen, vlen))))) {
        leave(db);
        return rc;
    }
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    return finish_write(db, env, put_locked(env, h, key, klen, val, vlen, flags));
}

static int dshm_del0(dshm_db *db, const char *key, size_t klen) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    if (!key && klen) {
        leave(db);
        return DSHM_INVALID;
    }
    if (db->db_flags & DSHM_RDONLY) {
        leave(db);
        return DSHM_READONLY;
    }
    if ((rc = wlock(db, &env, 0))) {
        leave(db);
        return rc;
    }
    dshm_header *hd = DSHM_HDR(env);
    uint64_t h = dshm_key_hash(hd, key, klen);
    dshm_pos pos;
    rc = dshm_index_find(env, h, key, klen, &pos);
    if (rc == 0) {
        dshm_bucket *pg = DSHM_AT(env, pos.ps_page);
        uint64_t old = atomic_load_explicit(&pg->bk_slots[pos.ps_slot].sl_rec, memory_order_relaxed);
        dshm_rec *orec = DSHM_AT(env, old);
        uint64_t osize = dshm_rec_size(orec->rc_klen, orec->rc_vlen);
        rc = orec->rc_vlen > DSHM_MAX_VALUE || !dshm_in(old, osize, hd->hd_top) ? DSHM_CORRUPT
           : dshm_index_remove(env, &pos);
        if (!rc) {
            DSHM_CRASH_POINT("del-removed");
            dshm_free_block(env, old, osize);
            hd->hd_live_bytes -= osize;
            atomic_fetch_sub_explicit(&hd->hd_count, 1, memory_order_release);
            atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        }
    }
    return finish_write(db, env, rc);
}

static int dshm_sync0(dshm_db *db) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    rc = sync_env(env);
    leave(db);
    return rc;
}

static int dshm_clear0(dshm_db *db) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    if (db->db_flags & DSHM_RDONLY) {
        leave(db);
        return DSHM_READONLY;
    }
    if ((rc = wlock(db, &env, write_room(env, 0)))) {
        leave(db);
        return rc;
    }
    /* Build an empty directory and bucket in free space and publish it
     * with one store; everything else is then unreachable, and the
     * rebuild hands it to the free lists (failing reads in flight). */
    dshm_header *hd = DSHM_HDR(env);
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    uint64_t olddir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    rc = dshm_index_init(env);   /* publishes the new, empty directory */
    if (!rc) {
        atomic_store_explicit(&hd->hd_struct_seq, ss + 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        DSHM_CRASH_POINT("clear");
        rc = dshm_space_rebuild(env, false);
        atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        atomic_store_explicit(&hd->hd_struct_seq, ss + 2, memory_order_release);
    }
    (void)olddir;
    return finish_write(db, env, rc);
}

/* ---------------------------------------------------------------------- */
/* Reorganize                                                              */

/* Copy every record of env (locked) into the new file's mapping nenv. */
static int copy_all(dshm_env *env, dshm_env *nenv) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(dir);
    /* Everything is checked before it is followed: a damaged file makes
     * reorganize fail with DSHM_CORRUPT (run check()), never copy garbage. */
    uint64_t top = hd->hd_top;
    if (gd > DSHM_MAX_DEPTH || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), top))
        return DSHM_CORRUPT;
    const _Atomic uint64_t *d = DSHM_AT(env, DSHM_DIR_OFF(dir));
    for (uint64_t i = 0; i < ((uint64_t)1 << gd); i++) {
        uint64_t b = atomic_load_explicit(&d[i], memory_order_relaxed);
        if (b % 64 || !dshm_in(b, DSHM_BUCKET_SIZE, top))
            return DSHM_CORRUPT;
        dshm_bucket *bk = DSHM_AT(env, b);
        unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
        if (ld > gd)
            return DSHM_CORRUPT;
        if (i % ((uint64_t)1 << (gd - ld)))
            continue;
        unsigned hops = 0;
        for (uint64_t page = b; page; page = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(env, page))->bk_next, memory_order_relaxed)) {
            if (page % 64 || !dshm_in(page, DSHM_BUCKET_SIZE, top) || ++hops > top / DSHM_BUCKET_SIZE)
                return DSHM_CORRUPT;
            dshm_bucket *pg = DSHM_AT(env, page);
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, top))
                    return DSHM_CORRUPT;
                dshm_rec *rec = DSHM_AT(env, r);   /* formed only once r is inside the file */
                if (rec->rc_vlen > DSHM_MAX_VALUE || !dshm_in(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), top))
                    return DSHM_CORRUPT;
                const char *k = (const char *)rec + DSHM_REC_HDR;
                uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                int rc = put_locked(nenv, h, k, rec->rc_klen, k + rec->rc_klen, rec->rc_vlen, 0);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

static int dshm_reorganize0(dshm_db *db) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    if (db->db_flags & DSHM_RDONLY) {
        leave(db);
        return DSHM_READONLY;
    }
    if ((rc = wlock(db, &env, 0))) {
        leave(db);
        return rc;
    }
    dshm_header *hd = DSHM_HDR(env);
    struct stat st;
    char *tmp = malloc(strlen(db->db_path) + 32);
    dshm_env *nenv = NULL;
    int nfd = -1;
    if (!tmp || fstat(env->ev_fd, &st) != 0) {
        rc = tmp ? errno : ENOMEM;
        goto out;
    }
    sprintf(tmp, "%s.dshm-reorg-%d", db->db_path, (int)getpid());
    nfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777);
    if (nfd < 0) {
        rc = errno;
        goto out;
    }
    if (fchmod(nfd, st.st_mode & 07777) != 0) { /* umask may have narrowed it; best effort */ }
    /* Same seed: the hash order, and so scan cursors, survive. */
    if ((rc = init_file(nfd, hd->hd_seed)))
        goto out;
    nenv = calloc(1, sizeof *nenv);
    if (!nenv) {
        rc = ENOMEM;
        goto out;
    }
    nenv->ev_fd = nfd;
    nenv->ev_writable = 1;
    nfd = -1;
    uint64_t need = hd->hd_live_bytes + 2 * hd->hd_buckets * DSHM_BUCKET_SIZE +
                    dshm_dir_bytes(DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed)));
    if ((rc = env_map(nenv, DSHM_INITIAL_SIZE, need * 2 + ((uint64_t)1 << 30))))
        goto out;
    if ((rc = copy_all(env, nenv)))
        goto out;
    /* Give back what the growth steps reserved beyond the data. */
    dshm_header *nhd = DSHM_HDR(nenv);
    uint64_t fit = (nhd->hd_top + 65535) & ~(uint64_t)65535;
    if (fit < atomic_load_explicit(&nhd->hd_file_size, memory_order_relaxed) &&
        ftruncate(nenv->ev_fd, (off_t)fit) == 0)
        atomic_store_explicit(&nhd->hd_file_size, fit, memory_order_release);
    /* Commit numbers go on from the old file's (wait(since=...) spans it). */
    atomic_store_explicit(&nhd->hd_commit, atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    nhd->hd_alloc_sum = dshm_alloc_checksum(nhd);   /* copy_all filled it without the lock */
    if ((rc = sync_env(nenv)))
        goto out;
    DSHM_CRASH_POINT("reorganize");
    /* The rename must replace this handle's own file, never another one:
     * if the path was replaced since the handle opened it (os.replace,
     * another store's 'n'), its new file is not ours to clobber. Checked
     * under the writer lock, right before the rename; a path that names
     * nothing (unlinked) gets the copy, so the store reappears there. */
    struct stat named;
    if (stat(db->db_path, &named) == 0 &&
        (named.st_ino != st.st_ino || named.st_dev != st.st_dev)) {
        rc = ESTALE;
        goto out;
    }
    if (rename(tmp, db->db_path) != 0) {
        rc = errno;
        goto out;
    }
    free(tmp);
    tmp = NULL;
    sync_parent(db->db_path);
    atomic_store_explicit(&hd->hd_moved, 1, memory_order_release);
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
out:
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (nfd >= 0)
        close(nfd);
    env_free(nenv);
    dshm_unlock0(env);
    dshm_wake_waiters(env);
    if (!rc) {
        dshm_env *cur;
        rc = refresh(db, &cur, 0);
    }
    leave(db);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Statistics and check                                                    */

static int dshm_stat0(dshm_db *db, dshm_stat_t *st) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc;
    if (!st) {
        leave(db);
        return DSHM_INVALID;
    }
    dshm_header *hd = DSHM_HDR(env);
    memset(st, 0, sizeof *st);
    st->st_count = atomic_load_explicit(&hd->hd_count, memory_order_acquire);
    st->st_file_size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    /* Allocator fields are the writer's; read them as a racy snapshot. */
    st->st_top = *(volatile uint64_t *)&hd->hd_top;
    st->st_live_bytes = *(volatile uint64_t *)&hd->hd_live_bytes;
    st->st_free_bytes = *(volatile uint64_t *)&hd->hd_free_bytes;
    st->st_buckets = *(volatile uint64_t *)&hd->hd_buckets;
    st->st_overflow = *(volatile uint64_t *)&hd->hd_overflow;
    st->st_recoveries = *(volatile uint64_t *)&hd->hd_recoveries;
    st->st_depth = DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_acquire));
    st->st_slots = DSHM_SLOTS;
    st->st_commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    st->st_format = hd->hd_format;
    st->st_page_size = hd->hd_bucket_size;
    st->st_lock_pid = atomic_load_explicit(&hd->hd_lock_pid, memory_order_relaxed);
    st->st_read_retries = atomic_load_explicit(&db->db_retries, memory_order_relaxed);
    st->st_read_fallbacks = atomic_load_explicit(&db->db_fallbacks, memory_order_relaxed);
    st->st_reopens = atomic_load_explicit(&db->db_reopens, memory_order_relaxed);
    st->st_map_size = env->ev_resv;
    uint64_t since = atomic_load_explicit(&hd->hd_lock_since, memory_order_relaxed), now = dshm_now_ns();
    st->st_lock_held_ns = st->st_lock_pid && since && since <= now ? now - since : 0;
    st->st_waiters = atomic_load_explicit(&hd->hd_waiters, memory_order_relaxed) & 1u;
#define C_(f) atomic_load_explicit(&db->f, memory_order_relaxed)
    st->st_writes = C_(db_writes);
    st->st_batches = C_(db_batches);
    st->st_batch_ops = C_(db_batch_ops);
    st->st_lock_waits = C_(db_lock_waits);
    st->st_lock_wait_ns = C_(db_lock_wait_ns);
    st->st_waits = C_(db_waits);
    st->st_wakeups = C_(db_wakeups);
    st->st_multi_retries = C_(db_multi_retries);
#undef C_
    leave(db);
    return 0;
}

typedef struct report { char *buf; size_t cap, len; int64_t problems; bool locked; } report;

static void problem(report *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(report *rp, const char *fmt, ...) {
    rp->problems++;
    if (!rp->buf || rp->len + 1 >= rp->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rp->buf + rp->len, rp->cap - rp->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        rp->len = rp->len + (size_t)n < rp->cap ? rp->len + (size_t)n : rp->cap - 1;
    if (rp->len + 1 < rp->cap)
        rp->buf[rp->len++] = '\n', rp->buf[rp->len] = 0;
}

typedef struct cext { uint64_t off, size; const char *what; } cext;

/* A key of a bucket chain, for finding a key filed twice. */
typedef struct ckey { uint64_t h, r; } ckey;

static int cmp_ckey(const void *a, const void *b) {
    const ckey *x = a, *y = b;
    return x->h < y->h ? -1 : x->h > y->h ? 1 : x->r < y->r ? -1 : x->r > y->r;
}

/* Report every key filed twice in keys[0..n) (records already checked). */
static void check_dups(dshm_env *env, report *rp, uint64_t b, ckey *keys, size_t n) {
    qsort(keys, n, sizeof *keys, cmp_ckey);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n && keys[j].h == keys[i].h; j++) {
            const dshm_rec *x = DSHM_AT(env, keys[i].r), *y = DSHM_AT(env, keys[j].r);
            if (keys[i].r == keys[j].r ||
                (x->rc_klen == y->rc_klen &&
                 memcmp((const char *)x + DSHM_REC_HDR, (const char *)y + DSHM_REC_HDR, x->rc_klen) == 0)) {
                problem(rp, "bucket %" PRIu64 ": a key is filed twice (records %" PRIu64 " and %" PRIu64 ")",
                        b, keys[i].r, keys[j].r);
                break;
            }
        }
    }
}

static int cmp_cext(const void *a, const void *b) {
    const cext *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Verify the whole structure, writing nothing to the file: under the
 * writer lock for a stable view, or without it (a racy view: then every
 * bound is also held to this mapping, and to the file size). */
static int64_t check_locked(dshm_env *env, report *rp) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    if (limit > env->ev_resv)
        limit = env->ev_resv;
    uint64_t top = *(volatile uint64_t *)&hd->hd_top;
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(dir);
    cext *ex = NULL;
    size_t n = 0, cap = 0;
#define ADD(o, s, w) do { \
        if (n == cap) { cap = cap ? cap * 2 : 4096; cext *v_ = realloc(ex, cap * sizeof *v_); \
                        if (!v_) { free(ex); return -ENOMEM; } ex = v_; } \
        ex[n].off = (o); ex[n].size = (s); ex[n].what = (w); n++; } while (0)
    if (top > limit || top < DSHM_HEADER_SIZE) {
        problem(rp, "header: top %" PRIu64 " outside the file (%" PRIu64 " bytes)", top, limit);
        if (top > limit)
            top = limit;   /* what lies past the file is never touched */
    }
    if (gd > DSHM_MAX_DEPTH || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), limit)) {
        problem(rp, "header: directory at %" PRIu64 " depth %u is out of bounds", DSHM_DIR_OFF(dir), gd);
        free(ex);
        return rp->problems;
    }
    ADD(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), "directory");
    if (hd->hd_batch && rp->locked)
        problem(rp, "header: a batch journal is pending (a writer died; the next writer finishes or drops it)");
    if (hd->hd_intent_op != DSHM_INTENT_NONE)
        problem(rp, "header: an unfinished split is recorded (a writer died; the next writer repairs it)");
    if (atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) & 1)
        problem(rp, "header: directory change in progress (a writer died; the next writer repairs it)");
    const _Atomic uint64_t *d = DSHM_AT(env, DSHM_DIR_OFF(dir));
    uint64_t count = 0;
    for (uint64_t i = 0; i < ((uint64_t)1 << gd); i++) {
        uint64_t b = atomic_load_explicit(&d[i], memory_order_relaxed);
        if (b % 64 || !dshm_in(b, DSHM_BUCKET_SIZE, limit)) {
            problem(rp, "directory[%" PRIu64 "]: bucket offset %" PRIu64 " is out of bounds", i, b);
            continue;
        }
        dshm_bucket *bk = DSHM_AT(env, b);
        unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
        uint64_t prefix = atomic_load_explicit(&bk->bk_prefix, memory_order_relaxed);
        if (atomic_load_explicit(&bk->bk_kind, memory_order_relaxed) != DSHM_BK_PRIMARY) {
            problem(rp, "bucket %" PRIu64 ": not a primary bucket page", b);
            continue;
        }
        if (ld > gd) {
            problem(rp, "bucket %" PRIu64 ": local depth %u above global depth %u", b, ld, gd);
            continue;
        }
        uint64_t idx_prefix = gd ? (i << (64 - gd)) : 0;
        uint64_t mask = ld ? ~(uint64_t)0 << (64 - ld) : 0;
        if ((idx_prefix & mask) != prefix)
            problem(rp, "directory[%" PRIu64 "]: bucket %" PRIu64 " covers another hash prefix", i, b);
        if (i % ((uint64_t)1 << (gd - ld)))
            continue;
        if (atomic_load_explicit(&bk->bk_seq, memory_order_relaxed) & 1)
            problem(rp, "bucket %" PRIu64 ": change in progress (a writer died; the next writer repairs it)", b);
        unsigned hops = 0;
        size_t nk = 0, kcap = 0;
        ckey *keys = NULL;
        for (uint64_t page = b; page; hops++) {
            if (page % 64 || !dshm_in(page, DSHM_BUCKET_SIZE, limit) || hops > limit / DSHM_BUCKET_SIZE) {
                problem(rp, "bucket %" PRIu64 ": overflow link %" PRIu64 " is out of bounds", b, page);
                break;
            }
            dshm_bucket *pg = DSHM_AT(env, page);
            ADD(page, DSHM_BUCKET_SIZE, page == b ? "bucket" : "overflow page");
            uint32_t used = 0;
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                used++;
                uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, top)) {
                    problem(rp, "page %" PRIu64 " slot %u: record offset %" PRIu64 " is out of bounds", page, s, r);
                    continue;
                }
                if (!dshm_slot_reachable(pg, s))
                    problem(rp, "page %" PRIu64 " slot %u: not reachable from its home slot %u (a probe stops "
                                "at an empty slot before it)", page, s, (unsigned)(h % DSHM_SLOTS));
                dshm_rec *rec = DSHM_AT(env, r);
                if (rec->rc_klen > DSHM_MAX_KEY || rec->rc_vlen > DSHM_MAX_VALUE ||
                    !dshm_in(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), top)) {
                    problem(rp, "record %" PRIu64 ": lengths %u/%" PRIu64 " run past the end", r, rec->rc_klen, rec->rc_vlen);
                    continue;
                }
                ADD(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), "record");
                if (nk == kcap) {
                    kcap = kcap ? kcap * 2 : DSHM_SLOTS;
                    ckey *v = realloc(keys, kcap * sizeof *v);
                    if (!v) {
                        free(keys);
                        free(ex);
                        return -ENOMEM;
                    }
                    keys = v;
                }
                keys[nk].h = h;
                keys[nk++].r = r;
                uint64_t kh = dshm_key_hash(hd, (const char *)rec + DSHM_REC_HDR, rec->rc_klen);
                if (kh != h)
                    problem(rp, "record %" PRIu64 ": key does not hash to its slot's hash", r);
                else if ((h & mask) != prefix)
                    problem(rp, "record %" PRIu64 ": filed in the wrong bucket", r);
            }
            if (used != atomic_load_explicit(&pg->bk_count, memory_order_relaxed))
                problem(rp, "page %" PRIu64 ": count says %u, %u slots used", page,
                        atomic_load_explicit(&pg->bk_count, memory_order_relaxed), used);
            count += used;
            page = atomic_load_explicit(&pg->bk_next, memory_order_relaxed);
        }
        check_dups(env, rp, b, keys, nk);
        free(keys);
    }
    if (count != atomic_load_explicit(&hd->hd_count, memory_order_relaxed))
        problem(rp, "header: count says %" PRIu64 ", %" PRIu64 " keys found", atomic_load_explicit(&hd->hd_count, memory_order_relaxed), count);
    /* Free lists: every block inside the allocated space, bounded walks. */
    uint64_t free_bytes = 0;
    for (unsigned c = 0; c < DSHM_NSMALL + DSHM_NLARGE; c++) {
        uint64_t off = c < DSHM_NSMALL ? hd->hd_small[c] : hd->hd_large[c - DSHM_NSMALL];
        for (uint64_t steps = 0; off; steps++) {
            if (off % DSHM_ALIGN || !dshm_in(off, sizeof(dshm_freeblk), top) || steps > top / DSHM_ALIGN) {
                problem(rp, "free list %u: block %" PRIu64 " is out of bounds", c, off);
                break;
            }
            dshm_freeblk *f = DSHM_AT(env, off);
            if (f->fr_size < DSHM_ALIGN || f->fr_size % DSHM_ALIGN || !dshm_in(off, f->fr_size, top)) {
                problem(rp, "free list %u: block %" PRIu64 " has a bad size %" PRIu64, c, off, f->fr_size);
                break;
            }
            ADD(off, f->fr_size, "free block");
            free_bytes += f->fr_size;
            off = f->fr_next;
        }
    }
    for (uint64_t off = hd->hd_bucket_free, steps = 0; off; steps++) {
        if (off % 64 || !dshm_in(off, DSHM_BUCKET_SIZE, top) || steps > top / DSHM_BUCKET_SIZE) {
            problem(rp, "bucket pool: page %" PRIu64 " is out of bounds", off);
            break;
        }
        ADD(off, DSHM_BUCKET_SIZE, "pooled page");
        off = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(env, off))->bk_next, memory_order_relaxed);
    }
    if (free_bytes != hd->hd_free_bytes)
        problem(rp, "header: free bytes say %" PRIu64 ", lists hold %" PRIu64, hd->hd_free_bytes, free_bytes);
    qsort(ex, n, sizeof *ex, cmp_cext);
    for (size_t i = 1; i < n; i++)
        if (ex[i - 1].off + ex[i - 1].size > ex[i].off)
            problem(rp, "%s at %" PRIu64 " overlaps %s at %" PRIu64, ex[i - 1].what, ex[i - 1].off,
                    ex[i].what, ex[i].off);
    free(ex);
#undef ADD
    return rp->problems;
}

/* Problems a read-only handle reports instead of repairing them: a repair
 * owed to the store. `unusable`: the lock could not be taken for another
 * reason (an unusable mutex). */
static void owed_problems(dshm_env *env, report *rp, bool unusable) {
    dshm_header *hd = DSHM_HDR(env);
    uint32_t w;
    bool known = dshm_lock_word(hd, &w);
    if (known && (w & DSHM_LOCK_OWNER_DIED))
        problem(rp, "writer lock: its holder died; a repair is owed "
                    "(a handle that may write the file repairs it when it takes the lock)");
    else if (known && env->ev_ghost_lock && w == env->ev_ghost_lock)
        problem(rp, "writer lock: held by a process that no longer exists; a repair is owed "
                    "(a handle that may write the file, opened with no other handle open, repairs it)");
    else if (unusable && dshm_lock_damaged(hd))
        problem(rp, "writer lock: its bytes are damaged "
                    "(a handle that may write the file, opened with no other handle open, resets it)");
    else if (unusable)
        problem(rp, "writer lock: unusable "
                    "(a handle that may write the file, opened with no other handle open, resets it)");
    if (*(volatile uint64_t *)&hd->hd_repair)
        problem(rp, "header: a repair is owed (a writer died or a repair failed); "
                    "a handle that may write the file repairs it when it takes the lock");
}

/* check_locked without the lock: run again while a writer commits under
 * it, so a live writer's half-done change is not reported as damage. */
static int64_t check_unlocked(dshm_env *env, report *rp) {
    dshm_header *hd = DSHM_HDR(env);
    for (int tries = 0;; tries++) {
        uint64_t c1 = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
        uint64_t ss1 = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
        rp->len = 0;
        rp->problems = 0;
        if (rp->buf && rp->cap)
            rp->buf[0] = 0;
        int64_t r = check_locked(env, rp);
        atomic_thread_fence(memory_order_acquire);
        if (r < 0 || tries == 7 ||
            (atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) == c1 &&
             atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) == ss1))
            return r;
        backoff(16);
    }
}

static int64_t dshm_check0(dshm_db *db, char *buf, size_t cap) {
    dshm_env *env;
    int rc = enter(db, &env);
    if (rc)
        return rc > 0 ? -rc : rc;
    report rp = { .buf = buf, .cap = cap };
    if (buf && cap)
        buf[0] = 0;
    int64_t r;
    if (!(db->db_flags & DSHM_RDONLY)) {
        /* A writable handle: its lock first runs a repair that is owed. */
        if ((rc = wlock(db, &env, 0))) {
            leave(db);
            return rc > 0 ? -rc : rc;
        }
        rp.locked = true;
        r = check_locked(env, &rp);
        dshm_unlock0(env);
    } else {
        /* Opened 'r': nothing is repaired; what is owed is reported. The
         * lock, if it can be taken without writing, gives a stable view. */
        bool owed = false;
        int lrc = env->ev_writable ? rlock(db, &env, &owed) : DSHM_READONLY;
        if (lrc == 0) {
            rp.locked = true;
            r = check_locked(env, &rp);
            if (r >= 0)
                owed_problems(env, &rp, false);
            dshm_unlock_ro(env);
        } else if (lrc == DSHM_NEED_RECOVERY || lrc == DSHM_READONLY) {
            r = check_unlocked(env, &rp);   /* no lock to take: a racy view */
            if (r >= 0)
                owed_problems(env, &rp, lrc == DSHM_NEED_RECOVERY);
        } else {
            leave(db);
            return lrc > 0 ? -lrc : lrc;
        }
        if (r >= 0)
            r = rp.problems;
    }
    leave(db);
    return r;
}

/* ---------------------------------------------------------------------- */
/* Public entry points: the calls above, under the SIGBUS guard.           */

int64_t dshm_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, dshm_get0(db, key, klen, buf, cap));
}
int64_t dshm_count(dshm_db *db) { GUARDED(int64_t, dshm_count0(db)); }
uint64_t dshm_commit_id(dshm_db *db) {
    dshm_guard *g = &dshm_guard_tls;
    if (g->active)
        return dshm_commit_id0(db);
    if (sigsetjmp(g->jb, 0)) {
        dshm_guard_fault(g);
        return 0;
    }
    g->active = 1;
    uint64_t r = dshm_commit_id0(db);
    g->active = 0;
    return r;
}
int64_t dshm_firstkey(dshm_db *db, char *buf, size_t cap) { GUARDED(int64_t, dshm_firstkey0(db, buf, cap)); }
int64_t dshm_nextkey(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, dshm_nextkey0(db, key, klen, buf, cap));
}
int64_t dshm_scan(dshm_db *db, uint64_t *cursor, int *done, char *buf, size_t cap, int flags, uint64_t *need) {
    GUARDED(int64_t, dshm_scan0(db, cursor, done, buf, cap, flags, need));
}
int dshm_put(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags) {
    GUARDED(int, dshm_put0(db, key, klen, val, vlen, flags));
}
int dshm_del(dshm_db *db, const char *key, size_t klen) { GUARDED(int, dshm_del0(db, key, klen)); }
int dshm_sync(dshm_db *db) { GUARDED(int, dshm_sync0(db)); }
int dshm_clear(dshm_db *db) { GUARDED(int, dshm_clear0(db)); }
int dshm_reorganize(dshm_db *db) { GUARDED(int, dshm_reorganize0(db)); }
int dshm_stat(dshm_db *db, dshm_stat_t *st) { GUARDED(int, dshm_stat0(db, st)); }
int64_t dshm_check(dshm_db *db, char *buf, size_t cap) { GUARDED(int64_t, dshm_check0(db, buf, cap)); }

/* ---------------------------------------------------------------------- */
/* Services for dshm_batch.c and dshm_wait.c                               */

uint64_t dshm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
int dshm_enter(dshm_db *db, dshm_env **envp) { return enter(db, envp); }
void dshm_leave(dshm_db *db) { leave(db); }
int dshm_wlock(dshm_db *db, dshm_env **envp, uint64_t room) { return wlock(db, envp, room); }
int dshm_finish_write(dshm_db *db, dshm_env *env, int rc) { return finish_write(db, env, rc); }
int dshm_sync_env(dshm_env *env) { return sync_env(env); }
int64_t dshm_read_retry(dshm_db *db, dshm_env **envp, dshm_read_fn fn, void *ctx, int tries) {
    return read_retry_n(db, envp, fn, ctx, tries);
}
int dshm_snap_reserve(dshm_snap *sn, size_t need) { return snap_reserve(sn, need); }
int dshm_snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, dshm_snap *sn) {
    return snap_read(env, cursor, from, values, locked, sn);
}
bool dshm_struct_begin(dshm_header *hd) {
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    if (ss & 1)
        return false;
    atomic_store_explicit(&hd->hd_struct_seq, ss + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return true;
}
void dshm_struct_end(dshm_header *hd, bool opened) {
    if (opened)
        atomic_store_explicit(&hd->hd_struct_seq,
                              atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) + 1,
                              memory_order_release);
}
