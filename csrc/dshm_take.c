/**
 * @file dshm_take.c
 * @brief Look up and delete in one hold of the writer lock: dshm_pop()
 *        (one key) and dshm_popitem() (any key).
 *
 * Both copy what they take into the caller's buffer under the lock and
 * remove the slot exactly as dshm_del() does (the bucket's odd window
 * around the removal, the crash point after it, then the record freed,
 * the count and the commit counter moved), so a writer killed at any
 * instruction leaves the key either present or gone, as for a delete.
 *
 * The buffer protocol, shared by both: the return value is the size of
 * what would be taken. If it fits in `cap`, it was copied and the key
 * deleted; if not, NOTHING changed (nothing copied, nothing deleted) and
 * the caller calls again with a buffer of at least that size. Between the
 * two calls another writer may change the value or take the key: the
 * second call answers for the store as it is then (a larger size again,
 * DSHM_NOTFOUND, or, for popitem, another item), so callers loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dshm_internal.h"

/* Where this thread's last dshm_popitem() took a key (a hash): the next
 * one starts its walk over the buckets there, so draining a store with
 * popitem() does not walk the emptied buckets again each time. */
static _Thread_local uint64_t take_hint;

/* An int or -errno return of the store's services as this file's
 * convention: negative codes only. */
static int64_t neg(int rc) { return rc > 0 ? -(int64_t)rc : rc; }

/* Under the lock: take the slot at pos. Copies its value (its key first
 * if with_key) into buf and removes the slot if that fits in cap; returns
 * the bytes it needs (> cap: nothing changed), or an error. */
static int64_t take_locked(dshm_env *env, const dshm_pos *pos, bool with_key, char *buf, size_t cap) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_bucket *pg = DSHM_AT(env, pos->ps_page);
    uint64_t old = atomic_load_explicit(&pg->bk_slots[pos->ps_slot].sl_rec, memory_order_relaxed);
    dshm_rec *orec = DSHM_AT(env, old);
    uint64_t klen = orec->rc_klen, vlen = orec->rc_vlen;
    uint64_t osize = dshm_rec_size(klen, vlen);
    if (vlen > DSHM_MAX_VALUE || !dshm_in(old, osize, hd->hd_top))
        return DSHM_CORRUPT;
    uint64_t n = (with_key ? klen : 0) + vlen;
    if (n > cap)
        return (int64_t)n;
    const char *src = (const char *)orec + DSHM_REC_HDR + (with_key ? 0 : klen);
    if (n)
        memcpy(buf, src, n);
    int rc = dshm_index_remove(env, pos);
    if (rc)
        return neg(rc);
    DSHM_CRASH_POINT("pop-removed");
    dshm_free_block(env, old, osize);
    hd->hd_live_bytes -= osize;
    atomic_fetch_sub_explicit(&hd->hd_count, 1, memory_order_release);
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    return (int64_t)n;
}

/* The write-entry of both calls: enter, refuse a read-only handle, take
 * the lock. 0 with the lock held, or an error (the call has left). */
static int64_t take_begin(dshm_db *db, dshm_env **envp, bool bad_args) {
    int rc = dshm_enter(db, envp);
    if (rc)
        return neg(rc);
    if (bad_args) {
        dshm_leave(db);
        return DSHM_INVALID;
    }
    if (db->db_flags & DSHM_RDONLY) {
        dshm_leave(db);
        return DSHM_READONLY;
    }
    if ((rc = dshm_wlock(db, envp, 0))) {
        dshm_leave(db);
        return neg(rc);
    }
    return 0;
}

/* The end of both calls: r from take_locked() or an error. A taking that
 * did not fit changed nothing, and is not counted as a write. */
static int64_t take_end(dshm_db *db, dshm_env *env, int64_t r, size_t cap) {
    if (r >= 0 && (uint64_t)r > cap) {
        dshm_finish_write(db, env, DSHM_RETRY);
        return r;
    }
    int rc = dshm_finish_write(db, env, r < 0 ? (int)r : 0);
    return rc ? neg(rc) : r;
}

static int64_t dshm_pop0(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    dshm_env *env;
    int64_t r = take_begin(db, &env, (!key && klen) || (!buf && cap));
    if (r)
        return r;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    dshm_pos pos;
    int rc = dshm_index_find(env, h, key, klen, &pos);
    r = rc ? neg(rc) : take_locked(env, &pos, false, buf, cap);
    return take_end(db, env, r, cap);
}

/* Under the lock: find an occupied slot, walking the buckets in hash order
 * from the one covering take_hint and wrapping around once. */
static int64_t popitem_locked(dshm_env *env, char *buf, size_t cap, uint64_t *klen) {
    dshm_header *hd = DSHM_HDR(env);
    if (atomic_load_explicit(&hd->hd_count, memory_order_acquire) == 0)
        return DSHM_NOTFOUND;
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    uint64_t max_hops = limit / DSHM_BUCKET_SIZE + 2;
    uint64_t hint = take_hint, cursor = hint;
    bool wrapped = false;
    dshm_snap sn = {0};
    int64_t r = DSHM_NOTFOUND;
    for (uint64_t hops = 0;; hops++) {
        if (hops > max_hops) {
            r = DSHM_CORRUPT;
            break;
        }
        if (wrapped && cursor > hint)
            break;   /* back where the walk began: every bucket was empty */
        int rc = dshm_snap_read(env, cursor, 0, false, true, &sn);
        if (rc == -ERANGE) {   /* more keys than the buffer holds: grow it, read again */
            if ((rc = dshm_snap_reserve(&sn, sn.used))) {
                r = neg(rc);
                break;
            }
            hops--;
            continue;
        }
        if (rc) {
            r = neg(rc);
            break;
        }
        if (sn.used) {   /* the first entry: [u32 klen][u64 hash][key] */
            uint32_t kl;
            uint64_t h;
            memcpy(&kl, sn.buf, 4);
            memcpy(&h, sn.buf + 4, 8);
            dshm_pos pos;
            rc = dshm_index_find(env, h, sn.buf + 12, kl, &pos);
            r = rc ? (rc == DSHM_NOTFOUND ? DSHM_CORRUPT : neg(rc))
                   : take_locked(env, &pos, true, buf, cap);
            if (r >= 0) {
                *klen = kl;
                take_hint = h;
            }
            break;
        }
        if (sn.last) {
            if (wrapped)
                break;
            wrapped = true;
            cursor = 0;
        } else {
            cursor = sn.next;
        }
    }
    free(sn.buf);
    return r;
}

static int64_t dshm_popitem0(dshm_db *db, char *buf, size_t cap, uint64_t *klen) {
    dshm_env *env;
    int64_t r = take_begin(db, &env, (!buf && cap) || !klen);
    if (r)
        return r;
    return take_end(db, env, popitem_locked(env, buf, cap, klen), cap);
}

int64_t dshm_pop(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, dshm_pop0(db, key, klen, buf, cap));
}

int64_t dshm_popitem(dshm_db *db, char *buf, size_t cap, uint64_t *klen) {
    GUARDED(int64_t, dshm_popitem0(db, buf, cap, klen));
}
