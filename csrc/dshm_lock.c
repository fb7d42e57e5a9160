/**
 * @file dshm_lock.c
 * @brief The writer lock: a robust, process-shared pthread mutex in the
 *        header page (hd_mutex).
 *
 * Who holds it: the one writer of the moment (any thread of any process),
 * and a reader that lost to the writer too often (the read fallback).
 * When a holder dies, the kernel's robust-futex list marks the mutex and
 * the next pthread_mutex_lock() returns EOWNERDEAD: that caller marks the
 * mutex consistent and flags the store for repair (hd_repair); the lock
 * reports the repair owed and its caller runs it (dshm_lock_repair, in
 * dshm_recover.c) before going on; if the repair fails, the flag stays and
 * every later holder tries again before it writes.
 * A mutex left locked by a process the kernel could not clean up after
 * (the machine rebooted with the file on disk) is found by the first
 * opener that gets the file to itself (dshm_mutex_probe at open, under an
 * exclusive flock) and is re-initialised, followed by a recovery.
 *
 * A handle opened 'r' writes nothing to the file. It may take the lock for
 * a stable view (a read fallback, check()), through dshm_lock_ro: that
 * writes no hd_lock_pid and runs no repair, and it never takes a lock
 * whose holder died (the mutex would then have to be marked consistent),
 * nor one whose holder no longer exists: it reports DSHM_NEED_RECOVERY,
 * and a writable handle repairs.
 *
 * Layer 2: calls the guard (which lock this thread holds) and the
 * allocator's checksum.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_space.h"
#include "dshm_lock.h"

int dshm_mutex_init(dshm_header *hd) {
    pthread_mutexattr_t attr;
    int rc;
    /* Zero first: a stale robust mutex must not keep its old owner bits. */
    memset(&hd->hd_mutex, 0, sizeof hd->hd_mutex);
    if ((rc = pthread_mutexattr_init(&attr)) != 0)
        return -rc;
    if ((rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) != 0 ||
        (rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) != 0 ||
        (rc = pthread_mutex_init(&hd->hd_mutex.m, &attr)) != 0) {
        pthread_mutexattr_destroy(&attr);
        return -rc;
    }
    pthread_mutexattr_destroy(&attr);
    /* Once locked and unlocked by its sole user, the mutex is in the state
     * every later unlock leaves it in (glibc: use count 1), which is what a
     * read-only handle checks before it takes the lock. */
    if ((rc = pthread_mutex_lock(&hd->hd_mutex.m)) != 0)
        return -rc;
    pthread_mutex_unlock(&hd->hd_mutex.m);
    atomic_store_explicit(&hd->hd_lock_pid, 0, memory_order_relaxed);
    return 0;
}

bool dshm_lock_word(const dshm_header *hd, uint32_t *w) {
#if defined(__GLIBC__)
    /* glibc keeps the futex word first in the mutex (nptl's __data.__lock),
     * and its lockers change it only with atomic instructions: a relaxed
     * atomic load of it is sound (the cast needs the same size and
     * alignment, which every glibc target gives). Acquire: what the caller
     * reads next is read after it. */
    _Static_assert(sizeof(_Atomic int) == sizeof(int), "futex word as an atomic int");
    *w = (uint32_t)atomic_load_explicit((const _Atomic int *)(const void *)&hd->hd_mutex.m.__data.__lock,
                                        memory_order_acquire);
    return true;
#else
    (void)hd;
    *w = 0;
    return false;
#endif
}

#if defined(__GLIBC__)
/* The __kind glibc gives a mutex initialised as dshm_mutex_init does. */
static int sane_kind = -1;
static pthread_once_t sane_once = PTHREAD_ONCE_INIT;

static void sane_init(void) {
    pthread_mutexattr_t attr;
    pthread_mutex_t m;
    if (pthread_mutexattr_init(&attr) != 0)
        return;
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0 &&
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0 &&
        pthread_mutex_init(&m, &attr) == 0) {
        sane_kind = m.__data.__kind;
        pthread_mutex_destroy(&m);
    }
    pthread_mutexattr_destroy(&attr);
}

/* One look at the mutex: of the kind we make, and either held by a thread
 * (its unlock puts the fields in order) or free (lock word 0) with every
 * field a locker sets back as its unlock leaves it: owner 0, robust-list
 * links NULL, use count 1 (a robust lock sets it to 1 and the unlock leaves
 * it; dshm_mutex_init starts it so). The fields are read with volatile
 * loads, racing with lockers: a locker in between can make a look fail,
 * never pass wrongly. */
static bool mutex_looks_sane(const dshm_header *hd) {
    const volatile struct __pthread_mutex_s *d = &hd->hd_mutex.m.__data;
    uint32_t w;
    if (d->__kind != sane_kind)
        return false;
    dshm_lock_word(hd, &w);
    if (w != 0)   /* held: its holder's unlock puts the fields in order. A
                     word that names no holder wakes no waiter: damage */
        return (w & (DSHM_LOCK_TID_MASK | DSHM_LOCK_OWNER_DIED)) != 0;
    bool clear = d->__count == 1 && d->__owner == 0 && d->__list.__next == NULL;
# if __PTHREAD_MUTEX_HAVE_PREV
    clear = clear && d->__list.__prev == NULL;
# endif
    dshm_lock_word(hd, &w);
    return clear && w == 0;
}
#endif

/* The mutex is of the kind dshm_mutex_init makes (true where that cannot
 * be told). Another kind must not even be tried: glibc asserts on a
 * priority-protect mutex with a damaged ceiling. */
bool dshm_mutex_kind_ours(const dshm_header *hd) {
#if defined(__GLIBC__)
    pthread_once(&sane_once, sane_init);
    return sane_kind < 0 || *(const volatile int *)&hd->hd_mutex.m.__data.__kind == sane_kind;
#else
    (void)hd;
    return true;
#endif
}

bool dshm_lock_damaged(const dshm_header *hd) {
#if defined(__GLIBC__)
    pthread_once(&sane_once, sane_init);
    if (sane_kind < 0)
        return false;
    /* Damage stays; a locker's passing state does not: three looks, with
     * the CPU given away in between, must all fail. */
    for (int i = 0; i < 3; i++) {
        if (mutex_looks_sane(hd))
            return false;
        sched_yield();
    }
    return true;
#else
    (void)hd;
    return false;
#endif
}

/* Wait for the writer lock, bounded and interruptible: a trylock, then
 * timed waits of DSHM_LOCK_SLICE_MS each. Between two slices a file cut
 * below its header is DSHM_TRUNCATED (the lock word went with it, or was
 * zeroed: the holder's death can wake nobody, and a sleep on it would
 * last for ever), and the binding's interrupt hook (Ctrl-C in Python)
 * ends the wait with -EINTR. Returns what pthread_mutex_lock would (0,
 * EOWNERDEAD, ENOTRECOVERABLE, ...: positive) or one of those negative
 * codes, the lock not held. A slice is measured on CLOCK_REALTIME (what
 * pthread_mutex_timedlock takes everywhere); a clock set back stretches
 * one slice, never the wait's bound on truncation. */
/* A writer's wait is also bounded by this thread's dshm_lock_deadline
 * when one is set (a transaction's timeout, CLOCK_MONOTONIC ns): ETIMEDOUT
 * when it passed with the lock held by another. */
_Thread_local uint64_t dshm_lock_deadline;

static int mutex_wait(dshm_env *env) {
    pthread_mutex_t *m = &DSHM_HDR(env)->hd_mutex.m;
    int rc = pthread_mutex_trylock(m);
    while (rc == EBUSY || rc == ETIMEDOUT) {
        uint64_t step = (uint64_t)DSHM_LOCK_SLICE_MS * 1000000u, until = dshm_lock_deadline;
        if (until) {
            uint64_t now = dshm_now_ns();
            if (now >= until)
                return ETIMEDOUT;
            if (until - now < step)
                step = until - now;
        }
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        rt.tv_nsec += (long)step;
        if (rt.tv_nsec >= 1000000000L) {
            rt.tv_sec++;
            rt.tv_nsec -= 1000000000L;
        }
        rc = pthread_mutex_timedlock(m, &rt);
        if (rc != ETIMEDOUT)
            break;
        struct stat st;
        if (fstat(env->ev_fd, &st) == 0 && (uint64_t)st.st_size < DSHM_HEADER_SIZE)
            return DSHM_TRUNCATED;
        if (dshm_interrupt_requested())
            return -EINTR;
    }
    return rc;
}

/* Just taken: a header that says the file is shorter than the header
 * itself was cut under the lock (its tail reads as zeros). */
static bool header_cut(const dshm_header *hd) {
    return atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) < DSHM_HEADER_SIZE;
}

bool dshm_lock_owner_died(const dshm_header *hd) {
    uint32_t w;
    return dshm_lock_word(hd, &w) && (w & DSHM_LOCK_OWNER_DIED);
}

int dshm_lock_ro(dshm_env *env, bool *owed) {
    dshm_header *hd = DSHM_HDR(env);
    *owed = false;
    /* A holder that died: taking the lock would return EOWNERDEAD and
     * oblige this handle to mark the mutex consistent (a write). Leave it
     * for a writer, whose lock runs the repair. */
    if (dshm_lock_owner_died(hd))
        return DSHM_NEED_RECOVERY;
    /* A holder that no longer exists, found at open: waiting would be for ever. */
    uint32_t w;
    if (env->ev_ghost_lock && dshm_lock_word(hd, &w) && w == env->ev_ghost_lock)
        return DSHM_NEED_RECOVERY;
    /* Damaged mutex bytes: locking would rewrite them (or fail). */
    if (dshm_lock_damaged(hd))
        return DSHM_NEED_RECOVERY;
    int rc = mutex_wait(env);
    if (rc < 0)
        return rc;
    if (rc == 0 && header_cut(hd)) {
        pthread_mutex_unlock(&hd->hd_mutex.m);
        return DSHM_TRUNCATED;
    }
    if (rc == EOWNERDEAD) {
        /* The holder died while this thread waited. The "owner died" state
         * cannot be handed back: unlocking an inconsistent mutex would make
         * it unusable for good. So the repair it stood for is recorded where
         * every lock holder looks (hd_repair), the mutex made consistent and
         * released: the one write a read-only handle ever makes, and it
         * keeps the owed repair, which the next writer runs. */
        hd->hd_repair = 1;
        pthread_mutex_consistent(&hd->hd_mutex.m);
        pthread_mutex_unlock(&hd->hd_mutex.m);
        return DSHM_NEED_RECOVERY;
    }
    if (rc == ENOTRECOVERABLE || rc == EINVAL)
        return DSHM_NEED_RECOVERY;   /* unusable: a writable opener alone with the file resets it */
    if (rc)
        return -rc;
    dshm_guard_tls.locked = env;
    dshm_guard_tls.locked_ro = 1;
    *owed = hd->hd_repair != 0;
    return 0;
}

void dshm_unlock_ro(dshm_env *env) {
    dshm_guard_tls.locked = NULL;
    dshm_guard_tls.locked_ro = 0;
    pthread_mutex_unlock(&DSHM_HDR(env)->hd_mutex.m);
}

/** Called at open by a process that holds the file's flock exclusively,
 *  so no other process can legitimately hold the mutex. Sets *repair if a
 *  holder died inside a write (the store needs dshm_recover), and *reinit
 *  if the mutex itself is unusable (left locked by a process the kernel
 *  could not clean up after, or not recoverable): the caller then
 *  re-initialises it. The mutex is never left owned by this thread, so it
 *  is on no robust list when it is re-initialised. */
int dshm_mutex_probe(dshm_header *hd, bool *repair, bool *reinit) {
    *repair = *reinit = false;
    if (!dshm_mutex_kind_ours(hd)) {
        *repair = *reinit = true;
        return 0;
    }
    int rc = pthread_mutex_trylock(&hd->hd_mutex.m);
    if (rc == 0) {
        pthread_mutex_unlock(&hd->hd_mutex.m);
        return 0;
    }
    if (rc == EOWNERDEAD) {
        /* The owed repair goes into the file before the mutex stops saying
         * so: a death after the unlock must not lose it. */
        hd->hd_repair = 1;
        atomic_thread_fence(memory_order_seq_cst);
        pthread_mutex_consistent(&hd->hd_mutex.m);
        pthread_mutex_unlock(&hd->hd_mutex.m);
        DSHM_CRASH_POINT("repair-probe");
        *repair = true;
        return 0;
    }
    if (rc == EBUSY || rc == ENOTRECOVERABLE || rc == EDEADLK || rc == EINVAL) {
        *repair = *reinit = true;
        return 0;
    }
    return -rc;
}


/** Take the writer lock of env's file to write. On EOWNERDEAD the mutex
 *  is made consistent and the repair marked owed (hd_repair); *owed says
 *  whether a repair is owed, which the caller runs before it writes
 *  (dshm_lock_repair): the lock never calls into recovery. Returns 0 or
 *  an error (the lock is not held on error). */
int dshm_lock_rw(dshm_env *env, bool *owed, bool wait) {
    dshm_header *hd = DSHM_HDR(env);
    *owed = false;
    if (!dshm_mutex_kind_ours(hd))
        return DSHM_NEED_RECOVERY;   /* a damaged mutex: reset by a writable opener alone with the file */
    int rc = wait ? mutex_wait(env) : pthread_mutex_trylock(&hd->hd_mutex.m);
    if (rc < 0)
        return rc;
    if ((rc == EBUSY && !wait) || rc == ETIMEDOUT)
        return DSHM_BUSY;
    if ((rc == 0 || rc == EOWNERDEAD) && header_cut(hd)) {
        if (rc == EOWNERDEAD)
            pthread_mutex_consistent(&hd->hd_mutex.m);
        pthread_mutex_unlock(&hd->hd_mutex.m);
        return DSHM_TRUNCATED;
    }
    if (rc == EOWNERDEAD) {
        /* The previous holder died inside a write. The mutex is made
         * consistent at once (so it stays usable) and the store marked for
         * repair; the caller's repair, or the next holder's if this one
         * fails, runs before any write. */
        hd->hd_repair = 1;
        pthread_mutex_consistent(&hd->hd_mutex.m);
        DSHM_CRASH_POINT("repair-lock");
        rc = 0;
    } else if (rc == ENOTRECOVERABLE) {
        return DSHM_NEED_RECOVERY;
    } else if (rc) {
        return -rc;
    }
    atomic_store_explicit(&hd->hd_lock_pid, (uint64_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_since, dshm_now_ns(), memory_order_relaxed);
    dshm_guard_tls.locked = env;
    dshm_guard_tls.locked_ro = 0;
    /* Allocator fields that do not match what the last holder left
     * (damage: a lowered hd_top would hand out live data): rebuild the
     * free space from the structures first, as after a death. */
    if (hd->hd_alloc_sum && hd->hd_alloc_sum != dshm_alloc_checksum(hd))
        hd->hd_repair = 1;
    *owed = hd->hd_repair != 0;
    return 0;
}

/** Take the mutex of a header mapped on its own (no handle: 'n' replacing
 *  a file others have open), waiting at most wait_ns on the monotonic
 *  clock (timed waits of 0.1 s each, so a clock change cannot stretch it).
 *  On EOWNERDEAD the owed repair is marked in the file before the mutex is
 *  made consistent. Returns 0 with the mutex held, DSHM_BUSY (a live
 *  holder kept it), DSHM_NEED_RECOVERY (not a usable mutex) or -errno. */
int dshm_mutex_lock_timed(dshm_header *hd, uint64_t wait_ns) {
    if (!dshm_mutex_kind_ours(hd))
        return DSHM_NEED_RECOVERY;
    uint64_t until = dshm_now_ns() + wait_ns;
    int rc;
    for (;;) {
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        rt.tv_nsec += 100000000;
        if (rt.tv_nsec >= 1000000000) {
            rt.tv_sec++;
            rt.tv_nsec -= 1000000000;
        }
        rc = pthread_mutex_timedlock(&hd->hd_mutex.m, &rt);
        if (rc != ETIMEDOUT || dshm_now_ns() >= until)
            break;
    }
    if (rc == EOWNERDEAD) {
        hd->hd_repair = 1;
        atomic_thread_fence(memory_order_seq_cst);
        pthread_mutex_consistent(&hd->hd_mutex.m);
        return 0;
    }
    if (rc == ETIMEDOUT)
        return DSHM_BUSY;
    if (rc == ENOTRECOVERABLE)
        return DSHM_NEED_RECOVERY;
    return -rc;
}

void dshm_unlock_rw(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_guard_tls.locked = NULL;
    hd->hd_alloc_sum = dshm_alloc_checksum(hd);
    atomic_store_explicit(&hd->hd_lock_since, 0, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_pid, 0, memory_order_relaxed);
    pthread_mutex_unlock(&hd->hd_mutex.m);
}
