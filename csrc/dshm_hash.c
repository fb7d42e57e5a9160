/**
 * @file dshm_hash.c
 * @brief The keyed hash: SipHash-1-3 (Aumasson & Bernstein), 64-bit output,
 *        under each file's random seed; a key's hash in a file, and the
 *        header checksum (under a fixed key).
 *
 * Layer 1: reads the guard's test hook dshm_test_collide.
 */
#define _GNU_SOURCE
#include <string.h>

#include "dshm_guard.h"
#include "dshm_hash.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                    \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                    \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
    } while (0)

uint64_t dshm_hash(const uint64_t seed[2], const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t k0 = seed[0], k1 = seed[1];
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56, m;
    const unsigned char *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        memcpy(&m, p, 8);       /* little-endian hosts; the seed is per file */
        v3 ^= m; SIPROUND; v0 ^= m;
    }
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; /* fall through */
    case 6: b |= (uint64_t)p[5] << 40; /* fall through */
    case 5: b |= (uint64_t)p[4] << 32; /* fall through */
    case 4: b |= (uint64_t)p[3] << 24; /* fall through */
    case 3: b |= (uint64_t)p[2] << 16; /* fall through */
    case 2: b |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: b |= (uint64_t)p[0]; break;
    case 0: break;
    }
    v3 ^= b; SIPROUND; v0 ^= b;
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t dshm_key_hash(const dshm_header *hd, const void *key, size_t klen) {
    uint64_t h = dshm_hash(hd->hd_seed, key, klen);
    if (__builtin_expect(dshm_test_collide > 0, 0))
        h = dshm_test_collide >= 64 ? 0 : h & (~(uint64_t)0 >> dshm_test_collide);
    return h;
}

uint64_t dshm_header_checksum(const dshm_header *hd) {
    static const uint64_t key[2] = {0x64626d5f73686d31ULL, 0x6865616465723031ULL};
    return dshm_hash(key, hd, offsetof(dshm_header, hd_checksum));
}
