/**
 * @file dshm_write.h
 * @brief Writes (dshm_write.c): a put and a delete under the lock, the end of
 *        every write.
 *
 * Layer 7.
 */
#ifndef DSHM_WRITE_H
#define DSHM_WRITE_H

#include "dshm_base.h"
#include "dshm_index.h"

/** What a put stores besides its key and value (NULL: the defaults). */
typedef struct dshm_putx {
    uint64_t px_deadline;     /**< the record's deadline (rc_deadline), 0 = none */
    uint64_t px_stamp;        /**< its store stamp, 0 = the next one (a copy keeps its own) */
    bool px_keep_deadline;    /**< an overwrite of a live record keeps its deadline (incr) */
    bool px_no_evict;         /**< never evict for it (a copy of a whole store) */
} dshm_putx;

/** Store under the lock: evict while the store's cap would be passed,
 *  write the record into free space, then publish. An expired record of
 *  the key counts as absent (DSHM_NOOVERWRITE stores over it). */
int dshm_put_locked(dshm_env *env, uint64_t h, const char *key, size_t klen,
                    const char *val, size_t vlen, int flags, const dshm_putx *x);
/** Under the lock, for a store with a cap (hd_max_bytes): evict records
 *  (expired ones first, then the least recently stored of a sample) until
 *  @p need more bytes fit, never the key whose hash is @p avoid_h.
 *  *evicted: whether any was (slots may have moved). DSHM_TOOBIG: need
 *  passes the cap; DSHM_FULL: nothing left to evict. */
int dshm_make_room(dshm_env *env, uint64_t need, uint64_t avoid_h, bool *evicted);
/** Delete the key at pos under the lock: remove its slot (the bucket's odd
 *  window), crash point `point`, free its record, move the count and the
 *  commit counter. The one delete protocol of dshm_del, dshm_pop and
 *  dshm_popitem. */
int dshm_del_locked(dshm_env *env, const dshm_pos *pos, const char *point);
/** End a write: commit if the handle is 's', unlock, wake waiters, count
 *  it, leave. */
int dshm_finish_write(dshm_db *db, dshm_env *env, int rc);

#endif /* DSHM_WRITE_H */
