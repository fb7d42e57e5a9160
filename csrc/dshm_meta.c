/**
 * @file dshm_meta.c
 * @brief The commit metas: checksum, the newest valid one, and the boot id
 *        (which tells a power loss or kernel crash from a process crash).
 *
 * The metas (struct dshm_meta, dshm_layout.h) are written only by a
 * commit under the writer lock (dshm_commit.c) and read by openers, by
 * the free-space rebuild and by check(). A meta is valid when its magic
 * and its checksum hold: a sector torn by a power cut, or never written,
 * is not. Layer 2: calls the hash.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_hash.h"
#include "dshm_meta.h"

uint64_t dshm_meta_sum(const dshm_meta *m) {
    static const uint64_t key[2] = {0x64626d5f73686d32ULL, 0x6d65746173756d31ULL};
    return dshm_hash(key, m, offsetof(dshm_meta, mt_sum));
}

static bool meta_ok(const dshm_meta *m) {
    return m->mt_magic == DSHM_MT_MAGIC && m->mt_seq != 0 && m->mt_sum == dshm_meta_sum(m);
}

unsigned dshm_meta_valid(const dshm_header *hd, dshm_meta out[2]) {
    unsigned n = 0;
    for (unsigned i = 0; i < 2; i++) {
        dshm_meta m;
        memcpy(&m, dshm_meta_slot((dshm_header *)hd, i), sizeof m);
        if (meta_ok(&m))
            out[n++] = m;
    }
    if (n == 2 && out[1].mt_seq > out[0].mt_seq) {
        dshm_meta t = out[0];
        out[0] = out[1];
        out[1] = t;
    }
    return n;
}

bool dshm_meta_newest(const dshm_header *hd, dshm_meta *out, unsigned *slot) {
    bool found = false;
    for (unsigned i = 0; i < 2; i++) {
        dshm_meta m;
        memcpy(&m, dshm_meta_slot((dshm_header *)hd, i), sizeof m);
        if (meta_ok(&m) && (!found || m.mt_seq > out->mt_seq)) {
            *out = m;
            if (slot)
                *slot = i;
            found = true;
        }
    }
    return found;
}

void dshm_boot_id(uint64_t out[2]) {
    static _Atomic uint64_t cached[3];   /* [2] = 1 once read */
    if (atomic_load_explicit(&cached[2], memory_order_acquire)) {
        out[0] = atomic_load_explicit(&cached[0], memory_order_relaxed);
        out[1] = atomic_load_explicit(&cached[1], memory_order_relaxed);
        return;
    }
    out[0] = out[1] = 0;
    char buf[64];
    ssize_t n = -1;
    /* Tests (the power-cut simulator): a file opened "after a reboot". */
    const char *t = getenv("DSHM_TEST_BOOT_ID");
    if (t && *t) {
        n = (ssize_t)strnlen(t, sizeof buf - 1);
        memcpy(buf, t, (size_t)n);
    } else {
        int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            n = read(fd, buf, sizeof buf - 1);
            close(fd);
        }
    }
    if (n > 0) {
        static const uint64_t key[2] = {0x626f6f745f696431ULL, 0x64626d5f73686d33ULL};
        out[0] = dshm_hash(key, buf, (size_t)n);
        out[1] = dshm_hash(out, buf, (size_t)n) | 1u;   /* never {0, 0} */
    }
    atomic_store_explicit(&cached[0], out[0], memory_order_relaxed);
    atomic_store_explicit(&cached[1], out[1], memory_order_relaxed);
    atomic_store_explicit(&cached[2], 1, memory_order_release);
}

bool dshm_boot_other(const dshm_header *hd) {
    uint64_t b[2];
    dshm_boot_id(b);
    if (!b[0] && !b[1])
        return false;
    return hd->hd_boot[0] != b[0] || hd->hd_boot[1] != b[1];
}
