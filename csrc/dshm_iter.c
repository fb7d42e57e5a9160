/**
 * @file dshm_iter.c
 * @brief Bucket snapshots, the unit of iteration: firstkey, nextkey and
 *        scan copy one bucket at a time, lock-free, in hash order.
 *
 * Layer 8: calls the read-retry protocol, handles and the index.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dshm_base.h"
#include "dshm_walk.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_handle.h"
#include "dshm_read.h"
#include "dshm_iter.h"

/* ---------------------------------------------------------------------- */
/* Bucket snapshots: the unit of iteration.                                 */

typedef dshm_snap snap;

/* Copy the entries of the bucket covering `cursor` whose hash is >=
 * `from`, in slot order. Returns 0, DSHM_RETRY, DSHM_CORRUPT, or -ERANGE
 * with sn->used set to the size needed. */
int dshm_snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, snap *sn) {
    dshm_rview v;
    int rc = DSHM_CORRUPT;
    size_t need = 0;
    sn->used = 0;
    if (dshm_rview_begin(&v, env, cursor, locked))
        return DSHM_RETRY;
    dshm_bucket *bk = v.rv_bk;
    unsigned ld = bk ? atomic_load_explicit(&bk->bk_depth, memory_order_relaxed) : 0;
    uint64_t prefix = bk ? atomic_load_explicit(&bk->bk_prefix, memory_order_relaxed) : 0;
    if (!bk || !dshm_bucket_covers(bk, cursor))   /* reused for another bucket, or damaged */
        goto validate;
    dshm_chain ch;
    uint64_t page, now = 0;
    int more = 0;
    rc = 0;
    dshm_chain_start(&ch, env, v.rv_b, v.rv_limit);
    while (!rc && (more = dshm_chain_next(&ch, &page)) == 1) {
        dshm_bucket *pg = DSHM_AT(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++) {
            uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
            uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
            if (!r || h < from)
                continue;
            if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, v.rv_limit)) {
                rc = DSHM_CORRUPT;
                break;
            }
            const volatile dshm_rec *rec = DSHM_AT(env, r);
            if (dshm_rec_expired(rec, &now))
                continue;   /* absent, as for a get */
            uint64_t kl = rec->rc_klen, vl = values ? rec->rc_vlen : 0;
            if (vl > DSHM_MAX_VALUE || !dshm_in(r, DSHM_REC_HDR + kl + vl, v.rv_limit)) {
                rc = DSHM_CORRUPT;
                break;
            }
            size_t sz = 4 + (values ? 8 : 0) + 8 + kl + vl;
            need += sz;
            if (need > sn->cap)
                continue;
            char *p = sn->buf + sn->used;
            uint32_t kl32 = (uint32_t)kl;
            memcpy(p, &kl32, 4); p += 4;
            if (values) { memcpy(p, &vl, 8); p += 8; }
            memcpy(p, &h, 8); p += 8;
            memcpy(p, (const char *)DSHM_AT(env, r + DSHM_REC_HDR), kl + vl);
            sn->used += sz;
        }
    }
    if (more < 0)
        rc = more;
validate:
    if ((rc = (int)dshm_rview_end(&v, env, cursor, rc, locked)))
        return rc;
    uint64_t span = ld ? (uint64_t)1 << (64 - ld) : 0;
    sn->last = ld == 0 || prefix + span == 0;
    sn->next = sn->last ? 0 : prefix + span;
    if (need > sn->cap) {
        sn->used = need;
        return -ERANGE;
    }
    return 0;
}

typedef struct snap_ctx {
    uint64_t cursor, from;
    bool values;
    snap *sn;
} snap_ctx;

static int64_t snap_once(dshm_env *env, bool locked, void *p) {
    snap_ctx *c = p;
    return dshm_snap_read(env, c->cursor, c->from, c->values, locked, c->sn);
}

/* snap_read with retries and the locked fallback. */
static int snap_get(dshm_db *db, dshm_env **envp, uint64_t cursor, uint64_t from, bool values, snap *sn) {
    snap_ctx c = { cursor, from, values, sn };
    return (int)dshm_read_retry(db, envp, snap_once, &c, DSHM_READ_TRIES);
}

/* Grow sn to hold `need` bytes. */
int dshm_snap_reserve(snap *sn, size_t need) {
    if (need <= sn->cap)
        return 0;
    size_t cap = sn->cap ? sn->cap : 65536;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sn->buf, cap);
    if (!p)
        return -ENOMEM;
    sn->buf = p;
    sn->cap = cap;
    return 0;
}

/* Snapshot of the bucket at cursor, growing the buffer as needed. */
static int snap_full(dshm_db *db, dshm_env **envp, uint64_t cursor, uint64_t from, snap *sn) {
    for (;;) {
        int r = snap_get(db, envp, cursor, from, false, sn);
        if (r != -ERANGE)
            return r;
        if ((r = dshm_snap_reserve(sn, sn->used)))
            return r;
    }
}

/* Walk the entries of sn: returns the next record after pos. */
static bool snap_entry(const snap *sn, size_t *pos, const char **key, uint32_t *klen, uint64_t *hash) {
    if (*pos >= sn->used)
        return false;
    const char *p = sn->buf + *pos;
    memcpy(klen, p, 4);
    memcpy(hash, p + 4, 8);
    *key = p + 12;
    *pos += 12 + *klen;
    return true;
}

static int64_t copy_key(const char *key, uint32_t klen, char *buf, size_t cap) {
    if (klen <= cap && klen)
        memcpy(buf, key, klen);
    return klen;
}

/* First key at or after cursor, in the store's (hash) order. */
static int64_t key_from(dshm_db *db, dshm_env **envp, uint64_t cursor, snap *sn, char *buf, size_t cap) {
    for (;;) {
        int r = snap_full(db, envp, cursor, cursor, sn);
        if (r)
            return r;
        size_t pos = 0;
        const char *k;
        uint32_t kl;
        uint64_t h;
        if (snap_entry(sn, &pos, &k, &kl, &h))
            return copy_key(k, kl, buf, cap);
        if (sn->last)
            return DSHM_NOTFOUND;
        cursor = sn->next;
    }
}

static int64_t firstkey_unguarded(dshm_db *db, char *buf, size_t cap) {
    dshm_env *env;
    int rc = dshm_enter(db, &env);
    if (rc)
        return rc;
    snap sn = {0};
    int64_t r = key_from(db, &env, 0, &sn, buf, cap);
    free(sn.buf);
    dshm_leave(db);
    return r;
}

static int64_t nextkey_unguarded(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, !key && klen ? DSHM_INVALID : 0);
    if (rc)
        return rc;
    /* The order is bucket by bucket in hash order, and slot order inside
     * a bucket: the successor is the entry after key in its bucket's
     * snapshot, or the first entry of a following bucket. */
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    snap sn = {0};
    int64_t r = snap_full(db, &env, h, 0, &sn);
    if (r)
        goto out;
    size_t pos = 0;
    const char *k;
    uint32_t kl;
    uint64_t eh;
    bool seen = false;
    r = DSHM_NOTFOUND;
    while (snap_entry(&sn, &pos, &k, &kl, &eh)) {
        if (seen) {
            r = copy_key(k, kl, buf, cap);
            goto out;
        }
        seen = eh == h && kl == klen && memcmp(k, key, klen) == 0;
    }
    if (seen && !sn.last)      /* an absent key has no successor, as in gdbm */
        r = key_from(db, &env, sn.next, &sn, buf, cap);
out:
    free(sn.buf);
    dshm_leave(db);
    return r;
}

static int64_t scan_unguarded(dshm_db *db, uint64_t *cursor, int *done, char *buf, size_t cap,
                  int flags, uint64_t *need) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, !cursor || !done || (!buf && cap) ? DSHM_INVALID : 0);
    if (rc)
        return rc;
    bool values = flags & DSHM_SCAN_VALUES;
    size_t used = 0;
    int64_t r = 0;
    *done = 0;
    while (!*done) {
        snap sn = { .buf = buf + used, .cap = cap - used };
        int sr = snap_get(db, &env, *cursor, *cursor, values, &sn);
        if (sr == -ERANGE) {
            if (used == 0) {
                if (need)
                    *need = sn.used;
                r = -ERANGE;
            }
            break;
        }
        if (sr) {
            r = sr;
            break;
        }
        used += sn.used;
        if (sn.last)
            *done = 1;
        else
            *cursor = sn.next;
    }
    dshm_leave(db);
    return r < 0 ? r : (int64_t)used;
}

/* ---------------------------------------------------------------------- */
/* Public entry points                                                     */

int64_t dshm_firstkey(dshm_db *db, char *buf, size_t cap) { GUARDED(int64_t, firstkey_unguarded(db, buf, cap)); }

int64_t dshm_nextkey(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap) {
    GUARDED(int64_t, nextkey_unguarded(db, key, klen, buf, cap));
}

int64_t dshm_scan(dshm_db *db, uint64_t *cursor, int *done, char *buf, size_t cap, int flags, uint64_t *need) {
    GUARDED(int64_t, scan_unguarded(db, cursor, done, buf, cap, flags, need));
}
