/**
 * @file dshm_recover.h
 * @brief Repair after a dead writer, and lock-and-repair (dshm_recover.c).
 *
 * Layer 4.
 */
#ifndef DSHM_RECOVER_H
#define DSHM_RECOVER_H

#include "dshm_base.h"

/** Repair the store after a dead writer (under the writer lock). */
int dshm_recover(dshm_env *env);
/** Run the repair owed: mark it (hd_repair) and recover; clears the mark
 *  on success. Returns 0, DSHM_CORRUPT or DSHM_NEED_RECOVERY. */
int dshm_repair(dshm_env *env);
/** dshm_lock_rw, then the repair it reports owed (*recovered set when one
 *  ran; may be NULL). The lock is not held on error. Without `wait`,
 *  DSHM_BUSY where the lock is taken, or a repair owed (left to a caller
 *  that may wait: the mark stays in the file). */
int dshm_lock_repair(dshm_env *env, bool *recovered, bool wait);

#endif /* DSHM_RECOVER_H */
