/**
 * @file dshm_recover.c
 * @brief Repair after a writer died: finish a split, rebuild the buckets
 *        left inside an odd window, drop or finish a batch, rebuild the
 *        free space; and "take the lock, run the repair it owes".
 *
 * Layer 4: calls the lock, the index, the journal, the allocator, the
 * walker and the waker. The lock never calls here: dshm_lock_rw reports
 * a repair owed and dshm_lock_repair runs it.
 */
#define _GNU_SOURCE
#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_wake.h"
#include "dshm_walk.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_journal.h"
#include "dshm_recover.h"

int dshm_recover(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (!env->ev_writable)
        return DSHM_NEED_RECOVERY;
    /* The repair changes what readers may follow: it runs inside an odd
     * window of hd_struct_seq (opened here, or left open by the writer
     * that died) and closes it at the end whoever opened it. */
    dshm_struct_begin(hd);
    DSHM_CRASH_POINT("repair-begin");
    int rc = dshm_index_finish_split(env);
    if (rc)
        goto out;
    DSHM_CRASH_POINT("repair-split");
    /* Rebuild every bucket its writer left inside an odd window. */
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    dshm_dirwalk w;
    if ((rc = dshm_dir_start(&w, env, atomic_load_explicit(&hd->hd_dir, memory_order_relaxed), limit)))
        goto out;
    while ((rc = dshm_dir_next_bucket(&w)) == 1) {
        dshm_bucket *bk = DSHM_AT(env, w.dw_bucket);
        if (atomic_load_explicit(&bk->bk_seq, memory_order_relaxed) & 1) {
            if ((rc = dshm_index_rebuild_page(env, w.dw_bucket)))
                goto out;
            dshm_bucket_end(bk);
            DSHM_CRASH_POINT("repair-bucket");
        }
    }
    if (rc)
        goto out;
    /* A batch that never reached its commit point is dropped (its records
     * become free space in the rebuild); a committed one is finished. */
    dshm_journal_drop_staged(env);
    if ((rc = dshm_space_rebuild(env, false)))
        goto out;
    DSHM_CRASH_POINT("repair-space");
    if ((rc = dshm_journal_recover(env)))
        goto out;
    DSHM_CRASH_POINT("repair-end");
    hd->hd_recoveries++;
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    /* A recovery is a commit (a batch it finished became visible): wake
     * the waiters now, whichever call (a write, check(), a read's
     * fallback) is running it. A rare path: the system call under the
     * lock does not matter. */
    dshm_wake_waiters(env);
out:
    /* Parity restored (odd -> even) only by a repair that finished. One
     * that failed leaves the window odd, never even over a half-applied
     * batch or a half-rebuilt bucket: readers fall back to the lock, which
     * repairs (a writer: hd_repair stays set) or reports. */
    dshm_struct_end(hd, rc == 0);
    return rc;
}

int dshm_repair(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    hd->hd_repair = 1;
    int rc = dshm_recover(env);
    if (rc)
        return rc == DSHM_CORRUPT ? DSHM_CORRUPT : DSHM_NEED_RECOVERY;
    hd->hd_repair = 0;
    return 0;
}

int dshm_lock_repair(dshm_env *env, bool *recovered, bool wait) {
    bool owed;
    if (recovered)
        *recovered = false;
    int rc = dshm_lock_rw(env, &owed, wait);
    if (rc || !owed)
        return rc;
    if (!wait) {
        dshm_unlock_rw(env);   /* hd_repair stays set: the next holder repairs */
        return DSHM_BUSY;
    }
    if ((rc = dshm_repair(env))) {
        dshm_unlock_rw(env);
        return rc;
    }
    if (recovered)
        *recovered = true;
    return 0;
}
