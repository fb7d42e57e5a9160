/**
 * @file dshm_cache.c
 * @brief The calls a cache adds to the store: dshm_touch (a new deadline),
 *        dshm_expire (drop what has expired) and dshm_set_max_bytes (the
 *        byte cap). Deadlines themselves are read where records are read
 *        (dshm_rec_expired: a get, a scan, a take) and written by the one
 *        record writer (dshm_rec_fill); eviction is the put's
 *        (dshm_make_room, dshm_write.c).
 *
 * Each call holds the writer lock and changes the store through the one
 * put or delete protocol, so a writer killed at any instruction leaves
 * what a killed put or delete leaves.
 *
 * Layer 8: calls writes (put_locked, del_locked, make_room, finish_write),
 * handles (the start of a write), the walk and the index.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dshm_base.h"
#include "dshm_hash.h"
#include "dshm_walk.h"
#include "dshm_index.h"
#include "dshm_handle.h"
#include "dshm_write.h"

static int touch_unguarded(dshm_db *db, const char *key, size_t klen, uint64_t deadline) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, !key && klen ? DSHM_INVALID : 0, 0, DSHM_ROOM_PUT, true);
    if (rc)
        return rc;
    dshm_header *hd = DSHM_HDR(env);
    uint64_t h = dshm_key_hash(hd, key, klen), off, size, now = 0;
    dshm_pos pos;
    if ((rc = dshm_index_find(env, h, key, klen, &pos)) ||
        (rc = dshm_index_slot_rec(env, &pos, hd->hd_top, &off, &size)))
        return dshm_finish_write(db, env, rc);
    const dshm_rec *rec = DSHM_AT(env, off);
    if (dshm_rec_expired(rec, &now))
        return dshm_finish_write(db, env, DSHM_NOTFOUND);
    /* The value is copied out first: the put may grow (remap) the file. */
    uint64_t vlen = rec->rc_vlen;
    char *val = vlen ? malloc(vlen) : NULL;
    if (vlen && !val)
        return dshm_finish_write(db, env, -ENOMEM);
    if (vlen)
        memcpy(val, (const char *)rec + DSHM_REC_HDR + klen, vlen);
    dshm_putx x = {deadline, 0, false, false};
    rc = dshm_put_locked(env, h, key, klen, val, vlen, 0, &x);
    free(val);
    return dshm_finish_write(db, env, rc);
}

/* Under the lock: drop the expired records of one bucket's chain. Their
 * keys are copied out first (a delete moves slots, and its copy on write
 * may reuse a block freed by the delete before it), then each key is found
 * and deleted. *n counts them. */
static int expire_bucket(dshm_env *env, uint64_t b, uint64_t now, int64_t *n) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = hd->hd_top, page;
    char *keys = NULL;
    size_t used = 0, cap = 0;
    unsigned nk = 0;
    int rc = 0, more;
    dshm_chain ch;
    dshm_chain_start(&ch, env, b, limit);
    while (!rc && (more = dshm_chain_next(&ch, &page)) == 1) {
        dshm_bucket *pg = DSHM_AT(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++) {
            uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
            if (!r)
                continue;
            const dshm_rec *rec = dshm_rec_sane(env, r, limit);
            if (!rec) {
                rc = DSHM_CORRUPT;
                break;
            }
            if (!rec->rc_deadline || rec->rc_deadline > now)
                continue;
            uint32_t kl = rec->rc_klen;
            if (used + 4 + kl > cap) {
                size_t ncap = (used + 4 + kl) * 2;
                char *nk2 = realloc(keys, ncap);
                if (!nk2) {
                    rc = -ENOMEM;
                    break;
                }
                keys = nk2;
                cap = ncap;
            }
            memcpy(keys + used, &kl, 4);
            memcpy(keys + used + 4, (const char *)rec + DSHM_REC_HDR, kl);
            used += 4 + kl;
            nk++;
        }
    }
    if (!rc && more < 0)
        rc = more;
    for (size_t at = 0; !rc && nk; nk--) {
        uint32_t kl;
        memcpy(&kl, keys + at, 4);
        const char *k = keys + at + 4;
        at += 4 + kl;
        dshm_pos pos;
        rc = dshm_index_find(env, dshm_key_hash(hd, k, kl), k, kl, &pos);
        if (rc == 0)
            rc = dshm_del_locked(env, &pos, "expire-removed");
        if (rc == 0) {
            hd->hd_expired++;
            (*n)++;
        }
    }
    free(keys);
    return rc;
}

static int64_t expire_unguarded(dshm_db *db) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, 0, 0, 0, true);
    if (rc)
        return rc;
    dshm_header *hd = DSHM_HDR(env);
    uint64_t now = dshm_realtime_ns();
    int64_t n = 0;
    /* Each bucket once, by directory index: a delete never changes the
     * directory, but copy on write may give a bucket a new page, so the
     * entry is read again for each index. */
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(dir);
    if (gd > DSHM_MAX_DEPTH || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), hd->hd_top))
        return dshm_finish_write(db, env, DSHM_CORRUPT);
    for (uint64_t i = 0; i < ((uint64_t)1 << gd) && !rc; i++) {
        dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);   /* copied on write: the same entries */
        if (DSHM_DIR_DEPTH(dir) != gd || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), hd->hd_top)) {
            rc = DSHM_CORRUPT;
            break;
        }
        const _Atomic uint64_t *d = DSHM_AT(env, DSHM_DIR_OFF(dir));
        uint64_t b = atomic_load_explicit(&d[i], memory_order_relaxed);
        if (!dshm_page_ok(b, hd->hd_top)) {
            rc = DSHM_CORRUPT;
            break;
        }
        unsigned ld = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(env, b))->bk_depth, memory_order_relaxed);
        if (ld > gd) {
            rc = DSHM_CORRUPT;
            break;
        }
        if (i % ((uint64_t)1 << (gd - ld)) == 0)   /* the bucket's first entry */
            rc = expire_bucket(env, b, now, &n);
    }
    rc = dshm_finish_write(db, env, rc);
    return rc ? rc : n;
}

static int set_max_unguarded(dshm_db *db, uint64_t max_bytes) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, 0, 0, 0, true);
    if (rc)
        return rc;
    dshm_header *hd = DSHM_HDR(env);
    hd->hd_max_bytes = max_bytes;
    bool evicted = false;
    if (max_bytes && hd->hd_live_bytes > max_bytes)
        rc = dshm_make_room(env, 0, 0, &evicted);
    return dshm_finish_write(db, env, rc);
}

/* ---------------------------------------------------------------------- */
/* Public entry points                                                     */

int dshm_touch(dshm_db *db, const char *key, size_t klen, uint64_t deadline) {
    GUARDED(int, touch_unguarded(db, key, klen, deadline));
}

int64_t dshm_expire(dshm_db *db) { GUARDED(int64_t, expire_unguarded(db)); }

int dshm_set_max_bytes(dshm_db *db, uint64_t max_bytes) {
    GUARDED(int, set_max_unguarded(db, max_bytes));
}
