/**
 * @file dshm_wait.c
 * @brief Waiting for a commit without polling: a futex in the header.
 *        The waker's side is dshm_wake.c.
 *
 * The futex word is hd_waiters: bit 0 says "a process may be asleep", the
 * bits above count wake-ups. Shared futexes on a MAP_SHARED file mapping
 * are keyed by the file's page, so a waiter in one process is woken by a
 * writer in another, whatever address each mapped the page at.
 *
 *   waiter:  w = W; if !(w & 1): CAS W -> w|1;  c = hd_commit;
 *            if c > since: done;  else FUTEX_WAIT(W, w|1)
 *   writer:  hd_commit += 1;  w = W; if (w & 1): CAS W -> w+1; FUTEX_WAKE(all)
 *
 * Every operation here is sequentially consistent, so the two sides form a
 * Dekker pair: either the waiter sees the new commit and does not sleep,
 * or the writer sees bit 0 and wakes it; and a wake that comes between
 * the waiter's check and its FUTEX_WAIT changed W, so the kernel refuses
 * to put it to sleep. A writer pays one load of a header word when nobody
 * waits, and one system call per burst of commits when somebody does (the
 * wake clears bit 0 until a waiter sleeps again). dshm_interrupt() and
 * dshm_close() wake the same way, after setting what the waiter checks.
 *
 * Raising bit 0 needs a writable view of the header. A handle whose
 * process could open the file only read-only (ev_writable == 0) maps the
 * header page alone, writable, through a second descriptor (reopened from
 * /proc/self/fd: the same file, with the permission check of a fresh
 * open). Where that is refused too, the waiter sleeps in slices of
 * DSHM_POLL_NS and looks again: its wake-ups then take up to that long.
 * Layer 7: calls handles and the waker.
 * (Bit 0 is the one word a handle opened 'r' ever writes.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_wake.h"
#include "dshm_handle.h"

#define DSHM_POLL_NS ((int64_t)2000000)   /* 2 ms slices when bit 0 cannot be raised */

static long futex_call(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
    return syscall(SYS_futex, (uint32_t *)(void *)addr, op, val, ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void add_ns(struct timespec *ts, uint64_t ns) {
    ns += (uint64_t)ts->tv_nsec;
    ts->tv_sec += (time_t)(ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
}

static bool before(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Is the moved flag of env news to this waiter? Only if the path names
 * another file now (or nothing): the next call follows it, or reports why
 * it cannot (dshm_enter's refresh). A flag left on the file the path still
 * names (it outlived a crash between reorganize's rename and its directory
 * sync, or a handle could not clear it) is no change: the waiter sleeps on
 * this file, and returning would only have its caller call again at once.
 * Called only while hd_moved is set (one stat per wake-up then). */
static bool moved_away(dshm_db *db, dshm_env *env) {
    struct stat named;
    if (stat(db->db_path, &named) == 0 && (uint64_t)named.st_ino == env->ev_ino &&
        (uint64_t)named.st_dev == env->ev_dev)
        return false;
    /* A read-only handle may have found the flag stale before: forget it,
     * so that the next call's enter follows the path again. */
    atomic_store_explicit(&env->ev_stale_moved, 0, memory_order_relaxed);
    return true;
}

static int wait_unguarded(dshm_db *db, uint64_t since, int64_t timeout_ns, uint64_t *commit) {
    dshm_env *env;
    int rc = dshm_enter(db, &env);
    if (rc)
        return rc;
    atomic_fetch_add_explicit(&db->db_waits, 1, memory_order_relaxed);
    /* Counted before the first look at db_closed (seq_cst both sides):
     * dshm_close() either sees this waiter or is seen by it. */
    atomic_fetch_add_explicit(&db->db_waiting, 1, memory_order_seq_cst);
    uint64_t gen = atomic_load_explicit(&db->db_interrupt, memory_order_seq_cst);
    struct timespec deadline, now;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ns >= 0)
        add_ns(&deadline, (uint64_t)timeout_ns);
    dshm_header *hd = DSHM_HDR(env);
    uint64_t c;
    for (bool woke = false;; woke = true) {
        c = atomic_load_explicit(&hd->hd_commit, memory_order_seq_cst);
        /* A replaced file (reorganize, 'n') counts as a change: the next
         * call follows the path to the new one. (Both bump hd_commit too;
         * the flag alone is looked at for a path replaced otherwise.) At
         * every wake-up and timeout the path itself is looked at: an 'n'
         * or a reorganize killed between its rename and its mark left
         * neither, and nobody writes to this file any more. */
        if (c > since || (atomic_load_explicit(&hd->hd_moved, memory_order_acquire) && moved_away(db, env)) ||
            (woke && dshm_path_replaced(db, env))) {
            rc = 0;
            break;
        }
        if (atomic_load_explicit(&db->db_closed, memory_order_seq_cst)) {
            rc = DSHM_CLOSED;
            break;
        }
        if (atomic_load_explicit(&db->db_interrupt, memory_order_seq_cst) != gen) {
            rc = -EINTR;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (timeout_ns >= 0 && !before(&now, &deadline)) {
            rc = -ETIMEDOUT;
            break;
        }
        _Atomic uint32_t *w = dshm_guard_cover_waiters(db, env);
        /* Asleep DSHM_PATH_CHECK_NS at most before the next look at the path. */
        struct timespec until = now, *tsp = &until;
        add_ns(&until, DSHM_PATH_CHECK_NS);
        if (timeout_ns >= 0 && before(&deadline, &until))
            until = deadline;
        uint32_t wv;
        if (w) {
            wv = atomic_load_explicit(w, memory_order_seq_cst);
            if (!(wv & 1) && !atomic_compare_exchange_strong_explicit(w, &wv, wv | 1, memory_order_seq_cst,
                                                                      memory_order_seq_cst))
                continue;
            wv |= 1;
            /* Look again after raising the flag (the Dekker pair above). */
            c = atomic_load_explicit(&hd->hd_commit, memory_order_seq_cst);
            if (c > since || atomic_load_explicit(&db->db_closed, memory_order_seq_cst) ||
                atomic_load_explicit(&db->db_interrupt, memory_order_seq_cst) != gen)
                continue;
        } else {
            w = &hd->hd_waiters;   /* read-only: sleep on it in slices */
            wv = atomic_load_explicit(w, memory_order_seq_cst);
            struct timespec slice = now;
            add_ns(&slice, DSHM_POLL_NS);
            if (before(&slice, &until))
                until = slice;
        }
        long r = futex_call(w, FUTEX_WAIT_BITSET, wv, tsp);
        if (r == 0) {
            atomic_fetch_add_explicit(&db->db_wakeups, 1, memory_order_relaxed);
        } else if (errno == EINTR) {
            rc = -EINTR;   /* a signal: the caller runs its handlers, then calls again */
            break;
        } else if (errno != ETIMEDOUT && errno != EAGAIN) {
            rc = -errno;
            break;
        }
    }
    if (commit)
        *commit = c;
    atomic_fetch_sub_explicit(&db->db_waiting, 1, memory_order_seq_cst);
    dshm_leave(db);
    return rc;
}

int dshm_wait(dshm_db *db, uint64_t since, int64_t timeout_ns, uint64_t *commit) {
    GUARDED(int, wait_unguarded(db, since, timeout_ns, commit));
}

static int interrupt_unguarded(dshm_db *db) {
    dshm_env *env;
    if (dshm_enter(db, &env) == 0) {
        (void)dshm_guard_cover_waiters(db, env);   /* the page the wake touches */
        dshm_wake_handle(db);
        dshm_leave(db);
    }
    return 0;
}

static int interrupt_guarded(dshm_db *db) { GUARDED(int, interrupt_unguarded(db)); }

void dshm_interrupt(dshm_db *db) { (void)interrupt_guarded(db); }
