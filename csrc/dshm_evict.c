/**
 * @file dshm_evict.c
 * @brief Eviction's choice: a sample of the store's records, the expired
 *        or least recently stored one of them (an approximation of "least
 *        recently stored", as Redis samples for its LRU: no list to keep,
 *        nothing written on a read or a write for it).
 *
 * The writer (dshm_write.c) calls it under the lock while a write would
 * pass hd_max_bytes, then deletes the record through the one delete
 * protocol. Reads only, with relaxed loads: the lock holder is the only
 * writer.
 *
 * Layer 1: calls the walk (the chain of a bucket).
 */
#define _GNU_SOURCE
#include "dshm_base.h"
#include "dshm_walk.h"
#include "dshm_evict.h"

/* Buckets chosen at most for one sample (an almost empty store's buckets
 * may hold nothing). */
#define EVICT_BUCKETS 32u

/* A per-thread xorshift64*: which buckets and slots to look at. */
static uint64_t evict_rand(void) {
    static _Thread_local uint64_t x;
    if (!x)
        x = (dshm_realtime_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&x) | 1u;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545f4914f6cdd1dULL;
}

int dshm_evict_pick(dshm_env *env, uint64_t avoid_h, uint64_t *rec, uint64_t *h, bool *expired) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = hd->hd_top;
    dshm_dirwalk w;   /* for its checks of the directory: depth and bounds */
    int rc = dshm_dir_start(&w, env, atomic_load_explicit(&hd->hd_dir, memory_order_relaxed), limit);
    if (rc)
        return rc;
    unsigned gd = w.dw_gd;
    const _Atomic uint64_t *d = w.dw_dir;
    uint64_t now = 0, best = 0, best_h = 0, best_stamp = UINT64_MAX;
    unsigned seen = 0;
    for (unsigned nb = 0; nb < EVICT_BUCKETS && seen < DSHM_EVICT_SAMPLE; nb++) {
        uint64_t r0 = evict_rand();
        uint64_t b = atomic_load_explicit(&d[r0 & (((uint64_t)1 << gd) - 1)], memory_order_relaxed);
        dshm_chain ch;
        uint64_t page;
        int more = 0;
        dshm_chain_start(&ch, env, b, limit);
        while (seen < DSHM_EVICT_SAMPLE && (more = dshm_chain_next(&ch, &page)) == 1) {
            dshm_bucket *pg = DSHM_AT(env, page);
            /* A few slots of the page from a random one on: a sample
             * spread over buckets, not one bucket's records. */
            unsigned s0 = (unsigned)((r0 >> 32) % DSHM_SLOTS), take = 0;
            for (unsigned i = 0; i < DSHM_SLOTS && take < 4 && seen < DSHM_EVICT_SAMPLE; i++) {
                unsigned s = (s0 + i) % DSHM_SLOTS;
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                uint64_t sh = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                if (!r || sh == avoid_h)
                    continue;
                if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, limit))
                    return DSHM_CORRUPT;
                const dshm_rec *rc = DSHM_AT(env, r);   /* formed only once r is inside */
                take++;
                seen++;
                if (dshm_rec_expired(rc, &now)) {
                    *rec = r;
                    *h = sh;
                    *expired = true;
                    return 0;
                }
                if (rc->rc_stamp < best_stamp) {
                    best_stamp = rc->rc_stamp;
                    best = r;
                    best_h = sh;
                }
            }
        }
        if (more < 0)
            return more;
    }
    if (!best) {
        /* The buckets drawn were empty (a sparse store): walk the directory
         * from a random entry to the first record not the avoided key's. */
        uint64_t n = (uint64_t)1 << gd, i0 = evict_rand();
        for (uint64_t i = 0; i < n && !best; i++) {
            dshm_chain ch;
            uint64_t page;
            int more;
            dshm_chain_start(&ch, env, atomic_load_explicit(&d[(i0 + i) & (n - 1)], memory_order_relaxed), limit);
            while (!best && (more = dshm_chain_next(&ch, &page)) == 1) {
                dshm_bucket *pg = DSHM_AT(env, page);
                for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                    uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                    uint64_t sh = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                    if (r && sh != avoid_h) {
                        if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, limit))
                            return DSHM_CORRUPT;
                        best = r;
                        best_h = sh;
                        break;
                    }
                }
            }
            if (more < 0)
                return more;
        }
        if (!best)
            return DSHM_NOTFOUND;
        *expired = dshm_rec_expired((const dshm_rec *)DSHM_AT(env, best), &now);
        *rec = best;
        *h = best_h;
        return 0;
    }
    *rec = best;
    *h = best_h;
    *expired = false;
    return 0;
}
