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

/** Store under the lock: write the record into free space, then publish. */
int dshm_put_locked(dshm_env *env, uint64_t h, const char *key, size_t klen,
                    const char *val, size_t vlen, int flags);
/** Delete the key at pos under the lock: remove its slot (the bucket's odd
 *  window), crash point `point`, free its record, move the count and the
 *  commit counter. The one delete protocol of dshm_del, dshm_pop and
 *  dshm_popitem. */
int dshm_del_locked(dshm_env *env, const dshm_pos *pos, const char *point);
/** End a write: commit if the handle is 's', unlock, wake waiters, count
 *  it, leave. */
int dshm_finish_write(dshm_db *db, dshm_env *env, int rc);

#endif /* DSHM_WRITE_H */
