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

#include "dshm_base.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_handle.h"
#include "dshm_write.h"
#include "dshm_iter.h"

/* Where this thread's last dshm_popitem() took a key (a hash): the next
 * one starts its walk over the buckets there, so draining a store with
 * popitem() does not walk the emptied buckets again each time. */
static _Thread_local uint64_t take_hint;

/* Under the lock: the key at pos. Copies its value (its key first if
 * with_key) into buf and deletes the key if that fits in cap; returns the
 * bytes it needs (> cap: nothing changed), or a negative code. */
static int64_t take_locked(dshm_env *env, const dshm_pos *pos, bool with_key, char *buf, size_t cap) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t old, osize;
    int rc = dshm_index_slot_rec(env, pos, hd->hd_top, &old, &osize);
    if (rc)
        return rc;
    const dshm_rec *orec = DSHM_AT(env, old);
    uint64_t klen = orec->rc_klen, vlen = orec->rc_vlen, now = 0;
    if (vlen > DSHM_MAX_VALUE || dshm_rec_size(klen, vlen) != osize)
        return DSHM_CORRUPT;
    if (dshm_rec_expired(orec, &now))
        return DSHM_NOTFOUND;   /* absent for every reader already */
    uint64_t n = (with_key ? klen : 0) + vlen;
    if (n > cap)
        return (int64_t)n;
    if (n)
        memcpy(buf, (const char *)orec + DSHM_REC_HDR + (with_key ? 0 : klen), n);
    rc = dshm_del_locked(env, pos, "pop-removed");
    return rc ? rc : (int64_t)n;
}

/* The end of both calls: r from take_locked() or an error. A taking that
 * did not fit changed nothing, and is not counted as a write. */
static int64_t take_end(dshm_db *db, dshm_env *env, int64_t r, size_t cap) {
    if (r >= 0 && (uint64_t)r > cap) {
        dshm_finish_write(db, env, DSHM_RETRY);
        return r;
    }
    int rc = dshm_finish_write(db, env, r < 0 ? (int)r : 0);
    return rc ? rc : r;
}

static int64_t pop_unguarded(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, (!key && klen) || (!buf && cap) ? DSHM_INVALID : 0, 0, 0, true);
    if (rc)
        return rc;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    dshm_pos pos;
    rc = dshm_index_find(env, h, key, klen, &pos);
    return take_end(db, env, rc ? rc : take_locked(env, &pos, false, buf, cap), cap);
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
                r = rc;
                break;
            }
            hops--;
            continue;
        }
        if (rc) {
            r = rc;
            break;
        }
        if (sn.used) {   /* the first entry: [u32 klen][u64 hash][key] */
            uint32_t kl;
            uint64_t h;
            memcpy(&kl, sn.buf, 4);
            memcpy(&h, sn.buf + 4, 8);
            dshm_pos pos;
            rc = dshm_index_find(env, h, sn.buf + 12, kl, &pos);
            r = rc ? (rc == DSHM_NOTFOUND ? DSHM_CORRUPT : rc)
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

static int64_t popitem_unguarded(dshm_db *db, char *buf, size_t cap, uint64_t *klen) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, (!buf && cap) || !klen ? DSHM_INVALID : 0, 0, 0, true);
    if (rc)
        return rc;
    return take_end(db, env, popitem_locked(env, buf, cap, klen), cap);
}

int64_t dshm_pop(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, pop_unguarded(db, key, klen, buf, cap));
}

int64_t dshm_popitem(dshm_db *db, char *buf, size_t cap, uint64_t *klen) {
    GUARDED(int64_t, popitem_unguarded(db, buf, cap, klen));
}
