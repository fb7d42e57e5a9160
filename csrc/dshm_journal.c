/**
 * @file dshm_journal.c
 * @brief A batch's journal under the writer lock: applying its entries,
 *        freeing it, and finishing or dropping it in a recovery.
 *
 * Layer 3: calls the index and the allocator. The journal's layout is in
 * dshm_layout.h, its read-only views (dshm_journal_at, _rec, _size) in
 * dshm_base.h (the free-space rebuild uses them too), and the batch
 * protocol at the top of dshm_batch.c.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_hash.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_journal.h"

void dshm_journal_drop_staged(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (!hd->hd_batch)
        return;
    dshm_journal *jr = dshm_journal_at(env, atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed));
    if (!jr || atomic_load_explicit(&jr->jr_state, memory_order_relaxed) != DSHM_JR_COMMITTED)
        hd->hd_batch = 0;
}

/* Apply one journal entry (under the lock, inside the batch's window).
 * Idempotent: a put whose record is already in its key's slot, or a
 * delete of an absent key, changes nothing. */
int dshm_journal_apply(dshm_env *env, uint64_t ent, const uint64_t *known_hash) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t rs, r = dshm_journal_rec(env, ent, hd->hd_top, &rs);
    if (!r)
        return DSHM_CORRUPT;
    const dshm_rec *rec = DSHM_AT(env, r);
    const char *key = (const char *)rec + DSHM_REC_HDR;
    uint64_t h = known_hash ? *known_hash : dshm_key_hash(hd, key, rec->rc_klen);
    if ((uint32_t)h != rec->rc_check)
        return DSHM_CORRUPT;
    bool del = ent & DSHM_JR_DEL;
    dshm_pos pos;
    int rc = dshm_index_find(env, h, key, rec->rc_klen, &pos);
    if (rc == DSHM_NOTFOUND) {
        if (del)
            return 0;
        if ((rc = dshm_index_insert(env, h, r)))
            return rc;
        hd->hd_live_bytes += rs;
        atomic_fetch_add_explicit(&hd->hd_count, 1, memory_order_release);
        return 0;
    }
    if (rc)
        return rc;
    uint64_t old, osize;
    if ((rc = dshm_index_slot_rec(env, &pos, hd->hd_top, &old, &osize)))
        return rc;
    if (old == r)
        return 0;
    if (del) {
        if ((rc = dshm_index_remove(env, &pos)))
            return rc;
        atomic_fetch_sub_explicit(&hd->hd_count, 1, memory_order_release);
        hd->hd_live_bytes -= osize;
    } else {
        if ((rc = dshm_index_replace(env, &pos, r)))
            return rc;
        hd->hd_live_bytes += rs - osize;
    }
    dshm_retire_record(env, old, osize);
    return 0;
}

/* Forget the journal and free it, with the delete records (after the
 * last entry was applied) or every record it lists (undoing a staging:
 * nothing was published). Freed last to first, so a staging at the top
 * gives the top back. */
void dshm_journal_free(dshm_env *env, bool every_record) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_journal *jr = dshm_journal_at(env, hd->hd_top);
    uint64_t off = hd->hd_batch;
    hd->hd_batch = 0;
    if (!jr)
        return;
    for (uint64_t i = jr->jr_n; i-- > 0;) {
        uint64_t size, r = dshm_journal_rec(env, jr->jr_ent[i], hd->hd_top, &size);
        if (r && (every_record || (jr->jr_ent[i] & DSHM_JR_DEL)))
            dshm_free_block(env, r, size);
    }
    dshm_free_block(env, off, dshm_journal_size(jr->jr_cap));
}

int dshm_journal_recover(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (!hd->hd_batch)
        return 0;
    dshm_journal *jr = dshm_journal_at(env, hd->hd_top);
    if (!jr) {
        hd->hd_batch = 0;
        return 0;
    }
    for (uint64_t i = 0; i < jr->jr_n; i++) {
        int rc = dshm_journal_apply(env, jr->jr_ent[i], NULL);
        if (rc)
            return rc;
        DSHM_CRASH_POINT("repair-batch");
    }
    dshm_journal_free(env, false);
    return 0;
}

