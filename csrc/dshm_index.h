/**
 * @file dshm_index.h
 * @brief The index (dshm_index.c): extendible hashing over bucket pages, the
 *        lock-free reader lookup, and the reader-validation frame every
 *        lock-free read uses (inline: it calls dshm_bucket_for).
 *
 * Layer 2.
 */
#ifndef DSHM_INDEX_H
#define DSHM_INDEX_H

#include "dshm_base.h"

/** Prefetch hint for a later dshm_index_read of h: stage 0 the directory
 *  entry, 1 the bucket page, 2 the record (dshm_get_many's pipeline). */
void dshm_index_prefetch(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit, int stage);
/** Reader lookup in the current directory. Returns the value length,
 *  DSHM_NOTFOUND, DSHM_RETRY or DSHM_CORRUPT. Without the lock: DSHM_RETRY
 *  when a counter was odd or moved (or the view may be stale), and
 *  DSHM_CORRUPT only when the damage was met with nothing moving: the
 *  counters, the file size, the directory and its entry for h all the same
 *  before and after (a real race always moves one of them). */
int64_t dshm_index_read(dshm_env *env, uint64_t h, const char *key, size_t klen,
                        char *buf, size_t cap, bool locked);
/** The odd counter (address and value) at which this thread's last
 *  lock-free read gave up, or at == NULL: read_retry uses it to tell a
 *  window a live writer holds from one nobody will close. */
typedef struct dshm_odd { const _Atomic uint64_t *at; uint64_t val; } dshm_odd;
extern _Thread_local dshm_odd dshm_read_odd;
/** Writer lookup: finds the slot of key, or not. */
typedef struct dshm_pos {
    uint64_t ps_bucket;   /**< primary bucket */
    uint64_t ps_page;     /**< page holding the slot (primary or overflow) */
    uint32_t ps_slot;     /**< slot index, valid if found */
    uint32_t ps_dir_idx;  /**< directory index used */
} dshm_pos;
int dshm_index_find(dshm_env *env, uint64_t h, const char *key, size_t klen,
                    dshm_pos *pos);
int dshm_index_insert(dshm_env *env, uint64_t h, uint64_t rec);
int dshm_index_remove(dshm_env *env, const dshm_pos *pos);
/** The record the slot at pos (found under the lock) holds, checked to
 *  lie inside [.., limit): its offset and size, or DSHM_CORRUPT. */
int dshm_index_slot_rec(dshm_env *env, const dshm_pos *pos, uint64_t limit, uint64_t *off, uint64_t *size);
/** Switch the slot at pos to record rec (an overwrite): one atomic store
 *  inside the bucket's odd window. */
int dshm_index_replace(dshm_env *env, const dshm_pos *pos, uint64_t rec);
int dshm_index_init(dshm_env *env);
uint64_t dshm_bucket_for(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit);
/** Is bk a primary bucket whose hash range holds h? */
bool dshm_bucket_covers(dshm_bucket *bk, uint64_t h);
int dshm_index_finish_split(dshm_env *env);
/** Repair, in place, a chain left inside its odd window (restartable):
 *  slots naming a record twice cleared, then each page mended with the
 *  hashes re-derived from the keys (dshm_page_mend). */
int dshm_index_rebuild_page(dshm_env *env, uint64_t bucket);
/** Room a write may need beyond the top for the index to take `keys` new
 *  keys: split pages, overflow pages and directory doublings (generous; a
 *  bound for reserving space before a batch's commit point). keys ==
 *  DSHM_ROOM_PUT: one put's split with overflow and one doubling. */
uint64_t dshm_index_room(dshm_env *env, uint64_t keys);
#define DSHM_ROOM_PUT UINT64_MAX

/* ---- reader validation (inline): one frame for every lock-free read ---- */

/** What a lock-free read of one bucket sampled before it read (the
 *  sample, bound, read, fence, re-check frame). */
typedef struct dshm_rview {
    uint64_t rv_size;     /**< hd_file_size sampled */
    uint64_t rv_limit;    /**< the bound for every offset followed */
    uint64_t rv_ss;       /**< hd_struct_seq sampled */
    uint64_t rv_dir;      /**< hd_dir sampled */
    uint64_t rv_b;        /**< the primary bucket for h (0: an offset on the
                               way was out of bounds) */
    dshm_bucket *rv_bk;   /**< it, once its counter was sampled */
    uint64_t rv_s;        /**< its bk_seq sampled */
} dshm_rview;

/** Sample and bound the view of the bucket for h: DSHM_RETRY (the file
 *  outgrew this mapping, or a counter was odd: dshm_read_odd notes it),
 *  or 0 with rv_bk set (NULL when rv_b is 0: then validate at once). */
static inline int dshm_rview_begin(dshm_rview *v, dshm_env *env, uint64_t h, bool locked) {
    dshm_header *hd = DSHM_HDR(env);
    v->rv_size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    v->rv_limit = v->rv_size;
    if (v->rv_limit > env->ev_resv) {
        if (!locked)
            return DSHM_RETRY;   /* the file outgrew this mapping: read_retry maps it again */
        v->rv_limit = env->ev_resv;
    }
    v->rv_ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
    if ((v->rv_ss & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &hd->hd_struct_seq, v->rv_ss };
        return DSHM_RETRY;
    }
    v->rv_dir = atomic_load_explicit(&hd->hd_dir, memory_order_acquire);
    v->rv_b = dshm_bucket_for(env, v->rv_dir, h, v->rv_limit);
    v->rv_bk = NULL;
    v->rv_s = 0;
    if (!v->rv_b)
        return 0;
    dshm_bucket *bk = DSHM_AT(env, v->rv_b);
    /* The slot's cache line does not depend on the counter: fetch both at once. */
    __builtin_prefetch(&bk->bk_slots[h % DSHM_SLOTS]);
    v->rv_s = atomic_load_explicit(&bk->bk_seq, memory_order_acquire);
    if ((v->rv_s & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &bk->bk_seq, v->rv_s };
        return DSHM_RETRY;
    }
    v->rv_bk = bk;
    return 0;
}

/** After the read: `result` if it stands, else DSHM_RETRY. A counter that
 *  moved is a race. A miss or damage is trusted only if nothing else
 *  moved either: the file size (a record or a split's pages published
 *  past the limit used), and for damage the directory and its entry for
 *  h (a split switches entries outside every counter's window). Under
 *  the lock the result always stands. */
static inline int64_t dshm_rview_end(const dshm_rview *v, dshm_env *env, uint64_t h, int64_t result, bool locked) {
    if (locked)
        return result;
    dshm_header *hd = DSHM_HDR(env);
    atomic_thread_fence(memory_order_acquire);
    if ((v->rv_bk && atomic_load_explicit(&v->rv_bk->bk_seq, memory_order_relaxed) != v->rv_s) ||
        atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) != v->rv_ss)
        return DSHM_RETRY;
    if (result >= 0)
        return result;
    if (atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) != v->rv_size)
        return DSHM_RETRY;
    if (result == DSHM_CORRUPT &&
        (atomic_load_explicit(&hd->hd_dir, memory_order_relaxed) != v->rv_dir ||
         dshm_bucket_for(env, v->rv_dir, h, v->rv_limit) != v->rv_b))
        return DSHM_RETRY;
    return result;
}

/** The same frame over the whole store, for a read of many buckets:
 *  hd_commit and hd_struct_seq sampled before and compared after. */
typedef struct dshm_frame { uint64_t fr_commit, fr_ss; } dshm_frame;

/** Sample the counters; false (retry) while a structural change is under
 *  way (a caller that reads anyway ignores it). */
static inline bool dshm_frame_begin(const dshm_header *hd, bool locked, dshm_frame *f) {
    f->fr_commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    f->fr_ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
    return locked || !(f->fr_ss & 1);
}

/** After the reads: true if no write committed since dshm_frame_begin (a
 *  read under the lock is always valid). */
static inline bool dshm_frame_valid(const dshm_header *hd, bool locked, const dshm_frame *f) {
    if (locked)
        return true;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) == f->fr_commit &&
           atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) == f->fr_ss;
}

#endif /* DSHM_INDEX_H */
