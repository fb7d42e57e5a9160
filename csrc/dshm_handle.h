/**
 * @file dshm_handle.h
 * @brief Handles (dshm_handle.c): entering and leaving a call (inline: every
 *        call runs them, and they call dshm_refresh, dshm_reclaim,
 *        dshm_path_replaced, dshm_follow_path), following a reorganize, the
 *        writer lock for a handle.
 *
 * Layer 6.
 */
#ifndef DSHM_HANDLE_H
#define DSHM_HANDLE_H

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_wake.h"

/** Replace the handle's mapping (reorganize, or growth past it). */
int dshm_refresh(dshm_db *db, dshm_env **envp, uint64_t want);
/** The end of a call that put a new file in place of the store under its
 *  writer lock (reorganize, a transaction's replace): unlock, wake the
 *  waiters, follow the path to the new file if rc is 0, leave. */
int dshm_end_replace(dshm_db *db, dshm_env *env, int rc);
/** Unmap superseded mappings once no call is in flight: a call that
 *  entered later loads the current mapping, never a retired one. */
void dshm_reclaim(dshm_db *db);
/** Does the handle's path name another file than env's now (a reorganize
 *  or an 'n' that replaced it, maybe killed before it marked this one
 *  moved)? One stat. A path that names nothing is no replacement. */
bool dshm_path_replaced(dshm_db *db, dshm_env *env);
/** The path names another file: mark env's moved where this handle may
 *  write (every handle of it then follows, its waiters wake) and follow
 *  the path (dshm_refresh). */
int dshm_follow_path(dshm_db *db, dshm_env **envp);

/** A read-only handle found hd_moved stale (the path still names this
 *  file) at this commit, and nothing was committed since. */
static inline bool dshm_moved_stale(dshm_env *env, uint64_t commit) {
    uint64_t m = atomic_load_explicit(&env->ev_stale_moved, memory_order_relaxed);
    return m != 0 && m == commit + 1;
}

/** Leave a call: the last call out unmaps superseded mappings. */
static inline void dshm_leave(dshm_db *db) {
    dshm_guard_tls.entered = NULL;
    if (atomic_fetch_sub_explicit(&db->db_inflight, 1, memory_order_seq_cst) == 1 &&
        __builtin_expect(atomic_load_explicit(&db->db_has_retired, memory_order_relaxed), 0))
        dshm_reclaim(db);
}

/* Enter a call: count it in flight, refuse a closed handle, follow a
 * reorganize or a growth past this mapping. Two loads of the header on the
 * fast path, no system call (inline: every call runs it). */
static inline int dshm_enter(dshm_db *db, dshm_env **envp) {
    if (!db)
        return DSHM_INVALID;
    atomic_fetch_add_explicit(&db->db_inflight, 1, memory_order_seq_cst);
    dshm_guard_tls.entered = db;   /* from here a SIGBUS ends the call with leave() */
    if (atomic_load_explicit(&db->db_closed, memory_order_seq_cst)) {
        dshm_leave(db);
        return DSHM_CLOSED;
    }
    /* seq_cst, paired with the swap in refresh() and the check in
     * reclaim(): a call that loaded a mapping is counted in flight. */
    dshm_env *env = atomic_load_explicit(&db->db_env, memory_order_seq_cst);
    dshm_guard_cover(env->ev_base, env->ev_resv);   /* refresh() covers a new one */
    dshm_header *hd = DSHM_HDR(env);
    uint64_t fs = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&hd->hd_moved, memory_order_relaxed) ||
                         fs > env->ev_resv || fs < DSHM_HEADER_SIZE, 0) &&
        !(fs <= env->ev_resv && fs >= DSHM_HEADER_SIZE &&
          dshm_moved_stale(env, atomic_load_explicit(&hd->hd_commit, memory_order_acquire)))) {
        /* A header that says the file is shorter than itself: the file was
         * cut under the mapping (its first page reads as zeros past the end). */
        int rc = fs < DSHM_HEADER_SIZE ? DSHM_TRUNCATED : dshm_refresh(db, &env, 0);
        if (rc) {
            dshm_leave(db);
            return rc;
        }
    }
    /* Now and then, a look at the path (no system call in between). */
    uint64_t now = dshm_coarse_ns();
    if (__builtin_expect(now >= atomic_load_explicit(&db->db_path_due, memory_order_relaxed), 0)) {
        atomic_store_explicit(&db->db_path_due, now + DSHM_PATH_CHECK_NS, memory_order_relaxed);
        if (dshm_path_replaced(db, env)) {
            int rc = dshm_follow_path(db, &env);
            if (rc) {
                dshm_leave(db);
                return rc;
            }
        }
    }
    *envp = env;
    return 0;
}

/** dshm_enter, then report argrc (the caller's argument check, 0 if none)
 *  after the handle was found open; on error the call has left. */
static inline int dshm_enter_checked(dshm_db *db, dshm_env **envp, int argrc) {
    int rc = dshm_enter(db, envp);
    if (rc == 0 && argrc) {
        dshm_leave(db);
        rc = argrc;
    }
    return rc;
}

/** Take the writer lock with room in the mapping for `room` more bytes
 *  (running a repair that is owed); follows a reorganize. Without `wait`,
 *  DSHM_BUSY where that would wait (dshm_lock_repair). */
int dshm_wlock(dshm_db *db, dshm_env **envp, uint64_t room, bool wait);
/** The read-only take of the writer lock (dshm_lock_ro) for a handle,
 *  following a reorganize or a growth as dshm_wlock does. */
int dshm_rlock(dshm_db *db, dshm_env **envp, bool *owed);
/** The start of every write: enter, report argrc (the caller's argument
 *  check: DSHM_INVALID before a read-only handle's DSHM_READONLY, any other
 *  code after it), take the writer lock with room for `bytes` of records
 *  and the index's growth for `keys` new keys (dshm_index_room); without
 *  `wait`, DSHM_BUSY where taking it would wait. On error the call has
 *  left. */
int dshm_write_enter(dshm_db *db, dshm_env **envp, int argrc, uint64_t bytes, uint64_t keys, bool wait);

/** dshm_waiters_word, with the header page mapped writable for it (a
 *  read-only handle's) recorded as a range the call touches (SIGBUS guard).
 *  Here, above both files it calls (the waker and the guard, layer 0). */
static inline _Atomic uint32_t *dshm_guard_cover_waiters(dshm_db *db, dshm_env *env) {
    _Atomic uint32_t *w = dshm_waiters_word(db, env);
    if (w && w != &DSHM_HDR(env)->hd_waiters)
        dshm_guard_cover((const char *)w - offsetof(dshm_header, hd_waiters), DSHM_HEADER_SIZE);
    return w;
}

/** Back from a SIGBUS inside a guarded call: unblock the signal, give back
 *  the writer lock if this thread held it (marking the store for repair)
 *  and the handle's db_lock if it held that, and end the call (dshm_handle.c: it knows the lock and the handle). */
void dshm_guard_fault(dshm_guard *g);

/** The body of every public entry point: run `call` under the guard;
 *  DSHM_TRUNCATED (as `type`) after a SIGBUS. A function returning
 *  nothing wraps a helper returning int. The call starts with no range
 *  recorded (unscoped) until it enters a handle (dshm_enter). */
#define GUARDED(type, call) do {                                   \
        dshm_guard *g_ = &dshm_guard_tls;                          \
        if (g_->active)                                            \
            return call;                                           \
        if (sigsetjmp(g_->jb, 0)) {                                \
            dshm_guard_fault(g_);                                  \
            return (type)DSHM_TRUNCATED;                           \
        }                                                          \
        g_->scoped = 0;                                            \
        g_->nrng = 0;                                              \
        atomic_signal_fence(memory_order_release);                 \
        g_->active = 1;                                            \
        type r_ = call;                                            \
        g_->active = 0;                                            \
        return r_;                                                 \
    } while (0)

#endif /* DSHM_HANDLE_H */
