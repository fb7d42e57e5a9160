/**
 * @file dshm_iter.h
 * @brief Bucket snapshots (dshm_iter.c): the copy of one bucket behind
 *        firstkey, nextkey, scan.
 *
 * Layer 8.
 */
#ifndef DSHM_ITER_H
#define DSHM_ITER_H

#include "dshm_base.h"

/** Copy the entries of the bucket covering cursor (see snap_read). */
typedef struct dshm_snap {
    char    *buf;      /**< records: [u32 klen][(u64 vlen)][u64 hash][key][(value)] */
    size_t   cap, used;
    uint64_t next;     /**< cursor after this bucket */
    int      last;     /**< this bucket ends the hash space */
} dshm_snap;
int dshm_snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, dshm_snap *sn);
/** Grow sn's buffer to hold `need` bytes (0 or -ENOMEM). */
int dshm_snap_reserve(dshm_snap *sn, size_t need);

#endif /* DSHM_ITER_H */
