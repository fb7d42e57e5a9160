/**
 * @file dshm_wake.c
 * @brief The waker's side of the futex word hd_waiters (dshm_wait.c has
 *        the protocol and the sleeper's side).
 *
 * Layer 0: calls no other file. Writers call dshm_wake_waiters after a
 * commit, outside the lock; dshm_interrupt and dshm_close wake a handle's
 * waiters through dshm_wake_handle.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_wake.h"

void dshm_wake_word(_Atomic uint32_t *w) {
    uint32_t v = atomic_load_explicit(w, memory_order_seq_cst);
    while (v & 1) {
        if (atomic_compare_exchange_weak_explicit(w, &v, v + 1, memory_order_seq_cst, memory_order_seq_cst)) {
            syscall(SYS_futex, (uint32_t *)(void *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
            return;
        }
    }
}

void dshm_wake_waiters(dshm_env *env) {
    if (env->ev_writable)
        dshm_wake_word(&DSHM_HDR(env)->hd_waiters);
}

/* The writable futex word of this mapping, or NULL (its waiters poll).
 * Maps the header page of a read-only handle's file writable on first
 * use; it is kept with the mapping (dshm_env_free unmaps it). */
_Atomic uint32_t *dshm_waiters_word(dshm_db *db, dshm_env *env) {
    if (env->ev_writable)
        return &DSHM_HDR(env)->hd_waiters;
    pthread_mutex_lock(&db->db_lock);
    if (!env->ev_hdr_rw && !env->ev_hdr_rw_failed) {
        char name[64];
        snprintf(name, sizeof name, "/proc/self/fd/%d", env->ev_fd);
        int fd = open(name, O_RDWR | O_CLOEXEC);
        void *p = fd < 0 ? MAP_FAILED : mmap(NULL, DSHM_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (fd >= 0)
            close(fd);
        if (p == MAP_FAILED)
            env->ev_hdr_rw_failed = 1;
        else
            env->ev_hdr_rw = p;
    }
    pthread_mutex_unlock(&db->db_lock);
    return env->ev_hdr_rw ? &((dshm_header *)env->ev_hdr_rw)->hd_waiters : NULL;
}

void dshm_wake_handle(dshm_db *db) {
    atomic_fetch_add_explicit(&db->db_interrupt, 1, memory_order_seq_cst);
    dshm_env *env = atomic_load_explicit(&db->db_env, memory_order_seq_cst);
    if (!env)
        return;
    _Atomic uint32_t *w = dshm_waiters_word(db, env);
    if (w)   /* every sleeper on the file wakes; the others sleep again */
        dshm_wake_word(w);
}
