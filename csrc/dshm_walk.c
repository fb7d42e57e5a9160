/**
 * @file dshm_walk.c
 * @brief The directory walker: every entry of the directory, each bucket
 *        offset and local depth checked, and "each bucket once, at its
 *        first directory index" for the walks that want the buckets.
 *
 * Layer 0: calls no other file. Used by the free-space rebuild
 * (dshm_space.c), recovery, reorganize's copy and check; the walk down one
 * bucket's chain is dshm_chain_next (inline, dshm_walk.h), used by these and
 * by the index. The walker reads the directory and the bucket headers with
 * relaxed loads: its users hold the writer lock, or (check without it)
 * bound everything and re-check the whole view after.
 */
#define _GNU_SOURCE
#include "dshm_base.h"
#include "dshm_walk.h"

int dshm_dir_start(dshm_dirwalk *w, dshm_env *env, uint64_t dir, uint64_t limit) {
    unsigned gd = DSHM_DIR_DEPTH(dir);
    if (gd > DSHM_MAX_DEPTH || !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), limit))
        return DSHM_CORRUPT;
    w->dw_env = env;
    w->dw_limit = limit;
    w->dw_dir = DSHM_AT(env, DSHM_DIR_OFF(dir));
    w->dw_gd = gd;
    w->dw_n = (uint64_t)1 << gd;
    w->dw_i = UINT64_MAX;   /* the first dshm_dir_next visits entry 0 */
    w->dw_bucket = 0;
    w->dw_ld = 0;
    w->dw_first = false;
    w->dw_bad = 0;
    return 0;
}

int dshm_dir_next(dshm_dirwalk *w) {
    if (++w->dw_i >= w->dw_n)
        return 0;
    uint64_t b = atomic_load_explicit(&w->dw_dir[w->dw_i], memory_order_relaxed);
    w->dw_bucket = b;
    w->dw_first = false;
    w->dw_bad = 0;
    if (!dshm_page_ok(b, w->dw_limit)) {
        w->dw_bad = DSHM_DW_OFFSET;
        return DSHM_CORRUPT;
    }
    dshm_bucket *bk = DSHM_AT(w->dw_env, b);
    w->dw_ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
    if (w->dw_ld > w->dw_gd) {
        w->dw_bad = DSHM_DW_DEPTH;
        return DSHM_CORRUPT;
    }
    /* The entries of a bucket of local depth ld are 2^(gd-ld) neighbours,
     * aligned: its first one is the one at a multiple of that. */
    w->dw_first = w->dw_i % ((uint64_t)1 << (w->dw_gd - w->dw_ld)) == 0;
    return 1;
}

int dshm_dir_next_bucket(dshm_dirwalk *w) {
    int r;
    while ((r = dshm_dir_next(w)) == 1 && !w->dw_first)
        ;
    return r;
}
