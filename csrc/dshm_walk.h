/**
 * @file dshm_walk.h
 * @brief The walkers: down one bucket's chain of pages (inline, pure) and over
 *        the directory (dshm_walk.c).
 *
 * Layer 0.
 */
#ifndef DSHM_WALK_H
#define DSHM_WALK_H

#include "dshm_base.h"

/** A walk down one bucket's chain of pages (primary, then overflow),
 *  each link bounds-checked, and the walk bounded by the number of pages
 *  the file can hold (a cycle in damaged links ends it). */
typedef struct dshm_chain {
    dshm_env *ch_env;
    uint64_t ch_limit;   /**< every page must lie below it */
    uint64_t ch_next;    /**< next page to visit, 0 = end */
    uint64_t ch_hops;    /**< pages visited */
} dshm_chain;

static inline void dshm_chain_start(dshm_chain *c, dshm_env *env, uint64_t first, uint64_t limit) {
    c->ch_env = env;
    c->ch_limit = limit;
    c->ch_next = first;
    c->ch_hops = 0;
}

/** The next page: 1 with *page set (aligned and inside the limit), 0 at
 *  the end, DSHM_CORRUPT for a bad link or an endless chain (*page = it). */
static inline int dshm_chain_next(dshm_chain *c, uint64_t *page) {
    uint64_t p = c->ch_next;
    if (!p)
        return 0;
    *page = p;
    if (!dshm_page_ok(p, c->ch_limit) || c->ch_hops++ > c->ch_limit / DSHM_BUCKET_SIZE)
        return DSHM_CORRUPT;
    c->ch_next = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(c->ch_env, p))->bk_next,
                                      memory_order_relaxed);
    return 1;
}

/** A walk over the directory's entries, for a holder of the writer lock
 *  (or a racy view that bounds everything): each entry's bucket offset
 *  and local depth are checked, and `first` says whether the entry is
 *  the first of those that point to its bucket, so a walk that wants
 *  each bucket once takes only those (dshm_dir_next_bucket). */
typedef struct dshm_dirwalk {
    dshm_env *dw_env;
    uint64_t dw_limit;            /**< bound for the buckets */
    const _Atomic uint64_t *dw_dir;
    unsigned dw_gd;               /**< global depth */
    uint64_t dw_n;                /**< entries: 2^dw_gd */
    uint64_t dw_i;                /**< the entry last visited */
    uint64_t dw_bucket;           /**< its bucket offset */
    unsigned dw_ld;               /**< its bucket's local depth */
    bool dw_first;                /**< dw_i is its bucket's first entry */
    int dw_bad;                   /**< after DSHM_CORRUPT: DSHM_DW_OFFSET or _DEPTH */
} dshm_dirwalk;
#define DSHM_DW_OFFSET 1   /**< the entry's bucket offset is out of bounds */
#define DSHM_DW_DEPTH  2   /**< the bucket's local depth is above the global */
/** Start a walk of the directory `dir` (an hd_dir value): DSHM_CORRUPT if
 *  the directory itself is too deep or out of bounds. */
int dshm_dir_start(dshm_dirwalk *w, dshm_env *env, uint64_t dir, uint64_t limit);
/** The next entry: 1, 0 at the end, or DSHM_CORRUPT (dw_bad says what;
 *  the walk may go on with the entry after). */
int dshm_dir_next(dshm_dirwalk *w);
/** The next bucket, each once (at its first entry): as dshm_dir_next. */
int dshm_dir_next_bucket(dshm_dirwalk *w);

#endif /* DSHM_WALK_H */
