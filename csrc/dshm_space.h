/**
 * @file dshm_space.h
 * @brief The allocator (dshm_space.c): growth, free lists, the bucket-page
 *        pool, the free-space rebuild; and the in-place mending of a bucket
 *        page (inline: a repair step, with a crash point).
 *
 * Layer 1.
 */
#ifndef DSHM_SPACE_H
#define DSHM_SPACE_H

#include "dshm_base.h"
#include "dshm_guard.h"

int dshm_alloc(dshm_env *env, uint64_t size, uint64_t *off);
/** dshm_alloc for a new record, the first allocation of a put: the one
 *  point where the free lists may be compacted. */
int dshm_alloc_record(dshm_env *env, uint64_t size, uint64_t *off);
/** A block of size bytes aligned to align (a power of two >= 16). */
int dshm_alloc_aligned(dshm_env *env, uint64_t size, uint64_t align, uint64_t *off);
void dshm_free_block(dshm_env *env, uint64_t off, uint64_t size);
int dshm_page_alloc(dshm_env *env, uint32_t kind, uint64_t *off);
void dshm_page_free(dshm_env *env, uint64_t off);
int dshm_grow(dshm_env *env, uint64_t need);
/** Free a block written in period gen: at once if gen is the current
 *  period (hd_gen), else (the last commit may reference it) on the pending
 *  list, for reuse after the next commit. */
void dshm_retire_block(dshm_env *env, uint64_t off, uint64_t size, uint64_t gen);
/** dshm_retire_block for a record (its period is rc_gen). */
void dshm_retire_record(dshm_env *env, uint64_t off, uint64_t size);
/** A bucket page no structure reaches any more: to the pool at once if it
 *  was written in this period, else its counter goes odd and it waits on
 *  the pending list. */
void dshm_retire_page(dshm_env *env, uint64_t off);
/** After a commit is on disk: every pending block to the free lists and
 *  the pool. */
void dshm_pending_release(dshm_env *env);
void dshm_space_reset(dshm_env *env, uint64_t top);
/** Rebuild the free lists from the live structures. compact: a writer's
 *  defragmentation (keeps the bucket pool, changes nothing readers see);
 *  otherwise a repair (drops damaged slots and the pool, and fails reads
 *  in flight through hd_struct_seq). */
int dshm_space_rebuild(dshm_env *env, bool compact);
/** The value hd_alloc_sum must have for the allocator fields as they are
 *  (never 0). */
uint64_t dshm_alloc_checksum(const dshm_header *hd);

/** Mend one bucket page in place, under the lock in a repair (restartable,
 *  nothing held only in process memory): drop the slots whose record
 *  cannot be one (dshm_rec_sane), move every entry cut off from its home
 *  slot by a hole into that hole (the copy is published before the old
 *  slot is cleared: a kill in between leaves a duplicate the next repair
 *  drops, never a lost entry), recount bk_count. Each move brings an entry
 *  strictly nearer its home, so it ends. Returns the count. */
static inline uint32_t dshm_page_mend(dshm_env *env, dshm_bucket *pg, uint64_t limit) {
    for (unsigned s = 0; s < DSHM_SLOTS; s++) {
        uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
        if (r && !dshm_rec_sane(env, r, limit))
            atomic_store_explicit(&pg->bk_slots[s].sl_rec, 0, memory_order_release);
    }
    for (bool moved = true; moved;) {
        moved = false;
        for (unsigned j = 0; j < DSHM_SLOTS; j++) {
            uint64_t r = atomic_load_explicit(&pg->bk_slots[j].sl_rec, memory_order_relaxed);
            if (!r)
                continue;
            uint64_t h = atomic_load_explicit(&pg->bk_slots[j].sl_hash, memory_order_relaxed);
            unsigned hole;
            if (dshm_slot_reachable_from(pg, j, (unsigned)(h % DSHM_SLOTS), &hole))
                continue;
            atomic_store_explicit(&pg->bk_slots[hole].sl_hash, h, memory_order_relaxed);
            atomic_store_explicit(&pg->bk_slots[hole].sl_rec, r, memory_order_release);
            DSHM_CRASH_POINT("repair-rebuild-move");
            atomic_store_explicit(&pg->bk_slots[j].sl_rec, 0, memory_order_release);
            moved = true;
        }
    }
    uint32_t used = 0;
    for (unsigned s = 0; s < DSHM_SLOTS; s++)
        used += atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed) != 0;
    atomic_store_explicit(&pg->bk_count, used, memory_order_relaxed);
    return used;
}

#endif /* DSHM_SPACE_H */
