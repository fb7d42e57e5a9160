/**
 * @file dshm_write.c
 * @brief Writes of one key, and the writes of the whole store: put, del,
 *        sync, clear; put_locked (also reorganize's copy) and the end of
 *        every write (finish_write).
 *
 * Writers take the robust writer lock (dshm_write_enter) and publish last:
 * the new record is written into free space, then the slot switched to it.
 *
 * Layer 7: calls handles, the index, the allocator, the lock and the waker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_wake.h"
#include "dshm_hash.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_evict.h"
#include "dshm_lock.h"
#include "dshm_handle.h"
#include "dshm_commit.h"
#include "dshm_recover.h"
#include "dshm_write.h"


/* Evict while storing need more bytes would pass the cap: expired records
 * first, then the least recently stored of a sample (dshm_evict_pick),
 * each through the one delete protocol. Never the key at avoid_h being
 * written. *evicted: whether anything was (slots may have moved). */
int dshm_make_room(dshm_env *env, uint64_t need, uint64_t avoid_h, bool *evicted) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t cap = hd->hd_max_bytes;
    if (need > cap)
        return DSHM_TOOBIG;
    while (hd->hd_live_bytes + need > cap) {
        uint64_t r, h;
        bool expired;
        int rc = dshm_evict_pick(env, avoid_h, &r, &h, &expired);
        if (rc)
            return rc == DSHM_NOTFOUND ? DSHM_FULL : rc;
        const dshm_rec *rec = DSHM_AT(env, r);
        if (!dshm_in(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), hd->hd_top))
            return DSHM_CORRUPT;
        dshm_pos pos;
        if ((rc = dshm_index_find(env, h, (const char *)rec + DSHM_REC_HDR, rec->rc_klen, &pos)))
            return rc == DSHM_NOTFOUND ? DSHM_CORRUPT : rc;   /* a slot naming a record of another key */
        if ((rc = dshm_del_locked(env, &pos, "evict-removed")))
            return rc;
        if (expired)
            hd->hd_expired++;
        else
            hd->hd_evictions++;
        *evicted = true;
    }
    return 0;
}

/* Store under the lock: write the record into free space, then publish. */
int dshm_put_locked(dshm_env *env, uint64_t h, const char *key, size_t klen,
                      const char *val, size_t vlen, int flags, const dshm_putx *x) {
    static const dshm_putx none = {0, 0, false, false};
    if (!x)
        x = &none;
    dshm_header *hd = DSHM_HDR(env);
    dshm_pos pos;
    int rc = dshm_index_find(env, h, key, klen, &pos);
    if (rc && rc != DSHM_NOTFOUND)
        return rc;
    bool found = rc == 0, expired = false;
    uint64_t old = 0, osize = 0, deadline = x->px_deadline, now = 0;
    if (found) {
        if ((rc = dshm_index_slot_rec(env, &pos, hd->hd_top, &old, &osize)))
            return rc;
        const dshm_rec *orec = DSHM_AT(env, old);
        expired = dshm_rec_expired(orec, &now);
        if (x->px_keep_deadline && !expired)
            deadline = orec->rc_deadline;
    }
    if (found && !expired && (flags & DSHM_NOOVERWRITE))
        return DSHM_KEYEXIST;
    uint64_t rsize = dshm_rec_size(klen, vlen), off;
    if (hd->hd_max_bytes && !x->px_no_evict && rsize > hd->hd_max_bytes)
        return DSHM_TOOBIG;   /* would never fit under the cap */
    if (hd->hd_max_bytes && !x->px_no_evict && rsize > osize) {
        bool evicted = false;
        rc = dshm_make_room(env, rsize - osize, h, &evicted);
        if (!rc && evicted && found)
            rc = dshm_index_find(env, h, key, klen, &pos);   /* its slot may have moved */
        if (rc)
            return rc;
    }
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    if ((rc = dshm_alloc_record(env, rsize, &off)))
        return rc;
    if (atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) != ss) {
        /* The allocation, the first of the write, rebuilt a damaged free
         * space, which mends bucket pages (drops wild slots, moves the
         * entries behind them): the slot found before may name another
         * key now. Look again. */
        rc = dshm_index_find(env, h, key, klen, &pos);
        found = rc == 0;
        if ((rc && rc != DSHM_NOTFOUND) || (found && !expired && (flags & DSHM_NOOVERWRITE))) {
            dshm_free_block(env, off, rsize);
            return found ? DSHM_KEYEXIST : rc;
        }
    }
    dshm_rec_fill(hd, DSHM_AT(env, off), h, key, klen, val, vlen, deadline, x->px_stamp);
    DSHM_CRASH_POINT("put-written");
    if (found) {
        if ((rc = dshm_index_slot_rec(env, &pos, hd->hd_top, &old, &osize))) {
            dshm_free_block(env, off, rsize);
            return rc;
        }
        if ((rc = dshm_index_replace(env, &pos, off))) {
            dshm_free_block(env, off, rsize);
            return rc;
        }
        DSHM_CRASH_POINT("put-replaced");
        dshm_retire_record(env, old, osize);
        hd->hd_live_bytes += rsize - osize;
        if (expired)
            hd->hd_expired++;
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

int dshm_del_locked(dshm_env *env, const dshm_pos *pos, const char *point) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t old, osize;
    int rc = dshm_index_slot_rec(env, pos, hd->hd_top, &old, &osize);
    if (rc == 0)
        rc = dshm_index_remove(env, pos);
    if (rc)
        return rc;
    DSHM_CRASH_POINT(point);
    dshm_retire_record(env, old, osize);
    hd->hd_live_bytes -= osize;
    atomic_fetch_sub_explicit(&hd->hd_count, 1, memory_order_release);
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    return 0;
}

int dshm_finish_write(dshm_db *db, dshm_env *env, int rc) {
    bool wrote = rc == 0;
    /* 's': the write is published; the commit makes it durable before
     * the call returns (two flushes, under the lock: the next writer's
     * changes are not part of it). Not on tmpfs: nothing there outlives
     * the kernel, and a commit per write would copy a bucket each time. */
    if (wrote && (db->db_flags & DSHM_SYNC) && !env->ev_volatile)
        rc = dshm_commit_held(env);
    dshm_unlock_rw(env);
    /* Outside the lock: a waker's system call does not lengthen it. */
    dshm_wake_waiters(env);
    if (wrote)
        atomic_fetch_add_explicit(&db->db_writes, 1, memory_order_relaxed);
    dshm_leave(db);
    return rc;
}

static int put_unguarded(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags,
                         uint64_t deadline) {
    dshm_env *env;
    int arg = (!key && klen) || (!val && vlen) || (flags & ~(DSHM_NOOVERWRITE | DSHM_TRY)) ? DSHM_INVALID
            : klen > DSHM_MAX_KEY || vlen > DSHM_MAX_VALUE ? DSHM_TOOBIG : 0;
    bool wait = !(flags & DSHM_TRY);
    /* A put that syncs waits for the disk: never a try's. */
    if (!wait && !arg && db && (db->db_flags & DSHM_SYNC))
        return DSHM_BUSY;
    int rc = dshm_write_enter(db, &env, arg, arg ? 0 : dshm_rec_size(klen, vlen), DSHM_ROOM_PUT, wait);
    if (rc)
        return rc;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    dshm_putx x = {deadline, 0, false, false};
    return dshm_finish_write(db, env, dshm_put_locked(env, h, key, klen, val, vlen, flags, &x));
}

static int del_unguarded(dshm_db *db, const char *key, size_t klen) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, !key && klen ? DSHM_INVALID : 0, 0, 0, true);
    if (rc)
        return rc;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    dshm_pos pos;
    rc = dshm_index_find(env, h, key, klen, &pos);
    bool expired = false;
    if (rc == 0) {
        uint64_t off, size, now = 0;
        if (!(rc = dshm_index_slot_rec(env, &pos, DSHM_HDR(env)->hd_top, &off, &size)))
            expired = dshm_rec_expired((const dshm_rec *)DSHM_AT(env, off), &now);
    }
    if (rc == 0)
        rc = dshm_del_locked(env, &pos, "del-removed");
    if (rc == 0 && expired) {   /* dropped, but it was absent already */
        DSHM_HDR(env)->hd_expired++;
        rc = DSHM_NOTFOUND;
    }
    return dshm_finish_write(db, env, rc);
}

/* A commit (dshm_commit.c) under the writer lock; a handle whose file is
 * open read-only can only flush what others committed. due_only (close):
 * nothing unless this handle wrote since its last commit and the store
 * changed since the newest meta; wait: wait for the lock (else a lock
 * held elsewhere gives DSHM_BUSY). */
static int sync_unguarded(dshm_db *db, bool due_only, bool wait) {
    dshm_env *env;
    int rc = dshm_enter(db, &env);
    if (rc)
        return rc;
    if (!env->ev_writable) {
        rc = due_only ? 0 : dshm_commit_held(env);   /* a flush of what others committed */
        dshm_leave(db);
        return rc;
    }
    uint64_t writes = atomic_load_explicit(&db->db_writes, memory_order_relaxed);
    if (due_only && (writes == atomic_load_explicit(&db->db_synced_writes, memory_order_relaxed) ||
                     !dshm_commit_due(env))) {
        dshm_leave(db);
        return 0;
    }
    if ((rc = dshm_lock_repair(env, NULL, wait)) == 0) {
        rc = dshm_commit_held(env);
        dshm_unlock_rw(env);
    }
    if (!rc)
        atomic_store_explicit(&db->db_synced_writes, writes, memory_order_relaxed);
    dshm_leave(db);
    return rc;
}

static int clear_unguarded(dshm_db *db) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, 0, 0, DSHM_ROOM_PUT, true);
    if (rc)
        return rc;
    /* Build an empty directory and bucket in free space and publish it
     * with one store; everything else is then unreachable, and the
     * rebuild hands it to the free lists (failing reads in flight). */
    dshm_header *hd = DSHM_HDR(env);
    rc = dshm_index_init(env);   /* publishes the new, empty directory */
    if (!rc) {
        bool opened = dshm_struct_begin(hd);
        DSHM_CRASH_POINT("clear");
        rc = dshm_space_rebuild(env, false);
        atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        dshm_struct_end(hd, opened);
    }
    return dshm_finish_write(db, env, rc);
}

/* ---------------------------------------------------------------------- */
/* Public entry points                                                     */

int dshm_put(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags) {
    GUARDED(int, put_unguarded(db, key, klen, val, vlen, flags, 0));
}

int dshm_put_ttl(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags,
                 uint64_t deadline) {
    GUARDED(int, put_unguarded(db, key, klen, val, vlen, flags, deadline));
}

int dshm_del(dshm_db *db, const char *key, size_t klen) { GUARDED(int, del_unguarded(db, key, klen)); }

int dshm_sync(dshm_db *db) { GUARDED(int, sync_unguarded(db, false, true)); }

int dshm_commit_due_sync(dshm_db *db, int wait) {
    if (!db || (db->db_flags & DSHM_RDONLY) || atomic_load_explicit(&db->db_closed, memory_order_relaxed))
        return 0;
    GUARDED(int, sync_unguarded(db, true, wait != 0));
}

int dshm_clear(dshm_db *db) { GUARDED(int, clear_unguarded(db)); }
