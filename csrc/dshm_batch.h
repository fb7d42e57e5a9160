/**
 * @file dshm_batch.h
 * @brief Atomic batches (dshm_batch.c): a batch published under a lock already
 *        held (a transaction's commit).
 *
 * Layer 9.
 */
#ifndef DSHM_BATCH_H
#define DSHM_BATCH_H

#include "dshm_base.h"

/** dshm_write_batch for a call that has entered db and holds the writer
 *  lock already (a transaction's publish): makes room in the mapping
 *  without letting the lock go, publishes as a batch does, then ends the
 *  write (dshm_finish_write: unlock, wake, sync, leave) whatever happens. */
int dshm_batch_held(dshm_db *db, dshm_env *env, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit);

#endif /* DSHM_BATCH_H */
