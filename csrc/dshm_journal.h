/**
 * @file dshm_journal.h
 * @brief A batch's journal (dshm_journal.c): apply, finish, drop. The read-only
 *        views of the journal (dshm_journal_at, _size, _rec) are pure and
 *        live in dshm_base.h (the free-space rebuild uses them too).
 *
 * Layer 3.
 */
#ifndef DSHM_JOURNAL_H
#define DSHM_JOURNAL_H

#include "dshm_base.h"

/** Apply one journal entry (under the lock, inside the batch's window);
 *  idempotent. known_hash: the key's hash if the caller has it. */
int dshm_journal_apply(dshm_env *env, uint64_t ent, const uint64_t *known_hash);
/** Forget the journal and free it with the delete records (after the last
 *  entry was applied), or with every record (undoing a staging). */
void dshm_journal_free(dshm_env *env, bool every_record);
/** Recovery: finish (COMMITTED) the journal at hd_batch. Runs after the
 *  free lists were rebuilt. */
int dshm_journal_recover(dshm_env *env);
/** Recovery, before the rebuild: forget a journal that never reached its
 *  commit point (or is damaged), so its records become free space. */
void dshm_journal_drop_staged(dshm_env *env);

#endif /* DSHM_JOURNAL_H */
