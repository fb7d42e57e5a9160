/**
 * @file dshm_read.h
 * @brief The read-retry protocol (dshm_read.c): lock-free tries, then the lock.
 *
 * Layer 7.
 */
#ifndef DSHM_READ_H
#define DSHM_READ_H

#include "dshm_base.h"

/** Wait a little after losing to the writer: spin first, then yield. */
void dshm_backoff(int attempt);
/** A read attempt: without the lock it returns DSHM_RETRY when a seqlock
 *  counter was odd or moved, DSHM_CORRUPT only for damage met while nothing
 *  moved (see dshm_index_read); with the lock, a definitive answer. */
typedef int64_t (*dshm_read_fn)(dshm_env *env, bool locked, void *ctx);
/** Lock-free tries of a read before its fallback (read_retry). */
#define DSHM_READ_TRIES 64
/** Run a read with `tries` lock-free attempts (DSHM_READ_TRIES for a
 *  single read) before the locked one. */
int64_t dshm_read_retry(dshm_db *db, dshm_env **envp, dshm_read_fn fn, void *ctx, int tries);

#endif /* DSHM_READ_H */
