/**
 * @file dshm_wake.h
 * @brief Waking the processes asleep on the futex word (dshm_wake.c): the
 *        waker's side.
 *
 * Layer 0.
 */
#ifndef DSHM_WAKE_H
#define DSHM_WAKE_H

#include "dshm_base.h"

/** Wake every sleeper on futex word w if its bit 0 says there may be one. */
void dshm_wake_word(_Atomic uint32_t *w);
/** After a commit, outside the lock: wake the processes asleep in dshm_wait(). */
void dshm_wake_waiters(dshm_env *env);

/** The writable futex word of env for db, or NULL (its waiters poll). */
_Atomic uint32_t *dshm_waiters_word(dshm_db *db, dshm_env *env);

/** Make the waiters of db return EINTR: bump db_interrupt and wake the
 *  file's sleepers. Enters no call (dshm_close uses it too). */
void dshm_wake_handle(dshm_db *db);

#endif /* DSHM_WAKE_H */
