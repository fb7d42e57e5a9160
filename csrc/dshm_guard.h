/**
 * @file dshm_guard.h
 * @brief The guard (dshm_guard.c): test hooks, crash points, the SIGBUS
 *        guard's per-thread state and the ranges a call may touch
 *        (dshm_guard_cover). GUARDED, which ends a faulted call through
 *        dshm_guard_fault (dshm_handle.c), is in dshm_handle.h.
 *
 * Layer 0.
 */
#ifndef DSHM_GUARD_H
#define DSHM_GUARD_H

#include <setjmp.h>

#include "dshm_base.h"

/** Test hook: DSHM_CRASH_AT="point:n" kills the process with SIGKILL the
 *  n-th time the writer passes the named point (tests/crash). Costs one
 *  predictable branch when unset. */
extern int dshm_crash_armed;
void dshm_crash_hit(const char *point);
#define DSHM_CRASH_POINT(p) do { if (dshm_crash_armed) dshm_crash_hit(p); } while (0)
/** Test hook DSHM_TEST_COLLIDE=n: dshm_key_hash clears the top n bits of
 *  every key hash (64: all keys collide), to exercise hostile keys. */
extern int dshm_test_collide;
/** Flush @p fd to the disk: fdatasync (@p data_only) or fsync. 0, or
 *  -errno (EINVAL, a file that cannot be flushed, counts as done). The
 *  test hook DSHM_TEST_NOFLUSH=1 makes it do nothing: the test suite sets
 *  it so that its time does not depend on how fast the disk flushes. */
int dshm_flush(int fd, bool data_only);
/** Read the test hooks and install the SIGBUS handler (once a process). */
void dshm_hooks_init(void);
/** The binding's interrupt hook (dshm_set_interrupt_hook). */
typedef int (*dshm_interrupt_fn)(void);
/** Between two slices of a wait for the writer lock: does the binding's
 *  hook ask the wait to end (a signal arrived)? False without a hook. */
bool dshm_interrupt_requested(void);

/** Address ranges a guarded call may touch (dshm_guard_cover). */
#define DSHM_GUARD_RANGES 6
typedef struct dshm_guard_range {
    uintptr_t gr_lo;          /**< first byte */
    uint64_t gr_len;          /**< bytes */
} dshm_guard_range;

/** Per-thread state of the SIGBUS guard: a call that touches the mapping
 *  runs with `active` set, so a SIGBUS (the file was truncated under the
 *  mapping) jumps back to it instead of ending the process. Process-
 *  private, thread-local: written by its thread, read by that thread's
 *  SIGBUS handler (signal fences order the two). */
typedef struct dshm_guard {
    int active;               /**< a guarded call is running */
    int scoped;               /**< the call recorded the ranges it touches: a fault
                                   outside them (and the mapping whose writer lock
                                   it holds) is not ours. 0: a call that maps a file
                                   of its own (open, salvage) takes every fault */
    unsigned nrng;            /**< ranges recorded in rng */
    dshm_guard_range rng[DSHM_GUARD_RANGES]; /**< the handle's mappings the call
                                   entered or refreshed to, the header page mapped
                                   writable for a wait */
    sigjmp_buf jb;            /**< where the handler jumps back to */
    struct dshm_db *entered;  /**< the handle whose call is in flight */
    dshm_env *locked;         /**< the mapping whose writer lock is held */
    int locked_ro;            /**< held by a read-only taker: give it back, mark nothing */
    pthread_mutex_t *db_locked; /**< a handle's db_lock held by this call (refresh) */
} dshm_guard;
extern __attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;

/** Record [base, base+len) as a range the running guarded call may touch
 *  (a mapping of the store): a kernel SIGBUS there is a truncation, turned
 *  into DSHM_TRUNCATED; one elsewhere goes to the previous handler. When
 *  the ranges are full the last is replaced (the first, the mapping the
 *  call entered with, stays). */
static inline void dshm_guard_cover(const void *base, uint64_t len) {
    dshm_guard *g = &dshm_guard_tls;
    unsigned i = g->nrng;
    if (i && g->rng[i - 1].gr_lo == (uintptr_t)base && g->rng[i - 1].gr_len == len)
        return;
    if (i == DSHM_GUARD_RANGES)
        i--;
    g->rng[i].gr_lo = (uintptr_t)base;
    g->rng[i].gr_len = len;
    atomic_signal_fence(memory_order_release);   /* the range before the count */
    g->nrng = i + 1;
    g->scoped = 1;
}

#endif /* DSHM_GUARD_H */
