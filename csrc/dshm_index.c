/**
 * @file dshm_index.c
 * @brief The index: extendible hashing over bucket pages (the keyed hash
 *        is dshm_hash.c).
 *
 * The directory is an array of 2^depth bucket offsets indexed by the TOP
 * `depth` bits of the hash, so each bucket covers one contiguous range of
 * hash space and a scan in directory order is a scan in hash order (a scan
 * cursor survives splits). A bucket page is an open-addressing table of
 * DSHM_SLOTS slots (linear probing from hash % DSHM_SLOTS, backward-shift
 * deletion). A full bucket splits into two fresh pages; the directory
 * doubles only when the bucket's local depth equals the global depth, and
 * only while it stays within DSHM_DIR_SLACK entries per bucket and
 * DSHM_MAX_DEPTH bits. A bucket that cannot be split that way (its keys
 * collide) grows a chain of overflow pages instead.
 *
 * Readers (dshm_index_read) run without the lock: see dshm_layout.h for the
 * seqlock protocol. Every function not named *_read runs under the lock.
 * Layer 2: calls the allocator (pages, the directory), the keyed hash and
 * the guard.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_walk.h"
#include "dshm_hash.h"
#include "dshm_space.h"
#include "dshm_index.h"

static inline dshm_bucket *page_at(dshm_env *env, uint64_t off) { return DSHM_AT(env, off); }
static inline uint64_t ld_rel(const _Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static inline void st_rel(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }

static inline uint64_t dir_index(uint64_t h, unsigned depth) {
    return depth ? h >> (64 - depth) : 0;
}

/* Where this thread's last lock-free read met an odd counter. */
_Thread_local dshm_odd dshm_read_odd;

bool dshm_bucket_covers(dshm_bucket *bk, uint64_t h) {
    unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
    uint64_t prefix = ld_rel(&bk->bk_prefix);
    uint64_t mask = ld == 0 ? 0 : ld >= 64 ? ~(uint64_t)0 : ~(uint64_t)0 << (64 - ld);
    return atomic_load_explicit(&bk->bk_kind, memory_order_relaxed) == DSHM_BK_PRIMARY &&
           ld <= DSHM_MAX_DEPTH && (h & mask) == prefix;
}

/** The primary bucket for hash h under directory value dir, or 0 if an
 *  offset on the way is out of bounds (stale under a reader, or damage). */
uint64_t dshm_bucket_for(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit) {
    uint64_t doff = DSHM_DIR_OFF(dir);
    unsigned depth = DSHM_DIR_DEPTH(dir);
    uint64_t idx = dir_index(h, depth);
    if (depth > DSHM_MAX_DEPTH || doff % 64 || !dshm_in(doff, ((uint64_t)8 << depth), limit))
        return 0;
    const _Atomic uint64_t *d = DSHM_AT(env, doff);
    uint64_t b = atomic_load_explicit(&d[idx], memory_order_acquire);
    return dshm_page_ok(b, limit) ? b : 0;
}

/* Compare a slot's record with key; on a match return the record's value
 * length and its offset, else -1. Bounds-checked: a stale slot under a
 * reader reads harmless bytes. */
static int64_t rec_match(dshm_env *env, uint64_t r, const char *key, size_t klen,
                         uint64_t limit, uint64_t *voff) {
    if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, limit))
        return -1;
    const volatile dshm_rec *rec = DSHM_AT(env, r);
    uint64_t rk = rec->rc_klen, rv = rec->rc_vlen;
    if (rk != klen || rv > DSHM_MAX_VALUE || !dshm_in(r, DSHM_REC_HDR + rk + rv, limit))
        return -1;
    const char *kp = (const char *)DSHM_AT(env, r + DSHM_REC_HDR);
    if (memcmp(kp, key, klen) != 0)
        return -1;
    *voff = r + DSHM_REC_HDR + rk;
    return (int64_t)rv;
}

/* A walk along the probe sequence of one hash in one page, slot by slot
 * from the home slot: the one walk by hash, for the read and its prefetch. */
typedef struct probe {
    unsigned pr_s;      /* the next slot to look at */
    unsigned pr_left;   /* probes left */
} probe;

static inline probe probe_start(uint64_t h, unsigned probes) {
    return (probe){ (unsigned)(h % DSHM_SLOTS), probes };
}

/* The record offset of the next slot whose hash is h (*at set to the
 * slot), or 0 at an empty slot (the end of the sequence) or when the
 * probes run out: the walk is over then. */
static inline uint64_t probe_next(dshm_bucket *pg, uint64_t h, probe *p, unsigned *at) {
    for (; p->pr_left; p->pr_left--) {
        unsigned s = p->pr_s;
        p->pr_s = s + 1 == DSHM_SLOTS ? 0 : s + 1;
        uint64_t r = ld_rel(&pg->bk_slots[s].sl_rec);
        if (!r)
            return 0;
        if (ld_rel(&pg->bk_slots[s].sl_hash) == h) {
            p->pr_left--;
            *at = s;
            return r;
        }
    }
    return 0;
}

/* Fetch the lines [from, to) of the record at r, if all of it lies in
 * bounds (a hint: nothing is read). */
static inline void prefetch_record(dshm_env *env, uint64_t r, uint64_t limit, unsigned from, unsigned to) {
    if (r % DSHM_ALIGN || !dshm_in(r, to, limit))
        return;
    for (unsigned b = from; b < to; b += 64)
        __builtin_prefetch((const char *)DSHM_AT(env, r) + b, 0, 3);
}

/* Bytes of a record fetched at once when its slot's hash matches: the
 * header, a short key and a value of about 100 bytes. */
#define DSHM_REC_PREFETCH 192u

/* Search one page's probe sequence. Returns the slot or -1. */
static int page_search(dshm_env *env, dshm_bucket *pg, uint64_t h, const char *key,
                       size_t klen, uint64_t limit, int64_t *vlen, uint64_t *voff) {
    probe p = probe_start(h, DSHM_SLOTS);
    unsigned s;
    uint64_t r;
    while ((r = probe_next(pg, h, &p, &s))) {
        /* The record's first lines load together, not one after the
         * other (header and key, then the value the copy reads). */
        prefetch_record(env, r, limit, 64, DSHM_REC_PREFETCH);
        int64_t n = rec_match(env, r, key, klen, limit, voff);
        if (n >= 0) {
            *vlen = n;
            return (int)s;
        }
    }
    return -1;
}

int64_t dshm_index_read(dshm_env *env, uint64_t h, const char *key, size_t klen,
                        char *buf, size_t cap, bool locked) {
    dshm_rview v;
    int64_t result = DSHM_CORRUPT;
    if (dshm_rview_begin(&v, env, h, locked))
        return DSHM_RETRY;
    /* The page may have been split away and reused for another bucket
     * between the directory load and the counter load: it must be a
     * primary bucket covering h (checked again by the counter after). */
    if (!v.rv_bk || !dshm_bucket_covers(v.rv_bk, h))
        return dshm_rview_end(&v, env, h, result, locked);
    result = DSHM_NOTFOUND;
    dshm_chain ch;
    uint64_t page;
    int more;
    dshm_chain_start(&ch, env, v.rv_b, v.rv_limit);
    while ((more = dshm_chain_next(&ch, &page)) == 1) {
        int64_t vlen;
        uint64_t voff;
        if (page_search(env, page_at(env, page), h, key, klen, v.rv_limit, &vlen, &voff) >= 0) {
            /* An expired record reads as absent (its header is in bounds:
             * rec_match checked the whole record). */
            uint64_t now = 0;
            if (dshm_rec_expired(DSHM_AT(env, voff - klen - DSHM_REC_HDR), &now)) {
                result = DSHM_NOTFOUND;
                break;
            }
            if ((uint64_t)vlen <= cap && vlen > 0)
                memcpy(buf, DSHM_AT(env, voff), (size_t)vlen);
            result = vlen;
            break;
        }
    }
    if (more < 0)
        result = more;
    return dshm_rview_end(&v, env, h, result, locked);
}

/* Slots stage 2 of a prefetch looks at, at most, for the key's slot. */
#define PF_PROBES 8u

/** Software prefetch for a later lookup of hash h (dshm_get_many's
 *  pipeline), in three stages a few keys apart: 0 the directory entry,
 *  1 the bucket page's header and first probe slot, 2 the record of the
 *  first slot along the probe sequence whose hash is h (the key is often
 *  not in its home slot), looking at PF_PROBES slots at most, on lines
 *  that stage 1 fetched. Hints only: nothing read here is trusted (the lookup
 *  proper reads it all again under the seqlock), a stale value costs only
 *  a useless prefetch, and every offset is bounds-checked against limit
 *  before a pointer is formed from it. */
void dshm_index_prefetch(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit, int stage) {
    uint64_t doff = DSHM_DIR_OFF(dir);
    unsigned depth = DSHM_DIR_DEPTH(dir);
    if (depth > DSHM_MAX_DEPTH || !dshm_in(doff, (uint64_t)8 << depth, limit))
        return;
    const _Atomic uint64_t *d = DSHM_AT(env, doff);
    uint64_t idx = dir_index(h, depth);
    if (stage == 0) {
        __builtin_prefetch((const void *)&d[idx], 0, 3);
        return;
    }
    uint64_t b = ld_rel(&d[idx]);
    if (!dshm_page_ok(b, limit))
        return;
    dshm_bucket *bk = page_at(env, b);
    if (stage == 1) {
        __builtin_prefetch((const void *)bk, 0, 3);
        __builtin_prefetch((const void *)&bk->bk_slots[h % DSHM_SLOTS], 0, 3);
        return;
    }
    probe p = probe_start(h, PF_PROBES);
    unsigned s;
    uint64_t r = probe_next(bk, h, &p, &s);
    if (r)
        prefetch_record(env, r, limit, 0, 128);
}

/* ---------------------------------------------------------------------- */
/* Writer side: everything below runs under the writer lock.               */

/* Before a writer changes the chain of primary bucket b for hash h: b must
 * be a primary covering h with a sane local depth, and every page of its
 * chain in bounds, of the right kind, with a possible count. A damaged file
 * gives DSHM_CORRUPT here instead of a wild write. */
static int chain_check(dshm_env *env, uint64_t b, uint64_t h, unsigned gd, uint64_t limit) {
    dshm_bucket *bk = page_at(env, b);
    if (!dshm_bucket_covers(bk, h) || atomic_load_explicit(&bk->bk_depth, memory_order_relaxed) > gd)
        return DSHM_CORRUPT;
    dshm_chain ch;
    uint64_t page;
    int more;
    dshm_chain_start(&ch, env, b, limit);
    while ((more = dshm_chain_next(&ch, &page)) == 1) {
        dshm_bucket *pg = page_at(env, page);
        uint32_t kind = atomic_load_explicit(&pg->bk_kind, memory_order_relaxed);
        if ((page == b ? kind != DSHM_BK_PRIMARY : kind != DSHM_BK_OVERFLOW) ||
            atomic_load_explicit(&pg->bk_count, memory_order_relaxed) > DSHM_SLOTS)
            return DSHM_CORRUPT;
    }
    return more;
}

int dshm_index_find(dshm_env *env, uint64_t h, const char *key, size_t klen, dshm_pos *pos) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    uint64_t b = dshm_bucket_for(env, dir, h, limit);
    if (!b || chain_check(env, b, h, DSHM_DIR_DEPTH(dir), limit))
        return DSHM_CORRUPT;
    pos->ps_bucket = b;
    pos->ps_dir_idx = (uint32_t)dir_index(h, DSHM_DIR_DEPTH(dir));
    dshm_chain ch;
    uint64_t page;
    int more;
    dshm_chain_start(&ch, env, b, limit);
    while ((more = dshm_chain_next(&ch, &page)) == 1) {
        int64_t vlen;
        uint64_t voff;
        int s = page_search(env, page_at(env, page), h, key, klen, limit, &vlen, &voff);
        if (s >= 0) {
            pos->ps_page = page;
            pos->ps_slot = (uint32_t)s;
            return 0;
        }
    }
    return more < 0 ? more : DSHM_NOTFOUND;
}

/* Put (h, rec) into the first free slot of pg's probe sequence. False if
 * the page has no free slot (its count lied: a damaged file). */
static bool page_put(dshm_bucket *pg, uint64_t h, uint64_t rec) {
    unsigned s = (unsigned)(h % DSHM_SLOTS), n = 0;
    while (ld_rel(&pg->bk_slots[s].sl_rec)) {
        if (++n == DSHM_SLOTS)
            return false;
        s = s + 1 == DSHM_SLOTS ? 0 : s + 1;
    }
    st_rel(&pg->bk_slots[s].sl_hash, h);
    atomic_store_explicit(&pg->bk_slots[s].sl_rec, rec, memory_order_release);
    atomic_store_explicit(&pg->bk_count, atomic_load_explicit(&pg->bk_count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return true;
}

/* Put (h, rec) into the chain that starts at primary page b, appending an
 * overflow page if every page is full. */
static int chain_put(dshm_env *env, uint64_t b, uint64_t h, uint64_t rec) {
    uint64_t page = b, last = b;
    while (page) {
        dshm_bucket *pg = page_at(env, page);
        if (atomic_load_explicit(&pg->bk_count, memory_order_relaxed) < DSHM_MAX_FILL)
            return page_put(pg, h, rec) ? 0 : DSHM_CORRUPT;
        last = page;
        page = ld_rel(&pg->bk_next);
    }
    uint64_t np;
    int rc = dshm_page_alloc(env, DSHM_BK_OVERFLOW, &np);
    if (rc)
        return rc;
    dshm_bucket *npg = page_at(env, np);
    page_put(npg, h, rec);   /* a fresh page: always room */
    dshm_bucket_end(npg);   /* its own counter even; the primary's covers it */
    atomic_store_explicit(&page_at(env, last)->bk_next, np, memory_order_release);
    return 0;
}

/* Publish a new directory (written in this period) with one store of
 * hd_dir inside an odd window of hd_struct_seq (inside a batch the window
 * is already open and stays so). Its period is noted after: a writer that
 * dies in between leaves a directory the next write copies once more. */
static void dir_publish(dshm_env *env, uint64_t dir) {
    dshm_header *hd = DSHM_HDR(env);
    bool opened = dshm_struct_begin(hd);
    atomic_store_explicit(&hd->hd_dir, dir, memory_order_release);
    dshm_struct_end(hd, opened);
    hd->hd_dir_gen = hd->hd_gen;
}

/* Double the directory. New directory entries 2i and 2i+1 both point to
 * old entry i; it is published with one store of hd_dir inside an odd
 * window of hd_struct_seq, and the old one is freed. */
static int dir_double(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed), ogen = hd->hd_dir_gen;
    unsigned depth = DSHM_DIR_DEPTH(dir);
    uint64_t n = (uint64_t)1 << depth, noff;
    int rc = dshm_alloc_aligned(env, dshm_dir_bytes(depth + 1), 64, &noff);
    if (rc)
        return rc;
    const _Atomic uint64_t *od = DSHM_AT(env, DSHM_DIR_OFF(dir));
    _Atomic uint64_t *nd = DSHM_AT(env, noff);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = ld_rel(&od[i]);
        st_rel(&nd[2 * i], b);
        st_rel(&nd[2 * i + 1], b);
    }
    DSHM_CRASH_POINT("double");
    dir_publish(env, noff | (depth + 1));
    dshm_retire_block(env, DSHM_DIR_OFF(dir), dshm_dir_bytes(depth), ogen);
    return 0;
}

/* Copy on write for the directory: before an entry changes, a directory
 * of an older period (the last commit may reference it) is copied and the
 * copy published in its place. */
static int dir_own(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (dshm_gen_current(hd, hd->hd_dir_gen))
        return 0;
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed), ogen = hd->hd_dir_gen, noff;
    unsigned depth = DSHM_DIR_DEPTH(dir);
    int rc = dshm_alloc_aligned(env, dshm_dir_bytes(depth), 64, &noff);
    if (rc)
        return rc;
    memcpy(DSHM_AT(env, noff), DSHM_AT(env, DSHM_DIR_OFF(dir)), dshm_dir_bytes(depth));
    dir_publish(env, noff | depth);
    dshm_retire_block(env, DSHM_DIR_OFF(dir), dshm_dir_bytes(depth), ogen);
    return 0;
}

/* Repoint directory entries [first, first+n) for a split: the lower half to
 * lo, the upper half to hi. Idempotent: recovery redoes it. */
static void dir_switch(dshm_env *env, uint64_t first, uint64_t n, uint64_t lo, uint64_t hi) {
    dshm_header *hd = DSHM_HDR(env);
    _Atomic uint64_t *d = DSHM_AT(env, DSHM_DIR_OFF(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed)));
    for (uint64_t i = 0; i < n; i++) {
        atomic_store_explicit(&d[first + i], i < n / 2 ? lo : hi, memory_order_release);
        if (i == n / 2)
            DSHM_CRASH_POINT("split-switch");
    }
}

/* Switch the directory entries of bucket b (local depth ld, hash prefix
 * `prefix`) to lo for the lower half and hi for the upper (the same page
 * for a copy on write), under the intent record: it is written first, so a
 * writer dying in the switch leaves it for the next lock holder, which
 * finishes the switch (dshm_index_finish_split). `point`: a crash point
 * between the record and the switch, or NULL. */
static void switch_under_intent(dshm_env *env, uint64_t b, unsigned ld, uint64_t prefix,
                                uint64_t lo, uint64_t hi, const char *point) {
    dshm_header *hd = DSHM_HDR(env);
    unsigned gd = DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed));
    uint64_t first = ld ? prefix >> (64 - gd) : 0, n = (uint64_t)1 << (gd - ld);
    hd->hd_intent_old = b;
    hd->hd_intent_lo = lo;
    hd->hd_intent_hi = hi;
    hd->hd_intent_first = first;
    hd->hd_intent_n = n;
    atomic_thread_fence(memory_order_release);
    hd->hd_intent_op = DSHM_INTENT_SPLIT;
    if (point)
        DSHM_CRASH_POINT(point);
    dir_switch(env, first, n, lo, hi);
    hd->hd_intent_op = DSHM_INTENT_NONE;
}

/* Free a bucket's overflow chain (not the primary). */
static void chain_free(dshm_env *env, uint64_t b) {
    uint64_t page = ld_rel(&page_at(env, b)->bk_next);
    while (page) {
        uint64_t next = ld_rel(&page_at(env, page)->bk_next);
        dshm_page_free(env, page);
        page = next;
    }
}

/* Retire the chain of primary b, which no directory entry names any more:
 * the overflow pages first (the primary's odd counter covers them), then
 * the primary. */
static void chain_retire(dshm_env *env, uint64_t b) {
    uint64_t page = ld_rel(&page_at(env, b)->bk_next);
    while (page) {
        uint64_t next = ld_rel(&page_at(env, page)->bk_next);
        dshm_retire_page(env, page);
        page = next;
    }
    dshm_retire_page(env, b);
}

/* Split the primary bucket b (local depth ld) in two fresh pages. */
static int bucket_split(dshm_env *env, uint64_t b) {
    dshm_bucket *bk = page_at(env, b);
    unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
    uint64_t prefix = ld_rel(&bk->bk_prefix);
    uint64_t lo, hi;
    int rc;
    if ((rc = dshm_page_alloc(env, DSHM_BK_PRIMARY, &lo)))
        return rc;
    if ((rc = dshm_page_alloc(env, DSHM_BK_PRIMARY, &hi))) {
        dshm_page_free(env, lo);
        return rc;
    }
    uint64_t bit = (uint64_t)1 << (63 - ld);
    dshm_bucket *L = page_at(env, lo), *H = page_at(env, hi);
    st_rel(&L->bk_prefix, prefix);
    st_rel(&H->bk_prefix, prefix | bit);
    atomic_store_explicit(&L->bk_depth, ld + 1, memory_order_relaxed);
    atomic_store_explicit(&H->bk_depth, ld + 1, memory_order_relaxed);
    for (uint64_t page = b; page; page = ld_rel(&page_at(env, page)->bk_next)) {
        dshm_bucket *pg = page_at(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++) {
            uint64_t r = ld_rel(&pg->bk_slots[s].sl_rec);
            if (!r)
                continue;
            uint64_t h = ld_rel(&pg->bk_slots[s].sl_hash);
            if ((rc = chain_put(env, (h & bit) ? hi : lo, h, r))) {
                /* Out of space: the old bucket is untouched; give the new,
                 * unpublished pages back. */
                chain_free(env, lo);
                dshm_page_free(env, lo);
                chain_free(env, hi);
                dshm_page_free(env, hi);
                return rc;
            }
        }
    }
    dshm_bucket_end(L);
    dshm_bucket_end(H);
    if ((rc = dir_own(env))) {
        chain_free(env, lo);
        dshm_page_free(env, lo);
        chain_free(env, hi);
        dshm_page_free(env, hi);
        return rc;
    }
    switch_under_intent(env, b, ld, prefix, lo, hi, "split-intent");
    /* The old bucket's counter goes odd before its overflow pages go to
     * the pool: a reader still walking its chain could otherwise follow a
     * freed page's pool link into stale slots and finish, unnoticed, before
     * the primary itself is freed. (An unreachable page left odd by a death
     * here becomes free space in the repair.) */
    dshm_bucket_begin(bk);
    chain_retire(env, b);
    return 0;
}

/* Copy on write for a bucket: before the chain of primary b changes, a
 * chain with a page of an older period (the last commit may reference it)
 * is copied whole into new pages, the directory entries of its prefix are
 * switched to the copy (with the split's intent record: a writer that dies
 * in the switch leaves it for the next lock holder) and the old chain is
 * retired. *nb: the primary to change (b itself when it is of this
 * period). pos, if not NULL, is moved to the same slot in the copy. */
static int chain_own(dshm_env *env, uint64_t b, uint64_t *nb, dshm_pos *pos) {
    dshm_header *hd = DSHM_HDR(env);
    bool own = true;
    unsigned pages = 0;
    for (uint64_t page = b; page; page = ld_rel(&page_at(env, page)->bk_next), pages++)
        own = own && dshm_gen_current(hd, page_at(env, page)->bk_gen);
    *nb = b;
    if (own)
        return 0;
    int rc = dir_own(env);
    if (rc)
        return rc;
    dshm_bucket *bk = page_at(env, b);
    uint64_t first_new = 0, prev = 0, at = 0;
    unsigned i = 0;
    for (uint64_t page = b; page; page = ld_rel(&page_at(env, page)->bk_next), i++) {
        dshm_bucket *pg = page_at(env, page);
        uint64_t np;
        if ((rc = dshm_page_alloc(env, atomic_load_explicit(&pg->bk_kind, memory_order_relaxed), &np))) {
            if (first_new) {
                chain_free(env, first_new);
                dshm_page_free(env, first_new);
            }
            return rc;
        }
        dshm_bucket *npg = page_at(env, np);
        st_rel(&npg->bk_prefix, ld_rel(&pg->bk_prefix));
        atomic_store_explicit(&npg->bk_depth, atomic_load_explicit(&pg->bk_depth, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&npg->bk_count, atomic_load_explicit(&pg->bk_count, memory_order_relaxed),
                              memory_order_relaxed);
        memcpy((void *)npg->bk_slots, (const void *)pg->bk_slots, sizeof npg->bk_slots);
        if (prev)
            atomic_store_explicit(&page_at(env, prev)->bk_next, np, memory_order_relaxed);
        else
            first_new = np;
        if (pos && pos->ps_page == page)
            at = np;
        prev = np;
        dshm_bucket_end(npg);
    }
    switch_under_intent(env, b, atomic_load_explicit(&bk->bk_depth, memory_order_relaxed),
                        ld_rel(&bk->bk_prefix), first_new, first_new, NULL);
    DSHM_CRASH_POINT("cow-switched");
    dshm_bucket_begin(bk);   /* odd for good: readers still on it retry */
    chain_retire(env, b);
    if (pos) {
        pos->ps_bucket = first_new;
        pos->ps_page = at;
    }
    *nb = first_new;
    return 0;
}

int dshm_index_finish_split(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (hd->hd_intent_op != DSHM_INTENT_SPLIT)
        return 0;
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    uint64_t entries = (uint64_t)1 << DSHM_DIR_DEPTH(dir);
    if (!dshm_page_ok(hd->hd_intent_lo, limit) || !dshm_page_ok(hd->hd_intent_hi, limit) ||
        hd->hd_intent_n < (hd->hd_intent_lo == hd->hd_intent_hi ? 1u : 2u) || hd->hd_intent_n > entries ||
        hd->hd_intent_first > entries - hd->hd_intent_n)
        return DSHM_CORRUPT;
    dir_switch(env, hd->hd_intent_first, hd->hd_intent_n, hd->hd_intent_lo, hd->hd_intent_hi);
    hd->hd_intent_op = DSHM_INTENT_NONE;
    return 0;
}

/* Can the bucket b split usefully, given that (h) joins it? A split needs
 * the entries to differ somewhere below the top `ld` bits and within
 * DSHM_MAX_DEPTH bits, and the directory must be allowed to hold it. */
static bool can_split(dshm_env *env, uint64_t b, uint64_t h) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_bucket *bk = page_at(env, b);
    unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed));
    if (ld >= DSHM_MAX_DEPTH)
        return false;
    uint64_t diff = 0;
    for (uint64_t page = b; page; page = ld_rel(&page_at(env, page)->bk_next)) {
        dshm_bucket *pg = page_at(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++)
            if (ld_rel(&pg->bk_slots[s].sl_rec))
                diff |= ld_rel(&pg->bk_slots[s].sl_hash) ^ h;
    }
    if (!diff || (unsigned)__builtin_clzll(diff) >= DSHM_MAX_DEPTH)
        return false;   /* colliding keys: no split separates them */
    if (ld < gd)
        return true;
    /* Doubling: bounded by the buckets it serves, and (should hd_buckets be
     * damaged) by the file it lives in. */
    return ((uint64_t)1 << (gd + 1)) <= DSHM_DIR_SLACK * (hd->hd_buckets + 1) &&
           dshm_dir_bytes(gd + 1) <= atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
}

int dshm_index_insert(dshm_env *env, uint64_t h, uint64_t rec) {
    dshm_header *hd = DSHM_HDR(env);
    for (;;) {
        uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
        uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
        uint64_t b = dshm_bucket_for(env, dir, h, limit);
        if (!b || chain_check(env, b, h, DSHM_DIR_DEPTH(dir), limit))
            return DSHM_CORRUPT;
        dshm_bucket *bk = page_at(env, b);
        if (atomic_load_explicit(&bk->bk_count, memory_order_relaxed) >= DSHM_MAX_FILL &&
            can_split(env, b, h)) {
            int rc;
            unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
            if (ld == DSHM_DIR_DEPTH(dir) && (rc = dir_double(env)))
                return rc;
            if ((rc = bucket_split(env, b)))
                return rc;
            continue;
        }
        int rc = chain_own(env, b, &b, NULL);
        if (rc)
            return rc;
        bk = page_at(env, b);
        dshm_bucket_begin(bk);
        DSHM_CRASH_POINT("insert");
        rc = chain_put(env, b, h, rec);
        dshm_bucket_end(bk);
        return rc;
    }
}

/* Backward-shift deletion of slot s in page pg (linear probing). */
static void page_remove(dshm_bucket *pg, unsigned i) {
    st_rel(&pg->bk_slots[i].sl_rec, 0);
    unsigned j = i;
    for (;;) {
        DSHM_CRASH_POINT("remove-shift");   /* slot i is a hole here */
        j = j + 1 == DSHM_SLOTS ? 0 : j + 1;
        uint64_t r = ld_rel(&pg->bk_slots[j].sl_rec);
        if (!r || j == i)
            break;
        uint64_t h = ld_rel(&pg->bk_slots[j].sl_hash);
        unsigned home = (unsigned)(h % DSHM_SLOTS);
        /* Leave j alone if its home lies cyclically in (i, j]. */
        bool stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        st_rel(&pg->bk_slots[i].sl_hash, h);
        st_rel(&pg->bk_slots[i].sl_rec, r);
        st_rel(&pg->bk_slots[j].sl_rec, 0);
        i = j;
    }
    atomic_store_explicit(&pg->bk_count, atomic_load_explicit(&pg->bk_count, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

int dshm_index_remove(dshm_env *env, const dshm_pos *opos) {
    dshm_pos own = *opos, *pos = &own;
    uint64_t b;
    int rc = chain_own(env, pos->ps_bucket, &b, pos);
    if (rc)
        return rc;
    dshm_bucket *bk = page_at(env, pos->ps_bucket);
    dshm_bucket *pg = page_at(env, pos->ps_page);
    dshm_bucket_begin(bk);
    DSHM_CRASH_POINT("remove");
    page_remove(pg, pos->ps_slot);
    if (pos->ps_page != pos->ps_bucket && atomic_load_explicit(&pg->bk_count, memory_order_relaxed) == 0) {
        /* Unlink an emptied overflow page. */
        uint64_t prev = pos->ps_bucket;
        while (ld_rel(&page_at(env, prev)->bk_next) != pos->ps_page)
            prev = ld_rel(&page_at(env, prev)->bk_next);
        st_rel(&page_at(env, prev)->bk_next, ld_rel(&pg->bk_next));
        dshm_page_free(env, pos->ps_page);   /* of this period: chain_own made it */
    }
    dshm_bucket_end(bk);
    return 0;
}

int dshm_index_slot_rec(dshm_env *env, const dshm_pos *pos, uint64_t limit, uint64_t *off, uint64_t *size) {
    uint64_t r = ld_rel(&page_at(env, pos->ps_page)->bk_slots[pos->ps_slot].sl_rec);
    if (!dshm_in(r, DSHM_REC_HDR, limit))
        return DSHM_CORRUPT;
    const dshm_rec *rec = DSHM_AT(env, r);   /* formed only once r is inside the file */
    uint64_t sz = dshm_rec_size(rec->rc_klen, rec->rc_vlen);
    if (rec->rc_vlen > DSHM_MAX_VALUE || !dshm_in(r, sz, limit))
        return DSHM_CORRUPT;
    *off = r;
    *size = sz;
    return 0;
}

int dshm_index_replace(dshm_env *env, const dshm_pos *opos, uint64_t rec) {
    dshm_pos own = *opos, *pos = &own;
    uint64_t b;
    int rc = chain_own(env, pos->ps_bucket, &b, pos);
    if (rc)
        return rc;
    dshm_bucket *bk = page_at(env, pos->ps_bucket);
    dshm_bucket *pg = page_at(env, pos->ps_page);
    dshm_bucket_begin(bk);
    atomic_store_explicit(&pg->bk_slots[pos->ps_slot].sl_rec, rec, memory_order_release);
    dshm_bucket_end(bk);
    return 0;
}

/* Mend a page of a chain left inside its odd window: first drop the
 * slots whose key does not match its record's hash tag and re-derive each
 * slot's hash from its key, then dshm_page_mend. */
static void page_rehash_mend(dshm_env *env, dshm_bucket *pg, uint64_t limit) {
    dshm_header *hd = DSHM_HDR(env);
    for (unsigned s = 0; s < DSHM_SLOTS; s++) {
        const dshm_rec *rec = dshm_rec_sane(env, ld_rel(&pg->bk_slots[s].sl_rec), limit);
        if (!rec)
            continue;   /* empty, or dropped by dshm_page_mend */
        uint64_t h = dshm_key_hash(hd, (const char *)rec + DSHM_REC_HDR, rec->rc_klen);
        if ((uint32_t)h != rec->rc_check)
            atomic_store_explicit(&pg->bk_slots[s].sl_rec, 0, memory_order_release);
        else if (ld_rel(&pg->bk_slots[s].sl_hash) != h)
            st_rel(&pg->bk_slots[s].sl_hash, h);
    }
    dshm_page_mend(env, pg, limit);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/** Repair, in place, a bucket chain whose writer died inside its odd
 *  window. Restartable: no step holds the only copy of anything in process
 *  memory. Slots naming the same record twice (a backward shift cut short)
 *  keep the first; then each page is mended (page_rehash_mend):
 *  damaged slots dropped, hashes re-derived, every entry made reachable
 *  along its probe sequence, counts recomputed. */
int dshm_index_rebuild_page(dshm_env *env, uint64_t b) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    uint64_t *recs = NULL;
    unsigned char *seen = NULL;
    size_t n = 0, cap = 0, nd = 0;
    int rc = 0;
    dshm_chain ch;
    uint64_t page;
    int more;
    dshm_chain_start(&ch, env, b, limit);
    while ((more = dshm_chain_next(&ch, &page)) == 1) {
        dshm_bucket *pg = page_at(env, page);
        for (unsigned s = 0; s < DSHM_SLOTS; s++) {
            uint64_t r = ld_rel(&pg->bk_slots[s].sl_rec);
            if (!r)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : DSHM_SLOTS;
                uint64_t *v = realloc(recs, cap * sizeof *v);
                if (!v) {
                    rc = -ENOMEM;
                    goto out;
                }
                recs = v;
            }
            recs[n++] = r;
        }
    }
    if ((rc = more))
        goto out;
    /* Records named twice (a lookup table, not a copy: the slots keep them). */
    if (n > 1)   /* recs is NULL for an empty chain */
        qsort(recs, n, sizeof *recs, cmp_u64);
    for (size_t k = 0; k + 1 < n; k++)
        if (recs[k] == recs[k + 1] && (nd == 0 || recs[nd - 1] != recs[k]))
            recs[nd++] = recs[k];
    if (nd) {
        if (!(seen = calloc(nd, 1))) {
            rc = -ENOMEM;
            goto out;
        }
        dshm_chain_start(&ch, env, b, limit);
        while (dshm_chain_next(&ch, &page) == 1) {
            dshm_bucket *pg = page_at(env, page);
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = ld_rel(&pg->bk_slots[s].sl_rec);
                uint64_t *at = r ? bsearch(&r, recs, nd, sizeof *recs, cmp_u64) : NULL;
                if (!at)
                    continue;
                if (seen[at - recs])
                    atomic_store_explicit(&pg->bk_slots[s].sl_rec, 0, memory_order_release);
                else
                    seen[at - recs] = 1;
            }
        }
    }
    DSHM_CRASH_POINT("repair-rebuild");
    dshm_chain_start(&ch, env, b, limit);
    while (dshm_chain_next(&ch, &page) == 1)
        page_rehash_mend(env, page_at(env, page), limit);
out:
    free(recs);
    free(seen);
    return rc;
}

/** Create the directory (depth 0) and its one bucket, and publish them. */
int dshm_index_init(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t b, d;
    int rc;
    if ((rc = dshm_page_alloc(env, DSHM_BK_PRIMARY, &b)))
        return rc;
    dshm_bucket_end(page_at(env, b));
    if ((rc = dshm_alloc_aligned(env, dshm_dir_bytes(0), 64, &d)))
        return rc;
    st_rel(DSHM_AT(env, d), b);
    atomic_store_explicit(&hd->hd_dir, d, memory_order_release);
    hd->hd_dir_gen = hd->hd_gen;
    return 0;
}

uint64_t dshm_index_room(dshm_env *env, uint64_t keys) {
    dshm_header *hd = DSHM_HDR(env);
    unsigned gd = DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed));
    if (keys == 0)
        return 0;
    /* Copies on write: the directory once, and the chains the keys touch
     * (at most every bucket page there is). */
    uint64_t chains = hd->hd_buckets + hd->hd_overflow;
    uint64_t cow = dshm_dir_bytes(gd) + 64 +
                   2 * (uint64_t)DSHM_BUCKET_SIZE * (keys == DSHM_ROOM_PUT ? 2 : keys < chains ? keys : chains);
    if (keys == DSHM_ROOM_PUT)   /* a split with overflow pages, and a doubling */
        return 8 * (uint64_t)DSHM_BUCKET_SIZE + dshm_dir_bytes(gd + 1) + 128 + cow;
    uint64_t pages = keys / (DSHM_MAX_FILL / 4) + 16;
    unsigned grow = 0;
    while (grow < 8 && ((uint64_t)1 << grow) < pages)
        grow++;
    unsigned nd = gd + grow > DSHM_MAX_DEPTH ? DSHM_MAX_DEPTH : gd + grow;
    /* A new page is page-aligned: it may take up to twice its size. */
    return pages * (2 * (uint64_t)DSHM_BUCKET_SIZE) + 2 * dshm_dir_bytes(nd) + 4096 + cow;
}
