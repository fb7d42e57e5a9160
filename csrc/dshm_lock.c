/**
 * @file dshm_lock.c
 * @brief The writer lock: a robust, process-shared pthread mutex in the
 *        header page (hd_mutex).
 *
 * Who holds it: the one writer of the moment (any thread of any process),
 * and a reader that lost to the writer too often (the read fallback).
 * When a holder dies, the kernel's robust-futex list marks the mutex and
 * the next pthread_mutex_lock() returns EOWNERDEAD: that caller marks the
 * mutex consistent, flags the store for repair (hd_repair) and repairs it
 * (dshm_recover) before going on; if the repair fails, the flag stays and
 * every later holder tries again before it writes.
 * A mutex left locked by a process the kernel could not clean up after
 * (the machine rebooted with the file on disk) is found by the first
 * opener that gets the file to itself (dshm_mutex_probe at open, under an
 * exclusive flock) and is re-initialised, followed by a recovery.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dshm_internal.h"

int dshm_mutex_init(dshm_header *hd) {
    pthread_mutexattr_t attr;
    int rc;
    /* Zero first: a stale robust mutex must not keep its old owner bits. */
    memset(&hd->hd_mutex, 0, sizeof hd->hd_mutex);
    if ((rc = pthread_mutexattr_init(&attr)) != 0)
        return rc;
    if ((rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) != 0 ||
        (rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) != 0 ||
        (rc = pthread_mutex_init(&hd->hd_mutex.m, &attr)) != 0) {
        pthread_mutexattr_destroy(&attr);
        return rc;
    }
    pthread_mutexattr_destroy(&attr);
    atomic_store_explicit(&hd->hd_lock_pid, 0, memory_order_relaxed);
    return 0;
}

/** Called at open by a process that holds the file's flock exclusively,
 *  so no other process can legitimately hold the mutex. Sets *repair if a
 *  holder died inside a write (the store needs dshm_recover), and *reinit
 *  if the mutex itself is unusable (left locked by a process the kernel
 *  could not clean up after, or not recoverable): the caller then
 *  re-initialises it. The mutex is never left owned by this thread, so it
 *  is on no robust list when it is re-initialised. */
int dshm_mutex_probe(dshm_header *hd, bool *repair, bool *reinit) {
    int rc = pthread_mutex_trylock(&hd->hd_mutex.m);
    *repair = *reinit = false;
    if (rc == 0) {
        pthread_mutex_unlock(&hd->hd_mutex.m);
        return 0;
    }
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&hd->hd_mutex.m);
        pthread_mutex_unlock(&hd->hd_mutex.m);
        *repair = true;
        return 0;
    }
    if (rc == EBUSY || rc == ENOTRECOVERABLE || rc == EDEADLK || rc == EINVAL) {
        *repair = *reinit = true;
        return 0;
    }
    return rc;
}

/** Take the writer lock of env's file. On EOWNERDEAD, repair the store
 *  first and set *recovered. Returns 0 or an error (the lock is not held
 *  on error). */
int dshm_lock0(dshm_env *env, bool *recovered) {
    dshm_header *hd = DSHM_HDR(env);
    int rc = pthread_mutex_lock(&hd->hd_mutex.m);
    if (recovered)
        *recovered = false;
    if (rc == EOWNERDEAD) {
        /* The previous holder died inside a write. The mutex is made
         * consistent at once (so it stays usable) and the store marked for
         * repair; the repair below, or by the next holder if this one
         * fails, runs before any write. */
        hd->hd_repair = 1;
        pthread_mutex_consistent(&hd->hd_mutex.m);
        rc = 0;
    } else if (rc == ENOTRECOVERABLE) {
        return DSHM_NEED_RECOVERY;
    } else if (rc) {
        return rc;
    }
    atomic_store_explicit(&hd->hd_lock_pid, (uint64_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_since, dshm_now_ns(), memory_order_relaxed);
    dshm_guard_tls.locked = env;
    if (hd->hd_repair) {
        int rrc = dshm_recover(env);
        if (rrc) {
            dshm_unlock0(env);
            return rrc == DSHM_CORRUPT ? DSHM_CORRUPT : DSHM_NEED_RECOVERY;
        }
        hd->hd_repair = 0;
        if (recovered)
            *recovered = true;
    }
    return 0;
}

void dshm_unlock0(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_guard_tls.locked = NULL;
    atomic_store_explicit(&hd->hd_lock_since, 0, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_pid, 0, memory_order_relaxed);
    pthread_mutex_unlock(&hd->hd_mutex.m);
}
