/**
 * @file dshm_read.c
 * @brief The read-retry protocol (lock-free tries while a writer is in
 *        the way, then one try under the writer lock), and the reads of
 *        one key or one counter: dshm_get (and its one-try form
 *        dshm_get_try), dshm_count, dshm_commit_id.
 *
 * Readers take no lock: they retry while a bucket's seqlock moves, and
 * after DSHM_READ_TRIES tries fall back to reading under the writer lock,
 * so they always finish.
 *
 * Layer 7: calls handles (enter, the lock for a handle), the index and the
 * lock's word.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <time.h>

#include "dshm_base.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_handle.h"
#include "dshm_read.h"

/* Lock-free tries after the 16th stop once this much time went by. */
#define DSHM_READ_SPIN_NS ((uint64_t)2000000)      /* 2 ms */
/* A handle that cannot take the lock keeps trying this long at most. */
#define DSHM_READ_WAIT_NS ((uint64_t)5000000000)   /* 5 s */

/* Wait a little after losing to the writer: spin first, then yield. */
void dshm_backoff(int attempt) {
    if (attempt < 16) {
        for (int i = 0; i < (1 << (attempt / 2)); i++)
            dshm_pause();
    } else {
        sched_yield();
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
int64_t dshm_read_retry(dshm_db *db, dshm_env **envp, dshm_read_fn fn, void *ctx, int tries) {
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
            dshm_backoff(i);
            dshm_env *env = *envp;
            if (atomic_load_explicit(&DSHM_HDR(env)->hd_file_size, memory_order_acquire) > env->ev_resv) {
                int rc = dshm_refresh(db, envp, 0);   /* the file grew past this mapping */
                if (rc)
                    return rc;
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
        int rc = dshm_wlock(db, envp, 0, true);
        if (rc)
            return rc;
        r = fn(*envp, true, ctx);
        dshm_unlock_rw(*envp);
        return r;
    }
    if ((*envp)->ev_writable) {
        bool owed;
        int rc = dshm_rlock(db, envp, &owed);
        if (rc)
            return rc;
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

/* A get: one lock-free try, then (unless only_try) the retry protocol.
 * With only_try, a try that is not conclusive answers DSHM_BUSY. */
static int64_t get_unguarded(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap,
                             bool only_try) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, !key && klen ? DSHM_INVALID : 0);
    if (rc)
        return rc;
    get_ctx c = { key, klen, buf, cap, NULL, 0 };
    int64_t r = get_once(env, false, &c);
    if (r == DSHM_RETRY || r == DSHM_CORRUPT)
        r = only_try ? DSHM_BUSY : dshm_read_retry(db, &env, get_once, &c, DSHM_READ_TRIES);
    dshm_leave(db);
    return r;
}

static int64_t count_unguarded(dshm_db *db) {
    dshm_env *env;
    int rc = dshm_enter(db, &env);
    if (rc)
        return rc;
    uint64_t n = atomic_load_explicit(&DSHM_HDR(env)->hd_count, memory_order_acquire);
    dshm_leave(db);
    return n > (uint64_t)INT64_MAX ? DSHM_CORRUPT : (int64_t)n;
}

static int commit_id_unguarded(dshm_db *db, uint64_t *out) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, out ? 0 : DSHM_INVALID);
    if (rc)
        return rc;
    *out = atomic_load_explicit(&DSHM_HDR(env)->hd_commit, memory_order_acquire);
    dshm_leave(db);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Public entry points                                                     */

int64_t dshm_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, get_unguarded(db, key, klen, buf, cap, false));
}

int64_t dshm_get_try(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, get_unguarded(db, key, klen, buf, cap, true));
}

int64_t dshm_count(dshm_db *db) { GUARDED(int64_t, count_unguarded(db)); }

int dshm_commit_id(dshm_db *db, uint64_t *out) { GUARDED(int, commit_id_unguarded(db, out)); }
