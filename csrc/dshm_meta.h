/**
 * @file dshm_meta.h
 * @brief The two commit metas of the header page (dshm_meta.c): their
 *        checksum, the newest valid one, and the boot a file was last
 *        known whole under.
 *
 * Layer 2: calls the hash.
 */
#ifndef DSHM_META_H
#define DSHM_META_H

#include "dshm_base.h"

/** The meta in slot i (0 or 1) of a header page. */
static inline dshm_meta *dshm_meta_slot(dshm_header *hd, unsigned i) {
    return (dshm_meta *)(void *)((char *)hd + DSHM_META_AT + 512u * i);
}
/** The checksum a meta must carry in mt_sum. */
uint64_t dshm_meta_sum(const dshm_meta *m);
/** Copy the newest valid meta of hd (a mapping or a copy read with pread)
 *  to *out; its slot in *slot if slot is not NULL. false: neither is valid. */
bool dshm_meta_newest(const dshm_header *hd, dshm_meta *out, unsigned *slot);
/** Both metas that are valid, newest first; returns how many (0..2). */
unsigned dshm_meta_valid(const dshm_header *hd, dshm_meta out[2]);
/** This kernel's boot (/proc/sys/kernel/random/boot_id), folded to two
 *  words; {0, 0} where it cannot be read (then every boot looks alike). */
void dshm_boot_id(uint64_t out[2]);
/** Does the header's hd_boot name another boot than this one? */
bool dshm_boot_other(const dshm_header *hd);

#endif /* DSHM_META_H */
