/**
 * @file dshm_txn.c
 * @brief Transactions: the writer lock held across calls by one thread of
 *        one handle, reads under it, and the end that publishes the
 *        transaction's writes as one batch (or nothing) and lets it go.
 *
 * dshm_txn_begin takes the writer lock (running a repair a dead holder
 * owes, as every writer does), waiting at most its timeout, and leaves the
 * call with the lock held: db_txn_tid names the thread. The caller keeps
 * its writes in its own memory meanwhile; nothing reaches the file until
 * dshm_txn_commit hands them over and they are published exactly as
 * dshm_write_batch publishes (journal, commit point, one odd window), still
 * under the same hold. dshm_txn_abort lets the lock go, publishing nothing.
 *
 * Crash safety comes from the batch: a holder that dies before the commit
 * call has written nothing to the file (no journal, no window), so the next
 * taker's EOWNERDEAD repair finds nothing to replay; one that dies inside
 * the publish leaves what a dying batch leaves.
 *
 * The mutex belongs to the thread that took it: every call here must come
 * from that thread (others get DSHM_INVALID), and a write through the same
 * handle from it fails with -EDEADLK (dshm_wlock) instead of hanging.
 *
 * dshm_txn_replace ends a transaction another way: a store the caller
 * built beside this one (dbm-shm load into an existing store) is renamed
 * over the path under the held lock and this file marked moved before the
 * lock goes, as reorganize does, so no writer commits to this file after
 * the rename and every handle follows; a death between the rename and the
 * mark is repaired by the next writer (check_replaced in dshm_handle.c).
 *
 * Layer 10: calls batches (the publish under a held lock), the read lookup,
 * the lock (its deadline) and handles.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_file.h"
#include "dshm_handle.h"
#include "dshm_batch.h"

/* This thread's id (gettid), kept after the first call: gettid is a
 * system call, and every call of a transaction asks. A child after fork()
 * is another thread: the handler forgets the parent's id there. */
static _Thread_local int my_tid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_tid(void) { my_tid = 0; }
static void register_atfork(void) { pthread_atfork(NULL, NULL, forget_tid); }

static int self_tid(void) {
    if (!my_tid) {
        pthread_once(&atfork_once, register_atfork);
        my_tid = (int)gettid();
    }
    return my_tid;
}

/* dshm_txn_mine without the system call. */
static bool txn_mine(dshm_db *db) {
    int t = atomic_load_explicit(&db->db_txn_tid, memory_order_relaxed);
    return t != 0 && t == self_tid();
}

static int begin_unguarded(dshm_db *db, int64_t timeout_ns) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, db && (db->db_flags & DSHM_RDONLY) ? DSHM_READONLY : 0);
    if (rc)
        return rc;
    int me = self_tid();
    int cur = atomic_load_explicit(&db->db_txn_tid, memory_order_relaxed);
    if (cur != 0) {   /* one transaction per handle at a time */
        dshm_leave(db);
        return cur == me ? -EDEADLK : DSHM_INVALID;
    }
    if (timeout_ns >= 0) {
        uint64_t now = dshm_now_ns();
        dshm_lock_deadline = now + (uint64_t)timeout_ns > now ? now + (uint64_t)timeout_ns : UINT64_MAX;
    }
    rc = dshm_wlock(db, &env, 0, true);
    dshm_lock_deadline = 0;
    if (rc == 0) {
        atomic_store_explicit(&db->db_txn_tid, me, memory_order_relaxed);
        /* Held across calls, not by this one: a fault in a later call of
         * this thread must not be taken for this call's. */
        dshm_guard_tls.locked = NULL;
    }
    dshm_leave(db);
    return rc;
}

/* Enter a call of db's open transaction (this thread's): the lock is
 * recorded as held by the call for the SIGBUS guard. */
static int txn_enter(dshm_db *db, dshm_env **envp) {
    int rc = dshm_enter(db, envp);
    if (rc)
        return rc;
    if (!txn_mine(db)) {
        dshm_leave(db);
        return DSHM_INVALID;
    }
    dshm_guard_tls.locked = *envp;
    dshm_guard_tls.locked_ro = 0;
    return 0;
}

static int64_t get_unguarded(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    if ((!key && klen) || (!buf && cap))
        return DSHM_INVALID;
    dshm_env *env;
    int rc = txn_enter(db, &env);
    if (rc)
        return rc;
    /* Nobody else writes while the lock is held: one read, no retry. */
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    int64_t r = dshm_index_read(env, h, key, klen, buf, cap, true);
    dshm_guard_tls.locked = NULL;
    dshm_leave(db);
    return r;
}

static int commit_unguarded(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                            const char *vals, const int64_t *vlens, uint64_t *commit) {
    dshm_env *env;
    int rc = txn_enter(db, &env);
    if (rc)
        return rc;
    /* The hold ends with this call whatever happens. */
    atomic_store_explicit(&db->db_txn_tid, 0, memory_order_relaxed);
    DSHM_CRASH_POINT("txn-commit");
    return dshm_batch_held(db, env, n, keys, klens, vals, vlens, commit);
}

static int abort_unguarded(dshm_db *db) {
    dshm_env *env;
    int rc = txn_enter(db, &env);
    if (rc)
        return rc;
    atomic_store_explicit(&db->db_txn_tid, 0, memory_order_relaxed);
    dshm_unlock_rw(env);
    dshm_leave(db);
    return 0;
}

/* The file at newpath takes the store's place; see dshm_txn_replace. */
static int replace_unguarded(dshm_db *db, const char *newpath) {
    if (!newpath)
        return DSHM_INVALID;
    dshm_env *env;
    int rc = txn_enter(db, &env);
    if (rc)
        return rc;
    /* The hold ends with this call whatever happens. */
    atomic_store_explicit(&db->db_txn_tid, 0, memory_order_relaxed);
    dshm_header *hd = DSHM_HDR(env);
    int fd = open(newpath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    /* Commit numbers go on from the store's (wait(since=...) spans it),
     * never back from the new file's own. */
    uint64_t commit = atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) + 1, theirs;
    off_t at = (off_t)offsetof(dshm_header, hd_commit);
    if (pread(fd, &theirs, sizeof theirs, at) != (ssize_t)sizeof theirs) {
        rc = errno ? -errno : DSHM_CORRUPT;
        goto out;
    }
    if (theirs > commit)
        commit = theirs;
    if (pwrite(fd, &commit, sizeof commit, at) != (ssize_t)sizeof commit) {
        rc = errno ? -errno : -EIO;
        goto out;
    }
    if ((rc = dshm_flush(fd, false)))
        goto out;
    rc = dshm_rename_over(env, newpath, db->db_path, "txn-replace-renamed");
out:
    if (fd >= 0)
        close(fd);
    return dshm_end_replace(db, env, rc);
}

static int guarded_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap, int64_t *r) {
    GUARDED(int, (*r = get_unguarded(db, key, klen, buf, cap), 0));
}

/* After a SIGBUS inside a call of the transaction, the guard gave the lock
 * back (marking the store for repair): the transaction is over. */
static void after_fault(dshm_db *db, int64_t r) {
    if (r == DSHM_TRUNCATED && db && txn_mine(db))
        atomic_store_explicit(&db->db_txn_tid, 0, memory_order_relaxed);
}

static int guarded_begin(dshm_db *db, int64_t timeout_ns) {
    GUARDED(int, begin_unguarded(db, timeout_ns));
}

int dshm_txn_begin(dshm_db *db, int64_t timeout_ns) {
    int rc = guarded_begin(db, timeout_ns);
    /* Also after a SIGBUS jumped out of the wait: the deadline is this
     * take's alone, never a later write's. */
    dshm_lock_deadline = 0;
    return rc;
}

int64_t dshm_txn_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    int64_t r = 0;
    int rc = guarded_get(db, key, klen, buf, cap, &r);
    if (rc)
        r = rc;
    after_fault(db, r);
    return r;
}

static int guarded_commit(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                          const char *vals, const int64_t *vlens, uint64_t *commit) {
    GUARDED(int, commit_unguarded(db, n, keys, klens, vals, vlens, commit));
}

int dshm_txn_commit(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit) {
    int rc = guarded_commit(db, n, keys, klens, vals, vlens, commit);
    after_fault(db, rc);
    return rc;
}

static int guarded_abort(dshm_db *db) {
    GUARDED(int, abort_unguarded(db));
}

int dshm_txn_abort(dshm_db *db) {
    int rc = guarded_abort(db);
    after_fault(db, rc);
    return rc;
}

static int guarded_replace(dshm_db *db, const char *newpath) {
    GUARDED(int, replace_unguarded(db, newpath));
}

int dshm_txn_replace(dshm_db *db, const char *newpath) {
    int rc = guarded_replace(db, newpath);
    after_fault(db, rc);
    return rc;
}
