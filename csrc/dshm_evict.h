/**
 * @file dshm_evict.h
 * @brief Eviction's choice (dshm_evict.c): which record a writer drops to
 *        stay under the store's byte cap (hd_max_bytes).
 *
 * Layer 1: calls the walk.
 */
#ifndef DSHM_EVICT_H
#define DSHM_EVICT_H

#include "dshm_base.h"

/** Records looked at for one eviction. */
#define DSHM_EVICT_SAMPLE 16u

/** Under the writer lock: pick the record to evict. Looks at up to
 *  DSHM_EVICT_SAMPLE records of buckets chosen at random, skipping those
 *  whose slot hash is @p avoid_h (the key being written), and picks the
 *  first expired one, else the one stored least recently (smallest
 *  rc_stamp). Reads only. @p *rec: the record's offset, @p *h: its slot
 *  hash, @p *expired: it had expired. DSHM_NOTFOUND: nothing to evict
 *  (every record sampled was the avoided key's, or the store is empty);
 *  DSHM_CORRUPT: an offset out of bounds. */
int dshm_evict_pick(dshm_env *env, uint64_t avoid_h, uint64_t *rec, uint64_t *h, bool *expired);

#endif /* DSHM_EVICT_H */
