/**
 * @file dshm_hash.h
 * @brief The keyed hash (dshm_hash.c): SipHash-1-3, a key's hash in a file,
 *        the header checksum.
 *
 * Layer 1 (dshm_key_hash reads the guard's test hook dshm_test_collide).
 */
#ifndef DSHM_HASH_H
#define DSHM_HASH_H

#include "dshm_base.h"

uint64_t dshm_hash(const uint64_t seed[2], const void *data, size_t len);
/** The hash of a key in this file (SipHash-1-3 under the file's seed). */
uint64_t dshm_key_hash(const dshm_header *hd, const void *key, size_t klen);
uint64_t dshm_header_checksum(const dshm_header *hd);

#endif /* DSHM_HASH_H */
